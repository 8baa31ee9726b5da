"""Full-reference HDR quality metrics: linear PSNR, PSNR-mu, PU21-PSNR and PU21-SSIM, SSIM.

How merges, dimming results and neural stages are scored against ground truth.
Relative (scene-referred) images are mapped to absolute luminance for PU21 by a
display mapping: the reference's robust peak (its ``peak_percentile`` luminance,
99.9 by default; 100 gives the PU21 authors' "maximum to display peak") is
mapped to ``peak_cd_m2``, and the test image is scaled by the same factor. A
scene with a tiny sun would otherwise push everything else below the PU21 range.
Calibrated images pass ``scale_cd_m2`` instead.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from numpy.typing import ArrayLike

from edgehdr.quality.pu21 import pu21_encode
from edgehdr.tonemap.color import luminance

__all__ = [
    "psnr",
    "robust_peak",
    "mu_law",
    "psnr_mu",
    "pu21_psnr",
    "pu21_ssim",
    "ssim",
    "absolute_scale",
    "MU_LAW_MU",
]

MU_LAW_MU = 5000.0


def _pair(test: ArrayLike, reference: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    test = np.asarray(test, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if test.shape != reference.shape:
        raise ValueError(f"test {test.shape} and reference {reference.shape} differ in shape")
    if not (np.all(np.isfinite(test)) and np.all(np.isfinite(reference))):
        raise ValueError("images contain NaN or infinite values")
    return test, reference


def _psnr_from_mse(mse: float, peak: float) -> float:
    return float("inf") if mse == 0 else float(10.0 * np.log10(peak * peak / mse))


def _require_positive(name: str, value: float) -> float:
    """``value`` as a float; ``ValueError`` naming ``name`` unless it is a finite number > 0."""
    v = float(value)
    if not (math.isfinite(v) and v > 0):
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")
    return v


def _require_percentile(peak_percentile: float) -> float:
    p = float(peak_percentile)
    if not 0.0 < p <= 100.0:
        raise ValueError(f"peak_percentile must be in (0, 100], got {peak_percentile!r}")
    return p


def psnr(test: ArrayLike, reference: ArrayLike, *, peak: float | None = None) -> float:
    """PSNR in dB with ``peak`` defaulting to the reference maximum (linear HDR PSNR).

    ``peak`` must be finite and > 0: a reference whose maximum is not (an all-black or negative
    image) raises ``ValueError``; pass ``peak`` explicitly to score against it.
    """
    test, reference = _pair(test, reference)
    if peak is None:
        peak = float(reference.max())
        if not peak > 0:
            raise ValueError(f"reference maximum is {peak}: no positive peak for the PSNR; pass peak=")
    return _psnr_from_mse(float(np.mean((test - reference) ** 2)), _require_positive("peak", peak))


def robust_peak(reference: np.ndarray, percentile: float) -> float:
    """The ``percentile`` luminance of ``reference`` (its maximum at 100): the normalising peak of the
    mu-law and PU21 comparisons, robust to a few hot pixels. ``percentile`` in (0, 100]. Raises
    ``ValueError`` if the peak is not positive."""
    percentile = _require_percentile(percentile)
    lum = luminance(reference, np.float64) if reference.ndim == 3 else reference
    peak = float(np.percentile(lum, percentile)) if percentile < 100 else float(lum.max())
    if not peak > 0:
        raise ValueError("reference has no positive luminance to normalise by")
    return peak


def mu_law(hdr: ArrayLike, *, mu: float = MU_LAW_MU, normaliser: float = 1.0) -> np.ndarray:
    """``T(H) = log(1 + mu H) / log(1 + mu)`` with ``H = hdr / normaliser`` clipped to [0, 1].

    References
    ----------
    N. K. Kalantari and R. Ramamoorthi, "Deep high dynamic range imaging of
    dynamic scenes," ACM TOG 36(4), 2017 (mu = 5000), as in the tutorial.
    """
    h = np.clip(np.asarray(hdr, dtype=np.float64) / normaliser, 0.0, 1.0)
    return np.log1p(mu * h) / np.log1p(mu)


def psnr_mu(test: ArrayLike, reference: ArrayLike, *, mu: float = MU_LAW_MU, peak_percentile: float = 99.9) -> float:
    """PSNR of mu-law tone-mapped images (peak 1); both normalised by the reference's robust peak."""
    test, reference = _pair(test, reference)
    norm = robust_peak(reference, peak_percentile)
    a = mu_law(test, mu=mu, normaliser=norm)
    b = mu_law(reference, mu=mu, normaliser=norm)
    return _psnr_from_mse(float(np.mean((a - b) ** 2)), 1.0)


