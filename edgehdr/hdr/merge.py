"""Exposure merging: N LDR frames -> one linear radiance map (the ``Radiance`` contract).

Debevec & Malik's weighted average in the log domain (1997, eq. 6),

    ln E = sum_j w(Z_j) (g(Z_j) - ln dt_j) / sum_j w(Z_j),

computed by one fused numba kernel that reads the stacked uint8/uint16 frames
once and writes float32 radiance: per-row buffers, no full-size temporaries,
one packed fixed-point table read per sample (weight and weighted log together). Pixels that
are clipped (or black) in every frame fall back to the darkest (or brightest)
frame's bound, so the result has no holes, NaN or inf. Optional deghosting
rejects, per frame and pixel, samples inconsistent with a reference exposure
(``edgehdr.hdr.deghost``).

Everything that depends only on the response, the bit depth and the weighting
(resolved response, log LUT, weights), and the packed tables that add the
exposures and gains, is kept in a small LRU, so a video merge pays the table
construction once; a response is recognised by its LUT's content, not its
identity, so a different curve never reuses another's tables.

With ``statistics=MergeStatistics(...)`` the kernel also measures each radiance row
while it is in the cache: the global tone mappers' log-average and peak and the local
dimming's zone maxima, so that the runtime's next stages skip a pass over the frame each.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field
from typing import TypeAlias

import numba
import numpy as np
from numpy.typing import ArrayLike

from edgehdr.bracket import Bracket, as_frame_stack, check_code_depth
from edgehdr.fastmath import _LUMA_B, _LUMA_G, _LUMA_R, _MAX_LUM, exp2_bits, log2_from_bits, luminance_log_row
from edgehdr.hdr.crf import RESPONSE_FILE_SUFFIXES, CameraResponse, ResponseLike, standard_response
from edgehdr.hdr.fill import (
    FILL_BLOCK,
    KEPT,
    LOWER_BOUND,
    MEASURED,
    UPPER_BOUND,
    add_support,
    fill_buffers,
    fill_unmeasured,
    reference_clip_log2,
    sample_row,
)
from edgehdr.hdr.weights import NoiseModel, noise_weights, weight_function, weight_lut, weighting_names

__all__ = ["FramesLike", "MergeStatistics", "merge_debevec", "resolve_response", "weighting_names"]


# What the merges take as frames: a Bracket (exposures and bits come with it), an (N, H, W, 3) stack or a list
# of (H, W, 3) frames.
FramesLike: TypeAlias = Bracket | np.ndarray | Sequence[np.ndarray]

_FIXED_BITS = 20  # fixed-point fraction bits of the packed tables
_MIN_FIXED_WEIGHT = 1 << 10  # positive fixed-point weights are raised to this (``_packed_tables``)
_SPAN = 256  # columns the merge works on at a time in rows wider than _SPAN_ABOVE
_SPAN_ABOVE = 2048
_DENSE_SHARE = 8  # a row with more than 1 / _DENSE_SHARE of its samples unmeasured takes the dense fallback


def _packed_tables(weights: np.ndarray, log_lut: np.ndarray, log_exposure: np.ndarray) -> tuple[np.ndarray, float]:
    """Per frame, channel and code: ``w`` and ``w (g - ln t + offset)`` in one int64.

    ``weights`` in [0, 1] per code (K,) or per frame, channel and code (N, C, K).

    High 32 bits: ``w`` in 12.20 fixed point; low 32 bits: the weighted log value,
    shifted by ``offset`` to be non-negative, in the same fixed point. Summing the
    int64s sums both parts at once (no carry: bounded below), so the kernel reads
    one table entry per sample instead of two. Returns ``(tables, offset)``.

    The low part is the rounded weight times the value, so that a sample's ``low / high`` is its weighted
    mean within ``0.5 / high``; a positive weight is at least ``_MIN_FIXED_WEIGHT`` (2^-10 of full weight),
    which bounds that error by 5e-4 in ln E. Rounding both parts separately, a noise weight of 1e-6 in a
    taper (``noise_weights``) put a sample one frame measured 5 stops off that frame's value at 16 bits, and
    4 % of an 8-bit scene's samples more than 0.05 off the float Debevec mean. Raising such weights to the
    floor (rather than dropping them) keeps every sample a frame measures measured: the fill and the
    statistics see the same samples as before; where another frame weighs more, the floor moves the mean by
    at most 2^-10 of the two frames' difference.
    """
    values = log_lut[None, :, :].astype(np.float64) - log_exposure[:, None, None].astype(np.float64)
    offset = -float(values.min())
    n = values.shape[0]
    span = float(values.max()) + offset
    if n * span * (1 << _FIXED_BITS) >= 2**32 or n >= 2048:
        raise ValueError(f"merge of {n} frames spanning {span:.0f} log units exceeds the packed fixed-point range")
    scale = float(1 << _FIXED_BITS)
    w = np.broadcast_to(weights.astype(np.float64), values.shape)
    high = np.where(w > 0, np.maximum(np.rint(w * scale), _MIN_FIXED_WEIGHT), 0).astype(np.int64)
    low = np.rint(high * (values + offset)).astype(np.int64)
    return np.ascontiguousarray((high << 32) | low), offset


def _fallback_table(order: np.ndarray, levels: int) -> np.ndarray:
    """Per frame and code an int64 whose maximum over a sample's frames names ``_fallback_frame``'s pick.

    High 32 bits a key: ``2 n - k`` for a bright code (``2 z >= levels - 1``) in the frame ``k``-th in ``order``
    (shortest first), ``k`` for any other code, so that the largest key is the shortest frame reading bright, else
    the longest frame; low 32 bits the frame index (bits 16-31) and the code (bits 0-15). Without deghosting every
    frame is usable, which is what ``_fallback_frame`` then asks of each.
    """
    n = order.shape[0]
    rank = np.empty(n, np.int64)
    rank[order] = np.arange(n)
    codes = np.arange(levels, dtype=np.int64)
    bright = 2 * codes >= levels - 1
    key = np.where(bright[None, :], 2 * n - rank[:, None], rank[:, None])
    return np.ascontiguousarray((key << 32) | (np.arange(n, dtype=np.int64)[:, None] << 16) | codes[None, :])


@numba.njit(fastmath=True, cache=True, nogil=True, error_model="numpy")
def _merge_row(y, frames, shifts, packed, offset, log_lut, log_exposure, order, top, use_mask, mask, fallback,
               out_bits):
    # One row; a row wider than _SPAN_ABOVE columns in spans of _SPAN. Radiance bit-identical either way. On one
    # core, this and the whole-row kernel alternating in one process: the bench's 4K bracket 52-55 / 68-72 against
    # 63-65 / 82-84 ms (two runs), four tiles of its 1080p bracket (4K) 54-55 against 57-58 (spans of 128 / 512 /
    # 1024 columns: about 5 / 5 / 10 % slower than 256). At 1080p spans were no faster (one core 5 % slower, two
    # cores 2.5 % faster, the runtime's merge with statistics on two cores 2 % slower), so rows up to 2048 columns
    # stay whole. _merge_span is not inlined here (numba's inline="always"): that doubled the merge kernels' cold
    # compile (17.6-18.0 against 8.8-9.5 s) and was no faster.
    w = frames.shape[2]
    span = w if w <= _SPAN_ABOVE else _SPAN
    acc = np.empty(3 * span, np.int64)
    loge = np.empty(3 * span, np.float32)
    for x0 in range(0, w, span):
        _merge_span(y, x0, min(x0 + span, w), frames, shifts, packed, offset, log_lut, log_exposure, order, top,
                    use_mask, mask, fallback, out_bits, acc, loge)


@numba.njit(fastmath=True, cache=True, nogil=True, error_model="numpy")
def _merge_span(y, x0, x1, frames, shifts, packed, offset, log_lut, log_exposure, order, top, use_mask, mask,
                fallback, out_bits, acc, loge):
    # Columns [x0, x1) of one row: accumulate sum w and sum w (g - ln t + offset) over the frames as packed
    # int64 (one table read per sample), then ln E = num / den - offset and
    # E = 2^(ln E / ln 2), written as float32 bits into the output (vectorisable
    # exp2, edgehdr.fastmath). Samples with no usable frame get a scalar fix-up of
    # their ln E between the two vectorised passes (ln E, then exp2): with the exp2
    # inside the fix-up it cost 40 % of the merge on a dark real scene (7 % of
    # samples black in every frame).
    # Frame i is read translated by shifts[i] = (dx, dy): its sample at output pixel (y, x) is
    # frames[i, y + dy, x + dx], clamped to the frame (edges replicated, as align_mtb's shifted copy).
    # acc and loge hold the span's samples from index 0 (column x at 3 (x - x0)).
    n, h, w, _ = frames.shape
    span_w = x1 - x0
    log2e = np.float32(1.4426950408889634)
    low_mask = np.int64(0xFFFFFFFF)
    # Three frames without deghosting (the runtime's bracket): where every frame reads inside itself, [lo, hi),
    # the three frames' table values summed per sample in one pass, acc written once (a frame at a time, each
    # sample's sum is loaded and stored again per frame: the loop is bound by loads and stores, not arithmetic;
    # with the flagged fallback below, 1080p on one core 12.3-12.9 against 14.2-14.6 ms, 12.9 without this pass).
    lo, hi = x1, x1
    if n == 3 and not use_mask:
        lo, hi = x0, x1
        for i in range(3):
            lo = max(lo, min(max(-shifts[i, 0], 0), w))
            hi = min(hi, max(min(w - shifts[i, 0], w), 0))
        lo = min(lo, x1)
        hi = max(hi, lo)
        r0 = frames[0, min(max(y + shifts[0, 1], 0), h - 1), lo + shifts[0, 0]:hi + shifts[0, 0]]
        r1 = frames[1, min(max(y + shifts[1, 1], 0), h - 1), lo + shifts[1, 0]:hi + shifts[1, 0]]
        r2 = frames[2, min(max(y + shifts[2, 1], 0), h - 1), lo + shifts[2, 0]:hi + shifts[2, 0]]
        p00, p01, p02 = packed[0, 0], packed[0, 1], packed[0, 2]
        p10, p11, p12 = packed[1, 0], packed[1, 1], packed[1, 2]
        p20, p21, p22 = packed[2, 0], packed[2, 1], packed[2, 2]
        fused = acc[3 * (lo - x0):3 * (hi - x0)]
        for x in range(hi - lo):
            fused[3 * x] = p00[r0[x, 0]] + p10[r1[x, 0]] + p20[r2[x, 0]]
            fused[3 * x + 1] = p01[r0[x, 1]] + p11[r1[x, 1]] + p21[r2[x, 1]]
            fused[3 * x + 2] = p02[r0[x, 2]] + p12[r1[x, 2]] + p22[r2[x, 2]]
    # Elsewhere (all of the span when not fused) frame by frame, in the columns [x0, lo) and [hi, x1).
    for i in range(n):
        dx = shifts[i, 0]
        row = frames[i, min(max(y + shifts[i, 1], 0), h - 1)]
        # The columns whose source x + dx lies inside the frame: [x_in, x_out); the rest read the edge column.
        x_in = min(max(-dx, 0), w)
        x_out = max(min(w - dx, w), x_in)
        lut0 = packed[i, 0]
        lut1 = packed[i, 1]
        lut2 = packed[i, 2]
        for part in range(6):
            # the left edge, the inside, the right edge of [x0, lo), then of [hi, x1); the first frame stores,
            # the others add (one pass over acc fewer than zeroing it)
            ra, rb = (x0, lo) if part < 3 else (hi, x1)
            a = max(ra, 0 if part % 3 == 0 else (x_in if part % 3 == 1 else x_out))
            b = min(rb, x_in if part % 3 == 0 else (x_out if part % 3 == 1 else w))
            if a >= b:
                continue
            if part % 3 != 1:  # an edge: every column reads the frame's first or last column
                src = 0 if part % 3 == 0 else w - 1
                for x in range(a, b):
                    m = np.int64(mask[i, y, x]) if use_mask else np.int64(1)
                    s0 = m * lut0[row[src, 0]]
                    s1 = m * lut1[row[src, 1]]
                    s2 = m * lut2[row[src, 2]]
                    k = 3 * (x - x0)
                    if i == 0:
                        acc[k], acc[k + 1], acc[k + 2] = s0, s1, s2
                    else:
                        acc[k] += s0
                        acc[k + 1] += s1
                        acc[k + 2] += s2
                continue
            # The inside as slices indexed from 0 (1080p, both cores: 5.5 ms, against 7.3 with the loops
            # indexing row[x + dx] for x from a).
            span = acc[3 * (a - x0):3 * (b - x0)]
            src = row[a + dx:b + dx]
            if use_mask:
                keep = mask[i, y, a:b]
                if i == 0:
                    for x in range(b - a):
                        m = np.int64(keep[x])
                        span[3 * x] = m * lut0[src[x, 0]]
                        span[3 * x + 1] = m * lut1[src[x, 1]]
                        span[3 * x + 2] = m * lut2[src[x, 2]]
                else:
                    for x in range(b - a):
                        m = np.int64(keep[x])
                        span[3 * x] += m * lut0[src[x, 0]]
                        span[3 * x + 1] += m * lut1[src[x, 1]]
                        span[3 * x + 2] += m * lut2[src[x, 2]]
            elif i == 0:
                for x in range(b - a):
                    span[3 * x] = lut0[src[x, 0]]
                    span[3 * x + 1] = lut1[src[x, 1]]
                    span[3 * x + 2] = lut2[src[x, 2]]
            else:
                for x in range(b - a):
                    span[3 * x] += lut0[src[x, 0]]
                    span[3 * x + 1] += lut1[src[x, 1]]
                    span[3 * x + 2] += lut2[src[x, 2]]
    out_row = out_bits[y].reshape(-1)[3 * x0:3 * x1]
    unmeasured = 0
    for j in range(3 * span_w):
        a = acc[j]
        unmeasured += (a >> 32) == 0
        den = np.float32(a >> 32)
        num = np.float32(a & low_mask)
        loge[j] = num / max(den, np.float32(1e-30)) - np.float32(offset)
    if not use_mask and _DENSE_SHARE * unmeasured > 3 * span_w:
        # Many samples clipped or black in every frame (a night scene's black, a covered lens, a bright
        # window): the largest fallback key (_fallback_table) of every sample of the row in vectorisable
        # passes, one per frame, then its value kept where nothing was measured. The passes cost the same
        # whatever the share, the per-sample path below in proportion to it (tuned with its earlier form): at
        # _DENSE_SHARE 4 / 8 / 16 / 32 the 4K bench bracket (5 % unmeasured) merged in 73-75 / 69-71 / 70 /
        # 69 ms on one core and the 1080p one (2 %) in 13.9 / 13.8 / 14.2 / 15.6 ms. Keys computed from the
        # codes instead of read from the table: 78-79 and 14.5-14.7 ms.
        best = np.empty(3 * span_w, np.int64)
        for i in range(n):
            dx = shifts[i, 0]
            row = frames[i, min(max(y + shifts[i, 1], 0), h - 1)]
            keys = fallback[i]
            for x in range(span_w):
                xs = min(max(x0 + x + dx, 0), w - 1)
                if i == 0:
                    best[3 * x] = keys[row[xs, 0]]
                    best[3 * x + 1] = keys[row[xs, 1]]
                    best[3 * x + 2] = keys[row[xs, 2]]
                else:
                    best[3 * x] = max(best[3 * x], keys[row[xs, 0]])
                    best[3 * x + 1] = max(best[3 * x + 1], keys[row[xs, 1]])
                    best[3 * x + 2] = max(best[3 * x + 2], keys[row[xs, 2]])
        for x in range(span_w):
            for c in range(3):
                j = 3 * x + c
                k = best[j]
                value = log_lut[c, k & 0xFFFF] - log_exposure[(k >> 16) & 0xFFFF]
                loge[j] = value if (acc[j] >> 32) == 0 else loge[j]
        unmeasured = 0
    if unmeasured > 0 and not use_mask:
        # The samples no frame measures: a byte flag per sample (a vectorised pass), the flags' 8-byte words
        # skipped while zero and a nonzero word's flagged samples listed without a branch, then each given its
        # fallback by the largest of its frames' keys in ``fallback`` (``_fallback_table``), the frame
        # ``_fallback_frame`` picks without its two scans. Bit-identical to the loop below (which runs over
        # every sample of a row with any such sample). The 1080p bench bracket (2 % of its samples unmeasured,
        # in half its rows) on one core: this fallback 1.5 ms of the merge, against 3.2 with a branch per flag
        # (mispredicted: 3.5 flagged samples a nonzero word) and 3.2 for the loop below.
        words = (3 * span_w + 7) // 8
        flags = np.empty(8 * words, np.uint8)
        for j in range(3 * span_w):
            flags[j] = (acc[j] >> 32) == 0
        flags[3 * span_w:] = 0
        flag_words = flags.view(np.uint64)
        found = np.empty(8 * words, np.int64)
        count = 0
        for k in range(words):
            if flag_words[k] == 0:
                continue
            for j in range(8 * k, 8 * k + 8):  # the word's flagged samples listed without a branch
                found[count] = j
                count += flags[j]
            if count == unmeasured:
                break
        for t in range(count):
            j = found[t]
            x, c = x0 + j // 3, j % 3
            best = np.int64(0)
            for i in range(n):
                best = max(best, fallback[i, _shifted(frames, shifts, i, y, x, c)])
            pick = (best >> 16) & 0xFFFF
            loge[j] = log_lut[c, best & 0xFFFF] - log_exposure[pick]
        unmeasured = 0
    # With deghosting (the mask decides which frames may serve): the unmeasured samples' indices, gathered
    # without a branch (a data-dependent branch per sample mispredicts where channels of one pixel differ).
    todo = np.empty(unmeasured + 1, np.int64)
    count = 0
    for j in range(3 * span_w if unmeasured > 0 else 0):
        todo[min(count, unmeasured)] = j
        count += (acc[j] >> 32) == 0
    for t in range(unmeasured):
        j = todo[t]
        # Clipped or black in every usable frame. A clipped sample bounds the
        # radiance from below, the shortest such frame most tightly; a black one
        # bounds it from above, the longest most tightly. Take the bright bound
        # when there is one: no holes, and the closest value the stack allows.
        x, c = x0 + j // 3, j % 3
        pick = _fallback_frame(frames, shifts, order, top, use_mask, mask, y, x, c)
        loge[j] = log_lut[c, _shifted(frames, shifts, pick, y, x, c)] - log_exposure[pick]
    for j in range(3 * span_w):
        out_row[j] = exp2_bits(max(min(loge[j] * log2e, np.float32(126.0)), np.float32(-126.0)))


@numba.njit(fastmath=True, cache=True, nogil=True, inline="always")
def _shifted(frames, shifts, i, y, x, c):
    """Frame ``i``'s code at output pixel (y, x), channel c, read through its shift (edges replicated)."""
    _, h, w, _ = frames.shape
    return frames[i, min(max(y + shifts[i, 1], 0), h - 1), min(max(x + shifts[i, 0], 0), w - 1), c]


