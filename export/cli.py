"""``edgehdr-export``: ONNX models in, checked / FP16 / INT8 Q/DQ models and TensorRT engines out.

Sub-commands::

    edgehdr-export build MODEL.onnx --precision int8 --calib synth --target onnx -o OUT
    edgehdr-export validate FP32.onnx CANDIDATE.(onnx|engine) [--data synth|DIR] -o REPORT
    edgehdr-export bench MODEL_OR_DIR [--runs N]
    edgehdr-export inspect MODEL.onnx|ENGINE
    edgehdr-export device-suite -o engines/      (on the Jetson)

Nothing here trains. ``build --target trt`` needs TensorRT (build on the target
device: engines are not portable across GPUs or TensorRT versions); everything
else runs on any machine with ONNX Runtime.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path

__all__ = ["bench", "build", "inspect", "main", "validate"]

PSNR_BUDGET_DB = 40.0  # image outputs of a converted model vs FP32
ABS_BUDGET = 0.01  # scalar outputs (scores in [0, 1]) vs FP32


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


# ---------------------------------------------------------------------------------------------------------- build
def build(model, out_dir, *, precision: str = "fp32", calib: str = "synth", calib_count: int = 64,
          holdout: str | None = None, holdout_count: int = 16, method: str = "auto", target: str = "onnx",
          dla_core: int | None = None, workspace_mb: int = 1024, timing_cache=None, quantiser: str = "onnxruntime",
          strongly_typed: bool | None = None, shapes=None, name: str | None = None, version: str = "0",
          progress=None) -> dict:
    """Check, simplify, convert (FP16 / INT8 Q/DQ), validate against FP32 and optionally build an engine.

    Writes into ``out_dir``: ``NAME.fp32.onnx`` (checked, simplified), ``NAME.fp16.onnx`` or
    ``NAME.int8.onnx``, a manifest next to each, ``NAME.PRECISION.validation.{json,md}`` and for
    ``target='trt'`` ``NAME.PRECISION.engine`` with its manifest. All or nothing: the files are
    written into a hidden staging folder and moved into place when the whole build succeeded
    (``export.staging``). ``shapes`` (``{input: dims}`` or ``'NAME:1x3x64x64'`` strings) fixes
    dynamic input dimensions in ``NAME.fp32.onnx``; every step that feeds the model (calibration,
    validation, an engine) needs them static. Returns what it wrote and measured.
    """
    from edgehdr.progress import Progress
    from export.calibration import check_source
    from export.checks import check_model, refuse_custom_ops
    from export.shapes import fix_input_shapes, model_inputs, overrides, static_shape
    from export.staging import output_file, output_folder, staged_outputs

    if precision not in ("fp32", "fp16", "int8"):
        raise ValueError(f"--precision must be fp32, fp16 or int8, got {precision!r}")
    if target not in ("onnx", "trt"):
        raise ValueError(f"--target must be onnx or trt, got {target!r}")
    model, out_dir = Path(model), Path(out_dir)
    name = name or model.stem
    if not name or name.startswith(".") or "/" in name or "\\" in name:
        raise ValueError(f"--name {name!r}: give a file name stem (no folders, not starting with '.')")
    check_source(calib, "--calib")
    if holdout is not None:
        check_source(holdout, "--holdout")
    output_folder(out_dir, create=False)
    if timing_cache is not None:
        output_file(timing_cache, option="--timing-cache")
    if target == "trt":  # before any work: engines are built where TensorRT is
        from edgehdr.infer.trt import import_tensorrt

        import_tensorrt()
    shapes = overrides(shapes)
    steps = 3 + (precision == "int8") + (target == "trt")
    progress = progress or Progress(steps)
    import onnx

    info = check_model(model)
    custom = f"; custom-domain ops {', '.join(info['custom_ops'])}" if info["custom_ops"] else ""
    progress.step(f"checked {model.name}: opset {info['opset']}, {info['nodes']} nodes, ops {', '.join(info['ops'])}"
                  f"{custom}")
    source = onnx.load(str(model))
    command = f"build --precision {precision}" + (" --target trt" if target == "trt" else "")
    if precision != "fp32" or target == "trt":  # calibration, validation and engines feed the model tensors
        refuse_custom_ops(source, model, f"{command} runs the model in ONNX Runtime (calibration, validation)")
    if shapes:
        source = fix_input_shapes(source, shapes, label=model)
    if precision != "fp32" or target == "trt" or dla_core is not None:
        for v in model_inputs(source):
            static_shape(v, label=model, why=command)
    with staged_outputs(out_dir, name) as stage:
        if shapes:
            shaped = stage / f".{name}.shaped.onnx"  # a dot-file: an intermediate, not published
            shaped.write_bytes(source.SerializeToString())
            model_for_build = shaped
        else:
            model_for_build = model
        result = _build_staged(model, model_for_build, stage, out_dir, precision=precision, calib=calib,
                               calib_count=calib_count, holdout=holdout, holdout_count=holdout_count, method=method,
                               target=target, dla_core=dla_core, workspace_mb=workspace_mb,
                               timing_cache=timing_cache, quantiser=quantiser, strongly_typed=strongly_typed,
                               shapes=shapes, name=name, version=version, progress=progress)
    return result


def _build_staged(model, source, stage, out_dir, *, precision, calib, calib_count, holdout, holdout_count, method,
                  target, dla_core, workspace_mb, timing_cache, quantiser, strongly_typed, shapes, name, version,
                  progress) -> dict:
    """``build``'s work, every file written into ``stage``; paths in the result are those in ``out_dir``."""
    import onnx

    from edgehdr.infer.manifest import Manifest, sha256_file
    from export.checks import check_model, io_specs, simplify
    from export.strict_json import save_manifest

    def final(path) -> Path:
        return out_dir / Path(path).name

    fp32 = stage / f"{name}.fp32.onnx"
    slim = simplify(source, fp32)
    if not slim["simplified"]:
        from edgehdr.io.atomic import write_bytes_atomic

        write_bytes_atomic(fp32, Path(source).read_bytes())
    check_model(fp32, require_static=dla_core is not None)
    progress.step(f"simplified: {slim.get('nodes_before', '?')} -> {slim.get('nodes_after', '?')} nodes")
    source_sha = sha256_file(model)
    specs = io_specs(onnx.load(str(fp32)))
    result: dict = {"model": name, "precision": precision, "fp32_onnx": str(final(fp32))}
    flags = {"input_shapes": {k: list(v) for k, v in shapes.items()}} if shapes else {}

    def manifest(path, prec, **extra):
        save_manifest(Manifest(model_name=name, model_version=version, artefact=Path(path).name, format="onnx",
                               precision=prec, source_onnx_sha256=source_sha, inputs=specs["inputs"],
                               outputs=specs["outputs"], created=_now(), **extra), Manifest.path_for(path))

    def checked_validation(candidate, base, data):
        report = validate(fp32, candidate, data=data, count=holdout_count, out_base=stage / base, quiet=True)
        report["files"] = [str(final(f)) for f in report.get("files", [])]
        return report

    manifest(fp32, "fp32", build_flags={"simplified": slim, **flags})
    converted, calibration = fp32, {}
    if precision == "fp16":
        from export.precision import to_fp16

        converted = stage / f"{name}.fp16.onnx"
        result["fp16"] = to_fp16(fp32, converted)
    elif precision == "int8":
        from export.calibration import CalibrationReader, model_feeds
        from export.precision import quantize_int8
        from export.trt_check import check_qdq_for_tensorrt

        feeds, described = model_feeds(fp32, calib, calib_count, role="calibration")
        progress.step(f"calibration data: {described['samples']} samples ({described['source']}, "
                      f"{described['preprocess']})")
        converted = stage / f"{name}.int8.onnx"
        t0 = time.perf_counter()
        calibration = quantize_int8(fp32, converted, CalibrationReader(feeds, described), method=method,
                                    backend=quantiser)
        calibration["data"] = described
        calibration["seconds"] = round(time.perf_counter() - t0, 2)
        problems = check_qdq_for_tensorrt(converted, float_nodes=calibration.get("kept_float", ()))
        if problems:
            raise ValueError(f"{final(converted)}: the Q/DQ model is not fit for TensorRT: " + "; ".join(problems))
        result["tensorrt_qdq_check"] = "passed"
    report = None
    if converted != fp32:
        report = checked_validation(converted, f"{name}.{precision}.validation",
                                    holdout or (calib if calib != "synth" else "synth"))
        manifest(converted, precision, calibration=calibration, accuracy_vs_fp32=report, build_flags=flags)
        result["accuracy_vs_fp32"] = report
    progress.step(f"wrote {converted.name}" + (f": {_budget_line(report)}" if report else ""))
    result["onnx"] = str(final(converted))
    if target == "trt":
        from export.trt_build import build_engine, engine_source

        engine_onnx, typed = engine_source(fp32, converted, precision, strongly_typed)
        engine = build_engine(engine_onnx, stage, precision=precision, strongly_typed=typed,
                              workspace_mb=workspace_mb, dla_core=dla_core, timing_cache=timing_cache,
                              model_name=name, model_version=version, calibration=calibration,
                              source_onnx_sha256=source_sha)
        progress.step(f"built {engine.name}")
        eng_report = checked_validation(engine, f"{name}.{precision}.engine.validation", holdout or "synth")
        m = Manifest.load(Manifest.path_for(engine))
        m.accuracy_vs_fp32 = eng_report
        m.build_flags.update(flags)
        save_manifest(m, Manifest.path_for(engine))
        result.update(engine=str(final(engine)), engine_accuracy_vs_fp32=eng_report)
    return result


