"""Recipe: the local-dimming CNN, distilled from the PU21 optimiser.

    python -m edgehdr.models.training.train_dimming        # the shipped weights (2 CPU cores, ~75-90 min)

1. Synthetic HDR scenes from ``edgehdr.synth`` and random crops of the training split
   of the shared real photographs (``--crops`` per photograph, ``splits.random_crops``;
   the held-out ones never), mapped to the panel (``display_target``), on a panel of
   half the demo's resolution with the demo's 18 x 32 zones (the network input is
   per-zone statistics, so the panel resolution only changes how small a highlight
   can be). Trained on synthetic scenes alone the student was 0.8-1.2 dB below the
   ``max`` heuristic on the held-out photographs at budgets of 0.25-0.5; with the
   crops it is 2.4-3.0 dB above it, and closer to its teacher on synthetic scenes too.
   512 synthetic scenes instead of 256 (the default since) brought the student within
   0.1 dB of its teacher at 1280 x 720 at every heuristic's power and 0.43 dB without
   a limit (0.66 before), and 1.2 dB higher on the held-out photographs without one.
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

``--min-stat`` adds a fourth input channel, each sub-zone's darkest pixel
(``edgehdr.dimming.neural``): the statistic the LCD's leakage acts on first, which
max and mean do not carry. Off by default (the README gives its measured effect).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgehdr.dimming import BacklightModel, LedLayout, display_target, optimal_zone_light, power_fraction, zone_light
from edgehdr.dimming.neural import INPUT_CHANNELS, SUBDIVISION, encode_dimming_input, model_layout_metadata
from edgehdr.models.training.cachekey import DIMMING_SOURCES, data_key
from edgehdr.models.training.nets import DimmingNet
from edgehdr.models.training.onnx_export import export_onnx, write_training_log
from edgehdr.models.training.reproduce import source_revision, training_source
from edgehdr.quality.pu21 import PU21_L_MAX, PU21_L_MIN, PU21_PARAMS
from edgehdr.tonemap.guided import bilinear_taps

__all__ = ["training_layout", "dimming_scenes", "real_photo_crops", "teacher_light", "DisplayTwin", "pu21_torch",
           "train_student", "export_dimming", "main"]

MODELS_DIR = Path(__file__).resolve().parent.parent
BUDGETS = ("none", "max", "sqrt", "mean")  # teacher runs per scene: no limit, then each heuristic's power


def training_layout(rows: int = 18, cols: int = 32, width_px: int = 640, height_px: int = 360,
                    **kw: Any) -> LedLayout:
    return LedLayout(rows=rows, cols=cols, width_px=width_px, height_px=height_px, source="train_dimming", **kw)


def _scene_sample(target: np.ndarray, layout: LedLayout, channels: int = INPUT_CHANNELS) -> dict[str, Any]:
    """One training sample: the panel target, each budget's power (1 for 'none'), heuristic inits and encodings."""
    budgets: dict[str, float] = {"none": 1.0}
    inits: dict[str, np.ndarray | None] = {"none": None}
    for h in BUDGETS[1:]:
        light = zone_light(target, layout, h)
        budgets[h], inits[h] = power_fraction(light, layout), light
    return {"target": target, "budgets": budgets, "inits": inits,
            "x": {k: encode_dimming_input(target, layout, power_budget=b, channels=channels)
                  for k, b in budgets.items()}}


def _synthetic_sample(args: tuple[int, LedLayout, int]) -> dict[str, Any]:
    from edgehdr.synth import make_scene

    index, layout, channels = args
    return _scene_sample(display_target(make_scene(index, layout.height_px, layout.width_px).radiance, layout), layout,
                         channels)


def _photo_sample(args: tuple[np.ndarray, LedLayout, int]) -> dict[str, Any]:
    radiance, layout, channels = args
    return _scene_sample(display_target(radiance, layout), layout, channels)


