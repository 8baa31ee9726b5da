"""Non-finite input (NaN, +-inf) through tone mapping and local dimming, and non-finite numbers in layouts.

The policy (``edgehdr.tonemap.nonfinite``): a pixel with a NaN or infinite channel is left out of the
scene statistics, shown black (NaN, -inf) or white (+inf), counted in one warning per call; a frame
with no finite pixel raises ``ValueError``. The log-average and block means read every 2nd row
(``stride=2``) and the maximum reads every row, so a bad pixel on an odd row (not the brightest) changes
no statistic and the other pixels must come out bit-identical; on an even row the statistics must equal
a NumPy reference without that pixel.
"""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest

from edgehdr.dimming import (
    BacklightModel,
    LayoutError,
    LedLayout,
    ZoneTemporalFilter,
    dim_frame,
    display_target,
    lcd_compensation,
    load_layout,
    robust_peak_luminance,
    write_results,
    zone_light,
    zone_statistics,
)
from edgehdr.dimming.neural import NeuralDimmer, encode_dimming_input
from edgehdr.tonemap import OPERATORS, TemporalAdaptation, frame_statistics, luminance, tonemap
from edgehdr.tonemap.neural import apply_parameter_grid, default_parameter_grid

H, W = 200, 320  # 64 000 pixels
ODD_ROWS = ([1, 51, 101, 151], [3, 33, 63, 93])  # read by the maximum only (and not the brightest pixels)
EVEN_ROWS = ([0, 50, 100, 150], [4, 34, 64, 94])  # read, and at even columns: in the log-average too


def _radiance(seed: int = 0) -> np.ndarray:
    """A gradient over four decades (1e-2 .. 1e2) with colour and mild texture, float32 (H, W, 3)."""
    rng = np.random.default_rng(seed)
    stops = np.linspace(-2.0, 2.0, W)[None, :] + 0.3 * np.sin(np.linspace(0, 6, H))[:, None]
    lum = 10.0 ** stops * rng.uniform(0.9, 1.1, (H, W))
    tint = np.stack([np.linspace(1.0, 0.6, W), np.full(W, 0.8), np.linspace(0.5, 1.0, W)], axis=1)[None]
    return np.ascontiguousarray(lum[..., None] * tint, np.float32)


def _neural(radiance, **_):
    return apply_parameter_grid(radiance, default_parameter_grid())


TONE_MAPPERS = [pytest.param(lambda rad, op=op: tonemap(rad, op), id=op) for op in OPERATORS]
TONE_MAPPERS.append(pytest.param(_neural, id="neural-grid"))


def _with(radiance, where, value, channel=None):
    bad = radiance.copy()
    if channel is None:
        bad[where] = value
    else:
        bad[where[0], where[1], channel] = value
    return bad


def _others(where):
    keep = np.ones((H, W), bool)
    keep[where] = False
    return keep


def _warnings(caplog, logger):
    return [r.getMessage() for r in caplog.records if r.name == logger and r.levelno == logging.WARNING]


# ------------------------------------------------------------------------------------------- tone mapping


@pytest.mark.parametrize("tmo", TONE_MAPPERS)
def test_nan_pixels_off_the_statistics_grid_leave_every_other_pixel_unchanged(tmo, caplog):
    rad = _radiance()
    clean = tmo(rad)
    with caplog.at_level(logging.WARNING, logger="edgehdr.tonemap"):
        out = tmo(_with(rad, ODD_ROWS, np.nan))
    keep = _others(ODD_ROWS)
    np.testing.assert_array_equal(out[keep], clean[keep])
    assert np.all(out[~keep] == 0)
    assert out.mean() > 20  # not a black frame
    (message,) = _warnings(caplog, "edgehdr.tonemap")
    assert "4 of 64000 pixels are non-finite" in message and "4 NaN" in message


