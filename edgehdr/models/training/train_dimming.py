"""Recipe: the local-dimming CNN, distilled from the PU21 optimiser.

    python -m edgehdr.models.training.train_dimming        # the shipped weights (2 CPU cores)

1. Synthetic HDR scenes from ``edgehdr.synth`` mapped to the panel
   (``display_target``), on a panel of half the demo's resolution with the demo's
   18 x 32 zones (the network input is per-zone statistics, so the panel resolution
   only changes how small a highlight can be).
2. Teacher: ``optimal_zone_light`` (projected gradient on the PU21 error of the
   simulated display) for every scene without a power limit (the budgets are then
   learnt on the display objective alone); ``--teacher-budgets`` also runs it at the
   power each of the ``max``, ``sqrt`` and ``mean`` heuristics draws on that scene
   (four times the teacher cost).
3. Student (``DimmingNet``) on the runtime's own input encoding (with the power
   budget as an input channel), trained on the same objective as the teacher
   through a PyTorch twin of the display model (Gaussian LED PSF, bilinear
   backlight, LCD clipping and leakage, PU21) after the runtime's budget step,
   plus the teacher's zone light as a distillation term. The display term is the
   mean over samples of the logarithm of their PU21 MSE (``--loss log``), i.e. the
   mean PU-PSNR the evaluation reports; the plain mean of the MSE (``--loss mse``,
   the first shipped model's) lets the scenes with large errors dominate, and left
   the student 1.4-1.7 dB below its teacher on held-out scenes against 0.85 dB.
4. Export to ONNX (``zone_stats`` -> ``light``), checked, with a manifest and the
   layout it was made for in its metadata.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from edgehdr.dimming import BacklightModel, LedLayout, display_target, optimal_zone_light, power_fraction, zone_light
from edgehdr.dimming.neural import INPUT_CHANNELS, SUBDIVISION, encode_dimming_input, model_layout_metadata
from edgehdr.models.training.nets import DimmingNet
from edgehdr.models.training.onnx_export import export_onnx, write_training_log
from edgehdr.quality.pu21 import PU21_L_MAX, PU21_L_MIN, PU21_PARAMS

__all__ = ["training_layout", "dimming_scenes", "DisplayTwin", "pu21_torch", "train_student", "export_dimming", "main"]

MODELS_DIR = Path(__file__).resolve().parent.parent
BUDGETS = ("none", "max", "sqrt", "mean")  # teacher runs per scene: no limit, then each heuristic's power


def training_layout(rows: int = 18, cols: int = 32, width_px: int = 640, height_px: int = 360,
                    **kw: Any) -> LedLayout:
    return LedLayout(rows=rows, cols=cols, width_px=width_px, height_px=height_px, source="train_dimming", **kw)


def dimming_scenes(count: int, layout: LedLayout, *, seed: int = 0) -> list[dict[str, Any]]:
    """Scenes on the panel with each budget's power (1 for 'none') and the runtime's encoding at that budget."""
    from edgehdr.synth import make_scene

    out = []
    for i in range(count):
        target = display_target(make_scene(seed + i, layout.height_px, layout.width_px).radiance, layout)
        budgets: dict[str, float] = {"none": 1.0}
        inits: dict[str, np.ndarray | None] = {"none": None}
        for h in BUDGETS[1:]:
            light = zone_light(target, layout, h)
            budgets[h], inits[h] = power_fraction(light, layout), light
        out.append({"target": target, "budgets": budgets, "inits": inits,
                    "x": {k: torch.from_numpy(encode_dimming_input(target, layout, power_budget=b))
                          for k, b in budgets.items()}})
    return out


def budget_scale_torch(light: torch.Tensor, budget: torch.Tensor) -> torch.Tensor:
    """``edgehdr.dimming.neural.within_budget`` in PyTorch, per sample."""
    mean = light.mean(dim=(1, 2, 3), keepdim=True)
    return light * torch.clamp(budget.view(-1, 1, 1, 1) / mean.clamp_min(1e-12), max=1.0)


def pu21_torch(y: torch.Tensor, variant: str = "banding_glare") -> torch.Tensor:
    """``edgehdr.quality.pu21.pu21_encode`` in PyTorch."""
    p1, p2, p3, p4, p5, p6, p7 = PU21_PARAMS[variant]
    yp = y.clamp(PU21_L_MIN, PU21_L_MAX).pow(p4)
    return p7 * (((p1 + p2 * yp) / (1.0 + p3 * yp)).pow(p5) - p6)


class DisplayTwin:
    """PyTorch twin of ``BacklightModel.simulate`` + ideal LCD (clip to [leak b, b]) for a Gaussian PSF."""

    def __init__(self, layout: LedLayout) -> None:
        if layout.psf_model != "gaussian":
            raise NotImplementedError("the training twin models a Gaussian PSF; measured PSFs train on "
                                      "the teacher term only (--display-weight 0)")
        model = BacklightModel(layout)
        self.layout = layout
        self.a_rows = torch.from_numpy(model._a_rows)
        self.a_cols = torch.from_numpy(model._a_cols)
        self.gain = float(model.gain)
        self.leak = 1.0 / layout.native_contrast

    def backlight(self, light: torch.Tensor) -> torch.Tensor:
        """(B, 1, R, C) light -> (B, 1, H, W) backlight in cd/m^2."""
        work = self.gain * torch.einsum("hr,brc,wc->bhw", self.a_rows, light[:, 0], self.a_cols)
        return F.interpolate(work[:, None], size=(self.layout.height_px, self.layout.width_px), mode="bilinear",
                             align_corners=False)

    def pu_error(self, light: torch.Tensor, target: torch.Tensor, target_pu: torch.Tensor) -> torch.Tensor:
        """Mean squared PU21 error of the shown image per sample (the teacher's objective)."""
        b = self.backlight(light)
        shown = torch.minimum(torch.maximum(target, self.leak * b), b)
        return ((pu21_torch(shown) - target_pu) ** 2).mean(dim=(1, 2, 3))


def train_student(scenes: Sequence[Mapping[str, Any]], teacher: Mapping[str, np.ndarray], layout: LedLayout, *,
                  epochs: int = 60, batch: int = 8, lr: float = 3e-3, distill: float = 200.0, seed: int = 0,
                  loss: str = "log", width: int = 32,
                  log: Callable[[str], object] = print) -> tuple[DimmingNet, list[dict[str, float]]]:
    """Adam on the PU21 display error of the budgeted light plus ``distill`` x MSE to the teacher's light.

    ``loss="mse"`` averages the samples' PU21 mean squared errors; ``loss="log"`` averages their
    logarithms, which is (up to -10 / ln 10) the mean PU-PSNR the evaluation reports: every scene
    counts by its relative error, so an easy scene's few-tenths-of-a-dB loss is not outweighed by a
    hard scene's large absolute error.

    ``teacher[kind]`` is (scenes, R, C) for the budget kinds that have a teacher; every (scene, budget)
    pair is a sample, trained on the display objective (the teacher's own) and, where there is a
    teacher for its budget, the distillation term.
    """
    if loss not in ("mse", "log"):
        raise ValueError(f"loss must be 'mse' or 'log', got {loss!r}")
    torch.manual_seed(seed)
    model = DimmingNet(layout.rows, layout.cols, width=width)
    twin = DisplayTwin(layout)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    targets = [torch.from_numpy(s["target"].transpose(2, 0, 1).copy())[None] for s in scenes]
    targets_pu = [pu21_torch(t) for t in targets]
    samples = [(i, k) for i in range(len(scenes)) for k in BUDGETS]
    teacher_t = {k: torch.from_numpy(np.asarray(v, np.float32))[:, None] for k, v in teacher.items()}
    rng = np.random.default_rng(seed)
    history = []
    for epoch in range(epochs):
        order = rng.permutation(len(samples))
        e_sum, d_sum = 0.0, 0.0
        for start in range(0, len(order), batch):
            chosen = [samples[j] for j in order[start:start + batch]]
            x = torch.cat([scenes[i]["x"][k] for i, k in chosen])
            budget = torch.tensor([scenes[i]["budgets"][k] for i, k in chosen], dtype=torch.float32)
            light = budget_scale_torch(model(x), budget)
            err = twin.pu_error(light, torch.cat([targets[i] for i, _ in chosen]),
                                torch.cat([targets_pu[i] for i, _ in chosen]))
            taught = [(j, teacher_t[k][i:i + 1]) for j, (i, k) in enumerate(chosen) if k in teacher_t]
            d = (((light[[j for j, _ in taught]] - torch.cat([t for _, t in taught])) ** 2).mean() if taught
                 else torch.zeros(()))
            objective = (err.clamp_min(1e-6).log().mean() if loss == "log" else err.mean()) + distill * d
            opt.zero_grad()
            objective.backward()
            opt.step()
            e_sum += float(err.detach().sum())
            d_sum += float(d.detach()) * len(chosen)
        sched.step()
        n = len(samples)
        history.append({"epoch": epoch + 1, "pu_mse": e_sum / n, "distill_mse": d_sum / n})
        log(f"epoch {epoch + 1:2d}/{epochs}: PU21 MSE {e_sum / n:.3f}, teacher MSE {d_sum / n:.5f}")
    return model.eval(), history


def export_dimming(model: DimmingNet, layout: LedLayout, path: str | os.PathLike[str], *,
                   extra_metadata: dict[str, Any] | None = None) -> Path:
    """ONNX export (``zone_stats`` -> ``light``, the layout and encoding in metadata), checked, with a manifest."""
    shape = (1, INPUT_CHANNELS, layout.rows * SUBDIVISION, layout.cols * SUBDIVISION)
    meta = {"edgehdr.preprocess": "dimming_zone_stats",
            "edgehdr.layout": json.dumps(model_layout_metadata(layout)),
            "edgehdr.encoding": "input: per 4x4 sub-zone max and mean of max-RGB / panel peak, log2(v)/12 + 1 "
                                "clipped to [0, 1], and the power budget (mean light allowed, 1 = none) as a "
                                "constant channel; output: zone light fraction in [0, 1], scaled down uniformly "
                                "when its mean exceeds the budget",
            **(extra_metadata or {})}
    return export_onnx(model, path, input_shape=shape, input_name="zone_stats", output_name="light",
                       model_name="dimming_net", metadata=meta, recipe="train_dimming",
                       build_flags={"layout": model_layout_metadata(layout)})


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgehdr.models.training.train_dimming",
                                description=__doc__.split("\n")[0])
    p.add_argument("--rows", type=int, default=18)
    p.add_argument("--cols", type=int, default=32)
    p.add_argument("--scenes", type=int, default=256)
    p.add_argument("--teacher-budgets", action=argparse.BooleanOptionalAction, default=False,
                   help="also run the teacher at the heuristics' powers (four times the teacher cost)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--distill", type=float, default=10.0)
    p.add_argument("--loss", choices=("mse", "log"), default="log",
                   help="display term: mean of the samples' PU21 MSE, or of its logarithm (the mean PU-PSNR)")
    p.add_argument("--width", type=int, default=32, help="channels of DimmingNet at zone resolution")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=Path("dimming-training"))
    p.add_argument("-o", "--out", type=Path, default=MODELS_DIR / "dimming_net.onnx")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    layout = training_layout(args.rows, args.cols)
    args.work.mkdir(parents=True, exist_ok=True)
    scenes = dimming_scenes(args.scenes, layout, seed=args.seed)
    kinds = BUDGETS if args.teacher_budgets else ("none",)
    cache = args.work / f"teacher_{args.rows}x{args.cols}_{args.scenes}_{args.seed}_{'-'.join(kinds)}.npz"
    if cache.is_file():
        data = np.load(cache)
        teacher = {k: data[k] for k in kinds}
        print(f"teacher light from {cache}")
    else:
        model = BacklightModel(layout)
        teacher = {k: [] for k in kinds}
        for i, s in enumerate(scenes):
            for k in kinds:
                budget = None if k == "none" else s["budgets"][k]
                teacher[k].append(optimal_zone_light(s["target"], layout, model=model, init=s["inits"][k],
                                                     power_budget=budget))
            print(f"teacher {i + 1}/{len(scenes)} ({time.perf_counter() - t0:.0f} s)", flush=True)
        teacher = {k: np.stack(v) for k, v in teacher.items()}
        np.savez(cache, **teacher)
    t_teacher = time.perf_counter() - t0
    net, history = train_student(scenes, teacher, layout, epochs=args.epochs, distill=args.distill, seed=args.seed,
                                 loss=args.loss, width=args.width)
    t_total = time.perf_counter() - t0
    export_dimming(net, layout, args.out, extra_metadata={
        "edgehdr.recipe": f"train_dimming --rows {args.rows} --cols {args.cols} --scenes {args.scenes} "
                          f"--epochs {args.epochs} --distill {args.distill} --loss {args.loss} --width {args.width} "
                          f"--seed {args.seed} "
                          f"{'--teacher-budgets' if args.teacher_budgets else '--no-teacher-budgets'}"})
    shape = (1, INPUT_CHANNELS, args.rows * SUBDIVISION, args.cols * SUBDIVISION)
    log = write_training_log(args.work / "train_dimming_log.json", net, shape, history=history,
                             teacher_seconds=round(t_teacher, 1), total_seconds=round(t_total, 1))
    print(f"wrote {args.out}: {log['parameters']} parameters, {log['macs_per_frame'] / 1e6:.1f} M MAC; "
          f"teacher {t_teacher:.0f} s, total {t_total:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