def _budget_line(report: dict) -> str:
    parts = []
    for out, r in report["outputs"].items():
        psnr = "" if r.get("scalar") else f" PSNR {r['psnr_db']:.1f} dB,"
        parts.append(f"{out}{psnr} max abs {r['max_abs_error']:.3g}")
    if report["budget"].get("kind") == "task":
        parts.append(report["budget"]["rule"])
    return "; ".join(parts) + f" -> {'within' if report['budget']['passed'] else 'OUTSIDE'} budget"


# ------------------------------------------------------------------------------------------------------- validate
def _open(path, providers="cpu"):
    path = Path(path)
    if path.suffix == ".engine":
        from edgehdr.infer.trt import TensorRTRunner

        return TensorRTRunner(path).load()
    from edgehdr.infer.ort import OnnxRuntimeRunner

    return OnnxRuntimeRunner(path, providers=providers).load()


def spearman(a, b) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    import numpy as np

    def ranks(x):
        x = np.asarray(x, np.float64).ravel()
        order = np.argsort(x, kind="stable")
        r = np.empty(len(x))
        r[order] = np.arange(len(x), dtype=np.float64)
        for value in np.unique(x):  # average ties
            tie = x == value
            r[tie] = r[tie].mean()
        return r

    ra, rb = ranks(a), ranks(b)
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _task_metric(ref_outputs, cand_outputs) -> dict:
    """Scores (outputs of <= 4 values per sample): does the converted model rank samples like FP32 (SROCC)?"""
    import numpy as np

    task = {}
    for name in ref_outputs[0]:
        if np.asarray(ref_outputs[0][name]).size <= 4 and len(ref_outputs) >= 3:
            ref = [float(np.asarray(r[name]).ravel()[0]) for r in ref_outputs]
            cand = [float(np.asarray(c[name]).ravel()[0]) for c in cand_outputs]
            task[f"{name}_srocc_vs_fp32"] = spearman(ref, cand)
    return task


