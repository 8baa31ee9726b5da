"""Recipe: the default NoR-VDPNet weights, a width-reduced variant that predicts TMQI from the SDR image alone.

    python -m edgehdr.models.training.train_norvdpnet        # the shipped weights; 7 min on 2 idle CPU cores
    python -m edgehdr.models.training.train_norvdpnet --validation -o variant.onnx   # to compare a variant

The NoR-VDPNet++ "TMO" task (Banterle et al. 2023) with TMQI (Yeganeh & Wang 2013)
as the full-reference target instead of HDR-VDP:

1. HDR images: synthetic scenes from ``edgehdr.synth`` (seeds 0..N-1, 256 x 384) and
   random crops of the shared real photographs outside the held-out split
   (``edgehdr.models.training.splits``) and of the eight extra training photographs
   (``splits.EXTRA_PHOTOS_DIR``, ``--no-extra-photos`` leaves them out: with only three
   photographs to fit, the result on real content depended on the seed more than on any
   variant tried). Each is tone mapped ``--variants`` times
   (``edgehdr.quality.norvdpnet.tone_mapping_variants`` over ``WIDE_VARIANT_KINDS``: the
   project's operators with varied parameters, random smooth parameter grids, single
   exposures, OpenCV's Reinhard / Drago / Mantiuk, colour drained or pushed, clipped
   highlights, some washed out towards grey).
2. Label: TMQI of each rendering against its radiance map (``edgehdr.quality.tmqi``).
3. Model: ``NoRVDPNet(width_scale=0.25)`` (every width divided by 4, the authors'
   architecture otherwise) on the authors' SDR encoding at 128 x 192. Loss: squared
   error plus a ranking loss over **every pair in the batch** (RankNet's logistic loss on
   the sign of the TMQI difference; batches mix scenes), so scores are comparable across
   scenes, not only within one — a user ranks a folder of different photographs.
   Adam, horizontal flips.
4. Held out: synthetic scenes (seeds from 100000) and the held-out real photographs
   (whole, plus crops), never trained on: Spearman and Pearson correlation with TMQI
   pooled over scenes and within each scene; export to ONNX (``image`` -> ``quality``)
   with a manifest. These are reported, not chosen on: to compare recipe variants, run
   each with ``--validation`` (trains without the validation photographs of
   ``splits.REAL_VALIDATION`` and reports those instead of the held-out ones) and judge
   the files with ``evaluate_norvdpnet --against``'s validation rows.

Everything is seeded; a run on the same versions reproduces the weights.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgehdr.models.training.cachekey import NORVDPNET_SOURCES, data_key
from edgehdr.models.training.nets import NoRVDPNet
from edgehdr.models.training.onnx_export import export_onnx, write_training_log
from edgehdr.models.training.reproduce import source_revision, training_source
from edgehdr.models.training.splits import random_crops, real_photo_names, real_photos
from edgehdr.quality.correlation import scene_correlations
from edgehdr.quality.norvdpnet import (
    SCORE_INPUT_SHAPE,
    WIDE_VARIANT_KINDS,
    encode_sdr,
    tone_mapping_variants,
)

__all__ = ["score_dataset", "hdr_sources", "rank_loss", "train_scorer", "predict", "export_scorer", "main",
           "HOLDOUT_SEED", "TrainingCollapsed"]

MODELS_DIR = Path(__file__).resolve().parent.parent
HOLDOUT_SEED = 100_000


def hdr_sources(scenes: int, *, seed: int = 0, real: str | None = None, crops: int = 0, height: int = 256,
                width: int = 384, extra: bool = False) -> list[tuple[str, np.ndarray]]:
    """``(name, radiance)``: ``scenes`` synthetic scenes from ``seed``, then ``crops`` crops of each real
    photograph of the ``real`` split (``splits.real_photos``: ``"train"``, ``"fit"``, ``"validation"`` or
    ``"held-out"``; None for none; ``extra``: the training splits with the extra photographs too)."""
    from edgehdr.synth import make_scene

    out = [(f"synthetic-{seed + i}", make_scene(seed + i, height, width).radiance) for i in range(scenes)]
    if real is not None and crops > 0:
        out += random_crops(real_photos(real, extra=extra), crops, seed=seed, height=height, width=width)
    return out


def score_dataset(sources: Sequence[tuple[str, np.ndarray]], variants: int, *, seed: int = 0,
                  kinds: Sequence[str] = WIDE_VARIANT_KINDS, log: Callable[[str], object] | None = None
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """Inputs (N, 1, 128, 192) float32, TMQI labels (N,), source index (N,) and descriptions."""
    from edgehdr.quality import tmqi

    xs, ys, owner, desc = [], [], [], []
    for i, (name, radiance) in enumerate(sources):
        for sdr, d in tone_mapping_variants(radiance, variants, seed=seed + i, kinds=kinds):
            xs.append(encode_sdr(sdr)[0])
            ys.append(tmqi(radiance, sdr).Q)
            owner.append(i)
            desc.append({"source": name, **d})
        if log and (i + 1) % 20 == 0:
            log(f"data {i + 1}/{len(sources)} images")
    return np.stack(xs).astype(np.float32), np.asarray(ys, np.float32), np.asarray(owner), desc


class TrainingCollapsed(RuntimeError):
    """The network gives one score for every image: its units died (a layer's ReLUs all at zero for every input),
    so no gradient reaches what is before them and further epochs cannot change it. Seen on real data
    (``--validation --seed 1`` with five more training photographs: the loss rose in the second epoch and stayed at
    the labels' variance from the third)."""


def predict(model: NoRVDPNet, x: np.ndarray, batch: int = 64) -> np.ndarray:
    model.eval()
    with torch.no_grad():
        return np.concatenate([model(torch.from_numpy(x[i:i + batch])).numpy()[:, 0]
                               for i in range(0, len(x), batch)])


def rank_loss(pred: torch.Tensor, label: torch.Tensor, *, temperature: float = 0.02,
              min_gap: float = 0.005) -> torch.Tensor:
    """RankNet's logistic loss over every pair of the batch whose labels differ by more than ``min_gap``.

    References
    ----------
    C. Burges et al., "Learning to rank using gradient descent," ICML 2005.
    """
    dp = pred[:, None] - pred[None, :]
    dy = label[:, None] - label[None, :]
    mask = dy > min_gap
    if not bool(mask.any()):
        return pred.sum() * 0.0
    return torch.nn.functional.softplus(-dp[mask] / temperature).mean() * temperature


def train_scorer(x: np.ndarray, y: np.ndarray, *, epochs: int = 30, batch: int = 16, lr: float = 1e-3,
                 width_scale: float = 0.25, seed: int = 0, rank: float = 1.0,
                 log: Callable[[str], object] = print,
                 on_epoch: Callable[[NoRVDPNet], dict[str, float]] | None = None
                 ) -> tuple[NoRVDPNet, list[dict[str, float]]]:
    """Adam on the squared error to TMQI plus ``rank`` x the batch-wide ranking loss, cosine learning rate,
    random horizontal flips. Batches are drawn from the whole set, so most pairs cross scenes. ``on_epoch``:
    figures of the model after each epoch (e.g. on the validation photographs), logged and kept in the history;
    they do not change the training.

    Raises ``TrainingCollapsed`` after the first epoch at which the network scores the first 64 training images
    all alike (within 1e-6): a dead network never recovers, so the run stops there instead of training it to the end
    and exporting a constant. The check reads no random stream; the weights of a run that passes it are those of a
    run without it."""
    torch.manual_seed(seed)
    model = NoRVDPNet(width_scale=width_scale)
    with torch.no_grad():  # start at the mean label: the sigmoid's logit of mean(y)
        mean = float(np.clip(y.mean(), 1e-3, 1 - 1e-3))
        head = model.regressor.regressor[2]
        assert isinstance(head, torch.nn.Linear)
        head.bias.fill_(float(np.log(mean / (1 - mean))))
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
            pred = model(xb)[:, 0]
            loss = ((pred - yt[idx]) ** 2).mean() + rank * rank_loss(pred, yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        sched.step()
        spread = float(np.ptp(predict(model, x[:64])))
        if spread < 1e-6:
            raise TrainingCollapsed(
                f"training collapsed at epoch {epoch + 1} of {epochs} (seed {seed}): the network gives one score "
                f"({float(predict(model, x[:1])[0]):.4f}) for every image (spread {spread:.1e}; train loss "
                f"{total / len(x):.5f}); its units died and cannot recover. Try another --seed")
        figures = on_epoch(model) if on_epoch is not None else {}
        history.append({"epoch": epoch + 1, "loss": total / len(x), **figures})
        log(f"epoch {epoch + 1:2d}/{epochs}: train loss {total / len(x):.5f}"
            + "".join(f", {k} {v:.3f}" for k, v in figures.items()))
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


def _load_or_make(work: Path, name: str, sources: Callable[[], list[tuple[str, np.ndarray]]], variants: int,
                  seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    # keyed by what makes the data too (edgehdr.models.training.cachekey): renderers, scenes, labels, photographs
    key = data_key(NORVDPNET_SOURCES)
    cache = work / f"{name}_{variants}_{seed}_wide_{key}.npz"
    if cache.is_file():
        d = np.load(cache)
        return d["x"], d["y"], d["owner"]
    x, y, owner, _ = score_dataset(sources(), variants, seed=seed, log=print)
    np.savez(cache, x=x, y=y, owner=owner)
    return x, y, owner


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgehdr.models.training.train_norvdpnet",
                                description=__doc__.split("\n")[0])
    p.add_argument("--scenes", type=int, default=120, help="synthetic training scenes")
    p.add_argument("--crops", type=int, default=24, help="crops per real training photograph")
    p.add_argument("--holdout-scenes", type=int, default=40)
    p.add_argument("--holdout-crops", type=int, default=4, help="whole + crops per held-out photograph")
    p.add_argument("--variants", type=int, default=8, help="tone mappings per image")
    p.add_argument("--epochs", type=int, default=30)
    p.add_argument("--rank", type=float, default=1.0, help="weight of the batch-wide ranking loss")
    p.add_argument("--width-scale", type=float, default=0.25)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--validation", action="store_true",
                   help="train without the validation photographs (splits.REAL_VALIDATION) and report them instead "
                        "of the held-out ones: for choosing between recipe variants")
    p.add_argument("--extra-photos", action=argparse.BooleanOptionalAction, default=True,
                   help="train on the extra photographs too (splits.EXTRA_PHOTOS_DIR: Blender's CC0 world HDRIs); "
                        "default on")
    p.add_argument("--work", type=Path, default=Path("norvdpnet-training"), help="dataset cache and training log")
    p.add_argument("-o", "--out", type=Path, default=MODELS_DIR / "norvdpnet_tmo.onnx")
    args = p.parse_args(argv)
    started = source_revision()  # the sources this run trains from (training_source)
    t0 = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    fit, report = ("fit", "validation") if args.validation else ("train", "held-out")
    real_key = "validation" if args.validation else "real"  # "real": the key the shipped weights' metadata has
    extra = "+extra" if args.extra_photos else ""
    x, y, _ = _load_or_make(args.work, f"{fit}{extra}_{args.scenes}_{args.crops}",
                            lambda: hdr_sources(args.scenes, seed=args.seed, real=fit, crops=args.crops,
                                                extra=args.extra_photos),
                            args.variants, args.seed)
    held = {
        "synthetic": _load_or_make(args.work, f"holdout_{args.holdout_scenes}",
                                   lambda: hdr_sources(args.holdout_scenes, seed=HOLDOUT_SEED), args.variants,
                                   HOLDOUT_SEED),
        real_key: _load_or_make(
            args.work, f"{report}_real_{args.holdout_crops}",
            lambda: hdr_sources(0, seed=HOLDOUT_SEED, real=report, crops=args.holdout_crops), args.variants,
            HOLDOUT_SEED)}
    t_data = time.perf_counter() - t0
    print(f"{len(x)} training renderings, held out {len(held['synthetic'][0])} synthetic and {len(held[real_key][0])} "
          f"{report} real; TMQI {y.min():.3f}..{y.max():.3f} ({t_data:.0f} s)", flush=True)

    def validation_figures(model: NoRVDPNet) -> dict[str, float]:
        xv, yv, ov = held[real_key]
        r = scene_correlations(predict(model, xv), yv, ov)
        return {"validation pooled": r["srocc"], "within mean": r["within_srocc_mean"]}

    try:
        model, history = train_scorer(x, y, epochs=args.epochs, width_scale=args.width_scale, seed=args.seed,
                                      rank=args.rank, on_epoch=validation_figures if args.validation else None)
    except TrainingCollapsed as exc:
        print(f"train_norvdpnet: {exc}; nothing written to {args.out}", file=sys.stderr)
        return 1
    result = {k: scene_correlations(predict(model, xh), yh, oh) for k, (xh, yh, oh) in held.items()}
    t_total = time.perf_counter() - t0
    export_scorer(model, args.out, extra_metadata={
        "edgehdr.source": training_source(started),
        "edgehdr.recipe": f"train_norvdpnet --scenes {args.scenes} --crops {args.crops} --variants {args.variants} "
                          f"--epochs {args.epochs} --rank {args.rank} --width-scale {args.width_scale} "
                          f"--seed {args.seed} {'--extra-photos' if args.extra_photos else '--no-extra-photos'}"
                          + (" --validation" if args.validation else ""),
        "edgehdr.training_photos": ",".join(real_photo_names(fit, extra=args.extra_photos)),
        "edgehdr.holdout": json.dumps({k: {m: round(v, 4) for m, v in r.items()} for k, r in result.items()})})
    log = write_training_log(args.work / "train_norvdpnet_log.json", model, SCORE_INPUT_SHAPE, holdout=result,
                             history=history, data_seconds=round(t_data, 1), total_seconds=round(t_total, 1))
    for k, r in result.items():
        print(f"held-out {k}: pooled SROCC {r['srocc']:.3f}, PLCC {r['plcc']:.3f}, RMSE {r['rmse']:.4f}; "
              f"within-scene SROCC mean {r['within_srocc_mean']:.3f}, min {r['within_srocc_min']:.3f}")
    print(f"wrote {args.out}: {log['parameters']} parameters, {log['macs_per_frame'] / 1e6:.1f} M MAC; "
          f"total {t_total:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
