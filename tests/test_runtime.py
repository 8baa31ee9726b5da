"""The runtime: sources, bracket grouping, exposure planning, the stage graph under load and faults, sinks."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from edgehdr.camera.base import ExposurePlan, FrameGrouper, SourceError, SourceExhausted, SourceTimeout
from edgehdr.camera.planner import ExposurePlanner
from edgehdr.camera.replay import ReplaySource
from edgehdr.camera.synthetic import SyntheticCamera
from edgehdr.hdr import merge_debevec, standard_response
from edgehdr.pipeline import Pipeline, Stage
from edgehdr.pipeline.graph import FrameContext
from edgehdr.pipeline.stages import AlignStage, MergeStage, ToneMapStage
from edgehdr.synth import make_scene


def test_frame_grouper_rolling_and_burst():
    frames = [np.full((2, 2, 3), v, np.uint8) for v in range(6)]
    rolling = FrameGrouper(3, "rolling")
    ready = [rolling.add(i % 3, frames[i], 0.01 * (i % 3 + 1), 1.0, i) for i in range(6)]
    assert ready == [False, False, True, True, True, True]  # output at capture rate once primed
    b = rolling.take(8, 1, "t")
    assert [int(f[0, 0, 0]) for f in b.frames] == [3, 4, 5]
    burst = FrameGrouper(3, "burst")
    ready = []
    for i in range(6):
        ready.append(burst.add(i % 3, frames[i], 0.01 * (i % 3 + 1), 1.0, i))
        if ready[-1]:
            burst.take(8, 1, "t")
    assert ready == [False, False, True, False, False, True]  # a whole new bracket each time


def test_frame_grouper_recycles_frames_and_stacks_without_touching_what_is_held():
    """Frames captured into ``frame_buffer`` and stacks from ``take`` are recycled once nothing else holds them; a
    bracket the pipeline still holds is never written, and every bracket holds the newest frame of each exposure."""
    grouper = FrameGrouper(3, "rolling", stack_pool_size=3)
    held, kept_values, checked = None, None, 0
    for i in range(60):
        buffer = grouper.frame_buffer((4, 5, 3))
        assert not any(f is not None and np.shares_memory(buffer, f) for f in grouper.frames)
        buffer[...] = i
        ready = grouper.add(i % 3, buffer, 0.01 * (i % 3 + 1), 1.0, i)
        del buffer
        if not ready:
            continue
        bracket = grouper.take(8, i, "t")
        newest = [i - (i - k) % 3 for k in range(3)]  # the last index captured at each exposure
        assert [int(f[0, 0, 0]) for f in bracket.frames] == newest
        if held is not None:
            assert not np.shares_memory(bracket.frames, held.frames)
        if i % 10 == 2:  # the pipeline keeps a bracket for a while (a slow sink): it must stay untouched
            if held is not None:
                np.testing.assert_array_equal(held.frames, kept_values)
                checked += 1
            held, kept_values = bracket, bracket.frames.copy()
        del bracket  # the merge is done with it
    assert checked == 5
    assert grouper.stack_pool.reused >= 50 and grouper.stack_pool.allocated <= 6
    assert grouper.frame_pool.reused >= 50 and grouper.frame_pool.allocated <= 5


def test_frame_grouper_names_a_frame_of_another_size():
    grouper = FrameGrouper(2, "burst")
    grouper.add(0, np.zeros((4, 5, 3), np.uint8), 0.01, 1.0, 0)
    grouper.add(1, np.zeros((4, 6, 3), np.uint8), 0.02, 1.0, 1)
    with pytest.raises(ValueError, match=r"frames\[1\]"):
        grouper.take(8, 1, "t")


def test_synthetic_scene_clock_starts_with_the_stream_not_at_open():
    """The daemon opens the camera before the kernels load (11 s on a first run): the scene's light swing must start
    at the first frame, so a cold and a warm run see the same light (the cold demo's last frame showed another
    phase of the swing, its sky clipped on the simulated display)."""
    cam = SyntheticCamera(64, 48, fps=0, illumination_stops=2.0, illumination_period_s=1.0, moving_objects=0)
    with cam:
        opened = time.monotonic()
        time.sleep(0.25)  # as the kernels' warm-up does
        started = time.monotonic()
        bracket = cam.read_bracket()
        since_start = time.monotonic() - cam._t0
    assert started <= cam._t0, "the scene's clock started at open(), not with the stream"
    assert cam._t0 - opened >= 0.25
    assert bracket.extra["illumination"] == pytest.approx(cam.illumination(since_start), rel=0.05)


def test_synthetic_camera_is_radiometrically_consistent():
    cam = SyntheticCamera(320, 180, fps=0, illumination_stops=0.0, moving_objects=0, noise_codes=0.0)
    with cam:
        bracket = cam.read_bracket()
    assert bracket.frames.shape == (3, 180, 320, 3) and np.all(np.diff(bracket.relative_exposure) > 0)
    assert bracket.frames[0].mean() < bracket.frames[1].mean() < bracket.frames[2].mean()
    merged = merge_debevec(bracket, response=cam.response)
    # The camera keeps only its log-domain layers; the scene follows from the seed, drawn again here.
    scene = make_scene(cam.seed, 180, 320, kind=cam.kind, moving_objects=0, object_speed_px=cam.object_speed_px)
    m = scene.margin
    truth = scene.background[m : m + 180, m : m + 320]
    ok = np.all((bracket.frames.max(axis=0) > 30) & (bracket.frames.min(axis=0) < 225), axis=2)
    assert ok.mean() > 0.3
    assert np.median(np.abs(merged[ok] / truth[ok] - 1)) < 0.01  # the log-LUT camera is 1/256 stop exact


@pytest.mark.parametrize(("corner", "offset"), [((-12, -15), -1234), ((100, 40), -1234), ((150, 290), -1234),
                                                ((20, 30), -40_000), ((20, 30), 50_000), ((20, 30), -9000)])
def test_synthetic_camera_pastes_sprites_clipped_at_the_frame_edges(corner, offset):
    """A sprite half outside the frame, inside it, and over the far corner, and at exposures far beyond the LUT
    at both ends: exactly the sprite's codes (its log radiance through the camera's LUT, clamped to its ends, no
    dither) where its mask is set, the background elsewhere."""
    from edgehdr.camera.synthetic import _paste

    cam = SyntheticCamera(320, 180, fps=0, noise_codes=0.0, moving_objects=1)
    cam.open()
    _, log_q, mask = cam._sprites[0]
    background = np.full((180, 320, 3), 7, np.uint8)
    out = background.copy()
    sy, sx = corner
    _paste(log_q, mask, sy, sx, np.int32(cam._padded_offset(offset)), cam._lut_padded, out)
    expected = background.copy()
    h, w = mask.shape
    for y in range(max(sy, 0), min(sy + h, 180)):
        for x in range(max(sx, 0), min(sx + w, 320)):
            if mask[y - sy, x - sx]:
                idx = np.clip(log_q[y - sy, x - sx].astype(np.int64) + offset, 0, cam._lut.size - 1)
                expected[y, x] = cam._lut[idx]
    np.testing.assert_array_equal(out, expected)
    assert (out != background).any()


@pytest.mark.parametrize("exposure_s", [1e-3, 0.05, 1e-45, 1e45, 1e-300, 1e300])
@pytest.mark.parametrize("noise_codes", [1.0, 40.0])
def test_synthetic_camera_frame_is_its_layers_through_the_clamped_lut(exposure_s, noise_codes):
    """A whole frame (background, dither, shake, sprites) against a NumPy rendering with the LUT clamped at its
    ends: the kernels read a padded table without a clamp, and exposures far beyond the table must give the
    same codes (all black, all white) as the clamp."""
    cam = SyntheticCamera(160, 90, fps=0, moving_objects=2, shake_px=3, noise_codes=noise_codes)
    cam.open()
    t_s = 0.7
    n = cam.frames_captured
    frame = cam.capture(exposure_s, 2.0, t_s)
    # the same geometry and dither as SyntheticCamera.capture, rendered independently
    offset = int(round(math.log2(exposure_s * 2.0 * cam.illumination(t_s)) * 256))
    top = cam._lut.size - 1
    dy = cam._margin + int(round(cam.shake_px * math.sin(0.9 * t_s + 1.3)))
    dx = cam._margin + int(round(cam.shake_px * math.sin(1.3 * t_s)))
    shift = (n * 7919) % 997
    tile = cam._dithers[n % len(cam._dithers)]
    rows = (np.arange(90) - (shift % 64)) % 64
    dither = tile[rows][:, -((shift // 64) % 64) % 64:][:, :160]
    log_q = cam._log_bg[dy:dy + 90, dx:dx + 160].astype(np.int64)
    expected = cam._lut[np.clip(log_q + offset + dither[..., None], 0, top)]
    for sprite, sprite_q, mask in cam._sprites:
        sx, sy = sprite.position(t_s * 30.0)
        sx, sy = int(sx - (dx - cam._margin)), int(sy - (dy - cam._margin))  # with the background, against the shake
        for y in range(max(sy, 0), min(sy + mask.shape[0], 90)):
            for x in range(max(sx, 0), min(sx + mask.shape[1], 160)):
                if mask[y - sy, x - sx]:
                    expected[y, x] = cam._lut[np.clip(sprite_q[y - sy, x - sx].astype(np.int64) + offset, 0, top)]
    np.testing.assert_array_equal(frame, expected)
    if not 1e-40 < exposure_s < 1e40:
        assert np.unique(frame).size == 1  # beyond the table: one end code everywhere


def test_synthetic_camera_reuses_a_released_stack_and_never_writes_to_a_held_one():
    """Rolling brackets from a pool of stacks: a stack nobody holds any more is reused (the last bracket's own in
    place: its retained exposures stay, the new capture overwrites the oldest slot; an older one gets the retained
    frames copied in); a held bracket, or a view of one of its frames, is never written to."""
    cam = SyntheticCamera(96, 64, fps=0, moving_objects=1)
    with cam:
        first = cam.read_bracket()
        held = first.frames.copy()
        second = cam.read_bracket()  # ``first`` is held: a new stack, first's frames untouched
        assert second.frames is not first.frames and not np.shares_memory(second.frames, first.frames)
        np.testing.assert_array_equal(first.frames, held)
        new_slot = int(np.argmax(second.timestamp_ns))
        kept = [i for i in range(3) if i != new_slot]
        np.testing.assert_array_equal(second.frames[kept], held[kept])
        assert cam.stacks_reused == 0 and cam.stacks_allocated == 2
        # ``first`` released, ``second`` held (the pipeline still has the last bracket when the next read starts):
        # first's stack is reused, the frame it lacks copied in from second's.
        first_address = first.frames.ctypes.data
        del first
        snapshot2 = second.frames.copy()
        third = cam.read_bracket()
        assert third.frames.ctypes.data == first_address and cam.stacks_reused == 1
        np.testing.assert_array_equal(second.frames, snapshot2)
        new_slot = int(np.argmax(third.timestamp_ns))
        kept = [i for i in range(3) if i != new_slot]
        np.testing.assert_array_equal(third.frames[kept], snapshot2[kept])
        assert not np.array_equal(third.frames[new_slot], snapshot2[new_slot])  # a later capture (sprites move)
        address = third.frames.ctypes.data
        snapshot = third.frames.copy()
        del second, third
        copied = cam.frames_copied
        fourth = cam.read_bracket()  # the last bracket's stack is free: reused in place, nothing copied
        assert fourth.frames.ctypes.data == address and cam.frames_copied == copied
        new_slot = int(np.argmax(fourth.timestamp_ns))
        kept = [i for i in range(3) if i != new_slot]
        np.testing.assert_array_equal(fourth.frames[kept], snapshot[kept])
        view = fourth.frames[0]  # a view keeps the whole stack from being reused
        view_copy = view.copy()
        reused = cam.stacks_reused
        del fourth
        fifth = cam.read_bracket()
        assert not np.shares_memory(fifth.frames, view) and cam.stacks_reused == reused + 1
        np.testing.assert_array_equal(view, view_copy)
        # A pipeline holding every stack: a new one each read, never more than the pool's size kept.
        hold = [fifth] + [cam.read_bracket() for _ in range(cam.stack_pool_size + 2)]
        addresses = {b.frames.ctypes.data for b in hold}
        assert len(addresses) == len(hold) and len(cam._pool) == cam.stack_pool_size
        # Released again, the stacks a hiccup added go once idle for ``stack_idle_reads`` reads; a held one stays.
        cam.stack_idle_reads = 3
        keep = hold[0]
        kept_frames = keep.frames.copy()
        del hold, fifth, view
        for _ in range(6):
            b = cam.read_bracket()
            del b  # released at once: the last bracket's stack is reused in place each time
        assert len(cam._pool) == 2 and cam.stacks_released >= cam.stack_pool_size - 2
        assert any(p is keep.frames for p in cam._pool)
        np.testing.assert_array_equal(keep.frames, kept_frames)


def test_synthetic_camera_with_max_stacks_waits_for_the_pipeline_to_release_a_stack():
    """Back-pressure as a driver with a fixed buffer count: with every stack held the read waits, then reuses the
    released one (its retained frames intact); nothing released within the timeout is a stall, not a new stack."""
    import threading

    cam = SyntheticCamera(64, 48, fps=100, moving_objects=1, max_stacks=2)
    with cam:
        held = [cam.read_bracket(), cam.read_bracket()]
        first_address = held[0].frames.ctypes.data
        snapshot = held[1].frames.copy()

        def release_first() -> None:
            time.sleep(0.1)
            del held[0]

        skipped = cam.frames_skipped  # the first reads, late while the kernels loaded, skipped some too
        t0 = time.monotonic()
        releaser = threading.Thread(target=release_first)
        releaser.start()
        third = cam.read_bracket(timeout_s=5.0)
        waited = time.monotonic() - t0
        releaser.join()
        assert waited >= 0.09 and cam.buffer_waits == 1 and cam.buffer_wait_s >= 0.09
        assert cam.stacks_allocated == 2 and third.frames.ctypes.data == first_address
        new_slot = int(np.argmax(third.timestamp_ns))
        kept = [i for i in range(3) if i != new_slot]
        np.testing.assert_array_equal(third.frames[kept], snapshot[kept])
        np.testing.assert_array_equal(held[0].frames, snapshot)  # the held bracket is never written to
        # The sensor passed about 0.1 s of 10 ms slots while the read waited: counted as skipped (one slot of
        # lateness is caught up, as any late read is); a loaded machine's longer wait passes more, never more
        # than the read took.
        assert 6 <= cam.frames_skipped - skipped <= waited * cam.fps + 1
        with pytest.raises(SourceTimeout, match="bracket buffers held downstream"):
            cam.read_bracket(timeout_s=0.05)
        assert cam.stacks_allocated == 2
        del third
        assert cam.read_bracket(timeout_s=0.05).frames.ctypes.data == first_address
    with pytest.raises(ValueError, match="max_stacks"):
        SyntheticCamera(64, 48, max_stacks=0)


def test_synthetic_camera_accounts_for_every_slot_when_reads_are_slower_than_its_rate():
    """A pipeline slower than the camera (a read every 1.5 slots): every slot of the stream is either captured or
    counted as skipped, so the pipeline's drop_fraction sees the loss. Lateness of a fraction of a slot per read
    used to be rounded away at each read (a read every 1.1 slots lost a tenth of a slot uncounted, every time)."""
    cam = SyntheticCamera(64, 48, fps=50, moving_objects=0)
    with cam:
        cam.read_bracket()  # loads the kernels
    cam = SyntheticCamera(64, 48, fps=50, moving_objects=0)
    with cam:
        t_first = time.monotonic()
        cam.read_bracket()  # the stream starts here: its first bracket takes three slots
        for _ in range(40):
            time.sleep(0.03)  # the pipeline's pace: 1.5 slots of 20 ms a bracket
            t_last = time.monotonic()
            cam.read_bracket()
        t_end = time.monotonic()
        # every slot that passed before the last read began was captured or counted (at most about one period of
        # lateness is still being caught up), and none after it ended (timed around the read, so a stall inside
        # it on a loaded machine cannot break the bounds)
        counted = cam.frames_captured + cam.frames_skipped
        assert (t_last - t_first) * cam.fps - 2.0 <= counted <= (t_end - t_first) * cam.fps + 1.0, \
            (cam.frames_captured, cam.frames_skipped, t_last - t_first, t_end - t_first)


def test_synthetic_camera_counts_the_slots_a_late_read_passed_but_not_the_time_before_its_first_read():
    cam = SyntheticCamera(64, 48, fps=50, moving_objects=0)
    with cam:
        cam.read_bracket()  # loads the kernels
    cam = SyntheticCamera(64, 48, fps=50, moving_objects=0)
    with cam:
        time.sleep(0.3)  # the pipeline is still being built: the stream starts with the first read
        t_start = time.monotonic()
        cam.read_bracket()
        cam.read_bracket()
        # the 0.3 s before the first read would be 15 slots; the two reads themselves take about 2 (more only on a
        # loaded machine, and never more than passed)
        assert cam.frames_skipped <= max(1.0, (time.monotonic() - t_start) * cam.fps)
        skipped, t_sleep = cam.frames_skipped, time.monotonic()
        time.sleep(0.2)  # 10 slots of 20 ms pass; one period of lateness is caught up
        cam.read_bracket()
        assert 7 <= cam.frames_skipped - skipped <= (time.monotonic() - t_sleep) * cam.fps


def test_synthetic_camera_paces_frames_and_follows_the_plan():
    cam = SyntheticCamera(160, 90, fps=100, moving_objects=1)
    with cam:
        cam.read_bracket()
        t0 = time.monotonic()
        for _ in range(10):
            cam.read_bracket()  # rolling: one capture per read
        elapsed = time.monotonic() - t0
        cam.set_plan(ExposurePlan.of([0.01, 0.1]))
        b = cam.read_bracket()
    assert 0.08 <= elapsed  # 10 captures at 100 fps cannot come faster than ~0.1 s
    assert len(b) == 2 and list(b.exposure_s) == [0.01, 0.1]


def test_a_new_plan_does_not_wait_for_the_read_in_progress():
    # The merge stage hands the planner's plan over while the capture thread is inside a read (waiting for
    # its frame slot): set_plan must return at once, the read in progress keeps its plan, the next read
    # takes the new one.
    import threading

    cam = SyntheticCamera(64, 48, fps=2, moving_objects=0)
    with cam:
        cam.read_bracket()  # fills every exposure; the next rolling read waits ~0.5 s for its slot
        result: list = []
        reader = threading.Thread(target=lambda: result.append(cam.read_bracket(timeout_s=5.0)))
        reader.start()
        deadline = time.monotonic() + 5.0
        while not cam._lock.locked():  # the reader is inside its read
            assert time.monotonic() < deadline, "the reader never entered its read"
            time.sleep(0.001)
        new = ExposurePlan.of([0.002, 0.02])
        cam.set_plan(new)
        still_reading = cam._lock.locked()  # the reader still holds the read's lock: set_plan did not wait for it
        assert cam.plan is new  # what the planner reads back is the plan of the next bracket
        reader.join()
        after = cam.read_bracket()
    assert still_reading
    assert len(result[0]) == 3  # the read in progress kept its plan
    assert len(after) == 2 and list(after.exposure_s) == [0.002, 0.02]


def test_device_sources_adopt_a_new_plan_on_the_capture_thread():
    # A device source's frame grouping belongs to the capture thread; a plan set from another thread mid-read
    # is adopted at the next frame, regrouping for the new frame count. The device is a frame generator here:
    # the grouping and plan logic under test is the real one.
    import threading

    from edgehdr.camera.devices import _GroupingSource

    class Device(_GroupingSource):
        name, bits = "frames", 8

        def __init__(self) -> None:
            super().__init__(ExposurePlan.of([0.001, 0.004, 0.016]), "rolling")
            self.gate = threading.Event()
            self.entered = threading.Event()
            self.exposures: list[float] = []

        def _capture(self, exposure_s: float, gain: float, timeout_s: float) -> tuple[np.ndarray, int]:
            self.entered.set()
            assert self.gate.wait(5.0)
            self.exposures.append(exposure_s)
            return np.full((4, 6, 3), len(self.exposures), np.uint8), time.monotonic_ns()

    dev = Device()
    dev.gate.set()
    first = dev.read_bracket()  # three frames
    dev.gate.clear()
    dev.entered.clear()
    result: list = []
    reader = threading.Thread(target=lambda: result.append(dev.read_bracket(timeout_s=5.0)))
    reader.start()
    assert dev.entered.wait(5.0)  # the capture thread is inside a frame of the old plan
    dev.set_plan(ExposurePlan.of([0.002, 0.008]))  # returns although that frame has not arrived
    assert reader.is_alive()
    dev.gate.set()
    reader.join()
    after = dev.read_bracket()
    assert len(first) == 3 and len(result[0]) == 3
    assert dev.exposures[3] == 0.001  # the frame in progress was taken at the old plan's exposure
    assert len(after) == 2 and list(after.exposure_s) == [0.002, 0.008]
    assert dev.exposures[4:] == [0.002, 0.008]  # the regrouped bracket holds only frames of the new plan


def test_planner_covers_the_range_with_few_frames_within_limits():
    response = standard_response("srgb")
    planner = ExposurePlanner(response, max_frames=4, exposure_limits_s=(1e-6, 1.0), gain_limits=(1.0, 4.0))
    rng = np.random.default_rng(0)
    narrow = rng.uniform(-3.0, 1.0, 10000)  # 4 stops: one frame suffices
    wide = rng.uniform(-14.0, 2.0, 10000)  # 16 stops: more frames
    assert len(planner.target_exposures(narrow)) == 1
    ladder = planner.target_exposures(wide)
    assert 2 <= len(ladder) <= 4
    # Shortest frame: the robust peak lands at the top of the well-exposed range (not clipped).
    peak = np.percentile(wide, 99.5)
    assert peak + ladder[0] == pytest.approx(np.log2(planner.x_high), abs=1e-6)
    # Neighbouring frames overlap: coverage is contiguous.
    assert np.all(np.diff(ladder) <= planner.span_stops - planner.overlap_stops + 1e-9)
    plan = planner._split(np.exp2(np.array([-25.0, -5.0, 3.0])))
    assert min(plan.exposure_s) >= 1e-6 and max(plan.exposure_s) <= 1.0 and max(plan.gain) <= 4.0
    assert plan.gain[-1] == 4.0  # beyond the longest time, gain rises to its limit


def test_planner_smooths_and_does_not_flip_flop():
    response = standard_response("srgb")
    planner = ExposurePlanner(response, max_frames=3, exposure_limits_s=(1e-7, 100.0), gain_limits=(1.0, 1.0),
                              time_constant_s=0.3, hysteresis_updates=5)
    current = ExposurePlan.of([0.01, 0.04, 0.16])
    bright = np.full((64, 64, 3), 8.0, np.float32)  # a plain, bright scene wants fewer frames, shorter
    plans = [current]
    for _ in range(4):
        plans.append(planner.update(bright, plans[-1], dt_s=1 / 30))
    assert all(len(p) == 3 for p in plans), "frame count must wait for the hysteresis"
    first_step = np.log2(plans[1].exposure_s[0] / plans[0].exposure_s[0])
    for _ in range(3):
        plans.append(planner.update(bright, plans[-1], dt_s=1 / 30))
    assert len(plans[-1]) < 3
    assert abs(first_step) < 1.0, "exposure moves smoothly, not in one jump"


def _small_pipeline(source, extra=(), queue_size=2):
    stages = [Stage("align", AlignStage("mtb", response=source.response), queue_size=queue_size),
              Stage("merge", MergeStage(source.response), queue_size=queue_size),
              Stage("tonemap", ToneMapStage("reinhard"), queue_size=queue_size)]
    return Pipeline(source, stages + list(extra), read_timeout_s=0.3, stalls_before_restart=2, max_backoff_s=0.2)



@pytest.mark.parametrize("neural", [False, True])
def test_deferred_shifts_give_the_radiance_of_the_shifted_copy(neural):
    """AlignStage(defer_shifts=True) hands the MTB shifts to the merge instead of moving the frames (the daemon's
    pipeline): the same radiance as aligning first, bit for bit, for the classical merge (shifts read in its
    kernel) and the network (the merge stage makes the shifted copy it needs)."""

    cam = SyntheticCamera(320, 180, fps=30, moving_objects=1, shake_px=10, seed=2)
    cam.open()
    merger = None
    if neural:
        from edgehdr.hdr.neural_merge import NeuralMerger
        from edgehdr.infer import OnnxRuntimeRunner
        from edgehdr.models import model_path

        merger = NeuralMerger(OnnxRuntimeRunner(model_path("merge_net")).load())
    moved = 0
    try:
        for i in range(8):
            bracket = cam.read_bracket()
            deferred = AlignStage("mtb", response=cam.response, defer_shifts=True)(FrameContext(i, bracket, 0))
            applied = AlignStage("mtb", response=cam.response)(FrameContext(i, bracket, 0))
            assert applied.shifts is None and deferred.aligned.frames is bracket.frames
            moved += deferred.shifts is not None
            a = MergeStage(cam.response, merger=merger)(deferred).radiance
            b = MergeStage(cam.response, merger=merger)(applied).radiance
            np.testing.assert_array_equal(a.view(np.int32), b.view(np.int32))
    finally:
        cam.close()
    assert moved >= 1, "no bracket was moved: the test would prove nothing"

class _SlowSink:
    """An output stage slower than the camera (writing to a slow disk, say)."""

    def __init__(self, delay_s):
        self.delay_s, self.seen, self.max_queue = delay_s, [], 0

    def __call__(self, ctx):
        time.sleep(self.delay_s)
        self.seen.append(ctx.frame_id)
        return ctx


def test_overload_drops_oldest_frames_and_keeps_latency_bounded():
    cam = SyntheticCamera(160, 90, fps=120, moving_objects=0)
    sink = _SlowSink(0.1)  # about 10 frames in the window, the camera 120 fps (still above 30 fps on a loaded machine)
    stage = Stage("slow", sink, queue_size=2)
    pipe = _small_pipeline(cam, [stage]).start()
    depths = []
    for _ in range(40):
        depths.append(stage.queue.qsize())
        time.sleep(0.02)
    stats = pipe.stop()
    assert max(depths) <= 2, "a queue never grows past its bound"
    assert stats["frames_dropped"] > 0 and stats["frames_failed"] == 0
    assert sink.seen == sorted(sink.seen), "frames stay in order"
    assert stats["frames_captured"] > len(sink.seen) * 2, "the camera was never slowed down by the sink"


class _SkippingCamera(SyntheticCamera):
    """A real synthetic camera that reports one capture slot passed before every bracket it delivers, as a
    camera does whose reader falls behind."""

    def read_bracket(self, timeout_s: float = 1.0):
        bracket = super().read_bracket(timeout_s)
        self.frames_skipped += 1
        return bracket


def test_skipped_capture_slots_count_in_the_drop_fraction():
    """Slots the source let pass are drops that were never captured: the drop fraction is taken over the frames
    offered (captured + skipped), so a camera losing every other slot reads at least 50 %, not 0 %."""
    cam = _SkippingCamera(64, 48, fps=0, moving_objects=0)
    pipe = _small_pipeline(cam, [Stage("sink", lambda ctx: ctx, queue_size=64)], queue_size=64).start()
    deadline = time.monotonic() + 20
    while pipe.stats()["frames_completed"] < 20 and time.monotonic() < deadline:
        time.sleep(0.02)
    stats = pipe.stop()
    offered = stats["frames_captured"] + stats["frames_skipped"]
    assert stats["frames_skipped"] == cam.frames_skipped >= 20
    assert stats["frames_completed"] + stats["frames_dropped"] + stats["frames_failed"] == offered
    assert stats["drop_fraction"] == round(1.0 - stats["frames_completed"] / offered, 4)
    # One slot let pass a bracket captured: half of what was offered never reached the stages. The stages may drop
    # more of the captured ones on a loaded machine (a queue full while the kernels compile): those add on top, so
    # the share is never less than half.
    assert stats["frames_skipped"] == stats["frames_captured"]
    assert stats["drop_fraction"] >= 0.5


class _FlakyCamera(SyntheticCamera):
    """A real synthetic camera whose reads fail on schedule: raise at read 5, stall at reads 10 and 11."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.reads = 0
        self.opens = 0

    def open(self):
        self.opens += 1
        super().open()

    def read_bracket(self, timeout_s=1.0):
        self.reads += 1
        if self.reads == 5:
            raise SourceError("USB camera reset")
        if self.reads in (10, 11):
            time.sleep(timeout_s)
            raise SourceTimeout("no frame")
        return super().read_bracket(timeout_s)


