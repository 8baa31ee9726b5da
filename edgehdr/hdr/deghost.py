"""Classical deghosting: reject samples that disagree with a reference exposure.

After exposure normalisation every frame predicts the same radiance for a static
pixel. Following Grosch (2006), each frame's sample is compared with the
reference frame's: each code value stands for a radiance *interval* (quantisation,
noise, and clipping, which opens the interval to infinity, or black, which opens
it to zero), and a sample whose interval does not overlap the reference's is
inconsistent: it saw a moving object. The pixel-wise decision is cleaned with a
5x5 morphological opening (noise hits, a few pixels wide) and dilated to cover
object borders, except where the reference itself is clipped or black; the merge
then uses only consistent samples, and always the reference.

Near clipping an 8-bit camera's codes say little: JPEG (and an ISP's sharpening) ring
around a clipped highlight, so a sample at 250 beside the 255s stands for "about
clipped", not for the radiance the response gives 250. Read as a measurement, such a
reference code rejects the shorter frame's correct sample, in whole 8 x 8 blocks that
the opening does not remove, and the merge keeps the reference's too-low value there:
false colours where channels differ (re-photographed real HDR photographs, JPEG 90:
deghosting 1.3 dB PU21 below the plain merge on static brackets). So at 8 bits the
last and first 8 codes count as clipped and black (``clip_margin_codes``), at higher
depths 2 per 256 levels as before; the intervals' slack stays 2 codes per 256 levels.
"""

from __future__ import annotations

import cv2
import numba
import numpy as np
from numpy.typing import ArrayLike

from edgehdr import kernelcache  # noqa: F401 - before the kernels below: it names their numba cache files
from edgehdr.bracket import check_code_depth
from edgehdr.hdr.crf import CameraResponse

__all__ = ["consistency_masks", "radiance_intervals", "clip_margin_codes", "reference_shoulder_code",
           "reference_upper_bounds"]


