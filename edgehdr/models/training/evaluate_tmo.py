"""Quality and speed table of the real-time TMO against its teacher and the classical operators.

    python -m edgehdr.models.training.evaluate_tmo [--scenes 24] [--int8 out/tmo_net.int8.onnx]

TMQI (``edgehdr.quality.tmqi``, the NumPy reference) on held-out synthetic scenes
(seeds from 100000, never used in training) at 256 x 384; the teacher (the per-image
optimisation the recipe distils from, ``teacher_grid``) is optimised per held-out image
with 60 steps at that size (the recipe's ``--teacher-steps`` default is 40 at 192 x 288,
and the shipped recipe distils nothing: ``--distill 0``). Speed: one 1080p frame, encode + network
(ONNX Runtime CPU, FP32) + application, median of 20, with Reinhard global timed in
the same run. Temporal stability: a static scene with sensor noise over 60 frames, the same
noisy frames with and without the temporal smoothing.

Real content (``evaluate_real``): every shared HDR photograph, labelled held-out, validation or
training by ``edgehdr.models.training.splits``, rendered by the network, the
project's classical operators and OpenCV's Reinhard, Drago and Mantiuk tone mappers in
the same run, each scored by TMQI, mid-tone saturation, highlight clipping and
colourfulness (``edgehdr.quality.rendering``: TMQI sees luminance only). The issue's
targets are checked per image: TMQI >= reinhard-local's, mid-tone saturation >= 0.9 x
Reinhard global's, highlight clipping <= reinhard-local's, and counted per split. ``--unseen`` adds the ten
evaluation-only photographs (``splits.UNSEEN_PHOTOS_DIR``) as the split "unseen".
"""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgehdr.io.atomic import write_json_atomic
from edgehdr.timing import median_ms

__all__ = ["HOLDOUT_SEED", "evaluate", "evaluate_real", "opencv_tonemap", "main"]

HOLDOUT_SEED = 100_000
"""The first held-out synthetic scene's seed (no recipe trains on seeds from here)."""


def opencv_tonemap(radiance: np.ndarray, name: str) -> np.ndarray:
    """OpenCV's ``cv2.createTonemap{Reinhard,Drago,Mantiuk}`` with gamma 2.2 (OpenCV's default of 1 leaves the
    output linear) and otherwise their defaults, radiance RGB float32 -> sRGB uint8 RGB
    (``edgehdr.quality.norvdpnet.opencv_render``)."""
    import cv2

    from edgehdr.quality.norvdpnet import opencv_render

    makers: dict[str, Callable[..., cv2.Tonemap]] = {
        "opencv_reinhard": cv2.createTonemapReinhard, "opencv_drago": cv2.createTonemapDrago,
        "opencv_mantiuk": cv2.createTonemapMantiuk}
    return opencv_render(radiance, makers[name](gamma=2.2))


def evaluate_real(*, model: str | os.PathLike[str] = "tmo_net", max_side: int = 1024,
                  with_opencv: bool = True, unseen: bool = False) -> list[dict[str, Any]]:
    """Per photograph and operator: TMQI, mid-tone saturation, highlight clipping, colourfulness, split.

    ``unseen``: the unseen photographs too (``splits.UNSEEN_PHOTOS_DIR``, split ``"unseen"``)."""
    from edgehdr.demo import DEMO_BASE_COMPRESSION
    from edgehdr.infer import OnnxRuntimeRunner
    from edgehdr.models import model_path
    from edgehdr.models.training.splits import evaluation_photos
    from edgehdr.quality import colourfulness, highlight_clipping, midtone_saturation, tmqi
    from edgehdr.tonemap import drago, reinhard_global, reinhard_local
    from edgehdr.tonemap.neural import NeuralToneMapper

    runner = OnnxRuntimeRunner(model_path(model)).load()
    student = NeuralToneMapper(runner, time_constant_s=0.0)
    operators: dict[str, Callable[[np.ndarray], np.ndarray]] = {
        "neural": student, "reinhard": reinhard_global, "reinhard_local": reinhard_local,
        "rl_demo": functools.partial(reinhard_local, base_compression=DEMO_BASE_COMPRESSION), "drago": drago}
    if with_opencv:
        for name in ("opencv_reinhard", "opencv_drago", "opencv_mantiuk"):
            operators[name] = functools.partial(opencv_tonemap, name=name)
    rows = []
    for name, split, rad in evaluation_photos(max_side=max_side, unseen=unseen):
        row: dict[str, Any] = {"photo": name, "split": split}
        for label, op in operators.items():
            out = op(rad)
            row[label] = {"tmqi": tmqi(rad, out).Q, "midtone_saturation": midtone_saturation(rad, out),
                          "highlight_clipping": highlight_clipping(rad, out), "colourfulness": colourfulness(out)}
        n, rl, rg = row["neural"], row["reinhard_local"], row["reinhard"]
        row["targets_met"] = {"tmqi_ge_reinhard_local": n["tmqi"] >= rl["tmqi"],
                              "saturation_ge_0.9_reinhard": n["midtone_saturation"] >= 0.9 * rg["midtone_saturation"],
                              "clipping_le_reinhard_local": n["highlight_clipping"] <= rl["highlight_clipping"]}
        rows.append(row)
    runner.close()
    return rows