def dimming_scenes(count: int, layout: LedLayout, *, seed: int = 0, photos: Sequence[np.ndarray] = (),
                   workers: int = 1, channels: int = INPUT_CHANNELS) -> list[dict[str, Any]]:
    """Scenes on the panel with each budget's power (1 for 'none') and the runtime's encoding at that budget.

    ``count`` synthetic scenes (``make_scene(seed + i)``), then one sample per radiance map in
    ``photos`` (crops of real photographs at the panel's resolution, see ``real_photo_crops``).
    ``workers`` > 1 prepares them in that many processes (same result, in order). ``channels``:
    the input encoding (``edgehdr.dimming.neural.ENCODINGS``).
    """
    synthetic = [(seed + i, layout, channels) for i in range(count)]
    real = [(np.asarray(r, np.float32), layout, channels) for r in photos]
    if workers > 1 and len(synthetic) + len(real) > 1:
        with _pool(workers) as pool:
            out = pool.map(_synthetic_sample, synthetic, chunksize=8) + pool.map(_photo_sample, real, chunksize=4)
    else:
        out = [*map(_synthetic_sample, synthetic), *map(_photo_sample, real)]
    for sample in out:
        sample["x"] = {k: torch.from_numpy(v) for k, v in sample["x"].items()}
    return out


def _single_threaded() -> None:
    import numba

    numba.set_num_threads(1)  # one process per core: numba's own threads would oversubscribe


@contextlib.contextmanager
def _pool(workers: int) -> Iterator[Any]:
    """A pool of single-threaded workers, forked from a fresh server process (forking this one is unsafe
    once it has run OpenMP threads: PyTorch's or numba's); closed and joined, not terminated, on the way out."""
    import multiprocessing

    pool = multiprocessing.get_context("forkserver").Pool(workers, initializer=_single_threaded)
    try:
        yield pool
        pool.close()
    except BaseException:
        pool.terminate()
        raise
    finally:
        pool.join()


def _teacher_job(args: tuple[Mapping[str, Any], LedLayout, tuple[str, ...]]) -> list[np.ndarray]:
    sample, layout, kinds = args
    model = BacklightModel(layout)
    return [optimal_zone_light(sample["target"], layout, model=model, init=sample["inits"][k],
                               power_budget=None if k == "none" else sample["budgets"][k]) for k in kinds]


def teacher_light(scenes: Sequence[Mapping[str, Any]], layout: LedLayout, kinds: Sequence[str] = ("none",), *,
                  workers: int = 1, log: Callable[[str], object] = print) -> dict[str, np.ndarray]:
    """``optimal_zone_light`` of every scene at each budget kind in ``kinds``: ``{kind: (scenes, R, C)}``.

    ``workers`` > 1 runs the scenes in that many single-threaded processes (same result).
    """
    t0 = time.perf_counter()
    jobs = [({"target": s["target"], "budgets": s["budgets"], "inits": s["inits"]}, layout, tuple(kinds))
            for s in scenes]
    results: list[list[np.ndarray]] = []
    parallel = workers > 1 and len(jobs) > 1
    with contextlib.ExitStack() as stack:
        mapped = (stack.enter_context(_pool(workers)).imap(_teacher_job, jobs, chunksize=4) if parallel
                  else map(_teacher_job, jobs))
        for r in mapped:
            results.append(r)
            if not parallel or len(results) % 64 == 0 or len(results) == len(jobs):  # a line a scene when serial
                log(f"teacher {len(results)}/{len(jobs)} ({time.perf_counter() - t0:.0f} s)")
    return {k: np.stack([r[j] for r in results]) for j, k in enumerate(kinds)}


