"""Local dimming for HDR LCDs: LED layout and PSF, zone algorithms, backlight simulation, LCD compensation, metrics."""

from edgehdr.dimming.backlight import BacklightModel
from edgehdr.dimming.compensation import full_resolution_backlight, ideal_display, lcd_compensation, simulate_display
from edgehdr.dimming.display import display_target, robust_peak_luminance
from edgehdr.dimming.layout import LayoutError, LedLayout, load_layout
from edgehdr.dimming.metrics import clipped_fraction, dimming_metrics, halo_measure, power_fraction
from edgehdr.dimming.optimize import (
    optimal_zone_light,
    project_power_budget,
    quantise_within_budget,
    zone_values_within_budget,
)
from edgehdr.dimming.run import ALGORITHMS, DimmingResult, dim_frame, write_results, zone_heatmap
from edgehdr.dimming.zones import (
    DEFAULT_ALGORITHM,
    DEFAULT_POWER_BUDGET,
    HEURISTICS,
    ZoneTemporalFilter,
    within_budget,
    zone_light,
    zone_max_light,
    zone_statistics,
)

__all__ = [
    "BacklightModel",
    "ideal_display",
    "full_resolution_backlight",
    "lcd_compensation",
    "simulate_display",
    "display_target",
    "robust_peak_luminance",
    "LayoutError",
    "LedLayout",
    "load_layout",
    "clipped_fraction",
    "dimming_metrics",
    "halo_measure",
    "power_fraction",
    "optimal_zone_light",
    "ALGORITHMS",
    "DimmingResult",
    "dim_frame",
    "write_results",
    "zone_heatmap",
    "project_power_budget",
    "quantise_within_budget",
    "zone_values_within_budget",
    "within_budget",
    "DEFAULT_ALGORITHM",
    "DEFAULT_POWER_BUDGET",
    "HEURISTICS",
    "ZoneTemporalFilter",
    "zone_light",
    "zone_max_light",
    "zone_statistics",
]
