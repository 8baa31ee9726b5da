"""The compact merge network: learnt per-pixel blending weights for a 3-exposure bracket.

After Kalantari & Ramamoorthi's weight-estimation variant (2017): a small CNN looks
at the aligned bracket and predicts, per pixel, how much to trust each frame; the
output stays a weighted Debevec merge of the inputs (tutorial, eq. 6, log domain):

    ln H(x) = sum_i w_i(x) v(Z_i(x)) (ln f^-1(Z_i(x)) - ln t_i) / sum_i w_i(x) v(Z_i(x))

with ``v`` the tutorial's weighting ``1 - (2x - 1)^12`` (so clipped and black codes
never count, whatever the network says) and ``w_i`` the network's softmax weights.
Where no frame is usable (``sum w v`` below 1e-8) the classical merge's rule applies:
the shortest clipped frame (the tightest lower bound), else the longest frame. The
network learns what the classical deghosting (Grosch 2006) does by rule — prefer the
reference where objects moved — and a noise-aware preference among static frames.

Input (ONNX ``bracket``, (1, 12, 272, 480) float32): the three frames sorted by
exposure (short, reference, long), each area-resampled to 480 x 272 (whatever the
frame size; the weights are resampled back): 9 channels of RGB codes / full scale,
then 3 channels of log2 luminance radiance ``f^-1(Z) / t`` relative to the reference's
median, ``(v + 16) / 32`` clipped to [0, 1]. Output ``weights`` (1, 3, 136, 240):
logits; the runtime applies a softmax over the 3 frames and upsamples bilinearly
(half-pixel centres, as ``cv2.resize``) inside the fused merge kernel.

References
----------
N. K. Kalantari and R. Ramamoorthi, "Deep high dynamic range imaging of dynamic
scenes," ACM TOG 36(4), 2017. P. E. Debevec and J. Malik, SIGGRAPH 1997, eq. 6.
F. Banterle and A. Artusi, "Modern HDR imaging at the time of deep learning" (tutorial).
"""

from __future__ import annotations

import math

import cv2
import numba
import numpy as np

from edgehdr.bracket import Bracket
from edgehdr.hdr.merge import as_frame_stack, resolve_response
from edgehdr.hdr.weights import weight_lut

__all__ = ["MERGE_INPUT_SHAPE", "MERGE_OUTPUT_SHAPE", "encode_merge_input", "merge_with_weights", "softmax_weights",
           "NeuralMerger", "bilinear_taps"]

MERGE_INPUT_SHAPE = (1, 12, 272, 480)
MERGE_OUTPUT_SHAPE = (1, 3, 136, 240)
LOG_STOPS = 16.0
_LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)


def _prepare(frames, exposures, response, bits):
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
    resp = resolve_response(response, bits)
    order = np.argsort(exposures, kind="stable").astype(np.int64)
    return stack, exposures, resp, bits, order


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _encode_kernel(small, log_lut, log_exposure, inv_full, x):
    n_rows, n_cols = small.shape[1], small.shape[2]
    for y in numba.prange(n_rows):
        for col in range(n_cols):
            for k in range(3):
                lum = np.float32(0.0)
                for c in range(3):
                    z = small[k, y, col, c]
                    x[0, 3 * k + c, y, col] = z * inv_full
                    lum += np.float32((0.2126, 0.7152, 0.0722)[c]) * math.exp(log_lut[c, z] - log_exposure[k])
                x[0, 9 + k, y, col] = math.log2(max(lum, np.float32(1e-20)))


def encode_merge_input(frames, exposures=None, response=None, *, bits: int | None = None):
    """A 3-frame bracket -> the network input (1, 12, 272, 480) float32 (see the module docstring)."""
    stack, exposures, resp, bits, order = _prepare(frames, exposures, response, bits)
    _, h, w = MERGE_INPUT_SHAPE[1:]
    # area resampling keeps the code dtype (rounded), so the response LUT applies to the small frames
    small = np.stack([cv2.resize(stack[i], (w, h), interpolation=cv2.INTER_AREA) for i in order])
    x = np.empty(MERGE_INPUT_SHAPE, np.float32)
    _encode_kernel(small, resp.log_lut(), np.log(exposures[order]).astype(np.float32),
                   np.float32(1.0 / ((1 << bits) - 1)), x)
    logs = x[0, 9:]
    key = float(np.median(logs[1, ::2, ::2]))
    logs -= np.float32(key - LOG_STOPS)
    logs *= np.float32(1.0 / (2 * LOG_STOPS))
    np.clip(logs, 0.0, 1.0, out=logs)
    return x


def softmax_weights(logits: np.ndarray) -> np.ndarray:
    """Softmax over the frame axis of (1, 3, h, w) or (3, h, w) logits -> (3, h, w) float32."""
    z = np.asarray(logits, np.float32).reshape(3, *np.shape(logits)[-2:])
    e = np.exp(z - z.max(axis=0, keepdims=True))
    return np.ascontiguousarray(e / e.sum(axis=0, keepdims=True), dtype=np.float32)