class _FailOn:
    """A stage that fails on one frame (a corrupt frame) and passes the others through."""

    def __init__(self, frame_id):
        self.frame_id = frame_id

    def __call__(self, ctx):
        if ctx.frame_id == self.frame_id:
            raise ValueError("corrupt frame")
        return ctx


def test_source_errors_stalls_and_a_bad_frame_are_survived():
    cam = _FlakyCamera(160, 90, fps=60, moving_objects=0)
    # Queues long enough that no frame is dropped before "check" on a loaded machine (frame 3 must reach it).
    pipe = _small_pipeline(cam, [Stage("check", _FailOn(3), queue_size=64)], queue_size=64).start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and pipe.stages[-1].stats.processed < 25:
        time.sleep(0.05)
    stats = pipe.stop()
    assert stats["source_restarts"] >= 2 and stats["source_stalls"] == 2 and cam.opens >= 3
    assert stats["frames_failed"] == 1 and stats["frames_completed"] >= 25
    check = next(s for s in stats["stages"] if s["name"] == "check")
    assert "corrupt frame" in check["last_error"]


def test_stop_drains_every_queued_frame():
    cam = SyntheticCamera(160, 90, fps=0, moving_objects=0)
    sink = _SlowSink(0.005)
    pipe = _small_pipeline(cam, [Stage("sink", sink, queue_size=8)], queue_size=8).start()
    time.sleep(0.5)
    stats = pipe.stop()
    accounted = stats["frames_completed"] + stats["frames_dropped"] + stats["frames_failed"]
    assert accounted == stats["frames_captured"] + stats["frames_skipped"], \
        "every captured frame was completed or counted as dropped"
    assert len(sink.seen) == stats["frames_completed"]


