"""ONNX model checks and simplification: checker, shape inference, opset, static shapes, onnxslim."""

from __future__ import annotations

from pathlib import Path

import onnx

__all__ = ["check_model", "simplify", "io_specs", "topological_sort"]


def topological_sort(model: onnx.ModelProto) -> onnx.ModelProto:
    """Reorder ``model.graph.node`` in place so every node follows the producers of its inputs (Kahn's order,
    stable for nodes already in order); raises ``ValueError`` on a cycle or an input nothing produces."""
    graph = model.graph
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(i in available for i in n.input)]
        if not ready:
            missing = sorted({i for n in pending for i in n.input if i not in available})
            raise ValueError(f"graph {graph.name!r}: cycle or unproduced inputs {missing[:5]}")
        for n in ready:
            available.update(n.output)
        ready_ids = {id(n) for n in ready}
        pending = [n for n in pending if id(n) not in ready_ids]
        ordered.extend(ready)
    del graph.node[:]
    graph.node.extend(ordered)
    return model


def io_specs(model: onnx.ModelProto) -> dict:
    """Graph inputs/outputs (without initializers) as ``{name, shape, dtype}`` lists."""
    inits = {i.name for i in model.graph.initializer}

    def spec(v):
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in v.type.tensor_type.shape.dim]
        return {"name": v.name, "shape": dims, "dtype": onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type).name}

    return {"inputs": [spec(v) for v in model.graph.input if v.name not in inits],
            "outputs": [spec(v) for v in model.graph.output]}


def check_model(path, *, min_opset: int = 13, require_static: bool = False) -> dict:
    """Run the ONNX checker and shape inference; report opset and static shapes.

    Raises ``ValueError`` naming the file for an invalid model, an opset below
    ``min_opset`` (per-channel Q/DQ needs 13), or dynamic shapes when
    ``require_static`` (DLA needs static shapes).
    """
    path = Path(path)
    try:
        model = onnx.load(str(path))
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as exc:  # noqa: BLE001 - onnx raises several types
        raise ValueError(f"{path}: invalid ONNX model ({exc})") from exc
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < min_opset:
        raise ValueError(f"{path}: opset {opset} is below {min_opset}; re-export with opset >= {min_opset} "
                         "(per-channel QuantizeLinear needs 13)")
    specs = io_specs(inferred)
    dynamic = [s["name"] for s in specs["inputs"] + specs["outputs"] if any(not isinstance(d, int) or d <= 0
                                                                           for d in s["shape"])]
    if require_static and dynamic:
        raise ValueError(f"{path}: dynamic shapes on {dynamic}; DLA needs static shapes (export with fixed sizes)")
    ops = sorted({n.op_type for n in model.graph.node})
    return {"path": str(path), "opset": opset, "ops": ops, "nodes": len(model.graph.node),
            "static_shapes": not dynamic, "dynamic": dynamic, **specs}


def simplify(path_in, path_out) -> dict:
    """Simplify with onnxslim (constant folding, dead-node removal); checks the result loads and validates."""
    try:
        import onnxslim
    except ImportError:
        return {"simplified": False, "reason": "onnxslim not installed (pip install onnxslim)"}
    model = onnx.load(str(path_in))
    before = len(model.graph.node)
    slim = onnxslim.slim(model)
    onnx.checker.check_model(slim)
    from edgehdr.io.atomic import write_bytes_atomic

    write_bytes_atomic(path_out, slim.SerializeToString())
    return {"simplified": True, "nodes_before": before, "nodes_after": len(slim.graph.node)}
