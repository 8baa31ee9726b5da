"""Replay of recorded brackets from files, with real timing and looping.

A folder (its ``list.txt`` or, failing that, the EXIF of its images) or a list
file gives an ordered sequence of frames; every ``bracket_size`` consecutive
frames form one bracket. Brackets come out at ``fps`` (per bracket), decoded
frames are cached, and the sequence loops unless ``loop=False``, in which case
the end raises ``SourceExhausted`` and the pipeline finishes.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from edgehdr.bracket import Bracket
from edgehdr.camera.base import BracketFault, BracketSource, SourceError, SourceExhausted, SourceTimeout
from edgehdr.io.ldr_stack import LDR_SUFFIXES, exif_gains, read_exif_exposure, read_ldr_image, read_list_file

__all__ = ["ReplaySource"]

log = logging.getLogger("edgehdr.replay")


class ReplaySource(BracketSource):
    """Brackets read from image files.

    Parameters
    ----------
    path : folder or list file
    bracket_size : int
        Frames per bracket (consecutive entries of the sequence).
    fps : float
        Brackets per second (0 = as fast as they decode).
    loop : bool
    bits : int, optional
        Significant bits of 16-bit files.
    cache_bytes : int
        Decoded frames kept in memory (the sequence is decoded once when it fits).
    """

    name = "replay"

    def __init__(self, path: str | os.PathLike[str], *, bracket_size: int = 3, fps: float = 30.0, loop: bool = True,
                 bits: int | None = None, cache_bytes: int = 1 << 30) -> None:
        self.path = Path(path)
        self.bracket_size, self.fps, self.loop = int(bracket_size), float(fps), loop
        self._bits = bits
        self.bits = bits or 8  # the source's nominal depth; a bracket's bits follow its files unless ``bits`` is given
        self.cache_bytes = cache_bytes
        self._entries: list[tuple[Path, float]] | None = None
        self._gains: list[float] | None = None
        self._cache: dict[int, np.ndarray] = {}
        self._cached_bytes = 0
        self._index = 0  # the next entry (kept across a close and reopen)
        self._sequence = 0

    def open(self) -> None:
        """Read the listing (again after ``close``); the position in the sequence is kept, so a reopened replay goes
        on where it was instead of repeating its first brackets. Opening an open replay does nothing."""
        if self._entries is not None:
            return
        if not self.path.exists():
            raise SourceError(f"{self.path}: no such folder or list file")
        gains: list[float] | None = None
        if self.path.is_dir():
            listing = self.path / "list.txt"
            if listing.is_file():
                entries = read_list_file(listing)
            else:  # EXIF: exposure time, with ISO and aperture as gains, as edgehdr merge reads a folder
                paths = sorted(p for p in self.path.iterdir() if p.suffix.lower() in LDR_SUFFIXES)
                settings = [read_exif_exposure(p) for p in paths]
                try:
                    gains = exif_gains(paths, [n for _, n, _ in settings], [iso for _, _, iso in settings])
                except ValueError as exc:
                    raise SourceError(str(exc)) from None
                entries = [(p, t) for p, (t, _, _) in zip(paths, settings)]
        else:
            entries = read_list_file(self.path)
        if len(entries) < self.bracket_size:
            raise SourceError(f"{self.path}: {len(entries)} frames, fewer than one bracket of {self.bracket_size}")
        usable = len(entries) - len(entries) % self.bracket_size
        if usable < len(entries):  # said, not silently dropped
            log.warning("replay %s: %d frames are not a whole number of brackets of %d; the last %d are not "
                        "replayed", self.path, len(entries), self.bracket_size, len(entries) - usable)
        self._entries = entries[:usable]
        self._gains = gains[:usable] if gains is not None else None
        first = self._frame(0)  # the frame size is the source's, whatever the configuration's defaults say
        self.height, self.width = first.shape[:2]
        self._next_time = time.monotonic()

    def close(self) -> None:
        self._entries = None

    def _frame(self, i: int) -> np.ndarray:
        frame = self._cache.get(i)
        if frame is None:
            if self._entries is None:
                raise SourceTimeout(f"{self.path}: replay not open")
            frame = read_ldr_image(self._entries[i][0])
            if self._cached_bytes + frame.nbytes <= self.cache_bytes:
                self._cache[i] = frame
                self._cached_bytes += frame.nbytes
        return frame

    def read_bracket(self, timeout_s: float = 1.0) -> Bracket:
        entries = self._entries
        if entries is None:
            raise SourceTimeout(f"{self.path}: replay not open")
        if self._index >= len(entries):
            if not self.loop:
                raise SourceExhausted(f"{self.path}: end of replay")
            self._index = 0
        if self.fps:
            delay = self._next_time - time.monotonic()
            if delay > timeout_s:
                raise SourceTimeout(f"{self.path}: next bracket due in {delay:.2f} s")
            if delay > 0:
                time.sleep(delay)
            self._next_time = max(self._next_time + 1.0 / self.fps, time.monotonic() - 1.0 / self.fps)
        idx = range(self._index, self._index + self.bracket_size)
        self._index += self.bracket_size  # past this bracket whatever happens to it: a bad one is not retried
        try:
            frames = [self._frame(i) for i in idx]
        except (OSError, ValueError) as exc:  # a file gone or damaged since the listing was read: this bracket only
            raise BracketFault(str(exc)) from exc
        for i, f in zip(idx, frames):
            if f.shape != frames[0].shape or f.dtype != frames[0].dtype:
                raise BracketFault(f"{entries[i][0]}: {f.shape[1]}x{f.shape[0]} {f.dtype} differs from the rest of "
                                   f"its bracket ({entries[idx[0]][0]}: {frames[0].shape[1]}x{frames[0].shape[0]} "
                                   f"{frames[0].dtype})")
        bits = self._bits or (8 if frames[0].dtype == np.uint8 else 16)
        now = time.monotonic_ns()
        self._sequence += 1
        # One timestamp per frame, as a camera's: the alignment's per-frame caches key on them.
        return Bracket(frames=np.stack(frames), exposure_s=[entries[i][1] for i in idx],
                       gain=None if self._gains is None else [self._gains[i] for i in idx], bits=bits,
                       timestamp_ns=[now + k for k in range(self.bracket_size)], sequence=self._sequence,
                       source=str(self.path))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "path": str(self.path), "bracket_size": self.bracket_size, "fps": self.fps,
                "loop": self.loop}
