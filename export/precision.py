"""Precision conversion: FP16 (sensitive ops kept in FP32) and explicit Q/DQ INT8 post-training quantisation.

INT8 follows what TensorRT's explicit quantisation expects: symmetric int8 for
activations and weights (zero point 0), weights per output channel, Q/DQ on the
inputs of Conv/ConvTranspose/Gemm/MatMul and of (residual) Add, none on Resize
(each quantised consumer gets its own Q/DQ pair, so a Resize reads the float
tensor), biases left in float (TensorRT fuses them). ONNX Runtime's static
quantiser does the work; calibration is MinMax, Entropy or Percentile. NVIDIA
ModelOpt's ONNX PTQ (``modelopt.onnx.quantization``) is used instead when asked
for and installed.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx

from export.checks import topological_sort

# QUANTISED_OPS: ops whose inputs get Q/DQ pairs (TensorRT runs them in INT8); everything else reads float.
from export.trt_check import QUANTISED_OPS

if TYPE_CHECKING:
    from edgehdr.infer.base import PathLike
    from export.calibration import CalibrationReader

__all__ = ["to_fp16", "quantize_int8", "scalar_heads", "constant_adds", "CALIBRATION_METHODS", "QUANTISED_OPS",
           "FP16_KEEP_FP32"]

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
# Ops whose range or precision FP16 tends to break; they stay in FP32 with casts around them.
FP16_KEEP_FP32 = ["Exp", "Log", "Pow", "Sqrt", "Reciprocal", "Div", "ReduceMean", "ReduceSum", "ReduceProd",
                  "Softmax", "LogSoftmax", "InstanceNormalization", "LayerNormalization", "Resize", "Range",
                  "CumSum", "TopK", "NonMaxSuppression", "RandomNormalLike", "RandomUniformLike"]


def to_fp16(path_in: PathLike, path_out: PathLike, *, keep_fp32: Iterable[str] | None = None) -> dict[str, Any]:
    """FP16 weights and compute with FP32 inputs/outputs; ``keep_fp32`` ops (default ``FP16_KEEP_FP32``) stay FP32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from edgehdr.io.atomic import write_bytes_atomic

    block = list(FP16_KEEP_FP32 if keep_fp32 is None else keep_fp32)
    model = convert_float_to_float16(onnx.load(str(path_in)), keep_io_types=True, op_block_list=block)
    topological_sort(model)  # the converter appends its input casts after their consumers
    onnx.checker.check_model(model)
    write_bytes_atomic(path_out, model.SerializeToString())
    return {"precision": "fp16", "kept_fp32_ops": sorted({n.op_type for n in onnx.load(str(path_in)).graph.node}
                                                        & set(block))}


