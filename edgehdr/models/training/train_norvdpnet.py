"""Recipe: the default NoR-VDPNet weights, a width-reduced variant that predicts TMQI from the SDR image alone.

    python -m edgehdr.models.training.train_norvdpnet        # the shipped weights; ~30 min on 2 CPU cores

The NoR-VDPNet++ "TMO" task (Banterle et al. 2023) with TMQI (Yeganeh & Wang 2013)
as the full-reference target instead of HDR-VDP:

1. Synthetic HDR scenes from ``edgehdr.synth`` (seeds 0..N-1, 256 x 384); each is
   tone mapped ``--variants`` times by the project's operators with varied
   parameters (``edgehdr.quality.norvdpnet.tone_mapping_variants``: Reinhard global and
   local, Drago, the parametric operator, random smooth parameter grids, single
   exposures, some washed out towards grey).
2. Label: TMQI of each rendering against its radiance map (``edgehdr.quality.tmqi``).
3. Model: ``NoRVDPNet(width_scale=0.25)`` (every width divided by 4) on the authors'
   SDR encoding at 128 x 192; Adam on the squared error, horizontal flips.
4. Held-out scenes (seeds from 100000, never trained on): Spearman and Pearson
   correlation with TMQI; export to ONNX (``image`` -> ``quality``) with a manifest.

Everything is seeded; a run on the same versions reproduces the weights.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgehdr.models.training.nets import NoRVDPNet
from edgehdr.models.training.onnx_export import export_onnx, write_training_log
from edgehdr.quality.norvdpnet import SCORE_INPUT_SHAPE, encode_sdr, pearson, spearman, tone_mapping_variants

__all__ = ["score_dataset", "train_scorer", "predict", "export_scorer", "main", "HOLDOUT_SEED"]

MODELS_DIR = Path(__file__).resolve().parent.parent
HOLDOUT_SEED = 100_000


def score_dataset(scenes: int, variants: int, *, seed: int = 0, height: int = 256, width: int = 384,
                  log: Callable[[str], object] | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Inputs (N, 1, 128, 192) float32, TMQI labels (N,), scene index (N,) and descriptions."""
    from edgehdr.quality import tmqi
    from edgehdr.synth import make_scene

    xs, ys, owner, desc = [], [], [], []
    for i in range(scenes):
        radiance = make_scene(seed + i, height, width).radiance
        for sdr, d in tone_mapping_variants(radiance, variants, seed=seed + i):
            xs.append(encode_sdr(sdr)[0])
            ys.append(tmqi(radiance, sdr).Q)
            owner.append(i)
            desc.append(d)
        if log and (i + 1) % 20 == 0:
            log(f"data {i + 1}/{scenes} scenes")
    return np.stack(xs).astype(np.float32), np.asarray(ys, np.float32), np.asarray(owner), desc


def predict(model: NoRVDPNet, x: np.ndarray, batch: int = 64) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(x[i:i + batch])).numpy()[:, 0]
                               for i in range(0, len(x), batch)])


