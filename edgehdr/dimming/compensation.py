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

import numba
import numpy as np

from edgehdr.dimming.layout import LedLayout
from edgehdr.fastmath import exp2_bits, log2_from_bits
from edgehdr.tonemap.nonfinite import (
    any_nonfinite,
    paint_nonfinite_row,
    report_nonfinite,
)

__all__ = ["lcd_compensation", "simulate_display", "ideal_display"]

log = logging.getLogger("edgehdr.dimming")


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _compensation_kernel(target, bits, scale, backlight, leak, inv_gamma, top, out, row_black, row_white):
    h, w, _ = target.shape
    inv_open = np.float32(1.0) / (np.float32(1.0) - leak)
    for y in numba.prange(h):
        src = target[y].reshape(-1)
        b_row = backlight[y]
        t_row = np.empty(3 * w, np.float32)
        for x in range(w):
            inv_b = scale / max(b_row[x], np.float32(1e-9))
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


def lcd_compensation(target_cd_m2: np.ndarray, backlight_cd_m2: np.ndarray, layout: LedLayout,
                     out: np.ndarray | None = None, *, scale: float = 1.0) -> np.ndarray:
    """LCD codes (H, W, 3), uint8 for 8-bit panels, uint16 for 10-bit, that best show the target.

    ``scale`` multiplies the target first (radiance times its display scale); it must be
    finite and positive. The backlight is taken as finite (``BacklightModel`` output).
    """
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0, got {scale}")
    target = np.ascontiguousarray(target_cd_m2, dtype=np.float32)
    backlight = np.ascontiguousarray(backlight_cd_m2, dtype=np.float32)
    if target.shape[:2] != backlight.shape or target.ndim != 3:
        raise ValueError(f"target {target.shape} and backlight {backlight.shape} do not match")
    dtype = np.uint8 if layout.lcd_bits == 8 else np.uint16
    if out is None:
        out = np.empty(target.shape, dtype)
    elif out.shape != target.shape or out.dtype != dtype:
        raise ValueError(f"out must be a {target.shape} {np.dtype(dtype).name} array")
    top = np.float32((1 << layout.lcd_bits) - 1)
    h, w = backlight.shape
    row_black = np.empty(h, np.int64)
    row_white = np.empty(h, np.int64)
    _compensation_kernel(target, target.reshape(h, -1).view(np.int32), np.float32(scale), backlight,
                         np.float32(layout.leakage), np.float32(1.0 / layout.lcd_gamma), top, out, row_black, row_white)
    report_nonfinite(log, "LCD compensation", row_black.sum(), row_white.sum(), h * w)
    return out


def simulate_display(lcd_codes: np.ndarray, backlight_cd_m2: np.ndarray, layout: LedLayout) -> np.ndarray:
    """Displayed luminance (H, W, 3) cd/m^2 = B (leak + (1 - leak) (code / top)^gamma)."""
    top = float((1 << layout.lcd_bits) - 1)
    t = np.power(np.asarray(lcd_codes, np.float32) / np.float32(top), np.float32(layout.lcd_gamma))
    leak = np.float32(layout.leakage)
    return (np.asarray(backlight_cd_m2, np.float32)[..., None] * (leak + (1 - leak) * t)).astype(np.float32)


def ideal_display(target_cd_m2: np.ndarray, backlight_cd_m2: np.ndarray, layout: LedLayout) -> np.ndarray:
    """The displayed image without LCD quantisation: ``clip(Y, leak B, B)`` per channel."""
    b = np.asarray(backlight_cd_m2, np.float32)[..., None]
    return np.clip(np.asarray(target_cd_m2, np.float32), np.float32(layout.leakage) * b, b)
