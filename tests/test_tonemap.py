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
    # maximum over every pixel.
    lum = luminance(radiance).astype(np.float64)
    return math.exp(np.mean(np.log(delta + lum[::2, ::2]))), float(lum.max())


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


# ------------------------------------------------------------------------------ regressions from the review


def _reinhard_reference(radiance, key=0.18, white_lum=None):
    """Eq. 1, 2, 4 in float64 with the documented sampling (log-average on the stride-2 grid, maximum over
    every pixel, or ``white_lum``), Schlick colour at s = 1; sRGB codes."""
    log_avg, lmax = _stats(radiance)
    lum = luminance(radiance).astype(np.float64)
    lm = key / log_avg * lum
    white = key / log_avg * (lmax if white_lum is None else white_lum)
    ld = lm * (1 + lm / white**2) / (1 + lm)
    return _encode(radiance / np.maximum(lum, 1e-9)[..., None] * ld[..., None])


@pytest.mark.parametrize("row", [10, 11, 62, 63])  # even and odd rows; 63 the last, alone in no block row
def test_the_maximum_is_over_every_row_so_the_brightest_pixel_maps_to_white(row):
    rng = np.random.default_rng(row)
    radiance = rng.uniform(0.05, 0.2, (64, 48, 3)).astype(np.float32)
    radiance[row, 5] = (900.0, 1000.0, 1100.0)
    lum = luminance(radiance)
    _, lmax, _ = frame_statistics(radiance)
    assert lmax == pytest.approx(float(lum.max()), rel=1e-6)
    out = reinhard_global(radiance)
    # the scene maximum maps to white (L_d = 1: its channels at C / L), wherever it lies
    assert out[row, 5].tolist() == _encode(radiance[row, 5] / lum[row, 5]).tolist() == [245, 255, 255]
    # every other pixel as eq. 4 with that white point (on an odd row the old white was 100x too small)
    assert np.abs(out.astype(int) - _reinhard_reference(radiance)).max() <= 1
    # Drago's L_wmax is the same maximum (eq. 4 with it, as test_drago_matches_equation_4)
    log_avg, lmax = _stats(radiance)
    lw, lwmax = lum.astype(np.float64) / log_avg, lmax / log_avg
    ld = np.log(lw + 1) / np.log10(lwmax + 1) / np.log(2 + 8 * (lw / lwmax) ** (np.log(0.85) / np.log(0.5)))
    assert np.abs(drago(radiance).astype(int) - _encode(radiance / lum[..., None] * ld[..., None])).max() <= 1


@pytest.mark.parametrize("height", [40, 200])  # 10 and 50 bright odd rows: the serial and the parallel look-up
def test_odd_row_stripes_set_the_white_point(height):
    radiance = np.full((height, 64, 3), 0.1, np.float32)
    radiance[1::2] = 50.0
    radiance[7, 3] = (60.0, 80.0, 10.0)  # the brightest luminance, a coloured pixel on an odd row
    _, lmax, _ = frame_statistics(radiance)
    assert lmax == pytest.approx(float(luminance(radiance).max()), rel=1e-6)
    out = reinhard_global(radiance)
    np.testing.assert_array_less(np.abs(out.astype(int) - _reinhard_reference(radiance)), 2)
    assert out[0, 0].max() < 200  # the 0.1 rows are not white (they were, with the even rows' white point)


def test_frame_statistics_maximum_matches_numpy_on_random_scenes(scene_factory):
    for seed in range(4):
        radiance = scene_factory(seed, 90, 131).radiance
        _, lmax, _ = frame_statistics(radiance)
        assert lmax == pytest.approx(float(luminance(radiance).max()), rel=1e-6)


@pytest.mark.parametrize("op", ["reinhard", "reinhard-local", "drago", "parametric"])
@pytest.mark.parametrize("colour", [{}, {"saturation": 0.7}, {"color": "mantiuk", "saturation": 0.7}],
                         ids=["schlick-1", "schlick-0.7", "mantiuk-0.7"])