def train_scorer(x: np.ndarray, y: np.ndarray, *, epochs: int = 30, batch: int = 16, lr: float = 1e-3,
                 width_scale: float = 0.25, seed: int = 0,
                 log: Callable[[str], object] = print) -> tuple[NoRVDPNet, list[dict[str, float]]]:
    """Adam on the squared error to TMQI, cosine learning rate, random horizontal flips."""
    torch.manual_seed(seed)
    model = NoRVDPNet(width_scale=width_scale)
    with torch.no_grad():  # start at the mean label: the sigmoid's logit of mean(y)
        mean = float(np.clip(y.mean(), 1e-3, 1 - 1e-3))
        model.regressor.regressor[2].bias.fill_(float(np.log(mean / (1 - mean))))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    rng = np.random.default_rng(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    history = []
    for epoch in range(epochs):
        model.train()
        order = rng.permutation(len(x))
        total = 0.0
        for start in range(0, len(order), batch):
            idx = torch.from_numpy(order[start:start + batch])
            xb = xt[idx]
            if rng.uniform() < 0.5:
                xb = torch.flip(xb, dims=(3,))
            loss = ((model(xb)[:, 0] - yt[idx]) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        history.append({"epoch": epoch + 1, "mse": total / len(x)})
        log(f"epoch {epoch + 1:2d}/{epochs}: train RMSE {np.sqrt(total / len(x)):.4f}")
    return model.eval(), history


def export_scorer(model: NoRVDPNet, path: str | os.PathLike[str], *, extra_metadata: dict[str, Any] | None = None,
                  model_name: str = "norvdpnet_tmo", input_shape: Sequence[int] = SCORE_INPUT_SHAPE,
                  dynamic_hw: bool = False, encoding: str = "sdr") -> Path:
    """ONNX export (``image`` -> ``quality``), the encoding in metadata, checked, with a manifest."""
    text = {"sdr": "input: PIL 'L' luma of 8-bit sRGB / 255, ^2.2, 2x-1 (range [-1, 1]), area-resampled to the "
                   "input size; output: quality in [0, 1] (norvdpnet_tmo: a TMQI estimate, higher is better)",
            "hdr": "input: Rec.709 luminance clipped to [0, 1e6], log10(1 + L); output: quality in [0, 1]"}[encoding]
    meta = {"edgehdr.preprocess": "norvdpnet_sdr" if encoding == "sdr" else "norvdpnet_hdr",
            "edgehdr.encoding": text, **(extra_metadata or {})}
    return export_onnx(model, path, input_shape=input_shape, input_name="image", output_name="quality",
                       model_name=model_name, metadata=meta, recipe="train_norvdpnet", dynamic_hw=dynamic_hw,
                       build_flags={"width_scale": model.width_scale})


def _load_or_make(work: Path, name: str, scenes: int, variants: int,
                  seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    cache = work / f"{name}_{scenes}x{variants}_{seed}.npz"
    if cache.is_file():
        d = np.load(cache)
        return d["x"], d["y"], d["owner"]
    x, y, owner, _ = score_dataset(scenes, variants, seed=seed, log=print)
    np.savez(cache, x=x, y=y, owner=owner)
    return x, y, owner


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgehdr.models.training.train_norvdpnet",
                                description=__doc__.split("\n")[0])
    p.add_argument("--scenes", type=int, default=160)
    p.add_argument("--holdout-scenes", type=int, default=40)
    p.add_argument("--variants", type=int, default=8, help="tone mappings per scene")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--width-scale", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--work", type=Path, default=Path("norvdpnet-training"), help="dataset cache and training log")
    p.add_argument("-o", "--out", type=Path, default=MODELS_DIR / "norvdpnet_tmo.onnx")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    x, y, _ = _load_or_make(args.work, "train", args.scenes, args.variants, args.seed)
    xh, yh, _ = _load_or_make(args.work, "holdout", args.holdout_scenes, args.variants, HOLDOUT_SEED)
    t_data = time.perf_counter() - t0
    print(f"{len(x)} training and {len(xh)} held-out renderings; TMQI {y.min():.3f}..{y.max():.3f} "
          f"({t_data:.0f} s)", flush=True)
    model, history = train_scorer(x, y, epochs=args.epochs, width_scale=args.width_scale, seed=args.seed)
    pred = predict(model, xh)
    result = {"srocc": spearman(pred, yh), "plcc": pearson(pred, yh),
              "rmse": float(np.sqrt(np.mean((pred - yh) ** 2)))}
    t_total = time.perf_counter() - t0
    export_scorer(model, args.out, extra_metadata={
        "edgehdr.recipe": f"train_norvdpnet --scenes {args.scenes} --variants {args.variants} --epochs {args.epochs} "
                          f"--width-scale {args.width_scale} --seed {args.seed}",
        "edgehdr.holdout": json.dumps({k: round(v, 4) for k, v in result.items()})})
    log = write_training_log(args.work / "train_norvdpnet_log.json", model, SCORE_INPUT_SHAPE, holdout=result,
                             history=history, data_seconds=round(t_data, 1), total_seconds=round(t_total, 1))
    print(f"wrote {args.out}: {log['parameters']} parameters, {log['macs_per_frame'] / 1e6:.1f} M MAC; held-out SROCC "
          f"{result['srocc']:.3f}, PLCC {result['plcc']:.3f}, RMSE {result['rmse']:.4f}; total {t_total:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
