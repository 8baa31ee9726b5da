"""Recipe: the real-time TMO network, distilled from a per-image TMQI-optimised teacher.

    python -m edgehdr.models.training.train_tmo            # the shipped weights; ~15 min on 2 CPU cores

1. Synthetic HDR scenes from ``edgehdr.synth`` (seeds 0..191, 192 x 288).
2. Teacher: for each scene, the parameter grid of the tutorial's parametric
   operator (the same 3 x 8 x 14 grid and edge-aware application the network
   drives) optimised by Adam to maximise TMQI through a differentiable TMQI —
   the tutorial's "TMO optimised with a metric"; seconds per image.
3. Student (``TMONet``): trained on the runtime's own input encoding to maximise
   TMQI of its rendering, with the teacher's grids as a distillation term.
4. Export to ONNX (``log_luminance`` -> ``params``, opset 17, the encoding in the
   model metadata), checked, with a manifest, into ``edgehdr/models/``.

Everything is seeded; a run on the same versions reproduces the weights.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgehdr.models.training.nets import TMONet
from edgehdr.models.training.onnx_export import export_onnx, write_training_log
from edgehdr.models.training.torch_ops import apply_grid_torch, tmqi_torch, to_nchw
from edgehdr.tonemap.neural import PARAM_RANGES, TMO_GRID_SHAPE, TMO_INPUT_SHAPE, encode_tmo_input

__all__ = ["tmo_scenes", "teacher_grid", "train_student", "export_tmo", "main"]

MODELS_DIR = Path(__file__).resolve().parent.parent
_LO = torch.tensor([r[0] for r in PARAM_RANGES]).view(1, 3, 1, 1)
_SPAN = torch.tensor([r[1] - r[0] for r in PARAM_RANGES]).view(1, 3, 1, 1)


def tmo_scenes(count: int, *, seed: int = 0, height: int = 192, width: int = 288) -> list[dict[str, Any]]:
    """Scenes with the network input computed by the runtime's own encoder."""
    from edgehdr.synth import make_scene

    out = []
    for i in range(count):
        radiance = make_scene(seed + i, height, width).radiance
        x, key_log2, _ = encode_tmo_input(radiance)
        out.append({"radiance": to_nchw(radiance), "x": torch.from_numpy(x), "key": float(key_log2)})
    return out


def _tv(grid: torch.Tensor) -> torch.Tensor:
    return ((grid[..., 1:, :] - grid[..., :-1, :]) ** 2).mean() + ((grid[..., 1:] - grid[..., :-1]) ** 2).mean()


def teacher_grid(scene: dict[str, Any], *, steps: int = 60, lr: float = 0.08,
                 smooth: float = 0.01) -> tuple[np.ndarray, float]:
    """Per-image optimisation of the parameter grid maximising TMQI (minus a small smoothness term).

    Returns the grid (3, 8, 14) in physical units and its TMQI (differentiable twin).
    """
    if steps < 1:
        raise ValueError(f"teacher_grid needs steps >= 1, got {steps}")
    start = torch.tensor([0.8, 0.0, 0.8]).view(1, 3, 1, 1)
    frac = (start - _LO) / _SPAN
    raw = torch.log(frac / (1 - frac)).expand(1, 3, *TMO_GRID_SHAPE[2:]).clone().requires_grad_(True)
    opt = torch.optim.Adam([raw], lr=lr)
    key = torch.tensor([scene["key"]])
    best, best_q = None, -1.0
    for _ in range(steps):
        grid = _LO + _SPAN * torch.sigmoid(raw)
        q = tmqi_torch(scene["radiance"], apply_grid_torch(scene["radiance"], grid, key))[0]
        if float(q.detach()) > best_q:
            best_q, best = float(q.detach()), grid.detach().clone()
        loss = -q + smooth * _tv((grid - _LO) / _SPAN)
        opt.zero_grad()
        loss.backward()
        opt.step()
    if best is None:  # TMQI was NaN at every step: there is no grid to return
        raise ValueError(f"teacher optimisation found no finite TMQI in {steps} steps (scene key {scene['key']})")
    return best[0].numpy(), best_q


