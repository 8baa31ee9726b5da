"""Filling the samples no exposure measures: normalized convolution of the measured log radiance around them.

A merge gives a sample that every frame saw clipped or black (or that the consistency gate left only clipped or
black readings of) a bound, not a measurement: the shortest clipped frame's value is a lower bound on the radiance,
the longest black frame's an upper one. On a moving object over a clipped reference, and on JPEG brackets where a
clipped highlight rings, these samples are a few per cent of the frame and hold a third to three quarters of the
merge's PU21 error (``evaluate_merge --real``). Their neighbours often are measured: the sky around a patch of sky
the reference clipped and a moving object hid from the short frame. ``fill_unmeasured`` estimates each clipped
sample from its neighbours that are measured and at least as bright as the reference's clip level (``bright_log2``,
in some channel): normalized convolution (Knutsson & Westin 1993), ``F = G * (m L) / G * m`` with ``L`` the log2
radiance, ``m`` the mask of such neighbours and ``G`` a Gaussian, at three scales (sigma 1, 4 and 16 blocks of 4 x 4
pixels, i.e. 4, 16 and 64 pixels; the finest scale with enough support wins), i.e. the expected radiance of a pixel
here that the reference could not measure either. Where the estimate lies above the bound in every clipped channel
of a pixel, those channels rise together by the mean log2 excess (a fully clipped pixel keeps its bound's hue; a
partly clipped one keeps its measured channels). Nothing measured changes; a sample with no such neighbour within
the coarsest scale (up to about half a coarse cell less at the edge of the support: bilinear upsampling spreads an
unsupported cell's NaN), and every upper bound (black in every frame), keep their bound.

Choices, measured with the merge network on ``evaluate_merge --real`` (PU21-PSNR, moving brackets, held-out
photographs / synthetic scenes): every measured neighbour as support 25.04 / 26.87 dB, only those reaching the
reference's clip in some channel 25.27 / 27.30, in every channel 25.10 / 27.53; filling upper bounds too (from every
measured neighbour) changed nothing on the photographs and 0.01 dB on the synthetic scenes. Whole pixels only (all
three channels measured) and the pixel's channels together: channel by channel, a clipped disc's edge turned pink
where its brightest channel's neighbours were clipped as well (0.1 dB more, not kept).

The estimate works on a grid of 4 x 4 blocks sampled on one row per block (the fused merge kernels accumulate that
row while they merge; ``block_log2_sums`` for a merge that does not), so the fill costs a few small blurs and a
sparse pass over the pixels that fall back.

References
----------
H. Knutsson and C.-F. Westin, "Normalized and differential convolution," CVPR 1993.
F. Banterle and A. Artusi, "Modern HDR imaging at the time of deep learning" (tutorial): the merge's weighting
function gives clipped and black samples no weight, which leaves them to a rule.
"""

from __future__ import annotations

import cv2
import numba
import numpy as np

from edgehdr.fastmath import exp2_bits, log2_from_bits
from edgehdr.kernelcache import drop_stale_dependents

__all__ = ["FILL_BLOCK", "MEASURED", "LOWER_BOUND", "UPPER_BOUND", "KEPT", "add_support", "block_log2_sums",
           "fill_buffers", "fill_grid", "fill_unmeasured", "reference_clip_log2", "sample_row"]

FILL_BLOCK = 4  # pixels per block side of the estimate's grid
FILL_SCALES = 3  # Gaussian sigma 1 block, then 4 and 16 blocks (each coarser grid 4x smaller, sigma 1 there)
FILL_MIN_SUPPORT = 0.02  # the blurred fraction of supporting pixels a scale needs to give an estimate
# ``flags`` values: measured; clipped (a lower bound, the fill's to raise); black (an upper bound, kept); fell back
# on a reading the fill must not trust (kept: the classical merge's bright reading in a frame longer than a reference
# that reads black)
MEASURED, LOWER_BOUND, UPPER_BOUND, KEPT = 0, 1, 2, 3
assert FILL_BLOCK == 4  # add_support sums its blocks' four pixels written out

# ``sample_row`` and ``add_support`` are inlined into the merge kernels: their cached kernels go when this file
# changes.
drop_stale_dependents()


