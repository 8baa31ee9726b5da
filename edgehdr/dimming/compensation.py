"""LCD compensation and the dual-modulation display model.

The LCD in front of the backlight ``B`` transmits ``leak + (1 - leak) T`` of it, so
showing a target ``Y`` needs ``T = (Y / B - leak) / (1 - leak)``, clipped to [0, 1],
and the LCD code ``(2^bits - 1) T^(1 / gamma)``. The displayed image is then
``B (leak + (1 - leak) T)``: exact where the backlight suffices, clipped where it
is too dim (``Y > B``), and raised where it is too bright for the LCD to block
(``Y < leak B``: the halo of local dimming). One fused numba pass computes the
codes per row; the power ``T^(1 / gamma)`` is a degree-7 polynomial in ``T^(1/8)``
(three square roots), fitted per panel gamma and depth (``_code_polynomial``).

A non-finite target pixel (``edgehdr.tonemap.nonfinite``) gets code 0 (NaN, ``-inf``)
or full transmittance (``+inf``), counted in one warning per call.
"""

from __future__ import annotations

import functools
import logging
import math

import numba
import numpy as np

from edgehdr.dimming.backlight import upsample_backlight
from edgehdr.dimming.layout import LedLayout
from edgehdr.tonemap.guided import bilinear_taps, widen_maps
from edgehdr.tonemap.nonfinite import (
    any_nonfinite,
    paint_nonfinite_row,
    report_nonfinite,
)

__all__ = ["lcd_compensation", "simulate_display", "ideal_display", "full_resolution_backlight"]

log = logging.getLogger("edgehdr.dimming")


@functools.lru_cache(maxsize=16)
def _code_polynomial(gamma: float, top: int) -> tuple[np.ndarray, np.float32]:
    """``top * T^(1 / gamma)`` as a degree-7 polynomial in ``q = T^(1/8)`` (Chebyshev least squares on
    ``[q_lo, 1]``), and ``q_lo``: below it the code rounds to 0 (``top * T^(1/gamma) < 0.25``).

    ``q^(8 / gamma)`` is smooth on that interval for every panel gamma in [1, 3], so the fit stays within
    0.004 code of the exact power at 8 and 10 bits, evaluated in float32 (tests/test_dimming.py checks it);
    the ``log2``/``exp2`` polynomials it replaced were within about 0.01 code and took 5.0 against 3.7 ms for
    a 1080p frame's 6.2 M values on one x86 core (Arm cores take longer over a vector square root relative to a
    multiply-add: unmeasured there). With two square roots (``T^(1/4)``) the fit missed by up to 0.23 code at
    10 bits and gamma 3.
    """
    t_lo = (0.25 / top) ** gamma
    q_lo = t_lo ** 0.125
    q = q_lo + (1.0 - q_lo) * (1.0 - np.cos(np.linspace(0.0, np.pi, 4097))) / 2.0
    cheb = np.polynomial.chebyshev.chebfit(q, top * q ** (8.0 / gamma), 7)
    return np.polynomial.chebyshev.cheb2poly(cheb).astype(np.float32), np.float32(q_lo)


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _compensation_kernel(target, bits, scale, wide, y0s, y1s, fys, leak, coef, q_lo, top, out, row_black,
                         row_white):
    # ``wide``: the backlight's rows at the panel's width (``widen_maps``); each pixel row blends the two rows
    # around it (bilinear, half-pixel centres), so a working-resolution backlight is never materialised at
    # full resolution (a full-resolution one comes with y0 = y1 = y).
    h, w, _ = target.shape
    inv_open = np.float32(1.0) / (np.float32(1.0) - leak)
    c0, c1, c2, c3, c4, c5, c6, c7 = coef[0], coef[1], coef[2], coef[3], coef[4], coef[5], coef[6], coef[7]
    for y in numba.prange(h):
        src = target[y].reshape(-1)
        dst = out[y].reshape(-1)
        b0, b1, fy = wide[y0s[y]], wide[y1s[y]], fys[y]
        # The pixel's scale / backlight, repeated for its three channels, so that the pass below is one flat
        # vectorised loop over the row's 3 W values from the target to the code, with no stored intermediate:
        # 1080p on one core 4.6 against 6.3 ms with the transmittance written to a row array first and coded in
        # a second pass (bit-identical codes).
        inv_b3 = np.empty(3 * w, np.float32)
        for x in range(w):
            inv_b = scale / max(b0[x] + fy * (b1[x] - b0[x]), np.float32(1e-9))
            inv_b3[3 * x] = inv_b
            inv_b3[3 * x + 1] = inv_b
            inv_b3[3 * x + 2] = inv_b
        for j in range(3 * w):
            t = min(max((src[j] * inv_b3[j] - leak) * inv_open, np.float32(1e-12)), np.float32(1.0))
            q = math.sqrt(math.sqrt(math.sqrt(t)))
            code = c0 + q * (c1 + q * (c2 + q * (c3 + q * (c4 + q * (c5 + q * (c6 + q * c7))))))
            code = code if q >= q_lo else np.float32(0.0)
            dst[j] = min(max(code, np.float32(0.0)) + np.float32(0.5), top)
        row_bits = bits[y]
        fix_row = any_nonfinite(row_bits)  # while the row is in cache; fixed up here
        black = white = 0
        if fix_row:
            black, white = paint_nonfinite_row(dst, row_bits, w, top)
        row_black[y] = black
        row_white[y] = white
    return out


def _panel_rows(backlight: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                       np.ndarray]:
    """The backlight's rows at the panel width and each panel row's two rows and weight (``BacklightModel.
    full_resolution``'s bilinear interpolation, half-pixel centres, the outermost pixels extrapolated; the identity
    at full resolution)."""
    if backlight.shape == (height, width):
        rows = np.arange(height, dtype=np.int64)
        return backlight, rows, rows, np.zeros(height, np.float32)
    wide = np.ascontiguousarray(widen_maps(backlight[None], width, extrapolate=True)[0])
    np.maximum(wide, 0.0, out=wide)  # as ``upsample_backlight``; in place (a second 2 MB array cost 1.5 ms at 1080p)
    return wide, *bilinear_taps(backlight.shape[0], height, extrapolate=True)


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
    (``upsample_backlight``, as ``BacklightModel.full_resolution``); returned as is when it is already that size."""
    backlight = _checked_backlight(backlight_cd_m2, height, width)
    if backlight.shape == (height, width):
        return backlight
    return upsample_backlight(backlight, height, width)


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
                         *_code_polynomial(float(layout.lcd_gamma), (1 << layout.lcd_bits) - 1), top, out,
                         row_black, row_white)
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