def test_replay_source_timing_loop_and_end(tmp_path):
    from edgehdr.cli import main

    assert main(["-q", "synth", "-o", str(tmp_path / "s"), "--width", "96", "--height", "64", "--exposures", "3"]) == 0
    src = ReplaySource(tmp_path / "s", bracket_size=3, fps=0, loop=False)
    with src:
        b = src.read_bracket()
        with pytest.raises(SourceExhausted):
            src.read_bracket()
    listed = [line.split() for line in (tmp_path / "s" / "list.txt").read_text().splitlines()]
    np.testing.assert_allclose(b.exposure_s, [1 / float(v) for _, v in listed])
    looping = ReplaySource(tmp_path / "s", bracket_size=3, fps=50, loop=True)
    with looping:
        t0 = time.monotonic()
        seqs = [looping.read_bracket().sequence for _ in range(5)]
        elapsed = time.monotonic() - t0
    assert seqs == [1, 2, 3, 4, 5] and elapsed >= 0.07
    with pytest.raises(SourceError, match="fewer than one bracket"):
        ReplaySource(tmp_path / "s", bracket_size=4).open()


def test_replay_reads_gains_from_exif_as_merge_does_and_stamps_each_frame(tmp_path):
    """A folder without a list replays at the exposure EXIF gives, ISO and aperture included (it kept ExposureTime
    only: 1/100 s at ISO 100, 400 and 1600 all merged as if at ISO 100); every frame of a bracket has its own
    timestamp (the alignment's caches key on them)."""
    from PIL import Image
    from PIL.TiffImagePlugin import IFDRational

    from edgehdr.io import read_ldr_stack

    for i, iso in enumerate((100, 400, 1600)):
        exif = Image.Exif()
        sub = exif.get_ifd(0x8769)
        sub[0x829A], sub[0x8827] = IFDRational(1, 100), iso
        Image.fromarray(np.full((16, 16, 3), 30 + 60 * i, np.uint8)).save(tmp_path / f"f{i}.jpg", exif=exif)
    with ReplaySource(tmp_path, bracket_size=3, fps=0, loop=False) as src:
        replayed = src.read_bracket()
    merged = read_ldr_stack(tmp_path)
    np.testing.assert_allclose(replayed.gain, [1, 4, 16])
    np.testing.assert_allclose(replayed.relative_exposure, merged.relative_exposure)
    assert len(set(replayed.timestamp_ns.tolist())) == 3


