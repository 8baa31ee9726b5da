"""Tone mapping operators: Reinhard global and local, Drago, and the tutorial's parametric TMO.

The stage after the merge in the frame's journey: linear ``Radiance`` in, sRGB
uint8 out. Every operator maps luminance only and restores colour afterwards
(Schlick or Mantiuk correction). Work happens in two fused numba passes over the
frame: one gathers the statistics (log-average and maximum luminance, plus a
block-averaged luminance image for the local operator), one applies the curve,
the colour correction and the sRGB encoding per pixel. The local operator adds
a guided filter on a 1/4-resolution log-luminance whose linear coefficients are
interpolated back per pixel (fast guided filter), so its halo-free local
adaptation costs a small multiple of the global operator.

Non-finite input (``edgehdr.tonemap.nonfinite``): a pixel with a NaN or infinite
channel is left out of the statistics (log-average, maximum, block means), so the
other pixels map as they would in the frame without it; it is shown black (NaN,
``-inf``) or white (``+inf``, an overflowed highlight), one warning per call on the
``edgehdr.tonemap`` logger gives the count, and a frame with no finite pixel raises
``ValueError``. The output never holds an undefined value. Negative finite radiance
is noise around black and counts as black. Finding such pixels is an integer pass
over each row inside the kernels (under 2 % of a frame's time); only rows that hold
one take the slower per-pixel path.

Finite radiance of any size maps: luminance above 1e30 counts as 1e30 (in the maximum, the
block means and the curves), which keeps the reciprocal ``1 / L`` of the colour ratios a
normal float32 and every product finite, so such a pixel is as white as the brightest of
the scene (at ~8.5e37 and above the reciprocal used to flush to 0 and the pixel went black).
Black (``L <= 0``) maps to ``L_d = 0`` with either colour correction.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import cv2
import numba
import numpy as np

from edgehdr.fastmath import _MAX_LUM, exp2_bits, log2_from_bits, luminance_log_row
from edgehdr.tonemap.color import COLOR_METHODS
from edgehdr.tonemap.guided import guided_coefficients, widen_maps
from edgehdr.tonemap.nonfinite import (
    _EXPONENT,
    any_nonfinite,
    paint_nonfinite_row,
    pixel_class,
    report_nonfinite,
)
from edgehdr.tonemap.temporal import TemporalAdaptation

__all__ = [
    "reinhard_global",
    "reinhard_local",
    "drago",
    "parametric",
    "tonemap",
    "frame_statistics",
    "OPERATORS",
    "LOCAL_FILTERS",
]

OPERATORS = ("reinhard", "reinhard-local", "drago", "parametric")
LOCAL_FILTERS = ("guided", "bilateral", "gaussian")
_LUMA_R, _LUMA_G, _LUMA_B = 0.2126, 0.7152, 0.0722
_MIN_LUM = 1e-9
_LOG2_OF_ONE = 5.06477678e-06  # edgehdr.fastmath.log2_from_bits of 1.0: its polynomial's constant term
log = logging.getLogger("edgehdr.tonemap")

# sRGB OETF x 255 on [0.0031308, 1] as a degree-9 polynomial in x^(1/2) (Chebyshev least-squares fit,
# max error 0.007 code evaluated in float32; tests/test_tonemap.py checks it). Arithmetic vectorises, where a
# lookup-table gather per channel measured 5x slower at 1080p. The previous form, degree 5 in x^(1/4), took a
# second square root per value, slower than the four more multiply-adds: 6.2 M values on one core 3.13-3.22
# against 2.87-2.92 ms. Kernels in other modules inline ``srgb8`` (``edgehdr.tonemap.neural``): after a change
# here ``edgehdr.kernelcache`` drops their cached kernels (numba keys a cache on the kernel's own file only).
_S0, _S1, _S2, _S3, _S4 = -11.615421, 431.009382, -853.999342, 3291.11295, -9315.92157
_S5, _S6, _S7, _S8, _S9 = 17830.6995, -22339.7357, 17489.9747, -7745.75855, 1479.23632


@numba.njit(fastmath=True, cache=True, inline="always")
def srgb8(v: float) -> np.uint8:
    """Linear value -> sRGB code 0..255 (clipped), rounded."""
    v = min(max(v, np.float32(0.0)), np.float32(1.0))
    q = math.sqrt(v)
    curve = np.float32(_S0) + q * (np.float32(_S1) + q * (np.float32(_S2) + q * (np.float32(_S3) + q * (
        np.float32(_S4) + q * (np.float32(_S5) + q * (np.float32(_S6) + q * (np.float32(_S7) + q * (
            np.float32(_S8) + q * np.float32(_S9)))))))))
    code = v * np.float32(12.92 * 255.0) if v < np.float32(0.0031308) else curve
    return np.uint8(code + np.float32(0.5))


@numba.njit(fastmath=True, cache=True, nogil=True, inline="always")
def _luminance_peak(src):
    """Largest Rec. 709 luminance of an interleaved, finite RGB row (3 W), clamped at ``_MAX_LUM``."""
    peak = np.float32(0.0)
    for x in range(src.size // 3):
        lum = (np.float32(_LUMA_R) * src[3 * x] + np.float32(_LUMA_G) * src[3 * x + 1]
               + np.float32(_LUMA_B) * src[3 * x + 2])
        peak = max(peak, lum)
    return min(peak, np.float32(_MAX_LUM))


@numba.njit(fastmath=True, cache=True, nogil=True, inline="always")
def _finite_top(row_bits):
    """One integer pass over a row's int32 view (SIMD max-reductions): whether every value is finite, and the
    bit pattern of the largest value (0 if none is positive). Positive floats order as their bits do, so for a
    finite row it is the largest channel value, a bound on the row's luminance (a mean of the channels)."""
    top_exp = np.int32(0)
    top = np.int32(0)
    for j in range(row_bits.shape[0]):
        b = row_bits[j]
        top_exp = max(top_exp, np.int32(b & np.int32(_EXPONENT)))
        top = max(top, b)
    return top_exp != _EXPONENT, top


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _stats_kernel(rgb, bits, delta, block, stride, blocks, block_n, row_logsum, row_count, row_max, row_bad,
                  row_state, row_top):
    # The log-average and the block means read only every ``stride``-th row of each block row (its first row
    # always): statistics of a decimated grid, half the memory traffic and arithmetic at stride 2. The maximum
    # is over every row: a bright pixel on a skipped row is the scene's white point all the same. A skipped
    # row costs one integer pass here (its non-finite test, which the apply pass then need not repeat, and its
    # largest channel value); after the parallel loop its luminance is computed only where that bound passes
    # the maximum so far, on natural content the dozen rows through the brightest highlight. Against the even
    # rows alone, at 1080p on this 2-core machine: +15-30 % of this kernel on natural scenes (reinhard_global
    # +5-15 %); on noise or saturated colour the largest channel passes the bound on nearly every skipped row,
    # and the re-read makes it +60-100 % (reinhard_global +30 %). A luminance pass over every skipped row cost
    # +25 % on any content. The runtime's merge measures its statistics instead (MergeStatistics: a luminance
    # peak over its odd rows while they are in the cache). Luminance is clamped at _MAX_LUM in the block sums
    # and the maximum. Non-finite
    # pixels are skipped (and counted, on the rows read); row_state records for each row whether it holds one.
    h, w, _ = rgb.shape
    nby, nbx = blocks.shape
    n_log = (w + stride - 1) // stride
    delta32 = np.float32(delta)
    lum_cap = np.float32(_MAX_LUM)
    for by in numba.prange(nby):
        y0 = by * block
        y1 = min(y0 + block, h)
        lum_row = np.empty(w, np.float32)
        log_row = np.empty(n_log, np.float32)
        log_bits = log_row.view(np.int32)
        logsum = 0.0
        count = 0
        rows = 0
        bad = 0
        peak = np.float32(0.0)
        for bx in range(nbx):
            blocks[by, bx] = 0.0
            block_n[by, bx] = 0  # pixels skipped, until the end of the block row
        for y in range(y0, y1):
            row_bits = bits[y]
            if (y - y0) % stride != 0:
                # A row the log-average skips: for the maximum only.
                finite, top = _finite_top(row_bits)
                row_top[y] = top
                if finite:
                    row_state[y] = 0
                    continue
                row_state[y] = 1
                for x in range(w):
                    if pixel_class(row_bits, 3 * x) == 0:
                        lum = (np.float32(_LUMA_R) * rgb[y, x, 0] + np.float32(_LUMA_G) * rgb[y, x, 1]
                               + np.float32(_LUMA_B) * rgb[y, x, 2])
                        peak = max(peak, min(lum, lum_cap))
                continue
            rows += 1
            if not any_nonfinite(row_bits):
                # Branch-free passes over row buffers, each vectorised: luminance and peak,
                # block sums, then log(delta + L) of every stride-th pixel by the polynomial
                # log2 on the float bits (a scalar math.log per pixel was 60 % of the kernel).
                row_state[y] = 0
                row_log, row_peak = luminance_log_row(rgb[y].reshape(-1), lum_row, log_row, log_bits, stride,
                                                         delta32)
                peak = max(peak, min(row_peak, lum_cap))
                for bx in range(nbx):
                    acc = np.float32(0.0)
                    for x in range(bx * block, min(bx * block + block, w)):
                        acc += min(lum_row[x], lum_cap)
                    blocks[by, bx] += acc
                logsum += row_log
                count += n_log
                continue
            # The same loop, skipping non-finite pixels (kept apart so the common loop has no test).
            row_state[y] = 1
            for x in range(w):
                if pixel_class(row_bits, 3 * x) != 0:
                    if nbx > 0:  # no block columns: block means not wanted
                        block_n[by, x // block] += 1
                    bad += 1
                    continue
                lum = (np.float32(_LUMA_R) * rgb[y, x, 0] + np.float32(_LUMA_G) * rgb[y, x, 1]
                       + np.float32(_LUMA_B) * rgb[y, x, 2])
                if nbx > 0:
                    blocks[by, x // block] += min(lum, lum_cap)
                peak = max(peak, min(lum, lum_cap))
                if x % stride == 0:
                    logsum += math.log(delta + max(lum, np.float32(0.0)))
                    count += 1
        for bx in range(nbx):
            x0 = bx * block
            n = rows * (min(x0 + block, w) - x0) - block_n[by, bx]
            block_n[by, bx] = n
            blocks[by, bx] = blocks[by, bx] / n if n > 0 else np.float32(0.0)
        row_logsum[by] = logsum
        row_count[by] = count
        row_max[by] = peak
        row_bad[by] = bad
    if stride == 1:
        return
    # The skipped finite rows whose largest channel could hold a luminance above the maximum so far. The
    # bound carries a margin for the float32 rounding of the luminance (a few ulp above a grey pixel's value).
    so_far = np.float32(0.0)
    for by in range(nby):
        so_far = max(so_far, row_max[by])
    bound_bits = np.empty(1, np.float32)
    bound_bits[0] = so_far * np.float32(1.0 - 1e-6)
    bound = bound_bits.view(np.int32)[0]
    wanted = 0
    for y in range(h):
        if (y % block) % stride != 0 and row_state[y] == 0 and row_top[y] > bound:
            row_top[wanted] = y  # the list of rows to look at, in place
            wanted += 1
    peaks = np.empty(wanted, np.float32)
    if wanted <= 64:  # the usual case: a few rows, not worth a parallel region's start
        for i in range(wanted):
            peaks[i] = _luminance_peak(rgb[row_top[i]].reshape(-1))
    else:
        for i in numba.prange(wanted):
            peaks[i] = _luminance_peak(rgb[row_top[i]].reshape(-1))
    for i in range(wanted):
        by = row_top[i] // block
        row_max[by] = max(row_max[by], peaks[i])


# The apply pass, per row: luminance (``_luminance_row``), the operator's display
# luminance L_d (one ``_ld_*`` row function per operator, each branch-free so it
# vectorises), then colour and sRGB (``_finish_row``); one parallel kernel per operator
# below strings them together.


@numba.njit(fastmath=True, cache=True, nogil=True, error_model="numpy")
def _ld_reinhard_global(y, ld_row, p0, p1, p2, p3, coef_a, coef_b, inv_block):
    # Reinhard et al. 2002, eq. 4: p0 = key / log-average, p1 = 1 / L_white^2.
    for x in range(ld_row.size):
        lm = ld_row[x] * p0
        ld_row[x] = lm * (1 + lm * p1) / (1 + lm)


@numba.njit(fastmath=True, cache=True, nogil=True, error_model="numpy")
def _ld_reinhard_local(y, ld_row, p0, p1, p2, p3, coef_a, coef_b, inv_block):
    # Eq. 9 with the adaptation luminance V from the low-resolution filter
    # coefficients, interpolated bilinearly: log2 V = a log2 L_m + b log2(e).
    # p2 = base compression beta, p3 = log2(key): L_m and V are both scaled by
    # (key / V)^beta, which compresses the base layer log V towards the key by
    # the factor 1 - beta and leaves the detail L_m / V as it was (beta = 0: eq. 9).
    w = ld_row.size
    nby = coef_a.shape[0]
    fy = min(max((y + np.float32(0.5)) * inv_block - np.float32(0.5), np.float32(0.0)), np.float32(nby - 1))
    y0 = min(int(fy), max(nby - 2, 0))
    y1 = min(y0 + 1, nby - 1)
    ty = fy - y0
    lm_row = np.empty(w, np.float32)
    for x in range(w):
        lm_row[x] = ld_row[x] * p0
    lm_bits = lm_row.view(np.int32)
    adapt_bits = np.empty(w, np.int32)
    shift_row = np.empty(w, np.float32)  # log2 of the base-compression gain (0 at beta = 0)
    # coef_a / coef_b are already interpolated to full width: only rows y0, y1 blend.
    a0, a1, b0, b1 = coef_a[y0], coef_a[y1], coef_b[y0], coef_b[y1]
    for x in range(w):
        a = a0[x] * (1 - ty) + a1[x] * ty
        bb = b0[x] * (1 - ty) + b1[x] * ty
        t = a * log2_from_bits(lm_bits[x]) + bb * np.float32(1.4426950408889634)
        t = min(max(t, np.float32(-126.0)), np.float32(126.0))
        shift = p2 * (p3 - t)
        shift_row[x] = shift
        adapt_bits[x] = exp2_bits(min(max(t + shift, np.float32(-126.0)), np.float32(126.0)))
    if p2 != 0:
        gain_bits = np.empty(w, np.int32)
        for x in range(w):
            gain_bits[x] = exp2_bits(min(max(shift_row[x], np.float32(-126.0)), np.float32(126.0)))
        gain = gain_bits.view(np.float32)
        for x in range(w):
            lm_row[x] *= gain[x]
    adapt = adapt_bits.view(np.float32)
    for x in range(w):
        lm = lm_row[x]
        ld_row[x] = lm * (1 + lm * p1) / (1 + adapt[x])


@numba.njit(fastmath=True, cache=True, nogil=True, error_model="numpy")
def _ld_drago(y, ld_row, p0, p1, p2, p3, coef_a, coef_b, inv_block):
    # Drago et al. 2003, eq. 4: p0 = 1 / L_wa, p1 = 1 / L_wmax, p2 = log(b)/log(0.5),
    # p3 = (L_dmax / 100) / log10(L_wmax + 1). The ratio of logs is base-free: log2.
    # log2(L_w + 1) less the polynomial's value at 1 (_LOG2_OF_ONE, its 5e-6 error there): black maps to 0,
    # and near-black to its slope, where p3 is large (a dark frame: L_wmax near 0) and the offset showed as grey.
    w = ld_row.size
    num_row = np.empty(w, np.float32)
    rel_row = np.empty(w, np.float32)
    for x in range(w):
        lw = ld_row[x] * p0
        num_row[x] = lw + 1
        rel_row[x] = max(lw * p1, np.float32(1e-30))
    num_bits = num_row.view(np.int32)
    rel_bits = rel_row.view(np.int32)
    pow_bits = np.empty(w, np.int32)
    for x in range(w):
        t = p2 * log2_from_bits(rel_bits[x])
        pow_bits[x] = exp2_bits(min(max(t, np.float32(-126.0)), np.float32(126.0)))
    powed = pow_bits.view(np.float32)
    for x in range(w):
        rel_row[x] = 2 + 8 * powed[x]
    for x in range(w):
        ld_row[x] = p3 * (log2_from_bits(num_bits[x]) - np.float32(_LOG2_OF_ONE)) / log2_from_bits(rel_bits[x])


@numba.njit(fastmath=True, cache=True, nogil=True, error_model="numpy")
def _ld_parametric(y, ld_row, p0, p1, p2, p3, coef_a, coef_b, inv_block):
    # Tutorial parametric operator: L_d = L^alpha / (L^alpha + mu); p0 = alpha, p1 = mu.
    w = ld_row.size
    lum_bits = ld_row.view(np.int32)
    pow_bits = np.empty(w, np.int32)
    for x in range(w):
        t = p0 * log2_from_bits(lum_bits[x])
        pow_bits[x] = exp2_bits(min(max(t, np.float32(-126.0)), np.float32(126.0)))
    powed = pow_bits.view(np.float32)
    for x in range(w):
        ld_row[x] = powed[x] / (powed[x] + p1)


@numba.njit(fastmath=True, cache=True, nogil=True, error_model="numpy")
def _color_schlick(src, dst, ld_row, inv_lum_row, saturation):
    w = ld_row.size
    if saturation == 1.0:
        # Hue-preserving fast path: every channel scaled by L_d / L_w.
        for x in range(w):
            k = ld_row[x] * inv_lum_row[x]
            dst[3 * x] = srgb8(src[3 * x] * k)
            dst[3 * x + 1] = srgb8(src[3 * x + 1] * k)
            dst[3 * x + 2] = srgb8(src[3 * x + 2] * k)
        return
    # Schlick: C_d = L_d (C_w / L_w)^s, the power as exp2(s log2(ratio)).
    ratio_bits = _colour_ratios(src, inv_lum_row).view(np.int32)
    powed_bits = np.empty(3 * w, np.int32)
    for j in range(3 * w):
        t = saturation * log2_from_bits(ratio_bits[j])
        powed_bits[j] = exp2_bits(min(max(t, np.float32(-126.0)), np.float32(126.0)))
    _encode_srgb_row(dst, ld_row, powed_bits.view(np.float32))


@numba.njit(fastmath=True, cache=True, nogil=True, error_model="numpy")
def _colour_ratios(src, inv_lum_row):
    """``C_w / L_w`` of each channel of an interleaved row (3 W), floored at 1e-30 so its log2 is finite."""
    w = inv_lum_row.size
    ratio_row = np.empty(3 * w, np.float32)
    for x in range(w):
        il = inv_lum_row[x]
        ratio_row[3 * x] = max(src[3 * x] * il, np.float32(1e-30))
        ratio_row[3 * x + 1] = max(src[3 * x + 1] * il, np.float32(1e-30))
        ratio_row[3 * x + 2] = max(src[3 * x + 2] * il, np.float32(1e-30))
    return ratio_row


@numba.njit(fastmath=True, cache=True, nogil=True, error_model="numpy")
def _encode_srgb_row(dst, ld_row, colour_row):
    """sRGB codes of ``L_d * colour`` into an interleaved row (``colour_row`` 3 W, ``ld_row`` W)."""
    for x in range(ld_row.size):
        ld = ld_row[x]
        dst[3 * x] = srgb8(ld * colour_row[3 * x])
        dst[3 * x + 1] = srgb8(ld * colour_row[3 * x + 1])
        dst[3 * x + 2] = srgb8(ld * colour_row[3 * x + 2])


@numba.njit(fastmath=True, cache=True, nogil=True, error_model="numpy")
def _color_mantiuk(src, dst, ld_row, inv_lum_row, saturation):
    # Mantiuk: C_d = L_d ((C_w / L_w - 1) s + 1).
    for x in range(ld_row.size):
        ld = ld_row[x]
        il = inv_lum_row[x]
        for c in range(3):
            ratio = max(src[3 * x + c] * il, np.float32(0.0))
            dst[3 * x + c] = srgb8(ld * ((ratio - 1) * saturation + 1))


@numba.njit(fastmath=True, cache=True, nogil=True, error_model="numpy")
def _luminance_row(rgb, bits, row_state, y):
    # Pass 1 over a row: luminance in [0, _MAX_LUM] (what the operators map: black, L = 0, maps to
    # L_d = 0) and the reciprocal of the luminance floored at _MIN_LUM (the colour ratios' divisor); whether
    # the row holds a non-finite pixel (rows the statistics pass read are known; the others are looked at
    # now, while in cache).
    w = rgb.shape[1]
    src = rgb[y].reshape(-1)
    ld_row = np.empty(w, np.float32)
    inv_lum_row = np.empty(w, np.float32)
    for x in range(w):
        lum = (np.float32(_LUMA_R) * src[3 * x] + np.float32(_LUMA_G) * src[3 * x + 1]
               + np.float32(_LUMA_B) * src[3 * x + 2])
        lum = min(max(lum, np.float32(0.0)), np.float32(_MAX_LUM))
        inv_lum_row[x] = np.float32(1.0) / max(lum, np.float32(_MIN_LUM))
        ld_row[x] = lum
    return ld_row, inv_lum_row, _row_has_nonfinite(bits, row_state, y)


@numba.njit(fastmath=True, cache=True, nogil=True, error_model="numpy")
def _row_has_nonfinite(bits, row_state, y):
    # Known for the rows the statistics pass read (row_state 0 or 1); the others are looked at now, while in cache.
    return row_state[y] == 1 if row_state[y] >= 0 else any_nonfinite(bits[y])


@numba.njit(fastmath=True, cache=True, nogil=True, error_model="numpy")
def _finish_row(rgb, bits, y, ld_row, inv_lum_row, fix_row, color, saturation, out, row_black, row_white):
    # Pass 2: colour correction and sRGB encoding; non-finite pixels then replaced by black or white.
    src = rgb[y].reshape(-1)
    dst = out[y].reshape(-1)
    if color == 0:
        _color_schlick(src, dst, ld_row, inv_lum_row, saturation)
    else:
        _color_mantiuk(src, dst, ld_row, inv_lum_row, saturation)
    _paint_row(dst, bits, y, rgb.shape[1], fix_row, row_black, row_white)


@numba.njit(fastmath=True, cache=True, nogil=True, error_model="numpy")
def _paint_row(dst, bits, y, w, fix_row, row_black, row_white):
    # Non-finite pixels of a row that holds any replaced by black or white, and counted.
    black = white = 0
    if fix_row:
        black, white = paint_nonfinite_row(dst, bits[y], w, 255)
    row_black[y] = black
    row_white[y] = white


# One parallel kernel per operator, each the same three calls per row (luminance, the
# operator's L_d, colour and sRGB): a process compiles only the operators it runs. One
# kernel holding every operator behind runtime branches took 14 s to compile cold, and
# the daemon and the demo use one operator. The four skeletons are written out on
# purpose: one kernel taking the row function as an argument compiled per function, but
# numba's cache keys such a signature per process, so every start compiled it again
# (15.6 s measured), and ``numba.literally`` on an operator code still typed every branch.
# The row index goes to the row functions as int64: a prange index is uint64 after parfor
# lowering, and the row functions then compiled a second time for it (2.7 s of a cold start).
# The row functions use numpy's error model, as the parallel loop body does: a float division
# by zero on a non-finite pixel gives inf or NaN (painted afterwards), not an exception.


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _apply_reinhard_global(rgb, bits, p0, p1, p2, p3, coef_a, coef_b, inv_block, color, saturation, out, row_state,
                           row_black, row_white):
    if color == 0 and saturation == 1.0:
        # Hue-preserving (the runtime's default): every channel times L_d / L_w, which for eq. 4 is
        # p0 (1 + L_m p1) / (1 + L_m) with L_m = p0 L_w: one division a pixel instead of two (L_w's reciprocal, the
        # curve's), and no reciprocal row. 1080p on one core 4.5-4.7 against 5.0-5.1 ms (both in one process,
        # alternating); 0.002 % of the codes differ by 1 (rounding).
        w = rgb.shape[1]
        for row in numba.prange(rgb.shape[0]):
            y = np.int64(row)
            src = rgb[y].reshape(-1)
            dst = out[y].reshape(-1)
            k_row = np.empty(w, np.float32)
            for x in range(w):
                lum = (np.float32(_LUMA_R) * src[3 * x] + np.float32(_LUMA_G) * src[3 * x + 1]
                       + np.float32(_LUMA_B) * src[3 * x + 2])
                lm = min(max(lum, np.float32(_MIN_LUM)), np.float32(_MAX_LUM)) * p0
                k_row[x] = p0 * (1 + lm * p1) / (1 + lm)
            for x in range(w):
                k = k_row[x]
                dst[3 * x] = srgb8(src[3 * x] * k)
                dst[3 * x + 1] = srgb8(src[3 * x + 1] * k)
                dst[3 * x + 2] = srgb8(src[3 * x + 2] * k)
            _paint_row(dst, bits, y, w, _row_has_nonfinite(bits, row_state, y), row_black, row_white)
        return
    for row in numba.prange(rgb.shape[0]):
        y = np.int64(row)
        ld_row, inv_lum_row, fix_row = _luminance_row(rgb, bits, row_state, y)
        _ld_reinhard_global(y, ld_row, p0, p1, p2, p3, coef_a, coef_b, inv_block)
        _finish_row(rgb, bits, y, ld_row, inv_lum_row, fix_row, color, saturation, out, row_black, row_white)


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _apply_reinhard_local(rgb, bits, p0, p1, p2, p3, coef_a, coef_b, inv_block, color, saturation, out, row_state,
                          row_black, row_white):
    for row in numba.prange(rgb.shape[0]):
        y = np.int64(row)
        ld_row, inv_lum_row, fix_row = _luminance_row(rgb, bits, row_state, y)
        _ld_reinhard_local(y, ld_row, p0, p1, p2, p3, coef_a, coef_b, inv_block)
        _finish_row(rgb, bits, y, ld_row, inv_lum_row, fix_row, color, saturation, out, row_black, row_white)


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _apply_drago(rgb, bits, p0, p1, p2, p3, coef_a, coef_b, inv_block, color, saturation, out, row_state,
                 row_black, row_white):
    for row in numba.prange(rgb.shape[0]):
        y = np.int64(row)
        ld_row, inv_lum_row, fix_row = _luminance_row(rgb, bits, row_state, y)
        _ld_drago(y, ld_row, p0, p1, p2, p3, coef_a, coef_b, inv_block)
        _finish_row(rgb, bits, y, ld_row, inv_lum_row, fix_row, color, saturation, out, row_black, row_white)


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _apply_parametric(rgb, bits, p0, p1, p2, p3, coef_a, coef_b, inv_block, color, saturation, out, row_state,
                      row_black, row_white):
    for row in numba.prange(rgb.shape[0]):
        y = np.int64(row)
        ld_row, inv_lum_row, fix_row = _luminance_row(rgb, bits, row_state, y)
        _ld_parametric(y, ld_row, p0, p1, p2, p3, coef_a, coef_b, inv_block)
        _finish_row(rgb, bits, y, ld_row, inv_lum_row, fix_row, color, saturation, out, row_black, row_white)


_APPLY_KERNELS = {"reinhard": _apply_reinhard_global, "reinhard-local": _apply_reinhard_local, "drago": _apply_drago,
                  "parametric": _apply_parametric}


def compile_apply_kernel(operator: str) -> None:
    """Compile (or load from numba's cache) one operator's apply kernel alone, without the statistics kernel.

    What ``edgehdr.warmup`` runs per operator, so that the statistics kernel, which every
    operator shares, can compile in another process at the same time.
    """
    rgb = np.full((8, 8, 3), 0.5, np.float32)
    coef = (np.zeros((2, 8), np.float32), np.zeros((2, 8), np.float32))
    _run_apply(rgb, _APPLY_KERNELS[operator], (1.0, 0.0, 0.0, 0.0), "schlick", 1.0, None, coef=coef)


def _check_radiance(radiance: np.ndarray) -> np.ndarray:
    rgb = np.asarray(radiance)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"radiance must be an HxWx3 array, got shape {rgb.shape}")
    if rgb.size == 0:
        raise ValueError(f"radiance has no pixels (shape {rgb.shape}); expected an HxWx3 array with H, W >= 1")
    if rgb.dtype != np.float32:
        rgb = rgb.astype(np.float32)
    return np.ascontiguousarray(rgb)


def _bits(rgb: np.ndarray) -> np.ndarray:
    """(H, 3 W) int32 view of a contiguous float32 image: what the kernels test for non-finite values."""
    return rgb.reshape(rgb.shape[0], -1).view(np.int32)


def _unchecked_rows(h: int) -> np.ndarray:
    """Per-row non-finite state for the kernels: -1 not looked at yet, 0 finite, 1 holds a non-finite pixel."""
    return np.full(h, -1, np.int8)


def frame_statistics(radiance: np.ndarray, *, delta: float = 1e-6, block: int = 4,
                     stride: int | None = None) -> tuple[float, float, np.ndarray]:
    """Luminance statistics of a frame in one pass.

    Non-finite pixels (NaN, +-inf in any channel) are left out of all three; a block
    without a finite pixel gets the log-average. ``ValueError`` if no pixel is finite.
    Luminance above 1e30 counts as 1e30 in the maximum and the block means (the operators
    map it so too: a pixel that bright is white in any scene of ordinary radiance).

    Parameters
    ----------
    delta : float
        Offset inside the log (> 0), so that black pixels do not give log 0.
    block : int
        Block size in pixels of ``blocks`` (>= 1).
    stride : int, optional
        Decimation of the log-average and the block means, in ``[1, block]`` (default 2, or 1 for
        ``block = 1``): the rows read are
        those ``stride`` apart from the first row of each block row (``y mod block`` a multiple of
        ``stride``: the even rows at the default 4 and 2), and every ``stride``-th pixel of those
        rows enters the log-average. Every block row is read at least once.

    Returns
    -------
    log_average : float
        ``exp(mean(log(delta + L)))`` over the ``stride``-decimated grid (Reinhard 2002, eq. 1);
        within 1% of the full-resolution value on natural content, though a pattern
        with a period of ``stride`` rows aliases.
    max_luminance : float
        Largest luminance of the frame: every row, every pixel, whatever the ``stride``.
    blocks : ndarray, (ceil(H / block), ceil(W / block)) float32
        Block means of the luminance over the rows read (the local operator's low-resolution input).
    """
    _require_delta(delta)
    _require_block(block)
    if stride is None:
        stride = min(2, int(block))
    if isinstance(stride, bool) or not isinstance(stride, (int, np.integer)) or not 1 <= stride <= block:
        raise ValueError(f"stride must be an integer in [1, block = {block}], got {stride!r}")
    rgb = _check_radiance(radiance)
    return _statistics(rgb, delta, int(block), int(stride), _unchecked_rows(rgb.shape[0]))


def _require_positive(**values: float | None) -> None:
    """``ValueError`` naming the first parameter that is not a finite number > 0 (``None``: not given, fine)."""
    for name, value in values.items():
        if value is None:
            continue
        try:
            ok = math.isfinite(float(value)) and float(value) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def _require_delta(delta: float) -> None:
    """``ValueError`` unless the log-average's offset is finite and at least the smallest normal float32 (2^-126,
    about 1.2e-38): the kernels' log2 polynomial reads a subnormal as another number (a black frame's log-average
    with delta 1e-42 came out 5.9e-39)."""
    _require_positive(delta=delta)
    if float(delta) < 2.0 ** -126:
        raise ValueError(f"delta must be at least 2^-126 (1.18e-38, the smallest normal float32), got {delta!r}")


def _require_block(block: int) -> None:
    if isinstance(block, bool) or not isinstance(block, (int, np.integer)) or block < 1:
        raise ValueError(f"block must be an integer >= 1, got {block!r}")


def _statistics(rgb, delta, block, stride, row_state, blocks_wanted=True):
    # Without ``blocks_wanted`` the block means (the local operator's input) are not gathered: an empty
    # (rows, 0) array comes back and the kernel's block loops do not run (the global operators, 1.2-1.5 ms of
    # the 4-5 ms pass at 1080p on one core).
    h, w, _ = rgb.shape
    nby, nbx = -(-h // block), (-(-w // block) if blocks_wanted else 0)
    blocks = np.empty((nby, nbx), np.float32)
    block_n = np.empty((nby, nbx), np.int64)
    row_logsum = np.empty(nby, np.float64)
    row_count = np.empty(nby, np.int64)
    row_max = np.empty(nby, np.float32)
    row_bad = np.empty(nby, np.int64)
    row_top = np.empty(h, np.int32)
    _stats_kernel(rgb, _bits(rgb), np.float32(delta), block, stride, blocks, block_n, row_logsum, row_count,
                  row_max, row_bad, row_state, row_top)
    if row_count.sum() == 0 and row_bad.sum() > 0:
        if stride > 1:  # every pixel on the decimated grid is non-finite: read them all
            return _statistics(rgb, delta, block, 1, row_state, blocks_wanted)
        raise ValueError(f"frame statistics: all {h * w} pixels are non-finite (NaN or +-inf)")
    log_average = math.exp(row_logsum.sum() / max(1, row_count.sum()))
    if row_bad.sum() > 0:
        blocks[block_n == 0] = log_average
    return log_average, float(row_max.max()), blocks


def _color_args(color: str, saturation: float, name: str = "saturation"):
    if color not in COLOR_METHODS:
        raise ValueError(f"unknown colour correction {color!r}; use one of {', '.join(COLOR_METHODS)}")
    if not 0.0 <= saturation <= 2.0:
        raise ValueError(f"{name} must be in [0, 2], got {saturation}")
    return (0 if color == "schlick" else 1), np.float32(saturation)


def _output_array(out: np.ndarray | None, shape: tuple[int, ...]) -> np.ndarray:
    """The caller's ``out`` checked (the kernels write rows through a C-contiguous view), or a new array."""
    if out is None:
        return np.empty(shape, np.uint8)
    if not isinstance(out, np.ndarray) or out.shape != shape or out.dtype != np.uint8 or not (
            out.flags.c_contiguous and out.flags.writeable):
        got = (f"{out.shape} {out.dtype} array, C-contiguous {out.flags.c_contiguous}, writeable "
               f"{out.flags.writeable}" if isinstance(out, np.ndarray) else type(out).__name__)
        raise ValueError(f"out must be a writeable, C-contiguous {shape} uint8 array (np.empty({shape}, np.uint8)); "
                         f"got a {got}")
    return out


def _run_apply(rgb, kernel, params, color, saturation, out, coef=None, block=4, who="tonemap", row_state=None,
               saturation_name="saturation"):
    color_code, sat = _color_args(color, saturation, saturation_name)
    out = _output_array(out, rgb.shape)
    p = [np.float32(v) for v in (list(params) + [0.0] * 4)[:4]]
    if coef is None:
        coef = (np.zeros((1, 1), np.float32), np.zeros((1, 1), np.float32))
    if row_state is None:
        row_state = _unchecked_rows(rgb.shape[0])
    row_black = np.empty(rgb.shape[0], np.int64)
    row_white = np.empty(rgb.shape[0], np.int64)
    kernel(rgb, _bits(rgb), p[0], p[1], p[2], p[3], coef[0], coef[1], np.float32(1.0 / block), color_code, sat,
           out, row_state, row_black, row_white)
    report_nonfinite(log, who, row_black.sum(), row_white.sum(), rgb.shape[0] * rgb.shape[1])
    return out


def _adapted(adaptation: TemporalAdaptation | None, dt_s, **values):
    return values if adaptation is None else adaptation.update(dt_s, **values)


def _global_statistics(rgb, delta, row_state, statistics):
    """``(log_average, max_luminance)`` of the frame: the caller's, checked, or one statistics pass."""
    if statistics is None:
        log_avg, lmax, _ = _statistics(rgb, delta, 4, 2, row_state, blocks_wanted=False)
        return log_avg, lmax
    log_avg, lmax = (float(v) for v in statistics)
    if not (math.isfinite(log_avg) and log_avg > 0 and math.isfinite(lmax) and lmax >= 0):
        raise ValueError(f"statistics must be a finite log-average > 0 and a finite maximum >= 0, got {statistics}")
    return log_avg, lmax


def _reinhard_parameters(rgb, key, white, delta, adaptation, dt_s, row_state, block=4, blocks_wanted=True,
                         statistics=None):
    """Scale ``key / L_avg`` (eq. 2), ``1 / L_white^2`` (eq. 4) and the block luminance (if wanted)."""
    if blocks_wanted:  # the local operator: block means as well, from its own pass
        log_avg, lmax, blocks = _statistics(rgb, delta, block, min(2, block), row_state, blocks_wanted)
    else:
        log_avg, lmax = _global_statistics(rgb, delta, row_state, statistics)
        blocks = np.empty((0, 0), np.float32)
    stats = _adapted(adaptation, dt_s, log_average=log_avg, max_luminance=max(lmax, _MIN_LUM))
    scale = key / stats["log_average"]
    l_white = white if white is not None else stats["max_luminance"] * scale
    return scale, 1.0 / max(l_white, 1e-6) ** 2, blocks


def reinhard_global(
    radiance: np.ndarray,
    *,
    key: float = 0.18,
    white: float | None = None,
    delta: float = 1e-6,
    color: str = "schlick",
    saturation: float = 1.0,
    adaptation: TemporalAdaptation | None = None,
    dt_s: float | None = None,
    out: np.ndarray | None = None,
    statistics: tuple[float, float] | None = None,
) -> np.ndarray:
    """Reinhard et al.'s photographic global operator; sRGB uint8 output.

    ``L_m = key / L_avg * L_w`` (eq. 2) with the log-average ``L_avg`` (eq. 1), then
    ``L_d = L_m (1 + L_m / L_white^2) / (1 + L_m)`` (eq. 4).

    Parameters
    ----------
    key : float
        Key value ``a`` (0.18 for a normal-key scene); > 0.
    white : float, optional
        Smallest scaled luminance mapped to white (> 0); default the scene maximum over every
        pixel (so the brightest pixel maps exactly to white).
    delta : float
        Small offset (> 0) of the log-average (eq. 1) so black pixels do not give log 0.
    color, saturation
        Colour correction (``schlick`` or ``mantiuk``) and its saturation ``s``.
    adaptation : TemporalAdaptation, optional
        Smooths the log-average and white point across video frames.
    statistics : (log_average, max_luminance), optional
        This frame's statistics, measured already (``frame_statistics(radiance)[:2]`` with the
        same ``delta``; the runtime's merge gathers them as it writes the radiance,
        ``edgehdr.hdr.MergeStatistics``): the statistics pass over the frame is skipped.

    References
    ----------
    E. Reinhard, M. Stark, P. Shirley and J. Ferwerda, "Photographic tone
    reproduction for digital images," ACM TOG 21(3), 2002.
    """
    _require_positive(key=key, white=white)
    _require_delta(delta)
    rgb = _check_radiance(radiance)
    rows = _unchecked_rows(rgb.shape[0])
    scale, inv_white2, _ = _reinhard_parameters(rgb, key, white, delta, adaptation, dt_s, rows, blocks_wanted=False,
                                                statistics=statistics)
    return _run_apply(rgb, _apply_reinhard_global, (scale, inv_white2), color, saturation, out, who="tonemap reinhard",
                      row_state=rows)


def reinhard_local(
    radiance: np.ndarray,
    *,
    key: float = 0.18,
    white: float | None = None,
    delta: float = 1e-6,
    filter: str = "guided",
    radius_fraction: float = 0.025,
    eps: float = 0.1,
    block: int = 4,
    base_compression: float = 0.0,
    color: str = "schlick",
    saturation: float = 1.0,
    adaptation: TemporalAdaptation | None = None,
    dt_s: float | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Reinhard's local operator with an edge-aware local adaptation luminance.

    ``L_d = L_m (1 + L_m / L_white^2) / (1 + V)`` where ``V`` is the local average
    of ``L_m`` (Reinhard et al. 2002, eq. 9). Reinhard picks ``V`` from Gaussian
    scales; the tutorial shows that an edge-aware filter avoids the halos a plain
    Gaussian leaves at strong edges. Here ``V = exp(guided(log L_m))`` by default.

    Parameters
    ----------
    filter : {'guided', 'bilateral', 'gaussian'}
        Edge-aware guided filter on log luminance (default, fast), bilateral on log
        luminance (Durand & Dorsey 2002), or Reinhard's linear Gaussian average,
        which halos at strong edges (kept for comparison).
    radius_fraction : float
        Filter radius as a fraction of the frame's long side (> 0; at least one working pixel).
    eps : float
        Guided-filter regulariser in (natural-log luminance)^2 (> 0); the bilateral
        filter uses ``sqrt(eps)`` as its range sigma.
    block : int
        Down-sampling factor of the filter's working resolution (>= 1). The filter's
        coefficients are interpolated back at the blocks' centres, in both directions.
    base_compression : float in [0, 1)
        Durand and Dorsey's base-layer compression folded into eq. 9: ``L_m`` and
        ``V`` are both multiplied by ``(key / V)^beta``, so the base layer ``log V``
        is compressed towards the key by the factor ``1 - beta`` while the detail
        ``L_m / V`` is kept. 0 (default) is Reinhard's operator; about 0.5 brings a
        room 10 stops below a sunlit wall to 5 stops below it, where eq. 9 alone
        leaves it black.

    References
    ----------
    E. Reinhard et al., ACM TOG 21(3), 2002. F. Durand and J. Dorsey, "Fast bilateral
    filtering for the display of high-dynamic-range images," ACM TOG 21(3), 2002.
    K. He and J. Sun, "Fast guided filter," arXiv:1505.00996, 2015.
    """
    if filter not in LOCAL_FILTERS:
        raise ValueError(f"unknown filter {filter!r}; use one of {', '.join(LOCAL_FILTERS)}")
    if not 0.0 <= base_compression < 1.0:
        raise ValueError(f"base_compression must be in [0, 1), got {base_compression}")
    _require_positive(key=key, white=white, radius_fraction=radius_fraction, eps=eps)
    _require_delta(delta)
    _require_block(block)
    rgb = _check_radiance(radiance)
    h, w, _ = rgb.shape
    rows = _unchecked_rows(h)
    scale, inv_white2, blocks = _reinhard_parameters(rgb, key, white, delta, adaptation, dt_s, rows, block)
    log_lm = np.log(np.maximum(blocks * np.float32(scale), np.float32(_MIN_LUM)))
    radius = max(1, int(round(radius_fraction * max(h, w) / block)))
    coef: tuple[np.ndarray, ...]
    if filter == "guided":
        coef = guided_coefficients(log_lm, log_lm, radius, eps)
    else:
        if filter == "bilateral":
            smooth = cv2.bilateralFilter(log_lm, 2 * radius + 1, math.sqrt(eps), radius / 2.0)
        else:
            # Reinhard's own local average: a Gaussian of L_m in the linear domain.
            smooth = np.log(np.maximum(cv2.GaussianBlur(np.exp(log_lm), (0, 0), radius / 2.0), _MIN_LUM))
        coef = (np.zeros_like(smooth), np.ascontiguousarray(smooth, np.float32))
    # Horizontal half of the bilinear upsampling here; the kernel blends the two rows around each output row,
    # at the block centres: row y at (y + 0.5) / block - 0.5. The columns must sit at the same centres, so the
    # maps are widened to nbx * block columns (scale exactly 1 / block) and the kernel reads the first w: a
    # widening to w would scale by nbx / w and shift the map by up to a block where w is not a multiple of it.
    nbx = coef[0].shape[1]
    wide = widen_maps(np.stack([np.asarray(c, np.float32) for c in coef]), nbx * block)
    coef = (wide[0], wide[1])
    return _run_apply(rgb, _apply_reinhard_local, (scale, inv_white2, base_compression, math.log2(key)), color,
                      saturation, out,
                      coef=coef, block=block, who="tonemap reinhard-local", row_state=rows)


def drago(
    radiance: np.ndarray,
    *,
    bias: float = 0.85,
    max_display_cd_m2: float = 100.0,
    delta: float = 1e-6,
    color: str = "schlick",
    saturation: float = 1.0,
    adaptation: TemporalAdaptation | None = None,
    dt_s: float | None = None,
    out: np.ndarray | None = None,
    statistics: tuple[float, float] | None = None,
) -> np.ndarray:
    """Drago et al.'s adaptive logarithmic mapping (2003, eq. 4).

    ``L_d = (L_dmax / 100) / log10(L_wmax + 1) * ln(L_w + 1) / ln(2 + 8 (L_w / L_wmax)^(ln b / ln 0.5))``
    with ``L_w`` in units of the world adaptation luminance (the log-average,
    exposure-adjusted by ``(1 + b - 0.85)^5`` as in the authors' code). ``bias`` ``b`` in
    [0.5, 1]; ``max_display_cd_m2`` ``L_dmax`` > 0. ``statistics``: this frame's
    ``(log_average, max_luminance)`` measured already, as ``reinhard_global``'s.

    References
    ----------
    F. Drago, K. Myszkowski, T. Annen and N. Chiba, "Adaptive logarithmic mapping
    for displaying high contrast scenes," Computer Graphics Forum 22(3), 2003.
    """
    if not 0.5 <= bias <= 1.0:
        raise ValueError(f"bias must be in [0.5, 1], got {bias}")
    _require_positive(max_display_cd_m2=max_display_cd_m2)
    _require_delta(delta)
    rgb = _check_radiance(radiance)
    rows = _unchecked_rows(rgb.shape[0])
    log_avg, lmax = _global_statistics(rgb, delta, rows, statistics)
    stats = _adapted(adaptation, dt_s, log_average=log_avg, max_luminance=max(lmax, _MIN_LUM))
    l_wa = stats["log_average"] / (1.0 + bias - 0.85) ** 5
    l_wmax = max(stats["max_luminance"] / l_wa, 1e-6)
    params = (1.0 / l_wa, 1.0 / l_wmax, math.log(bias) / math.log(0.5),
              (max_display_cd_m2 / 100.0) / math.log10(l_wmax + 1.0))
    return _run_apply(rgb, _apply_drago, params, color, saturation, out, who="tonemap drago", row_state=rows)


def parametric(
    radiance: np.ndarray,
    *,
    alpha: float = 0.8,
    mu: float | None = None,
    gamma: float = 0.8,
    key: float = 0.18,
    delta: float = 1e-6,
    color: str = "schlick",
    adaptation: TemporalAdaptation | None = None,
    dt_s: float | None = None,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """The tutorial's parametric operator ``L_d = L_w^alpha / (L_w^alpha + mu)``, ``C_d = (C_w / L_w)^gamma L_d``.

    A sigmoid in log luminance (Naka–Rushton form); ``alpha`` sets contrast, ``mu``
    the mid-point, ``gamma`` the saturation. With ``mu`` unset it is chosen so that
    the log-average luminance maps to ``key / (1 + key)``, like Reinhard's key: any
    ``key > 0`` puts that target inside (0, 1). ``alpha``, ``mu`` and ``key`` must be
    finite and > 0, ``gamma`` in [0, 2].
    These are the parameters the real-time neural TMO predicts per region.

    References
    ----------
    F. Banterle and A. Artusi, "Modern HDR imaging at the time of deep learning"
    (tutorial), tone mapping section; K.-I. Naka and W. A. H. Rushton, J. Physiol. 1966.
    """
    _require_positive(alpha=alpha, mu=mu, key=key)
    _require_delta(delta)
    rgb = _check_radiance(radiance)
    rows = _unchecked_rows(rgb.shape[0])
    if mu is None:
        log_avg, lmax, _ = _statistics(rgb, delta, 4, 2, rows, blocks_wanted=False)
        stats = _adapted(adaptation, dt_s, log_average=log_avg, max_luminance=max(lmax, _MIN_LUM))
        target = key / (1.0 + key)
        mu = stats["log_average"] ** alpha * (1.0 - target) / target
    _require_positive(mu=mu)  # one computed from an overflowed log-average is not
    return _run_apply(rgb, _apply_parametric, (alpha, mu), color, gamma, out, who="tonemap parametric",
                      row_state=rows, saturation_name="gamma")


def tonemap(radiance: np.ndarray, operator: str = "reinhard", **params) -> np.ndarray:
    """Dispatch by name: ``reinhard``, ``reinhard-local``, ``drago``, ``parametric``.

    Every operator treats non-finite pixels alike (see the module docstring): left out
    of the statistics, shown black (NaN, -inf) or white (+inf), one warning per call
    on the ``edgehdr.tonemap`` logger; ``ValueError`` when no pixel is finite.
    """
    table: dict[str, Callable[..., np.ndarray]] = {"reinhard": reinhard_global, "reinhard-local": reinhard_local,
                                                   "drago": drago, "parametric": parametric}
    try:
        fn = table[operator]
    except KeyError:
        raise ValueError(f"unknown operator {operator!r}; use one of {', '.join(OPERATORS)}") from None
    return fn(radiance, **params)
