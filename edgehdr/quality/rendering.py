"""No-reference checks of a tone-mapped rendering against its scene: colour kept, highlights kept.

TMQI (Yeganeh & Wang 2013) judges the luminance of a rendering only; these two
figures cover what it cannot see and are reported beside it:

* ``midtone_saturation`` — mean HSV saturation of the rendering over the scene's
  mid-tone pixels (the inter-quartile range of scene log luminance), where colour
  is judged best; a rendering that drains chroma scores low.
* ``highlight_clipping`` — the fraction of the scene's brightest 2 % of pixels whose
  brightest channel is at code 255: a bright window or sky washed out to white.

``colourfulness`` is Hasler & Süsstrunk's (2003) image colourfulness ``M``.
"""

from __future__ import annotations

import numpy as np

from edgehdr.tonemap.color import luminance

__all__ = ["MID_PERCENTILES", "HIGHLIGHT_PERCENTILE", "tone_masks", "midtone_saturation", "highlight_clipping",
           "colourfulness"]

MID_PERCENTILES = (25.0, 75.0)
HIGHLIGHT_PERCENTILE = 98.0


def _check(radiance: np.ndarray, sdr: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    radiance = np.asarray(radiance)
    sdr = np.asarray(sdr)
    if radiance.ndim != 3 or radiance.shape[2] != 3:
        raise ValueError(f"radiance must be (H, W, 3), got {radiance.shape}")
    if sdr.shape != radiance.shape or sdr.dtype != np.uint8:
        raise ValueError(f"the rendering must be uint8 {radiance.shape}, got {sdr.dtype} {sdr.shape}")
    return radiance, sdr


def tone_masks(radiance: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(mid, highlight)`` boolean masks (H, W) from the scene's log-luminance percentiles."""
    log_lum = np.log2(np.maximum(luminance(radiance), 1e-9))
    lo, hi, top = np.percentile(log_lum, [*MID_PERCENTILES, HIGHLIGHT_PERCENTILE])
    return (log_lum >= lo) & (log_lum <= hi), log_lum >= top


def _hsv_saturation(sdr: np.ndarray) -> np.ndarray:
    mx = sdr.max(axis=2).astype(np.float32)
    mn = sdr.min(axis=2).astype(np.float32)
    return np.where(mx > 0, (mx - mn) / np.maximum(mx, 1.0), 0.0)


def midtone_saturation(radiance: np.ndarray, sdr: np.ndarray) -> float:
    """Mean HSV saturation (0..1) of ``sdr`` over the scene's mid-tone pixels."""
    radiance, sdr = _check(radiance, sdr)
    mid, _ = tone_masks(radiance)
    return float(_hsv_saturation(sdr)[mid].mean())


def highlight_clipping(radiance: np.ndarray, sdr: np.ndarray) -> float:
    """Fraction (0..1) of the scene's brightest 2 % of pixels shown with a channel at code 255."""
    radiance, sdr = _check(radiance, sdr)
    _, high = tone_masks(radiance)
    return float((sdr.max(axis=2)[high] == 255).mean())


def colourfulness(sdr: np.ndarray) -> float:
    """Hasler & Süsstrunk's colourfulness ``M = sigma_rgyb + 0.3 mu_rgyb`` of an sRGB uint8 image.

    References
    ----------
    D. Hasler and S. Süsstrunk, "Measuring colourfulness in natural images," Proc. SPIE 5007, 2003.
    """
    rgb = np.asarray(sdr, np.float64)
    rg = rgb[..., 0] - rgb[..., 1]
    yb = 0.5 * (rgb[..., 0] + rgb[..., 1]) - rgb[..., 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))
