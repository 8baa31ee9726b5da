"""``BufferPool`` hands an array out again only when nothing outside the pool holds it."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edgehdr.pipeline.buffers import BufferPool


def test_an_array_is_reused_only_after_every_holder_let_go():
    pool = BufferPool(capacity=4)
    a = pool.take((4, 5, 3), np.float32)
    b = pool.take((4, 5, 3), np.float32)
    assert a is not b  # a is still held here
    view = a[1:]
    del a
    c = pool.take((4, 5, 3), np.float32)
    assert c is not view.base and c is not b  # a view keeps its base from reuse
    del view
    d = pool.take((4, 5, 3), np.float32)
    assert pool.reused == 1 and d.base is None and d.shape == (4, 5, 3)
    del b, c, d
    assert pool.take((4, 5, 3), np.float32).dtype == np.float32 and pool.allocated == 3


def test_a_new_size_or_dtype_gets_new_arrays_and_capacity_bounds_what_is_kept():
    pool = BufferPool(capacity=2)
    held = [pool.take((8, 8), np.uint8) for _ in range(3)]  # three in flight: the third is not kept
    assert pool.allocated == 3 and len({id(x) for x in held}) == 3
    del held
    x = pool.take((16, 8), np.uint8)  # a free array of the old size is dropped, a new one made
    assert x.shape == (16, 8) and x.dtype == np.uint8
    y = pool.take((8, 8), np.uint16)
    assert y.dtype == np.uint16 and y is not x
    with pytest.raises(ValueError, match="capacity"):
        BufferPool(capacity=0)


def test_pipeline_stages_reuse_their_outputs():
    """The merge stage recycles its radiance output frame after frame, and every frame stays right."""
    from edgehdr.camera.synthetic import SyntheticCamera
    from edgehdr.hdr import standard_response
    from edgehdr.hdr.merge import merge_debevec
    from edgehdr.pipeline.graph import FrameContext
    from edgehdr.pipeline.stages import MergeStage

    cam = SyntheticCamera(96, 64, fps=0, moving_objects=0)
    stage = MergeStage(standard_response("srgb"))
    with cam:
        for i in range(6):
            bracket = cam.read_bracket()
            ctx = stage(FrameContext(frame_id=i, bracket=bracket, captured_ns=0))
            expected = merge_debevec(bracket, response=stage.response)
            np.testing.assert_array_equal(ctx.radiance, expected)
            del ctx  # the frame is done: its radiance goes back to the pool
    assert stage.radiance_pool.reused >= 4 and stage.radiance_pool.allocated <= 2


def test_surplus_free_arrays_are_let_go_once_idle():
    """Three in flight once, one at a time later: the two arrays nobody needs are dropped from the pool (their
    memory goes back to the allocator) once they have not been handed out for ``idle_takes`` calls, not kept for
    the rest of the run, and not at the first call that finds them free."""
    pool = BufferPool(capacity=4, idle_takes=2)
    burst = [pool.take((32, 32), np.float32) for _ in range(3)]
    ids = [id(x) for x in burst]
    del burst
    for _ in range(2):
        a = pool.take((32, 32), np.float32)
        assert id(a) == ids[0]
        del a
    assert pool.released == 1 and len(pool._arrays) == 2  # the second went at the second call, not the first
    b = pool.take((32, 32), np.float32)
    assert id(b) == ids[0] and pool.released == 2 and len(pool._arrays) == 1 and pool.allocated == 3
    c = pool.take((32, 32), np.float32)  # the kept one is in use: a new one
    assert c is not b and pool.allocated == 4


def _release_later(holder: list, delay_s: float) -> threading.Thread:
    # another thread (a later stage) lets go of the array after delay_s
    def run() -> None:
        time.sleep(delay_s)
        holder.clear()

    t = threading.Thread(target=run)
    t.start()
    return t


def test_at_its_limit_the_pool_waits_for_a_release_and_allocates_past_it_only_after_wait_s():
    pool = BufferPool(limit=1, wait_s=5.0)
    held = [pool.take((4, 4), np.float32)]
    address = held[0].ctypes.data
    t0 = time.monotonic()
    thread = _release_later(held, 0.1)
    again = pool.take((4, 4), np.float32)  # waits for the other thread's release, then reuses that array
    waited = time.monotonic() - t0
    thread.join()
    assert again.ctypes.data == address and waited >= 0.09
    assert pool.allocated == 1 and pool.waits == 1 and pool.wait_s_total >= 0.09 and pool.over_limit == 0
    # Nothing released within wait_s: one array past the limit, counted and not kept.
    pool.wait_s = 0.05
    extra = pool.take((4, 4), np.float32)
    assert extra is not again and pool.over_limit == 1 and pool.allocated == 2 and pool.snapshot()["kept"] == 1
    del extra
    assert pool.take((4, 4), np.float32) is not again  # waits for ``again``, not for the array past the limit
    assert pool.over_limit == 2
    with pytest.raises(ValueError, match="limit"):
        BufferPool(limit=0)
