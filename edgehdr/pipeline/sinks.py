"""Outputs of the runtime: image sequences, a video file, and the state the preview server shows.

Every file appears atomically: images through ``edgehdr.io``'s temp-and-rename,
the video as a hidden partial file renamed when the writer closes, so a reader
(or a crash, or SIGTERM) never finds a half-written output under its final name.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path

import cv2
import numpy as np

from edgehdr.io import write_ldr_image

__all__ = ["ImageSequenceSink", "VideoSink", "PreviewState", "PreviewSink"]


def _pick(ctx, what: str):
    image = getattr(ctx, what)
    if image is None:
        return None
    if image.dtype == np.uint16:  # 10-bit LCD codes: keep 16-bit PNGs
        return image
    return image


class ImageSequenceSink:
    """Writes every ``every_n``-th frame's ``what`` (``sdr`` or ``lcd``) as ``PREFIX_000123.png``."""

    def __init__(self, folder, *, what: str = "sdr", every_n: int = 30, prefix: str | None = None,
                 suffix: str = ".png"):
        if what not in ("sdr", "lcd"):
            raise ValueError(f"image sink can write 'sdr' or 'lcd', got {what!r}")
        if every_n < 1:
            raise ValueError(f"every_n must be >= 1, got {every_n}")
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.what, self.every_n, self.suffix = what, every_n, suffix
        self.prefix = prefix or what
        self.written = 0

    def write(self, ctx) -> None:
        if ctx.frame_id % self.every_n:
            return
        image = _pick(ctx, self.what)
        if image is not None:
            write_ldr_image(self.folder / f"{self.prefix}_{ctx.frame_id:06d}{self.suffix}", image)
            self.written += 1


class VideoSink:
    """Tone-mapped frames into a video (``.avi`` MJPG or ``.mp4`` mp4v), renamed into place on close."""

    def __init__(self, path, *, fps: float = 30.0, what: str = "sdr"):
        self.path = Path(path)
        if self.path.suffix.lower() not in (".avi", ".mp4"):
            raise ValueError(f"{self.path}: video output must end in .avi or .mp4")
        if not self.path.parent.is_dir():
            raise FileNotFoundError(f"{self.path}: output folder {self.path.parent} does not exist")
        self.partial = self.path.with_name(f".{self.path.stem}.partial{self.path.suffix}")
        self.fps, self.what = fps, what
        self._writer = None
        self.frames = 0

    def write(self, ctx) -> None:
        image = _pick(ctx, self.what)
        if image is None:
            return
        if image.dtype != np.uint8:
            image = (image >> 2).astype(np.uint8)
        if self._writer is None:
            fourcc = cv2.VideoWriter_fourcc(*("MJPG" if self.path.suffix.lower() == ".avi" else "mp4v"))
            h, w = image.shape[:2]
            self._writer = cv2.VideoWriter(str(self.partial), fourcc, self.fps, (w, h))
            if not self._writer.isOpened():
                raise OSError(f"{self.path}: OpenCV cannot open a {self.path.suffix} video writer")
        self._writer.write(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
        self.frames += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.release()
            self._writer = None
            if self.frames:
                with open(self.partial, "rb+") as fh:
                    os.fsync(fh.fileno())
                os.replace(self.partial, self.path)
        with contextlib.suppress(FileNotFoundError):
            self.partial.unlink()


class PreviewState:
    """What the preview server shows: latest JPEG, zone heat map, and a stats callback."""

    def __init__(self, stats=None):
        self.stats = stats or (lambda: {})
        self._cond = threading.Condition()
        self.jpeg: bytes | None = None
        self.zones_png: bytes | None = None
        self.sequence = 0

    def publish(self, jpeg: bytes | None = None, zones_png: bytes | None = None) -> None:
        with self._cond:
            if jpeg is not None:
                self.jpeg = jpeg
                self.sequence += 1
            if zones_png is not None:
                self.zones_png = zones_png
            self._cond.notify_all()

    def wait_frame(self, last_sequence: int, timeout_s: float = 2.0):
        with self._cond:
            self._cond.wait_for(lambda: self.sequence != last_sequence, timeout=timeout_s)
            return self.sequence, self.jpeg


class PreviewSink:
    """Encodes a reduced preview JPEG and the zone heat map every ``every_n``-th frame."""

    def __init__(self, state: PreviewState, layout=None, *, width_px: int = 640, every_n: int = 3, quality: int = 80):
        self.state, self.layout = state, layout
        self.width_px, self.every_n, self.quality = width_px, every_n, quality

    def write(self, ctx) -> None:
        if ctx.frame_id % self.every_n or ctx.sdr is None:
            return
        h, w = ctx.sdr.shape[:2]
        small = cv2.resize(ctx.sdr, (self.width_px, max(1, int(round(h * self.width_px / w)))),
                           interpolation=cv2.INTER_AREA)
        ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(small, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        zones = None
        if self.layout is not None and ctx.zone_values is not None:
            from edgehdr.dimming import zone_heatmap

            ok2, png = cv2.imencode(".png", cv2.cvtColor(zone_heatmap(ctx.zone_values, self.layout, width_px=320),
                                                         cv2.COLOR_RGB2BGR))
            zones = png.tobytes() if ok2 else None
        self.state.publish(jpeg.tobytes() if ok else None, zones)
