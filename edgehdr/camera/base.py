"""The bracket-source interface: where the frame's journey starts.

Every camera (synthetic, file replay, V4L2, GStreamer/Argus, picamera2) is a small
object that owns its device: a context manager that opens it, yields ``Bracket``
objects from ``read_bracket`` and takes new exposure plans through
``set_plan``. Hardware libraries are imported when a source opens, and errors say
what to do. ``SourceError`` means the device failed (the pipeline restarts the
source with backoff); ``SourceTimeout`` means nothing arrived in time (a stall).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edgehdr.bracket import Bracket

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["BracketSource", "ExposurePlan", "PendingPlan", "SourceError", "SourceTimeout", "SourceExhausted",
           "BracketFault", "FrameGrouper"]


class SourceError(RuntimeError):
    """The camera failed or is gone; the message says what to check."""


class SourceTimeout(SourceError):
    """No frame within the timeout: the source stalled."""


class SourceExhausted(SourceError):
    """A finite source (replay without looping) has delivered its last bracket."""


class BracketFault(SourceError):
    """One bracket could not be delivered (a recorded file missing or damaged, frames of different sizes) while the
    source itself is fine: the pipeline drops that bracket and counts it, and reads the next without reopening."""


@dataclass(frozen=True)
class ExposurePlan:
    """Exposure time (s) and analogue gain of each frame of a bracket, shortest first."""

    exposure_s: tuple[float, ...]
    gain: tuple[float, ...]

    def __post_init__(self) -> None:
        if len(self.exposure_s) != len(self.gain) or not self.exposure_s:
            raise ValueError("an exposure plan needs one gain per exposure time and at least one frame")
        if any(t <= 0 for t in self.exposure_s) or any(g <= 0 for g in self.gain):
            raise ValueError(f"exposure times and gains must be positive: {self}")

    @classmethod
    def of(cls, exposure_s: Iterable[float], gain: Iterable[float] | None = None) -> ExposurePlan:
        times = tuple(float(t) for t in exposure_s)
        gains = tuple(float(g) for g in gain) if gain is not None else (1.0,) * len(times)
        return cls(times, gains)

    @property
    def relative(self) -> np.ndarray:
        return np.asarray(self.exposure_s) * np.asarray(self.gain)

    def __len__(self) -> int:
        return len(self.exposure_s)


class PendingPlan:
    """A new exposure plan on its way from the planner's thread to the capture thread.

    ``put`` (the merge stage, via a source's ``set_plan``) never waits for a read in
    progress; the capture thread ``take``s the plan before its next frame and applies
    it there, so a source's frame buffers are only ever touched by that thread.
    ``peek`` is the plan set but not yet taken (None: none).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()  # held for an assignment, never across a read
        self._plan: ExposurePlan | None = None

    def put(self, plan: ExposurePlan) -> None:
        with self._lock:
            self._plan = plan

    def peek(self) -> ExposurePlan | None:
        with self._lock:
            return self._plan

    def take(self) -> ExposurePlan | None:
        with self._lock:
            plan, self._plan = self._plan, None
        return plan


class BracketSource:
    """Base class of every bracket source (see the module docstring)."""

    name = "source"
    bits = 8

    def open(self) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def read_bracket(self, timeout_s: float = 1.0) -> Bracket:
        raise NotImplementedError

    def set_plan(self, plan: ExposurePlan) -> None:
        """Use these exposures from the next bracket on (sources without control ignore it)."""

    @property
    def plan(self) -> ExposurePlan | None:
        return None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "bits": self.bits}

    def __enter__(self) -> Self:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class FrameGrouper:
    """Groups single frames into brackets by exposure index.

    ``mode="rolling"``: every new frame replaces the frame of its exposure and a
    bracket is ready as soon as every exposure has been seen once (then after every
    frame: output at capture rate). ``mode="burst"``: a bracket is ready when all
    frames of one round have arrived, and the round starts over.

    Memory is recycled rather than allocated per frame (a 1080p bracket is 18 MB, and a
    fresh one page-faults in on every read): a source converts each capture into
    ``frame_buffer(shape)``, an array the grouper no longer holds, and ``take`` copies the
    stored frames into a pooled stack that is written again only once the pipeline has let
    go of the bracket that carried it (``edgehdr.pipeline.buffers.BufferPool``).
    """

    def __init__(self, count: int, mode: str = "rolling", *, stack_pool_size: int = 4) -> None:
        if mode not in ("rolling", "burst"):
            raise ValueError(f"mode must be 'rolling' or 'burst', got {mode!r}")
        # Imported here: edgehdr.pipeline imports this module.
        from edgehdr.pipeline.buffers import BufferPool

        self.count, self.mode = count, mode
        # Frames: the stored ones, the one being captured and one a source discarded but still holds.
        self.frame_pool = BufferPool(capacity=count + 2)
        self.stack_pool = BufferPool(capacity=stack_pool_size)
        self.reset(count)

    def reset(self, count: int | None = None) -> None:
        self.count = count or self.count
        self.frame_pool.capacity = self.count + 2
        self.frames: list[np.ndarray | None] = [None] * self.count
        self.meta: list[tuple[float, float, int] | None] = [None] * self.count
        self._fresh: set[int] = set()

    def frame_buffer(self, shape: tuple[int, ...], dtype: np.dtype | type = np.uint8) -> np.ndarray:
        """An array to capture the next frame into (contents undefined, like ``np.empty``): one the grouper has
        replaced and nothing else holds, or a new one."""
        return self.frame_pool.take(shape, dtype)

    def add(self, index: int, frame: np.ndarray, exposure_s: float, gain: float, timestamp_ns: int) -> bool:
        """Store a frame; True when a bracket can be taken."""
        self.frames[index] = frame
        self.meta[index] = (exposure_s, gain, timestamp_ns)
        self._fresh.add(index)
        if any(f is None for f in self.frames):
            return False
        if self.mode == "burst":
            return len(self._fresh) == self.count
        return True

    def take(self, bits: int, sequence: int, source: str) -> Bracket:
        """The bracket of the stored frames (call after ``add`` returned True)."""
        frames = [f for f in self.frames if f is not None]
        meta = [m for m in self.meta if m is not None]
        if len(frames) != self.count or len(meta) != self.count:
            raise RuntimeError(f"FrameGrouper.take: {len(frames)} of {self.count} exposures stored; wait until "
                               "add() returns True")
        exposure, gain, stamps = zip(*meta)
        first = frames[0]
        stack: np.ndarray | list[np.ndarray] = frames  # frames that differ: Bracket names the odd one out
        if first.ndim == 3 and all(f.shape == first.shape and f.dtype == first.dtype for f in frames):
            stack = self.stack_pool.take((len(frames), *first.shape), first.dtype)
            for i, frame in enumerate(frames):
                stack[i] = frame
        bracket = Bracket(frames=stack, exposure_s=exposure, gain=gain, bits=bits,
                          timestamp_ns=stamps, sequence=sequence, source=source)
        if self.mode == "burst":
            self._fresh.clear()
        return bracket
