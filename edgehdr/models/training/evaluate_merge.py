"""Quality and speed of the merge network against the classical merge, with and without deghosting.

    python -m edgehdr.models.training.evaluate_merge [--scenes 8] [--model merge_net]

Held-out synthetic scenes (seeds from 100000, never trained on), 544 x 960, three
exposures spaced by ``suggest_exposures`` for each scene (2.5-3.2 stops on these seeds), with
noise and hand shake, aligned by the runtime's MTB:
PSNR-mu (mu = 5000) and PU21-PSNR of the merge against the exact radiance, on
dynamic scenes (two moving objects; also inside the moving regions) and on the same
scenes without motion. The ``oracle`` row picks, per pixel, the single input frame
closest to the truth: a bound for any per-pixel choice among the inputs (where the
reference frame is clipped on a moving object, no weighted merge can recover it). ``deghost_fill`` and
``network`` fill the samples no frame measures from their measured neighbours (``edgehdr.hdr.fill``, the
network's default); ``network_no_fill`` is the network's weighted merge alone.
Speed: one 1080p bracket, median of 7, network (ONNX Runtime, FP32, CPU) + encoding +
fused merge against ``merge_debevec`` with deghosting.
"""

from __future__ import annotations

import argparse
import functools
import json
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import numpy as np

from edgehdr.hdr.crf import CameraResponse
from edgehdr.hdr.merge import merge_debevec
from edgehdr.hdr.neural_merge import NeuralMerger, encode_merge_input, merge_with_weights
from edgehdr.models.training.merge_data import dynamic_bracket, real_dynamic_bracket
from edgehdr.quality import psnr_mu, pu21_psnr
from edgehdr.timing import median_ms

__all__ = ["evaluate", "timing", "main"]

HOLDOUT_SEED = 100_000


def oracle_selection(frames: np.ndarray, exposures: np.ndarray, response: CameraResponse,
                     truth: np.ndarray) -> np.ndarray:
    """Per pixel and channel the single frame closest to the truth in the mu-law domain: a bound on what any
    per-pixel choice among the inputs reaches (it needs the ground truth; it is not a method)."""
    from edgehdr.quality.metrics import mu_law, robust_peak

    norm = robust_peak(truth, 99.9)
    lut = response.log_lut()
    singles = np.stack([np.exp(np.stack([lut[c][frames[i][..., c]] for c in range(3)], -1)) / exposures[i]
                        for i in range(len(frames))])
    err = (mu_law(singles, normaliser=norm) - mu_law(truth, normaliser=norm)) ** 2
    best = np.argmin(err, axis=0)
    return np.take_along_axis(singles, best[None], axis=0)[0].astype(np.float32)


def _real_source(radiance: np.ndarray, seed: int, moving: int) -> tuple[Any, ...]:
    return real_dynamic_bracket(radiance, seed, moving_objects=moving)


def _synthetic_source(seed: int, height: int, width: int, moving: int) -> tuple[Any, ...]:
    return dynamic_bracket(seed, height=height, width=width, moving_objects=moving, speed_fraction=0.02)


def evaluate(merger: NeuralMerger, seeds: Iterable[int], *, height: int = 544, width: int = 960,
             real: bool = False, unseen: bool = False) -> dict[str, Any]:
    """Per scene and merge: PSNR-mu and PU-PSNR, dynamic and static. ``real``: instead of synthetic scenes, the
    shared real photographs re-photographed (``real_dynamic_bracket``), ``seeds`` ignored; ``unseen``: with
    ``real``, the unseen photographs too (``splits.UNSEEN_PHOTOS_DIR``, split ``"unseen"``)."""
    sources: list[tuple[Any, Callable[[int], tuple[Any, ...]]]] = []
    splits: dict[str, str] = {}
    if real:
        from edgehdr.models.training.splits import evaluation_photos, photo_seed

        for name, split, rad in evaluation_photos(max_side=max(height, width), unseen=unseen):
            splits[name] = split if split in ("held-out", "unseen") else "training"
            # seeded by name: another photograph in the folder leaves this one's bracket as it was
            sources.append((name, functools.partial(_real_source, rad, photo_seed(name, HOLDOUT_SEED))))
    else:
        for seed in seeds:
            sources.append((int(seed), functools.partial(_synthetic_source, int(seed), height, width)))
    rows = []
    for key, make in sources:
        row: dict[str, Any] = {"seed" if not real else "photo": key}
        for motion in ("dynamic", "static"):
            frames, exposures, truth, mask, response = make(2 if motion == "dynamic" else 0)
            row["size"] = [int(frames.shape[2]), int(frames.shape[1])]  # a photograph keeps its own (smaller) size
            merger.response = response
            prob = merger.weights(frames, exposures, bits=8)  # the network once: the merger's two merges share it
            network = functools.partial(merge_with_weights, frames, prob, exposures, response, bits=8,
                                        consistency_gate=merger.consistency_gate)
            results = {"plain": merge_debevec(frames, exposures, response),
                       "deghost": merge_debevec(frames, exposures, response, deghost=True),
                       "deghost_fill": merge_debevec(frames, exposures, response, deghost=True, fill=True),
                       "network_no_fill": network(fill=False),
                       "network": network(fill=merger.fill),
                       "oracle": oracle_selection(frames, exposures, response, truth)}
            for name, rad in results.items():
                row[f"{motion}_{name}_psnr_mu"] = psnr_mu(rad, truth)
                row[f"{motion}_{name}_pu_psnr"] = pu21_psnr(rad, truth)
                if motion == "dynamic" and mask.any():
                    row[f"moving_{name}_pu_psnr"] = pu21_psnr(rad, truth, mask=mask)
        rows.append(row)
    keys = [k for k in rows[0] if k not in ("seed", "photo", "split", "size")]

    def mean_of(chosen: list[dict[str, Any]]) -> dict[str, float]:
        return {k: float(np.mean([r[k] for r in chosen if k in r])) for k in keys}

    # Synthetic scenes are rendered at width x height; a photograph is only ever shrunk to fit its longer side in
    # max(width, height) (the rows carry each one's size).
    report: dict[str, Any] = ({"max_side": max(width, height)} if real else {"size": [width, height]})
    report.update(rows=rows, mean=mean_of(rows))
    if real:  # the merge recipe can train on re-photographed crops of the training photographs: report apart
        for row in rows:
            row["split"] = splits[row["photo"]]
        for split in ("held-out", "unseen", "training"):
            chosen = [r for r in rows if r["split"] == split]
            if chosen:
                report[f"mean_{split}"] = mean_of(chosen)
    return report


