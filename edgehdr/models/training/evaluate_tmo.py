"""Quality and speed table of the real-time TMO against its teacher and the classical operators.

    python -m edgehdr.models.training.evaluate_tmo [--scenes 24] [--int8 out/tmo_net.int8.onnx]

TMQI (``edgehdr.quality.tmqi``, the NumPy reference) on held-out synthetic scenes
(seeds from 100000, never used in training) at 256 x 384; the teacher is optimised
per held-out image exactly as in training. Speed: one 1080p frame, encode + network
(ONNX Runtime CPU, FP32) + application, median of 20, with Reinhard global timed in
the same run. Temporal stability: a static scene with sensor noise over 30 frames.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edgehdr.timing import median_ms

__all__ = ["evaluate", "main"]


def evaluate(scenes: int = 24, *, model: str | os.PathLike[str] = "tmo_net", int8: str | os.PathLike[str] | None = None,
             teacher_steps: int = 60) -> dict[str, Any]:
    from edgehdr.infer import OnnxRuntimeRunner
    from edgehdr.models import model_path
    from edgehdr.quality import tmqi
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

        from edgehdr.models.training.torch_ops import to_nchw
        from edgehdr.models.training.train_tmo import teacher_grid

        teacher = teacher_grid
    except ImportError:
        teacher = None
    for i in range(scenes):
        rad = make_scene(100_000 + i, 256, 384).radiance
        rows["student"].append(tmqi(rad, student(rad)).Q)
        if quant is not None:
            rows["student_int8"].append(tmqi(rad, quant(rad)).Q)
        rows["reinhard"].append(tmqi(rad, reinhard_global(rad)).Q)
        rows["reinhard_local"].append(tmqi(rad, reinhard_local(rad)).Q)
        rows["drago"].append(tmqi(rad, drago(rad)).Q)
        rows["parametric"].append(tmqi(rad, parametric(rad)).Q)
        if teacher is not None:
            _, key, blocks = encode_tmo_input(rad)
            grid, _ = teacher({"radiance": to_nchw(rad), "key": key}, steps=teacher_steps)
            rows["teacher"].append(tmqi(rad, apply_parameter_grid(rad, grid, key_log2=key, blocks=blocks)).Q)
    quality = {k: {"mean_tmqi": float(np.mean(v)), "min_tmqi": float(np.min(v))} for k, v in rows.items() if v}
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
    # Temporal stability: static scene, fresh sensor-like noise each frame.
    rng = np.random.default_rng(0)
    base = make_scene(11, 270, 480).radiance
    flicker = {}
    for label, tc in (("smoothed", 0.4), ("unsmoothed", 0.0)):
        tm = NeuralToneMapper(runner, time_constant_s=tc)
        frames = []
        for _ in range(30):
            noisy = base * (1 + 0.02 * rng.standard_normal(base.shape).astype(np.float32))
            frames.append(tm(np.maximum(noisy, 0)).astype(np.float32))
        flicker[label] = float(np.mean([np.abs(frames[k + 1].mean() - frames[k].mean())
                                        for k in range(10, 29)]))
    return {"scenes": scenes, "quality": quality, "speed_1080p": speed, "mean_frame_step_codes": flicker}


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgehdr.models.training.evaluate_tmo")
    p.add_argument("--scenes", type=int, default=24)
    p.add_argument("--model", default="tmo_net")
    p.add_argument("--int8", default=None, help="an INT8 Q/DQ model from edgehdr-export build --precision int8")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    result = evaluate(args.scenes, model=args.model, int8=args.int8)
    print(f"{'operator':<16} {'mean TMQI':>9} {'min TMQI':>9}")
    for k, v in result["quality"].items():
        print(f"{k:<16} {v['mean_tmqi']:>9.4f} {v['min_tmqi']:>9.4f}")
    print("1080p:", ", ".join(f"{k} {v:.2f}" for k, v in result["speed_1080p"].items()))
    print("mean frame-to-frame change of the mean code, static noisy scene:", result["mean_frame_step_codes"])
    if args.json:
        from edgehdr.io.atomic import write_text_atomic

        write_text_atomic(args.json, json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
