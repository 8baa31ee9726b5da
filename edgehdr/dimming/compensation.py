"""LCD compensation and the dual-modulation display model.

The LCD in front of the backlight ``B`` transmits ``leak + (1 - leak) T`` of it, so
showing a target ``Y`` needs ``T = (Y / B - leak) / (1 - leak)``, clipped to [0, 1],
and the LCD code ``(2^bits - 1) T^(1 / gamma)``. The displayed image is then
``B (leak + (1 - leak) T)``: exact where the backlight suffices, clipped where it
is too dim (``Y > B``), and raised where it is too bright for the LCD to block
(``Y < leak B``: the halo of local dimming). One fused numba pass computes the
codes per row with vectorisable ``log2``/``exp2``.

A non-finite target pixel (``edgehdr.tonemap.nonfinite``) gets code 0 (NaN, ``-inf``)
or full transmittance (``+inf``), counted in one warning per call.
"""

from __future__ import annotations

import logging
import math

import cv2
import numba
import numpy as np

from edgehdr.dimming.layout import LedLayout
from edgehdr.fastmath import exp2_bits, log2_from_bits
from edgehdr.tonemap.guided import bilinear_taps, widen_maps
from edgehdr.tonemap.nonfinite import (
    any_nonfinite,
    paint_nonfinite_row,
    report_nonfinite,
)

__all__ = ["lcd_compensation", "simulate_display", "ideal_display", "full_resolution_backlight"]

log = logging.getLogger("edgehdr.dimming")


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _compensation_kernel(target, bits, scale, wide, y0s, y1s, fys, leak, inv_gamma, top, out, row_black, row_white):
    # ``wide``: the backlight's rows at the panel's width (``widen_maps``); each pixel row blends the two rows
    # around it (bilinear, half-pixel centres), so a working-resolution backlight is never materialised at
    # full resolution (a full-resolution one comes with y0 = y1 = y).
    h, w, _ = target.shape
    inv_open = np.float32(1.0) / (np.float32(1.0) - leak)
    for y in numba.prange(h):
        src = target[y].reshape(-1)
        b0, b1, fy = wide[y0s[y]], wide[y1s[y]], fys[y]
        inv_b_row = np.empty(w, np.float32)
        for x in range(w):
            inv_b_row[x] = scale / max(b0[x] + fy * (b1[x] - b0[x]), np.float32(1e-9))
        t_row = np.empty(3 * w, np.float32)
        for x in range(w):
            inv_b = inv_b_row[x]
            for c in range(3):
                t = (src[3 * x + c] * inv_b - leak) * inv_open
                t_row[3 * x + c] = min(max(t, np.float32(1e-12)), np.float32(1.0))
        row_bits = bits[y]
        fix_row = any_nonfinite(row_bits)  # while the row is in cache; fixed up at the end
        t_bits = t_row.view(np.int32)
        code_bits = np.empty(3 * w, np.int32)
        for j in range(3 * w):
            v = inv_gamma * log2_from_bits(t_bits[j])
            code_bits[j] = exp2_bits(max(v, np.float32(-126.0)))
        enc = code_bits.view(np.float32)
        dst = out[y].reshape(-1)
        for j in range(3 * w):
            dst[j] = min(enc[j] * top + np.float32(0.5), top)
        black = white = 0
        if fix_row:
            black, white = paint_nonfinite_row(dst, row_bits, w, top)
        row_black[y] = black
        row_white[y] = white
    return out


def _panel_rows(backlight: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                       np.ndarray]:
    """The backlight's rows at the panel width and each panel row's two rows and weight (``BacklightModel.
    full_resolution``'s bilinear interpolation, half-pixel centres; the identity at full resolution)."""
    if backlight.shape == (height, width):
        rows = np.arange(height, dtype=np.int64)
        return backlight, rows, rows, np.zeros(height, np.float32)
    return (np.ascontiguousarray(widen_maps(backlight[None], width)[0]), *bilinear_taps(backlight.shape[0], height))


