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
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeAlias

import numba
import numpy as np
from numpy.typing import ArrayLike

from edgehdr.bracket import Bracket, as_frame_stack
from edgehdr.fastmath import exp2_bits
from edgehdr.hdr.crf import CameraResponse, ResponseLike, standard_response
from edgehdr.hdr.weights import weight_lut

__all__ = ["FramesLike", "merge_debevec", "resolve_response"]


# What the merges take as frames: a Bracket (exposures and bits come with it), an (N, H, W, 3) stack or a list
# of (H, W, 3) frames.
FramesLike: TypeAlias = Bracket | np.ndarray | Sequence[np.ndarray]

_FIXED_BITS = 20  # fixed-point fraction bits of the packed tables


def _packed_tables(weights: np.ndarray, log_lut: np.ndarray, log_exposure: np.ndarray) -> tuple[np.ndarray, float]:
    """Per frame, channel and code: ``w`` and ``w (g - ln t + offset)`` in one int64.

    High 32 bits: ``w`` in 12.20 fixed point; low 32 bits: the weighted log value,
    shifted by ``offset`` to be non-negative, in the same fixed point. Summing the
    int64s sums both parts at once (no carry: bounded below), so the kernel reads
    one table entry per sample instead of two. Returns ``(tables, offset)``.
    """
    values = log_lut[None, :, :].astype(np.float64) - log_exposure[:, None, None].astype(np.float64)
    offset = -float(values.min())
    n = values.shape[0]
    span = float(values.max()) + offset
    if n * span * (1 << _FIXED_BITS) >= 2**32 or n >= 2048:
        raise ValueError(f"merge of {n} frames spanning {span:.0f} log units exceeds the packed fixed-point range")
    scale = float(1 << _FIXED_BITS)
    w = weights.astype(np.float64)
    high = np.rint(w * scale).astype(np.int64)
    low = np.rint(w[None, None, :] * (values + offset) * scale).astype(np.int64)
    return np.ascontiguousarray((high[None, None, :] << 32) | low), offset


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _merge_kernel(frames, packed, offset, log_lut, log_exposure, order, top, use_mask, mask, out_bits):
    # Per row: accumulate sum w and sum w (g - ln t + offset) over the frames as packed
    # int64 (one table read per sample), then ln E = num / den - offset and
    # E = 2^(ln E / ln 2), written as float32 bits into the output (vectorisable
    # exp2, edgehdr.fastmath). Pixels with no usable sample get a scalar fix-up pass.
    n, h, w, _ = frames.shape
    log2e = np.float32(1.4426950408889634)
    low_mask = np.int64(0xFFFFFFFF)
    for y in numba.prange(h):
        acc = np.zeros(3 * w, np.int64)
        for i in range(n):
            row = frames[i, y]
            lut0 = packed[i, 0]
            lut1 = packed[i, 1]
            lut2 = packed[i, 2]
            if use_mask:
                keep = mask[i, y]
                for x in range(w):
                    m = np.int64(keep[x])
                    acc[3 * x] += m * lut0[row[x, 0]]
                    acc[3 * x + 1] += m * lut1[row[x, 1]]
                    acc[3 * x + 2] += m * lut2[row[x, 2]]
            else:
                for x in range(w):
                    acc[3 * x] += lut0[row[x, 0]]
                    acc[3 * x + 1] += lut1[row[x, 1]]
                    acc[3 * x + 2] += lut2[row[x, 2]]
        out_row = out_bits[y].reshape(-1)
        for j in range(3 * w):
            a = acc[j]
            den = np.float32(a >> 32)
            num = np.float32(a & low_mask)
            log_e = num / max(den, np.float32(1e-30)) - np.float32(offset)
            out_row[j] = exp2_bits(max(min(log_e * log2e, np.float32(126.0)), np.float32(-126.0)))
        for j in range(3 * w):
            if (acc[j] >> 32) > 0:
                continue
            # Clipped or black in every usable frame. A clipped sample bounds the
            # radiance from below, the shortest such frame most tightly; a black one
            # bounds it from above, the longest most tightly. Take the bright bound
            # when there is one: no holes, and the closest value the stack allows.
            x, c = j // 3, j % 3
            pick = -1
            for k in range(n):
                i = order[k]
                if use_mask and mask[i, y, x] == 0:
                    continue
                if 2 * np.int32(frames[i, y, x, c]) >= top:
                    pick = i
                    break
            if pick < 0:
                for k in range(n - 1, -1, -1):
                    i = order[k]
                    if not use_mask or mask[i, y, x] != 0:
                        pick = i
                        break
            log_e = log_lut[c, frames[pick, y, x, c]] - log_exposure[pick]
            out_row[j] = exp2_bits(max(min(log_e * log2e, np.float32(126.0)), np.float32(-126.0)))
    return out_bits