@pytest.mark.parametrize("op", OPERATORS)
def test_nan_pixels_on_the_grid_are_left_out_of_the_statistics(op, caplog):
    rad = _radiance()
    bad = _with(rad, EVEN_ROWS, np.nan, channel=1)  # one channel is enough to make the pixel non-finite
    log_avg, lmax, _ = frame_statistics(bad)
    lum = luminance(rad).astype(np.float64)
    grid = np.zeros((H, W), bool)
    grid[::2, ::2] = True
    grid[EVEN_ROWS] = False  # the same samples, without the bad pixels
    assert log_avg == pytest.approx(math.exp(np.mean(np.log(1e-6 + lum[grid]))), rel=1e-5)
    assert lmax == pytest.approx(lum[_others(EVEN_ROWS)].max(), rel=1e-6)  # every row, the bad pixels left out
    with caplog.at_level(logging.WARNING, logger="edgehdr.tonemap"):
        out = tonemap(bad, op)
    keep = _others(EVEN_ROWS)
    # 4 of 16 000 samples fewer: the curve moves by well under one code.
    assert np.abs(out[keep].astype(int) - tonemap(rad, op)[keep]).max() <= 1
    assert np.all(out[~keep] == 0)
    assert len(_warnings(caplog, "edgehdr.tonemap")) == 1


@pytest.mark.parametrize("tmo", TONE_MAPPERS)
@pytest.mark.parametrize("where", [(10, 20), (11, 21)], ids=["read-row", "skipped-row"])
def test_an_infinite_pixel_is_white_and_does_not_blacken_the_frame(tmo, where, caplog):
    rad = _radiance()
    clean = tmo(rad)
    with caplog.at_level(logging.WARNING, logger="edgehdr.tonemap"):
        out = tmo(_with(rad, where, np.inf, channel=0))
    assert out[where].tolist() == [255, 255, 255]
    keep = _others(where)
    assert np.abs(out[keep].astype(int) - clean[keep]).max() <= 1
    (message,) = _warnings(caplog, "edgehdr.tonemap")
    assert "1 of 64000 pixels" in message and "1 +inf" in message


