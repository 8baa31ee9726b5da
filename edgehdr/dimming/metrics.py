"""Metrics of a local-dimming result: PU21 fidelity, clipping, halo, power.

Target and displayed images are absolute luminance (cd/m^2) with the target
limited to the panel's peak, so PU21 is applied without rescaling.
"""

from __future__ import annotations

import cv2
import numpy as np

from edgehdr.dimming.layout import LedLayout
from edgehdr.quality import pu21_psnr, pu21_ssim
from edgehdr.quality.pu21 import pu21_encode
from edgehdr.tonemap.color import luminance

__all__ = ["dimming_metrics", "halo_measure", "clipped_fraction", "power_fraction"]


def clipped_fraction(target_cd_m2: np.ndarray, displayed_cd_m2: np.ndarray, *, tolerance: float = 0.02) -> float:
    """Fraction of pixels where some channel is shown more than ``tolerance`` below the target."""
    t = np.asarray(target_cd_m2, np.float32)
    d = np.asarray(displayed_cd_m2, np.float32)
    return float(np.mean(np.any(d < t * (1.0 - tolerance) - 1e-3, axis=2)))


def halo_measure(target_cd_m2: np.ndarray, displayed_cd_m2: np.ndarray, layout: LedLayout, *,
                 bright_fraction: float = 0.25, dark_fraction: float = 0.01,
                 reach_pitch: float = 1.5) -> float | None:
    """Mean PU21 rise of dark pixels near bright objects (PU units; ~1 per just-noticeable step).

    Bright pixels: luminance above ``bright_fraction`` of the peak. The ring: pixels
    within ``reach_pitch`` zone pitches of them whose target is below
    ``dark_fraction`` of the peak. Returns None when the image has no such ring.
    """
    lt = luminance(np.asarray(target_cd_m2, np.float32))
    ld = luminance(np.asarray(displayed_cd_m2, np.float32))
    peak = layout.peak_luminance_cd_m2
    bright = (lt > bright_fraction * peak).astype(np.uint8)
    if not bright.any():
        return None
    ry = max(1, int(round(reach_pitch * layout.pitch_px[0])))
    rx = max(1, int(round(reach_pitch * layout.pitch_px[1])))
    near = cv2.dilate(bright, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * rx + 1, 2 * ry + 1))) > 0
    ring = near & (lt < dark_fraction * peak)
    if not ring.any():
        return None
    return float(np.mean(pu21_encode(ld[ring]) - pu21_encode(lt[ring])))


def power_fraction(light: np.ndarray, layout: LedLayout) -> float:
    """Backlight power relative to every LED at full drive (drive values summed: the electrical power). With a
    drive LUT it differs from the mean light fraction, the unit of the power budget (``mean_light`` in the
    metrics); with linear drive the two are equal."""
    return float(np.mean(layout.drive_from_light(light)))


def dimming_metrics(target_cd_m2: np.ndarray, displayed_cd_m2: np.ndarray, light: np.ndarray,
                    layout: LedLayout) -> dict:
    """PU-PSNR, PU-SSIM, clipped fraction, halo (PU units) and power of one dimming result."""
    target = np.minimum(np.asarray(target_cd_m2, np.float32), np.float32(layout.peak_luminance_cd_m2))
    displayed = np.asarray(displayed_cd_m2, np.float32)
    return {
        "pu_psnr_db": pu21_psnr(displayed, target, scale_cd_m2=1.0),
        "pu_ssim": pu21_ssim(displayed, target, scale_cd_m2=1.0),
        "clipped_fraction": clipped_fraction(target, displayed),
        "halo_pu": halo_measure(target, displayed, layout),
        "power": power_fraction(light, layout),
        "mean_light": float(np.mean(np.clip(light, 0.0, 1.0))),
    }
