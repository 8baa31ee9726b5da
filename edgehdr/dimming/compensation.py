"""LCD compensation and the dual-modulation display model.

The LCD in front of the backlight ``B`` transmits ``leak + (1 - leak) T`` of it, so
showing a target ``Y`` needs ``T = (Y / B - leak) / (1 - leak)``, clipped to [0, 1],
and the LCD code ``(2^bits - 1) T^(1 / gamma)``. The displayed image is then
``B (leak + (1 - leak) T)``: exact where the backlight suffices, clipped where it
is too dim (``Y > B``), and raised where it is too bright for the LCD to block
(``Y < leak B``: the halo of local dimming). One fused numba pass computes the
codes per row with vectorisable ``log2``/``exp2``.
"""

from __future__ import annotations

import numba
import numpy as np

from edgehdr.dimming.layout import LedLayout
from edgehdr.fastmath import exp2_bits, log2_from_bits

__all__ = ["lcd_compensation", "simulate_display", "ideal_display"]


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _compensation_kernel(target, scale, backlight, leak, inv_gamma, top, out):
    h, w, _ = target.shape
    scale = np.float32(1.0) / (np.float32(1.0) - leak)
    for y in numba.prange(h):
        src = target[y].reshape(-1)
        b_row = backlight[y]
        t_row = np.empty(3 * w, np.float32)
        for x in range(w):
            inv_b = scale / max(b_row[x], np.float32(1e-9))
            for c in range(3):
                t = (src[3 * x + c] * inv_b - leak) * scale
                t_row[3 * x + c] = min(max(t, np.float32(1e-12)), np.float32(1.0))
        t_bits = t_row.view(np.int32)
        code_bits = np.empty(3 * w, np.int32)
        for j in range(3 * w):
            v = inv_gamma * log2_from_bits(t_bits[j])
            code_bits[j] = exp2_bits(max(v, np.float32(-126.0)))
        enc = code_bits.view(np.float32)
        dst = out[y].reshape(-1)
        for j in range(3 * w):
            dst[j] = min(enc[j] * top + np.float32(0.5), top)
    return out


def lcd_compensation(target_cd_m2: np.ndarray, backlight_cd_m2: np.ndarray, layout: LedLayout,
                     out: np.ndarray | None = None, *, scale: float = 1.0) -> np.ndarray:
    """LCD codes (H, W, 3), uint8 for 8-bit panels, uint16 for 10-bit, that best show the target.

    ``scale`` multiplies the target first (radiance times its display scale).
    """
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
    _compensation_kernel(target, np.float32(scale), backlight, np.float32(layout.leakage),
                         np.float32(1.0 / layout.lcd_gamma), top, out)
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
