"""The on-device run: build every zoo model's engines, validate them against ONNX Runtime, print one table.

A Jetson owner runs, on the Jetson (engines are built where they run)::

    edgehdr-export device-suite -o engines/

For each model (the ONNX models shipped in ``edgehdr/models`` plus the two export
test networks at a realistic size) and each precision (FP16, INT8 Q/DQ by
default), it builds a TensorRT engine with ``build --target trt``, validates the
engine against the FP32 model under ONNX Runtime CPU on held-out data, and
times the engine (native TensorRT runner) against ONNX Runtime CPU FP32. The
table goes to stdout and, with everything measured, to
``OUT/device_report.{md,json}``.

This path needs TensorRT and pycuda; on any other machine it stops at the
preflight with what is missing.
"""

from __future__ import annotations

import functools
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgehdr.infer.base import PathLike

__all__ = ["preflight", "run_device_suite", "suite_models"]


def preflight() -> dict[str, Any]:
    """TensorRT version, CUDA device and DLA cores, or ``BackendUnavailable`` naming what is missing."""
    from edgehdr.infer.cuda_buffers import device_properties
    from edgehdr.infer.trt import import_tensorrt

    trt = import_tensorrt()
    props = device_properties(0)
    builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
    return {"tensorrt_version": trt.__version__, "dla_cores": int(builder.num_DLA_cores),
            "machine": platform.machine(), "python": platform.python_version(), **props}


def suite_models(work_dir: PathLike) -> list[Path]:
    """Shipped zoo models (``edgehdr/models/*.onnx``) plus the export test networks at 256 x 256."""
    from export.testnets import image_net, score_net

    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    zoo_dir = Path(__file__).resolve().parent.parent / "edgehdr" / "models"
    zoo = sorted(zoo_dir.glob("*.onnx")) if zoo_dir.is_dir() else []
    tests = [image_net(work_dir / "testnet_image.onnx", height=256, width=256, channels=16),
             score_net(work_dir / "testnet_score.onnx", height=256, width=256)]
    return zoo + tests


def run_device_suite(out_dir: PathLike, *, precisions: Sequence[str] = ("fp16", "int8"), dla_core: int | None = None,
                     runs: int = 100, models: Sequence[PathLike] | None = None, calib_count: int = 64,
                     holdout_count: int = 16) -> dict[str, Any]:
    import numpy as np

    from edgehdr.infer.ort import OnnxRuntimeRunner
    from edgehdr.infer.trt import TensorRTRunner
    from edgehdr.io.staging import output_folder
    from edgehdr.progress import Progress
    from export.bench import time_runs
    from export.build import build
    from export.checks import load_model
    from export.shapes import resolve_shape

    unknown = [p for p in precisions if p not in ("fp32", "fp16", "int8")]
    if not precisions or unknown:
        raise ValueError(f"--precisions {','.join(precisions)}: give a comma-separated list of fp32, fp16, int8")
    for model in models or ():
        load_model(model, check=True)
    out_dir = Path(out_dir)
    output_folder(out_dir, create=False)
    info = preflight()
    out_dir.mkdir(exist_ok=True)
    models = [Path(m) for m in models] if models else suite_models(out_dir / "sources")
    print(f"TensorRT {info['tensorrt_version']} on {info['device_name']} (compute {info['compute_capability']}), "
          f"{info['dla_cores']} DLA cores")
    rows: list[dict[str, Any]] = []
    progress = Progress(len(models) * len(precisions))
    cache = out_dir / "timing.cache"
    for model in models:
        ref = OnnxRuntimeRunner(model, providers="cpu").load()
        feed = {t.name: np.random.default_rng(0).random(resolve_shape(t.name, t.shape, None, label=model,
                                                                      why="timing"), dtype=np.float32)
                for t in ref.describe().inputs}
        ort_cpu = time_runs(functools.partial(ref.run, feed), max(runs // 5, 10), 3)
        ref.close()
        for precision in precisions:
            row: dict[str, Any] = {"model": model.stem, "precision": precision, "ort_cpu_fp32_ms": ort_cpu["median_ms"]}
            t0 = time.perf_counter()
            try:
                result = build(model, out_dir, precision=precision, target="trt", dla_core=dla_core,
                               timing_cache=cache, calib_count=calib_count, holdout_count=holdout_count,
                               progress=Progress(0, quiet=True))
            except Exception as exc:  # noqa: BLE001 - one model failing must not hide the others' results
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0]}"
                rows.append(row)
                progress.step(f"{model.stem} {precision}: FAILED ({row['error']})")
                continue
            row["build_s"] = round(time.perf_counter() - t0, 1)
            report = result["engine_accuracy_vs_fp32"]
            row["accuracy"] = {name: (r["max_abs_error"] if r.get("scalar") else r["psnr_db"])
                               for name, r in report["outputs"].items()}
            row["within_budget"] = report["budget"]["passed"]
            with TensorRTRunner(result["engine"]) as engine:
                timing = time_runs(functools.partial(engine.run, feed), runs, 10)
            row.update(engine=Path(result["engine"]).name, trt_ms=timing["median_ms"], trt_p99_ms=timing["p99_ms"],
                       speedup_vs_ort_cpu=ort_cpu["median_ms"] / timing["median_ms"])
            rows.append(row)
            progress.step(f"{model.stem} {precision}: {timing['median_ms']:.3f} ms, "
                          f"{'within' if row['within_budget'] else 'OUTSIDE'} budget")
    lines = [f"# Device suite: TensorRT {info['tensorrt_version']} on {info['device_name']}", "",
             ("| model | precision | accuracy vs FP32 (PSNR dB / max abs) | budget | TensorRT ms (p99) | "
              "ORT CPU FP32 ms | speed-up | build s |"), "| --- | --- | --- | --- | ---: | ---: | ---: | ---: |"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['precision']} | {r['error']} | | | {r['ort_cpu_fp32_ms']:.2f} | | |")
            continue
        acc = ", ".join(f"{k} {v:.3g}" for k, v in r["accuracy"].items())
        lines.append(f"| {r['model']} | {r['precision']} | {acc} | {'pass' if r['within_budget'] else 'FAIL'} | "
                     f"{r['trt_ms']:.3f} ({r['trt_p99_ms']:.3f}) | {r['ort_cpu_fp32_ms']:.2f} | "
                     f"{r['speedup_vs_ort_cpu']:.1f}x | {r['build_s']} |")
    table = "\n".join(lines) + "\n"
    print(table)
    from edgehdr.io.atomic import write_json_atomic, write_text_atomic
    from export.strict_json import null_undefined

    write_text_atomic(out_dir / "device_report.md", table)
    write_json_atomic(out_dir / "device_report.json", null_undefined({"device": info, "rows": rows}))
    return {"device": info, "rows": rows}
