"""The merge's fused statistics against the passes they replace (the tone mappers' and the dimming's).

``merge_debevec(statistics=MergeStatistics(...))`` measures the radiance as it writes it; the runtime then skips
``frame_statistics`` in Reinhard's global operator (and Drago's) and ``zone_statistics`` in the ``max`` dimming.
Everything here compares with those independent passes on the same radiance, on synthetic brackets and on real
photographs re-photographed through the realistic camera.
"""

from __future__ import annotations

import numpy as np
import pytest

from edgehdr.dimming import LedLayout, zone_light, zone_max_light, zone_statistics
from edgehdr.hdr import MergeStatistics, merge_debevec
from edgehdr.tonemap import drago, frame_statistics, reinhard_global


def _real_bracket(height: int, width: int):
    """A shared HDR photograph re-photographed through the realistic camera (3 exposures, 2 stops apart)."""
    import cv2

    from edgehdr.synth.realistic import RealisticCamera, real_hdr_scenes

    try:
        scenes = real_hdr_scenes(max_side=max(height, width) * 2)
    except FileNotFoundError as exc:
        pytest.skip(f"real HDR photographs not available: {exc}")
    if not scenes:
        pytest.skip("no real HDR photograph in the data folder")
    name, rad = scenes[0]
    rad = cv2.resize(rad, (width, height), interpolation=cv2.INTER_AREA)
    cam = RealisticCamera()
    key = float(np.median(rad.mean(axis=2)))
    exposures = [0.25 * 0.18 / key, 0.18 / key, 4 * 0.18 / key]
    rng = np.random.default_rng(0)
    frames = np.stack([cam.capture(rad, t, rng=rng) for t in exposures])
    return name, frames, np.asarray(exposures) / exposures[1], cam.camera_response


def _check_against_passes(frames, exposures, response, zones, *, shifts=None, deghost=False):
    plain = merge_debevec(frames, exposures, response, shifts=shifts, deghost=deghost)
    stats = MergeStatistics(zones)
    fused = merge_debevec(frames, exposures, response, shifts=shifts, deghost=deghost, statistics=stats)
    # the radiance itself is the plain kernel's, bit for bit
    assert np.array_equal(plain.view(np.int32), fused.view(np.int32))
    log_avg, lmax, _ = frame_statistics(plain)
    assert stats.log_average() == pytest.approx(log_avg, rel=1e-6)
    assert stats.max_luminance() == lmax
    if zones is not None:
        h, w = plain.shape[:2]
        layout = LedLayout(rows=zones[0], cols=zones[1], width_px=w, height_px=h)
        for scale in (1.0, 3.7 * layout.peak_luminance_cd_m2 / lmax):  # nothing clipped; the brightest zones clipped
            expected = zone_light(plain, layout, "max", stats=zone_statistics(plain, layout, scale=scale))
            assert np.array_equal(zone_max_light(stats.zone_max, layout, scale=scale), expected)
    else:
        assert stats.zone_max is None
    return plain, stats


@pytest.mark.parametrize(("height", "width", "zones"), [(90, 161, (7, 9)), (270, 481, (48, 48)), (60, 130, (5, 4)),
                                                        (66, 100, None)])
def test_synthetic_brackets_match_the_statistics_passes(shot_factory, height, width, zones):
    """Odd sizes (rows not a multiple of the 4-row blocks, odd widths), a grid finer than the frame allows in one
    direction, the serial kernel (small frames) and no zones at all."""
    shot = shot_factory(3, height, width, moving=1)
    _check_against_passes(shot.bracket.frames, shot.bracket.relative_exposure, "srgb", zones)


@pytest.mark.parametrize("serial", [True, False])
def test_the_peak_is_over_every_row_as_frame_statistics_takes_it(serial):
    """The merge measured the peak on even rows only, as frame_statistics did: a highlight on an odd row (a
    specular glint, one pixel high) was outside the white point. Both now take every row; the merged scenes of
    the other tests had their peak on an even row."""
    height, width = (40, 64) if serial else (270, 481)
    rng = np.random.default_rng(3)
    frames = rng.integers(20, 120, (3, height, width, 3), dtype=np.uint8)
    frames[:, 17, 33] = [[250, 250, 250], [255, 255, 255], [255, 255, 255]]  # odd row: bright in the short frame
    plain, stats = _check_against_passes(frames, [0.25, 1.0, 4.0], "srgb", None)
    luminance = plain @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    assert np.unravel_index(np.argmax(luminance), luminance.shape) == (17, 33)
    assert stats.max_luminance() == pytest.approx(float(luminance.max()), rel=1e-5)


