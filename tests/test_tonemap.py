"""Tone mapping against closed forms of the published operators, halo behaviour, temporal stability."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgehdr.tonemap import (
    TemporalAdaptation,
    color_correct_mantiuk,
    color_correct_schlick,
    drago,
    frame_statistics,
    guided_filter,
    luminance,
    parametric,
    reinhard_global,
    reinhard_local,
    srgb_encode,
    tonemap,
)


def _encode(linear):
    return np.rint(srgb_encode(linear) * 255.0)


def _stats(radiance, delta=1e-6):
    # The operators' documented sampling: log-average on every 2nd row and column,
    # maximum over every 2nd row.
    lum = luminance(radiance).astype(np.float64)
    return math.exp(np.mean(np.log(delta + lum[::2, ::2]))), float(lum[::2].max())


def test_fused_srgb_encoding_matches_the_standard():
    from edgehdr.tonemap.operators import srgb8

    x = np.concatenate([np.linspace(0, 1, 200001), np.geomspace(1e-7, 1, 100000), [-1.0, 2.0]]).astype(np.float32)
    exact = srgb_encode(x.astype(np.float64)) * 255.0
    got = np.array([srgb8(v) for v in x[::97]] + [srgb8(np.float32(-1.0)), srgb8(np.float32(2.0))])
    ref = exact[::97].tolist() + [0.0, 255.0]
    # The polynomial is within 0.007 code of the OETF, so rounding differs only at .5 ties.
    assert np.all(np.abs(got - np.asarray(ref)) <= 0.5 + 0.007)


def test_frame_statistics_match_numpy_and_full_resolution(scene_factory):
    radiance = scene_factory(0, 120, 160).radiance
    log_avg, lmax, blocks = frame_statistics(radiance)
    ref_avg, ref_max = _stats(radiance)
    assert log_avg == pytest.approx(ref_avg, rel=1e-5)
    assert lmax == pytest.approx(ref_max, rel=1e-6)
    lum = luminance(radiance).astype(np.float64)
    # Block means over the rows read (rows 0 and 2 of each 4-row block).
    expected = lum[::2].reshape(30, 2, 40, 4).mean(axis=(1, 3))
    np.testing.assert_allclose(blocks, expected, rtol=1e-4)


@pytest.mark.parametrize("seed", [0, 3])
def test_decimated_log_average_is_within_one_percent_at_720p(seed):
    from edgehdr.synth import make_scene

    radiance = make_scene(seed, 720, 1280).radiance
    log_avg, _, _ = frame_statistics(radiance)
    full = math.exp(np.mean(np.log(1e-6 + luminance(radiance).astype(np.float64))))
    assert log_avg == pytest.approx(full, rel=0.01)


def test_reinhard_global_matches_equations_1_2_4(scene_factory):
    radiance = scene_factory(1, 96, 128).radiance
    key = 0.18
    log_avg, lmax = _stats(radiance)
    lum = luminance(radiance).astype(np.float64)
    lm = key / log_avg * lum
    white = key / log_avg * lmax
    ld = lm * (1 + lm / white**2) / (1 + lm)
    expected = _encode(radiance / np.maximum(lum, 1e-9)[..., None] * ld[..., None])
    out = reinhard_global(radiance, key=key)
    assert out.dtype == np.uint8 and out.shape == radiance.shape
    assert np.abs(out.astype(int) - expected).max() <= 1


def test_drago_matches_equation_4(scene_factory):
    radiance = scene_factory(2, 96, 128).radiance
    bias = 0.85
    log_avg, lmax = _stats(radiance)
    lwa = log_avg / (1 + bias - 0.85) ** 5
    lum = luminance(radiance).astype(np.float64) / lwa
    lwmax = lmax / lwa
    ld = (1.0 / np.log10(lwmax + 1)) * np.log(lum + 1) / np.log(2 + 8 * (lum / lwmax) ** (np.log(bias) / np.log(0.5)))
    expected = _encode(radiance / np.maximum(luminance(radiance), 1e-9)[..., None] * ld[..., None])
    assert np.abs(drago(radiance, bias=bias).astype(int) - expected).max() <= 1


def test_parametric_operator_closed_form_with_schlick_colour(scene_factory):
    radiance = scene_factory(3, 64, 96).radiance
    alpha, mu, gamma = 0.7, 0.9, 0.6
    lum = np.maximum(luminance(radiance).astype(np.float64), 1e-9)
    ld = lum**alpha / (lum**alpha + mu)
    expected = _encode(color_correct_schlick(radiance, lum, ld, gamma))
    assert np.abs(parametric(radiance, alpha=alpha, mu=mu, gamma=gamma).astype(int) - expected).max() <= 1


def test_mantiuk_colour_correction_in_the_kernel(scene_factory):
    radiance = scene_factory(4, 64, 96).radiance
    log_avg, lmax = _stats(radiance)
    lum = np.maximum(luminance(radiance).astype(np.float64), 1e-9)
    lm = 0.18 / log_avg * lum
    white = 0.18 / log_avg * lmax
    ld = lm * (1 + lm / white**2) / (1 + lm)
    expected = _encode(color_correct_mantiuk(radiance, lum, ld, 0.6))
    out = reinhard_global(radiance, color="mantiuk", saturation=0.6)
    assert np.abs(out.astype(int) - expected).max() <= 1


def test_colour_corrections_agree_at_unit_saturation_and_mantiuk_keeps_luminance(rng):
    rgb = rng.uniform(0.01, 2.0, size=(50, 3))
    lum_in = rgb @ np.array([0.2126, 0.7152, 0.0722])
    lum_out = lum_in / (1 + lum_in)
    a = color_correct_schlick(rgb, lum_in, lum_out, 1.0)
    b = color_correct_mantiuk(rgb, lum_in, lum_out, 1.0)
    np.testing.assert_allclose(a, b, rtol=1e-12)
    m = color_correct_mantiuk(rgb, lum_in, lum_out, 0.5)
    np.testing.assert_allclose(m @ np.array([0.2126, 0.7152, 0.0722]), lum_out, rtol=1e-6)


def test_local_operator_on_a_flat_image_equals_global():
    flat = np.full((64, 64, 3), 0.37, np.float32)
    np.testing.assert_array_equal(reinhard_local(flat, white=1e6), reinhard_global(flat, white=1e6))


def _step_scene():
    # Bright window (L = 200) beside a dim, textured wall (L ~ 1) - the classic halo setting.
    h, w = 240, 320
    rng = np.random.default_rng(0)
    lum = np.ones((h, w)) * (1.0 + 0.2 * rng.random((h, w)))
    lum[:, : w // 2] = 200.0
    return np.repeat(lum[..., None], 3, axis=2).astype(np.float32), w // 2


def test_guided_filter_avoids_the_halo_a_gaussian_leaves():
    radiance, edge = _step_scene()
    near = slice(edge + 2, edge + 20)
    far = slice(edge + 120, edge + 150)

    def halo(img):
        y = img[..., 1].astype(float)
        return y[:, far].mean() - y[:, near].mean()  # darkening of the wall next to the window

    guided = halo(reinhard_local(radiance, filter="guided", radius_fraction=0.1))
    bilateral = halo(reinhard_local(radiance, filter="bilateral", radius_fraction=0.1))
    gaussian = halo(reinhard_local(radiance, filter="gaussian", radius_fraction=0.1))
    assert gaussian > 4.0, "Reinhard's Gaussian average should darken the wall next to the window"
    assert abs(guided) < 0.5 and abs(bilateral) < 0.5


def test_base_compression_follows_its_closed_form_in_flat_regions():
    """Inside a large flat region the guided filter's V equals L_m, so eq. 9 with the base layer compressed by
    1 - beta reads L_m' = L_m^(1 - beta) key^beta, L_d = L_m' (1 + L_m' / L_white^2) / (1 + L_m') exactly."""
    h, w = 256, 256
    lum = np.full((h, w), 2.0 ** -10, np.float32)  # a dark room ...
    lum[:, w // 2:] = 1.0  # ... beside a lit wall, 10 stops apart
    radiance = np.repeat(lum[..., None], 3, axis=2)
    log_avg, l_max = _stats(radiance)
    key = 0.18
    scale = key / log_avg
    inv_white2 = 1.0 / (l_max * scale) ** 2
    previous = None
    for beta in (0.0, 0.3, 0.6):
        out = reinhard_local(radiance, key=key, base_compression=beta)
        codes = []
        for cols, level in ((slice(20, 90), 2.0 ** -10), (slice(170, 236), 1.0)):
            lm = (level * scale) ** (1 - beta) * key ** beta
            expected = _encode(lm * (1 + lm * inv_white2) / (1 + lm))
            assert np.abs(out[20:236, cols].astype(float) - expected).max() <= 1, (beta, level)
            codes.append(expected)
        if previous is not None:  # the room rises and the wall falls as beta grows: the step between them shrinks
            assert codes[0] > previous[0] and codes[1] < previous[1]
        previous = codes
    np.testing.assert_array_equal(reinhard_local(radiance, base_compression=0.0), reinhard_local(radiance))
    with pytest.raises(ValueError, match="base_compression"):
        reinhard_local(radiance, base_compression=1.0)


def test_guided_filter_properties(rng):
    img = rng.random((40, 50)).astype(np.float32)
    flat = np.full((40, 50), 0.3, np.float32)
    np.testing.assert_allclose(guided_filter(flat, flat, 4, 0.01), flat, atol=1e-6)
    # Tiny eps: self-guided filtering preserves the image; huge eps: plain box mean.
    np.testing.assert_allclose(guided_filter(img, img, 3, 1e-8), img, atol=2e-3)
    import cv2

    box = cv2.boxFilter(img, -1, (7, 7), borderType=cv2.BORDER_REFLECT)
    box2 = cv2.boxFilter(box, -1, (7, 7), borderType=cv2.BORDER_REFLECT)
    np.testing.assert_allclose(guided_filter(img, img, 3, 1e6), box2, atol=1e-4)


def test_temporal_adaptation_no_flicker_on_static_noisy_scene(shot_factory):
    from edgehdr.hdr.merge import merge_debevec
    from edgehdr.synth import capture_bracket, make_scene

    exposures = shot_factory(0, 90, 120).bracket.exposure_s
    scene = make_scene(0, 90, 120)
    adaptation = TemporalAdaptation(time_constant_s=0.5)
    means = []
    for k in range(20):
        shot = capture_bracket(scene, exposures, seed=100 + k)  # fresh sensor noise every frame
        radiance = merge_debevec(shot.bracket, response=shot.response)
        means.append(reinhard_global(radiance, adaptation=adaptation).mean())
    jumps = np.abs(np.diff(means))
    assert jumps.max() < 0.25, f"static scene flickers by {jumps.max():.2f} codes"


def test_temporal_adaptation_follows_a_light_change_smoothly():
    adaptation = TemporalAdaptation(time_constant_s=0.3, frame_interval_s=1 / 30)
    values = [adaptation.update(log_average=1.0)["log_average"] for _ in range(5)]
    values += [adaptation.update(log_average=4.0)["log_average"] for _ in range(60)]
    after = np.array(values[5:])
    assert after[0] < 1.5, "no jump: the first frame after the change moves only part of the way"
    assert np.all(np.diff(after) >= 0), "monotone approach, no overshoot"
    assert after[-1] == pytest.approx(4.0, rel=0.02)
    # 63% of the log step after one time constant (9 frames at 30 fps).
    progress = math.log(after[8]) / math.log(4.0)
    assert 0.5 < progress < 0.75


def test_invalid_inputs_are_named():
    rgb = np.ones((8, 8, 3), np.float32)
    with pytest.raises(ValueError, match="unknown operator 'ace'"):
        tonemap(rgb, "ace")
    with pytest.raises(ValueError, match="HxWx3"):
        reinhard_global(np.ones((8, 8), np.float32))
    with pytest.raises(ValueError, match="unknown colour correction"):
        reinhard_global(rgb, color="lab")
    with pytest.raises(ValueError, match="unknown filter"):
        reinhard_local(rgb, filter="median")


def test_widen_maps_is_a_horizontal_resize_per_map():
    """The stacked single call equals OpenCV's resize of each map on its own (rows never mix), bit for bit."""
    import cv2

    from edgehdr.tonemap.guided import widen_maps

    rng = np.random.default_rng(3)
    maps = rng.normal(size=(6, 9, 13)).astype(np.float32)
    wide = widen_maps(maps, 50)
    per_map = np.stack([cv2.resize(m, (50, 9), interpolation=cv2.INTER_LINEAR) for m in maps])
    assert wide.shape == (6, 9, 50) and np.array_equal(wide, per_map)
    assert widen_maps(maps, 13) is maps