def quantize_int8(path_in: PathLike, path_out: PathLike, reader: CalibrationReader, *, method: str = "entropy",
                  percentile: float = 99.999, per_channel: bool = True, backend: str = "onnxruntime",
                  keep_float: str | Sequence[str] = "auto") -> dict[str, Any]:
    """Explicit Q/DQ INT8 model from a calibration reader; returns a description for the manifest.

    ``method``: minmax, entropy, percentile, or auto (each tried, the closest to FP32 on
    the calibration data kept; see ``_quantize_auto``).

    ``keep_float``: names of nodes left unquantised (TensorRT runs them in FP16/FP32), as they
    are named after ONNX Runtime's pre-processing (``quant_pre_process``); a name missing from
    the quantised graph is an error. 'auto' keeps score heads (``scalar_heads``) and adds of a
    constant (``constant_adds``, an output's affine range mapping) in float, found on the
    pre-processed graph; ``()`` quantises everything.
    """
    if isinstance(keep_float, str) and keep_float != "auto":
        raise ValueError(f"keep_float must be 'auto' or a list of node names, got {keep_float!r}")
    if backend == "modelopt":
        if isinstance(keep_float, str):
            keep_float = scalar_heads(path_in) + constant_adds(path_in)
        return _quantize_modelopt(Path(path_in), Path(path_out), reader, method, keep_float)
    if method == "auto":
        return _quantize_auto(path_in, path_out, reader, percentile=percentile, per_channel=per_channel,
                              backend=backend, keep_float=keep_float)
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; use one of auto, {', '.join(CALIBRATION_METHODS)}")
    path_in, path_out = Path(path_in), Path(path_out)
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    cal = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
           "percentile": CalibrationMethod.Percentile}[method]
    extra = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False, "DedicatedQDQPair": True,
             "QDQOpTypePerChannelSupportToAxis": {"ConvTranspose": 1},
             # Q/DQ on the inputs of quantised ops only (TensorRT's placement): an output is quantised by its
             # consumer, so a Resize or activation between two convolutions reads and writes float.
             "OpTypesToExcludeOutputQuantization": list(QUANTISED_OPS)}
    if method == "percentile":
        extra["CalibPercentile"] = percentile
    reader.rewind()  # a reader may have fed an earlier quantisation
    pre = path_out.with_name(f".{path_out.stem}.pre.onnx")
    tmp = path_out.with_name(f".{path_out.stem}.partial.onnx")
    try:
        quant_pre_process(str(path_in), str(pre), skip_symbolic_shape=True)
        if isinstance(keep_float, str):  # 'auto': named on the graph quantize_static gets, after the pre-processing
            # has fused nodes under new names (MatMul + Add -> Gemm 'NAME/MatMulAddFusion')
            keep_float = scalar_heads(pre) + constant_adds(pre)
        if method == "entropy":
            # quantize_static builds its entropy histogram with 128 bins for 128 quantised bins, where the KL
            # search has nothing to clip and returns the min/max range. TensorRT's entropy calibration uses
            # 2048 bins; ranges computed that way enter as per-tensor overrides (public API since ORT 1.17).
            ranges = _entropy_ranges(pre, reader)
            extra["TensorQuantOverrides"] = {name: [{"rmin": np.float32(-t), "rmax": np.float32(t)}]
                                             for name, t in ranges.items()}
            cal = CalibrationMethod.MinMax
            reader.rewind()
        with contextlib.redirect_stdout(io.StringIO()):  # the calibrators print progress to stdout
            quantize_static(str(pre), str(tmp), reader, quant_format=QuantFormat.QDQ,
                            op_types_to_quantize=list(QUANTISED_OPS),
                            per_channel=per_channel, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=cal, nodes_to_exclude=list(keep_float), extra_options=extra)
        model = _float_inputs_for_float_ops(onnx.load(str(tmp)))
        present = {n.name for n in model.graph.node}
        missing = [name for name in keep_float if name not in present]
        if missing:  # nodes_to_exclude matched nothing for them: they were quantised, or never existed
            raise ValueError(f"{path_in}: nodes {missing} to keep in float are not in the quantised graph (ONNX "
                             "Runtime's pre-processing fuses nodes under new names, e.g. MatMul + Add into Gemm "
                             f"'NAME/MatMulAddFusion'); nodes there: {sorted(present)}")
        onnx.checker.check_model(model)
        from edgehdr.io.atomic import write_bytes_atomic

        write_bytes_atomic(path_out, model.SerializeToString())
    finally:
        for p in (pre, tmp):
            p.unlink(missing_ok=True)
    ranges = _activation_ranges(path_out)
    return {"precision": "int8", "format": "QDQ", "method": method, "samples": len(reader),
            "percentile": percentile if method == "percentile" else None, "per_channel": per_channel,
            "symmetric": True, "kept_float": list(keep_float), "activation_ranges": ranges}


def _float_inputs_for_float_ops(model: onnx.ModelProto) -> onnx.ModelProto:
    """Rewire ops TensorRT runs in float (Resize, activations, pooling) to read the tensor before its Q/DQ pair.

    ONNX Runtime quantises a tensor once when it feeds a quantised op and shares
    the DequantizeLinear output with every other consumer, which puts a Resize
    that reads the same tensor behind Q/DQ. Each such consumer is pointed at the
    float tensor instead; pairs left without consumers are removed.
    """
    graph = model.graph
    producer = {o: n for n in graph.node for o in n.output}
    inits = {i.name for i in graph.initializer}
    float_source = {}
    for n in graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] not in inits:
            q = producer.get(n.input[0])
            if q is not None and q.op_type == "QuantizeLinear":
                float_source[n.output[0]] = q.input[0]
    for n in graph.node:
        if n.op_type in QUANTISED_OPS or n.op_type in ("QuantizeLinear", "DequantizeLinear"):
            continue
        for k, name in enumerate(n.input):
            if name in float_source:
                n.input[k] = float_source[name]
    # A graph output that also feeds a quantised op comes out of the DequantizeLinear (ONNX Runtime renames the
    # float tensor), i.e. rounded to int8 steps though no quantised op produces it: the float tensor gets the
    # output's name back and the DequantizeLinear a new one, read by the quantised consumers only.
    graph_inputs = {i.name for i in graph.input} | inits
    taken = {name for n in graph.node for name in (*n.input, *n.output)} | graph_inputs
    rename: dict[str, str] = {}
    for out in graph.output:
        source = float_source.get(out.name)
        if source is None or source in graph_inputs:
            continue
        dq_name, k = f"{out.name}_DequantizeLinear_Output", 0
        while dq_name in taken:
            k += 1
            dq_name = f"{out.name}_DequantizeLinear_Output_{k}"
        taken.add(dq_name)
        rename[out.name] = dq_name
        rename[source] = out.name
    if rename:
        for n in graph.node:
            for seq in (n.input, n.output):
                for k, name in enumerate(seq):
                    if name in rename:
                        seq[k] = rename[name]
        for v in graph.value_info:
            if v.name in rename:
                v.name = rename[v.name]
        outputs = {o.name for o in graph.output}
        kept = [v for v in graph.value_info if v.name not in outputs]  # a graph output needs no value_info
        del graph.value_info[:]
        graph.value_info.extend(kept)
    graph_outputs = {o.name for o in graph.output}
    while True:
        used = {i for n in graph.node for i in n.input} | graph_outputs
        dead = [n for n in graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")
                and n.input[0] not in inits and not any(o in used for o in n.output)]
        if not dead:
            return model
        for n in dead:
            graph.node.remove(n)