@pytest.mark.parametrize("big", [1e38, 3.0e38])
@pytest.mark.parametrize("width", [8, 16])  # whether 1 / L was flushed depended on the loop's vector width
def test_huge_finite_radiance_is_white_not_black(op, colour, big, width):
    """Finite values above 2^126 (1 / L subnormal, flushed by fastmath) came out black. Luminance above 1e30
    counts as 1e30: the frame renders as the one with those pixels brought down to luminance 1e30."""
    if op == "parametric":
        colour = {k: v for k, v in colour.items() if k == "color"}
    radiance = np.full((16, width, 3), 1e-3, np.float32)
    radiance[5, 5] = (0.5e-3, 1e-3, 2e-3)
    equivalent = radiance.copy()
    # on odd rows: in the maximum only, not in the log-average or the block means
    radiance[1, 1], equivalent[1, 1] = big, 1e30  # grey
    radiance[3, 3], equivalent[3, 3] = (big, 0.0, 0.0), (1e30 / 0.2126, 0.0, 0.0)  # saturated red
    out = tonemap(radiance, op, **colour)
    assert out[1, 1].tolist() == [255, 255, 255]
    assert out[3, 3, 0] == 255 and out[3, 3, 1] == out[3, 3, 2]  # red (or white, far above its surround), G = B
    if op != "reinhard-local":
        assert out[3, 3, 1] < 255
    np.testing.assert_array_equal(out, tonemap(equivalent, op, **colour))
    assert out[5, 5, 2] >= out[5, 5, 0]  # the rest keeps its colour
    # on the log-average's grid (rows and columns even) as well: in every statistic
    radiance[0, 0], radiance[2, 2] = big, (big, 0.0, 0.0)
    out = tonemap(radiance, op, **colour)
    assert out[0, 0].tolist() == out[1, 1].tolist() == [255, 255, 255]
    assert out[2, 2, 0] == 255 and out[2, 2, 1] == out[2, 2, 2]


def test_huge_values_keep_the_statistics_finite():
    radiance = np.full((16, 16, 3), 1.0, np.float32)
    radiance[:4, :4] = 3.0e38  # a whole block at float32's top: its sum overflowed to inf
    log_avg, lmax, blocks = frame_statistics(radiance)
    assert math.isfinite(log_avg) and lmax == pytest.approx(1e30, rel=1e-6)  # clamped, as documented
    assert np.all(np.isfinite(blocks)) and blocks[0, 0] == pytest.approx(1e30, rel=1e-6)
    assert blocks[1:, 1:] == pytest.approx(1.0)
    out = reinhard_local(radiance, saturation=0.7)
    assert np.all(out[:4, :4] == 255) and 0 < out[8:, 8:].mean() < 255


@pytest.mark.parametrize("op", ["reinhard", "reinhard-local", "drago", "parametric"])
@pytest.mark.parametrize("colour", [{}, {"saturation": 0.5}, {"color": "mantiuk", "saturation": 0.5},
                                    {"color": "mantiuk", "saturation": 1.5}],
                         ids=["schlick-1", "schlick-0.5", "mantiuk-0.5", "mantiuk-1.5"])
@pytest.mark.parametrize("frame", ["zeros", "negative-noise"])
def test_black_stays_black(op, colour, frame):
    """An all-black frame came out uniform grey (code 188) with Mantiuk's correction at s < 1."""
    if op == "parametric":
        colour = {"color": colour.get("color", "schlick")}
    if frame == "zeros":
        radiance = np.zeros((16, 24, 3), np.float32)
    else:  # sensor noise around a subtracted black level: every pixel's luminance <= 0
        rng = np.random.default_rng(0)
        radiance = (rng.normal(0, 1e-4, (16, 24, 3)) - 5e-4).astype(np.float32)
        radiance[luminance(radiance) > 0] = 0.0
    assert np.all(tonemap(radiance, op, **colour) == 0)


@pytest.mark.parametrize("dt_s", [float("nan"), float("inf"), float("-inf")])
def test_temporal_adaptation_takes_a_broken_dt_as_the_frame_interval(dt_s):
    """dt_s = NaN used to turn the state into NaN for good (max(nan, 0) is nan)."""
    broken, reference = TemporalAdaptation(), TemporalAdaptation()
    for value in (1.0, 4.0, 2.0):
        got = broken.update(dt_s, log_average=value)
        want = reference.update(None, log_average=value)
        assert got == want and math.isfinite(got["log_average"])
    # and it still adapts afterwards
    assert broken.update(1 / 30, log_average=8.0) == reference.update(1 / 30, log_average=8.0)


def _upsample_at_block_centres(m, h, w, block):
    """Bilinear upsampling whose sample (y, x) sits at ((y + 0.5) / block - 0.5, (x + 0.5) / block - 0.5)."""
    def taps(n_src, n_dst):
        pos = np.clip((np.arange(n_dst) + 0.5) / block - 0.5, 0, n_src - 1)
        i0 = np.minimum(np.floor(pos).astype(int), max(n_src - 2, 0))
        return i0, np.minimum(i0 + 1, n_src - 1), pos - i0

    y0, y1, ty = taps(m.shape[0], h)
    x0, x1, tx = taps(m.shape[1], w)
    rows = m[y0] * (1 - ty)[:, None] + m[y1] * ty[:, None]
    return rows[:, x0] * (1 - tx) + rows[:, x1] * tx