def test_shifted_and_deghosted_merges_match(shot_factory):
    shot = shot_factory(5, 120, 200, moving=2)
    shifts = np.array([[3, -2], [0, 0], [-4, 5]])
    _check_against_passes(shot.bracket.frames, shot.bracket.relative_exposure, "srgb", (6, 10), shifts=shifts)
    _check_against_passes(shot.bracket.frames, shot.bracket.relative_exposure, "srgb", (6, 10), deghost=True)


def test_real_photograph_rephotographed_matches_and_tone_maps_the_same():
    """A real photograph through the realistic camera (filmic response, noise): statistics as the passes', and
    Reinhard's and Drago's operators given them render the same picture as with their own pass."""
    _, frames, exposures, response = _real_bracket(180, 320)
    rad, stats = _check_against_passes(frames, exposures, response, (18, 32))
    given = (stats.log_average(), stats.max_luminance())
    for op in (reinhard_global, drago):
        own, from_merge = op(rad).astype(np.int16), op(rad, statistics=given).astype(np.int16)
        # the log-average agrees to float rounding: a code may move by one where it sits on a rounding edge
        assert np.abs(own - from_merge).max() <= 1
        assert np.mean(own != from_merge) < 1e-3


def test_statistics_are_validated():
    with pytest.raises(ValueError, match="zones must be"):
        MergeStatistics((0, 4))
    with pytest.raises(ValueError, match="never filled"):
        MergeStatistics().log_average()
    frames = np.zeros((2, 4, 4, 3), np.uint8)
    with pytest.raises(ValueError, match="does not fit"):
        merge_debevec(frames, [1.0, 4.0], statistics=MergeStatistics((5, 2)))
    rad = np.ones((4, 4, 3), np.float32)
    with pytest.raises(ValueError, match="finite log-average"):
        reinhard_global(rad, statistics=(0.0, 1.0))
    with pytest.raises(ValueError, match="finite log-average"):
        drago(rad, statistics=(1.0, float("nan")))
    layout = LedLayout(rows=2, cols=2, width_px=16, height_px=16)
    with pytest.raises(ValueError, match="layout has 2 x 2"):
        zone_max_light(np.ones((3, 2), np.float32), layout)


def test_runtime_stages_give_the_same_frame_with_the_merge_statistics(shot_factory):
    """Merge -> tone map (Reinhard) beside dimming (max) with the merge measuring, and with each stage measuring
    for itself: the same zone values and LCD image, the same picture to a code on a rounding edge."""
    from edgehdr.hdr import standard_response
    from edgehdr.pipeline.graph import FrameContext
    from edgehdr.pipeline.stages import DimmingStage, MergeStage, ToneMapStage

    shot = shot_factory(8, 180, 320, moving=1)
    bracket = shot.bracket
    layout = LedLayout(rows=18, cols=32, width_px=320, height_px=180)
    results = []
    for measure in (False, True):
        merge = MergeStage(standard_response("srgb"), statistics=measure,
                           statistics_zones=(18, 32) if measure else None)
        tonemap, dimming = ToneMapStage("reinhard"), DimmingStage(layout, algorithm="max")
        assert tonemap.uses_merge_statistics and dimming.merge_statistics_zones == (18, 32)
        frames = []
        for i in range(3):  # the temporal adaptation and the zone filter carry state over frames
            ctx = merge(FrameContext(frame_id=i, bracket=bracket, captured_ns=i))
            assert (ctx.merge_statistics is not None) == measure
            ctx = dimming(tonemap(ctx))
            frames.append((ctx.sdr.copy(), ctx.zone_values.copy(), ctx.lcd.copy()))
        results.append(frames)
    for (sdr0, zones0, lcd0), (sdr1, zones1, lcd1) in zip(*results):
        assert np.array_equal(zones0, zones1) and np.array_equal(lcd0, lcd1)
        diff = np.abs(sdr0.astype(np.int16) - sdr1)
        assert diff.max() <= 1 and np.mean(diff != 0) < 1e-3


def test_daemon_lets_the_merge_measure_only_what_is_used():
    from edgehdr.pipeline.config import validate
    from edgehdr.pipeline.daemon import build_runtime
    from edgehdr.pipeline.stages import MergeStage

    def merge_of(overrides):
        cfg = validate({"source": {"width": 320, "height": 180}, "bridge": {"enabled": False}, **overrides})
        rt = build_runtime(cfg)
        try:
            return next(st.fn for st in rt.built_pipeline().stages if isinstance(st.fn, MergeStage))
        finally:
            rt.close()

    default = merge_of({})
    assert default.statistics and default.statistics_zones == (48, 48)
    sqrt_local = merge_of({"tonemap": {"operator": "reinhard-local"}, "dimming": {"algorithm": "sqrt"}})
    assert not sqrt_local.statistics
    drago_only = merge_of({"tonemap": {"operator": "drago"}, "dimming": {"enabled": False}})
    assert drago_only.statistics and drago_only.statistics_zones is None
    assert not merge_of({"merge": {"method": "neural"}}).statistics
