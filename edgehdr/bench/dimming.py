"""``edgehdr bench --dimming``: local-dimming timing at 1080p and the quality table over synthetic scenes."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from edgehdr.progress import Progress
from edgehdr.synth import make_scene
from edgehdr.timing import median_ms

__all__ = ["dimming_benchmark", "dimming_quality_table", "format_dimming"]


def dimming_benchmark(*, repeat: int = 15, seed: int = 0, quiet: bool = False) -> dict[str, Any]:
    """Median ms at 1080p with 48 x 48 = 2304 zones: zone values + backlight + LCD compensation per heuristic.

    Also times each part and, for scale, OpenCV resizing a frame (the backlight upsampling step).
    """
    from edgehdr.dimming import BacklightModel, LedLayout, display_target, lcd_compensation, zone_light, zone_statistics
    from edgehdr.dimming.zones import HEURISTICS

    progress = Progress(2, quiet=quiet)
    progress.step("rendering a 1080p synthetic target")
    layout = LedLayout(rows=48, cols=48, width_px=1920, height_px=1080)
    target = display_target(make_scene(seed, 1080, 1920).radiance, layout)
    model = BacklightModel(layout)
    backlight = np.empty((1080, 1920), np.float32)
    lcd = np.empty(target.shape, np.uint8)
    progress.step(f"timing {repeat} runs per algorithm")
    rows = []
    for algorithm in HEURISTICS:
        def run(algorithm: str = algorithm) -> None:  # timed right here, within this iteration
            stats = zone_statistics(target, layout, histogram=algorithm == "percentile")
            light = zone_light(target, layout, algorithm, stats=stats)
            model.simulate(light, out=backlight)
            lcd_compensation(target, backlight, layout, out=lcd)

        rows.append({"algorithm": algorithm, "total_ms": round(median_ms(run, repeat), 2)})
    light = zone_light(target, layout, "sqrt")
    parts = {
        "zone_statistics_ms": median_ms(lambda: zone_statistics(target, layout), repeat),
        "backlight_ms": median_ms(lambda: model.simulate(light, out=backlight), repeat),
        "lcd_compensation_ms": median_ms(lambda: lcd_compensation(target, backlight, layout, out=lcd), repeat),
    }
    return {"size": "1080p", "zones": layout.zones, "repeat": repeat, "rows": rows,
            "parts": {k: round(v, 2) for k, v in parts.items()}}


def dimming_quality_table(seeds: Iterable[int] = range(10), *, height: int = 540, width: int = 960, rows: int = 24,
                          cols: int = 32, quiet: bool = False) -> dict[str, Any]:
    """PU-PSNR, halo and power of every algorithm over synthetic scenes; the optimiser at each heuristic's power."""
    from edgehdr.dimming import (
        BacklightModel,
        LedLayout,
        dimming_metrics,
        display_target,
        lcd_compensation,
        optimal_zone_light,
        quantise_within_budget,
        simulate_display,
        zone_light,
    )
    from edgehdr.dimming.zones import HEURISTICS

    layout = LedLayout(rows=rows, cols=cols, width_px=width, height_px=height)
    model = BacklightModel(layout)
    seeds = list(seeds)
    progress = Progress(len(seeds), quiet=quiet)

    def evaluate(light: np.ndarray, target: np.ndarray, budget: float | None = None) -> dict[str, Any]:
        light = layout.light_from_zone_values(quantise_within_budget(light, layout, budget)).astype(np.float32)
        backlight = model.simulate(light)
        shown = simulate_display(lcd_compensation(target, backlight, layout), backlight, layout)
        return dimming_metrics(target, shown, light, layout)

    results = []
    for seed in seeds:
        progress.step(f"scene {seed}: heuristics and the optimiser at each heuristic's power")
        target = display_target(make_scene(seed, height, width).radiance, layout)
        for algorithm in HEURISTICS:
            light = zone_light(target, layout, algorithm)
            m = evaluate(light, target)
            opt = optimal_zone_light(target, layout, model=model, init=light, power_budget=m["power"])
            mo = evaluate(opt, target, budget=m["power"])  # 12-bit codes rounded within the budget
            results.append({"seed": seed, "algorithm": algorithm, **{k: m[k] for k in ("pu_psnr_db", "halo_pu", "power",
                                                                                      "clipped_fraction")},
                            "optimal_pu_psnr_db": mo["pu_psnr_db"], "optimal_halo_pu": mo["halo_pu"],
                            "optimal_power": mo["power"]})
    return {"panel": [width, height], "zones": [rows, cols], "rows": results}


def format_dimming(bench: dict[str, Any] | None, table: dict[str, Any] | None) -> str:
    lines = []
    if bench:
        lines.append(f"1080p, {bench['zones']} zones: zone values + backlight + LCD compensation (median of "
                     f"{bench['repeat']})")
        for r in bench["rows"]:
            lines.append(f"  {r['algorithm']:<11} {r['total_ms']:6.2f} ms")
        p = bench["parts"]
        lines.append(f"  parts (sqrt): statistics {p['zone_statistics_ms']:.2f} ms, backlight "
                     f"{p['backlight_ms']:.2f} ms, LCD {p['lcd_compensation_ms']:.2f} ms")
    if table:
        w, h = table["panel"]
        zr, zc = table["zones"]
        lines.append(f"quality over {len({r['seed'] for r in table['rows']})} scenes ({w}x{h}, {zr}x{zc} zones); "
                     "optimal = optimisation at the heuristic's power budget")
        lines.append(f"  {'algorithm':<11} {'PU-PSNR':>8} {'halo PU':>8} {'power':>7} {'clipped':>8} | "
                     f"{'optimal':>8} {'halo PU':>8} {'power':>7}  wins")
        for algorithm in dict.fromkeys(r["algorithm"] for r in table["rows"]):
            rs = [r for r in table["rows"] if r["algorithm"] == algorithm]

            def mean(key: str, rs: list[dict[str, Any]] = rs) -> float:
                vals = [r[key] for r in rs if r[key] is not None]
                return float(np.mean(vals)) if vals else float("nan")

            wins = sum(r["optimal_pu_psnr_db"] > r["pu_psnr_db"] and r["optimal_power"] <= r["power"] + 1e-9
                       for r in rs)
            lines.append(f"  {algorithm:<11} {mean('pu_psnr_db'):8.2f} {mean('halo_pu'):8.3f} {mean('power'):7.4f} "
                         f"{mean('clipped_fraction'):8.3f} | {mean('optimal_pu_psnr_db'):8.2f} "
                         f"{mean('optimal_halo_pu'):8.3f} {mean('optimal_power'):7.4f}  {wins}/{len(rs)}")
    return "\n".join(lines)