def apply_budget(report: dict, *, psnr_db: float = PSNR_BUDGET_DB, max_abs: float = ABS_BUDGET,
                 task_budget=None) -> dict:
    """Image outputs need PSNR >= ``psnr_db`` against FP32; scalar outputs max |error| <= ``max_abs``.

    A model with a task (``export.tasks``) is held to its task's budget instead: what the
    stage produces from the outputs (e.g. the tone-mapped frame), not the raw outputs.
    """
    if task_budget is not None:
        checks = task_budget(report["task"])
        report["budget"] = {"rule": "; ".join(c[0] for c in checks), "passed": all(c[1] for c in checks),
                            "kind": "task"}
        return report
    checks = []
    for name, r in report["outputs"].items():
        if r.get("scalar"):
            checks.append((f"{name}: max abs error {r['max_abs_error']:.3g} <= {max_abs}", r["max_abs_error"] <= max_abs))
        else:
            checks.append((f"{name}: PSNR {r['psnr_db']:.2f} dB >= {psnr_db}", r["psnr_db"] >= psnr_db))
    report["budget"] = {"rule": "; ".join(c[0] for c in checks), "passed": all(c[1] for c in checks),
                        "psnr_db_min": psnr_db, "max_abs_error_max": max_abs}
    return report


def validate(reference, candidate, *, data: str = "synth", count: int = 16, out_base=None,
             psnr_db: float = PSNR_BUDGET_DB, max_abs: float = ABS_BUDGET, quiet: bool = False, shapes=None) -> dict:
    """FP32 ``reference`` vs ``candidate`` on held-out data; report (and ``out_base``.json/.md) with the budget.

    ``shapes`` (``{input: dims}``, ``export.shapes``) fixes the dynamic input dimensions of the held-out feeds.
    """
    from export.calibration import check_source, model_feeds
    from export.checks import load_model, refuse_custom_ops, require_engine
    from export.staging import output_file
    from export.tasks import task_for
    from export.validate import compare_runners, write_report

    why = "validation runs it in ONNX Runtime"
    refuse_custom_ops(load_model(reference, what="FP32 ONNX model", check=True), reference, why)
    if Path(candidate).suffix == ".engine":
        require_engine(candidate)
    else:
        refuse_custom_ops(load_model(candidate, check=True), candidate, why)
    check_source(data, "--data")
    if out_base is not None:
        output_file(out_base, option="-o")
    feeds, described, items = model_feeds(reference, data, count, role="holdout", with_items=True, shapes=shapes)
    task = task_for(described["preprocess"])

    def metric(ref_outputs, cand_outputs):
        result = _task_metric(ref_outputs, cand_outputs)
        if task is not None:
            result.update(task["metric"](items, ref_outputs, cand_outputs))
        return result

    ref, cand = _open(reference), _open(candidate)
    try:
        report = compare_runners(ref, cand, feeds, task_metric=metric)
    finally:
        ref.close()
        cand.close()
    for r in report["outputs"].values():
        r["scalar"] = bool(int(r.get("elements", 0)) <= 4)
    report["data"] = described
    report["reference"], report["candidate"] = Path(reference).name, Path(candidate).name
    apply_budget(report, psnr_db=psnr_db, max_abs=max_abs, task_budget=task["budget"] if task else None)
    if out_base is not None:
        report["files"] = [str(p) for p in write_report(report, out_base, title=f"{Path(candidate).name} vs "
                                                                              f"{Path(reference).name}")]
    if not quiet:
        print(_budget_line(report))
    return report


