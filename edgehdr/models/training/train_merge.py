"""Recipe: the compact merge network (per-pixel blending weights), trained on synthetic dynamic brackets.

    python -m edgehdr.models.training.train_merge            # ~8 min on 2 idle CPU cores

1. Synthetic dynamic scenes from ``edgehdr.synth`` (seeds 0..N-1, 544 x 960; 0-3
   moving objects at varied speeds, a quarter of them static), captured as 3-exposure
   brackets with shot and read noise and hand shake (up to 3 px), aligned by the
   runtime's own exposure-matched MTB (so the residual misalignment is real); the
   exact radiance of the reference frame is the ground truth. Beside them (``--real 12``), 12 random
   960 x 544 crops of each real training photograph (``splits``: the held-out three never),
   re-photographed by ``RealisticCamera`` (filmic response, noise, JPEG 90, hand shake, 0-3 moving
   discs; ``real_dynamic_bracket``): trained on the synthetic camera alone, the network lost to
   classical deghosting by 2.3 dB PU-PSNR on re-photographed held-out photographs.
2. ``MergeNet`` on the runtime's encoding (``edgehdr.hdr.neural_merge``), rendered by a
   PyTorch twin of the fused weighted-merge kernel (with its per-pixel consistency gate)
   on 256 x 256 crops (half of them on moving objects), loss: squared error of the tutorial's mu-law (mu = 5000) of the
   merge against the ground truth, both normalised by the truth's 99.9th-percentile
   luminance (Kalantari & Ramamoorthi 2017).
3. Export to ONNX (``bracket`` -> ``weights``) with a manifest into ``edgehdr/models``.

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
import torch.nn.functional as F

from edgehdr.hdr.neural_merge import (
    MERGE_INPUT_SHAPE,
    encode_merge_input,
    fallback_gate_tables,
    gate_tables,
    merge_weight_table,
    working_size,
)
from edgehdr.models.training.merge_data import dynamic_bracket
from edgehdr.models.training.nets import MergeNet
from edgehdr.models.training.onnx_export import export_onnx, write_training_log
from edgehdr.models.training.reproduce import source_revision, training_source
from edgehdr.quality.metrics import MU_LAW_MU

__all__ = ["dynamic_bracket", "training_encoding", "merge_samples", "real_merge_samples", "merge_twin", "train_merge",
           "export_merge", "load_merge_onnx", "main"]

MODELS_DIR = Path(__file__).resolve().parent.parent
CROP = 256  # full-resolution crop; the network sees CROP/2 (the training's working size is half the bracket's)


def training_encoding(frames: np.ndarray, exposures: np.ndarray, response: Any) -> np.ndarray:
    """The runtime's encoding (``encode_merge_input``) at half the bracket's size, as the network is trained: 272 x
    480 for the 544 x 960 brackets. The runtime takes the bracket at the exported model's own input size
    (``MERGE_INPUT_SHAPE``, 136 x 240 whatever the frame size; the network is fully convolutional): a quarter of its
    work at 1080p, the same merges (``edgehdr.hdr.neural_merge``'s module docstring)."""
    h, w = np.shape(frames)[1:3]
    return encode_merge_input(frames, exposures, response, size=(h // 2, w // 2))


def _sample(frames: np.ndarray, exposures: np.ndarray, truth: np.ndarray, mask: np.ndarray,
            response: Any) -> dict[str, Any]:
    """One training sample: the runtime encoding, the aligned codes in exposure order, truth and normaliser."""
    from edgehdr.quality.metrics import robust_peak

    order = np.argsort(exposures, kind="stable")
    lo2, hi2 = gate_tables(response, exposures[order])
    loose_lo2, loose_hi2 = fallback_gate_tables(response, exposures[order])
    return {"x": training_encoding(frames, exposures, response)[0], "lo2": lo2, "hi2": hi2,
            "loose_lo2": loose_lo2, "loose_hi2": loose_hi2,
            "codes": frames[order], "log_t": np.log(exposures[order]).astype(np.float32),
            "log_lut": response.log_lut(), "truth": truth.astype(np.float32), "mask": mask,
            "norm": robust_peak(truth, 99.9)}


def merge_samples(seeds: Sequence[int], *, log: Callable[[str], object] | None = None,
                  **kwargs: Any) -> list[dict[str, Any]]:
    """Training samples of synthetic dynamic brackets (``dynamic_bracket``), one per seed."""
    out = []
    for n, seed in enumerate(seeds):
        out.append(_sample(*dynamic_bracket(seed, **kwargs)))
        if log and (n + 1) % 20 == 0:
            log(f"data {n + 1}/{len(seeds)} brackets")
    return out


def real_merge_samples(per_photo: int, *, seed: int = 0, log: Callable[[str], object] | None = None,
                       height: int = 544, width: int = 960, root: str | os.PathLike[str] | None = None,
                       extra: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
    """Training samples from the shared real photographs outside the held-out split: ``per_photo`` random
    ``height x width`` crops of each (``splits.random_crops``), re-photographed as dynamic brackets
    (``real_dynamic_bracket``: filmic response, noise, JPEG, hand shake, 0-3 moving discs). Returns the samples
    and the photographs' names. ``root``: the photographs' folder (default ``edgehdr.synth.real_hdr_dir``);
    ``extra``: the extra training photographs too (``splits.real_photos(..., extra=True)``)."""
    from edgehdr.models.training.merge_data import real_dynamic_bracket
    from edgehdr.models.training.splits import random_crops, real_photos

    train_photos = real_photos("train", root, extra=extra)
    crops = random_crops(train_photos, per_photo, seed=seed, height=height, width=width)
    out = []
    for n, (_, crop) in enumerate(crops):
        out.append(_sample(*real_dynamic_bracket(crop, seed + 3_000_000 + n, moving_objects=n % 4)))
        if log and (n + 1) % 20 == 0:
            log(f"data {n + 1}/{len(crops)} re-photographed crops")
    return out, [name for name, _ in train_photos]


def merge_twin(logits: torch.Tensor, log_rad: torch.Tensor, valid: torch.Tensor, fallback: torch.Tensor,
               size: tuple[int, int]) -> torch.Tensor:
    """PyTorch twin of the fused merge kernel: softmax weights upsampled bilinearly (half-pixel centres)
    to ``size``; ``log_rad``, ``valid`` (N, 3 frames, 3 channels, H, W); returns radiance (N, 3, H, W)."""
    prob = F.interpolate(torch.softmax(logits, dim=1), size=size, mode="bilinear", align_corners=False)
    wv = prob[:, :, None] * valid
    den = wv.sum(dim=1)
    num = (wv * log_rad).sum(dim=1)
    usable = den > 1e-8
    return torch.exp(torch.where(usable, num / den.clamp_min(1e-8), fallback))


def _crop_tensors(sample: dict[str, Any], oy: int, ox: int, vtab: np.ndarray) -> tuple[np.ndarray, ...]:
    codes = sample["codes"][:, oy:oy + CROP, ox:ox + CROP]  # (3 frames, h, w, 3) exposure order
    z = codes.transpose(0, 3, 1, 2).astype(np.int64)  # (3, 3 ch, h, w)
    lut = sample["log_lut"]
    log_rad = np.stack([np.stack([lut[c][z[k, c]] for c in range(3)]) - sample["log_t"][k] for k in range(3)])
    valid = vtab[z]
    chan = np.arange(3)[:, None, None]

    def inconsistent(k: int, lo2: np.ndarray, hi2: np.ndarray) -> np.ndarray:
        """Per channel, frame k's interval misses the reference's (k = 1)."""
        return (lo2[k][chan, z[k]] > hi2[1][chan, z[1]]) | (lo2[1][chan, z[1]] > hi2[k][chan, z[k]])

    bad = {}
    for k in (0, 2):  # the runtime kernel's consistency gate against the reference (k = 1), per channel
        bad[k] = inconsistent(k, sample["lo2"], sample["hi2"])
        valid[k] *= ~bad[k].any(axis=0)
    half = (lut.shape[1]) // 2
    # the kernel's fallback (``edgehdr.hdr.neural_merge``): samples no frame measures, from the frames consistent
    # with the reference in every channel of the pixel that falls back and within the looser test
    # (``fallback_gate_tables``) in its other channels (softmax weights are never 0)
    falls = valid.sum(axis=0) <= 0
    far0 = inconsistent(0, sample["loose_lo2"], sample["loose_hi2"])
    far2 = inconsistent(2, sample["loose_lo2"], sample["loose_hi2"])
    use0 = ~np.where(falls, bad[0], far0).any(axis=0)
    use2 = ~np.where(falls, bad[2], far2).any(axis=0)
    fallback = np.where(use0 & (z[0] >= half), log_rad[0], np.where((z[1] >= half) | ~use2, log_rad[1], log_rad[2]))
    truth = sample["truth"][oy:oy + CROP, ox:ox + CROP].transpose(2, 0, 1)
    x = sample["x"][:, oy // 2:oy // 2 + CROP // 2, ox // 2:ox // 2 + CROP // 2]
    norm = np.full((1, 1, 1), 1.0 / sample["norm"], np.float32)
    return x, log_rad.astype(np.float32), valid.astype(np.float32), fallback.astype(np.float32), truth, norm


def _mu_law(h: torch.Tensor) -> torch.Tensor:
    return torch.log1p(MU_LAW_MU * h.clamp(0.0, 1.0)) / np.log1p(MU_LAW_MU)


def train_merge(samples: list[dict[str, Any]], *, epochs: int = 40, crops_per_sample: int = 2, batch: int = 8,
                lr: float = 2e-3, width: int = 16, seed: int = 0,
                log: Callable[[str], object] = print) -> tuple[MergeNet, list[dict[str, float]]]:
    """Adam on the mu-law squared error of the twin's merge; half the crops centred on moving objects."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = MergeNet(width)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    levels = samples[0]["log_lut"].shape[1]
    vtab = merge_weight_table(levels)
    history = []
    for epoch in range(epochs):
        jobs = [(i, j) for i in rng.permutation(len(samples)) for j in range(crops_per_sample)]
        total, count = 0.0, 0
        for start in range(0, len(jobs), batch):
            parts = []
            for i, j in jobs[start:start + batch]:
                s = samples[i]
                h, w = s["truth"].shape[:2]
                ys, xs = np.nonzero(s["mask"][::8, ::8])
                if j % 2 == 0 and ys.size:  # on a moving object
                    k = rng.integers(ys.size)
                    cy, cx = ys[k] * 8, xs[k] * 8
                else:
                    cy, cx = rng.integers(h), rng.integers(w)
                oy = int(np.clip(cy - CROP // 2, 0, h - CROP)) // 4 * 4
                ox = int(np.clip(cx - CROP // 2, 0, w - CROP)) // 4 * 4
                parts.append(_crop_tensors(s, oy, ox, vtab))
            x, log_rad, valid, fallback, truth, inv_norm = (torch.from_numpy(np.stack(p)) for p in zip(*parts))
            merged = merge_twin(model(x), log_rad, valid, fallback, (CROP, CROP))
            loss = ((_mu_law(merged * inv_norm) - _mu_law(truth * inv_norm)) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(parts)
            count += len(parts)
        sched.step()
        mse = total / count
        history.append({"epoch": epoch + 1, "mu_law_mse": mse})
        log(f"epoch {epoch + 1:2d}/{epochs}: train mu-law PSNR {10 * np.log10(1 / max(mse, 1e-12)):.2f} dB")
    return model.eval(), history


def export_merge(model: MergeNet, path: str | os.PathLike[str], *,
                 extra_metadata: dict[str, Any] | None = None, size: tuple[int, int] | None = None) -> Path:
    """ONNX export (``bracket`` -> ``weights``) at a working size (height, width; multiples of 8), by default the
    runtime's (``MERGE_INPUT_SHAPE``), the encoding in metadata, checked, with a manifest. The runtime takes the
    bracket at the file's size (``edgehdr.hdr.neural_merge.working_size``)."""
    h, w = MERGE_INPUT_SHAPE[2:] if size is None else size
    working_size((1, MERGE_INPUT_SHAPE[1], h, w))  # multiples of 8, or a ValueError naming the size
    meta = {"edgehdr.preprocess": "merge_bracket",
            "edgehdr.encoding": "input: 3 frames sorted by exposure (short, reference, long), area-resampled to "
                                f"{w}x{h}: RGB codes / full scale (9 ch), then log2 luminance radiance relative to "
                                "the reference median, (v + 16) / 32 clipped (3 ch); output: per-frame weight logits "
                                f"at {w // 2}x{h // 2} (softmax over frames, bilinear to the frame, times the tutorial "
                                "weighting with no weight within the clip margin, merge_weight_table, Debevec "
                                "log-domain merge)",
            **(extra_metadata or {})}
    return export_onnx(model, path, input_shape=(1, MERGE_INPUT_SHAPE[1], h, w), input_name="bracket",
                       output_name="weights", model_name="merge_net", metadata=meta, recipe="train_merge")


def _split_fusion(m: Any, step: str, state: dict[str, torch.Tensor],
                  path: str | os.PathLike[str]) -> tuple[torch.Tensor, torch.Tensor]:
    """The 1 x 1 fusion weights of decoder ``step`` in a graph exported with ``MergeNet._fuse``: the skip half is the
    convolution that carries the step's bias, the upsampled half the bias-free convolution whose output the Resize
    before their Add reads."""
    producers = {out: node for node in m.graph.node for out in node.output}
    skip = next((n for n in m.graph.node if n.op_type == "Conv" and n.input[2:] == [f"{step}.0.bias"]), None)
    add = next((n for n in m.graph.node if n.op_type == "Add" and skip is not None and skip.output[0] in n.input),
               None)
    if skip is None or add is None:
        raise ValueError(f"{path}: no '{step}' fusion in the graph (neither its 1 x 1 weights nor their split)")
    other = next((i for i in add.input if i != skip.output[0]), None)
    resize = producers.get(other) if other is not None else None
    low = producers.get(resize.input[0]) if resize is not None and resize.op_type == "Resize" else None
    if low is None or low.op_type != "Conv" or len(low.input) != 2:
        raise ValueError(f"{path}: the '{step}' fusion's upsampled half is not a bias-free convolution")
    missing = [name for name in (low.input[1], skip.input[1]) if name not in state]
    if missing:
        raise ValueError(f"{path}: the '{step}' fusion's weights {missing} are not initializers")
    return state[low.input[1]], state[skip.input[1]]


def load_merge_onnx(path: str | os.PathLike[str]) -> tuple[MergeNet, dict[str, str]]:
    """A ``MergeNet`` with the weights of an exported merge network (its initializers carry the parameters' names)
    and the model's metadata properties: to export trained weights again when the graph changes (``--reexport``),
    without training."""
    import onnx
    from onnx import numpy_helper

    m = onnx.load(str(path))
    state = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in m.graph.initializer}
    if "enc1.0.weight" not in state:
        raise ValueError(f"{path}: not an exported MergeNet (no initializer 'enc1.0.weight')")
    for step in ("dec2", "dec1"):
        if f"{step}.0.weight" not in state:  # the split fusion (MergeNet._fuse): its two halves, found in the graph
            state[f"{step}.0.weight"] = torch.cat(_split_fusion(m, step, state, path), dim=1)
    state = {k: v for k, v in state.items() if not k.startswith("onnx::")}
    model = MergeNet(int(state["enc1.0.weight"].shape[0]))
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ValueError(f"{path}: its weights do not fit MergeNet ({exc})") from exc
    return model.eval(), {p.key: p.value for p in m.metadata_props}


def _working_size_arg(text: str) -> tuple[int, int]:
    """argparse type: ``WIDTHxHEIGHT``, multiples of 8 -> (height, width)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
        return working_size((1, MERGE_INPUT_SHAPE[1], h, w))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: give WIDTHxHEIGHT, both multiples of 8 (e.g. 240x136): "
                                         f"{exc}") from None


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgehdr.models.training.train_merge",
                                description=__doc__.split("\n")[0])
    p.add_argument("--brackets", type=int, default=120)
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--crops", type=int, default=2, help="crops per bracket and epoch")
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--real", type=int, default=12,
                   help="re-photographed crops per real training photograph (0: synthetic brackets only)")
    p.add_argument("--extra-photos", action="store_true",
                   help="re-photograph crops of the extra training photographs too (splits.EXTRA_PHOTOS_DIR; off by "
                        "default: the shipped weights' recorded command means what it did)")
    p.add_argument("--work", type=Path, default=Path("merge-training"), help="training log")
    p.add_argument("-o", "--out", type=Path, default=MODELS_DIR / "merge_net.onnx")
    p.add_argument("--reexport", type=Path, metavar="MODEL.onnx",
                   help="no training: export this merge network's weights again with today's graph, its metadata "
                        "(recipe, training photographs) kept")
    p.add_argument("--size", type=_working_size_arg, default=None, metavar="WIDTHxHEIGHT",
                   help="the working size of the exported file (multiples of 8; default "
                        f"{MERGE_INPUT_SHAPE[3]}x{MERGE_INPUT_SHAPE[2]}): the runtime takes the bracket at it")
    args = p.parse_args(argv)
    started = source_revision()  # the sources this run trains from (training_source)
    if args.reexport:
        model, props = load_merge_onnx(args.reexport)
        kept = {k: v for k, v in props.items() if k not in ("edgehdr.model", "edgehdr.preprocess", "edgehdr.encoding")}
        kept.setdefault("edgehdr.source", f"unrecorded (weights re-exported at {started})")
        export_merge(model, args.out, extra_metadata=kept, size=args.size)
        print(f"wrote {args.out}: the weights of {args.reexport}, exported again")
        return 0
    torch.manual_seed(args.seed)
    t0 = time.perf_counter()
    args.work.mkdir(parents=True, exist_ok=True)
    samples = merge_samples(range(args.seed, args.seed + args.brackets), log=print)
    photos: list[str] = []
    if args.real:
        real, photos = real_merge_samples(args.real, seed=args.seed, log=print, extra=args.extra_photos)
        samples += real
    t_data = time.perf_counter() - t0
    print(f"{len(samples)} brackets, {len(samples) - args.brackets} of them re-photographed crops of "
          f"{', '.join(photos) or 'no photograph'} ({t_data:.0f} s)", flush=True)
    model, history = train_merge(samples, epochs=args.epochs, crops_per_sample=args.crops, width=args.width,
                                 seed=args.seed)
    t_total = time.perf_counter() - t0
    size = f" --size {args.size[1]}x{args.size[0]}" if args.size else ""
    export_merge(model, args.out, size=args.size, extra_metadata={
        "edgehdr.source": training_source(started),
        "edgehdr.recipe": f"train_merge --brackets {args.brackets} --epochs {args.epochs} --crops {args.crops} "
                          f"--width {args.width} --seed {args.seed} --real {args.real}{size}"
                          + (" --extra-photos" if args.extra_photos else ""),
        "edgehdr.training_photos": ",".join(photos)})
    shape = MERGE_INPUT_SHAPE if args.size is None else (1, MERGE_INPUT_SHAPE[1], *args.size)
    log = write_training_log(args.work / "train_merge_log.json", model, shape, history=history,
                             data_seconds=round(t_data, 1), total_seconds=round(t_total, 1))
    print(f"wrote {args.out}: {log['parameters']} parameters, {log['macs_per_frame'] / 1e9:.2f} GMAC per frame; "
          f"total {t_total:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