def scalar_heads(path: PathLike) -> list[str]:
    """The last Conv/ConvTranspose/Gemm/MatMul before each output of <= 4 values (a score head).

    Its output error maps one-to-one onto the score, and it costs next to nothing in
    FP16, so ``keep_float='auto'`` leaves it unquantised: the usual PTQ practice of
    keeping a regression head in higher precision.
    """
    model = onnx.load(str(path))
    producer = {o: n for n in model.graph.node for o in n.output}
    heads = []
    for out in model.graph.output:
        dims = [d.dim_value for d in out.type.tensor_type.shape.dim]
        if not dims or any(d <= 0 for d in dims) or int(np.prod(dims)) > 4:
            continue
        stack, seen = [out.name], set()
        while stack:
            node = producer.get(stack.pop())
            if node is None or node.name in seen:
                continue
            seen.add(node.name)
            if node.op_type in QUANTISED_OPS and node.op_type != "Add":
                heads.append(node.name)
                continue
            stack.extend(i for i in node.input if i in producer)
    return sorted(set(heads))


def constant_adds(path: PathLike) -> list[str]:
    """Add nodes with a constant operand (a bias or an output's range offset, not a residual add).

    TensorRT fuses them into the neighbouring layer; quantising the constant would only
    round the offset, so ``keep_float='auto'`` leaves them in float.
    """
    model = onnx.load(str(path))
    consts = {i.name for i in model.graph.initializer}
    consts |= {o for n in model.graph.node if n.op_type == "Constant" for o in n.output}
    return sorted(n.name for n in model.graph.node if n.op_type == "Add" and any(i in consts for i in n.input))


def _quantize_auto(path_in: PathLike, path_out: PathLike, reader: CalibrationReader, **options: Any) -> dict[str, Any]:
    """Quantise with every calibration method and keep the one closest to FP32 on the calibration data.

    Each candidate is scored on the calibration feeds by what the validation budget
    measures: image outputs by their mean squared error against FP32 normalised by
    the FP32 variance, scalar outputs (scores) by their largest absolute error. The
    held-out validation set is never touched, so the accuracy reported afterwards
    is not biased by the choice. (Scoring on all calibration feeds rather than a
    split of them: with tens of samples a split's maximum is too noisy to rank the
    methods, and on the test networks the in-sample figures track the held-out
    ones within 20 %.)
    """
    import onnxruntime as ort

    feeds = list(reader.feeds)
    if not feeds:
        raise ValueError("calibration method 'auto' needs calibration samples")
    ref = ort.InferenceSession(str(path_in), providers=["CPUExecutionProvider"])
    # the candidates as the validation judges them: Q/DQ nodes as written (export.validate, OnnxRuntimeRunner's
    # "basic" level), not this CPU's fused int8 kernels
    basic = ort.SessionOptions()
    basic.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    names = [o.name for o in ref.get_outputs()]
    reference = [ref.run(names, f) for f in feeds]
    path_out = Path(path_out)
    trials = {m: path_out.with_name(f".{path_out.stem}.{m}.trial.onnx") for m in CALIBRATION_METHODS}
    scores: dict[str, float] = {}
    described: dict[str, dict[str, Any]] = {}
    try:
        for method, trial in trials.items():
            described[method] = quantize_int8(path_in, trial, reader, method=method, **options)
            cand = ort.InferenceSession(str(trial), sess_options=basic, providers=["CPUExecutionProvider"])
            scores[method] = _selection_error(reference, [cand.run(names, f) for f in feeds])
        best = min(scores, key=scores.__getitem__)
        trials[best].replace(path_out)
    finally:
        for trial in trials.values():
            trial.unlink(missing_ok=True)
    result = described[best]
    result.update(method_selected_by="auto", selection_error=scores, selection_samples=len(feeds))
    return result


