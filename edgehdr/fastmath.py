"""Vectorisable float32 ``exp2``/``log2`` for numba kernels (polynomials on IEEE-754 bits), and the row of
luminance statistics built on them that the tone mappers' statistics pass and the merge share.

libm's ``expf``/``logf`` are opaque calls that stop LLVM from vectorising a pixel
loop; these are plain arithmetic on the float's exponent and mantissa, so loops
that use them run in SIMD. Kernels read and write the bit patterns through int32
views of float32 row buffers. Error, measured against float64: exp2 below 8.4e-6 relative
(the degree-6 polynomial's own error, largest as the fraction nears 1) over [-126, 126];
log2 below 5.1e-6 absolute plus the float32 rounding of the result, which fastmath's
reassociation may round twice: at most 1.14e-5 over every positive normal float (every
16th bit pattern; the largest at log2 = -126, 1.1e-5 near log2 = 71). Domains: exp2 for
arguments in [-126, 126], log2 for positive normal floats (not 0, subnormals, inf or NaN);
every caller clamps to them.

numba caches a kernel under its own module's file: the kernels in other modules that
inline these would keep a stale cache after a change here; ``edgehdr.kernelcache`` drops
their cached kernels when this file (or another helper module) changed.
"""

from __future__ import annotations

import numba
import numpy as np

from edgehdr.kernelcache import drop_stale_dependents

__all__ = ["exp2_bits", "log2_from_bits", "luminance_log_row"]

# Other modules' kernels inline this module's functions: their cached kernels go when it changed (edgehdr.kernelcache).
drop_stale_dependents()


@numba.njit(fastmath=True, cache=True, inline="always")
def exp2_bits(t: np.float32) -> np.int32:
    """Bit pattern (int32) of the float32 ``2^t`` for ``t`` in [-126, 126]."""
    # 2^floor(t) goes in the exponent field, 2^frac(t) (degree-6 polynomial) in the mantissa. The exponent is the
    # float floor scaled by 2^23 (exact). It used to be int(t + 1000) - 1000 shifted, which is slower in a pixel
    # loop (6.2 M values 3.04 against 1.98 ms on one core) and wrong where t + 1000 rounds up to the next integer
    # (fractions above 0.99994): the fraction then went slightly negative and its mantissa correction landed in
    # the binade below at half weight, 2.1e-5 relative error against 8.4e-6 now.
    k = np.floor(t)
    f = t - k
    p = np.float32(1.0) + f * (np.float32(0.6931472) + f * (np.float32(0.2402265) + f * (
        np.float32(0.05550411) + f * (np.float32(0.009618129) + f * (np.float32(0.001333355)
                                                                   + f * np.float32(0.0001540353))))))
    return (np.int32(0x3F800000) + np.int32(k * np.float32(8388608.0))
            + np.int32((p - np.float32(1.0)) * np.float32(8388608.0)))


@numba.njit(fastmath=True, cache=True, inline="always")
def log2_from_bits(bits: np.int32) -> np.float32:
    """``log2(x)`` of a positive, normal float32 ``x`` given its bit pattern (int32)."""
    exponent = np.float32(((bits >> 23) & 0xFF) - 127)
    # Mantissa in [1, 2) rebuilt arithmetically from its 23 fraction bits.
    m = np.float32(bits & 0x7FFFFF) * np.float32(1.0 / 8388608.0)
    poly = np.float32(5.06477678e-06) + m * (np.float32(1.44239549) + m * (np.float32(-0.716986952) + m * (
        np.float32(0.45385646) + m * (np.float32(-0.272353455) + m * (np.float32(0.11790537)
                                                                     + m * np.float32(-0.0248256486))))))
    return exponent + poly


_LUMA_R, _LUMA_G, _LUMA_B = 0.2126, 0.7152, 0.0722  # Rec. 709
# Luminance counts as at most this much in the tone mappers and their statistics: 1 / L stays a normal float32
# (above 2^126, about 8.5e37, it is subnormal and fastmath flushes it to 0: the pixel went black), and products
# and block sums stay finite.
_MAX_LUM = 1e30
_LN2 = 0.6931471805599453


@numba.njit(fastmath=True, cache=True, inline="always")
def luminance_log_row(src, lum_row, log_row, log_bits, stride, delta):
    """One interleaved RGB row ``src`` (3 W float32): Rec. 709 luminance into ``lum_row`` (W), then
    ``log2(delta + max(L, 0))`` of every ``stride``-th pixel (``log_row`` holds ``ceil(W / stride)``,
    ``log_bits`` is its int32 view, made once by the caller: a view made here, per row, cost the
    statistics pass 0.8 ms of its 3 at 1080p).

    Returns ``(sum of their natural logs, float64; peak luminance, float32)``, for Reinhard et al.'s
    log-average (2002, eq. 1): branch-free passes over row buffers, each vectorised (the log2 values
    summed in float32 per row, then converted).
    """
    w = lum_row.size
    peak = np.float32(0.0)
    for x in range(w):
        lum = (np.float32(_LUMA_R) * src[3 * x] + np.float32(_LUMA_G) * src[3 * x + 1]
               + np.float32(_LUMA_B) * src[3 * x + 2])
        lum_row[x] = lum
        peak = max(peak, lum)
    n_log = log_row.size
    for i in range(n_log):
        log_row[i] = delta + max(lum_row[i * stride], np.float32(0.0))
    total = np.float32(0.0)
    for i in range(n_log):
        total += log2_from_bits(log_bits[i])
    return np.float64(total) * _LN2, peak
