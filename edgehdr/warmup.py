"""Prepare a process for real-time work: numba kernels compiled, BLAS on one thread.

numba compiles a kernel on its first call (and caches it on disk for later
processes), so the first frames of a fresh installation would each wait seconds.
``warm_up`` runs every runtime kernel once on tiny inputs of the real dtypes: the
demo and the daemon call it before their clocks start.
"""

from __future__ import annotations

import time

import numpy as np

__all__ = ["limit_blas_threads", "warm_up"]


def limit_blas_threads() -> None:
    """Keep BLAS (numpy's linear algebra) on one thread for the rest of the process.

    OpenBLAS workers spin after every call and starve the numba kernels of the next
    stage on a small CPU (measured); the runtime's matrix work is tiny anyway.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def warm_up(*, deghost: bool = False, dimming: bool = True) -> float:
    """Compile (or load from the cache) every per-frame kernel; returns the seconds it took."""
    from edgehdr.bracket import Bracket
    from edgehdr.camera.synthetic import SyntheticCamera
    from edgehdr.dimming import BacklightModel, LedLayout, lcd_compensation, zone_statistics
    from edgehdr.hdr import align_mtb, merge_debevec, standard_response
    from edgehdr.tonemap import drago, parametric, reinhard_global, reinhard_local

    t0 = time.perf_counter()
    cam = SyntheticCamera(64, 48, fps=0, moving_objects=1)
    with cam:
        bracket: Bracket = cam.read_bracket()
    response = standard_response("srgb")
    align_mtb(bracket.frames, reference_index=1, exposures=bracket.relative_exposure, response=response,
              work_scale=2, frame_keys=[0, 1, 2], cache={})
    radiance = merge_debevec(bracket, response=response, deghost=deghost)
    for op in (reinhard_global, reinhard_local, drago, parametric):
        op(radiance)
    reinhard_global(radiance, saturation=0.8)
    reinhard_global(radiance, color="mantiuk", saturation=0.8)
    from edgehdr.tonemap.neural import apply_parameter_grid, default_parameter_grid

    apply_parameter_grid(radiance, default_parameter_grid())
    from edgehdr.hdr.neural_merge import encode_merge_input, merge_with_weights
    from edgehdr.quality.norvdpnet import encode_sdr

    encode_merge_input(bracket, response=response)
    big = np.repeat(np.repeat(bracket.frames, 16, axis=1), 16, axis=2)  # 768 x 1024: the block-mean path too
    encode_merge_input(big, bracket.relative_exposure, response, bits=bracket.bits)
    # Frames above a few thousand pixels take the merge's parallel kernel (small ones the serial one).
    merge_debevec(big, bracket.relative_exposure, response, bits=bracket.bits, deghost=deghost)
    for gate in (True, False):
        merge_with_weights(bracket, np.full((3, 4, 4), 1 / 3, np.float32), response=response, consistency_gate=gate)
    encode_sdr(reinhard_global(radiance))
    if dimming:
        layout = LedLayout(rows=3, cols=4, width_px=64, height_px=48)
        target = np.ascontiguousarray(radiance, dtype=np.float32)
        zone_statistics(target, layout)
        zmax, _, _ = zone_statistics(target, layout, histogram=True)
        backlight = BacklightModel(layout).simulate(zmax)
        lcd_compensation(target, backlight, layout)
    return time.perf_counter() - t0