@pytest.mark.parametrize(("block", "width"), [(4, 96), (4, 97), (4, 111), (16, 97), (3, 100)])
def test_local_operator_interpolates_columns_at_the_block_centres_like_rows(block, width):
    """Columns went through a resize to the frame width (scale nbx / W): off by up to a block when W is not a
    multiple of it (18 codes at a bright right edge)."""
    from edgehdr.tonemap import guided_coefficients

    h = 64
    rng = np.random.default_rng(2)
    xx = np.arange(width)[None, :].repeat(h, 0)
    lum = np.where(xx < width - 9, 0.05, 50.0).astype(np.float32) * (1 + 0.1 * rng.random((h, width))).astype(
        np.float32)
    radiance = np.repeat(lum[..., None], 3, axis=2)
    log_avg, lmax, blocks = frame_statistics(radiance, block=block, stride=min(2, block))
    scale = 0.18 / log_avg
    log_lm = np.log(np.maximum(blocks * np.float32(scale), np.float32(1e-9)))
    radius = max(1, int(round(0.025 * max(h, width) / block)))
    a, b = guided_coefficients(log_lm, log_lm, radius, 0.1)
    lm = np.maximum(luminance(radiance, np.float64), 1e-9) * scale
    adapt = np.exp(_upsample_at_block_centres(a, h, width, block) * np.log(lm)
                   + _upsample_at_block_centres(b, h, width, block))
    lw = lmax * scale
    expected = _encode(lm * (1 + lm / lw**2) / (1 + adapt))
    out = reinhard_local(radiance, block=block)[..., 0].astype(int)
    assert np.abs(out - expected).max() <= 1