# ---------------------------------------------------------------------------------------------------------- bench
def _artefacts(target) -> list[Path]:
    target = Path(target)
    if target.is_dir():
        found = sorted(p for p in target.iterdir() if p.suffix in (".onnx", ".engine") and not p.name.startswith("."))
        if not found:
            raise ValueError(f"{target}: no .onnx or .engine files")
        return found
    if not target.is_file():
        raise FileNotFoundError(f"{target}: no such model, engine or folder")
    return [target]


def _backends_for(path: Path) -> list[tuple[str, object]]:
    """(label, factory) for every backend present that can run ``path``."""
    if path.suffix == ".engine":
        from edgehdr.infer.trt import TensorRTRunner

        return [("tensorrt", lambda: TensorRTRunner(path))]
    import onnxruntime as ort

    from edgehdr.infer.ort import OnnxRuntimeRunner

    out = [("ort-cpu", lambda: OnnxRuntimeRunner(path, providers="cpu"))]
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


def _time_runs(fn, runs: int, warmup: int) -> dict:
    import numpy as np

    for _ in range(warmup):
        fn()
    times = []
    t_start = time.perf_counter()
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    total_s = time.perf_counter() - t_start
    t = np.asarray(times)
    return {"median_ms": float(np.median(t)), "p90_ms": float(np.percentile(t, 90)),
            "p99_ms": float(np.percentile(t, 99)), "throughput_per_s": runs / total_s, "runs": runs}


def _bench_inputs(artefacts, shapes) -> None:
    """Refuse unreadable artefacts, and ``--shape`` names no benchmarked ONNX model has, before timing anything."""
    from export.checks import load_model, require_engine
    from export.shapes import model_inputs

    names = set()
    for path in artefacts:
        if path.suffix == ".onnx":
            names |= {v.name for v in model_inputs(load_model(path, check=True))}
        else:
            require_engine(path)
    unknown = sorted(set(shapes) - names)
    if unknown and all(p.suffix == ".onnx" for p in artefacts):
        raise ValueError(f"--shape for {unknown}, but the inputs of the models are {sorted(names)}")