def _checked_backlight(backlight_cd_m2: np.ndarray, height: int, width: int) -> np.ndarray:
    """The backlight as contiguous float32 (rows, cols) at the panel's ``height`` x ``width`` or lower, else
    ``ValueError``."""
    backlight = np.ascontiguousarray(backlight_cd_m2, dtype=np.float32)
    if backlight.ndim != 2 or min(backlight.shape) < 1 or backlight.shape[0] > height or backlight.shape[1] > width:
        raise ValueError(f"backlight {backlight.shape} and the {height}x{width} image do not match: the backlight "
                         "must be (rows, cols) at the image's resolution or a lower resolution")
    return backlight


def full_resolution_backlight(backlight_cd_m2: np.ndarray, height: int, width: int) -> np.ndarray:
    """A backlight at the panel's (``height``, ``width``), interpolated bilinearly from a working resolution
    (OpenCV, as ``BacklightModel.full_resolution``); returned as is when it is already that size."""
    backlight = _checked_backlight(backlight_cd_m2, height, width)
    if backlight.shape == (height, width):
        return backlight
    return cv2.resize(backlight, (width, height), interpolation=cv2.INTER_LINEAR)


def lcd_compensation(target_cd_m2: np.ndarray, backlight_cd_m2: np.ndarray, layout: LedLayout,
                     out: np.ndarray | None = None, *, scale: float = 1.0) -> np.ndarray:
    """LCD codes (H, W, 3), uint8 for 8-bit panels, uint16 for 10-bit, that best show the target.

    ``scale`` multiplies the target first (radiance times its display scale); it must be
    finite and positive. The backlight is taken as finite (``BacklightModel`` output), at the
    target's resolution or at any lower one, e.g. ``BacklightModel.forward``'s working
    resolution: then it is interpolated bilinearly inside the pass, as
    ``BacklightModel.full_resolution`` would (1080p: saves the 8 MB full-resolution backlight
    and its write and read).
    """
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0, got {scale}")
    target = np.ascontiguousarray(target_cd_m2, dtype=np.float32)
    if target.ndim != 3 or target.shape[2] != 3:
        raise ValueError(f"target must be an (H, W, 3) image, got shape {target.shape}")
    backlight = _checked_backlight(backlight_cd_m2, *target.shape[:2])
    dtype = np.uint8 if layout.lcd_bits == 8 else np.uint16
    if out is None:
        out = np.empty(target.shape, dtype)
    elif out.shape != target.shape or out.dtype != dtype:
        raise ValueError(f"out must be a {target.shape} {np.dtype(dtype).name} array")
    top = np.float32((1 << layout.lcd_bits) - 1)
    h, w = target.shape[:2]
    row_black = np.empty(h, np.int64)
    row_white = np.empty(h, np.int64)
    _compensation_kernel(target, target.reshape(h, -1).view(np.int32), np.float32(scale),
                         *_panel_rows(backlight, h, w), np.float32(layout.leakage),
                         np.float32(1.0 / layout.lcd_gamma), top, out, row_black, row_white)
    report_nonfinite(log, "LCD compensation", row_black.sum(), row_white.sum(), h * w)
    return out


def simulate_display(lcd_codes: np.ndarray, backlight_cd_m2: np.ndarray, layout: LedLayout) -> np.ndarray:
    """Displayed luminance (H, W, 3) cd/m^2 = B (leak + (1 - leak) (code / top)^gamma).

    The backlight at the panel's resolution or a working one (``full_resolution_backlight``), as for
    ``lcd_compensation``.
    """
    top = float((1 << layout.lcd_bits) - 1)
    codes = np.asarray(lcd_codes)
    t = np.power(codes.astype(np.float32) / np.float32(top), np.float32(layout.lcd_gamma))
    leak = np.float32(layout.leakage)
    b = full_resolution_backlight(backlight_cd_m2, *codes.shape[:2])
    return (b[..., None] * (leak + (1 - leak) * t)).astype(np.float32)


def ideal_display(target_cd_m2: np.ndarray, backlight_cd_m2: np.ndarray, layout: LedLayout) -> np.ndarray:
    """The displayed image without LCD quantisation: ``clip(Y, leak B, B)`` per channel (any backlight resolution,
    as for ``simulate_display``)."""
    target = np.asarray(target_cd_m2)
    b = full_resolution_backlight(backlight_cd_m2, *target.shape[:2])[..., None]
    return np.clip(np.asarray(target_cd_m2, np.float32), np.float32(layout.leakage) * b, b)