def test_frame_statistics_reads_a_row_of_every_block_row_at_any_valid_stride():
    """stride 3 with block 4 left the last block rows without a sampled row: block means of 0."""
    rng = np.random.default_rng(5)
    radiance = rng.uniform(0.5, 2.0, (10, 13, 3)).astype(np.float32)
    lum = luminance(radiance).astype(np.float64)
    for block, stride in [(4, 3), (4, 4), (5, 2), (3, 1), (1, 1)]:
        log_avg, lmax, blocks = frame_statistics(radiance, block=block, stride=stride)
        read = (np.arange(10) % block) % stride == 0  # rows stride apart from each block row's first
        expected = np.array([[lum[by * block:(by + 1) * block][read[by * block:(by + 1) * block]]
                              [:, bx * block:(bx + 1) * block].mean() for bx in range(-(-13 // block))]
                             for by in range(-(-10 // block))])
        np.testing.assert_allclose(blocks, expected, rtol=1e-5)
        assert log_avg == pytest.approx(math.exp(np.mean(np.log(1e-6 + lum[read][:, ::stride]))), rel=1e-5)
        assert lmax == pytest.approx(lum.max(), rel=1e-6)


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"stride": 0}, r"stride must be an integer in \[1, block = 4\], got 0"),
    ({"stride": -1}, r"stride must be an integer in \[1, block = 4\], got -1"),
    ({"stride": 5}, r"stride must be an integer in \[1, block = 4\], got 5"),
    ({"block": 2, "stride": 3}, r"stride must be an integer in \[1, block = 2\], got 3"),
    ({"block": 0}, "block must be an integer >= 1, got 0"),
    ({"block": -2}, "block must be an integer >= 1, got -2"),
    ({"delta": 0.0}, "delta must be a finite number > 0, got 0.0"),
])
def test_frame_statistics_refuses_bad_block_and_stride(kwargs, message):
    with pytest.raises(ValueError, match=message):
        frame_statistics(np.ones((8, 8, 3), np.float32), **kwargs)


NAN = float("nan")


@pytest.mark.parametrize(("call", "message"), [
    (lambda r: reinhard_global(r, key=0.0), "key must be a finite number > 0, got 0.0"),
    (lambda r: reinhard_global(r, key=-0.18), "key must be a finite number > 0, got -0.18"),
    (lambda r: reinhard_global(r, key=NAN), "key must be a finite number > 0, got nan"),
    (lambda r: reinhard_global(r, white=0.0), "white must be a finite number > 0, got 0.0"),
    (lambda r: reinhard_global(r, white=-2.0), "white must be a finite number > 0, got -2.0"),
    (lambda r: reinhard_global(r, white=NAN), "white must be a finite number > 0, got nan"),
    (lambda r: reinhard_global(r, delta=-1e-6), "delta must be a finite number > 0"),
    (lambda r: reinhard_local(r, white=NAN), "white must be a finite number > 0, got nan"),
    (lambda r: reinhard_local(r, key=0.0), "key must be a finite number > 0, got 0.0"),
    (lambda r: reinhard_local(r, block=0), "block must be an integer >= 1, got 0"),
    (lambda r: reinhard_local(r, block=-2), "block must be an integer >= 1, got -2"),
    (lambda r: reinhard_local(r, filter="bilateral", eps=-1.0), "eps must be a finite number > 0, got -1.0"),
    (lambda r: reinhard_local(r, eps=0.0), "eps must be a finite number > 0, got 0.0"),
    (lambda r: reinhard_local(r, radius_fraction=-5.0), "radius_fraction must be a finite number > 0, got -5.0"),
    (lambda r: drago(r, max_display_cd_m2=0.0), "max_display_cd_m2 must be a finite number > 0, got 0.0"),
    (lambda r: drago(r, max_display_cd_m2=-100.0), "max_display_cd_m2 must be a finite number > 0, got -100.0"),
    (lambda r: drago(r, max_display_cd_m2=NAN), "max_display_cd_m2 must be a finite number > 0, got nan"),
    (lambda r: parametric(r, gamma=3.0), r"gamma must be in \[0, 2\], got 3.0"),
    (lambda r: parametric(r, key=0.0), "key must be a finite number > 0, got 0.0"),
    (lambda r: parametric(r, key=-1.0), "key must be a finite number > 0, got -1.0"),
    (lambda r: parametric(r, mu=NAN), "mu must be a finite number > 0, got nan"),
    (lambda r: parametric(r, alpha=NAN), "alpha must be a finite number > 0, got nan"),
])
def test_operator_parameters_are_checked_and_named(call, message):
    with pytest.raises(ValueError, match=message):
        call(np.ones((8, 8, 3), np.float32))


def test_parametric_key_above_one_is_in_its_domain(scene_factory):
    """key / (1 + key) is in (0, 1) for every key > 0: key = 2 puts the log-average at 2/3 (Reinhard-like)."""
    radiance = scene_factory(3, 32, 48).radiance
    log_avg, _ = _stats(radiance)
    key, alpha = 2.0, 0.8
    target = key / (1 + key)
    mu = log_avg**alpha * (1 - target) / target
    np.testing.assert_array_equal(parametric(radiance, key=key, alpha=alpha), parametric(radiance, mu=mu, alpha=alpha))


@pytest.mark.parametrize("op", ["reinhard", "reinhard-local", "drago", "parametric"])
def test_a_non_contiguous_out_is_refused_and_a_contiguous_one_is_filled(op, scene_factory):
    radiance = scene_factory(1, 32, 48).radiance
    strided = np.zeros((32, 96, 3), np.uint8)[:, ::2]
    with pytest.raises(ValueError, match="out must be a writeable, C-contiguous"):
        tonemap(radiance, op, out=strided)
    read_only = np.zeros((32, 48, 3), np.uint8)
    read_only.flags.writeable = False
    with pytest.raises(ValueError, match="C-contiguous False|writeable False"):
        tonemap(radiance, op, out=read_only)
    out = np.zeros((32, 48, 3), np.uint8)
    assert tonemap(radiance, op, out=out) is out and np.array_equal(out, tonemap(radiance, op))


@pytest.mark.parametrize("op", ["reinhard", "reinhard-local", "drago", "parametric"])
@pytest.mark.parametrize("shape", [(0, 5, 3), (5, 0, 3), (0, 0, 3)])
def test_empty_frames_are_refused_clearly(op, shape):
    with pytest.raises(ValueError, match=r"radiance has no pixels \(shape"):
        tonemap(np.zeros(shape, np.float32), op)
    with pytest.raises(ValueError, match="radiance has no pixels"):
        frame_statistics(np.zeros(shape, np.float32))


def test_a_subnormal_delta_is_refused():
    """The log-average's offset goes through the kernels' log2 polynomial, which reads a subnormal float as another
    number: a black frame's log-average with delta 1e-42 came out 5.9e-39 instead of 1e-42."""
    from edgehdr.hdr import MergeStatistics

    black = np.zeros((8, 8, 3), np.float32)
    assert frame_statistics(black, delta=2.0 ** -126)[0] == pytest.approx(2.0 ** -126, rel=1e-4)
    for call in (lambda: frame_statistics(black, delta=1e-42), lambda: reinhard_global(black, delta=1e-40),
                 lambda: MergeStatistics(delta=1e-42)):
        with pytest.raises(ValueError, match=r"delta must be at least 2\^-126"):
            call()
