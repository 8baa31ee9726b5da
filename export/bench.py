"""``edgehdr-export bench``: latency and throughput of models and engines per backend, OpenCV DNN as the baseline."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgehdr.timing import time_calls as time_runs  # one timing helper for every benchmark

if TYPE_CHECKING:
    from edgehdr.infer.base import PathLike, Runner
    from export.shapes import ShapeOverrides

__all__ = ["bench", "print_bench", "time_runs"]


def _artefacts(target: PathLike) -> list[Path]:
    target = Path(target)
    if target.is_dir():
        found = sorted(p for p in target.iterdir() if p.suffix in (".onnx", ".engine") and not p.name.startswith("."))
        if not found:
            raise ValueError(f"{target}: no .onnx or .engine files")
        return found
    if not target.is_file():
        raise FileNotFoundError(f"{target}: no such model, engine or folder")
    return [target]


def _backends_for(path: Path) -> list[tuple[str, Callable[[], Runner]]]:
    """(label, factory) for every backend present that can run ``path``."""
    if path.suffix == ".engine":
        from edgehdr.infer.trt import TensorRTRunner

        return [("tensorrt", lambda: TensorRTRunner(path))]
    import onnxruntime as ort

    from edgehdr.infer.ort import OnnxRuntimeRunner

    out: list[tuple[str, Callable[[], Runner]]] = [("ort-cpu", lambda: OnnxRuntimeRunner(path, providers="cpu"))]
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" in available:
        out.append(("ort-cuda", lambda: OnnxRuntimeRunner(path, providers=["CUDAExecutionProvider",
                                                                         "CPUExecutionProvider"])))
    if "TensorrtExecutionProvider" in available:
        out.append(("ort-trt", lambda: OnnxRuntimeRunner(path, providers=["TensorrtExecutionProvider",
                                                                        "CUDAExecutionProvider",
                                                                        "CPUExecutionProvider"],
                                                         trt_fp16=".fp16." in path.name or ".int8." in path.name,
                                                         trt_int8=".int8." in path.name,
                                                         trt_cache_dir=path.parent / ".trt-ep-cache")))
    return out


def _bench_inputs(artefacts: Sequence[Path], shapes: Mapping[str, Sequence[int]]) -> None:
    """Refuse unreadable artefacts, and ``--shape`` names no benchmarked ONNX model has, before timing anything."""
    from export.checks import load_model, require_engine
    from export.shapes import model_inputs

    names: set[str] = set()
    for path in artefacts:
        if path.suffix == ".onnx":
            names |= {v.name for v in model_inputs(load_model(path, check=True))}
        else:
            require_engine(path)
    unknown = sorted(set(shapes) - names)
    if unknown and all(p.suffix == ".onnx" for p in artefacts):
        raise ValueError(f"--shape for {unknown}, but the inputs of the models are {sorted(names)}")


def bench(target: PathLike, *, runs: int = 50, warmup: int = 5, threads: int = 0, opencv: bool = True,
          shapes: ShapeOverrides | None = None) -> list[dict[str, Any]]:
    """Latency and throughput of every artefact under every backend present, with OpenCV DNN on FP32 ONNX
    models as the independent baseline measured in the same run (ratio = OpenCV median / this median).
    ``shapes`` (``{input: dims}``, ``export.shapes``) fixes dynamic input dimensions of the random feeds."""
    import numpy as np

    from export.shapes import overrides, resolve_shape

    rows: list[dict[str, Any]] = []
    rng = np.random.default_rng(0)
    fixed = overrides(shapes)
    artefacts = _artefacts(target)
    _bench_inputs(artefacts, fixed)
    for path in artefacts:
        for label, factory in _backends_for(path):
            try:
                runner = factory()
                if hasattr(runner, "intra_op_threads"):
                    runner.intra_op_threads = threads
                runner.load()
            except Exception as exc:  # noqa: BLE001 - a backend that cannot load this artefact is reported
                rows.append({"artefact": path.name, "backend": label, "error": str(exc).splitlines()[0]})
                continue
            try:
                feed = {t.name: rng.random(resolve_shape(t.name, t.shape, fixed, label=path, why="bench"),
                                           dtype=np.float32)
                        for t in runner.describe().inputs}  # a dynamic dimension without --shape: the caller's error
                try:
                    runner.run(feed)  # a backend that loads the artefact but cannot run it is a row, not a traceback
                except Exception as exc:  # noqa: BLE001
                    rows.append({"artefact": path.name, "backend": label, "error": _run_error(exc)})
                    continue
                stats = time_runs(functools.partial(runner.run, feed), runs, warmup)
            finally:
                runner.close()
            rows.append({"artefact": path.name, "backend": label, **stats})
        if opencv and path.suffix == ".onnx" and ".int8." not in path.name and ".fp16." not in path.name:
            import cv2

            try:
                net = cv2.dnn.readNetFromONNX(str(path))
            except cv2.error as exc:
                rows.append({"artefact": path.name, "backend": "opencv-dnn", "error": _run_error(exc)})
                continue
            x = rng.random(_first_input_shape(path, fixed), dtype=np.float32)

            def cv_run(net=net, x=x):
                net.setInput(x)
                return net.forward()

            try:  # OpenCV's importer takes graphs its layers then cannot run (tmo_net's residual shapes)
                cv_run()
            except cv2.error as exc:
                rows.append({"artefact": path.name, "backend": "opencv-dnn",
                             "error": _run_error(exc)})
                continue
            rows.append({"artefact": path.name, "backend": "opencv-dnn", **time_runs(cv_run, runs, warmup)})
    baseline = {r["artefact"].split(".")[0]: r["median_ms"] for r in rows if r["backend"] == "opencv-dnn"
                and "median_ms" in r}
    for r in rows:
        base = baseline.get(r["artefact"].split(".")[0])
        if base and "median_ms" in r:
            r["speedup_vs_opencv_dnn"] = base / r["median_ms"]
    return rows


def _run_error(exc: Exception) -> str:
    """The line of an error that says what went wrong (OpenCV's first lines name its source file)."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    text = lines[-1] if lines else type(exc).__name__
    # "OpenCV(5.1.0) /io/opencv/modules/...cpp:807: error: (-5:Bad argument) what happened in function 'f'"
    found = re.search(r"error: \([^)]*\) (.*?)(?: in function '[^']*')?$", text)
    return f"cannot run it: {found.group(1) if found else text}"


def _first_input_shape(path: Path, shapes: ShapeOverrides | None = None) -> list[int]:
    import onnx

    from export.checks import io_specs
    from export.shapes import resolve_shape

    spec = io_specs(onnx.load(str(path)))["inputs"][0]
    return resolve_shape(spec["name"], spec["shape"], shapes, label=path, why="bench")


def print_bench(rows: Iterable[Mapping[str, Any]]) -> None:
    print(f"{'artefact':<34} {'backend':<11} {'median ms':>9} {'p90 ms':>8} {'p99 ms':>8} {'per s':>8} "
          f"{'x OpenCV':>8}")
    for r in rows:
        if "error" in r:
            print(f"{r['artefact']:<34} {r['backend']:<11} unavailable: {r['error']}")
            continue
        ratio = r.get("speedup_vs_opencv_dnn")
        print(f"{r['artefact']:<34} {r['backend']:<11} {r['median_ms']:>9.3f} {r['p90_ms']:>8.3f} "
              f"{r['p99_ms']:>8.3f} {r['throughput_per_s']:>8.1f} {'' if ratio is None else f'{ratio:.2f}':>8}")