def bilinear_taps(n_src: int, n_dst: int):
    """Source indices and weights of bilinear resampling with half-pixel centres (``cv2.resize``, PyTorch
    ``align_corners=False``): ``(i0, i1, frac)`` per destination index."""
    pos = (np.arange(n_dst) + 0.5) * (n_src / n_dst) - 0.5
    pos = np.clip(pos, 0.0, n_src - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_src - 1)
    return i0, i1, (pos - i0).astype(np.float32)


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _weighted_merge_kernel(stack, order, log_lut, vtab, log_exposure, prob, y0s, y1s, fys, x0s, x1s, fxs,
                           half_level, out):
    n_rows, n_cols = stack.shape[1], stack.shape[2]
    for y in numba.prange(n_rows):
        y0, y1, fy = y0s[y], y1s[y], fys[y]
        for x in range(n_cols):
            x0, x1, fx = x0s[x], x1s[x], fxs[x]
            p = np.empty(3, np.float32)
            for k in range(3):
                i = order[k]
                top = prob[i, y0, x0] + fx * (prob[i, y0, x1] - prob[i, y0, x0])
                bot = prob[i, y1, x0] + fx * (prob[i, y1, x1] - prob[i, y1, x0])
                p[k] = top + fy * (bot - top)
            for c in range(3):
                num = np.float32(0.0)
                den = np.float32(0.0)
                for k in range(3):
                    i = order[k]
                    z = stack[i, y, x, c]
                    wv = p[k] * vtab[z]
                    num += wv * (log_lut[c, z] - log_exposure[i])
                    den += wv
                if den > np.float32(1e-8):
                    out[y, x, c] = math.exp(num / den)
                else:  # nothing usable: the classical rule, the shortest clipped frame (a lower bound), else
                    i = order[2]  # the longest (an upper bound)
                    for k in range(3):
                        if stack[order[k], y, x, c] >= half_level:
                            i = order[k]
                            break
                    out[y, x, c] = math.exp(log_lut[c, stack[i, y, x, c]] - log_exposure[i])


def merge_with_weights(frames, prob, exposures=None, response=None, *, bits: int | None = None,
                       out: np.ndarray | None = None) -> np.ndarray:
    """Weighted Debevec merge with per-frame weight maps ``prob`` (3, h, w) at any resolution (bilinear).

    ``prob[i]`` belongs to input frame ``i`` (the bracket's order, not the exposure order).
    """
    stack, exposures, resp, bits, order = _prepare(frames, exposures, response, bits)
    _, h, w, _ = stack.shape
    prob = np.ascontiguousarray(prob, dtype=np.float32)
    if prob.ndim != 3 or prob.shape[0] != 3:
        raise ValueError(f"weights must be (3, h, w), got {prob.shape}")
    levels = 1 << bits
    vtab = weight_lut("tutorial", levels).astype(np.float32)
    if out is None:
        out = np.empty((h, w, 3), np.float32)
    ys, xs = bilinear_taps(prob.shape[1], h), bilinear_taps(prob.shape[2], w)
    _weighted_merge_kernel(stack, order, resp.log_lut(), vtab, np.log(exposures).astype(np.float32), prob,
                           *ys, *xs, levels // 2, out)
    return out


class NeuralMerger:
    """The merge network as a per-bracket operator: runner + encoding + fused weighted merge.

    ``merger(bracket)`` returns radiance (H, W, 3) float32 in the units of the
    exposures, like ``merge_debevec``. The network's weights are reordered from
    exposure order back to the bracket's frame order.
    """

    def __init__(self, runner, response=None):
        self.runner, self.response = runner, response
        desc = runner.describe()["inputs"]
        self.input_name = next(iter(desc)) if isinstance(desc, dict) else desc[0]["name"]

    def weights(self, bracket, exposures=None, *, bits=None) -> np.ndarray:
        """Per-frame weight maps (3, 136, 240) in the bracket's frame order."""
        stack, exposures, _, bits, order = _prepare(bracket, exposures, self.response, bits)
        x = encode_merge_input(stack, exposures, self.response, bits=bits)
        logits = np.asarray(next(iter(self.runner.run({self.input_name: x}).values())), np.float32)
        sorted_prob = softmax_weights(logits)
        prob = np.empty_like(sorted_prob)
        prob[order] = sorted_prob
        return prob

    def __call__(self, bracket, exposures=None, *, bits=None, out=None) -> np.ndarray:
        if isinstance(bracket, Bracket):
            exposures = bracket.relative_exposure if exposures is None else exposures
            bits = bracket.bits if bits is None else bits
            bracket = bracket.frames
        prob = self.weights(bracket, exposures, bits=bits)
        return merge_with_weights(bracket, prob, exposures, self.response, bits=bits, out=out)