def train_student(scenes: list[dict[str, Any]], teacher: np.ndarray, *, epochs: int = 30, batch: int = 8,
                  lr: float = 3e-3, distill: float = 1.0, width: int = 32, seed: int = 0,
                  log: Callable[[str], object] = print) -> tuple[TMONet, list[dict[str, float]]]:
    """Adam on ``(1 - TMQI(render(student))) + distill * ||(student - teacher) / range||^2``."""
    torch.manual_seed(seed)
    model = TMONet(width)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    teacher_t = torch.from_numpy(np.asarray(teacher, np.float32))
    rng = np.random.default_rng(seed)
    history = []
    for epoch in range(epochs):
        order = rng.permutation(len(scenes))
        q_sum, d_sum, n = 0.0, 0.0, 0
        for start in range(0, len(order), batch):
            idx = order[start:start + batch]
            x = torch.cat([scenes[i]["x"] for i in idx])
            rad = torch.cat([scenes[i]["radiance"] for i in idx])
            key = torch.tensor([scenes[i]["key"] for i in idx])
            grid = model(x)
            q = tmqi_torch(rad, apply_grid_torch(rad, grid, key))
            d = (((grid - teacher_t[idx]) / _SPAN) ** 2).mean()
            loss = (1.0 - q).mean() + distill * d
            opt.zero_grad()
            loss.backward()
            opt.step()
            q_sum += float(q.sum())
            d_sum += float(d) * len(idx)
            n += len(idx)
        sched.step()
        history.append({"epoch": epoch + 1, "tmqi": q_sum / n, "distill": d_sum / n})
        log(f"epoch {epoch + 1:2d}/{epochs}: train TMQI {q_sum / n:.4f}, distillation {d_sum / n:.5f}")
    return model.eval(), history


def export_tmo(model: TMONet, path: str | os.PathLike[str], *, extra_metadata: dict[str, Any] | None = None) -> Path:
    """ONNX export (opset 17, fixed names and shapes, encoding in metadata), checked, with a manifest."""
    meta = {"edgehdr.preprocess": "tmo_log_luminance",
            "edgehdr.encoding": "input: 4x4 block-mean Rec.709 luminance, area-resampled to 128x224, "
                                "(log2 L - log2 median + 16) / 32 clipped to [0, 1]; output: alpha in [0.2, 1.6], "
                                "s in [-6, 10] stops from the median, gamma in [0.3, 1.3] on an 8x14 grid",
            **(extra_metadata or {})}
    return export_onnx(model, path, input_shape=TMO_INPUT_SHAPE, input_name="log_luminance", output_name="params",
                       model_name="tmo_net", metadata=meta, recipe="train_tmo")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgehdr.models.training.train_tmo", description=__doc__.split("\n")[0])
    p.add_argument("--scenes", type=int, default=192)
    p.add_argument("--teacher-steps", type=int, default=60)
    p.add_argument("--epochs", type=int, default=60)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--width", type=int, default=48, help="feature channels of TMONet")
    p.add_argument("--distill", type=float, default=0.1, help="weight of the teacher-grid term")
    p.add_argument("--work", type=Path, default=Path("tmo-training"), help="teacher cache and training log")
    p.add_argument("-o", "--out", type=Path, default=MODELS_DIR / "tmo_net.onnx")
    args = p.parse_args(argv)
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    scenes = tmo_scenes(args.scenes, seed=args.seed)
    cache = args.work / f"teacher_{args.scenes}_{args.seed}_{args.teacher_steps}.npz"
    if cache.is_file():
        data = np.load(cache)
        teacher, teacher_q = data["grids"], data["tmqi"]
        print(f"teacher grids from {cache}")
    else:
        grids, qs = [], []
        for i, scene in enumerate(scenes):
            g, q = teacher_grid(scene, steps=args.teacher_steps)
            grids.append(g)
            qs.append(q)
            print(f"teacher {i + 1}/{len(scenes)}: TMQI {q:.4f} ({time.perf_counter() - t0:.0f} s)", flush=True)
        teacher, teacher_q = np.stack(grids), np.asarray(qs)
        np.savez(cache, grids=teacher, tmqi=teacher_q)
    t_teacher = time.perf_counter() - t0
    model, history = train_student(scenes, teacher, epochs=args.epochs, seed=args.seed, width=args.width,
                                   distill=args.distill)
    t_total = time.perf_counter() - t0
    export_tmo(model, args.out, extra_metadata={
        "edgehdr.recipe": f"train_tmo --scenes {args.scenes} --teacher-steps {args.teacher_steps} "
                          f"--epochs {args.epochs} --seed {args.seed} --width {args.width} --distill {args.distill}"})
    log = write_training_log(args.work / "train_tmo_log.json", model, TMO_INPUT_SHAPE, history=history,
                             teacher_mean_tmqi=float(np.mean(teacher_q)), teacher_seconds=round(t_teacher, 1),
                             total_seconds=round(t_total, 1))
    print(f"wrote {args.out}: {log['parameters']} parameters, {log['macs_per_frame'] / 1e6:.1f} M MAC per frame; "
          f"teacher {t_teacher:.0f} s, total {t_total:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
