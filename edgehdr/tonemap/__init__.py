"""Tone mapping: Reinhard global/local, Drago, the tutorial's parametric operator, colour correction, video smoothing.

Every operator handles non-finite pixels alike (``edgehdr.tonemap.nonfinite``): NaN and
infinite pixels stay out of the frame statistics and come out black (NaN, -inf) or white
(+inf), with one warning per call on the ``edgehdr.tonemap`` logger giving their count;
a frame without a finite pixel raises ``ValueError``.
"""

from edgehdr.tonemap.color import (
    COLOR_METHODS,
    REC709_LUMA,
    color_correct_mantiuk,
    color_correct_schlick,
    luminance,
    srgb_decode,
    srgb_encode,
)
from edgehdr.tonemap.guided import guided_coefficients, guided_filter
from edgehdr.tonemap.operators import (
    LOCAL_FILTERS,
    OPERATORS,
    drago,
    frame_statistics,
    parametric,
    reinhard_global,
    reinhard_local,
    tonemap,
)
from edgehdr.tonemap.temporal import TemporalAdaptation

__all__ = [
    "COLOR_METHODS",
    "REC709_LUMA",
    "color_correct_mantiuk",
    "color_correct_schlick",
    "luminance",
    "srgb_decode",
    "srgb_encode",
    "guided_coefficients",
    "guided_filter",
    "LOCAL_FILTERS",
    "OPERATORS",
    "drago",
    "frame_statistics",
    "parametric",
    "reinhard_global",
    "reinhard_local",
    "tonemap",
    "TemporalAdaptation",
]