def evaluate(scenes: int = 24, *, model: str | os.PathLike[str] = "tmo_net", int8: str | os.PathLike[str] | None = None,
             teacher_steps: int = 60) -> dict[str, Any]:
    from edgehdr.infer import OnnxRuntimeRunner
    from edgehdr.models import model_path
    from edgehdr.quality import highlight_clipping, midtone_saturation, tmqi
    from edgehdr.synth import make_scene
    from edgehdr.tonemap import drago, parametric, reinhard_global, reinhard_local
    from edgehdr.tonemap.neural import NeuralToneMapper, apply_parameter_grid, encode_tmo_input

    runner = OnnxRuntimeRunner(model_path(model)).load()
    student = NeuralToneMapper(runner, time_constant_s=0.0)
    quant = NeuralToneMapper(OnnxRuntimeRunner(int8).load(), time_constant_s=0.0) if int8 else None
    rows: dict[str, list] = {k: [] for k in ("teacher", "student", "student_int8", "reinhard", "reinhard_local",
                                             "drago", "parametric")}
    teacher: Callable[..., tuple[np.ndarray, float]] | None
    try:
        import torch  # noqa: F401 - the teacher needs the training extra

        from edgehdr.models.training.train_tmo import prepare_scene, teacher_grid

        teacher = teacher_grid
    except ImportError:
        teacher = None
    colour: dict[str, list[tuple[float, float]]] = {"student": [], "reinhard": [], "reinhard_local": []}
    for i in range(scenes):
        rad = make_scene(HOLDOUT_SEED + i, 256, 384).radiance
        rendered = {"student": student(rad), "reinhard": reinhard_global(rad), "reinhard_local": reinhard_local(rad)}
        for k, sdr in rendered.items():
            rows[k].append(tmqi(rad, sdr).Q)
            colour[k].append((midtone_saturation(rad, sdr), highlight_clipping(rad, sdr)))
        if quant is not None:
            rows["student_int8"].append(tmqi(rad, quant(rad)).Q)
        rows["drago"].append(tmqi(rad, drago(rad)).Q)
        rows["parametric"].append(tmqi(rad, parametric(rad)).Q)
        if teacher is not None:
            _, key, blocks = encode_tmo_input(rad)
            grid, _ = teacher(prepare_scene(rad), steps=teacher_steps)
            rows["teacher"].append(tmqi(rad, apply_parameter_grid(rad, grid, key_log2=key, blocks=blocks)).Q)
    quality = {k: {"mean_tmqi": float(np.mean(v)), "min_tmqi": float(np.min(v))} for k, v in rows.items() if v}
    for k, v in colour.items():
        quality[k]["mean_midtone_saturation"] = float(np.mean([c[0] for c in v]))
        quality[k]["mean_highlight_clipping"] = float(np.mean([c[1] for c in v]))
    met = [(q >= q_rl, c[0] >= 0.9 * c_rg[0], c[1] <= c_rl[1]) for q, q_rl, c, c_rg, c_rl in
           zip(rows["student"], rows["reinhard_local"], colour["student"], colour["reinhard"],
               colour["reinhard_local"])]
    targets = {"tmqi_ge_reinhard_local": sum(m[0] for m in met), "saturation_ge_0.9_reinhard": sum(m[1] for m in met),
               "clipping_le_reinhard_local": sum(m[2] for m in met), "all_three": sum(all(m) for m in met),
               "of": scenes, "missed_seeds": [HOLDOUT_SEED + i for i, m in enumerate(met) if not all(m)]}
    # Speed at 1080p.
    big = make_scene(7, 1080, 1920).radiance
    x, key, blocks = encode_tmo_input(big)
    feed = {"log_luminance": x}
    grid = np.asarray(next(iter(runner.run(feed).values()))[0])
    speed = {
        "encode_ms": median_ms(lambda: encode_tmo_input(big), 20, 3),
        "network_ms": median_ms(lambda: runner.run(feed), 20, 3),
        "apply_ms": median_ms(lambda: apply_parameter_grid(big, grid, key_log2=key, blocks=blocks), 20, 3),
        "full_frame_ms": median_ms(lambda: student(big), 20, 3),
        "reinhard_global_ms": median_ms(lambda: reinhard_global(big), 20, 3),
    }
    # Temporal stability: static scene, fresh sensor-like noise each frame; the same noisy frames for both runs
    # (one generator shared by the two gave them different draws, and the unsmoothed figure moved with the order).
    rng = np.random.default_rng(0)
    base = make_scene(11, 270, 480).radiance
    noisy_frames = [np.maximum(base * (1 + 0.02 * rng.standard_normal(base.shape).astype(np.float32)), 0)
                    for _ in range(60)]
    flicker = {}
    for label, tc in (("smoothed", 0.4), ("unsmoothed", 0.0)):
        tm = NeuralToneMapper(runner, time_constant_s=tc)
        means = [float(tm(noisy).astype(np.float32).mean()) for noisy in noisy_frames]
        flicker[label] = float(np.mean(np.abs(np.diff(means[10:]))))
    return {"scenes": scenes, "quality": quality, "targets_met_scenes": targets, "speed_1080p": speed,
            "mean_frame_step_codes": flicker}