def test_a_replayed_shaken_bracket_is_aligned(tmp_path):
    """The daemon's MTB alignment on replayed brackets: the frames' shifts are found (every frame shared the
    reference's timestamp, so the per-frame cache handed each the reference's pyramid and every shift was 0)."""
    from edgehdr.cli import main
    from edgehdr.hdr.merge import resolve_response
    assert main(["-q", "synth", "-o", str(tmp_path / "s"), "--width", "320", "--height", "240", "--shake-px", "8",
                 "--seed", "3"]) == 0
    with ReplaySource(tmp_path / "s", bracket_size=3, fps=0, loop=False) as src:
        bracket = src.read_bracket()
    stage = AlignStage("mtb", response=resolve_response(str(tmp_path / "s" / "response.json"), 8),
                       defer_shifts=True)
    ctx = stage(FrameContext(frame_id=1, bracket=bracket, captured_ns=0))
    assert ctx.shifts is not None and np.abs(ctx.shifts).max() >= 2


def test_a_missing_replay_file_drops_its_bracket_and_the_replay_goes_on(tmp_path):
    """A file gone from a recording costs its bracket, counted, and the replay goes on to its end (it restarted the
    source, which began again at the first bracket: a replay without looping never ended, and exited 0)."""
    from edgehdr.cli import main

    stack = tmp_path / "s"
    assert main(["-q", "synth", "-o", str(stack), "--width", "64", "--height", "48"]) == 0
    lines = (stack / "list.txt").read_text().splitlines()
    (stack / "list.txt").write_text("\n".join(lines * 3 + ["gone.png 100", *lines[1:]]) + "\n")
    src = ReplaySource(stack, bracket_size=3, fps=0, loop=False)
    src.open()
    src.open()  # the daemon opens the source before the pipeline does: a second open changes nothing
    pipe = Pipeline(src, [Stage("pass", lambda ctx: ctx)]).start()
    deadline = time.monotonic() + 20.0
    while not pipe.exhausted and time.monotonic() < deadline:
        time.sleep(0.01)
    assert pipe.exhausted
    stats = pipe.stop()
    capture = stats["stages"][0]
    assert stats["frames_captured"] == 3 and stats["source_restarts"] == 0 and stats["frames_skipped"] == 1
    assert capture["errors"] == 1 and "gone.png" in capture["last_error"]


