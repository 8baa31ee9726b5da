"""Output paths checked before any work, and all-or-nothing multi-file outputs.

A command that writes several files (``edgehdr synth``: frames, list, ground truth,
response; ``edgehdr dim``: zones, LCD image, display, metrics; ``edgehdr-export
build``: models, manifests, reports, an engine) must not leave some of them under
their final names after a failure half-way, next to older ones that a reader
would then take together. ``staged_outputs`` gives the command a hidden folder
``.NAME.build-XXXX`` inside the output folder (the same file system, so
publishing is one rename per file); the files move into place only when the
whole build succeeded, and on any failure the folder goes with everything in
it, leaving earlier outputs untouched. ``output_folder`` and ``output_file``
refuse a path that cannot be written before the work starts, naming the option.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["output_file", "output_folder", "publish", "staged_outputs"]


def _writable_folder(folder: Path, what: str) -> None:
    if not folder.is_dir():
        raise FileNotFoundError(f"{what}: folder {folder} does not exist (create it first)")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"{what}: folder {folder} is not writable")


def output_folder(path: str | os.PathLike[str], *, option: str = "-o", create: bool = True) -> bool:
    """Make sure ``path`` is a writable folder, creating it (not its parents) when missing.

    Returns True when it was created here; ``create=False`` only checks that it could
    be. Raises ``NotADirectoryError``, ``FileNotFoundError`` or ``PermissionError``
    naming ``option`` and the path.
    """
    path = Path(path)
    if path.is_dir():
        _writable_folder(path, f"{option} {path}")
        return False
    if path.exists():
        raise NotADirectoryError(f"{option} {path}: exists and is not a folder; give an output folder")
    _writable_folder(path.parent, f"{option} {path}")
    if create:
        path.mkdir()
    return create


def output_file(path: str | os.PathLike[str], *, option: str) -> Path:
    """Check that ``path`` can be written: not a folder, in an existing writable folder."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{option} {path}: is a folder; give a file path")
    _writable_folder(path.parent, f"{option} {path}")
    return path


def publish(stage: str | os.PathLike[str], out_dir: str | os.PathLike[str]) -> list[Path]:
    """Move the files of ``stage`` (dot-files excepted: intermediates) into ``out_dir``, manifests last, so a
    manifest never appears before its artefact."""
    stage, out_dir = Path(stage), Path(out_dir)
    files = sorted((p for p in stage.iterdir() if p.is_file() and not p.name.startswith(".")),
                   key=lambda p: (p.name.endswith(".manifest.json"), p.name))
    moved = []
    for p in files:
        os.replace(p, out_dir / p.name)
        moved.append(out_dir / p.name)
    with contextlib.suppress(OSError):  # make the renames durable where the platform allows opening a folder
        fd = os.open(out_dir, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
    return moved


@contextlib.contextmanager
def staged_outputs(out_dir: str | os.PathLike[str], name: str, *, option: str = "-o") -> Iterator[Path]:
    """Yield a hidden staging folder inside ``out_dir`` (created if missing, see ``output_folder``); publish its
    files into ``out_dir`` when the block succeeds, remove it (and ``out_dir`` if created here) when it fails."""
    out_dir = Path(out_dir)
    created = output_folder(out_dir, option=option)
    stage = Path(tempfile.mkdtemp(prefix=f".{name}.build-", dir=out_dir))
    published = False
    try:
        yield stage
        publish(stage, out_dir)
        published = True
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if created and not published:
            with contextlib.suppress(OSError):  # only if still empty
                out_dir.rmdir()
