"""Quality metrics against their published formulas, constants and closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgehdr.quality import (
    PU21_PARAMS,
    mu_law,
    psnr,
    psnr_mu,
    pu21_decode,
    pu21_encode,
    pu21_psnr,
    pu21_ssim,
    ssim,
    statistical_naturalness,
    tmqi,
)


def test_pu21_published_anchor_points():
    # banding_glare: 0 at the 0.005 cd/m^2 floor, ~256 at 100 cd/m^2 (why PU-PSNR uses peak 256).
    assert pu21_encode(0.005) == pytest.approx(0.0, abs=1e-6)
    assert pu21_encode(100.0) == pytest.approx(256.4, abs=0.1)
    assert pu21_encode(1e6) == pu21_encode(1e4)  # clamped at 10,000 cd/m^2
    for variant in PU21_PARAMS:
        y = np.logspace(np.log10(0.005), 4, 500)
        v = pu21_encode(y, variant)
        assert np.all(np.diff(v) > 0), variant
        np.testing.assert_allclose(pu21_decode(v, variant), y, rtol=1e-6)


def test_psnr_closed_form():
    ref = np.ones((10, 10, 3))
    assert psnr(ref + 0.1, ref, peak=1.0) == pytest.approx(20.0)
    assert psnr(ref, ref) == math.inf


def test_mu_law_closed_form():
    x = np.array([0.0, 0.25, 1.0, 3.0])
    expected = np.log1p(5000 * np.minimum(x, 1.0)) / np.log1p(5000)
    np.testing.assert_allclose(mu_law(x), expected)
    ref = np.full((8, 8, 3), 2.0)
    test = ref.copy()
    test[0, 0, 0] = 1.0
    t = math.log1p(5000 * 0.5) / math.log1p(5000)
    assert psnr_mu(test, ref, peak_percentile=100) == pytest.approx(10 * math.log10(192 / (1 - t) ** 2))


def test_pu21_psnr_scale_handling_and_mask():
    ref = np.full((20, 20, 3), 10.0)
    test = ref * 1.1
    scale = 4000.0 / 10.0
    a, b = pu21_encode(test * scale), pu21_encode(ref * scale)
    assert pu21_psnr(test, ref) == pytest.approx(10 * math.log10(256**2 / np.mean((a - b) ** 2)))
    assert pu21_psnr(test, ref, scale_cd_m2=1.0) == pytest.approx(
        10 * math.log10(256**2 / np.mean((pu21_encode(11.0) - pu21_encode(10.0)) ** 2)))
    mask = np.zeros((20, 20), bool)
    test[:10] = ref[:10]
    mask[:10] = True
    assert pu21_psnr(test, ref, mask=mask) == math.inf
    with pytest.raises(ValueError, match="mask selects no pixel"):
        pu21_psnr(test, ref, mask=np.zeros((20, 20), bool))


def test_ssim_closed_forms(rng):
    img = rng.random((40, 40)) * 255
    assert ssim(img, img, data_range=255) == pytest.approx(1.0)
    a, b = np.full((40, 40), 100.0), np.full((40, 40), 150.0)
    c1 = (0.01 * 255) ** 2
    assert ssim(a, b, data_range=255) == pytest.approx((2 * 100 * 150 + c1) / (100**2 + 150**2 + c1))
    slightly = ssim(img + rng.normal(0, 10, img.shape), img, data_range=255)
    badly = ssim(img + rng.normal(0, 60, img.shape), img, data_range=255)
    assert 1.0 > slightly > badly
    hdr = rng.uniform(0.1, 100, (40, 40, 3))
    assert pu21_ssim(hdr, hdr) == pytest.approx(1.0)


def _texture(mean, block_std, size=(176, 176)):
    # A +-d checkerboard has sample std d * sqrt(n / (n - 1)) in each 11x11 block (n = 121).
    yy, xx = np.mgrid[: size[0], : size[1]]
    d = block_std / math.sqrt(121 / 120)
    return mean + d * np.where((yy + xx) % 2 == 0, 1.0, -1.0), d


def test_tmqi_naturalness_is_one_at_the_published_modes():
    mode = (4.4 - 1) / (4.4 + 10.1 - 2)
    img, _ = _texture(115.94, mode * 64.29)
    assert statistical_naturalness(img) == pytest.approx(1.0, rel=1e-6)
    flat = np.full((176, 176), 115.94)
    assert statistical_naturalness(flat) == pytest.approx(0.0, abs=1e-12)
    dark, _ = _texture(115.94 - 27.99, mode * 64.29)
    assert statistical_naturalness(dark) == pytest.approx(math.exp(-0.5), rel=1e-6)


def test_tmqi_ranks_structure_loss_and_combines_with_published_weights(scene_factory):
    from edgehdr.tonemap import reinhard_global

    hdr = scene_factory(0, 192, 256).radiance
    good = reinhard_global(hdr)
    import cv2

    blurred = cv2.GaussianBlur(good, (0, 0), 3)
    r_good, r_blur = tmqi(hdr, good), tmqi(hdr, blurred)
    assert 0 < r_good.Q <= 1 and 0 <= r_good.N <= 1
    assert r_good.S > r_blur.S
    assert r_good.Q == pytest.approx(0.8012 * r_good.S**0.3046 + 0.1988 * r_good.N**0.7088)
    with pytest.raises(ValueError, match="normalised"):
        tmqi(hdr, good / 255.0)


# ------------------------------------------------------------------ rendering checks (colour, highlights)
def test_rendering_checks_closed_forms():
    from edgehdr.quality import colourfulness, highlight_clipping, midtone_saturation

    rng = np.random.default_rng(3)
    lum = np.exp2(rng.uniform(-8, 8, (64, 96))).astype(np.float32)
    rad = np.repeat(lum[..., None], 3, axis=2) * np.array([1.0, 0.5, 0.25], np.float32)
    # A constant-hue rendering with max code 200 and min code 50: HSV saturation 150/200 everywhere.
    sdr = np.empty(rad.shape, np.uint8)
    sdr[...] = (200, 120, 50)
    assert midtone_saturation(rad, sdr) == pytest.approx(150 / 200, abs=1e-6)
    grey = np.full(rad.shape, 128, np.uint8)
    assert midtone_saturation(rad, grey) == 0.0 and colourfulness(grey) == pytest.approx(0.0, abs=1e-12)
    # Clip exactly the brightest 2 % (and darker pixels, which must not count).
    log_lum = np.log2(0.2126 * rad[..., 0] + 0.7152 * rad[..., 1] + 0.0722 * rad[..., 2])
    top = log_lum >= np.percentile(log_lum, 98.0)
    sdr[...] = 100
    sdr[top, 0] = 255
    assert highlight_clipping(rad, sdr) == 1.0
    sdr[top, 0] = 254
    sdr[~top] = 255
    assert highlight_clipping(rad, sdr) == 0.0
    # Colourfulness of a two-colour image, Hasler & Süsstrunk's formula by hand.
    two = np.zeros((2, 1, 3), np.uint8)
    two[0, 0], two[1, 0] = (255, 0, 0), (0, 0, 255)
    rg, yb = np.array([255.0, 0.0]), np.array([127.5, -255.0])
    assert colourfulness(two) == pytest.approx(math.hypot(rg.std(), yb.std()) + 0.3 * math.hypot(rg.mean(), yb.mean()))
    with pytest.raises(ValueError, match="uint8"):
        midtone_saturation(rad, sdr.astype(np.float32))


def test_scene_correlations_separate_within_scene_from_pooled_ranking():
    from edgehdr.quality.correlation import scene_correlations

    label = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.5, 0.4])
    # Right order inside each of the two 3-rendering scenes, but the first scene scored above the second:
    # within-scene Spearman 1, pooled clearly below. The last two renderings form a scene too small to rank.
    pred = np.array([0.91, 0.92, 0.93, 0.11, 0.12, 0.13, 0.2, 0.1])
    scene = np.array([0, 0, 0, 1, 1, 1, 2, 2])
    c = scene_correlations(pred, label, scene)
    assert c["within_srocc_mean"] == 1.0 and c["within_srocc_min"] == 1.0
    assert c["srocc"] < 0.0 and c["renderings"] == 8 and c["scenes"] == 3
    assert c["rmse"] == pytest.approx(float(np.sqrt(np.mean((pred - label) ** 2))))
    assert math.isnan(scene_correlations(pred[:2], label[:2], scene[:2])["within_srocc_mean"])


# ------------------------------------------------------------------ input checks (regressions from the review)


@pytest.mark.parametrize("scale", [0.0, -50.0, math.nan, math.inf])
def test_pu21_metrics_refuse_a_scale_that_is_not_positive(scale):
    """scale_cd_m2 = 0 put both images at the PU21 floor: inf dB and SSIM 1.0 for any pair."""
    ref = np.full((16, 16, 3), 10.0)
    ref[4:8] = 50.0
    test = ref * 1.3
    with pytest.raises(ValueError, match="scale_cd_m2 must be a finite number > 0"):
        pu21_psnr(test, ref, scale_cd_m2=scale)
    with pytest.raises(ValueError, match="scale_cd_m2 must be a finite number > 0"):
        pu21_ssim(test, ref, scale_cd_m2=scale)
    with pytest.raises(ValueError, match="peak_cd_m2 must be a finite number > 0"):
        pu21_psnr(test, ref, peak_cd_m2=scale if scale != math.inf else -1.0)


def test_psnr_refuses_a_peak_that_is_not_positive():
    """A reference whose maximum is <= 0 gave -inf dB or a negative, meaningless PSNR."""
    test = np.full((8, 8, 3), 0.5)
    with pytest.raises(ValueError, match="reference maximum is 0.0: no positive peak"):
        psnr(test, np.zeros_like(test))
    with pytest.raises(ValueError, match="reference maximum is -0.5"):
        psnr(test, -test)
    with pytest.raises(ValueError, match="peak must be a finite number > 0, got -1.0"):
        psnr(test, test * 2, peak=-1.0)
    # an explicit peak still scores an all-black reference: MSE 0.25, peak 1 -> 10 log10(4)
    assert psnr(test, np.zeros_like(test), peak=1.0) == pytest.approx(10 * math.log10(4.0))


@pytest.mark.parametrize("percentile", [0.0, -5.0, 100.5, 250.0, math.nan])
def test_peak_percentile_must_be_in_0_100(percentile):
    ref = np.full((8, 8, 3), 2.0)
    with pytest.raises(ValueError, match=r"peak_percentile must be in \(0, 100\]"):
        psnr_mu(ref * 1.1, ref, peak_percentile=percentile)
    with pytest.raises(ValueError, match=r"peak_percentile must be in \(0, 100\]"):
        pu21_psnr(ref * 1.1, ref, peak_percentile=percentile)
    assert psnr_mu(ref * 1.1, ref, peak_percentile=100.0) == psnr_mu(ref * 1.1, ref, peak_percentile=50.0)