def test_device_sources_fail_with_actionable_errors():
    from edgehdr.camera.devices import GStreamerSource, Picamera2Source, V4L2Source

    with pytest.raises(SourceError, match="/dev/video99: cannot open the V4L2 device"):
        V4L2Source("/dev/video99").open()
    try:
        import picamera2  # noqa: F401
    except ImportError:
        with pytest.raises(SourceError, match="picamera2 is not installed"):
            Picamera2Source().open()
    try:
        import gi  # noqa: F401
    except ImportError:
        with pytest.raises(SourceError, match="GStreamer Python bindings missing"):
            GStreamerSource().open()


def test_v4l2_source_reads_through_a_real_opencv_capture_into_recycled_buffers(tmp_path):
    """V4L2Source's read path on a real OpenCV capture (an image sequence stands in for /dev/video0, which this
    machine lacks): RGB in the right order, each frame at its exposure slot, the decode and bracket arrays reused."""
    import cv2

    from edgehdr.camera.devices import V4L2Source

    for i in range(7):
        bgr = np.zeros((30, 41, 3), np.uint8)
        bgr[..., 0], bgr[..., 1], bgr[..., 2] = 10 * i, 100, 200  # blue carries the frame's index
        assert cv2.imwrite(str(tmp_path / f"f_{i:03d}.png"), bgr)
    src = V4L2Source(str(tmp_path), plan=ExposurePlan.of([0.001, 0.004, 0.016]), settle_frames=0)
    src._cap = cv2.VideoCapture(str(tmp_path / "f_%03d.png"), cv2.CAP_IMAGES)
    assert src._cap.isOpened()
    brackets = [src.read_bracket(1.0)]
    decoded = src._bgr
    brackets += [src.read_bracket(1.0) for _ in range(4)]
    assert src._bgr is decoded  # OpenCV decoded every later frame into the first frame's array
    for n, bracket in enumerate(brackets):
        last = n + 2  # the newest frame's index
        assert [int(f[0, 0, 2]) // 10 for f in bracket.frames] == [last - (last - k) % 3 for k in range(3)]
        assert np.all(bracket.frames[..., 0] == 200) and np.all(bracket.frames[..., 1] == 100)
        np.testing.assert_allclose(bracket.exposure_s, [0.001, 0.004, 0.016])
    info = src.describe()["buffers"]
    assert info["stacks_allocated"] == 5  # all five brackets are still held here: none may be written again
    assert (info["frames_allocated"], info["frames_reused"]) == (4, 3)  # 7 frames: 3 stored, 1 being captured
    src.close()


def test_v4l2_brackets_record_the_exposure_the_driver_applies(tmp_path):
    """exposure_time_absolute takes whole 100 us units, at least one: a plan entry of 10 us is exposed for 100 us,
    and the bracket says so (it recorded the 10 us asked for, a merge error of ten times on that frame)."""
    import cv2

    from edgehdr.camera.devices import V4L2Source

    for i in range(3):
        assert cv2.imwrite(str(tmp_path / f"f_{i:03d}.png"), np.full((8, 8, 3), 40 * i, np.uint8))
    src = V4L2Source(str(tmp_path), plan=ExposurePlan.of([1e-5, 4.4e-4, 0.016]), settle_frames=0)
    src._cap = cv2.VideoCapture(str(tmp_path / "f_%03d.png"), cv2.CAP_IMAGES)
    np.testing.assert_allclose(src.read_bracket(1.0).exposure_s, [1e-4, 4e-4, 0.016])
    assert [src._exposure_units(t) for t in (1e-5, 4.4e-4, 0.016)] == [1, 4, 160]
    src.close()


def test_a_corrupt_frame_costs_exactly_that_frame():
    from edgehdr.camera.faults import FaultInjector

    cam = SyntheticCamera(160, 90, fps=60, moving_objects=0)

    class SizeCheck:  # what the dimming stage does: the panel size is fixed
        def __call__(self, ctx):
            if ctx.radiance.shape[:2] != (90, 160):
                raise ValueError("frame does not match the panel")
            return ctx

    faulty = FaultInjector(cam, corrupt_at=[8])
    # Queues long enough that the corrupt frame is not dropped before the panel stage on a loaded machine.
    pipe = Pipeline(faulty, [Stage("align", AlignStage("mtb", response=cam.response), queue_size=64),
                             Stage("merge", MergeStage(cam.response), queue_size=64),
                             Stage("panel", SizeCheck(), queue_size=64)],
                    read_timeout_s=0.5).start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and pipe.stages[-1].stats.processed < 20:
        time.sleep(0.05)
    stats = pipe.stop()
    assert faulty.injected["corrupt"] == 1
    assert stats["frames_failed"] == 1, stats["stages"]


def test_frames_release_what_no_later_stage_reads():
    """A stage's ``reads`` lets the pipeline drop large results early; ``keep`` holds them to the end; a stage
    without ``reads`` is taken to read everything."""
    from edgehdr.pipeline.graph import RELEASABLE_FIELDS

    class Probe:
        def __init__(self, name, reads=None):
            self.name, self.seen = name, None
            if reads is not None:
                self.reads = reads

        def __call__(self, ctx):
            if self.seen is None:
                self.seen = {f for f in RELEASABLE_FIELDS if getattr(ctx, f) is not None}
            return ctx

    def run(probes, keep=()):
        cam = SyntheticCamera(96, 64, fps=60, moving_objects=0)
        pipe = Pipeline(cam, [Stage("align", AlignStage("mtb", response=cam.response)),
                              Stage("merge", MergeStage(cam.response)),
                              Stage("tonemap", ToneMapStage("reinhard"))]
                        + [Stage(p.name, p) for p in probes], keep=keep).start()
        deadline = time.monotonic() + 20
        while pipe.last_context is None and time.monotonic() < deadline:
            time.sleep(0.05)
        pipe.stop()
        assert pipe.last_context is not None
        return pipe.last_context

    # Only the tone-mapped image is read after the tone mapper: the captured and aligned brackets and the
    # radiance are gone.
    a, b = Probe("a", ("sdr",)), Probe("b", ("sdr",))
    last = run([a, b])
    assert a.seen == {"sdr"} and b.seen == {"sdr"}
    assert last.bracket is None and last.radiance is None and last.sdr is None  # after the last stage nothing reads
    # keep holds the radiance (or the bracket) to the last frame (the demo's contact sheet).
    a, b = Probe("a", ("sdr",)), Probe("b", ("sdr",))
    last = run([a, b], keep=("radiance", "bracket"))
    assert a.seen == {"sdr", "radiance", "bracket"} and last.radiance is not None
    assert last.bracket is not None and last.bracket.frames.shape == (3, 64, 96, 3)
    # An unannotated stage may read anything: what reaches it is still there (the brackets too).
    a, b = Probe("a", ("sdr",)), Probe("b")
    run([a, b])
    assert a.seen in ({"sdr", "radiance", "aligned", "bracket"}, {"sdr", "radiance", "bracket"})
    assert b.seen == a.seen


def test_stage_cpu_time_counts_work_not_waiting():
    """Each stage records its thread's CPU time beside its latency: a stage that sleeps costs (almost) no CPU, one
    that computes costs about its latency, and the totals add up over the frames."""

    def sleeper(ctx):
        time.sleep(0.02)
        return ctx

    def spinner(ctx):
        end = time.thread_time() + 0.02
        while time.thread_time() < end:
            pass
        return ctx

    cam = SyntheticCamera(64, 48, fps=20, moving_objects=0)
    pipe = Pipeline(cam, [Stage("sleep", sleeper, queue_size=8), Stage("spin", spinner, queue_size=8)]).start()
    try:
        deadline = time.monotonic() + 20
        while pipe.stages[1].stats.processed < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stats = {s["name"]: s for s in pipe.stop()["stages"]}
    assert stats["spin"]["processed"] >= 6, stats
    sleep, spin = stats["sleep"], stats["spin"]
    assert sleep["latency_ms_median"] >= 19.0 and sleep["cpu_ms_median"] < 5.0
    assert spin["cpu_ms_median"] >= 19.0 and spin["cpu_ms_median"] <= spin["latency_ms_median"] + 0.5
    assert spin["cpu_s_total"] >= 0.019 * spin["processed"]
    assert stats["capture"]["cpu_s_total"] > 0.0 and stats["capture"]["cpu_ms_median"] is not None


def test_a_concurrent_stage_runs_beside_the_one_before_on_the_same_frame():
    """``concurrent=True``: the two stages work on the same frame at the same time (each waits for the other's
    signal on that frame, which sequential stages could never give), the frame moves on once both are done, and a
    failure in either drops that frame, counted where it failed."""
    import threading

    seen = {"a": [], "b": [], "after": []}
    meet: dict[int, tuple[threading.Event, threading.Event]] = {}
    lock = threading.Lock()

    def events(frame_id):
        with lock:
            return meet.setdefault(frame_id, (threading.Event(), threading.Event()))

    def meeting(name, mine, bad_every):
        # A stage that signals its half of the frame's meeting and waits for the other half.
        def stage(ctx):
            pair = events(ctx.frame_id)
            pair[mine].set()
            if not pair[1 - mine].wait(5.0):
                raise RuntimeError(f"stage {name} never ran beside the other one")
            if ctx.frame_id % bad_every == 0:
                raise ValueError(f"{name}'s bad frame")
            seen[name].append(ctx.frame_id)
            if name == "a":
                ctx.radiance = np.zeros(1, np.float32)  # released after both stages (nothing later reads it)
            return ctx
        return stage

    stage_a, stage_b = meeting("a", 0, 5), meeting("b", 1, 7)

    def after(ctx):
        seen["after"].append((ctx.frame_id, ctx.radiance is None))
        return ctx

    stage_a.reads, stage_b.reads, after.reads = ("bracket",), ("bracket",), ()
    cam = SyntheticCamera(64, 48, fps=60, moving_objects=0)
    pipe = Pipeline(cam, [Stage("a", stage_a, queue_size=64), Stage("b", stage_b, concurrent=True),
                          Stage("after", after, queue_size=64)]).start()
    try:
        deadline = time.monotonic() + 20
        while len(seen["after"]) < 30 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stats = pipe.stop()
    assert not any(st.thread.is_alive() for st in pipe.stages)  # the concurrent stage's thread stopped too
    by_name = {s["name"]: s for s in stats["stages"]}
    passed = [frame_id for frame_id, _ in seen["after"]]
    assert len(passed) >= 30 and all(released for _, released in seen["after"])
    assert not any(f % 5 == 0 or f % 7 == 0 for f in passed)  # a failure in either stage drops the frame
    assert set(passed) == set(seen["a"]) & set(seen["b"])
    assert "never ran beside" not in (by_name["a"]["last_error"] + by_name["b"]["last_error"])  # no error but ours
    assert by_name["a"]["errors"] >= 1 and by_name["b"]["errors"] >= 1
    # Every captured frame is completed, dropped or failed, once: frame 35 failed in both stages, one frame.
    assert stats["frames_captured"] >= 35
    assert (stats["frames_completed"] + stats["frames_dropped"] + stats["frames_failed"]
            == stats["frames_captured"] + stats["frames_skipped"])
    with pytest.raises(ValueError, match="concurrent stage"):
        Pipeline(cam, [Stage("b", stage_b, concurrent=True)])
    # A concurrent stage that returns something other than its frame fails that frame, counted; nothing hangs.
    cam = SyntheticCamera(64, 48, fps=60, moving_objects=0)
    pipe = Pipeline(cam, [Stage("a", lambda ctx: ctx, queue_size=64),
                          Stage("b", lambda ctx: "not a frame" if ctx.frame_id % 2 else FrameContext(
                              frame_id=ctx.frame_id, bracket=None, captured_ns=0), concurrent=True)]).start()
    try:
        deadline = time.monotonic() + 20
        while pipe.stages[1].stats.errors < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stats = pipe.stop()
    assert not any(st.thread.is_alive() for st in pipe.stages)
    assert stats["frames_completed"] == 0 and stats["frames_failed"] >= 6
    assert stats["frames_failed"] + stats["frames_dropped"] == stats["frames_captured"] + stats["frames_skipped"]


def test_a_failed_frame_gives_its_bracket_buffer_back_at_once():
    """A stage that raised left the failed frame referenced by its worker until the next frame came, and with the
    synthetic camera's one bracket buffer no next frame could come: the source stalled twice and was restarted."""
    cam = SyntheticCamera(160, 90, fps=60, moving_objects=0, max_stacks=1)
    pipe = _small_pipeline(cam, [Stage("check", _FailOn(3))]).start()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and pipe.stages[-1].stats.processed < 30:
        time.sleep(0.05)
    stats = pipe.stop()
    assert stats["frames_failed"] == 1 and stats["frames_completed"] >= 29
    assert stats["source_stalls"] == 0 and stats["source_restarts"] == 0, stats


class _SlowFirstFrame(SyntheticCamera):
    """A real synthetic camera whose first bracket after each open comes 0.45 s late (a prerolling device), with one
    hiccup of two stalls at read 12."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.opens = self.reads = 0
        self._opened_at = 0.0

    def open(self):
        self.opens += 1
        self._opened_at = time.monotonic()
        super().open()

    def read_bracket(self, timeout_s=1.0):
        self.reads += 1
        due = self._opened_at + 0.45
        if self.reads in (12, 13) or time.monotonic() + timeout_s < due:
            time.sleep(timeout_s)
            raise SourceTimeout("no frame yet")
        time.sleep(max(0.0, due - time.monotonic()))
        return super().read_bracket(timeout_s)


def test_a_restarted_source_gets_its_own_stalls_before_the_next_restart():
    """The stall count was reset by a frame only, never by a restart: after one hiccup, a source whose first frame
    comes later than the read timeout was restarted at its first stall, again and again, and never delivered."""
    cam = _SlowFirstFrame(160, 90, fps=60, moving_objects=0)
    pipe = _small_pipeline(cam).start()  # read timeout 0.3 s, a restart after 2 stalls in a row
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and pipe.stages[-1].stats.processed < 40:
        time.sleep(0.05)
    stats = pipe.stop()
    assert stats["frames_completed"] >= 40, stats
    assert stats["source_restarts"] == 1 and cam.opens == 2, stats  # the hiccup's; the slow first frames survive


def _drop_every_third(ctx):
    return ctx if ctx.frame_id % 3 else None


def _fail_every_third(ctx):
    if ctx.frame_id % 3 == 0:
        raise RuntimeError("boom")
    return ctx


@pytest.mark.parametrize("partner", [None, _drop_every_third, _fail_every_third])
def test_frames_a_stage_drops_on_purpose_are_counted_once(partner):
    """A stage may return None to drop a frame; such frames were counted nowhere, so completed + dropped + failed
    fell short of captured + skipped. A frame a stage and its concurrent partner both drop counts once, and one
    that the partner fails counts as failed only. The camera is paced (100 fps, not as fast as it can), so that the
    stages' queues do not overflow on a loaded machine: an overflow drops frames too, and the counts below are
    those the stages dropped on purpose (with fps=0 a busy CI run lost 58 frames that way beside the 64 failed)."""
    cam = SyntheticCamera(160, 90, fps=100, moving_objects=0)
    stages = [Stage("odd", _drop_every_third, queue_size=64)]
    if partner is not None:
        stages.append(Stage("beside", partner, queue_size=64, concurrent=True))
    pipe = Pipeline(cam, stages + [Stage("out", lambda ctx: ctx, queue_size=64)]).start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and pipe.stages[-1].stats.processed < 30:
        time.sleep(0.02)
    stats = pipe.stop()
    # Capture slots the camera let pass (late on a loaded machine) are drops too, but never reached a stage:
    # frames_skipped, set aside here.
    by_stages = stats["frames_dropped"] - stats["frames_skipped"]
    lost = stats["frames_failed"] if partner is _fail_every_third else by_stages
    assert lost >= 10 and (by_stages if partner is _fail_every_third else stats["frames_failed"]) == 0, stats
    assert stats["frames_completed"] + stats["frames_dropped"] + stats["frames_failed"] == \
        stats["frames_captured"] + stats["frames_skipped"]


def test_a_static_object_moves_with_the_background_under_hand_shake():
    """The synthetic camera moved its sprites against the shake: the background's content moves by minus the
    shake offset, the sprites moved by plus it, so a still object seemed to move twice the shake."""
    kwargs = {"fps": 0, "shake_px": 6, "illumination_stops": 0, "seed": 4, "noise_codes": 0.0}
    cam = SyntheticCamera(160, 120, moving_objects=1, object_speed_px=0.0, **kwargs)
    plain = SyntheticCamera(160, 120, moving_objects=0, **kwargs)
    cam.open()
    plain.open()
    try:
        corners = []
        for t in (0.0, 2.0):
            with_sprite, background = cam.capture(0.02, 1.0, t), plain.capture(0.02, 1.0, t)
            ys, xs = np.nonzero(np.abs(with_sprite.astype(int) - background).sum(axis=2))
            corners.append((ys.min(), xs.min()))
        b0, b2 = plain.capture(0.02, 1.0, 0.0).astype(float), plain.capture(0.02, 1.0, 2.0).astype(float)
    finally:
        cam.close()
        plain.close()
    _, shift_y, shift_x = min((np.abs(np.roll(b0, (sy, sx), (0, 1))[10:-10, 10:-10] - b2[10:-10, 10:-10]).mean(),
                               sy, sx) for sy in range(-8, 9) for sx in range(-8, 9))
    assert (shift_y, shift_x) != (0, 0)
    assert (corners[1][0] - corners[0][0], corners[1][1] - corners[0][1]) == (shift_y, shift_x)
