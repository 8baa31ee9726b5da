"""Colour helpers for tone mapping: luminance, colour correction, sRGB encoding.

Tone mapping in EdgeHDR works on luminance only; colour is put back afterwards
with Schlick's saturation power or Mantiuk's linear correction (the tutorial's
"colour correction after luminance tone mapping"). These numpy versions are the
readable reference; the operators use fused numba kernels with the same maths.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import DTypeLike

__all__ = [
    "REC709_LUMA",
    "luminance",
    "color_correct_schlick",
    "color_correct_mantiuk",
    "srgb_encode",
    "srgb_decode",
    "COLOR_METHODS",
]

REC709_LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)
COLOR_METHODS = ("schlick", "mantiuk")


def luminance(rgb: np.ndarray, dtype: DTypeLike = np.float32) -> np.ndarray:
    """Rec. 709 / sRGB relative luminance ``Y = 0.2126 R + 0.7152 G + 0.0722 B``.

    Plain element-wise arithmetic on purpose: a matrix product would go through
    OpenBLAS, whose idle worker threads spin and starve the runtime's numba kernels.
    """
    rgb = np.asarray(rgb, dtype=dtype)
    weights = REC709_LUMA.astype(dtype)
    return rgb[..., 0] * weights[0] + rgb[..., 1] * weights[1] + rgb[..., 2] * weights[2]


def color_correct_schlick(rgb_in: np.ndarray, lum_in: np.ndarray, lum_out: np.ndarray,
                          saturation: float = 1.0) -> np.ndarray:
    """``C_out = (C_in / L_in)^s * L_out`` (Schlick 1994; tutorial eq. for colour after TMO).

    References
    ----------
    C. Schlick, "Quantization techniques for visualization of high dynamic range
    pictures," Eurographics Rendering Workshop 1994.
    """
    ratio = np.asarray(rgb_in, np.float64) / np.maximum(np.asarray(lum_in, np.float64), 1e-12)[..., None]
    return np.power(np.maximum(ratio, 0.0), saturation) * np.asarray(lum_out, np.float64)[..., None]


def color_correct_mantiuk(rgb_in: np.ndarray, lum_in: np.ndarray, lum_out: np.ndarray,
                          saturation: float = 1.0) -> np.ndarray:
    """``C_out = ((C_in / L_in - 1) s + 1) L_out`` (Mantiuk et al. 2009, eq. 4).

    Preserves luminance better than Schlick's power for ``s < 1``.

    References
    ----------
    R. Mantiuk, A. Tomaszewska and W. Heidrich, "Color correction for tone
    mapping," Computer Graphics Forum 28(2), 2009.
    """
    ratio = np.asarray(rgb_in, np.float64) / np.maximum(np.asarray(lum_in, np.float64), 1e-12)[..., None]
    return ((ratio - 1.0) * saturation + 1.0) * np.asarray(lum_out, np.float64)[..., None]


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    """IEC 61966-2-1 sRGB OETF on [0, 1] (values outside are clipped)."""
    x = np.clip(np.asarray(linear, np.float64), 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1.0 / 2.4) - 0.055)


def srgb_decode(encoded: np.ndarray) -> np.ndarray:
    """Inverse of ``srgb_encode``."""
    y = np.clip(np.asarray(encoded, np.float64), 0.0, 1.0)
    return np.where(y <= 0.04045, y / 12.92, np.power((y + 0.055) / 1.055, 2.4))