def real_photo_crops(per_photo: int, layout: LedLayout, *, seed: int = 0,
                     root: str | os.PathLike[str] | None = None) -> list[np.ndarray]:
    """``splits.random_crops`` of the training split of the shared photographs at the panel's resolution.

    The held-out photographs (``splits.REAL_HELD_OUT``) are never used.
    """
    from edgehdr.models.training.splits import random_crops, real_split

    if per_photo < 1:
        return []
    train, _ = real_split(root, max_side=2 * max(layout.width_px, layout.height_px))
    return [c for _, c in random_crops(train, per_photo, seed=seed, height=layout.height_px, width=layout.width_px)]


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

    def __init__(self, layout: LedLayout, device: str | torch.device = "cpu") -> None:
        if layout.psf_model != "gaussian":
            raise NotImplementedError("the training twin models a Gaussian PSF; measured PSFs train on "
                                      "the teacher term only (--display-weight 0)")
        model = BacklightModel(layout)
        self.layout = layout
        self.a_rows = torch.from_numpy(model._a_rows).to(device)
        self.a_cols = torch.from_numpy(model._a_cols).to(device)
        self.gain = float(model.gain)
        self.leak = 1.0 / layout.native_contrast
        # ``upsample_backlight``'s interpolation: bilinear, half-pixel centres, the outermost pixels extrapolated
        # (``F.interpolate`` clamps them, as OpenCV does).
        (h, w), dev = model.work_shape, torch.device(device)
        self.y0, self.y1, fy = (torch.from_numpy(a).to(dev) for a in bilinear_taps(h, layout.height_px,
                                                                                    extrapolate=True))
        self.x0, self.x1, fx = (torch.from_numpy(a).to(dev) for a in bilinear_taps(w, layout.width_px,
                                                                                    extrapolate=True))
        self.fy, self.fx = fy[:, None], fx

    def backlight(self, light: torch.Tensor) -> torch.Tensor:
        """(B, 1, R, C) light -> (B, 1, H, W) backlight in cd/m^2."""
        work = self.gain * torch.einsum("hr,brc,wc->bhw", self.a_rows, light[:, 0], self.a_cols)
        left, right = work[:, :, self.x0], work[:, :, self.x1]
        wide = torch.clamp(left + self.fx * (right - left), min=0.0)
        top, bottom = wide[:, self.y0], wide[:, self.y1]
        return torch.clamp(top + self.fy * (bottom - top), min=0.0)[:, None]

    def pu_error(self, light: torch.Tensor, target: torch.Tensor, target_pu: torch.Tensor) -> torch.Tensor:
        """Mean squared PU21 error of the shown image per sample (the teacher's objective)."""
        b = self.backlight(light)
        shown = torch.minimum(torch.maximum(target, self.leak * b), b)
        return ((pu21_torch(shown) - target_pu) ** 2).mean(dim=(1, 2, 3))


_FLIP_DIMS: tuple[tuple[int, ...], ...] = ((), (-1,), (-2,), (-2, -1))  # none, left-right, upside down, both


def _flip(t: torch.Tensor, dims: tuple[int, ...]) -> torch.Tensor:
    return torch.flip(t, dims) if dims else t


