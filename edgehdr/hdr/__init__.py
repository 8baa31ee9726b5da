"""HDR core: camera response, alignment, merging and deghosting."""

from edgehdr.hdr.crf import (
    STANDARD_CURVES,
    CameraResponse,
    ResponseCurve,
    calibrate_debevec,
    select_calibration_samples,
    standard_response,
)
from edgehdr.hdr.weights import WEIGHTINGS, weight_lut

__all__ = [
    "STANDARD_CURVES",
    "CameraResponse",
    "ResponseCurve",
    "calibrate_debevec",
    "select_calibration_samples",
    "standard_response",
    "WEIGHTINGS",
    "weight_lut",
]