def test_infinity_does_not_become_the_white_point():
    rad = _radiance()
    _, lmax_clean, _ = frame_statistics(rad)
    lum = luminance(rad)
    brightest = np.unravel_index(np.argmax(lum), (H, W))
    brightest_even = np.unravel_index(np.argmax(lum[::2]), (H // 2, W))
    for where in (brightest, (2 * brightest_even[0], brightest_even[1]), (11, 21)):  # (11, 21): an odd row
        where = (int(where[0]), int(where[1]))
        _, lmax, _ = frame_statistics(_with(rad, where, np.inf))
        # the largest *finite* luminance, not inf
        assert np.isfinite(lmax) and lmax <= lmax_clean
        assert lmax == pytest.approx(lum[_others(where)].max(), rel=1e-6)


@pytest.mark.parametrize("tmo", TONE_MAPPERS)
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_a_frame_without_a_finite_pixel_is_an_error_that_gives_the_count(tmo, value):
    with pytest.raises(ValueError, match="all 64000 pixels are non-finite"):
        tmo(np.full((H, W, 3), value, np.float32))


def test_explicit_parametric_mu_needs_no_statistics_and_still_refuses_an_all_nan_frame():
    with pytest.raises(ValueError, match="all 64000 pixels"):
        tonemap(np.full((H, W, 3), np.nan, np.float32), "parametric", mu=0.5)


def test_when_every_sampled_row_is_bad_the_statistics_read_the_others(caplog):
    rad = _radiance()
    bad = rad.copy()
    bad[::2] = np.nan
    with caplog.at_level(logging.WARNING, logger="edgehdr.tonemap"):
        out = tonemap(bad, "reinhard")
    assert np.all(out[::2] == 0) and out[1::2].mean() > 20
    assert "32000 of 64000" in _warnings(caplog, "edgehdr.tonemap")[0]


def test_negative_radiance_is_black_not_an_error(caplog):
    rad = _with(_radiance(), ODD_ROWS, -1.0)
    with caplog.at_level(logging.WARNING, logger="edgehdr.tonemap"):
        out = tonemap(rad, "reinhard")
    assert np.all(out[ODD_ROWS] == 0)
    assert _warnings(caplog, "edgehdr.tonemap") == []


def test_a_bad_frame_does_not_poison_the_temporal_adaptation():
    rad = _radiance()
    plain, hit = TemporalAdaptation(), TemporalAdaptation()
    for _ in range(3):
        tonemap(rad, "reinhard", adaptation=plain)
        tonemap(rad, "reinhard", adaptation=hit)
    tonemap(_with(rad, EVEN_ROWS, np.nan), "reinhard", adaptation=hit)
    np.testing.assert_array_equal(tonemap(rad, "reinhard", adaptation=hit), tonemap(rad, "reinhard", adaptation=plain))
    state = dict(hit._state)
    with pytest.raises(ValueError, match="log_average = nan"):
        hit.update(log_average=float("nan"))
    assert hit._state == state


# ----------------------------------------------------------------------------------------------- dimming

LAYOUT = LedLayout(rows=5, cols=8, width_px=W, height_px=H, peak_luminance_cd_m2=1000.0)


def _target():
    return display_target(_radiance(), LAYOUT)


@pytest.mark.parametrize("histogram", [False, True])
def test_zone_statistics_count_non_finite_pixels_as_they_will_be_shown(histogram, caplog):
    target = _target()
    bad = _with(target, ODD_ROWS, np.nan)
    bad[7, 9, 2] = np.inf
    shown = _with(target, ODD_ROWS, 0.0)
    shown[7, 9] = 1e9  # brighter than the peak: clipped to 1, as +inf is
    with caplog.at_level(logging.WARNING, logger="edgehdr.dimming"):
        got = zone_statistics(bad, LAYOUT, histogram=histogram)
    want = zone_statistics(shown, LAYOUT, histogram=histogram)
    for g, w in zip(got, want):
        if w is not None:
            np.testing.assert_array_equal(g, w)
    assert np.all(np.isfinite(got[0])) and np.all(np.isfinite(got[1]))
    (message,) = _warnings(caplog, "edgehdr.dimming")
    assert "5 of 64000 pixels" in message and "4 NaN" in message and "1 +inf" in message


def test_an_all_nan_frame_is_an_error_not_an_all_off_backlight():
    with pytest.raises(ValueError, match="all 64000 pixels are non-finite"):
        zone_statistics(np.full((H, W, 3), np.nan, np.float32), LAYOUT)
    with pytest.raises(ValueError, match="scale must be a finite number"):
        zone_statistics(_target(), LAYOUT, scale=float("nan"))


def test_lcd_compensation_shows_nan_black_and_inf_white(caplog):
    layout = LedLayout(rows=5, cols=8, width_px=W, height_px=H, lcd_bits=10)
    target = _target()
    backlight = BacklightModel(layout).simulate(zone_statistics(target, layout)[0])
    bad = _with(target, ODD_ROWS, np.nan, channel=0)
    bad[7, 9, 1] = np.inf
    with caplog.at_level(logging.WARNING, logger="edgehdr.dimming"):
        codes = lcd_compensation(bad, backlight, layout)
    clean = lcd_compensation(target, backlight, layout)
    keep = _others(ODD_ROWS) & _others((7, 9))
    np.testing.assert_array_equal(codes[keep], clean[keep])
    assert np.all(codes[ODD_ROWS] == 0) and codes[7, 9].tolist() == [1023] * 3
    assert "5 of 64000" in _warnings(caplog, "edgehdr.dimming")[0]


def test_lcd_compensation_honours_scale_and_inverts_the_leakage():
    # Regression: the kernel's leakage factor shadowed the ``scale`` argument, so radiance
    # times scale (the runtime's call) was compensated as if unscaled.
    layout = LedLayout(rows=5, cols=8, width_px=W, height_px=H, native_contrast=10.0)
    target = np.random.default_rng(3).uniform(0, 50, (H, W, 3)).astype(np.float32)
    backlight = np.full((H, W), 100.0, np.float32)
    np.testing.assert_array_equal(lcd_compensation(target, backlight, layout, scale=2.0),
                                  lcd_compensation(2 * target, backlight, layout))
    t = np.clip((target / 100.0 - 0.1) / 0.9, 1e-12, 1.0)
    expected = np.minimum(t ** (1 / 2.2) * 255 + 0.5, 255).astype(np.uint8)
    assert np.abs(lcd_compensation(target, backlight, layout).astype(int) - expected).max() <= 1


@pytest.mark.parametrize("algorithm", ["max", "mean", "sqrt", "percentile", "optimal"])
def test_dim_frame_with_nan_gives_finite_lit_zones(algorithm, caplog):
    target = _with(_target(), EVEN_ROWS, np.nan)
    kwargs = {"optimal_kwargs": {"iterations": 5}} if algorithm == "optimal" else {}
    with caplog.at_level(logging.WARNING, logger="edgehdr.dimming"):
        result = dim_frame(target, LAYOUT, algorithm, **kwargs)
    clean = dim_frame(_target(), LAYOUT, algorithm, **kwargs)
    assert np.all(np.isfinite(result.light)) and result.zone_values.max() > 0
    assert np.abs(result.zone_values.astype(int) - clean.zone_values).max() <= 0.02 * (1 << LAYOUT.zone_bits)
    assert any("4 of 64000" in m for m in _warnings(caplog, "edgehdr.dimming"))


def test_display_target_leaves_non_finite_pixels_out_of_the_peak(caplog):
    rad = _radiance()
    bad = _with(rad, EVEN_ROWS, np.nan)
    bad[7, 9] = np.inf
    lum = luminance(rad)
    keep = _others(EVEN_ROWS) & _others((7, 9))
    assert robust_peak_luminance(bad) == pytest.approx(float(np.percentile(lum[keep], 99.9)), rel=1e-6)
    with caplog.at_level(logging.WARNING, logger="edgehdr.dimming"):
        target = display_target(bad, LAYOUT)
    assert np.all(np.isfinite(target))
    assert np.all(target[EVEN_ROWS] == 0) and np.all(target[7, 9] == LAYOUT.peak_luminance_cd_m2)
    assert "5 of 64000" in _warnings(caplog, "edgehdr.dimming")[0]
    with pytest.raises(ValueError, match="all 64000 pixels"):
        display_target(np.full((H, W, 3), np.nan, np.float32), LAYOUT)


class _FakeRunner:
    """A runner whose network answers ``answer`` (with the grid of ``layout``)."""

    def __init__(self, layout, answer):
        self.layout, self.answer, self.seen = layout, answer, None

    def describe(self):
        from edgehdr.infer.base import RunnerDescription, TensorDescription

        shape = (1, 3, 4 * self.layout.rows, 4 * self.layout.cols)
        return RunnerDescription(backend="fixed-answer", model="-", providers=(), precision="fp32", device="cpu",
                                 inputs=(TensorDescription("zone_stats", shape, "float32"),))

    def run(self, feeds):
        self.seen = feeds["zone_stats"]
        return {"light": np.asarray(self.answer, np.float32).reshape(1, 1, self.layout.rows, self.layout.cols)}


def test_neural_dimming_input_is_finite_and_a_nan_answer_lights_the_zone(caplog):
    bad = _with(_target(), EVEN_ROWS, np.nan)
    x = encode_dimming_input(bad, LAYOUT)
    assert np.all(np.isfinite(x))
    answer = np.full((LAYOUT.rows, LAYOUT.cols), 0.25, np.float32)
    answer[1, 2] = np.nan
    runner = _FakeRunner(LAYOUT, answer)
    dimmer = NeuralDimmer(runner, LAYOUT, refine_steps=0)  # the network's answer as it is handed on
    with caplog.at_level(logging.WARNING, logger="edgehdr.dimming"):
        light = dimmer(bad)
    assert dimmer.non_finite_frames == 1
    assert np.all(np.isfinite(runner.seen))
    assert light[1, 2] == 1.0 and np.all(np.delete(light.ravel(), 1 * LAYOUT.cols + 2) == np.float32(0.25))
    assert any("1 non-finite zone values of 40" in m for m in _warnings(caplog, "edgehdr.dimming"))
    # the refinement steps (the default) start from that answer and see the NaN pixels as the statistics count them
    stepped = NeuralDimmer(runner, LAYOUT)(bad)
    assert np.all(np.isfinite(stepped)) and stepped.min() >= 0 and stepped.max() <= 1


def test_non_finite_zone_light_never_reaches_the_leds_or_the_filter_state():
    light = np.full((LAYOUT.rows, LAYOUT.cols), 0.5, np.float32)
    light[0, 0] = np.nan
    with pytest.raises(ValueError, match="1 non-finite values of 40"):
        LAYOUT.to_zone_values(light)
    with pytest.raises(ValueError, match="1 non-finite values"):
        BacklightModel(LAYOUT).forward(light)
    filt = ZoneTemporalFilter()
    filt.update(np.full_like(light, 0.5))
    with pytest.raises(ValueError, match="state is unchanged"):
        filt.update(light)
    assert np.all(filt.state == 0.5)
    assert zone_light(_target(), LAYOUT).dtype == np.float32


# ------------------------------------------------------------------------------------------------ layouts


@pytest.mark.parametrize("body, message", [
    ("[drive]\nresponse = 'lut'\nlut = [0.0, nan, 1.0]\n",
     r"layout\.toml: \[drive\] lut\[1\] = nan: expected a finite number in \[0, 1\]"),
    ("[drive]\nresponse = 'lut'\nlut = [0.0, inf, 1.0]\n", r"\[drive\] lut\[1\] = inf: expected a finite number"),
    ("[drive]\nresponse = 'lut'\nlut = ['a']\n", r"\[drive\] lut\[0\] = 'a': expected a finite number"),
    ("[drive]\nresponse = 'lut'\nlut = [0.0, 0.5, true]\n", r"\[drive\] lut\[2\] = True: expected a finite number"),
    ("[drive]\nresponse = 'lut'\nlut = [0.0, 0.5]\n", r"\[drive\] lut\[1\] = 0\.5: expected 1\.0"),
    ("[drive]\nresponse = 'lut'\nlut = [1.0]\n", r"\[drive\] lut = \[1\.0\]: expected a list of at least 2"),
    ("[panel]\npeak_luminance_cd_m2 = nan\n",
     r"\[panel\] peak_luminance_cd_m2 = nan: expected a finite number 1\.\.100000"),
    ("[panel]\nnative_contrast = inf\n", r"\[panel\] native_contrast = inf: expected a finite number 10\.\.1e7"),
    ("[panel]\nlcd_gamma = -nan\n", r"\[panel\] lcd_gamma = nan: expected a finite number 1\.\.3"),
    ("[psf]\nsigma_pitch = nan\n", r"\[psf\] sigma_pitch = nan: expected a finite number 0\.1\.\.10"),
    ("[zones]\nrows = 9\n", r"\[zones\] rows is given without cols: give both"),
    ("[panel]\nheight_px = 180\n", r"\[panel\] height_px is given without width_px: give both"),
])
def test_layout_refuses_non_finite_and_malformed_numbers_by_name(tmp_path, body, message):
    path = tmp_path / "layout.toml"
    path.write_text(body)
    with pytest.raises(LayoutError, match=message):
        load_layout(path)


def test_json_layout_refuses_nan_and_infinity(tmp_path):
    for text, message in (('{"panel": {"peak_luminance_cd_m2": NaN}}', r"peak_luminance_cd_m2 = nan"),
                          ('{"drive": {"response": "lut", "lut": [0, Infinity, 1]}}', r"lut\[1\] = inf")):
        path = tmp_path / "layout.json"
        path.write_text(text)
        with pytest.raises(LayoutError, match=message):
            load_layout(path)


@pytest.mark.parametrize("kwargs, message", [
    ({"rows": None}, r"\[zones\] rows = None: expected an integer 1\.\.255"),
    ({"zone_bits": 12.5}, r"\[zones\] bits = 12\.5: expected an integer 8\.\.16"),
    ({"peak_luminance_cd_m2": float("nan")}, r"peak_luminance_cd_m2 = nan"),
    ({"psf_sigma_pitch": float("inf")}, r"sigma_pitch = inf"),
    ({"psf_model": "image", "psf_image": np.ones((5, 5)), "psf_extent_pitch": float("nan")}, r"extent_pitch = nan"),
    ({"drive_lut": np.array([0.0, np.nan, 1.0])}, r"\[drive\] lut\[1\] = nan"),
])
def test_layout_objects_validate_alike(kwargs, message):
    with pytest.raises(LayoutError, match=message):
        LedLayout(**kwargs)


def test_valid_lut_still_loads(tmp_path):
    path = tmp_path / "layout.toml"
    path.write_text("[zones]\nrows = 4\ncols = 6\n[drive]\nresponse = 'lut'\nlut = [0, 0.25, 1]\n")
    layout = load_layout(path)
    assert layout.drive_lut.dtype == np.float64 and layout.light_from_drive(0.25) == pytest.approx(0.125)


def _strict_json(text):
    def refuse(name):
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_metrics_json_is_strict_with_undefined_metrics_as_null(tmp_path):
    result = dim_frame(_target(), LAYOUT, "sqrt", simulate=True)
    result.metrics["pu_psnr_db"] = float("inf")  # identical images
    result.metrics["halo_pu"] = np.float32("nan")
    result.metrics["clipped_fraction"] = np.float32(0.125)
    write_results(tmp_path, result, LAYOUT)
    meta = _strict_json((tmp_path / "metrics.json").read_text())
    assert meta["metrics"]["pu_psnr_db"] is None and meta["metrics"]["halo_pu"] is None
    assert meta["metrics"]["clipped_fraction"] == 0.125 and meta["metrics"]["pu_ssim"] is not None
    assert meta["layout"]["rows"] == LAYOUT.rows
