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

from pathlib import Path

import numpy as np
import onnx

__all__ = ["to_fp16", "quantize_int8", "CALIBRATION_METHODS", "FP16_KEEP_FP32"]

CALIBRATION_METHODS = ("minmax", "entropy", "percentile")
# Ops whose range or precision FP16 tends to break; they stay in FP32 with casts around them.
FP16_KEEP_FP32 = ["Exp", "Log", "Pow", "Sqrt", "Reciprocal", "Div", "ReduceMean", "ReduceSum", "ReduceProd",
                  "Softmax", "LogSoftmax", "InstanceNormalization", "LayerNormalization", "Resize", "Range",
                  "CumSum", "TopK", "NonMaxSuppression", "RandomNormalLike", "RandomUniformLike"]


def to_fp16(path_in, path_out, *, keep_fp32=None) -> dict:
    """FP16 weights and compute with FP32 inputs/outputs; ``keep_fp32`` ops (default ``FP16_KEEP_FP32``) stay FP32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    from edgehdr.io.atomic import write_bytes_atomic

    block = list(FP16_KEEP_FP32 if keep_fp32 is None else keep_fp32)
    model = convert_float_to_float16(onnx.load(str(path_in)), keep_io_types=True, op_block_list=block)
    onnx.checker.check_model(model)
    write_bytes_atomic(path_out, model.SerializeToString())
    return {"precision": "fp16", "kept_fp32_ops": sorted({n.op_type for n in onnx.load(str(path_in)).graph.node}
                                                        & set(block))}


def quantize_int8(path_in, path_out, reader, *, method: str = "entropy", percentile: float = 99.999,
                  per_channel: bool = True, backend: str = "onnxruntime") -> dict:
    """Explicit Q/DQ INT8 model from a calibration reader; returns a description for the manifest."""
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"unknown calibration method {method!r}; use one of {', '.join(CALIBRATION_METHODS)}")
    path_in, path_out = Path(path_in), Path(path_out)
    if backend == "modelopt":
        return _quantize_modelopt(path_in, path_out, reader, method)
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    cal = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy,
           "percentile": CalibrationMethod.Percentile}[method]
    extra = {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False, "DedicatedQDQPair": True,
             "QDQOpTypePerChannelSupportToAxis": {"ConvTranspose": 1}}
    if method == "percentile":
        extra["CalibPercentile"] = percentile
    pre = path_out.with_name(f".{path_out.stem}.pre.onnx")
    tmp = path_out.with_name(f".{path_out.stem}.partial.onnx")
    try:
        quant_pre_process(str(path_in), str(pre), skip_symbolic_shape=True)
        quantize_static(str(pre), str(tmp), reader, quant_format=QuantFormat.QDQ,
                        op_types_to_quantize=["Conv", "ConvTranspose", "Gemm", "MatMul", "Add"],
                        per_channel=per_channel, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        calibrate_method=cal, extra_options=extra)
        onnx.checker.check_model(str(tmp))
        tmp.replace(path_out)
    finally:
        for p in (pre, tmp):
            p.unlink(missing_ok=True)
    ranges = _activation_ranges(path_out)
    return {"precision": "int8", "format": "QDQ", "method": method, "samples": len(reader),
            "percentile": percentile if method == "percentile" else None, "per_channel": per_channel,
            "symmetric": True, "activation_ranges": ranges}


def _activation_ranges(path) -> dict:
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


def _quantize_modelopt(path_in, path_out, reader, method):
    try:
        from modelopt.onnx.quantization import quantize
    except ImportError as exc:
        raise RuntimeError("NVIDIA ModelOpt is not installed: pip install nvidia-modelopt[onnx]") from exc
    reader.rewind()
    feeds = [f for f in iter(reader.get_next, None)]
    name = list(feeds[0])[0]
    data = np.concatenate([f[name] for f in feeds])
    quantize(onnx_path=str(path_in), quantize_mode="int8", calibration_data={name: data},
             calibration_method="max" if method == "minmax" else method, output_path=str(path_out))
    return {"precision": "int8", "format": "QDQ", "method": method, "backend": "modelopt", "samples": len(feeds)}
