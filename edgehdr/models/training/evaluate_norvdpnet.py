"""Rank agreement of NoR-VDPNet models with TMQI on real photographs, pooled across scenes and within each.

    python -m edgehdr.models.training.evaluate_norvdpnet [--model norvdpnet_tmo] [--against other.onnx]

Two rendering sets per photograph, both scored against TMQI (``edgehdr.quality.tmqi``):

* **operators** — what a user compares: the project's Reinhard global and local, Drago,
  the parametric operator and the neural TMO, OpenCV's Reinhard, Drago and Mantiuk
  (gamma 2.2, otherwise their defaults), and single exposures at -2, 0 and +2 stops (11 renderings);
* **wide** — ``tone_mapping_variants`` over ``WIDE_VARIANT_KINDS`` (``--wide`` seeded renderings,
  8 by default, a quarter washed out towards grey), the training recipe's distribution. A Spearman
  correlation over 8 renderings moves by several tenths with the draw; ``--wide 24`` measures the
  within-scene figure more steadily (the first 8 of the 24 are the default's 8).

Photographs are labelled held-out, validation or training by ``edgehdr.models.training.splits``;
the correlations that judge a model are the held-out ones, printed per photograph too. The validation
photographs, printed per photograph as well, are for choosing between recipe variants trained with
``train_norvdpnet --validation`` (which never sees them); for the shipped weights they are training photographs.
``--unseen`` adds the ten evaluation-only photographs (``splits.UNSEEN_PHOTOS_DIR``) as the split "unseen":
a second test set, four times the held-out one.
Speed: one 1080p frame (encoding + network, ONNX Runtime CPU), median of 20, each model in the same run.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgehdr.timing import median_ms

__all__ = ["operator_renderings", "evaluate", "main"]


def operator_renderings(radiance: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """The 'operators' set: 11 renderings of ``radiance`` a user would compare (see the module docstring)."""
    from edgehdr.infer import OnnxRuntimeRunner
    from edgehdr.models import model_path
    from edgehdr.models.training.evaluate_tmo import opencv_tonemap
    from edgehdr.quality.norvdpnet import single_exposure
    from edgehdr.tonemap import drago, parametric, reinhard_global, reinhard_local
    from edgehdr.tonemap.neural import NeuralToneMapper

    with OnnxRuntimeRunner(model_path("tmo_net")) as runner:
        neural = NeuralToneMapper(runner, time_constant_s=0.0)(radiance)
    out = [("reinhard", reinhard_global(radiance)), ("reinhard-local", reinhard_local(radiance)),
           ("drago", drago(radiance)), ("parametric", parametric(radiance)), ("neural", neural)]
    out += [(name, opencv_tonemap(radiance, name)) for name in ("opencv_reinhard", "opencv_drago", "opencv_mantiuk")]
    out += [(f"exposure {stops:+d}", single_exposure(radiance, stops)) for stops in (-2, 0, 2)]
    return out


def evaluate(models: Sequence[str], *, max_side: int = 768, wide: int = 8, unseen: bool = False) -> dict[str, Any]:
    """Scores, TMQI and their correlations for each of ``models`` (see the module docstring). ``unseen``: the
    unseen photographs too (``splits.UNSEEN_PHOTOS_DIR``, split ``"unseen"``)."""
    if wide < 3:
        raise ValueError(f"wide: at least 3 renderings per photograph are needed for a ranking, got {wide}")
    from edgehdr.infer import OnnxRuntimeRunner
    from edgehdr.models import model_path
    from edgehdr.models.training.splits import evaluation_photos, photo_seed
    from edgehdr.quality import tmqi
    from edgehdr.quality.correlation import scene_correlations
    from edgehdr.quality.norvdpnet import WIDE_VARIANT_KINDS, NoRVDPNetScorer, tone_mapping_variants
    from edgehdr.synth import make_scene

    runners = {m: OnnxRuntimeRunner(model_path(m)).load() for m in models}
    scorers = {m: NoRVDPNetScorer(r) for m, r in runners.items()}
    rows: list[dict[str, Any]] = []
    for name, split, radiance in evaluation_photos(max_side=max_side, unseen=unseen):
        seed = photo_seed(name, 200_000)  # by name: another photograph in the folder leaves this one's draw
        sets = {"operators": operator_renderings(radiance),
                "wide": [(d["kind"], sdr) for sdr, d in
                         tone_mapping_variants(radiance, wide, seed=seed, kinds=WIDE_VARIANT_KINDS)]}
        for set_name, renderings in sets.items():
            for label, sdr in renderings:
                rows.append({"photo": name, "split": split, "set": set_name, "rendering": label,
                             "tmqi": tmqi(radiance, sdr).Q, **{m: s.score(sdr) for m, s in scorers.items()}})
    result: dict[str, Any] = {"rows": rows, "correlations": {}}
    photos = sorted({r["photo"] for r in rows})
    for split in ("held-out", "unseen", "validation", "training"):
        for set_name in ("operators", "wide"):
            sel = [r for r in rows if r["split"] == split and r["set"] == set_name]
            if not sel:
                continue
            label = np.array([r["tmqi"] for r in sel])
            owner = np.array([photos.index(r["photo"]) for r in sel])
            result["correlations"][f"{split} {set_name}"] = {
                m: scene_correlations(np.array([r[m] for r in sel]), label, owner) for m in models}
    from edgehdr.tonemap import reinhard_global

    frame = reinhard_global(make_scene(7, 1080, 1920).radiance)
    result["score_1080p_ms"] = {m: median_ms(functools.partial(s.score, frame), 20, 3) for m, s in scorers.items()}
    for r in runners.values():
        r.close()
    return result


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgehdr.models.training.evaluate_norvdpnet")
    p.add_argument("--model", default="norvdpnet_tmo")
    p.add_argument("--against", action="append", default=[], help="another model to score in the same run")
    p.add_argument("--wide", type=int, default=8, help="renderings per photograph in the wide set (default 8)")
    p.add_argument("--json", default=None)
    p.add_argument("--unseen", action="store_true",
                   help="the unseen photographs too (splits.UNSEEN_PHOTOS_DIR: ten panoramas no recipe reads)")
    args = p.parse_args(argv)
    models = [args.model, *args.against]
    try:
        result = evaluate(models, wide=args.wide, unseen=args.unseen)
    except ValueError as error:
        p.error(str(error))
    print(f"{'split / set':<22} {'model':<28} {'pooled SROCC':>12} {'PLCC':>6} {'within mean':>11} {'min':>6} {'n':>4}")
    for key, per_model in result["correlations"].items():
        for m, c in per_model.items():
            print(f"{key:<22} {m[-28:]:<28} {c['srocc']:>12.3f} {c['plcc']:>6.3f} "
                  f"{c['within_srocc_mean']:>11.3f} {c['within_srocc_min']:>6.3f} {c['renderings']:>4}")
    from edgehdr.quality.correlation import spearman

    for split in ("held-out", "unseen", "validation"):
        for set_name in ("operators", "wide"):
            for photo in sorted({r["photo"] for r in result["rows"] if r["split"] == split}):
                sel = [r for r in result["rows"] if r["photo"] == photo and r["set"] == set_name]
                label = np.array([r["tmqi"] for r in sel])
                print(f"{split:<10} {set_name:<9} {photo:<32} within SROCC " + ", ".join(
                    f"{m} {spearman(np.array([r[m] for r in sel]), label):.3f}" for m in models)
                    + f" (n {len(sel)})")
    print("1080p scoring (encode + network):", ", ".join(f"{m} {v:.2f} ms" for m, v in
                                                          result["score_1080p_ms"].items()))
    if args.json:
        from edgehdr.io.atomic import write_json_atomic

        write_json_atomic(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
