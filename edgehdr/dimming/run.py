"""One dimming job end to end, shared by ``edgehdr dim``, the benchmark and the runtime.

``dim_frame`` goes target -> zone light -> zone values -> backlight -> LCD codes
(the runtime path); ``simulate`` adds the displayed image and metrics; ``write_results``
writes them atomically; ``metrics.json`` is strict JSON, an undefined metric (PU-PSNR of
identical images, anything NaN) written as ``null``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgehdr.dimming.backlight import BacklightModel
from edgehdr.dimming.compensation import lcd_compensation, simulate_display
from edgehdr.dimming.layout import LedLayout
from edgehdr.dimming.metrics import dimming_metrics
from edgehdr.dimming.optimize import optimal_zone_light, zone_values_within_budget
from edgehdr.dimming.zones import DEFAULT_ALGORITHM, HEURISTICS, ZoneTemporalFilter, zone_light, zone_statistics

__all__ = ["ALGORITHMS", "DimmingResult", "dim_frame", "zone_heatmap", "write_results"]

ALGORITHMS = HEURISTICS + ("optimal",)


@dataclass
class DimmingResult:
    light: np.ndarray  # (rows, cols) float32 light fractions
    zone_values: np.ndarray  # (rows, cols) uint16 drive codes (the ZoneFrame payload)
    backlight_cd_m2: np.ndarray  # (H, W) float32
    lcd: np.ndarray  # (H, W, 3) uint8 / uint16 codes
    displayed_cd_m2: np.ndarray | None = None
    metrics: dict | None = None


def dim_frame(target_cd_m2: np.ndarray, layout: LedLayout, algorithm: str = DEFAULT_ALGORITHM, *,
              model: BacklightModel | None = None, temporal: ZoneTemporalFilter | None = None,
              simulate: bool = False, optimal_kwargs: dict | None = None,
              power_budget: float | None = None) -> DimmingResult:
    """Zone values, backlight and LCD image for one display-referred frame.

    ``power_budget`` (mean light fraction in (0, 1]) caps the backlight power: a heuristic's light is
    scaled down to it (``within_budget``), the optimiser optimises under it.
    """
    if power_budget is not None and not 0.0 < power_budget <= 1.0:
        raise ValueError(f"power_budget must be in (0, 1], got {power_budget}")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown dimming algorithm {algorithm!r}; use one of {', '.join(ALGORITHMS)}")
    model = model or BacklightModel(layout)
    if algorithm == "optimal":
        kwargs = {"power_budget": power_budget, **(optimal_kwargs or {})}
        light = optimal_zone_light(target_cd_m2, layout, model=model, **kwargs)
    else:
        stats = zone_statistics(target_cd_m2, layout, histogram=algorithm == "percentile")
        light = zone_light(target_cd_m2, layout, algorithm, stats=stats)
    if temporal is not None:
        light = temporal.update(light)
    zone_values = zone_values_within_budget(light, layout, power_budget)
    light = layout.light_from_zone_values(zone_values).astype(np.float32)  # what the LEDs really get
    backlight = model.simulate(light)
    lcd = lcd_compensation(target_cd_m2, backlight, layout)
    result = DimmingResult(light=light, zone_values=zone_values, backlight_cd_m2=backlight, lcd=lcd)
    if simulate:
        result.displayed_cd_m2 = simulate_display(lcd, backlight, layout)
        result.metrics = dimming_metrics(target_cd_m2, result.displayed_cd_m2, light, layout)
    return result


def zone_heatmap(zone_values: np.ndarray, layout: LedLayout, *, width_px: int = 480) -> np.ndarray:
    """Zone drive values as an RGB heat map (inferno on drive^(1/2.2), so dim zones stay readable)."""
    top = (1 << layout.zone_bits) - 1
    level = np.power(np.clip(np.asarray(zone_values, np.float64) / top, 0.0, 1.0), 1 / 2.2)
    codes = np.rint(level * 255.0).astype(np.uint8)
    height_px = max(1, int(round(width_px * layout.height_px / layout.width_px)))
    big = cv2.resize(codes, (width_px, height_px), interpolation=cv2.INTER_NEAREST)
    rgb = cv2.cvtColor(cv2.applyColorMap(big, cv2.COLORMAP_INFERNO), cv2.COLOR_BGR2RGB)
    if width_px / layout.cols >= 6:
        cols = [int(round(c * width_px / layout.cols)) for c in range(1, layout.cols)]
        rows = [int(round(r * height_px / layout.rows)) for r in range(1, layout.rows)]
        rgb[:, cols] = rgb[:, cols] // 2  # zone borders at half brightness
        rgb[rows] = rgb[rows] // 2
    return rgb


def write_results(outdir: str | os.PathLike[str], result: DimmingResult, layout: LedLayout, *,
                  target_cd_m2: np.ndarray | None = None) -> list[Path]:
    """zones.csv, zones.npy, lcd.png, backlight.exr, display.exr, display_preview.png, heatmap.png, metrics.json."""
    from edgehdr.io import (
        null_undefined,
        write_bytes_atomic,
        write_json_atomic,
        write_ldr_image,
        write_radiance,
        write_text_atomic,
    )
    from edgehdr.tonemap import reinhard_global

    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    csv = "\n".join(",".join(str(int(v)) for v in row) for row in result.zone_values) + "\n"
    written.append(write_text_atomic(out / "zones.csv", csv))
    import io

    buf = io.BytesIO()
    np.save(buf, result.zone_values)
    written.append(write_bytes_atomic(out / "zones.npy", buf.getvalue()))
    written.append(write_ldr_image(out / "lcd.png", result.lcd))
    written.append(write_radiance(out / "backlight.exr", np.repeat(result.backlight_cd_m2[..., None], 3, axis=2),
                                  exr_pixel_type="float"))
    written.append(write_ldr_image(out / "heatmap.png", zone_heatmap(result.zone_values, layout)))
    if result.displayed_cd_m2 is not None:
        written.append(write_radiance(out / "display.exr", result.displayed_cd_m2, exr_pixel_type="float"))
        # A viewable preview: the same global tone curve for the display and, when given, the target.
        written.append(write_ldr_image(out / "display_preview.png", reinhard_global(result.displayed_cd_m2)))
    if target_cd_m2 is not None:
        written.append(write_ldr_image(out / "target_preview.png", reinhard_global(np.asarray(target_cd_m2))))
    meta = {"layout": layout.to_dict(), "metrics": result.metrics,
            "zone_bits": layout.zone_bits, "power": float(layout.drive_from_light(result.light).mean())}
    written.append(write_json_atomic(out / "metrics.json", null_undefined(meta)))
    return written
