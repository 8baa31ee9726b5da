"""Per-stage output buffers, reused once the frame that carried them has been released.

A 1080p frame's radiance is 25 MB; allocating it afresh each frame costs page faults
(and RSS held by the allocator) on every frame. A stage takes its output array from a
``BufferPool`` instead: an array is handed out again when the pool holds the only
reference to it, i.e. when every later stage, sink and preview has let go of it (the
pipeline drops a frame's fields as soon as no later stage reads them). An array still
referenced anywhere, a view of it included, is never reused, so reuse cannot change a
result: at worst the pool allocates, as the stage did before.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from edgehdr.kernellock import kernel_lock_paused

__all__ = ["BufferPool", "unshared", "wait_until"]


def _references_when_unshared() -> int:
    # What ``sys.getrefcount`` reports inside a one-argument call like ``unshared``'s for an array that one local
    # variable (or one list item: the same count) holds and nothing else; measured rather than assumed (the
    # temporary references counted differ between Python versions).
    def count(array: np.ndarray) -> int:
        return sys.getrefcount(array)

    probe = np.empty(1)
    return count(probe)


_UNSHARED = _references_when_unshared()


def unshared(array: np.ndarray, known: int = 0) -> bool:
    """True when the caller's one reference (a local variable or a list item) is the only one to ``array``: no
    other variable, container or view (a view holds its base) keeps it, so its memory may be written again.
    ``known``: further references the caller holds and accounts for itself (e.g. an attribute it will drop)."""
    return sys.getrefcount(array) == _UNSHARED + known


def wait_until(released: Callable[[], bool], timeout_s: float) -> tuple[bool, float]:
    """Poll ``released()`` every 0.5 ms until it is true or ``timeout_s`` passed: (whether it became true, seconds
    waited). A bounded pool's wait for another thread to let go of an array (references give no notification)."""
    t0 = time.monotonic()
    if released():
        return True, 0.0
    with kernel_lock_paused():  # the thread that would release it may need the kernel lock (edgehdr.kernellock)
        while not released():
            if time.monotonic() - t0 > timeout_s:
                return False, time.monotonic() - t0
            time.sleep(0.0005)
    return True, time.monotonic() - t0


class BufferPool:
    """Arrays of the requested shape and dtype, recycled when nothing outside the pool holds them.

    Parameters
    ----------
    capacity : int
        Arrays kept for reuse; more in flight at once are allocated (and counted in
        ``allocated``) but not kept. A pipeline needs about its queue depth plus the
        frames in the stages after this one.
    idle_takes : int
        A free array not handed out for this many ``take`` calls is let go (900: 30 s at 30 fps),
        so that a hiccup's extra arrays do not stay for the whole run. A shorter window (90) was
        tried: some runs then had allocation storms (p99 51-71 ms in three of seven).
    limit : int, optional
        Arrays in flight at most: with ``limit`` arrays all held, ``take`` waits (polling) up to
        ``wait_s`` for one to be released, and allocates past the limit only then (counted in
        ``over_limit``): a hiccup downstream then holds the stage back instead of adding a
        25 MB radiance buffer that stays until it idles out. None: allocate at once, as above.
    wait_s : float
        How long ``take`` waits at the limit.
    """

    def __init__(self, capacity: int = 4, *, idle_takes: int = 900, limit: int | None = None,
                 wait_s: float = 0.25) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity, self.idle_takes, self.wait_s = capacity, idle_takes, wait_s
        self.limit: int | None = None
        self.bound(limit)
        self.waits = 0  # takes that found every array held at the limit and waited
        self.wait_s_total = 0.0
        self.over_limit = 0  # arrays allocated past the limit after waiting wait_s
        self._arrays: list[np.ndarray] = []
        self._last_take: list[int] = []  # the take() call that last handed each array out
        self._takes = 0
        self.allocated = 0  # arrays created (reuse keeps it at about the frames in flight)
        self.reused = 0
        self.released = 0  # free arrays let go: idle too long, or of another size

    def take(self, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """A C-contiguous array of ``shape`` and ``dtype``, contents undefined (like ``np.empty``).

        A free array of another size or dtype is dropped (the frame size changed), and so is one not handed out
        for ``idle_takes`` calls: kept from a moment when more frames were in flight than since (a hiccup at
        1080p30 left a third 25 MB radiance buffer in the merge stage's pool for the rest of the run).
        """
        dtype = np.dtype(dtype)
        shape = tuple(shape)
        past_limit = False
        if self.limit is not None and len(self._arrays) >= self.limit and not self._any_free():
            self.waits += 1
            released, waited = wait_until(self._any_free, self.wait_s)
            past_limit = not released
            self.wait_s_total += waited
        self._takes += 1
        chosen = -1
        drop = []
        for i in range(len(self._arrays)):
            if unshared(self._arrays[i]):  # held by the list only
                fits = self._arrays[i].shape == shape and self._arrays[i].dtype == dtype
                if fits and chosen < 0:
                    chosen = i
                elif not fits or self._takes - self._last_take[i] > self.idle_takes:
                    drop.append(i)
        if chosen >= 0:
            array = self._arrays[chosen]
            self._last_take[chosen] = self._takes
            self.reused += 1
        else:
            array = np.empty(shape, dtype)
            self.allocated += 1
            self.over_limit += past_limit
        for i in reversed(drop):
            del self._arrays[i], self._last_take[i]
            self.released += 1
        if chosen < 0 and len(self._arrays) < self.capacity and not past_limit:  # one past the limit is not kept
            self._arrays.append(array)
            self._last_take.append(self._takes)
        return array

    def bound(self, limit: int | None) -> None:
        """Set ``limit`` (None: no limit); the pool keeps at least that many arrays."""
        if limit is not None and limit < 1:
            raise ValueError(f"limit must be >= 1 or None, got {limit}")
        self.limit = limit
        self.capacity = max(self.capacity, limit or 0)

    def _any_free(self) -> bool:
        # a free array of another shape or dtype counts: take() lets it go and allocates in its place
        return any(unshared(self._arrays[i]) for i in range(len(self._arrays)))

    def snapshot(self) -> dict[str, Any]:
        """The counters, for the runtime's stats."""
        return {"kept": len(self._arrays), "limit": self.limit, "allocated": self.allocated, "reused": self.reused,
                "released": self.released, "waits": self.waits, "wait_s": round(self.wait_s_total, 3),
                "over_limit": self.over_limit}