@numba.njit(fastmath=True, cache=True, nogil=True, inline="always")
def _fallback_frame(frames, shifts, order, top, use_mask, mask, y, x, c):
    """The frame a sample no usable frame measures falls back on: the shortest usable frame reading bright (its
    clipped value bounds the radiance from below, the shortest most tightly), else the longest usable frame (a black
    reading bounds it from above, the longest most tightly)."""
    n = frames.shape[0]
    for k in range(n):
        i = order[k]
        if (not use_mask or mask[i, y, x] != 0) and 2 * np.int32(_shifted(frames, shifts, i, y, x, c)) >= top:
            return i
    for k in range(n - 1, -1, -1):
        i = order[k]
        if not use_mask or mask[i, y, x] != 0:
            return i
    return -1


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _merge_kernel(frames, shifts, packed, offset, log_lut, log_exposure, order, top, use_mask, mask, fallback,
                  out_bits):
    for row in numba.prange(frames.shape[1]):
        # int64, as the serial kernel passes: a prange index is uint64, and _merge_row compiled once per type.
        _merge_row(np.int64(row), frames, shifts, packed, offset, log_lut, log_exposure, order, top, use_mask, mask,
                   fallback, out_bits)
    return out_bits


@numba.njit(fastmath=True, cache=True, nogil=True)
def _merge_kernel_serial(frames, shifts, packed, offset, log_lut, log_exposure, order, top, use_mask, mask,
                         fallback, out_bits):
    # Small frames: waking the worker threads costs more than the rows (tens of us idle, ms on a busy machine).
    for y in range(frames.shape[1]):
        _merge_row(y, frames, shifts, packed, offset, log_lut, log_exposure, order, top, use_mask, mask, fallback,
                   out_bits)
    return out_bits


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _fallback_flags(frames, shifts, has_weight, order, top, use_mask, mask, out_bits, flags, rows_unmeasured,
                    block_sums, block_counts, bright, rank, ref_rank):
    """``edgehdr.hdr.fill``'s inputs for ``_merge_row``'s result, in one pass after it: per sample whether a usable
    frame gave it weight (``has_weight[i, c, z]``), else the kernel's fallback rule's direction (the shortest bright
    usable frame, a lower bound, else the longest usable frame, an upper bound when it reads dark; ``KEPT`` where a
    frame longer than the reference (``rank``: each frame's place in ``order``) reads bright); per row the
    count of samples that fell back; on each block row's ``sample_row`` the block sums of the log2 radiance of
    pixels measured in all three channels and at least ``bright`` in one (``edgehdr.hdr.fill``)."""
    n, h, w, _ = frames.shape
    for y in numba.prange(h):
        measured = np.zeros(3 * w, np.uint8)
        for i in range(n):
            dx = shifts[i, 0]
            row = frames[i, min(max(y + shifts[i, 1], 0), h - 1)]
            t0, t1, t2 = has_weight[i, 0], has_weight[i, 1], has_weight[i, 2]
            if dx == 0 and not use_mask:  # the common case as plain slices (vectorised gathers)
                for x in range(w):
                    measured[3 * x] |= t0[row[x, 0]]
                    measured[3 * x + 1] |= t1[row[x, 1]]
                    measured[3 * x + 2] |= t2[row[x, 2]]
                continue
            for x in range(w):
                xs = min(max(x + dx, 0), w - 1)
                usable = np.uint8(mask[i, y, x]) if use_mask else np.uint8(1)
                measured[3 * x] |= t0[row[xs, 0]] & usable
                measured[3 * x + 1] |= t1[row[xs, 1]] & usable
                measured[3 * x + 2] |= t2[row[xs, 2]] & usable
        f = flags[y].reshape(-1)
        count = 0
        for j in range(3 * w):
            f[j] = MEASURED
            count += measured[j] == 0
        rows_unmeasured[y] = count
        for j in range(3 * w if count else 0):
            if measured[j]:
                continue
            x, c = j // 3, j % 3
            pick = _fallback_frame(frames, shifts, order, top, use_mask, mask, y, x, c)
            reads_bright = 2 * np.int32(_shifted(frames, shifts, pick, y, x, c)) >= top
            # A bright reading in a frame longer than the reference, where the reference reads black: no bound the
            # fill may trust (a hot pixel or flare; a synthetic scene's row of them went 15 stops off when filled).
            f[j] = (LOWER_BOUND if rank[pick] <= ref_rank else KEPT) if reads_bright else UPPER_BOUND
        by = y // FILL_BLOCK
        if y == sample_row(by, h):
            o = out_bits[y].reshape(-1)
            log2_row = np.empty(3 * w, np.float32)
            for j in range(3 * w):
                log2_row[j] = log2_from_bits(o[j])
            add_support(block_sums[by], block_counts[by], log2_row, measured, np.uint8(0), bright)