def bench(target, *, runs: int = 50, warmup: int = 5, threads: int = 0, opencv: bool = True,
          shapes=None) -> list[dict]:
    """Latency and throughput of every artefact under every backend present, with OpenCV DNN on FP32 ONNX
    models as the independent baseline measured in the same run (ratio = OpenCV median / this median).
    ``shapes`` (``{input: dims}``, ``export.shapes``) fixes dynamic input dimensions of the random feeds."""
    import numpy as np

    from export.shapes import overrides, resolve_shape

    rows = []
    rng = np.random.default_rng(0)
    shapes = overrides(shapes)
    artefacts = _artefacts(target)
    _bench_inputs(artefacts, shapes)
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
                ins = runner.describe()["inputs"]
                dims = {i["name"]: i["shape"] for i in ins} if isinstance(ins, list) else dict(ins)
                feed = {n: rng.random(resolve_shape(n, d, shapes, label=path, why="bench"), dtype=np.float32)
                        for n, d in dims.items()}
                stats = _time_runs(lambda runner=runner, feed=feed: runner.run(feed), runs, warmup)
            finally:
                runner.close()
            rows.append({"artefact": path.name, "backend": label, **stats})
        if opencv and path.suffix == ".onnx" and ".int8." not in path.name and ".fp16." not in path.name:
            import cv2

            try:
                net = cv2.dnn.readNetFromONNX(str(path))
            except cv2.error as exc:
                rows.append({"artefact": path.name, "backend": "opencv-dnn", "error": str(exc).splitlines()[0]})
                continue
            x = rng.random(_first_input_shape(path, shapes), dtype=np.float32)

            def cv_run(net=net, x=x):
                net.setInput(x)
                return net.forward()

            rows.append({"artefact": path.name, "backend": "opencv-dnn", **_time_runs(cv_run, runs, warmup)})
    baseline = {r["artefact"].split(".")[0]: r["median_ms"] for r in rows if r["backend"] == "opencv-dnn"
                and "median_ms" in r}
    for r in rows:
        base = baseline.get(r["artefact"].split(".")[0])
        if base and "median_ms" in r:
            r["speedup_vs_opencv_dnn"] = base / r["median_ms"]
    return rows


def _first_input_shape(path, shapes=None) -> list[int]:
    import onnx

    from export.checks import io_specs
    from export.shapes import resolve_shape

    spec = io_specs(onnx.load(str(path)))["inputs"][0]
    return resolve_shape(spec["name"], spec["shape"], shapes, label=path, why="bench")


def _print_bench(rows) -> None:
    print(f"{'artefact':<34} {'backend':<11} {'median ms':>9} {'p90 ms':>8} {'p99 ms':>8} {'per s':>8} "
          f"{'x OpenCV':>8}")
    for r in rows:
        if "error" in r:
            print(f"{r['artefact']:<34} {r['backend']:<11} unavailable: {r['error']}")
            continue
        ratio = r.get("speedup_vs_opencv_dnn")
        print(f"{r['artefact']:<34} {r['backend']:<11} {r['median_ms']:>9.3f} {r['p90_ms']:>8.3f} "
              f"{r['p99_ms']:>8.3f} {r['throughput_per_s']:>8.1f} {'' if ratio is None else f'{ratio:.2f}':>8}")