def _selection_error(reference: Sequence[Sequence[np.ndarray]], candidate: Sequence[Sequence[np.ndarray]]) -> float:
    """How far a candidate's outputs are from FP32's (``reference[sample][output]``), as ``_quantize_auto`` ranks
    them: image outputs by MSE over the FP32 variance (averaged over samples), scores (<= 4 values) by the worst
    absolute error; infinite when the candidate has a non-finite value where FP32's is finite (a NaN would
    otherwise compare as no error at all)."""
    image_err, scalar_err = 0.0, 0.0
    for ref_out, cand_out in zip(reference, candidate):
        for r, c in zip(ref_out, cand_out):
            r, c = np.asarray(r, np.float64), np.asarray(c, np.float64)
            if np.any(~np.isfinite(c) & np.isfinite(r)):
                return math.inf
            if r.size > 4:  # images: MSE relative to the FP32 variance (the PSNR budget's quantity)
                image_err += float(np.mean((c - r) ** 2) / max(float(np.var(r)), 1e-12)) / len(reference)
            else:  # scores: the worst absolute error (the budget's quantity)
                scalar_err = max(scalar_err, float(np.abs(c - r).max()))
    return image_err + scalar_err


def _entropy_ranges(model_path: PathLike, reader: CalibrationReader, *, num_bins: int = 2048,
                    num_quantized_bins: int = 128) -> dict[str, float]:
    """Symmetric KL-divergence thresholds per activation tensor (TensorRT's entropy calibration, 2048 bins).

    References: Migacz, "8-bit Inference with TensorRT", GTC 2017.
    """
    import tempfile

    from onnxruntime.quantization.calibrate import CalibrationMethod, create_calibrator

    inits = {i.name for i in onnx.load(str(model_path)).graph.initializer}
    with tempfile.TemporaryDirectory(prefix="edgehdr-calib-") as tmp:
        calibrator = create_calibrator(Path(model_path), list(QUANTISED_OPS),
                                       augmented_model_path=str(Path(tmp) / "augmented.onnx"),
                                       calibrate_method=CalibrationMethod.Entropy,
                                       extra_options={"symmetric": True, "num_bins": num_bins,
                                                      "num_quantized_bins": num_quantized_bins})
        reader.rewind()
        with contextlib.redirect_stdout(io.StringIO()):  # progress prints
            calibrator.collect_data(reader)
            data = calibrator.compute_data()
    ranges = {}
    for name, value in data.data.items():
        if name in inits:
            continue
        lo, hi = value.range_value if hasattr(value, "range_value") else value
        ranges[name] = float(max(abs(float(np.asarray(lo).ravel()[0])), abs(float(np.asarray(hi).ravel()[0])), 1e-8))
    return ranges


def _activation_ranges(path: PathLike) -> dict[str, float]:
    """Calibrated activation ranges (+- 127 x scale) of every per-tensor QuantizeLinear."""
    model = onnx.load(str(path))
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    ranges = {}
    for node in model.graph.node:
        if node.op_type == "QuantizeLinear" and node.input[1] in inits:
            scale = np.asarray(inits[node.input[1]])
            if scale.size == 1:
                ranges[node.input[0]] = round(float(scale) * 127.0, 6)
    return ranges


def _quantize_modelopt(path_in: Path, path_out: Path, reader: CalibrationReader, method: str,
                       keep_float: Sequence[str] = ()) -> dict[str, Any]:
    """NVIDIA ModelOpt's ONNX PTQ (its Q/DQ follows TensorRT's rules; the rest of the graph goes to FP16, which
    strongly typed TensorRT builds need). ModelOpt calibrates INT8 with 'entropy' (its default) or 'max'."""
    try:
        from modelopt.onnx.quantization import quantize
    except ImportError as exc:
        raise RuntimeError("NVIDIA ModelOpt is not installed: pip install 'edgehdr[modelopt]'") from exc
    methods = {"auto": "entropy", "entropy": "entropy", "minmax": "max"}
    if method not in methods:
        raise ValueError(f"ModelOpt calibrates INT8 with entropy or minmax (max), not {method!r}")
    reader.rewind()
    feeds = list(iter(reader.get_next, None))
    if not feeds:
        raise ValueError("no calibration samples")
    data = {name: np.concatenate([f[name] for f in feeds]) for name in feeds[0]}
    quantize(onnx_path=str(path_in), quantize_mode="int8", calibration_data=data,
             calibration_method=methods[method], calibration_eps=["cpu"], nodes_to_exclude=list(keep_float) or None,
             output_path=str(path_out))
    return {"precision": "int8", "format": "QDQ", "method": methods[method], "backend": "modelopt",
            "samples": len(feeds), "kept_float": list(keep_float)}