@numba.njit(cache=True, inline="always")
def sample_row(block_row: int, n_rows: int) -> int:
    """The image row that stands for block row ``block_row`` in the estimate: its middle row (the last row of a
    partial block at the bottom)."""
    return min(FILL_BLOCK * block_row + FILL_BLOCK // 2, n_rows - 1)


@numba.njit(cache=True, inline="always")
def add_support(sums_row, counts_row, log2_row, weight_row, threshold, bright):
    """A block row's ``sample_row`` into that row's block sums and counts (``sums_row``/``counts_row`` (cols, 3)):
    each pixel that supports the fill, i.e. measured in all three channels (``weight_row[3 x + c] > threshold``)
    and at least ``bright`` (``reference_clip_log2``) in one (``log2_row``: the row's log2 radiance, channels
    interleaved). The merge kernels' side of ``block_log2_sums``, which they gather as they merge. Two passes: each
    pixel's masked values, then the sums of four; a pixel at a time into its cell (a read-modify-write chain on
    the four pixels' common cell) took 3x as long (1.18 against 0.39 ms for 270 rows of 1920 pixels, two cores)."""
    n_cols = log2_row.shape[0] // 3
    n_blocks = sums_row.shape[0]
    masked = np.zeros((4, FILL_BLOCK * n_blocks), np.float32)  # r0, r1, r2 where supporting, and the support
    m0, m1, m2, mc = masked[0], masked[1], masked[2], masked[3]
    b0, b1, b2 = bright[0], bright[1], bright[2]
    zero = np.float32(0.0)
    for x in range(n_cols):
        j = 3 * x
        r0, r1, r2 = log2_row[j], log2_row[j + 1], log2_row[j + 2]
        support = ((weight_row[j] > threshold) & (weight_row[j + 1] > threshold) & (weight_row[j + 2] > threshold)
                   & ((r0 >= b0) | (r1 >= b1) | (r2 >= b2)))
        m0[x] = r0 if support else zero
        m1[x] = r1 if support else zero
        m2[x] = r2 if support else zero
        mc[x] = np.float32(1.0) if support else zero
    for bx in range(n_blocks):  # FILL_BLOCK is 4; a partial block's missing pixels are zero
        k = FILL_BLOCK * bx
        count = mc[k] + mc[k + 1] + mc[k + 2] + mc[k + 3]
        sums_row[bx, 0] += m0[k] + m0[k + 1] + m0[k + 2] + m0[k + 3]
        sums_row[bx, 1] += m1[k] + m1[k + 1] + m1[k + 2] + m1[k + 3]
        sums_row[bx, 2] += m2[k] + m2[k + 1] + m2[k + 2] + m2[k + 3]
        counts_row[bx, 0] += count
        counts_row[bx, 1] += count
        counts_row[bx, 2] += count


def fill_buffers(h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """What a merge kernel fills for ``fill_unmeasured`` on an (h, w) frame: ``flags`` (h, w, 3) uint8, each row's
    count of samples that fell back (h,) int32, and the block grid's ``block_log2_sums`` sums and counts, zeroed."""
    grid_shape = (-(-h // FILL_BLOCK), -(-w // FILL_BLOCK), 3)
    return (np.empty((h, w, 3), np.uint8), np.zeros(h, np.int32), np.zeros(grid_shape, np.float32),
            np.zeros(grid_shape, np.float32))


def reference_clip_log2(log2_lut: np.ndarray, reference_exposure: float) -> np.ndarray:
    """Per channel, the log2 radiance at the reference frame's highest code the merges count as measured
    (``edgehdr.hdr.deghost.clip_margin_codes`` below full scale; ``log2_lut`` (3, levels) is log2 of the inverse
    response): the level a neighbour must reach in some channel to support the fill (``bright_log2``)."""
    from edgehdr.hdr.deghost import clip_margin_codes

    levels = log2_lut.shape[1]
    code = levels - 1 - clip_margin_codes(levels)
    return np.ascontiguousarray(log2_lut[:, code] - np.log2(reference_exposure), dtype=np.float32)


def block_log2_sums(radiance: np.ndarray, flags: np.ndarray,
                    bright_log2: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per 4 x 4 block and channel, the sum of log2 radiance over the supporting pixels of its ``sample_row`` and
    their count: what the fused merge kernels accumulate as they merge, for a merge that does not. A pixel supports
    the fill when all three of its channels are measured (so that every channel's estimate comes from the same
    neighbours) and, with ``bright_log2``, one of them reaches that level (log2 radiance, per channel)."""
    h, w, ch = radiance.shape
    rows = np.array([sample_row(b, h) for b in range(-(-h // FILL_BLOCK))])
    pad = -w % FILL_BLOCK
    with np.errstate(divide="ignore", invalid="ignore"):
        log2_rad = np.log2(radiance[rows].astype(np.float64))
    support = (flags[rows] == MEASURED).all(axis=-1, keepdims=True)
    if bright_log2 is not None:
        support &= (log2_rad >= np.asarray(bright_log2, np.float64)).any(axis=-1, keepdims=True)
    support = np.repeat(support, ch, axis=-1)
    logs = np.where(support, log2_rad, 0.0)
    logs = np.pad(logs, ((0, 0), (0, pad), (0, 0))).reshape(len(rows), -1, FILL_BLOCK, ch)
    counts = np.pad(support, ((0, 0), (0, pad), (0, 0))).reshape(len(rows), -1, FILL_BLOCK, ch)
    return logs.sum(axis=2).astype(np.float32), counts.sum(axis=2).astype(np.float32)


def _mean4(a: np.ndarray) -> np.ndarray:
    """4 x 4 means of an (h, w, c) grid, zero-padded to whole cells (zero sums and counts add nothing to a normalized
    convolution, and the same scale on both leaves the ratio): OpenCV's area resampling at an integer factor, 0.2
    against 3 ms for NumPy's pad and reshaped sum at 1080p's grid."""
    h, w, c = a.shape
    a = cv2.copyMakeBorder(a, 0, -h % 4, 0, -w % 4, cv2.BORDER_CONSTANT, value=0)
    return cv2.resize(a, (a.shape[1] // 4, a.shape[0] // 4), interpolation=cv2.INTER_AREA).reshape(
        a.shape[0] // 4, a.shape[1] // 4, c)


@numba.njit(parallel=True, cache=True, nogil=True)
def _combine(blurred_sums, blurred_counts, min_count, coarse):
    """The finest scale's ratio where its blurred count reaches ``min_count``, else the first of the coarser
    estimates ``coarse`` (levels, rows, cols, ch; upsampled, NaN where they lack support; none when no cell lacks
    support) that is not NaN, else NaN. Not fastmath: NaN is a value here. One array type whatever the levels: a
    second compilation at the first frame with full support would stall the runtime."""
    rows, cols, ch = blurred_sums.shape
    out = np.empty((rows, cols, ch), np.float32)
    nan = np.float32(np.nan)
    # Flat rows, one pass per level: vectorised (0.09 against 1.9 ms on 1080p's grid for a loop over (x, c) taking
    # the levels in turn per value).
    for y in numba.prange(rows):
        s, n, o = blurred_sums[y].reshape(-1), blurred_counts[y].reshape(-1), out[y].reshape(-1)
        for j in range(cols * ch):
            o[j] = s[j] / n[j] if n[j] >= min_count else nan
        for k in range(coarse.shape[0]):
            c = coarse[k, y].reshape(-1)
            for j in range(cols * ch):
                value = o[j]
                o[j] = c[j] if value != value else value
    return out


def _blur(a: np.ndarray) -> np.ndarray:
    # sigma 1 cell over 5 x 5 taps (OpenCV would take 9 for float data: 0.56 ms a call on 1080p's grid)
    return cv2.GaussianBlur(a, (5, 5), 1.0, borderType=cv2.BORDER_REFLECT).reshape(a.shape)


def fill_grid(sums: np.ndarray, counts: np.ndarray) -> np.ndarray:
    """The normalized convolution of the measured log2 radiance on the block grid (rows, cols, 3): at each scale
    ``G * sums / G * counts`` where the blurred count reaches ``FILL_MIN_SUPPORT`` of the samples a cell stands for,
    the finest such scale per cell and channel; NaN where no scale has support (the sample keeps its bound).
    The coarser scales are computed on their own small grids, only when a cell lacks support at the finest, and
    resampled bilinearly to the block grid (each coarse cell's centre at its 4^level cells' centre)."""
    rows, cols, ch = sums.shape
    s, n = np.ascontiguousarray(sums, np.float32), np.ascontiguousarray(counts, np.float32)
    min_count = np.float32(FILL_MIN_SUPPORT * FILL_BLOCK)
    blurred_sums, blurred_counts = _blur(s), _blur(n)
    coarse = np.empty((0, rows, cols, ch), np.float32)
    if (blurred_counts < min_count).any():
        coarse = np.empty((FILL_SCALES - 1, rows, cols, ch), np.float32)
        for level in range(1, FILL_SCALES):
            # coarser cells hold the mean of 4 x 4 finer ones: the count a cell stands for stays the same
            s, n = _mean4(s), _mean4(n)
            bs, bn = _blur(s), _blur(n)
            with np.errstate(divide="ignore", invalid="ignore"):
                est = np.where(bn >= min_count, bs / bn, np.float32(np.nan)).astype(np.float32)
            scale = 4 ** level
            up = cv2.resize(est, (est.shape[1] * scale, est.shape[0] * scale), interpolation=cv2.INTER_LINEAR)
            coarse[level - 1] = up.reshape(est.shape[0] * scale, est.shape[1] * scale, ch)[:rows, :cols]
    return _combine(blurred_sums, blurred_counts, min_count, coarse)


@numba.njit(cache=True, inline="always")
def _bilinear(g0, g1, fy, i0, i1, fx):
    """Bilinear between two grid rows (flat, channels interleaved) at flat indices ``i0``/``i1``."""
    top = g0[i0] + fx * (g0[i1] - g0[i0])
    bottom = g1[i0] + fx * (g1[i1] - g1[i0])
    return top + fy * (bottom - top)


@numba.njit(cache=True, inline="always")
def _fill_pixel(f, o, x, g0, g1, fy, g_cols, centre):
    """Pixel ``x`` of a row (``f`` its flags, ``o`` its float bits): when the grid's bilinear estimate lies above
    the bound in every ``LOWER_BOUND`` channel, those channels all rise by the mean of the excesses (log2), so a
    fully clipped pixel keeps its bound's hue and takes its neighbours' brightness; else, or where an estimate is
    NaN (no support), the pixel stays as it is. Taking each channel's estimate gave the same PU21 but painted a
    neighbour's colour into the clipped samples (a sunlit field's yellow into a white disc) and, where a channel's
    estimate fell below its bound, pink edges."""
    j = 3 * x
    if not (f[j] == LOWER_BOUND or f[j + 1] == LOWER_BOUND or f[j + 2] == LOWER_BOUND):
        return
    gx = min(max((np.float32(x) - centre) / FILL_BLOCK, np.float32(0.0)), np.float32(g_cols - 1))
    x0 = min(int(gx), g_cols - 1)
    x1 = min(x0 + 1, g_cols - 1)
    fx = gx - np.float32(x0)
    e0 = _bilinear(g0, g1, fy, 3 * x0, 3 * x1, fx)
    e1 = _bilinear(g0, g1, fy, 3 * x0 + 1, 3 * x1 + 1, fx)
    e2 = _bilinear(g0, g1, fy, 3 * x0 + 2, 3 * x1 + 2, fx)
    total = np.float32(0.0)
    count = 0
    for c in range(3):
        if f[j + c] == LOWER_BOUND:
            excess = (e0 if c == 0 else (e1 if c == 1 else e2)) - log2_from_bits(o[j + c])
            if not excess > 0:  # also NaN: no support
                return
            total += excess
            count += 1
    shift = total / np.float32(count)
    for c in range(3):
        if f[j + c] == LOWER_BOUND:
            raised = log2_from_bits(o[j + c]) + shift
            # Never below the bound: the log2 / exp2 polynomials' round trip can land a hair under it for a tiny
            # excess (positive floats' bits order as the floats do).
            o[j + c] = max(o[j + c], exp2_bits(max(min(raised, np.float32(126.0)), np.float32(-126.0))))


@numba.njit(parallel=True, cache=True, nogil=True)
def _apply_fill(out_bits, flags, rows_with, grid):
    """Each pixel with a lower bound in the rows ``rows_with`` (``_fill_pixel``; cell centres at the blocks'
    centres), compared and written as log2 / float bits (``edgehdr.fastmath``), the row scanned 16 pixels at a time
    (most hold no flag). Not fastmath: a NaN estimate (no support) must be seen."""
    n_cols = out_bits.shape[1]
    g_rows, g_cols = grid.shape[0], grid.shape[1]
    centre = np.float32((FILL_BLOCK - 1) / 2.0)  # across: a cell's mean is its block's centre
    row_centre = np.float32(FILL_BLOCK // 2)  # down: a cell is its block's ``sample_row``
    for r in numba.prange(rows_with.shape[0]):
        y = rows_with[r]
        gy = min(max((np.float32(y) - row_centre) / FILL_BLOCK, np.float32(0.0)), np.float32(g_rows - 1))
        y0 = min(int(gy), g_rows - 1)
        y1 = min(y0 + 1, g_rows - 1)
        fy = gy - np.float32(y0)
        f = flags[y].reshape(-1)
        o = out_bits[y].reshape(-1)
        g0 = grid[y0].reshape(-1)
        g1 = grid[y1].reshape(-1)
        n = 3 * n_cols
        for j0 in range(0, n - 47, 48):  # 16 pixels at a time
            flagged = 0
            for j in range(48):  # a fixed count, summed as int32: vectorised (0.4 against 2.7 ms for a uint8 OR
                flagged += np.int32(f[j0 + j])  # over variable bounds, 673 rows of 5760 samples)
            if flagged == 0:
                continue
            for x in range(j0 // 3, j0 // 3 + 16):
                _fill_pixel(f, o, x, g0, g1, fy, g_cols, centre)
        for x in range(n // 48 * 16, n_cols):
            _fill_pixel(f, o, x, g0, g1, fy, g_cols, centre)


def fill_unmeasured(radiance: np.ndarray, flags: np.ndarray, *, bright_log2: np.ndarray | None = None,
                    sums: np.ndarray | None = None, counts: np.ndarray | None = None,
                    rows_with: np.ndarray | None = None) -> np.ndarray:
    """Raise, in place, the clipped samples of each pixel towards the normalized convolution of the log2 radiance of
    its measured neighbours at least as bright as ``bright_log2`` in some channel: by the mean log2 excess, where
    every clipped channel of the pixel lies below its estimate (module docstring).

    ``radiance`` (h, w, 3) float32 as merged; ``flags`` (h, w, 3) uint8: ``MEASURED``, ``LOWER_BOUND`` (clipped: the
    estimate is taken where higher), ``UPPER_BOUND`` (black: kept) or ``KEPT``. ``bright_log2`` (3,): the support's
    level, ``reference_clip_log2`` (None: every measured pixel supports). ``sums``/``counts``: the block grid's
    ``block_log2_sums`` when the merge kernel gathered them (then ``bright_log2`` is the kernel's business);
    ``rows_with``: the rows holding a flagged sample (every row when not given). Returns ``radiance``.
    """
    if radiance.ndim != 3 or radiance.shape[2] != 3 or radiance.dtype != np.float32:
        raise ValueError(f"radiance must be (h, w, 3) float32, got {radiance.shape} {radiance.dtype}")
    if not radiance.flags.c_contiguous:
        raise ValueError("radiance must be C-contiguous (it is filled in place)")
    if flags.shape != radiance.shape or flags.dtype != np.uint8:
        raise ValueError(f"flags must be {radiance.shape} uint8, got {flags.shape} {flags.dtype}")
    flags = np.ascontiguousarray(flags)
    if sums is None or counts is None:
        sums, counts = block_log2_sums(radiance, flags, bright_log2)
    if rows_with is None:
        rows_with = np.arange(radiance.shape[0], dtype=np.int64)
    if rows_with.size == 0 or not counts.any():
        return radiance
    _apply_fill(radiance.view(np.int32), flags, np.ascontiguousarray(rows_with, np.int64), fill_grid(sums, counts))
    return radiance