# -------------------------------------------------------------------------------------------------------- inspect
def inspect(path) -> dict:
    """What a model or engine expects (I/O names, shapes, dtypes) and what it was built for (its manifest)."""
    from edgehdr.infer.manifest import Manifest
    from export.checks import custom_ops, io_specs, load_model, require_engine

    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; expected a .onnx model or a .engine file")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such model or engine")
    if path.suffix not in (".onnx", ".engine"):
        raise ValueError(f"{path}: expected a .onnx model or a .engine file")
    model = load_model(path) if path.suffix == ".onnx" else require_engine(path)
    info: dict = {"file": str(path), "bytes": path.stat().st_size}
    manifest_path = Manifest.path_for(path)
    if manifest_path.is_file():
        info["manifest"] = dataclasses.asdict(Manifest.load(manifest_path))
    if path.suffix == ".onnx":
        from export.calibration import preprocessing_of
        from export.trt_check import check_qdq_for_tensorrt

        ops: dict[str, int] = {}
        for n in model.graph.node:
            ops[n.op_type] = ops.get(n.op_type, 0) + 1
        info.update(io_specs(model))
        info["opset"] = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
        info["ops"] = ops
        info["preprocess"] = preprocessing_of(model)
        info["metadata"] = {p.key: p.value for p in model.metadata_props}
        info["custom_ops"] = custom_ops(model)
        if ops.get("QuantizeLinear") or ops.get("DequantizeLinear"):
            info["tensorrt_qdq_check"] = check_qdq_for_tensorrt(model) or "passed"
    else:
        try:
            import tensorrt as trt
        except ImportError:
            info["engine_io"] = "TensorRT is not installed here; the manifest above says what the engine expects"
        else:
            engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                info["engine_io"] = f"TensorRT {trt.__version__} cannot deserialise it (built elsewhere?)"
            else:
                info["engine_io"] = [{"name": engine.get_tensor_name(i),
                                      "mode": str(engine.get_tensor_mode(engine.get_tensor_name(i))),
                                      "shape": list(engine.get_tensor_shape(engine.get_tensor_name(i))),
                                      "dtype": str(engine.get_tensor_dtype(engine.get_tensor_name(i)))}
                                     for i in range(engine.num_io_tensors)]
    return info