def timing(merger: NeuralMerger, *, repeats: int = 7) -> dict[str, float]:
    """Per-bracket milliseconds at 1080p (median): encoding, network, fused merge; classical deghost merge."""
    frames, exposures, _, _, response = dynamic_bracket(HOLDOUT_SEED, height=1080, width=1920, moving_objects=2)
    merger.response = response
    x = encode_merge_input(frames, exposures, response, size=merger.size)
    name = merger.input_name

    def med(fn: Callable[[], object]) -> float:
        return median_ms(fn, repeats)

    prob = merger.weights(frames, exposures, bits=8)
    fill = merger.fill
    out = np.empty((1080, 1920, 3), np.float32)
    result = {"encode_ms": med(lambda: encode_merge_input(frames, exposures, response, size=merger.size)),
              "network_ms": med(lambda: merger.runner.run({name: x})),
              "merge_ms": med(lambda: merge_with_weights(frames, prob, exposures, response, bits=8, out=out,
                                                         fill=fill)),
              "merge_no_fill_ms": med(lambda: merge_with_weights(frames, prob, exposures, response, bits=8, out=out)),
              "total_ms": med(lambda: merger(frames, exposures, bits=8, out=out)),
              "classical_deghost_ms": med(lambda: merge_debevec(frames, exposures, response, deghost=True, out=out)),
              "classical_deghost_fill_ms": med(lambda: merge_debevec(frames, exposures, response, deghost=True,
                                                                     out=out, fill=True)),
              "classical_plain_ms": med(lambda: merge_debevec(frames, exposures, response, out=out))}
    return {k: round(v, 2) for k, v in result.items()}


def main(argv: Sequence[str] | None = None) -> int:
    from edgehdr.infer import OnnxRuntimeRunner
    from edgehdr.models import model_path

    p = argparse.ArgumentParser(prog="python -m edgehdr.models.training.evaluate_merge",
                                description=__doc__.split("\n")[0])
    p.add_argument("--scenes", type=int, default=8)
    p.add_argument("--model", default="merge_net")
    p.add_argument("--no-timing", action="store_true")
    p.add_argument("--real", action="store_true", help="also the shared real photographs, re-photographed")
    p.add_argument("--unseen", action="store_true",
                   help="with --real, the unseen photographs too (splits.UNSEEN_PHOTOS_DIR: ten panoramas no recipe "
                        "reads)")
    p.add_argument("--json", help="write the figures here too")
    args = p.parse_args(argv)
    if args.unseen and not args.real:
        p.error("--unseen needs --real (the unseen photographs are re-photographed as the shared ones are)")
    runner = OnnxRuntimeRunner(model_path(args.model)).load()
    merger = NeuralMerger(runner)
    report = evaluate(merger, range(HOLDOUT_SEED, HOLDOUT_SEED + args.scenes))
    if args.real:
        report["real"] = evaluate(merger, (), real=True, unseen=args.unseen)
    if not args.no_timing:
        report["timing_1080p"] = timing(merger)
    tables: list[tuple[str, dict[str, float]]] = [(f"held-out synthetic scenes: {len(report['rows'])}",
                                                   report["mean"])]
    if "real" in report:
        real_rows = report["real"]["rows"]
        for split in ("held-out", "unseen", "training"):
            if f"mean_{split}" in report["real"]:
                count = sum(r["split"] == split for r in real_rows)
                tables.append((f"real photographs re-photographed at their own size up to a longest side of "
                               f"{report['real']['max_side']} px, {split}: {count}", report["real"][f"mean_{split}"]))
    for label, m in tables:
        print(f"{label} (mean dB)")
        print(f"{'merge':<15} {'dyn PSNR-mu':>12} {'dyn PU-PSNR':>12} {'moving PU':>10} {'static PSNR-mu':>15} "
              f"{'static PU':>10}")
        for name in ("plain", "deghost", "deghost_fill", "network_no_fill", "network", "oracle"):
            print(f"{name:<15} {m[f'dynamic_{name}_psnr_mu']:>12.2f} {m[f'dynamic_{name}_pu_psnr']:>12.2f} "
                  f"{m.get(f'moving_{name}_pu_psnr', float('nan')):>10.2f} {m[f'static_{name}_psnr_mu']:>15.2f} "
                  f"{m[f'static_{name}_pu_psnr']:>10.2f}")
    if "timing_1080p" in report:
        print("1080p ms:", json.dumps(report["timing_1080p"]))
    if args.json:
        from edgehdr.io.atomic import write_json_atomic

        write_json_atomic(args.json, report)
    runner.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
