"""Atomic file output: write to a temporary file in the target folder, fsync, rename.

A reader (or a crash) never sees a half-written result: the final name appears
only once its content is complete. Every writer in EdgeHDR goes through here.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import stat
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["atomic_output", "dumps_json", "null_undefined", "write_bytes_atomic", "write_json_atomic",
           "write_text_atomic"]


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success rename it onto ``path``.

    The temporary name keeps the target's suffix (or ``suffix``) so writers that
    pick the format from the extension (OpenCV, OpenEXR) still work. On an
    exception the temporary file is removed and ``path`` is left untouched.
    """
    path = Path(path)
    directory = path.parent if str(path.parent) else Path(".")
    if not directory.is_dir():
        raise FileNotFoundError(f"{path}: output folder {directory} does not exist")
    try:
        fd, tmp_name = tempfile.mkstemp(
            prefix=f".{path.name}.", suffix=".tmp" + (suffix if suffix is not None else path.suffix), dir=directory
        )
    except OSError as exc:  # name the output, not the temporary file it could not create (a read-only folder)
        raise OSError(exc.errno, f"{path}: cannot write in {directory} ({exc.strerror})") from exc
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        if not tmp.exists() or tmp.stat().st_size == 0:
            raise OSError(f"{path}: writer produced no data")
        os.chmod(tmp, _final_mode(path))
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        _fsync_dir(directory)
    except OSError as exc:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        # Name the output, not the temporary file. An error about another file (other work inside the block: a
        # second output written before this one is published) is left as it is: one whose file names are not
        # these two, or whose text names a file of its own (not the system's text, not the temporary name).
        names = {str(f) for f in (exc.filename, exc.filename2) if f is not None}
        own_text = exc.strerror != os.strerror(exc.errno) if exc.errno is not None else True
        if exc.errno is not None and str(path) not in str(exc) and names <= {str(tmp), str(path)} and (
                not own_text or str(tmp) in str(exc)):
            raise OSError(exc.errno, f"{path}: cannot write ({exc.strerror})") from exc
        raise
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def _final_mode(path: Path) -> int:
    # mkstemp creates 0600 files; the result should look like any other new file
    # (0666 less the umask), or keep the mode of the file it replaces.
    try:
        return stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return 0o666 & ~current_umask()


def current_umask() -> int:
    """The process umask, read without changing it where the platform allows."""
    with contextlib.suppress(OSError, ValueError), open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    with _UMASK_LOCK:  # os.umask can only be read by setting it: keep the window closed to other writers
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


_UMASK_LOCK = threading.Lock()


def _fsync_dir(directory: Path) -> None:
    # Make the rename itself durable; not every platform allows opening a folder.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_bytes_atomic(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically and return the path."""
    with atomic_output(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically and return the path."""
    return write_bytes_atomic(path, text.encode("utf-8"))


def dumps_json(obj: object, **kwargs: Any) -> str:
    """``json.dumps`` that refuses NaN and infinities (bare ``NaN`` is not JSON).

    Numpy scalars and other numbers are converted with ``float``; a non-finite
    value raises ``ValueError`` naming it instead of producing an invalid file.
    """
    kwargs.setdefault("default", _json_default)
    return json.dumps(obj, allow_nan=False, **kwargs)


def null_undefined(obj: Any) -> Any:
    """A copy of ``obj`` (dicts, lists, numbers) ready for strict JSON: NaN and infinities as ``None``.

    Some metrics are undefined for some data (the PSNR of identical images is infinite,
    a rank correlation of constant scores is NaN); JSON has no such numbers, so they are
    written as ``null``. Numpy scalars and arrays become Python numbers and lists, bytes
    become text.
    """
    if isinstance(obj, dict):
        return {(k.decode("utf-8", "replace") if isinstance(k, bytes) else k): null_undefined(v)
                for k, v in obj.items()}
    if isinstance(obj, bytes):
        return obj.decode("utf-8", errors="replace")
    if isinstance(obj, (list, tuple)):
        return [null_undefined(v) for v in obj]
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # numpy arrays and scalars
        return null_undefined(obj.tolist())
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    return obj


def _json_default(value: Any) -> float | str:
    try:
        return float(value)
    except (TypeError, ValueError):
        return str(value)


def write_json_atomic(path: str | os.PathLike[str], obj: object, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as strict JSON (no NaN/Infinity) to ``path`` atomically."""
    try:
        text = dumps_json(obj, indent=indent)
    except ValueError as exc:
        raise ValueError(f"{path}: refusing to write non-finite numbers as JSON ({exc})") from exc
    return write_text_atomic(path, text + "\n")