# ----------------------------------------------------------------------------------------------------------- main
class _Parser(argparse.ArgumentParser):
    """Usage errors in one line (which argument, what it takes), exit status 2 as argparse has it."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int_at_least(lo: int):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {text!r}") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"expected an integer >= {lo}, got {value}")
        return value

    return parse


def _finite_float(text):
    import math

    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"expected a finite number, got {text!r}")
    return value


def _shape(text):
    from export.shapes import parse_shape

    try:
        return parse_shape(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _add_shape(p) -> None:
    p.add_argument("--shape", action="append", type=_shape, default=None, metavar="NAME:DIMS",
                   help="fix a dynamic input, e.g. image:1x3x64x64 (repeat per input; as trtexec --shapes)")


def _parser() -> argparse.ArgumentParser:
    positive, non_negative = _int_at_least(1), _int_at_least(0)
    parser = _Parser(prog="edgehdr-export", description=__doc__.split("\n\n")[0])
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("build", help="check, convert (fp16/int8 Q/DQ), validate, build a TensorRT engine")
    p.add_argument("model", type=Path)
    p.add_argument("--precision", choices=("fp32", "fp16", "int8"), default="fp32")
    p.add_argument("--calib", default="synth", help="'synth' or a folder of .exr/.hdr/.pfm (or bracket folders)")
    p.add_argument("--calib-count", type=positive, default=64)
    p.add_argument("--holdout", default=None, help="held-out data for validation (default: disjoint from --calib)")
    p.add_argument("--holdout-count", type=positive, default=16)
    p.add_argument("--method", choices=("auto", "minmax", "entropy", "percentile"), default="auto",
                   help="calibration; auto tries all three and keeps the closest to FP32 on calibration data")
    p.add_argument("--quantiser", choices=("onnxruntime", "modelopt"), default="onnxruntime")
    p.add_argument("--target", choices=("onnx", "trt"), default="onnx")
    p.add_argument("--dla", type=non_negative, default=None, metavar="CORE",
                   help="build for a DLA core (GPU fallback on)")
    p.add_argument("--workspace-mb", type=positive, default=1024)
    p.add_argument("--timing-cache", type=Path, default=None)
    p.add_argument("--strongly-typed", action=argparse.BooleanOptionalAction, default=None,
                   help="TensorRT typing (default: weak with precision flags on TensorRT 10, strong on 11+)")
    _add_shape(p)
    p.add_argument("--name", default=None)
    p.add_argument("--model-version", default="0")
    p.add_argument("-o", "--out", type=Path, required=True, help="output folder (created if its parent exists)")

    p = sub.add_parser("validate", help="FP32 vs converted model or engine on held-out data (markdown + JSON)")
    p.add_argument("reference", type=Path)
    p.add_argument("candidate", type=Path)
    p.add_argument("--data", default="synth")
    p.add_argument("--count", type=positive, default=16)
    p.add_argument("--psnr-budget", type=_finite_float, default=PSNR_BUDGET_DB)
    p.add_argument("--abs-budget", type=_finite_float, default=ABS_BUDGET)
    _add_shape(p)
    p.add_argument("-o", "--out", type=Path, default=None, help="report base path (writes .json and .md)")

    p = sub.add_parser("bench", help="latency and throughput per backend and precision (vs OpenCV DNN)")
    p.add_argument("target", type=Path, help="a model, an engine, or a folder of them")
    p.add_argument("--runs", type=positive, default=50)
    p.add_argument("--warmup", type=non_negative, default=5)
    p.add_argument("--threads", type=non_negative, default=0, help="ONNX Runtime intra-op threads (0 = default)")
    _add_shape(p)
    p.add_argument("--json", type=Path, default=None)

    p = sub.add_parser("device-suite", help="on the Jetson: build all zoo engines, validate vs ONNX Runtime, "
                                            "print the table")
    p.add_argument("--precisions", default="fp16,int8")
    p.add_argument("--dla", type=non_negative, default=None, metavar="CORE")
    p.add_argument("--runs", type=positive, default=100)
    p.add_argument("--models", type=Path, nargs="*", default=None, help="default: edgehdr/models + test nets")
    p.add_argument("-o", "--out", type=Path, required=True)

    p = sub.add_parser("inspect", help="what a model or engine expects and what it was built for")
    p.add_argument("path", type=Path)
    return parser


def _input_errors() -> tuple:
    """Exceptions that mean a bad input (file, argument, environment), reported in one line with exit status 2;
    anything else is a bug and keeps its traceback."""
    import onnx
    from google.protobuf.message import DecodeError

    errors = [ValueError, OSError, RuntimeError, DecodeError, onnx.checker.ValidationError,
              onnx.shape_inference.InferenceError]
    try:
        from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors
    except ImportError:
        return tuple(errors)
    return tuple(errors + [ort_errors.Fail, ort_errors.InvalidArgument, ort_errors.InvalidGraph,
                           ort_errors.InvalidProtobuf, ort_errors.NoSuchFile])


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    if not args.verbose:
        logging.getLogger().setLevel(logging.ERROR)  # ORT's quantiser logs every tensor at WARNING
    try:
        return _run(args)
    except _input_errors() as exc:
        message = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
        print(f"edgehdr-export {args.command}: error: {message}", file=sys.stderr)
        return 2


def _run(args) -> int:
    from edgehdr.io import dumps_json, write_json_atomic
    from export.staging import output_file
    from export.strict_json import null_undefined

    if args.command == "build":
        result = build(args.model, args.out, precision=args.precision, calib=args.calib,
                       calib_count=args.calib_count, holdout=args.holdout, holdout_count=args.holdout_count,
                       method=args.method, target=args.target, dla_core=args.dla, workspace_mb=args.workspace_mb,
                       timing_cache=args.timing_cache, quantiser=args.quantiser,
                       strongly_typed=args.strongly_typed, shapes=args.shape, name=args.name,
                       version=args.model_version)
        for key in ("fp32_onnx", "onnx", "engine"):
            if key in result:
                print(f"{key}: {result[key]}")
        report = result.get("engine_accuracy_vs_fp32") or result.get("accuracy_vs_fp32")
        return 0 if report is None or report["budget"]["passed"] else 1
    if args.command == "validate":
        report = validate(args.reference, args.candidate, data=args.data, count=args.count, out_base=args.out,
                          psnr_db=args.psnr_budget, max_abs=args.abs_budget, shapes=args.shape)
        return 0 if report["budget"]["passed"] else 1
    if args.command == "bench":
        if args.json:
            output_file(args.json, option="--json")
        rows = bench(args.target, runs=args.runs, warmup=args.warmup, threads=args.threads, shapes=args.shape)
        _print_bench(rows)
        if args.json:
            write_json_atomic(args.json, null_undefined(rows))
        return 0
    if args.command == "device-suite":
        from export.device_suite import run_device_suite

        result = run_device_suite(args.out, precisions=tuple(args.precisions.split(",")), dla_core=args.dla,
                                  runs=args.runs, models=args.models)
        return 0 if all(r.get("within_budget") for r in result["rows"]) else 1
    print(dumps_json(null_undefined(inspect(args.path)), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