@numba.njit(fastmath=True, cache=True, nogil=True, error_model="numpy")
def _merge_band(band, band_edges, col_edges, frames, shifts, packed, offset, log_lut, log_exposure, order, top,
                use_mask, mask, fallback, out_bits, out, delta, row_logsum, row_count, row_max, zone_max):
    # The rows of one band (a zone row of the LED layout), each merged by _merge_row and, while it is in the
    # cache, measured as edgehdr.tonemap.frame_statistics measures with stride 2: on even rows log(delta + L) of
    # every other pixel, on every row the luminance peak (clamped at _MAX_LUM as there), and the column-wise
    # maximum of max(R, G, B), reduced per zone at the end of the band (the local dimming's zone maxima).
    y0, y1 = band_edges[band], band_edges[band + 1]
    w = out.shape[1]
    cols = col_edges.shape[0] - 1
    n_log = (w + 1) // 2
    lum_row = np.empty(w, np.float32)
    log_row = np.empty(n_log, np.float32)
    log_bits = log_row.view(np.int32)
    col_max = np.zeros(w, np.float32)
    delta32 = np.float32(delta)
    for y in range(y0, y1):
        _merge_row(y, frames, shifts, packed, offset, log_lut, log_exposure, order, top, use_mask, mask, fallback,
                   out_bits)
        src = out[y].reshape(-1)
        if cols > 0:
            for x in range(w):
                col_max[x] = max(col_max[x], max(src[3 * x], max(src[3 * x + 1], src[3 * x + 2])))
        if y % 2 != 0:  # the log-average skips it; the peak is over every row (a highlight may lie on this one)
            row_logsum[y] = 0.0
            row_count[y] = 0
            peak = np.float32(0.0)
            for x in range(w):
                peak = max(peak, np.float32(_LUMA_R) * src[3 * x] + np.float32(_LUMA_G) * src[3 * x + 1]
                           + np.float32(_LUMA_B) * src[3 * x + 2])
            row_max[y] = min(peak, np.float32(_MAX_LUM))
            continue
        row_logsum[y], peak = luminance_log_row(src, lum_row, log_row, log_bits, 2, delta32)
        row_max[y] = min(peak, np.float32(_MAX_LUM))
        row_count[y] = n_log
    for c in range(cols):
        m = np.float32(0.0)
        for x in range(col_edges[c], col_edges[c + 1]):
            m = max(m, col_max[x])
        zone_max[band, c] = m


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _merge_statistics_kernel(band_edges, col_edges, frames, shifts, packed, offset, log_lut, log_exposure, order,
                             top, use_mask, mask, fallback, out_bits, out, delta, row_logsum, row_count, row_max,
                             zone_max):
    for band in numba.prange(band_edges.shape[0] - 1):
        _merge_band(np.int64(band), band_edges, col_edges, frames, shifts, packed, offset, log_lut, log_exposure,
                    order, top, use_mask, mask, fallback, out_bits, out, delta, row_logsum, row_count, row_max,
                    zone_max)
    return out_bits


