"""One lock around the runtime's parallel kernels when numba's threading layer is not thread-safe.

numba runs ``parallel=True`` kernels on the first threading layer it can load: TBB, then OpenMP (``libgomp.so.1``,
part of every GCC install, so present on JetPack, Raspberry Pi OS and full Linux images), then its own
``workqueue``. The workqueue layer terminates the process when two Python threads launch parallel kernels at once
("Concurrent access has been detected"), and the runtime's stages run on threads of their own, as does the
synthetic camera: on a machine without libgomp (a slim container image) ``edgehdr demo`` died at its first frames.
There the pipeline runs each stage that launches kernels, and the synthetic camera's exposure kernel, under one lock
(``Stage(kernels=False)`` opts a stage out: the bridge, the outputs): those stages take turns (each kernel still on
every core), which is slower, but it runs, and a warning names the fix (``apt-get install libgomp1``, or
``pip install tbb``). A thread that waits for a buffer another stage holds lets go of the lock while it waits
(``paused``), or the stage that would release the buffer could not run.

Elsewhere the lock is a no-op.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator

import numba
import numpy as np

from edgehdr import kernelcache  # noqa: F401 - before the kernels below: it names their numba cache files

__all__ = ["kernel_lock", "kernel_lock_paused", "kernels_serialised"]

log = logging.getLogger("edgehdr")


class _KernelLock:
    """A re-entrant lock that ``paused`` lets go of entirely (every level this thread holds) and takes back."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._local = threading.local()

    def __enter__(self) -> _KernelLock:
        depth = getattr(self._local, "depth", 0)
        if depth == 0:
            self._lock.acquire()
        self._local.depth = depth + 1
        return self

    def __exit__(self, *exc: object) -> None:
        self._local.depth -= 1
        if self._local.depth == 0:
            self._lock.release()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        depth = getattr(self._local, "depth", 0)
        if depth:
            self._local.depth = 0
            self._lock.release()
        try:
            yield
        finally:
            if depth:
                self._lock.acquire()
                self._local.depth = depth


_LOCK = _KernelLock()
_NO_LOCK = contextlib.nullcontext()
_serialised: bool | None = None
_probe_lock = threading.Lock()


@numba.njit(parallel=True, cache=True)
def _probe(a):
    for i in numba.prange(a.shape[0]):
        a[i] += 1.0


def kernels_serialised() -> bool:
    """Whether numba's threading layer is ``workqueue`` (not thread-safe), so that the runtime's parallel kernels
    must run one at a time; found once per process as numba starts its threads (which it does at the first
    parallel launch anyway), with a warning that names the fix."""
    global _serialised
    if _serialised is None:
        with _probe_lock:
            if _serialised is None:
                try:  # numba picks its layer as it starts its threads: 0.03 s, where compiling a probe took 0.9
                    from numba.np.ufunc import parallel

                    parallel._launch_threads()
                except (ImportError, AttributeError):  # that private function gone: a parallel launch does it
                    _probe(np.zeros(2))
                layer = numba.threading_layer()
                if layer == "workqueue":
                    log.warning("numba runs on its workqueue threading layer (no OpenMP libgomp.so.1 or TBB found, or "
                                "NUMBA_THREADING_LAYER asked for it), which cannot run kernels from several threads at "
                                "once: the pipeline's stages that run kernels take turns (slower). Install libgomp1 "
                                "(apt-get install libgomp1) or TBB (pip install tbb) for the full speed")
                _serialised = layer == "workqueue"
    return _serialised


def kernel_lock() -> contextlib.AbstractContextManager[object]:
    """The lock to hold while a thread runs the runtime's parallel kernels: a real (re-entrant) lock where numba's
    layer is not thread-safe (``kernels_serialised``), else a no-op."""
    return _LOCK if kernels_serialised() else _NO_LOCK


def kernel_lock_paused() -> contextlib.AbstractContextManager[None]:
    """While inside: this thread does not hold the kernel lock (it lets go of it if it held it, and takes it back
    after). For waits on another thread: a stage waiting for a buffer a later stage must release."""
    return _LOCK.paused() if kernels_serialised() else _NO_LOCK
