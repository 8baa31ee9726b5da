"""One lock around the runtime's parallel kernels when numba's threading layer is not thread-safe.

numba runs ``parallel=True`` kernels on the first threading layer it can load: TBB, then OpenMP (``libgomp.so.1``,
part of every GCC install, so present on JetPack, Raspberry Pi OS and full Linux images), then its own
``workqueue``. The workqueue layer terminates the process when two Python threads launch parallel kernels at once
("Concurrent access has been detected"), and the runtime's stages run on threads of their own, as does the
synthetic camera: on a machine without libgomp (a slim container image) ``edgehdr demo`` died at its first frames.
There the pipeline now runs its stages' kernels one at a time under this lock (each still on every core): slower,
but it runs, and a warning names the fix (``apt-get install libgomp1``, or ``pip install tbb``).

Elsewhere the lock is a no-op.
"""

from __future__ import annotations

import contextlib
import logging
import threading

import numba
import numpy as np

__all__ = ["kernel_lock", "kernels_serialised"]

log = logging.getLogger("edgehdr")

_LOCK = threading.RLock()
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
                    log.warning("numba found no thread-safe threading layer (OpenMP's libgomp.so.1 or TBB) and uses "
                                "its workqueue, which cannot run kernels from several threads at once: the pipeline's "
                                "stages run their kernels one at a time (slower). Install libgomp1 (apt-get install "
                                "libgomp1) or TBB (pip install tbb) for the full speed")
                _serialised = layer == "workqueue"
    return _serialised


def kernel_lock() -> contextlib.AbstractContextManager[object]:
    """The lock to hold while a thread runs the runtime's parallel kernels: a real (re-entrant) lock where numba's
    layer is not thread-safe (``kernels_serialised``), else a no-op."""
    return _LOCK if kernels_serialised() else _NO_LOCK