@numba.njit(fastmath=True, cache=True, nogil=True)
def _merge_statistics_kernel_serial(band_edges, col_edges, frames, shifts, packed, offset, log_lut, log_exposure,
                                    order, top, use_mask, mask, fallback, out_bits, out, delta, row_logsum,
                                    row_count, row_max, zone_max):
    for band in range(band_edges.shape[0] - 1):
        _merge_band(band, band_edges, col_edges, frames, shifts, packed, offset, log_lut, log_exposure, order,
                    top, use_mask, mask, fallback, out_bits, out, delta, row_logsum, row_count, row_max, zone_max)
    return out_bits


class MergeStatistics:
    """What the merge measures of the radiance as it writes it, so that later stages skip a pass of their own.

    Filled by ``merge_debevec(..., statistics=...)`` (the classical merge's fused kernel, which
    reads each radiance row while it is still in the cache):

    * the global tone mappers' statistics (``log_average``, ``max_luminance``), exactly as
      ``edgehdr.tonemap.frame_statistics`` gathers them with its default stride of 2 (the log of
      every other pixel of the even rows, Reinhard et al. 2002, eq. 1, for ``delta``, theirs 1e-6;
      the peak over every pixel, luminance counted as at most 1e30);
    * with ``zones=(rows, cols)``, per zone of that grid (the LED layout's: row ``r`` spans
      pixel rows ``r * H // rows`` up to ``(r + 1) * H // rows``, likewise the columns, as
      ``edgehdr.dimming.zone_statistics``) the maximum over its pixels of ``max(R, G, B)``
      (``zone_max``, radiance units): the ``max`` dimming heuristic's input before the display
      scale, which multiplies it exactly as it would each pixel.

    One object per frame: ``merge_debevec`` (re)allocates its arrays for the frame's size.
    The merge's radiance is finite, so none of these skip non-finite pixels.
    """

    def __init__(self, zones: tuple[int, int] | None = None, *, delta: float = 1e-6) -> None:
        if zones is not None and (len(zones) != 2 or min(int(zones[0]), int(zones[1])) < 1):
            raise ValueError(f"zones must be (rows, cols) of at least 1, got {zones}")
        if not (np.isfinite(delta) and delta >= 2.0 ** -126):  # the log2 polynomial's domain (edgehdr.fastmath)
            raise ValueError(f"delta must be at least 2^-126 (1.18e-38, the smallest normal float32), got {delta}")
        self.zones = None if zones is None else (int(zones[0]), int(zones[1]))
        self.delta = float(delta)
        self.shape: tuple[int, int] | None = None
        self.row_logsum = np.zeros(0, np.float64)
        self.row_count = np.zeros(0, np.int64)
        self.row_max = np.zeros(0, np.float32)
        self.zone_max: np.ndarray | None = None

    def _prepare(self, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Band edges (zone rows, or blocks of 8 rows), column edges (none without zones), zone_max array."""
        if self.zones is not None:
            rows, cols = self.zones
            if rows > h or cols > w:
                raise ValueError(f"a {rows} x {cols} zone grid does not fit a {w}x{h} frame")
            band_edges = (np.arange(rows + 1, dtype=np.int64) * h) // rows
            col_edges = (np.arange(cols + 1, dtype=np.int64) * w) // cols
        else:
            rows, cols = -(-h // 8), 0
            band_edges = np.minimum(np.arange(rows + 1, dtype=np.int64) * 8, h)
            col_edges = np.zeros(1, np.int64)
        self.shape = (h, w)
        self.row_logsum = np.empty(h, np.float64)
        self.row_count = np.empty(h, np.int64)
        self.row_max = np.empty(h, np.float32)
        zone_max = np.empty((rows, max(cols, 1)), np.float32)
        self.zone_max = zone_max if self.zones is not None else None
        return band_edges, col_edges, zone_max

    def log_average(self) -> float:
        """``exp(mean(log(delta + L)))`` over the even rows' every other pixel (Reinhard 2002, eq. 1)."""
        self._check_filled()
        return float(np.exp(self.row_logsum.sum() / max(1, int(self.row_count.sum()))))

    def max_luminance(self) -> float:
        """Largest luminance over every pixel (at most 1e30), as ``frame_statistics``'s."""
        self._check_filled()
        return float(self.row_max.max())

    def _check_filled(self) -> None:
        if self.shape is None:
            raise ValueError("these statistics were never filled: pass them to merge_debevec(statistics=...)")


def resolve_response(response: ResponseLike, bits: int) -> CameraResponse:
    """Turn ``None``/a curve name/a response file/a ``CameraResponse`` into a response at ``bits``.

    Files go by suffix (``RESPONSE_FILE_SUFFIXES``): ``.json`` (EdgeHDR's), ``.npy``
    (OpenCV's calibrated (K, 1, 3) array), ``.m`` (pfstools), ``.txt``/``.lut`` (a plain LUT).
    """
    if response is None:
        response = "srgb"
    if isinstance(response, CameraResponse):
        return response.resampled(bits)
    text = os.fspath(response)
    if text.lower().endswith(RESPONSE_FILE_SUFFIXES):
        return CameraResponse.load(text).resampled(bits)
    return standard_response(text, bits=bits)


_SERIAL_MAX_PIXELS = 1 << 13  # below this the serial kernel runs (thread wake-up costs more than the rows)
_NO_MASK = np.ones((1, 1, 1), np.uint8)  # the kernel's mask argument when deghosting is off


@dataclass
class _Prepared:
    """What a merge needs that depends only on (response, bits, weighting, noise model)."""

    response: CameraResponse
    source_lut: np.ndarray | None  # copy of the caller's LUT, to confirm a fingerprint hit
    log_lut: np.ndarray  # float32 (3, K)
    weights: np.ndarray | None  # float32 (K,) for a fixed weighting; None for "noise"
    noise: NoiseModel | None
    token: int = field(default_factory=itertools.count().__next__)


@dataclass
class _Tables:
    """What depends on the exposures (and, for the noise weighting, the gains) besides."""

    packed: np.ndarray
    offset: float
    log_exposure: np.ndarray
    order: np.ndarray
    fallback: np.ndarray  # _fallback_table(order, levels)

    @property
    def nbytes(self) -> int:
        """What the entry holds against ``_StateCache.max_table_bytes``."""
        return self.packed.nbytes + self.fallback.nbytes


class _StateCache:
    """Two small LRUs under one lock: ``_Prepared`` by response key, ``_Tables`` by (token, exposures, gains).

    Tables are bounded by bytes as well as count (a 16-bit bracket's are megabytes).
    """

    def __init__(self, max_prepared: int = 16, max_tables: int = 32, max_table_bytes: int = 64 << 20) -> None:
        self._lock = threading.Lock()
        self._prepared: OrderedDict[Hashable, _Prepared] = OrderedDict()
        self._tables: OrderedDict[Hashable, _Tables] = OrderedDict()
        self._table_bytes = 0
        self.max_prepared, self.max_tables, self.max_table_bytes = max_prepared, max_tables, max_table_bytes

    def clear(self) -> None:
        with self._lock:
            self._prepared.clear()
            self._tables.clear()
            self._table_bytes = 0

    def prepared(self, key: Hashable, source_lut: np.ndarray | None, build: Callable[[], _Prepared]) -> _Prepared:
        with self._lock:
            hit = self._prepared.get(key)
            if hit is not None:
                self._prepared.move_to_end(key)
        if hit is not None and (source_lut is None or (hit.source_lut is not None
                                                       and np.array_equal(hit.source_lut, source_lut))):
            return hit
        built = build()
        with self._lock:
            self._prepared[key] = built
            self._prepared.move_to_end(key)
            while len(self._prepared) > self.max_prepared:
                self._prepared.popitem(last=False)
        return built

    def tables(self, key: Hashable, build: Callable[[], _Tables]) -> _Tables:
        with self._lock:
            hit = self._tables.get(key)
            if hit is not None:
                self._tables.move_to_end(key)
                return hit
        built = build()
        with self._lock:
            old = self._tables.pop(key, None)
            if old is not None:
                self._table_bytes -= old.nbytes
            self._tables[key] = built
            self._table_bytes += built.nbytes
            while len(self._tables) > 1 and (len(self._tables) > self.max_tables
                                             or self._table_bytes > self.max_table_bytes):
                _, dropped = self._tables.popitem(last=False)
                self._table_bytes -= dropped.nbytes
        return built


_STATE = _StateCache()


def _response_key(response: ResponseLike, bits: int) -> tuple[Hashable, np.ndarray | None]:
    """A cache key for ``response`` at ``bits``, and the LUT a hit must equal (None: the key is exact)."""
    if isinstance(response, CameraResponse):
        lut = response.inverse_lut
        step = max(1, lut.shape[-1] // 256)  # the whole LUT at 8 bits; equality is checked on a hit anyway
        return ("lut", bits, lut.shape, lut[:, ::step].tobytes(), lut[:, -1].tobytes()), lut
    text = "srgb" if response is None else os.fspath(response)
    if text.lower().endswith(RESPONSE_FILE_SUFFIXES):
        # By content: reading and hashing the file costs far less than parsing it, and a file rewritten
        # within the clock's granularity keeps its mtime.
        try:
            with open(text, "rb") as fh:
                digest = hashlib.blake2b(fh.read(), digest_size=16).digest()
        except OSError:
            return ("uncached", object()), None  # resolve_response raises the actionable error
        return ("file", digest, bits), None
    return ("curve", text.strip().lower(), bits), None


def _prepare(response: ResponseLike, bits: int, weighting: str, noise: NoiseModel | None) -> _Prepared:
    key, source_lut = _response_key(response, bits)

    def build() -> _Prepared:
        resolved = resolve_response(response, bits)
        # A private copy: the caller may change its LUT in place later.
        resp = CameraResponse(resolved.inverse_lut.copy(), name=resolved.name, meta=dict(resolved.meta))
        weights = None if weighting == "noise" else weight_lut(weighting, resp.levels)
        return _Prepared(resp, None if source_lut is None else source_lut.copy(), resp.log_lut(), weights, noise)

    return _STATE.prepared((key, weighting, noise), source_lut, build)


def _tables(prep: _Prepared, exposures: np.ndarray, gains: np.ndarray) -> _Tables:
    noise = prep.weights is None
    key = (prep.token, exposures.tobytes(), gains.tobytes() if noise else None)

    def build() -> _Tables:
        log_exposure = np.log(exposures).astype(np.float32)
        weights = noise_weights(prep.response.inverse_lut, gains, prep.noise) if prep.weights is None else prep.weights
        packed, offset = _packed_tables(weights, prep.log_lut, log_exposure)
        order = np.argsort(exposures, kind="stable").astype(np.int64)
        return _Tables(packed, offset, log_exposure, order, _fallback_table(order, prep.log_lut.shape[1]))

    return _STATE.tables(key, build)


def merge_debevec(
    frames: FramesLike,
    exposures: ArrayLike | None = None,
    response: ResponseLike = None,
    *,
    weighting: str = "noise",
    bits: int | None = None,
    deghost: bool = False,
    reference_index: int | None = None,
    deghost_tolerance: float = 0.25,
    out: np.ndarray | None = None,
    noise: NoiseModel | None = None,
    shifts: ArrayLike | None = None,
    statistics: MergeStatistics | None = None,
    fill: bool = False,
) -> np.ndarray:
    """Merge an exposure stack into linear radiance.

    Parameters
    ----------
    frames : Bracket, (N, H, W, 3) array or sequence of (H, W, 3) arrays
        uint8 or uint16 RGB code values, N >= 2, any exposure spacing and order.
    exposures : sequence of float, optional
        Relative exposure per frame (time x gain); taken from the ``Bracket`` if omitted.
    response : CameraResponse, str or path, optional
        Inverse camera response: a ``CameraResponse``, a standard curve name
        (``srgb``, ``gamma2.2``, ``linear``, ``s-curve``) or a JSON file. Default sRGB.
    weighting : str
        ``noise`` (the default: noise-optimal, from the response, the frames' gains and
        ``noise``), ``tutorial`` (``1 - (2x - 1)^12``, the seed's), ``triangle`` (``hat``,
        Debevec & Malik's), ``gaussian`` or ``box``; ``weighting_names()`` lists them and
        ``edgehdr.hdr.weights.WEIGHTINGS`` describes them. The default was chosen by
        measurement on real HDR photographs re-taken through JPEG cameras
        (``edgehdr bench --quality``): 31.2 dB PU21-PSNR on average against 29.3
        for ``tutorial``, 29.9 for ``triangle`` and 28.5 for OpenCV's calibrate + merge.
    bits : int, optional
        Significant bits of uint16 frames (default: from the Bracket, else 16).
    deghost : bool
        Reject samples inconsistent with the reference frame (Grosch 2006).
    reference_index : int, optional
        Reference frame for deghosting and the fill's clip level; default the middle exposure. Checked whether
        or not either is on.
    deghost_tolerance : float
        Relative radiance tolerance of the consistency test.
    out : ndarray, optional
        Preallocated (H, W, 3) float32 output, reused across frames by the runtime.
    noise : NoiseModel, optional
        Sensor noise and clip tapers of the ``noise`` weighting (default ``NoiseModel()``,
        an 8-bit JPEG camera); the gains come from the Bracket (unit gain for arrays).
    shifts : (N, 2) integers, optional
        Per-frame translation ``(dx, dy)`` in pixels applied while reading: frame ``i`` contributes
        ``frames[i, y + dy, x + dx]`` to output pixel ``(y, x)``, edges replicated. This is the shifted copy
        ``align_mtb`` makes (its ``Motion.matrix[:2, 2]``), without the copy: the runtime's MTB alignment
        hands its shifts to the merge (1080p: 19 MB and a 2-4 ms copy a frame saved). With ``deghost``
        the shifted frames are made first (the consistency masks read aligned frames).
    statistics : MergeStatistics, optional
        Filled with the radiance's tone-mapping statistics and zone maxima, measured by the merge's
        kernel as it writes each row (the tone mapper and the local dimming then skip their own
        statistics passes: 1080p, one core, about 3 and 2 ms).
    fill : bool
        The samples every usable frame saw clipped (or the deghosting left only clipped readings of) rise towards
        the normalized convolution of the log radiance of their measured neighbours as bright as the reference's
        clip, where it lies above their bound (``edgehdr.hdr.fill``), instead of keeping the bound alone; not with
        ``statistics`` (they would describe the radiance before the fill). A separate pass over the frames: the
        merge network's kernel gathers the same in its own pass.

    Returns
    -------
    ndarray, (H, W, 3) float32
        Radiance in units of the exposures (``f^-1(Z) / exposure``), finite and > 0.

    Notes
    -----
    The ``noise`` weighting is ``w = X^2 / var(X)``, ``X = f^-1(Z)``: the inverse variance
    of ``ln E`` that this log-domain average combines, and to first order the same
    estimator as the linear-domain maximum-likelihood merge of Granados et al. (2010);
    see ``edgehdr.hdr.weights.noise_weights`` for the derivation.

    Per-call state (resolved response, log LUT, weights, packed tables) is cached by
    the response's LUT content, bits, weighting, exposures and gains.

    References
    ----------
    P. E. Debevec and J. Malik, "Recovering high dynamic range radiance maps from
    photographs," SIGGRAPH 1997, eq. 6. F. Banterle and A. Artusi, "Modern HDR
    imaging at the time of deep learning" (tutorial): weighting ``1 - (2x - 1)^12``.
    M. Granados et al., "Optimal HDR reconstruction with linear digital cameras," CVPR 2010.
    """
    weight_function(weighting)  # unknown names fail here, before any work
    if fill and statistics is not None:
        raise ValueError("fill=True with statistics=: the statistics would describe the radiance before the fill")
    if noise is not None and weighting != "noise":
        raise ValueError(f"noise= sets the model of the 'noise' weighting; it has no effect with {weighting!r}")
    gains = None
    if isinstance(frames, Bracket):
        exposures = frames.relative_exposure if exposures is None else exposures
        bits = frames.bits if bits is None else bits
        gains = frames.gain
        frames = frames.frames
    stack = as_frame_stack(frames)
    n, h, w, _ = stack.shape
    if n < 2:
        raise ValueError(f"merging needs at least two exposures, got {n}")
    if exposures is None:
        raise ValueError("exposures are required when frames are not a Bracket")
    exposures = np.asarray(exposures, dtype=np.float64).reshape(-1)
    if exposures.shape != (n,) or not np.all(np.isfinite(exposures)) or np.any(exposures <= 0):
        raise ValueError(f"need {n} positive, finite exposures, got {exposures.tolist()}")
    if bits is None:
        bits = 8 if stack.dtype == np.uint8 else 16
    check_code_depth(stack, bits)
    levels = 1 << bits
    if gains is None or weighting != "noise":
        gains = np.ones(n)
    if shifts is None:
        offsets = np.zeros((n, 2), np.int64)
    else:
        offsets = np.asarray(shifts)
        if offsets.shape != (n, 2) or not np.issubdtype(offsets.dtype, np.integer):
            raise ValueError(f"shifts must be {n} integer (dx, dy) pairs, one per frame, got {offsets.tolist()}")
        offsets = offsets.astype(np.int64)
        if deghost and offsets.any():
            from edgehdr.hdr.align import shifted_stack

            stack, offsets = shifted_stack(stack, offsets), np.zeros((n, 2), np.int64)
    prep = _prepare(response, bits, weighting, (noise or NoiseModel()) if weighting == "noise" else None)
    tables = _tables(prep, exposures, gains)
    order = tables.order
    if out is None:
        out = np.empty((h, w, 3), np.float32)
    elif out.shape != (h, w, 3) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a contiguous ({h}, {w}, 3) float32 array")
    ref = int(order[n // 2]) if reference_index is None else int(reference_index)
    if not 0 <= ref < n:
        raise ValueError(f"reference_index {ref} out of range for {n} frames")
    if deghost:
        from edgehdr.hdr.deghost import _consistency_masks

        mask = _consistency_masks(stack, exposures, prep.response, ref, deghost_tolerance, None)
        use_mask = True
    else:
        mask = _NO_MASK
        use_mask = False
    serial = h * w <= _SERIAL_MAX_PIXELS
    if statistics is not None:
        band_edges, col_edges, zone_max = statistics._prepare(h, w)
        fused = _merge_statistics_kernel_serial if serial else _merge_statistics_kernel
        fused(band_edges, col_edges, stack, offsets, tables.packed, tables.offset, prep.log_lut,
              tables.log_exposure, order, levels - 1, use_mask, mask, tables.fallback, out.view(np.int32), out,
              np.float32(statistics.delta), statistics.row_logsum, statistics.row_count, statistics.row_max,
              zone_max)
        return out
    kernel = _merge_kernel_serial if serial else _merge_kernel
    kernel(stack, offsets, tables.packed, tables.offset, prep.log_lut, tables.log_exposure, order, levels - 1,
           use_mask, mask, tables.fallback, out.view(np.int32))
    if fill:
        flags, rows_unmeasured, sums, counts = fill_buffers(h, w)
        has_weight = ((tables.packed >> 32) > 0).astype(np.uint8)
        bright = reference_clip_log2(prep.log_lut * np.float32(1 / np.log(2)), float(exposures[ref]))
        rank = np.argsort(order).astype(np.int64)
        _fallback_flags(stack, offsets, has_weight, order, levels - 1, use_mask, mask, out.view(np.int32), flags,
                        rows_unmeasured, sums, counts, bright, rank, int(rank[ref]))
        fill_unmeasured(out, flags, sums=sums, counts=counts, rows_with=np.flatnonzero(rows_unmeasured))
    return out