def resolve_response(response: ResponseLike, bits: int) -> CameraResponse:
    """Turn ``None``/a curve name/a JSON path/a ``CameraResponse`` into a response at ``bits``."""
    if response is None:
        response = "srgb"
    if isinstance(response, CameraResponse):
        return response.resampled(bits)
    text = str(response)
    if text.lower().endswith(".json"):
        return CameraResponse.load(text).resampled(bits)
    return standard_response(text, bits=bits)


def merge_debevec(
    frames: FramesLike,
    exposures: ArrayLike | None = None,
    response: ResponseLike = None,
    *,
    weighting: str = "tutorial",
    bits: int | None = None,
    deghost: bool = False,
    reference_index: int | None = None,
    deghost_tolerance: float = 0.25,
    out: np.ndarray | None = None,
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
        ``tutorial`` (``1 - (2x - 1)^12``, the default), ``hat`` (same), ``triangle``,
        ``gaussian`` or ``box``; see ``edgehdr.hdr.weights``.
    bits : int, optional
        Significant bits of uint16 frames (default: from the Bracket, else 16).
    deghost : bool
        Reject samples inconsistent with the reference frame (Grosch 2006).
    reference_index : int, optional
        Reference frame for deghosting; default the middle exposure.
    deghost_tolerance : float
        Relative radiance tolerance of the consistency test.
    out : ndarray, optional
        Preallocated (H, W, 3) float32 output, reused across frames by the runtime.

    Returns
    -------
    ndarray, (H, W, 3) float32
        Radiance in units of the exposures (``f^-1(Z) / exposure``), finite and > 0.

    References
    ----------
    P. E. Debevec and J. Malik, "Recovering high dynamic range radiance maps from
    photographs," SIGGRAPH 1997, eq. 6. F. Banterle and A. Artusi, "Modern HDR
    imaging at the time of deep learning" (tutorial): weighting ``1 - (2x - 1)^12``.
    """
    if isinstance(frames, Bracket):
        exposures = frames.relative_exposure if exposures is None else exposures
        bits = frames.bits if bits is None else bits
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
    if stack.dtype == np.uint8 and bits != 8:
        raise ValueError(f"uint8 frames carry 8 bits, not {bits}")
    levels = 1 << bits
    if stack.dtype == np.uint16 and bits < 16 and int(stack.max()) >= levels:
        raise ValueError(f"frames hold code {int(stack.max())} but bits={bits} allows at most {levels - 1}")
    resp = resolve_response(response, bits)
    weights = weight_lut(weighting, levels)
    log_lut = resp.log_lut()
    log_exposure = np.log(exposures).astype(np.float32)
    order = np.argsort(exposures, kind="stable").astype(np.int64)
    if out is None:
        out = np.empty((h, w, 3), np.float32)
    elif out.shape != (h, w, 3) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a contiguous ({h}, {w}, 3) float32 array")
    if deghost:
        from edgehdr.hdr.deghost import consistency_masks

        ref = int(order[n // 2]) if reference_index is None else int(reference_index)
        if not 0 <= ref < n:
            raise ValueError(f"reference_index {ref} out of range for {n} frames")
        mask = consistency_masks(stack, exposures, resp, reference_index=ref, tolerance=deghost_tolerance)
        use_mask = True
    else:
        mask = np.ones((1, 1, 1), np.uint8)
        use_mask = False
    packed, offset = _packed_tables(weights, log_lut, log_exposure)
    _merge_kernel(stack, packed, offset, log_lut, log_exposure, order, levels - 1, use_mask, mask, out.view(np.int32))
    return out
