"""``edgehdr-export build``: check, simplify, convert (FP16 / INT8 Q/DQ), validate against FP32, build an engine.

The arguments are checked before any work (data sources, output paths, custom
ops, static input shapes, TensorRT present for ``target='trt'``); the work then
runs inside a staging folder (``export.staging``) so the output folder gets all
of a build's files or none of them.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from export.validate import budget_line, refuse_unused_user_budget, validate

if TYPE_CHECKING:
    from edgehdr.infer.base import PathLike
    from edgehdr.progress import Progress
    from export.shapes import ShapeOverrides

__all__ = ["build"]


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())



def build(model: PathLike, out_dir: PathLike, *, precision: str = "fp32", calib: PathLike = "synth",
          calib_count: int = 64, holdout: PathLike | None = None, holdout_count: int = 16, method: str = "auto",
          target: str = "onnx", dla_core: int | None = None, workspace_mb: int = 1024,
          timing_cache: PathLike | None = None, quantiser: str = "onnxruntime", strongly_typed: bool | None = None,
          shapes: ShapeOverrides | None = None, name: str | None = None, version: str = "0",
          progress: Progress | None = None,
          cosine: float | None = None, rel_l2: float | None = None) -> dict[str, Any]:
    """Check, simplify, convert (FP16 / INT8 Q/DQ), validate against FP32 and optionally build an engine.

    Writes into ``out_dir``: ``NAME.fp32.onnx`` (checked, simplified), ``NAME.fp16.onnx`` or
    ``NAME.int8.onnx``, a manifest next to each, ``NAME.PRECISION.validation.{json,md}`` and for
    ``target='trt'`` ``NAME.PRECISION.engine`` with its manifest. All or nothing: the files are
    written into a hidden staging folder and moved into place when the whole build succeeded
    (``export.staging``). ``shapes`` (``{input: dims}`` or ``'NAME:1x3x64x64'`` strings) fixes
    dynamic input dimensions in ``NAME.fp32.onnx``; every step that feeds the model (calibration,
    validation, an engine) needs them static. Returns what it wrote and measured.

    ``calib`` and ``holdout``: 'synth', a folder (HDR images, bracket folders, or ``.npz``/``.npy``
    tensors for anyone's model) or a data-loader hook ``MODULE:FUNCTION`` / ``FILE.py:FUNCTION``
    (``export.calibration``). Without ``holdout``, validation uses ``calib``'s held-out part (every
    fifth item), or disjoint synthetic scenes; with it, each source is used whole, and the same
    folder or hook for both is refused. Models validated on user tensors are held to
    ``cosine`` and ``rel_l2`` against FP32 (``export.validate.apply_budget``).
    """
    from edgehdr.io.staging import output_file, output_folder, staged_outputs
    from edgehdr.progress import Progress
    from export.calibration import check_source, is_tensor_source, same_source
    from export.checks import check_model, refuse_custom_ops
    from export.shapes import fix_input_shapes, model_inputs, overrides, static_shape

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
        if same_source(calib, holdout):
            raise ValueError(f"--calib {calib} and --holdout {holdout} are the same data, so validation would run on "
                             "the calibration samples themselves: give --holdout other data, or leave it out to "
                             "hold every fifth sample of --calib out")
    held_out, data_option = (holdout, "--holdout") if holdout is not None else (calib, "--calib")
    refuse_unused_user_budget(cosine, rel_l2, user_data=is_tensor_source(held_out), option=data_option,
                              data=held_out)  # before the calibration and quantisation validate() comes after
    output_folder(out_dir, create=False)
    if timing_cache is not None:
        output_file(timing_cache, option="--timing-cache")
    if dla_core is not None and precision == "fp32":
        raise ValueError(f"--dla {dla_core} with --precision fp32: the DLA runs FP16 and INT8 only, so every layer "
                         "would fall back to the GPU; give --precision fp16 or int8")
    if target == "trt":  # before any work: engines are built where TensorRT is, and checked through pycuda
        from edgehdr.infer.cuda_buffers import device_properties
        from edgehdr.infer.trt import import_tensorrt

        import_tensorrt()
        device_properties(0)  # BackendUnavailable without pycuda or a CUDA device: the manifest needs both
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
                               shapes=shapes, name=name, version=version, progress=progress, cosine=cosine,
                               rel_l2=rel_l2)
    return result


def _build_staged(model: Path, source: Path, stage: Path, out_dir: Path, *, precision: str, calib: PathLike,
                  calib_count: int, holdout: PathLike | None, holdout_count: int, method: str, target: str,
                  dla_core: int | None, workspace_mb: int, timing_cache: PathLike | None, quantiser: str,
                  strongly_typed: bool | None, shapes: dict[str, tuple[int, ...]], name: str, version: str,
                  progress: Progress, cosine: float | None, rel_l2: float | None) -> dict[str, Any]:
    """``build``'s work, every file written into ``stage``; paths in the result are those in ``out_dir``."""
    import onnx

    from edgehdr.infer.manifest import Manifest, sha256_file
    from export.checks import check_model, io_specs, simplify
    from export.strict_json import save_manifest

    def final(path: PathLike) -> Path:
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
    result: dict[str, Any] = {"model": name, "precision": precision, "fp32_onnx": str(final(fp32))}
    flags = {"input_shapes": {k: list(v) for k, v in shapes.items()}} if shapes else {}

    def manifest(path: Path, prec: str, **extra: Any) -> None:
        save_manifest(Manifest(model_name=name, model_version=version, artefact=Path(path).name, format="onnx",
                               precision=prec, source_onnx_sha256=source_sha, inputs=specs["inputs"],
                               outputs=specs["outputs"], created=_now(), **extra), Manifest.path_for(path))

    # one source for both roles: its every fifth sample held out; an explicit --holdout (never the --calib source,
    # build() refused that) is used whole, and so is --calib then
    held_out = holdout if holdout is not None else calib
    split, data_option = holdout is None, "--holdout" if holdout is not None else "--calib"

    def checked_validation(candidate: Path, base: str) -> dict[str, Any]:
        report = validate(fp32, candidate, data=held_out, count=holdout_count, out_base=stage / base, quiet=True,
                          cosine=cosine, rel_l2=rel_l2, split=split, option=data_option)
        report["files"] = [str(final(f)) for f in report.get("files", [])]
        return report

    manifest(fp32, "fp32", build_flags={"simplified": slim, **flags})
    converted = fp32
    calibration: dict[str, Any] = {}
    if precision == "fp16":
        from export.precision import to_fp16

        converted = stage / f"{name}.fp16.onnx"
        result["fp16"] = to_fp16(fp32, converted)
    elif precision == "int8":
        from export.calibration import CalibrationReader, model_feeds
        from export.precision import quantize_int8
        from export.trt_check import check_qdq_for_tensorrt

        feeds, described = model_feeds(fp32, calib, calib_count, role="calibration", split=holdout is None,
                                       option="--calib")
        kind = described.get("format", "") if described["preprocess"] == "none" else described["preprocess"]
        progress.step(f"calibration data: {described['samples']} samples ({described['source']}, {kind})")
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
    report: dict[str, Any] | None = None
    if converted != fp32:
        report = checked_validation(converted, f"{name}.{precision}.validation")
        manifest(converted, precision, calibration=calibration, accuracy_vs_fp32=report, build_flags=flags)
        result["accuracy_vs_fp32"] = report
    progress.step(f"wrote {converted.name}" + (f": {budget_line(report)}" if report else ""))
    result["onnx"] = str(final(converted))
    if target == "trt":
        from export.trt_build import build_engine, engine_source

        engine_onnx, typed = engine_source(fp32, converted, precision, strongly_typed)
        engine = build_engine(engine_onnx, stage, precision=precision, strongly_typed=typed,
                              workspace_mb=workspace_mb, dla_core=dla_core, timing_cache=timing_cache,
                              model_name=name, model_version=version, calibration=calibration,
                              source_onnx_sha256=source_sha)
        progress.step(f"built {engine.name}")
        eng_report = checked_validation(engine, f"{name}.{precision}.engine.validation")
        m = Manifest.load(Manifest.path_for(engine))
        m.accuracy_vs_fp32 = eng_report
        m.build_flags.update(flags)
        save_manifest(m, Manifest.path_for(engine))
        result.update(engine=str(final(engine)), engine_accuracy_vs_fp32=eng_report)
    return result