def train_student(scenes: Sequence[Mapping[str, Any]], teacher: Mapping[str, np.ndarray], layout: LedLayout, *,
                  epochs: int = 60, batch: int = 8, lr: float = 3e-3, distill: float = 200.0, seed: int = 0,
                  loss: str = "log", width: int = 32, device: str = "cpu", flips: bool = False,
                  log: Callable[[str], object] = print) -> tuple[DimmingNet, list[dict[str, float]]]:
    """Adam on the PU21 display error of the budgeted light plus ``distill`` x MSE to the teacher's light.

    ``loss="mse"`` averages the samples' PU21 mean squared errors; ``loss="log"`` averages their
    logarithms, which is (up to -10 / ln 10) the mean PU-PSNR the evaluation reports: every scene
    counts by its relative error, so an easy scene's few-tenths-of-a-dB loss is not outweighed by a
    hard scene's large absolute error.

    ``teacher[kind]`` is (scenes, R, C) for the budget kinds that have a teacher; every (scene, budget)
    pair is a sample, trained on the display objective (the teacher's own) and, where there is a
    teacher for its budget, the distillation term. ``flips`` shows each sample mirrored left-right
    and/or upside down at random (scene, encoding and teacher light alike): the display model is
    symmetric under both mirrors (a Gaussian PSF on a centred zone grid), so a mirrored scene is
    another valid scene whose optimal light is the mirrored light. ``device`` is a PyTorch device
    ("cuda" trains on a GPU: the same recipe, not bit-identical to a CPU run); the returned model is
    on the CPU.
    """
    if loss not in ("mse", "log"):
        raise ValueError(f"loss must be 'mse' or 'log', got {loss!r}")
    torch.manual_seed(seed)
    dev = torch.device(device)
    in_channels = int(next(iter(scenes[0]["x"].values())).shape[1])  # the scenes' encoding
    model = DimmingNet(layout.rows, layout.cols, width=width, in_channels=in_channels).to(dev)
    twin = DisplayTwin(layout, dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    targets = [torch.from_numpy(s["target"].transpose(2, 0, 1).copy())[None].to(dev) for s in scenes]
    inputs = [{k: v.to(dev) for k, v in s["x"].items()} for s in scenes]
    targets_pu = [pu21_torch(t) for t in targets]
    samples = [(i, k) for i in range(len(scenes)) for k in BUDGETS]
    teacher_t = {k: torch.from_numpy(np.asarray(v, np.float32))[:, None].to(dev) for k, v in teacher.items()}
    rng = np.random.default_rng(seed)
    flip_rng = np.random.default_rng([seed, 1])  # its own stream: flips=False keeps the recipe's bytes
    history = []
    t_start = time.perf_counter()
    for epoch in range(epochs):
        order = rng.permutation(len(samples))
        e_sum, d_sum = torch.zeros((), device=dev), torch.zeros((), device=dev)
        for start in range(0, len(order), batch):
            chosen = [samples[j] for j in order[start:start + batch]]
            mirror = ([_FLIP_DIMS[c] for c in flip_rng.integers(0, 4, len(chosen))] if flips
                      else [()] * len(chosen))
            x = torch.cat([_flip(inputs[i][k], m) for (i, k), m in zip(chosen, mirror)])
            budget = torch.tensor([scenes[i]["budgets"][k] for i, k in chosen], dtype=torch.float32, device=dev)
            light = budget_scale_torch(model(x), budget)
            err = twin.pu_error(light, torch.cat([_flip(targets[i], m) for (i, _), m in zip(chosen, mirror)]),
                                torch.cat([_flip(targets_pu[i], m) for (i, _), m in zip(chosen, mirror)]))
            taught = [(j, _flip(teacher_t[k][i:i + 1], mirror[j])) for j, (i, k) in enumerate(chosen)
                      if k in teacher_t]
            d = (((light[[j for j, _ in taught]] - torch.cat([t for _, t in taught])) ** 2).mean() if taught
                 else torch.zeros((), device=dev))
            objective = (err.clamp_min(1e-6).log().mean() if loss == "log" else err.mean()) + distill * d
            opt.zero_grad()
            objective.backward()
            opt.step()
            e_sum = e_sum + err.detach().sum()  # summed on the device: no synchronisation per step
            d_sum = d_sum + d.detach() * len(chosen)
        sched.step()
        n = len(samples)
        history.append({"epoch": epoch + 1, "pu_mse": float(e_sum) / n, "distill_mse": float(d_sum) / n})
        log(f"epoch {epoch + 1:2d}/{epochs}: PU21 MSE {float(e_sum) / n:.3f}, teacher MSE {float(d_sum) / n:.5f} "
            f"({time.perf_counter() - t_start:.0f} s)")
    return model.cpu().eval(), history


def export_dimming(model: DimmingNet, layout: LedLayout, path: str | os.PathLike[str], *,
                   extra_metadata: dict[str, Any] | None = None) -> Path:
    """ONNX export (``zone_stats`` -> ``light``, the layout and encoding in metadata), checked, with a manifest."""
    shape = (1, model.in_channels, layout.rows * SUBDIVISION, layout.cols * SUBDIVISION)
    meta = {"edgehdr.preprocess": "dimming_zone_stats",
            "edgehdr.layout": json.dumps(model_layout_metadata(layout)),
            "edgehdr.encoding": "input: per 4x4 sub-zone max and mean of max-RGB / panel peak, log2(v)/12 + 1 "
                                "clipped to [0, 1], and the power budget (mean light allowed, 1 = none) as a "
                                "constant channel" + (", then the sub-zone minima encoded as the maxima"
                                                      if model.in_channels == 4 else "") +
                                "; output: zone light fraction in [0, 1], scaled down uniformly "
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
    p.add_argument("--scenes", type=int, default=512)
    p.add_argument("--teacher-budgets", action=argparse.BooleanOptionalAction, default=False,
                   help="also run the teacher at the heuristics' powers (four times the teacher cost)")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--distill", type=float, default=10.0)
    p.add_argument("--loss", choices=("mse", "log"), default="log",
                   help="display term: mean of the samples' PU21 MSE, or of its logarithm (the mean PU-PSNR)")
    p.add_argument("--width", type=int, default=32, help="channels of DimmingNet at zone resolution")
    p.add_argument("--crops", type=int, default=48,
                   help="crops per real training photograph (splits.real_split; the held-out ones never), 0: none")
    p.add_argument("--flips", action=argparse.BooleanOptionalAction, default=False,
                   help="show each sample mirrored left-right and/or upside down at random (the display is symmetric)")
    p.add_argument("--min-stat", action=argparse.BooleanOptionalAction, default=False,
                   help="a fourth input channel: each sub-zone's darkest pixel (its max-RGB), beside max and mean")
    p.add_argument("--device", default="cpu", help="PyTorch device for the student ('cuda' on a GPU)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="processes preparing the scenes and running the teacher (the result does not depend on it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=Path("dimming-training"))
    p.add_argument("-o", "--out", type=Path, default=MODELS_DIR / "dimming_net.onnx")
    args = p.parse_args(argv)
    started = source_revision()  # the sources this run trains from (training_source)
    t0 = time.perf_counter()
    layout = training_layout(args.rows, args.cols)
    args.work.mkdir(parents=True, exist_ok=True)
    photos = real_photo_crops(args.crops, layout, seed=args.seed)
    channels = 4 if args.min_stat else INPUT_CHANNELS
    scenes = dimming_scenes(args.scenes, layout, seed=args.seed, photos=photos, workers=args.workers,
                            channels=channels)
    print(f"{len(scenes)} scenes: {args.scenes} synthetic, {len(photos)} crops of real photographs "
          f"({time.perf_counter() - t0:.0f} s)", flush=True)
    kinds = BUDGETS if args.teacher_budgets else ("none",)
    crops = f"_crops{args.crops}x{len(photos) // max(args.crops, 1)}" if photos else ""
    key = data_key(DIMMING_SOURCES)  # the display model and the scenes, too (cachekey)
    cache = args.work / (f"teacher_{args.rows}x{args.cols}_{args.scenes}{crops}_{args.seed}_{'-'.join(kinds)}"
                         f"_{key}.npz")
    if cache.is_file():
        data = np.load(cache)
        teacher = {k: data[k] for k in kinds}
        print(f"teacher light from {cache}")
    else:
        teacher = teacher_light(scenes, layout, kinds, workers=args.workers,
                                log=lambda m: print(m, flush=True))
        np.savez(cache, **teacher)  # type: ignore[arg-type]
    t_teacher = time.perf_counter() - t0
    net, history = train_student(scenes, teacher, layout, epochs=args.epochs, distill=args.distill, seed=args.seed,
                                 loss=args.loss, width=args.width, device=args.device, flips=args.flips)
    t_total = time.perf_counter() - t0
    export_dimming(net, layout, args.out, extra_metadata={
        "edgehdr.source": training_source(started),
        "edgehdr.recipe": f"train_dimming --rows {args.rows} --cols {args.cols} --scenes {args.scenes} "
                          f"--epochs {args.epochs} --distill {args.distill} --loss {args.loss} --width {args.width} "
                          f"--crops {args.crops} --seed {args.seed} {'--flips ' if args.flips else ''}"
                          f"{'--min-stat ' if args.min_stat else ''}"
                          f"{f'--device {args.device} ' if args.device != 'cpu' else ''}"
                          f"{'--teacher-budgets' if args.teacher_budgets else '--no-teacher-budgets'}"})
    shape = (1, channels, args.rows * SUBDIVISION, args.cols * SUBDIVISION)
    log = write_training_log(args.work / "train_dimming_log.json", net, shape, history=history,
                             teacher_seconds=round(t_teacher, 1), total_seconds=round(t_total, 1))
    print(f"wrote {args.out}: {log['parameters']} parameters, {log['macs_per_frame'] / 1e6:.1f} M MAC; "
          f"teacher {t_teacher:.0f} s, total {t_total:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
