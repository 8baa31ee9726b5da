"""The ``Bracket`` data contract: N exposures of one scene plus their metadata.

Every bracket source (synthetic camera, image folder, V4L2, picamera2) produces
a ``Bracket``; alignment and merging consume it. Frames are stacked in one
``(N, H, W, 3)`` array so the merge kernel reads them without a copy.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["Bracket", "as_frame_stack", "check_code_depth", "check_frame_matches"]


def check_code_depth(frames: np.ndarray | Sequence[np.ndarray], bits: int, *,
                     names: Sequence[object] | None = None) -> None:
    """Raise ``ValueError`` when ``frames`` (a stack, or a list of frames of one dtype) cannot carry ``bits``:
    uint8 frames carry 8 bits, and a uint16 code at or above ``2 ** bits`` (a sensor's codes in the high bits,
    say) would index past a response table of that depth. ``names`` (the frames' files) puts the offending
    frame's name in the message."""
    if frames[0].dtype == np.uint8:
        if bits != 8:
            raise ValueError(f"{names[0]}: an 8-bit image carries 8 bits, not bits={bits}" if names is not None
                             else f"uint8 frames carry 8 bits, not {bits}")
    elif bits < 16:
        if names is None and isinstance(frames, np.ndarray):
            peaks, worst = [int(frames.max())], 0
        else:
            peaks = [int(f.max()) for f in frames]
            worst = int(np.argmax(peaks))
        if peaks[worst] >= 1 << bits:
            if names is not None:
                raise ValueError(f"{names[worst]}: holds code {peaks[worst]} but bits={bits} allows at most "
                                 f"{(1 << bits) - 1} (the sensor's depth is larger, or its codes sit in the high "
                                 "bits)")
            raise ValueError(f"frames hold code {peaks[worst]} but bits={bits} allows at most {(1 << bits) - 1}")


def check_frame_matches(frame: np.ndarray, first: np.ndarray, label: str, first_label: str) -> None:
    """Raise ``ValueError`` naming both frames when ``frame`` differs from ``first`` in size or dtype."""
    if frame.shape != first.shape:
        raise ValueError(
            f"{label}: size {frame.shape[1]}x{frame.shape[0]} differs from {first_label} "
            f"({first.shape[1]}x{first.shape[0]}); all frames of a bracket must match"
        )
    if frame.dtype != first.dtype:
        raise ValueError(f"{label}: dtype {frame.dtype} differs from {first_label} ({first.dtype})")


def as_frame_stack(frames: np.ndarray | Iterable[ArrayLike], *, name: str = "frames") -> np.ndarray:
    """Return ``frames`` as one contiguous ``(N, H, W, 3)`` uint8/uint16 array.

    Raises ``ValueError`` naming the offending frame when sizes, channel counts
    or dtypes differ.
    """
    if isinstance(frames, np.ndarray):
        stack = frames
        if stack.ndim != 4 or stack.shape[-1] != 3:
            raise ValueError(f"{name}: expected an (N, H, W, 3) array, got shape {stack.shape}")
    else:
        frames = list(frames)
        if not frames:
            raise ValueError(f"{name}: no frames given")
        first = np.asarray(frames[0])
        for i, frame in enumerate(frames):
            frame = np.asarray(frame)
            if frame.ndim != 3 or frame.shape[-1] != 3:
                raise ValueError(f"{name}[{i}]: expected an HxWx3 RGB frame, got shape {frame.shape}")
            check_frame_matches(frame, first, f"{name}[{i}]", f"{name}[0]")
        stack = np.stack(frames)
    if stack.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{name}: frames must be uint8 or uint16 code values, got {stack.dtype}")
    return np.ascontiguousarray(stack)


@dataclass(init=False)
class Bracket:
    """N frames of one scene with their exposure metadata.

    The constructor takes any array-likes (and None for ``gain``, ``bits`` and
    ``timestamp_ns``: unit gain, the dtype's depth, zeros) and validates them; the
    attributes are then always the arrays and numbers described below.

    Attributes
    ----------
    frames : ndarray, (N, H, W, 3) uint8 or uint16
        Code values in RGB order.
    exposure_s : ndarray, (N,) float64
        Exposure time of each frame in seconds.
    gain : ndarray, (N,) float64
        Linear analogue gain (ISO / 100 for a camera at base ISO 100).
    bits : int
        Significant bits per code value (8 for uint8; 10, 12 or 16 for uint16).
    timestamp_ns : ndarray, (N,) int64
        Capture time of each frame (monotonic clock).
    sequence : int
        Bracket sequence id from its source.
    """

    frames: np.ndarray
    exposure_s: np.ndarray
    gain: np.ndarray
    bits: int
    timestamp_ns: np.ndarray
    sequence: int = 0
    source: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def __init__(self, frames: np.ndarray | Iterable[ArrayLike], exposure_s: ArrayLike, gain: ArrayLike | None = None,
                 bits: int | None = None, timestamp_ns: ArrayLike | None = None, sequence: int = 0, source: str = "",
                 extra: dict[str, Any] | None = None) -> None:
        self.frames = as_frame_stack(frames)
        n = self.frames.shape[0]
        self.exposure_s = np.asarray(exposure_s, dtype=np.float64).reshape(-1)
        if self.exposure_s.shape != (n,):
            raise ValueError(f"Bracket: {n} frames but {self.exposure_s.size} exposure times")
        if not np.all(np.isfinite(self.exposure_s)) or np.any(self.exposure_s <= 0):
            raise ValueError(f"Bracket: exposure_s must be positive and finite, got {self.exposure_s.tolist()}")
        self.gain = np.ones(n) if gain is None else np.asarray(gain, dtype=np.float64).reshape(-1)
        if self.gain.shape != (n,) or not np.all(np.isfinite(self.gain)) or np.any(self.gain <= 0):
            raise ValueError(f"Bracket: gain must hold {n} positive, finite values, got "
                             f"{np.asarray(self.gain).tolist()}")
        if bits is None:
            bits = 8 if self.frames.dtype == np.uint8 else 16
        self.bits = bits
        if not (1 <= self.bits <= 16) or (self.frames.dtype == np.uint8 and self.bits != 8):
            raise ValueError(f"Bracket: bits={self.bits} does not fit dtype {self.frames.dtype} (uint8 frames carry "
                             "8 bits, uint16 frames 1 to 16)")
        if timestamp_ns is None:
            timestamp_ns = np.zeros(n, dtype=np.int64)
        self.timestamp_ns = np.asarray(timestamp_ns, dtype=np.int64).reshape(-1)
        if self.timestamp_ns.shape != (n,):
            raise ValueError(f"Bracket: {n} frames but {self.timestamp_ns.size} timestamps")
        self.sequence = sequence
        self.source = source
        self.extra = {} if extra is None else extra

    @property
    def relative_exposure(self) -> np.ndarray:
        """Exposure time times gain: what scales scene radiance to sensor signal."""
        return self.exposure_s * self.gain

    def __len__(self) -> int:
        return self.frames.shape[0]