def clip_margin_codes(levels: int) -> int:
    """Codes at each end of the range that count as clipped (top) or black (bottom) in the consistency test.

    8 at 8 bits: on the shared real HDR photographs re-photographed through ``RealisticCamera`` (JPEG 90, 3
    exposures 4 stops apart; ``evaluate_merge --real``) the classical deghosting's PU21-PSNR on the held-out
    photographs went from 22.81 to 23.95 dB on moving brackets and from 24.29 to 25.49 on static ones (the plain
    merge: 25.56) against 2 codes; moving synthetic brackets (no compression) kept 25.53 dB. Scanned with the
    intervals' slack widened to the same number of codes: 5 codes 23.82 / 25.36, 8 codes 23.99 / 25.53, 12 codes
    23.99 / 25.56, with 0.04-0.17 dB lost on synthetic brackets, which the separate margin does not lose.
    Higher bit depths (raw data): 2 per 256 levels.
    """
    return 8 if levels <= 256 else 2 * (levels // 256)


# Where the reference frame's codes stop bounding the radiance from above in the consistency test, as a fraction of
# full scale: the noise model's white taper starts here too (``edgehdr.hdr.weights.NoiseModel``).
REFERENCE_SHOULDER = 0.85


def reference_shoulder_code(levels: int) -> int:
    """The first code (217 at 8 bits) from which a reference reading is taken as a lower bound in the consistency
    test (``reference_upper_bounds``)."""
    return int(round(REFERENCE_SHOULDER * (levels - 1)))


def reference_upper_bounds(hi: np.ndarray) -> np.ndarray:
    """``radiance_intervals``' upper bounds for the reference frame's role in the consistency test: infinite from
    ``reference_shoulder_code`` up, so that another frame reading brighter than a reference code on the shoulder
    is consistent with it (one reading darker still is not).

    Near the clip a camera's code is biased low: noise clipped at the top, the tone curve's shoulder, and JPEG
    pipelines' colour processing and compression after the clip, which leave whole blocks of a clipped highlight
    reading 200-247 in some channel. Grosch's test trusts the reference, so it rejected the shorter frame's correct
    sample there and the merge kept the reference's reading, up to 3-4 stops too low. On the shared photographs
    re-photographed through ``RealisticCamera`` (``evaluate_merge --real``, held-out, PU21-PSNR moving / static),
    classical deghosting went from 23.95 / 25.49 to 24.09 / 25.62 dB (the five training photographs 26.18 / 30.42
    to 26.60 / 31.14) and the merge network, same weights, from 24.60 / 26.72 to 24.86 / 27.04; synthetic brackets
    (no compression) moved by 0.02 dB at most. The shoulder is where the noise model's white taper starts; scanned
    for the network (with that taper on its weights, not kept): 24.86 at 217, 24.87 at 225, 24.88 at 235, 24.72 at
    245. Opening both ends of every frame's interval wider instead (the clip margin at 16 or 32 codes) lost
    0.2-0.8 dB: moving objects then pass the test.
    """
    upper = np.array(hi, copy=True)
    upper[:, reference_shoulder_code(upper.shape[1]):] = np.inf
    return upper


def radiance_intervals(response: CameraResponse, *, tolerance: float = 0.25, code_margin: int | None = None,
                       clip_codes: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Per-code bounds ``(lo, hi)`` of the relative exposure a code value can stand for.

    ``lo[c, z] = f^-1(z - d) / (1 + tolerance)``, ``hi[c, z] = f^-1(z + d) (1 + tolerance)``
    with ``d`` codes of slack (``code_margin``; 2 per 256 levels); the last ``clip_codes`` + 1
    codes are treated as clipped (``hi = inf``) and the first ``clip_codes`` + 1 as black
    (``lo = 0``), ``clip_codes`` by default ``clip_margin_codes``.
    """
    lut = response.inverse_lut.astype(np.float64)
    k = lut.shape[1]
    d = code_margin if code_margin is not None else max(2, 2 * (k // 256))
    clip = clip_codes if clip_codes is not None else clip_margin_codes(k)
    idx = np.arange(k)
    lo = lut[:, np.clip(idx - d, 0, k - 1)] / (1.0 + tolerance)
    hi = lut[:, np.clip(idx + d, 0, k - 1)] * (1.0 + tolerance)
    lo[:, : clip + 1] = 0.0
    hi[:, k - 1 - clip :] = np.inf
    return lo.astype(np.float32), hi.astype(np.float32)


@numba.njit(parallel=True, cache=True, nogil=True)
def _inconsistent_kernel(frames, lo, hi, hi_ref, exposures, ref, margin, out, ref_unmeasured):
    n, h, w, _ = frames.shape
    top = lo.shape[1] - 1 - margin
    for y in numba.prange(h):
        for x in range(w):
            unmeasured = 0
            for c in range(3):
                zr = frames[ref, y, x, c]
                if zr >= top or zr <= margin:
                    unmeasured = 1
            ref_unmeasured[y, x] = unmeasured
            for i in range(n):
                if i == ref:
                    out[i, y, x] = 0
                    continue
                bad = 0
                for c in range(3):
                    zr = frames[ref, y, x, c]
                    zi = frames[i, y, x, c]
                    # Compare E_i = f^-1(z_i) / t_i with E_r = f^-1(z_r) / t_r, scaled by t_i t_r.
                    if lo[c, zi] * exposures[ref] > hi_ref[c, zr] * exposures[i]:
                        bad = 1
                    elif lo[c, zr] * exposures[i] > hi[c, zi] * exposures[ref]:
                        bad = 1
                out[i, y, x] = bad
    return out


def consistency_masks(
    frames: np.ndarray,
    exposures: ArrayLike,
    response: CameraResponse,
    *,
    reference_index: int,
    tolerance: float = 0.25,
    dilate_px: int | None = None,
) -> np.ndarray:
    """Return (N, H, W) uint8 masks: 1 where frame ``i`` may be merged, 0 where rejected.

    References
    ----------
    T. Grosch, "Fast and robust high dynamic range image generation with camera
    and object movement," Vision, Modeling and Visualization (VMV), 2006.
    O. T. Tursun et al., "The state of the art in HDR deghosting: a survey and
    evaluation," Computer Graphics Forum 34(2), 2015 (the tutorial's reference).
    """
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"frames must be an (N, H, W, 3) uint8 or uint16 stack, got {frames.shape} {frames.dtype}")
    n = frames.shape[0]
    if not 0 <= int(reference_index) < n:
        raise ValueError(f"reference_index {reference_index} is outside the bracket's frames 0..{n - 1}")
    exposures_arr = np.asarray(exposures, dtype=np.float64).reshape(-1)
    if exposures_arr.shape != (n,) or not np.all(np.isfinite(exposures_arr)) or np.any(exposures_arr <= 0):
        raise ValueError(f"need {n} positive, finite exposures, one per frame, got {exposures_arr.tolist()}")
    bits = int(response.levels).bit_length() - 1
    if 1 << bits != response.levels:
        raise ValueError(f"the response has {response.levels} levels, not a power of two")
    check_code_depth(frames, bits)  # the kernel indexes the response's tables by code
    return _consistency_masks(frames, exposures_arr, response, int(reference_index), tolerance, dilate_px)


def _consistency_masks(frames: np.ndarray, exposures: np.ndarray, response: CameraResponse, reference_index: int,
                       tolerance: float, dilate_px: int | None) -> np.ndarray:
    """``consistency_masks`` on inputs the caller checked (``merge_debevec`` has)."""
    n, h, w, _ = frames.shape
    margin = clip_margin_codes(response.levels)
    lo, hi = radiance_intervals(response, tolerance=tolerance, clip_codes=margin)
    exposures = np.asarray(exposures, dtype=np.float32)
    bad = np.empty((n, h, w), np.uint8)
    # Where the reference is clipped or black in some channel it measures nothing
    # there, only a bound; the dilation must not take away the other frames'
    # samples that passed the test, or the merge is left with that bound alone.
    ref_unmeasured = np.empty((h, w), np.uint8)
    _inconsistent_kernel(frames, lo, hi, reference_upper_bounds(hi), exposures, int(reference_index), margin, bad,
                         ref_unmeasured)
    ref_measured = 1 - ref_unmeasured
    radius = dilate_px if dilate_px is not None else max(2, int(round(0.006 * min(h, w))))
    opener = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    grower = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    for i in range(n):
        if i == reference_index:
            bad[i] = 0
            continue
        cleaned = cv2.morphologyEx(bad[i], cv2.MORPH_OPEN, opener)
        grown = cv2.dilate(cleaned, grower)
        # Rejected: grown, unless the sample passed and the reference measured nothing.
        bad[i] = cv2.bitwise_and(grown, cv2.bitwise_or(bad[i], ref_measured))
    return np.ascontiguousarray(1 - bad)
