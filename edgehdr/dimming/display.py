"""Display mapping: a scene-referred radiance map -> the display-referred target of a dimming panel.

The stated mapping: the scene's robust peak (99.9th percentile luminance, as in the
PU21 metrics of ``edgehdr.quality``) goes to the panel's peak luminance, everything
scales linearly with it and is clipped at the peak. Display-referred inputs
(already in cd/m^2) only get clipped.
"""

from __future__ import annotations

import numpy as np

from edgehdr.dimming.layout import LedLayout
from edgehdr.tonemap.color import luminance

__all__ = ["display_target"]


def display_target(image: np.ndarray, layout: LedLayout, *, referred: str = "scene",
                   peak_percentile: float = 99.9) -> np.ndarray:
    """Target luminance (H, W, 3) float32 in cd/m^2, limited to the panel's peak."""
    rgb = np.asarray(image, np.float32)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"image must be HxWx3, got shape {rgb.shape}")
    peak = np.float32(layout.peak_luminance_cd_m2)
    if referred == "display":
        return np.clip(rgb, 0.0, peak)
    if referred != "scene":
        raise ValueError(f"referred must be 'scene' or 'display', got {referred!r}")
    robust = float(np.percentile(luminance(rgb), peak_percentile))
    if not robust > 0:
        raise ValueError("image has no positive luminance to map")
    return np.clip(rgb * (peak / np.float32(robust)), 0.0, peak)
