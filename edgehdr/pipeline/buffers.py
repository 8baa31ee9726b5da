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

import numpy as np

__all__ = ["BufferPool"]


def _references_when_free() -> int:
    # What ``sys.getrefcount`` reports for a list item nobody else holds, measured with the
    # same expression ``take`` uses rather than assumed (the temporary references counted
    # differ between Python versions).
    probe = [np.empty(1)]
    return sys.getrefcount(probe[0])


_FREE = _references_when_free()


class BufferPool:
    """Arrays of the requested shape and dtype, recycled when nothing outside the pool holds them.

    Parameters
    ----------
    capacity : int
        Arrays kept for reuse; more in flight at once are allocated (and counted in
        ``allocated``) but not kept. A pipeline needs about its queue depth plus the
        frames in the stages after this one.
    """

    def __init__(self, capacity: int = 4) -> None:
        if capacity < 1:
            raise ValueError(f"capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._arrays: list[np.ndarray] = []
        self.allocated = 0  # arrays created (reuse keeps it at about the frames in flight)
        self.reused = 0

    def take(self, shape: tuple[int, ...], dtype: np.dtype | type) -> np.ndarray:
        """A C-contiguous array of ``shape`` and ``dtype``, contents undefined (like ``np.empty``)."""
        dtype = np.dtype(dtype)
        for i in range(len(self._arrays)):
            # Referenced by the list (and getrefcount's temporaries) only: nobody else holds it.
            if sys.getrefcount(self._arrays[i]) == _FREE:
                array = self._arrays[i]
                if array.shape == tuple(shape) and array.dtype == dtype:
                    self.reused += 1
                    return array
                del self._arrays[i]  # a free array of another size (the frame size changed)
                break
        array = np.empty(shape, dtype)
        self.allocated += 1
        if len(self._arrays) < self.capacity:
            self._arrays.append(array)
        return array
