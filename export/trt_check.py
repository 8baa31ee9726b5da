"""Static TensorRT-compatibility check of a Q/DQ model, without TensorRT.

What TensorRT's explicit quantisation needs, checked on the graph alone:
opset >= 13; every QuantizeLinear/DequantizeLinear with an int8 zero point equal
to 0 (symmetric) and positive, finite scales; activations quantised per tensor;
weights quantised per channel on the output-channel axis of their consumer
(Conv: 0, ConvTranspose: 1, Gemm: 0 with transB=1 else 1, MatMul: the last
axis); the data and weight inputs of every Conv/ConvTranspose/Gemm coming from
a DequantizeLinear; both inputs of a quantised Add quantised; activation Q/DQ
only on the inputs of ops TensorRT runs in INT8 (Conv, ConvTranspose, Gemm,
MatMul, Add), so none on a Resize input (a Q on a Resize *output* that feeds a
convolution or an Add belongs to that consumer and is allowed); every
QuantizeLinear feeding DequantizeLinear only. The CPU test suite runs this on
every quantised model.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import onnx
from onnx import numpy_helper

if TYPE_CHECKING:
    from edgehdr.infer.base import PathLike

__all__ = ["check_qdq_for_tensorrt", "QUANTISED_OPS"]

QUANTISED_OPS = ("Conv", "ConvTranspose", "Gemm", "MatMul", "Add")


def check_qdq_for_tensorrt(model_or_path: onnx.ModelProto | PathLike, *, float_nodes: Iterable[str] = ()) -> list[str]:
    """List of violations (empty when the model is fit for TensorRT).

    ``float_nodes``: nodes deliberately left unquantised (``quantize_int8(keep_float=...)``);
    TensorRT runs them in FP16/FP32, so their inputs need no Q/DQ.
    """
    float_nodes = set(float_nodes)
    model = onnx.load(str(model_or_path)) if not isinstance(model_or_path, onnx.ModelProto) else model_or_path
    problems: list[str] = []
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < 13:
        problems.append(f"opset {opset} < 13: per-channel Q/DQ needs opset 13")
    inits = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    consumers: dict[str, list] = {}
    for n in model.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    qdq = [n for n in model.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    if not qdq:
        problems.append("no QuantizeLinear/DequantizeLinear nodes: not an explicitly quantised model")

    def attr(node: onnx.NodeProto, name: str, default: Any = None) -> Any:
        for a in node.attribute:
            if a.name == name:
                return onnx.helper.get_attribute_value(a)
        return default

    for n in qdq:
        scale = inits.get(n.input[1])
        if scale is None:
            problems.append(f"{n.name or n.output[0]}: scale is not a constant")
            continue
        if not np.all(np.isfinite(scale)) or np.any(scale <= 0):
            problems.append(f"{n.name or n.output[0]}: scales must be positive and finite")
        if len(n.input) < 3 or n.input[2] not in inits:
            problems.append(f"{n.name or n.output[0]}: zero point missing (TensorRT needs an explicit int8 0)")
            continue
        zp = inits[n.input[2]]
        if zp.dtype != np.int8:
            problems.append(f"{n.name or n.output[0]}: zero point dtype {zp.dtype}, TensorRT needs int8")
        if np.any(zp != 0):
            problems.append(f"{n.name or n.output[0]}: zero point not 0 (asymmetric quantisation)")
        if n.op_type == "QuantizeLinear":
            bad = [c.op_type for c in consumers.get(n.output[0], []) if c.op_type != "DequantizeLinear"]
            if bad:
                problems.append(f"{n.name or n.output[0]}: QuantizeLinear feeds {bad}, not DequantizeLinear")
        per_channel = scale.size > 1
        is_weight = n.op_type == "DequantizeLinear" and n.input[0] in inits
        if per_channel and not is_weight:
            problems.append(f"{n.name or n.output[0]}: activation quantised per channel (TensorRT: per tensor)")
        if is_weight:
            for c in consumers.get(n.output[0], []):
                expected = {"Conv": 0, "ConvTranspose": 1,
                            "Gemm": 0 if attr(c, "transB", 0) else 1}.get(c.op_type)
                if c.op_type == "MatMul":
                    expected = inits[n.input[0]].ndim - 1
                if per_channel and expected is not None and attr(n, "axis", 1) != expected:
                    problems.append(f"{c.name}: weight quantised on axis {attr(n, 'axis', 1)}, output channels are "
                                    f"axis {expected}")
    for n in model.graph.node:
        if n.op_type in ("Conv", "ConvTranspose", "Gemm") and n.name not in float_nodes:
            for k in (0, 1):
                src = producer.get(n.input[k])
                if src is None or src.op_type != "DequantizeLinear":
                    problems.append(f"{n.name}: input {k} ({n.input[k]}) is not Q/DQ-quantised")
        elif n.op_type == "Add":
            quantised = [producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in n.input]
            if any(quantised) and not all(quantised):
                problems.append(f"{n.name}: only some inputs of the Add are quantised (residual adds need both)")
        elif n.op_type == "Resize":
            src = producer.get(n.input[0])
            if src is not None and src.op_type == "DequantizeLinear":
                problems.append(f"{n.name}: Resize input comes from DequantizeLinear (no Q/DQ on Resize)")
    for n in qdq:
        if n.op_type == "DequantizeLinear" and n.input[0] not in inits:
            for c in consumers.get(n.output[0], []):
                if c.op_type not in QUANTISED_OPS and c.op_type != "Resize":
                    problems.append(f"{c.name or c.output[0]}: {c.op_type} reads a DequantizeLinear output; "
                                    f"Q/DQ belongs on the inputs of {', '.join(QUANTISED_OPS)} only")
    return problems