def absolute_scale(reference: ArrayLike, *, peak_cd_m2: float = 4000.0, peak_percentile: float = 99.9) -> float:
    """Factor mapping a relative reference's robust peak luminance to ``peak_cd_m2`` (> 0)."""
    peak = _require_positive("peak_cd_m2", peak_cd_m2)
    return peak / robust_peak(np.asarray(reference, dtype=np.float64), peak_percentile)


def _pu_pair(test: ArrayLike, reference: ArrayLike, scale_cd_m2: float | None, peak_cd_m2: float,
             peak_percentile: float, variant: str) -> tuple[np.ndarray, np.ndarray]:
    test, reference = _pair(test, reference)
    scale = _require_positive("scale_cd_m2", scale_cd_m2) if scale_cd_m2 is not None else absolute_scale(
        reference, peak_cd_m2=peak_cd_m2, peak_percentile=peak_percentile)
    return pu21_encode(test * scale, variant), pu21_encode(reference * scale, variant)


def pu21_psnr(test: ArrayLike, reference: ArrayLike, *, scale_cd_m2: float | None = None, peak_cd_m2: float = 4000.0,
              peak_percentile: float = 99.9, variant: str = "banding_glare", mask: ArrayLike | None = None) -> float:
    """PSNR of PU21-encoded values with peak 256 (the PU value of ~100 cd/m^2), per colour channel.

    ``scale_cd_m2`` (finite, > 0) maps the images to cd/m^2; without it the reference's
    ``peak_percentile`` luminance (in (0, 100]) maps to ``peak_cd_m2`` (> 0).
    ``mask`` (H, W) bool restricts the error to a region (e.g. moving objects).
    """
    a, b = _pu_pair(test, reference, scale_cd_m2, peak_cd_m2, peak_percentile, variant)
    err = (a - b) ** 2
    if mask is not None:
        mask = np.asarray(mask, bool)
        if mask.shape != err.shape[:2]:
            raise ValueError(f"mask shape {mask.shape} does not match image {err.shape[:2]}")
        if not mask.any():
            raise ValueError("mask selects no pixel")
        err = err[mask]
    return _psnr_from_mse(float(np.mean(err)), 256.0)


def ssim(test: ArrayLike, reference: ArrayLike, *, data_range: float) -> float:
    """Mean SSIM of two single-channel images (Wang et al. 2004).

    Gaussian window 11x11, sigma 1.5, K1 = 0.01, K2 = 0.03; statistics with
    reflected borders, the mean taken away from a 5-pixel border.

    References
    ----------
    Z. Wang, A. C. Bovik, H. R. Sheikh and E. P. Simoncelli, "Image quality
    assessment: from error visibility to structural similarity," IEEE TIP 13(4), 2004.
    """
    x, y = _pair(test, reference)
    if x.ndim != 2:
        raise ValueError(f"ssim expects single-channel images, got shape {x.shape}")
    c1 = (0.01 * data_range) ** 2
    c2 = (0.03 * data_range) ** 2

    def blur(img: np.ndarray) -> np.ndarray:
        return cv2.GaussianBlur(img, (11, 11), 1.5, borderType=cv2.BORDER_REFLECT)

    mx, my = blur(x), blur(y)
    sxx = blur(x * x) - mx * mx
    syy = blur(y * y) - my * my
    sxy = blur(x * y) - mx * my
    smap = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    pad = 5 if min(x.shape) > 20 else 0
    return float(smap[pad : smap.shape[0] - pad or None, pad : smap.shape[1] - pad or None].mean())


def pu21_ssim(test: ArrayLike, reference: ArrayLike, *, scale_cd_m2: float | None = None, peak_cd_m2: float = 4000.0,
              peak_percentile: float = 99.9, variant: str = "banding_glare") -> float:
    """SSIM of PU21-encoded luminance with data range 256; ``scale_cd_m2``, ``peak_cd_m2`` and
    ``peak_percentile`` as ``pu21_psnr``'s."""
    test, reference = _pair(test, reference)
    lt = luminance(test, np.float64) if test.ndim == 3 else test
    lr = luminance(reference, np.float64) if reference.ndim == 3 else reference
    a, b = _pu_pair(lt, lr, scale_cd_m2 if scale_cd_m2 is not None else absolute_scale(
        reference, peak_cd_m2=peak_cd_m2, peak_percentile=peak_percentile), peak_cd_m2, peak_percentile, variant)
    return ssim(a, b, data_range=256.0)
