"""Quality and speed table of the local-dimming CNN against its teacher and the heuristics.

    python -m edgehdr.models.training.evaluate_dimming [--scenes 16] [--int8 out/dimming_net.int8.onnx]
        [--sizes 640x360 1280x720] [--against retrained.onnx]

Held-out synthetic scenes (seeds from 100000), the demo's 18 x 32 zones on a 640 x 360
and a 1280 x 720 panel (``--sizes``; the larger panel takes about four times as long,
with the optimiser run five times per scene). Every light goes through the same path as at runtime: 12-bit
codes (rounded within a power budget where there is one), backlight simulation, LCD
compensation, simulated display; PU-PSNR against the target. "At equal power": the
network given each heuristic's power as its budget, against that heuristic and against
the optimiser at the same budget. Speed: one 1080p frame (encoder + network, ONNX
Runtime CPU FP32) against the ``sqrt`` heuristic's zone statistics, median of 30.

Real content (``evaluate_real``, ``--real``): every shared HDR photograph as the display
target (its robust peak at the panel's peak), at 48 x 48 zones (heuristics) and at the
network's 18 x 32 (heuristics and network), with no power limit and under power budgets
(``within_budget``: the light scaled down uniformly to the budget's mean light fraction,
as the runtime does): PU-PSNR, clipped pixels and power per algorithm, and at the network's
grid the PU21 optimiser (the network's teacher) at each budget. Rows are reported per split
(``splits.REAL_HELD_OUT``: photographs no recipe trains on; "train": those that
``train_dimming --crops`` may crop). The runtime's default algorithm and budget are chosen
from this table.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgehdr.timing import median_ms

__all__ = ["evaluate", "evaluate_real", "main"]


def evaluate_real(*, zones: Sequence[tuple[int, int]] = ((48, 48), (18, 32)),
                  budgets: Sequence[float | None] = (None, 0.5, 0.35, 0.25), model: str = "dimming_net",
                  max_side: int = 1024, unseen: bool = False) -> list[dict[str, Any]]:
    """One row per photograph, zone grid, budget and algorithm: PU-PSNR, clipped fraction, power.

    Where the network runs (its own zone grid), the PU21 optimiser ``optimal_zone_light`` at the
    same budget is a row too ("teacher"). Each row names its split ("held-out" or "train"; with ``unseen``,
    the unseen photographs too, ``splits.UNSEEN_PHOTOS_DIR``, as "unseen").
    """
    from edgehdr.dimming import (
        BacklightModel,
        LedLayout,
        dimming_metrics,
        display_target,
        lcd_compensation,
        optimal_zone_light,
        simulate_display,
        zone_light,
        zone_values_within_budget,
    )
    from edgehdr.dimming.neural import NeuralDimmer
    from edgehdr.dimming.zones import HEURISTICS
    from edgehdr.infer import OnnxRuntimeRunner
    from edgehdr.models import model_path
    from edgehdr.models.training.splits import evaluation_photos

    runner = OnnxRuntimeRunner(model_path(model)).load()
    rows: list[dict[str, Any]] = []
    for name, split, radiance in evaluation_photos(max_side=max_side, unseen=unseen):
        h, w = radiance.shape[:2]
        for zr, zc in zones:
            layout = LedLayout(rows=zr, cols=zc, width_px=w, height_px=h)
            backlight = BacklightModel(layout)
            target = display_target(radiance, layout)
            net = None
            try:
                net = NeuralDimmer(runner, layout)
            except ValueError:  # the shipped network is made for one zone grid
                pass
            free = {a: zone_light(target, layout, a) for a in HEURISTICS}  # the same for every budget
            for budget in budgets:
                lights = dict(free)
                if net is not None:
                    lights["neural"] = net(target, power_budget=1.0 if budget is None else budget)
                    lights["teacher"] = optimal_zone_light(target, layout, model=backlight, power_budget=budget,
                                                           init=free["max"])
                for algorithm, light in lights.items():  # the runtime's last step: scaled, rounded within
                    codes = zone_values_within_budget(light, layout, budget)
                    q = layout.light_from_zone_values(codes).astype(np.float32)
                    b = backlight.simulate(q)
                    m = dimming_metrics(target, simulate_display(lcd_compensation(target, b, layout), b, layout), q,
                                        layout)
                    rows.append({"photo": name, "split": split if split in ("held-out", "unseen") else "train",
                                 "zones": f"{zr}x{zc}", "budget": budget, "algorithm": algorithm,
                                 **{k: m[k] for k in ("pu_psnr_db", "clipped_fraction", "power")}})
    runner.close()
    return rows


def format_real(rows: Sequence[dict[str, Any]]) -> str:
    """Mean and worst PU-PSNR, mean clipped fraction and mean power per split, zone grid, budget and algorithm."""
    lines = [f"{'split':<8} {'zones':<6} {'budget':>6} {'algorithm':<11} {'mean PU-PSNR':>12} {'worst':>6} "
             f"{'clipped':>8} {'power':>6} {'max power':>9}"]
    keys = sorted(dict.fromkeys((r.get("split", "all"), r["zones"], r["budget"], r["algorithm"]) for r in rows),
                  key=lambda k: (k[0], k[1], -1.0 if k[2] is None else -k[2]))
    for split, zones, budget, algorithm in keys:
        sel = [r for r in rows
               if (r.get("split", "all"), r["zones"], r["budget"], r["algorithm"]) == (split, zones, budget, algorithm)]
        psnr = [r["pu_psnr_db"] for r in sel]
        lines.append(f"{split:<8} {zones:<6} {'none' if budget is None else budget:>6} {algorithm:<11} "
                     f"{np.mean(psnr):>12.2f} "
                     f"{np.min(psnr):>6.2f} {np.mean([r['clipped_fraction'] for r in sel]):>8.4f} "
                     f"{np.mean([r['power'] for r in sel]):>6.3f} {np.max([r['power'] for r in sel]):>9.3f}")
    return "\n".join(lines)


def evaluate(scenes: int = 16, *, model: str | os.PathLike[str] = "dimming_net",
             int8: str | os.PathLike[str] | None = None,
             sizes: Sequence[tuple[int, int]] = ((360, 640), (720, 1280)),
             against: str | os.PathLike[str] | None = None, speed: bool = True,
             refine: Sequence[int] = ()) -> dict[str, Any]:
    """The table above; ``against``: a second model (e.g. a retrain) scored in the same run on the same scenes,
    without a limit ("against" row) and at each heuristic's power (``against_db``, ``against_wins``);
    ``speed=False`` leaves out the 1080p timing (``speed_1080p_ms`` None).

    "network" is the runtime's answer (the network, then ``REFINE_STEPS`` steps on its sub-zone grid,
    ``edgehdr.dimming.refine``), "network alone" the network's own light.

    ``refine``: iteration counts K of the teacher's own descent started from the network's own light, without a
    limit, as rows "refined K" (the objective on the panel's pixels, as the teacher has it) and "refined K,
    1/4 area" (on the target area-averaged to a quarter of the panel's width and height, the PSF at that
    resolution): how far a few steps of the display model at run time would take the network's answer towards
    its teacher. A measurement, not a runtime path (``optimal_zone_light`` takes tens of ms a call)."""
    import cv2

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
    from edgehdr.dimming.neural import NeuralDimmer
    from edgehdr.dimming.zones import HEURISTICS, zone_statistics
    from edgehdr.infer import OnnxRuntimeRunner
    from edgehdr.models import model_path
    from edgehdr.synth import make_scene

    path = model_path(model)
    runner = OnnxRuntimeRunner(path).load()
    quant = OnnxRuntimeRunner(int8).load() if int8 else None
    rival = OnnxRuntimeRunner(model_path(against)).load() if against else None
    result: dict[str, Any] = {"sizes": {}}
    for height, width in sizes:
        layout = LedLayout(rows=18, cols=32, width_px=width, height_px=height)
        backlight = BacklightModel(layout)
        net = NeuralDimmer(runner, layout, model_path=path)  # with the runtime's refinement steps
        alone = NeuralDimmer(runner, layout, model_path=path, refine_steps=0)
        net8 = NeuralDimmer(quant, layout) if quant else None
        other = NeuralDimmer(rival, layout) if rival else None

        # layout and backlight bound as defaults: the closure belongs to this loop iteration's panel.
        def shown_metrics(light: np.ndarray, target: np.ndarray, budget: float | None = None, *,
                          layout: LedLayout = layout, backlight: BacklightModel = backlight) -> dict[str, Any]:
            light = layout.light_from_zone_values(quantise_within_budget(light, layout, budget)).astype(np.float32)
            b = backlight.simulate(light)
            return dimming_metrics(target, simulate_display(lcd_compensation(target, b, layout), b, layout), light,
                                   layout)

        refined_rows = [f"refined {k}{quarter}" for k in refine for quarter in ("", ", 1/4 area")]
        rows: dict[str, list[dict[str, Any]]] = {k: [] for k in ("teacher", "network", "network alone",
                                                                  "network_int8", "against", *refined_rows,
                                                                  *HEURISTICS)}
        if refine:  # the quarter-resolution objective's panel (a panel of at least 64 x 64 pixels)
            quarter_layout = LedLayout(rows=18, cols=32, width_px=width // 4, height_px=height // 4)
            quarter_backlight = BacklightModel(quarter_layout, work_scale=1)
        equal_power: dict[str, list[dict[str, float]]] = {h: [] for h in HEURISTICS}
        zone_mae_int8: list[float] = []
        for i in range(scenes):
            target = display_target(make_scene(100_000 + i, height, width).radiance, layout)
            ours = net(target)
            rows["network"].append(shown_metrics(ours, target))
            own = alone(target)
            rows["network alone"].append(shown_metrics(own, target))
            rows["teacher"].append(shown_metrics(optimal_zone_light(target, layout, model=backlight), target))
            if other is not None:
                rows["against"].append(shown_metrics(other(target), target))
            if refine:
                quarter = cv2.resize(target, (quarter_layout.width_px, quarter_layout.height_px),
                                     interpolation=cv2.INTER_AREA)
            for k in refine:
                rows[f"refined {k}"].append(shown_metrics(
                    optimal_zone_light(target, layout, model=backlight, init=own, iterations=k), target))
                rows[f"refined {k}, 1/4 area"].append(shown_metrics(
                    optimal_zone_light(quarter, quarter_layout, model=quarter_backlight, init=own, iterations=k),
                    target))
            if net8 is not None:
                ours8 = net8(target)
                rows["network_int8"].append(shown_metrics(ours8, target))
                zone_mae_int8.append(float(np.mean(np.abs(ours8 - ours))))
            for h in HEURISTICS:
                light_h = zone_light(target, layout, h)
                m = shown_metrics(light_h, target)
                rows[h].append(m)
                mine = shown_metrics(net(target, power_budget=m["power"]), target, budget=m["power"])
                best = shown_metrics(optimal_zone_light(target, layout, model=backlight, init=light_h,
                                                        power_budget=m["power"]), target, budget=m["power"])
                equal_power[h].append({"heuristic_db": m["pu_psnr_db"], "network_db": mine["pu_psnr_db"],
                                       "teacher_db": best["pu_psnr_db"], "network_power": mine["power"],
                                       "heuristic_power": m["power"]})
                if other is not None:
                    equal_power[h][-1]["against_db"] = shown_metrics(other(target, power_budget=m["power"]), target,
                                                                     budget=m["power"])["pu_psnr_db"]
        summary = {k: {"pu_psnr_db": float(np.mean([m["pu_psnr_db"] for m in v])),
                       "power": float(np.mean([m["power"] for m in v])),
                       "halo_pu": float(np.mean([m["halo_pu"] for m in v]))} for k, v in rows.items() if v}
        eq = {h: {"heuristic_db": float(np.mean([r["heuristic_db"] for r in v])),
                  "network_db": float(np.mean([r["network_db"] for r in v])),
                  "teacher_db": float(np.mean([r["teacher_db"] for r in v])),
                  "wins": int(sum(r["network_db"] > r["heuristic_db"] for r in v)), "of": len(v),
                  "power_ok": all(r["network_power"] <= r["heuristic_power"] + 1e-6 for r in v)}
              for h, v in equal_power.items()}
        if other is not None:
            for h, v in equal_power.items():
                eq[h]["against_db"] = float(np.mean([r["against_db"] for r in v]))
                eq[h]["against_wins"] = int(sum(r["against_db"] > r["heuristic_db"] for r in v))
        result["sizes"][f"{width}x{height}"] = {"summary": summary, "equal_power": eq,
                                                 "int8_zone_mae": float(np.mean(zone_mae_int8)) if zone_mae_int8
                                                 else None}
    if not speed:
        result["speed_1080p_ms"] = None
        return result
    # Speed at 1080p.
    layout = LedLayout(rows=18, cols=32, width_px=1920, height_px=1080)
    net = NeuralDimmer(runner, layout)
    alone = NeuralDimmer(runner, layout, refine_steps=0)
    target = display_target(make_scene(3, 1080, 1920).radiance, layout)

    result["speed_1080p_ms"] = {"network_total": median_ms(lambda: net(target), 30, 3),
                                "network_alone": median_ms(lambda: alone(target), 30, 3),
                                "sqrt_heuristic": median_ms(lambda: zone_light(
                                    target, layout, "sqrt", stats=zone_statistics(target, layout)), 30, 3)}
    return result


def main(argv: Sequence[str] | None = None) -> int:
    from edgehdr.cli import frame_size

    p = argparse.ArgumentParser(prog="python -m edgehdr.models.training.evaluate_dimming")
    p.add_argument("--scenes", type=int, default=16)
    p.add_argument("--model", default="dimming_net")
    p.add_argument("--int8", default=None)
    p.add_argument("--against", default=None, metavar="MODEL",
                   help="a second dimming model (e.g. a retrain) scored in the same run on the same scenes")
    p.add_argument("--sizes", type=frame_size, nargs="+", default=[(640, 360), (1280, 720)], metavar="WxH",
                   help="panel sizes (default 640x360 1280x720; the larger takes about 4x the smaller's time)")
    p.add_argument("--refine", type=int, nargs="*", default=[], metavar="K",
                   help="also the network's light refined by K steps of its teacher's descent (rows 'refined K')")
    p.add_argument("--json", default=None)
    p.add_argument("--real", action="store_true", help="only the table on the shared real photographs")
    p.add_argument("--unseen", action="store_true",
                   help="with --real, the unseen photographs too (splits.UNSEEN_PHOTOS_DIR: ten panoramas no recipe "
                        "reads)")
    args = p.parse_args(argv)
    if args.unseen and not args.real:
        p.error("--unseen needs --real")
    if args.real:
        rows = evaluate_real(model=args.model, unseen=args.unseen)
        print(format_real(rows))
        if args.json:
            from edgehdr.io.atomic import write_json_atomic

            write_json_atomic(args.json, rows)
        return 0
    result = evaluate(args.scenes, model=args.model, int8=args.int8, sizes=[(h, w) for w, h in args.sizes],
                      against=args.against, refine=args.refine)
    for size, r in result["sizes"].items():
        print(f"panel {size}, 18x32 zones, {args.scenes} held-out scenes")
        print(f"  {'algorithm':<20} {'PU-PSNR dB':>10} {'power':>7} {'halo PU':>8}")
        for k, v in r["summary"].items():
            print(f"  {k:<20} {v['pu_psnr_db']:>10.2f} {v['power']:>7.4f} {v['halo_pu']:>8.3f}")
        for h, v in r["equal_power"].items():
            print(f"  at {h}'s power: network {v['network_db']:.2f} dB, {h} {v['heuristic_db']:.2f} dB, teacher "
                  f"{v['teacher_db']:.2f} dB; network wins {v['wins']}/{v['of']}, within the power: {v['power_ok']}"
                  + (f"; against {v['against_db']:.2f} dB, wins {v['against_wins']}/{v['of']}" if "against_db" in v
                     else ""))
        if r["int8_zone_mae"] is not None:
            print(f"  INT8 zone light mean abs error vs FP32: {r['int8_zone_mae']:.4f}")
    print("1080p ms:", result["speed_1080p_ms"])
    if args.json:
        from edgehdr.io.atomic import write_json_atomic

        write_json_atomic(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
