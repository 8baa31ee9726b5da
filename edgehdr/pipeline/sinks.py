"""Outputs of the runtime: image sequences, a video file, and the state the preview server shows.

Every file appears atomically: images through ``edgehdr.io``'s temp-and-rename,
the video as a hidden partial file renamed when the writer closes, so a reader
(or a crash, or SIGTERM) never finds a half-written output under its final name.

Failures are the sinks' to report, not to hide. OpenCV's video writer only prints
"Failed to write frame" on a full disk, so ``VideoSink`` checks the free space
before each frame (a frame that cannot fit is refused with ``ENOSPC`` and counted by
the output stage) and, on close, re-reads the file and compares its frame count
with the frames written. A video that lost frames is kept as
``NAME.incomplete.SUFFIX`` and ``close()`` raises, so the run ends non-zero.

Output names may carry the run's start time: ``{start:%Y%m%d-%H%M%S}`` in a path
(``expand_run_pattern``), so a restarted daemon never overwrites the last run.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import string
import threading
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from edgehdr.io import write_ldr_image

if TYPE_CHECKING:
    from edgehdr.dimming import LedLayout
    from edgehdr.pipeline.graph import FrameContext

__all__ = ["ImageSequenceSink", "VideoSink", "PreviewState", "PreviewSink", "RunPatternError", "expand_run_pattern",
           "unused_path"]


class RunPatternError(ValueError):
    """An output path pattern with a placeholder other than ``{start}`` / ``{start:FORMAT}``; ``detail`` says
    what was wrong with it."""

    def __init__(self, path: str, detail: str) -> None:
        super().__init__(f"output path {path!r}: only the placeholder {{start:%Y%m%d-%H%M%S}} (strftime format) is "
                         f"allowed ({detail})")
        self.detail = detail


def expand_run_pattern(path: str, start: datetime) -> str:
    """Fill ``{start:FORMAT}`` (strftime) in an output path with the run's start time.

    Raises ``RunPatternError`` (a ``ValueError``) for any other placeholder or a malformed pattern.
    """
    if "{" not in path and "}" not in path:
        return path
    try:
        # only {start} or {start:FORMAT}: no attribute or index ({start.year:300000000} formats a 300 MB name)
        for _, field, _, conversion in string.Formatter().parse(path):
            if field is not None and (field != "start" or conversion):
                raise ValueError(f"{{{field}{'!' + conversion if conversion else ''}}} is not {{start}}")
        return path.format(start=start)
    except (KeyError, IndexError, ValueError, AttributeError, TypeError) as exc:
        raise RunPatternError(path, f"{type(exc).__name__}: {exc}") from None


def unused_path(path: Path) -> Path:
    """``path`` itself if nothing is there, else ``STEM-1.SUFFIX``, ``STEM-2.SUFFIX``, ...: never overwrite."""
    if not path.exists():
        return path
    n = 1
    while True:
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
        if not candidate.exists():
            return candidate
        n += 1


def _check_space(folder: Path, needed_bytes: int, what: object) -> None:
    free = shutil.disk_usage(folder).free
    if free < needed_bytes:
        raise OSError(errno.ENOSPC, f"{what}: only {free} bytes free in {folder}, a frame needs about {needed_bytes}")


def _pick(ctx: FrameContext, what: str) -> np.ndarray | None:
    image: np.ndarray | None = getattr(ctx, what)
    if image is None:
        return None
    if image.dtype == np.uint16:  # 10-bit LCD codes: keep 16-bit PNGs
        return image
    return image


class ImageSequenceSink:
    """Writes every ``every_n``-th frame's ``what`` (``sdr`` or ``lcd``) as ``PREFIX_000123.png``.

    The daemon gives a prefix with the run's start time (``sdr_20261129-231500``), so
    a second run into the same folder adds files instead of replacing the first run's.
    """

    def __init__(self, folder: str | os.PathLike[str], *, what: str = "sdr", every_n: int = 30,
                 prefix: str | None = None, suffix: str = ".png", name: str | None = None) -> None:
        if what not in ("sdr", "lcd"):
            raise ValueError(f"image sink can write 'sdr' or 'lcd', got {what!r}")
        if every_n < 1:
            raise ValueError(f"every_n must be >= 1, got {every_n}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.what, self.every_n, self.suffix = what, every_n, suffix
        self.prefix = prefix or what
        self.name = name or f"{what}_frames"
        self.written = 0
        self.reads = (what,)  # the frame fields this sink needs (the pipeline releases the others early)

    def write(self, ctx: FrameContext) -> None:
        if ctx.frame_id % self.every_n:
            return
        image = _pick(ctx, self.what)
        if image is not None:
            write_ldr_image(self.folder / f"{self.prefix}_{ctx.frame_id:06d}{self.suffix}", image)
            self.written += 1


class VideoSink:
    """Tone-mapped frames into a video (``.avi`` MJPG or ``.mp4`` mp4v), renamed into place on close."""

    def __init__(self, path: str | os.PathLike[str], *, fps: float = 30.0, what: str = "sdr",
                 name: str = "video") -> None:
        self.name = name
        self.path = Path(path)
        if self.path.suffix.lower() not in (".avi", ".mp4"):
            raise ValueError(f"{self.path}: video output must end in .avi or .mp4")
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"{self.path}: output folder {self.path.parent} does not exist")
        self.partial = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self.fps, self.what = fps, what
        self.reads = (what,)
        self._writer: cv2.VideoWriter | None = None
        self.frames = 0
        self.refused = 0  # frames that could not be written (disk full): the recording has gaps
        self.incomplete: Path | None = None

    @property
    def written(self) -> int:
        return self.frames

    def write(self, ctx: FrameContext) -> None:
        image = _pick(ctx, self.what)
        if image is None:
            return
        if image.dtype != np.uint8:
            image = (image >> 2).astype(np.uint8)
        # Room for two more frames of the size written so far (a quarter of the raw size before the first)
        # and 256 KiB for the container's index, which is written on close.
        size = self.partial.stat().st_size if self.frames and self.partial.exists() else 0
        per_frame = size // self.frames if size else image.nbytes // 4
        try:
            _check_space(self.path.parent, 2 * per_frame + (256 << 10), self.path)
        except OSError:
            self.refused += 1
            raise
        if self._writer is None:
            fourcc = cv2.VideoWriter.fourcc(*("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"))
            h, w = image.shape[:2]
            self._writer = cv2.VideoWriter(str(self.partial), fourcc, self.fps, (w, h))
            if not self._writer.isOpened():
                raise OSError(f"{self.path}: OpenCV cannot open a {self.path.suffix} video writer")
        self._writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        """Finish the file; rename it into place if it holds every frame of the run, else keep it as incomplete.

        Raises ``OSError`` when frames were lost, in the file or refused before it for want of
        space (the file stays as ``NAME.incomplete.SUFFIX``).
        """
        if self._writer is None:
            with contextlib.suppress(FileNotFoundError):
                self.partial.unlink()
            return
        self._writer.release()
        self._writer = None
        if not self.frames:
            with contextlib.suppress(FileNotFoundError):
                self.partial.unlink()
            return
        try:
            with open(self.partial, "rb+") as fh:
                os.fsync(fh.fileno())
            readable = _frames_in(self.partial)
        except OSError as exc:
            readable, reason = 0, str(exc)
        else:
            reason = f"{readable} readable frames of {self.frames} written, {self.refused} refused for want of space"
        if readable == self.frames and not self.refused:
            os.replace(self.partial, self.path)
            return
        if self.partial.exists():
            self.incomplete = unused_path(self.path.with_name(f"{self.path.stem}.incomplete{self.path.suffix}"))
            os.replace(self.partial, self.incomplete)
        raise OSError(errno.EIO, f"{self.path}: video incomplete ({reason}); kept as {self.incomplete}")


def _frames_in(path: Path) -> int:
    """Frames a video file really holds, read back through OpenCV (a truncated AVI has no index)."""
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            return 0
        count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if count > 0:
            return count
        n = 0
        while cap.grab():
            n += 1
        return n
    finally:
        cap.release()


class PreviewState:
    """What the preview server shows: latest JPEG, zone heat map, and a stats callback."""

    def __init__(self, stats: Callable[[], dict[str, Any]] | None = None) -> None:
        self.stats = stats or (lambda: {})
        self._cond = threading.Condition()
        self.jpeg: bytes | None = None
        self.zones_png: bytes | None = None
        self.zones_enabled = True  # False when the run has no dimming: /zones.png never comes (the sink says so)
        self.sequence = 0

    def publish(self, jpeg: bytes | None = None, zones_png: bytes | None = None) -> None:
        with self._cond:
            if jpeg is not None:
                self.jpeg = jpeg
                self.sequence += 1
            if zones_png is not None:
                self.zones_png = zones_png
            self._cond.notify_all()

    def wait_frame(self, last_sequence: int, timeout_s: float = 2.0) -> tuple[int, bytes | None]:
        with self._cond:
            self._cond.wait_for(lambda: self.sequence != last_sequence, timeout=timeout_s)
            return self.sequence, self.jpeg


class PreviewSink:
    """Encodes a reduced preview JPEG and the zone heat map every ``every_n``-th frame."""

    reads: tuple[str, ...] = ("sdr",)

    name = "preview"

    def __init__(self, state: PreviewState, layout: LedLayout | None = None, *, width_px: int = 640, every_n: int = 3,
                 quality: int = 80) -> None:
        self.state, self.layout = state, layout
        state.zones_enabled = layout is not None
        self.written = 0
        self.width_px, self.every_n, self.quality = width_px, every_n, quality

    def write(self, ctx: FrameContext) -> None:
        if ctx.frame_id % self.every_n or ctx.sdr is None:
            return
        h, w = ctx.sdr.shape[:2]
        small = cv2.resize(ctx.sdr, (self.width_px, max(1, int(round(h * self.width_px / w)))),
                           interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        zones = None
        if self.layout is not None and ctx.zone_values is not None:
            from edgehdr.dimming import zone_heatmap

            ok2, png = cv2.imencode(".png", cv2.cvtColor(zone_heatmap(ctx.zone_values, self.layout, width_px=320),
                                                         cv2.COLOR_RGB2BGR))
            zones = png.tobytes() if ok2 else None
        self.state.publish(jpeg.tobytes() if ok else None, zones)
        self.written += 1
