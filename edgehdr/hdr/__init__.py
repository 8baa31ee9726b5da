"""HDR core: camera response, alignment, merging, deghosting and the fill of samples no frame measures."""

from edgehdr.hdr.align import ALIGN_METHODS, Motion, align_bracket, align_homography, align_mtb, median_threshold_shift
from edgehdr.hdr.crf import (
    STANDARD_CURVES,
    CameraResponse,
    ResponseCurve,
    calibrate_debevec,
    select_calibration_samples,
    standard_response,
)
from edgehdr.hdr.deghost import consistency_masks
from edgehdr.hdr.fill import fill_unmeasured
from edgehdr.hdr.merge import MergeStatistics, merge_debevec, resolve_response
from edgehdr.hdr.weights import WEIGHTINGS, weight_lut

__all__ = [
    "ALIGN_METHODS",
    "Motion",
    "align_bracket",
    "align_homography",
    "align_mtb",
    "median_threshold_shift",
    "STANDARD_CURVES",
    "CameraResponse",
    "ResponseCurve",
    "calibrate_debevec",
    "select_calibration_samples",
    "standard_response",
    "consistency_masks",
    "fill_unmeasured",
    "MergeStatistics",
    "merge_debevec",
    "resolve_response",
    "WEIGHTINGS",
    "weight_lut",
]