def format_real(rows: Sequence[dict[str, Any]]) -> str:
    """The real-content table: one line per photograph and operator."""
    lines = [f"{'photograph':<32} {'split':<10} {'operator':<16} {'TMQI':>6} {'mid sat':>7} {'hl@255':>6} "
             f"{'colourf':>7}"]
    for row in rows:
        for label, v in row.items():
            if isinstance(v, dict) and "tmqi" in v:
                lines.append(f"{row['photo']:<32} {row['split']:<10} {label:<16} {v['tmqi']:>6.3f} "
                             f"{v['midtone_saturation']:>7.3f} {v['highlight_clipping']:>6.3f} "
                             f"{v['colourfulness']:>7.1f}")
        lines.append(f"{'':<32} {'':<10} targets: " + ", ".join(f"{k} {'yes' if ok else 'NO'}"
                                                             for k, ok in row["targets_met"].items()))
    for split in dict.fromkeys(row["split"] for row in rows):
        sel = [row for row in rows if row["split"] == split]
        met = {k: sum(row["targets_met"][k] for row in sel) for k in sel[0]["targets_met"]}
        met["all_three"] = sum(all(row["targets_met"].values()) for row in sel)
        lines.append(f"{split}: photographs meeting each target (of {len(sel)}): "
                     + ", ".join(f"{k} {v}" for k, v in met.items()))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgehdr.models.training.evaluate_tmo")
    p.add_argument("--scenes", type=int, default=24)
    p.add_argument("--model", default="tmo_net")
    p.add_argument("--int8", default=None, help="an INT8 Q/DQ model from edgehdr-export build --precision int8")
    p.add_argument("--json", default=None)
    p.add_argument("--real-only", action="store_true", help="only the table on the shared real photographs")
    p.add_argument("--unseen", action="store_true",
                   help="the unseen photographs too (splits.UNSEEN_PHOTOS_DIR: ten panoramas no recipe reads)")
    args = p.parse_args(argv)
    real = evaluate_real(model=args.model, unseen=args.unseen)
    print(format_real(real))
    if args.real_only:
        if args.json:
            write_json_atomic(args.json, {"real": real})
        return 0
    result = evaluate(args.scenes, model=args.model, int8=args.int8)
    result["real"] = real
    print(f"held-out synthetic scenes: {args.scenes}")
    print(f"{'operator':<16} {'mean TMQI':>9} {'min TMQI':>9} {'mid sat':>7} {'hl@255':>6}")
    for k, v in result["quality"].items():
        extra = (f" {v['mean_midtone_saturation']:>7.3f} {v['mean_highlight_clipping']:>6.3f}"
                 if "mean_midtone_saturation" in v else "")
        print(f"{k:<16} {v['mean_tmqi']:>9.4f} {v['min_tmqi']:>9.4f}{extra}")
    print("scenes meeting each target:", result["targets_met_scenes"])
    print("1080p:", ", ".join(f"{k} {v:.2f}" for k, v in result["speed_1080p"].items()))
    print("mean frame-to-frame change of the mean code, static noisy scene:", result["mean_frame_step_codes"])
    if args.json:
        write_json_atomic(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
