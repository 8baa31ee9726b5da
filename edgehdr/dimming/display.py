"""Display mapping: a scene-referred radiance map -> the display-referred target of a dimming panel.

The stated mapping: the scene's robust peak (99.9th percentile luminance, as in the
PU21 metrics of ``edgehdr.quality``) goes to the panel's peak luminance, everything
scales linearly with it and is clipped at the peak. Display-referred inputs
(already in cd/m^2) only get clipped.

Non-finite pixels (``edgehdr.tonemap.nonfinite``) are left out of the percentile and
come out black (NaN, ``-inf``) or at the panel peak (``+inf``), with one warning on
the ``edgehdr.dimming`` logger; an image without a finite pixel raises ``ValueError``.
"""

from __future__ import annotations

import logging
import math

import numpy as np

from edgehdr.dimming.layout import LedLayout
from edgehdr.tonemap.color import luminance
from edgehdr.tonemap.nonfinite import nonfinite_pixels, report_nonfinite

__all__ = ["display_target", "robust_peak_luminance"]

log = logging.getLogger("edgehdr.dimming")


def robust_peak_luminance(image: np.ndarray, percentile: float = 99.9) -> float:
    """The ``percentile`` of the luminance of ``image`` (H, W, 3) over its finite pixels.

    Non-finite pixels are left out silently (the caller reports them); ``ValueError``
    when there is no finite pixel. A strided view (``image[::8, ::8]``) is a cheap
    estimate for video.
    """
    if not (math.isfinite(percentile) and 0.0 < percentile <= 100.0):
        raise ValueError(f"percentile must be a finite number in (0, 100], got {percentile}")
    lum = luminance(image)
    finite = np.isfinite(lum)
    if not finite.all():
        lum = lum[finite]
        if lum.size == 0:
            raise ValueError(f"all {finite.size} pixels are non-finite (NaN or +-inf): no peak to measure")
    return float(np.percentile(lum, percentile))


def display_target(image: np.ndarray, layout: LedLayout, *, referred: str = "scene",
                   peak_percentile: float = 99.9) -> np.ndarray:
    """Target luminance (H, W, 3) float32 in cd/m^2, limited to the panel's peak."""
    rgb = np.asarray(image, np.float32)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"image must be HxWx3, got shape {rgb.shape}")
    if referred not in ("scene", "display"):
        raise ValueError(f"referred must be 'scene' or 'display', got {referred!r}")
    peak = np.float32(layout.peak_luminance_cd_m2)
    black = white = None
    if not np.isfinite(rgb).all():
        black, white = nonfinite_pixels(rgb)
        report_nonfinite(log, "display target", np.count_nonzero(black), np.count_nonzero(white),
                         rgb.shape[0] * rgb.shape[1])
    if referred == "display":
        out = np.clip(rgb, 0.0, peak)
    else:
        robust = robust_peak_luminance(rgb, peak_percentile)
        if not robust > 0:
            raise ValueError("image has no positive luminance to map")
        out = np.clip(rgb * (peak / np.float32(robust)), 0.0, peak)
    if black is not None:
        out[black] = 0.0
        out[white] = peak
    return out
