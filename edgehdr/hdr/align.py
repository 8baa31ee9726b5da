"""Bracket alignment: translation by median threshold bitmaps, hand-held motion by homography.

First stage after capture in the frame's journey. Frames of different exposure
look different, so both methods work on exposure-invariant images: Ward's median
threshold bitmap (MTB) is invariant by construction (OpenCV's ``AlignMTB`` does
the pyramid search); for feature matching each frame is brought to a common
exposure through the inverse response when it is known, or histogram-equalised
otherwise, then ORB features are matched and a homography fitted with RANSAC.
Every function reports the motion it found (``Motion``) so callers can log it,
gate on it, or compare it with ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from edgehdr.bracket import Bracket, as_frame_stack

__all__ = ["Motion", "align_mtb", "align_homography", "align_bracket", "ALIGN_METHODS"]

ALIGN_METHODS = ("mtb", "homography", "none")


@dataclass
class Motion:
    """Estimated motion of one frame relative to the reference.

    ``matrix`` (3x3) maps reference pixel coordinates to this frame's coordinates,
    so warping the frame with it (``WARP_INVERSE_MAP``) registers it.
    """

    dx_px: float = 0.0
    dy_px: float = 0.0
    rotation_deg: float = 0.0
    scale: float = 1.0
    matrix: np.ndarray = field(default_factory=lambda: np.eye(3))
    inliers: int = 0
    ok: bool = True
    method: str = "none"

    def as_dict(self) -> dict:
        return {
            "method": self.method,
            "dx_px": round(self.dx_px, 3),
            "dy_px": round(self.dy_px, 3),
            "rotation_deg": round(self.rotation_deg, 4),
            "scale": round(self.scale, 5),
            "inliers": self.inliers,
            "ok": self.ok,
        }


def _gray8(frame: np.ndarray) -> np.ndarray:
    if frame.dtype == np.uint16:
        frame = (frame >> 8).astype(np.uint8)
    return cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)


def _warp(frame: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    if np.allclose(matrix[2], [0, 0, 1]):
        return cv2.warpAffine(frame, matrix[:2], (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                              borderMode=cv2.BORDER_REPLICATE)
    return cv2.warpPerspective(frame, matrix, (w, h), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                               borderMode=cv2.BORDER_REPLICATE)


def align_mtb(frames, *, reference_index: int | None = None, max_bits: int = 6, exclude_range: int = 4):
    """Align frames by translation with Ward's median threshold bitmaps.

    Parameters
    ----------
    frames : (N, H, W, 3) uint8/uint16 array or sequence
    reference_index : int, optional
        Frame the others are aligned to (default: the middle one).
    max_bits : int
        Pyramid levels: the search covers shifts up to ``2^max_bits`` pixels.
    exclude_range : int
        Ignore pixels within this many codes of the median (noise).

    Returns
    -------
    aligned : ndarray, (N, H, W, 3)
    motions : list of Motion
        Integer translation of each frame relative to the reference.

    References
    ----------
    G. Ward, "Fast, robust image registration for compositing high dynamic range
    photographs from hand-held exposures," Journal of Graphics Tools 8(2), 2003.
    """
    stack = as_frame_stack(frames)
    n = stack.shape[0]
    ref = n // 2 if reference_index is None else int(reference_index)
    mtb = cv2.createAlignMTB(max_bits, exclude_range, False)
    ref_gray = _gray8(stack[ref])
    aligned = stack.copy()
    motions = []
    for i in range(n):
        if i == ref:
            motions.append(Motion(method="mtb"))
            continue
        # calculateShift returns how to shift frame i onto the reference.
        sx, sy = mtb.calculateShift(ref_gray, _gray8(stack[i]))
        matrix = np.array([[1, 0, -sx], [0, 1, -sy], [0, 0, 1]], np.float64)
        aligned[i] = _warp(stack[i], matrix)
        motions.append(Motion(dx_px=float(-sx), dy_px=float(-sy), matrix=matrix, method="mtb"))
    return aligned, motions


def _exposure_normalised(frame: np.ndarray, gain_to_reference: float | None, response) -> np.ndarray:
    """An 8-bit grey image whose values do not depend on the frame's exposure.

    With a known response the frame is re-rendered at the reference exposure,
    ``z' = f(f^-1(z) * gain_to_reference)``; without one it is histogram-equalised.
    """
    gray = _gray8(frame)
    if response is None or gain_to_reference is None:
        return cv2.equalizeHist(gray)
    lut = response.inverse_lut.mean(axis=0)
    codes = frame.mean(axis=2).astype(np.int64) if frame.dtype == np.uint16 else gray
    linear = np.minimum(lut[codes] * gain_to_reference, lut[-1])
    # Back through the (monotonic) response: interpolate the inverse LUT.
    back = np.interp(linear, lut, np.linspace(0.0, 255.0, lut.size))
    return back.astype(np.uint8)


def align_homography(
    frames,
    *,
    reference_index: int | None = None,
    exposures=None,
    response=None,
    bits: int | None = None,
    max_features: int = 3000,
    work_size_px: int = 960,
    min_inliers: int = 25,
    refine: bool = True,
):
    """Align frames with a homography (hand-held motion: shift, rotation, perspective).

    1. ORB features on histogram-equalised grey copies scaled to ``work_size_px``,
       ratio-test matching, homography by RANSAC (``min_inliers`` required).
    2. Sub-pixel refinement by ECC (Evangelidis & Psarakis 2008) on an
       exposure-matched pair: with a known response and exposures, the shorter
       exposure of the pair is re-rendered at the longer one's exposure through the
       response (brightening keeps texture; darkening would quantise it away);
       otherwise both are equalised.

    A frame that fails step 1 is left unwarped with ``Motion.ok = False``.

    References
    ----------
    E. Rublee et al., "ORB: an efficient alternative to SIFT or SURF," ICCV 2011.
    M. A. Fischler and R. C. Bolles, "Random sample consensus," CACM 24(6), 1981.
    G. D. Evangelidis and E. Z. Psarakis, "Parametric image alignment using
    enhanced correlation coefficient maximization," IEEE TPAMI 30(10), 2008.
    """
    stack = as_frame_stack(frames)
    n, h, w, _ = stack.shape
    ref = n // 2 if reference_index is None else int(reference_index)
    if bits is None:
        bits = 8 if stack.dtype == np.uint8 else 16
    if response is not None and exposures is not None:
        from edgehdr.hdr.merge import resolve_response

        response = resolve_response(response, bits)
        exposures = np.asarray(exposures, dtype=np.float64)
    else:
        response = exposures = None
    scale = min(1.0, work_size_px / max(h, w))
    size = (max(1, int(round(w * scale))), max(1, int(round(h * scale))))

    def small(img):
        return cv2.resize(img, size, interpolation=cv2.INTER_AREA) if scale < 1.0 else img

    def ecc_pair(i):
        if response is None:
            return small(cv2.equalizeHist(_gray8(stack[ref]))), small(cv2.equalizeHist(_gray8(stack[i])))
        if exposures[i] < exposures[ref]:
            return small(_gray8(stack[ref])), small(_exposure_normalised(stack[i], exposures[ref] / exposures[i], response))
        return small(_exposure_normalised(stack[ref], exposures[i] / exposures[ref], response)), small(_gray8(stack[i]))

    orb = cv2.ORB_create(nfeatures=max_features)
    kp_ref, des_ref = orb.detectAndCompute(small(cv2.equalizeHist(_gray8(stack[ref]))), None)
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    s = np.diag([scale, scale, 1.0])
    s_inv = np.linalg.inv(s)
    aligned = stack.copy()
    motions = []
    for i in range(n):
        if i == ref:
            motions.append(Motion(method="homography"))
            continue
        kp, des = orb.detectAndCompute(small(cv2.equalizeHist(_gray8(stack[i]))), None)
        hom, inliers = None, 0
        if des is not None and des_ref is not None and len(kp) >= 4:
            pairs = matcher.knnMatch(des_ref, des, k=2)
            good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.8 * p[1].distance]
            if len(good) >= 4:
                src = np.float32([kp_ref[m.queryIdx].pt for m in good])
                dst = np.float32([kp[m.trainIdx].pt for m in good])
                hom, inlier_mask = cv2.findHomography(src, dst, cv2.RANSAC, 2.0)
                inliers = int(inlier_mask.sum()) if inlier_mask is not None else 0
        if hom is None or inliers < min_inliers:
            motions.append(Motion(method="homography", ok=False, inliers=inliers))
            continue
        if refine:
            a, b = ecc_pair(i)
            criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-5)
            try:
                _, refined = cv2.findTransformECC(
                    a.astype(np.float32), b.astype(np.float32), hom.astype(np.float32),
                    cv2.MOTION_HOMOGRAPHY, criteria, None, 3,
                )
                hom = refined.astype(np.float64)
            except cv2.error:
                pass  # ECC did not converge: keep the RANSAC estimate
        full = s_inv @ hom @ s
        full /= full[2, 2]
        motion = _describe(full, inliers)
        aligned[i] = _warp(stack[i], motion.matrix)
        motions.append(motion)
    return aligned, motions


def _describe(matrix: np.ndarray, inliers: int) -> Motion:
    a = matrix[:2, :2]
    rotation = float(np.degrees(np.arctan2(a[1, 0] - a[0, 1], a[0, 0] + a[1, 1])))
    scale = float(np.sqrt(abs(np.linalg.det(a))))
    return Motion(
        dx_px=float(matrix[0, 2]), dy_px=float(matrix[1, 2]), rotation_deg=rotation, scale=scale,
        matrix=matrix, inliers=inliers, ok=True, method="homography",
    )


def align_bracket(bracket: Bracket, method: str = "mtb", *, reference_index: int | None = None, response=None):
    """Align a ``Bracket`` in place of its frames; returns ``(Bracket, motions)``."""
    if method not in ALIGN_METHODS:
        raise ValueError(f"unknown alignment {method!r}; use one of {', '.join(ALIGN_METHODS)}")
    if method == "none":
        return bracket, [Motion() for _ in range(len(bracket))]
    ref = int(np.argsort(bracket.relative_exposure)[len(bracket) // 2]) if reference_index is None else reference_index
    if method == "mtb":
        frames, motions = align_mtb(bracket.frames, reference_index=ref)
    else:
        frames, motions = align_homography(
            bracket.frames, reference_index=ref, exposures=bracket.relative_exposure,
            response=response, bits=bracket.bits,
        )
    out = Bracket(frames=frames, exposure_s=bracket.exposure_s, gain=bracket.gain, bits=bracket.bits,
                  timestamp_ns=bracket.timestamp_ns, sequence=bracket.sequence, source=bracket.source,
                  extra=dict(bracket.extra, motions=[m.as_dict() for m in motions]))
    return out, motions
