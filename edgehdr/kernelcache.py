"""numba's on-disk kernel cache, kept consistent across modules.

numba keys a cached kernel on its own source file only. A kernel that inlines a numba
function from another module (the ``fastmath`` polynomials, ``nonfinite``'s row checks,
the tone mappers' sRGB encoder) is not invalidated when only that other module changes:
in a working tree updated with ``git pull`` (the README's editable install) or edited, the
kernel would go on running the old helper until its own file changed. An install of a new
version rewrites every file, so there the problem does not arise.

``drop_stale_dependents`` fingerprints the helper modules' sources (``PROVIDERS``); when
the fingerprint differs from the one stored beside numba's cache, it deletes the cached
kernels of the modules that inline them (``DEPENDENTS``), which then compile again on
their first call (or in the warm-up's workers), and stores the new fingerprint. The
helper modules call it as they are imported, before any dependent kernel can run; it
costs reading five source files.

Dropping alone left a race: a process started before the tree changed holds the old helpers in memory, and a
dependent kernel it compiled after a newer process had dropped the cache was saved under the new fingerprint's
marker and loaded by every later process. So the dependents' cache files also carry the fingerprint their process
imported the helpers with (``process_tag``, in the file name numba derives from its locator's "disambiguator":
``compensation._compensation_kernel-412-np24-h3f9c2a01be.py311.nbi``): a process reads and writes only the files of the
helpers it runs, whatever an older one writes beside them. Every kernel of the package also carries numpy's
version (major.minor: ``-np24``), which numba's own cache key lacks: numba types some numpy functions by the numpy
it runs with, so a kernel compiled under numpy 2 was loaded under numpy 1.26 after a downgrade (or by a second
venv sharing the checkout's ``__pycache__``). Where numba's locators cannot be extended (its internals), the
dropping alone remains. ``tests/test_kernelcache.py`` keeps the two lists
complete: it finds every numba function imported from another module of the package, and every
constant of another module that a kernel reads (numba freezes globals into the compiled code).
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["PROVIDERS", "DEPENDENTS", "drop_stale_dependents", "marker_folder", "numpy_tag", "process_tag"]

log = logging.getLogger("edgehdr.kernelcache")

_PACKAGE = Path(__file__).resolve().parent
# Modules whose numba functions other modules' kernels inline, and those other modules (paths in the package).
# A provider's module-level constants count too: numba freezes a global into the compiled kernel (the PU21
# range in the display refinement's kernels).
PROVIDERS = ("fastmath.py", "tonemap/nonfinite.py", "tonemap/operators.py", "hdr/fill.py", "quality/pu21.py")
DEPENDENTS = ("hdr/merge.py", "hdr/neural_merge.py", "hdr/fill.py", "tonemap/neural.py", "tonemap/operators.py",
              "dimming/zones.py", "dimming/compensation.py", "dimming/refine.py")
_MARKER = "edgehdr-inlined-helpers.sha256"
_checked = False
dropped_files = 0  # cache files this process dropped: ``edgehdr.warmup`` then counts the cache as cold


def _cache_dir(py_file: Path) -> Path | None:
    """The folder numba caches ``py_file``'s kernels in (its first locator that applies, as numba picks them), or
    None where that cannot be found out (numba's locators are not public API)."""
    try:
        from numba.core.caching import CacheImpl

        def probe() -> None:  # a locator reads the function's first line number only
            return None

        locator_classes: list[Any] = list(CacheImpl._locator_classes)
        for locator_class in locator_classes:
            locator = locator_class.from_function(probe, str(py_file))
            if locator is not None:
                return Path(locator.get_cache_path())
    except Exception:  # noqa: BLE001 - internals of numba: without them nothing is dropped, as before
        return None
    return None


def marker_folder() -> Path | None:
    """The folder of numba's cache that holds the package's own markers (beside ``fastmath``'s kernels), or None
    where numba's locators cannot tell."""
    return _cache_dir(_PACKAGE / PROVIDERS[0])


def _fingerprint() -> str:
    import numba

    digest = hashlib.sha256(numba.__version__.encode())
    for name in PROVIDERS:
        digest.update(name.encode())
        digest.update((_PACKAGE / name).read_bytes())
    return digest.hexdigest()


def process_tag() -> str:
    """The helper modules' fingerprint this process imported them with (10 hex digits), computed once: the tag
    in its dependent kernels' cache file names. Empty where the sources cannot be read."""
    global _process_tag
    if _process_tag is None:
        try:
            _process_tag = _fingerprint()[:10]
        except OSError:
            _process_tag = ""
    return _process_tag


_process_tag: str | None = None


def numpy_tag() -> str:
    """numpy's major and minor version as the package's kernel cache file names carry it (``np24``, ``np126``)."""
    global _numpy_tag
    if _numpy_tag is None:
        import numpy

        major, minor = numpy.__version__.split(".")[:2]
        _numpy_tag = f"np{major}{minor}"
    return _numpy_tag


_numpy_tag: str | None = None


def _install_tagging_locator() -> bool:
    """Put a locator in front of numba's for the package's kernels: it defers to numba's own choice of folder and
    source stamp and adds ``numpy_tag()`` to the file names, and ``process_tag()`` to the ``DEPENDENTS``'. Returns
    whether it is in place."""
    try:
        from numba.core import caching

        names = vars(caching)  # CacheImpl in recent numba, _CacheImpl in older ones
        impl: Any = names.get("CacheImpl") or names["_CacheImpl"]
        base: Any = names["_CacheLocator"]
        classes: list[Any] = impl._locator_classes
    except Exception:  # noqa: BLE001 - numba's internals: without them the dropping alone stands
        return False
    if any(getattr(c, "edgehdr_tagging", False) for c in classes):
        return True
    dependents = {os.path.normcase(str((_PACKAGE / name).resolve())) for name in DEPENDENTS}
    package = os.path.normcase(str(_PACKAGE)) + os.sep
    numba_own = list(classes)

    class _HelperTaggedLocator(base):
        edgehdr_tagging = True

        def __init__(self, inner: Any, dependent: bool) -> None:
            self._inner, self._dependent = inner, dependent

        def ensure_cache_path(self) -> None:
            self._inner.ensure_cache_path()

        def get_cache_path(self) -> str:
            return str(self._inner.get_cache_path())

        def get_source_stamp(self) -> Any:
            return self._inner.get_source_stamp()

        def get_disambiguator(self) -> str:
            tag = process_tag() if self._dependent else ""
            return f"{self._inner.get_disambiguator()}-{numpy_tag()}" + (f"-h{tag}" if tag else "")

        @classmethod
        def from_function(cls, py_func: Any, py_file: str) -> Any:
            try:
                path = os.path.normcase(str(Path(py_file).resolve()))
            except OSError:
                return None
            if not path.startswith(package):
                return None
            for locator_class in numba_own:
                inner = locator_class.from_function(py_func, py_file)
                if inner is not None:
                    return cls(inner, path in dependents)
            return None

    classes.insert(0, _HelperTaggedLocator)
    return True


def drop_stale_dependents(*, force: bool = False) -> int:
    """Delete the dependent modules' cached kernels if the helper modules changed since they were cached; returns
    how many cache files went. Runs once per process (``force``: again)."""
    global _checked, dropped_files
    if _checked and not force:
        return 0
    _checked = True
    marker_dir = marker_folder()
    if marker_dir is None:
        return 0
    marker = marker_dir / _MARKER
    try:
        fingerprint = _fingerprint()
        if marker.is_file() and marker.read_text().strip() == fingerprint:
            return 0
    except OSError:
        return 0
    dropped = 0
    for name in DEPENDENTS:
        source = _PACKAGE / name
        folder = _cache_dir(source)
        if folder is None or not folder.is_dir():
            continue
        for path in list(folder.glob(f"{source.stem}.*.nbi")) + list(folder.glob(f"{source.stem}.*.nbc")):
            try:
                path.unlink()
                dropped += 1
            except FileNotFoundError:  # another process dropped it first
                pass
            except OSError:
                return dropped  # a cache we cannot write: numba cannot have written it either
    tmp_name = None
    try:  # atomically, so that a process starting meanwhile reads the old fingerprint or the new one
        marker_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", dir=marker_dir, prefix=".edgehdr-", delete=False) as tmp:
            tmp_name = tmp.name
            tmp.write(fingerprint + "\n")
        # the mode a new file gets under the umask, as numba's own cache files do (the temporary file is 0o600);
        # imported here, not at the top: the helper modules import this module
        from edgehdr.io.atomic import current_umask

        os.chmod(tmp_name, 0o666 & ~current_umask())
        os.replace(tmp_name, marker)
    except OSError:
        if tmp_name is not None:
            Path(tmp_name).unlink(missing_ok=True)
    dropped_files += dropped
    if dropped:
        log.info("numba kernel cache: the inlined helper modules changed; dropped %d cached kernel files of %s "
                 "(they compile again)", dropped, ", ".join(DEPENDENTS))
    return dropped


# At import, before any dependent module defines its kernels (each imports a helper module first, which imports
# this one): numba picks a kernel's locator when the kernel is defined. The tag is taken now, as the first helper
# module is imported, not when the first dependent kernel is defined.
process_tag()
tagging_installed = _install_tagging_locator()
