"""ONNX model checks and simplification: readable file, checker, shape inference, opset, static shapes, custom
ops, onnxslim. Every export command reads its models through ``load_model``, so a file that is not a usable
ONNX model is refused with its name before any work starts."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnx
from google.protobuf.message import DecodeError

if TYPE_CHECKING:
    from edgehdr.infer.base import PathLike

__all__ = ["STANDARD_DOMAINS", "check_model", "custom_ops", "io_specs", "load_model", "refuse_custom_ops",
           "require_engine", "simplify", "topological_sort"]

# Operator domains ONNX Runtime and TensorRT's ONNX parser implement; a node of any other domain needs a plugin.
STANDARD_DOMAINS = ("", "ai.onnx", "ai.onnx.ml")


def load_model(path: PathLike, *, what: str = "ONNX model", check: bool = False) -> onnx.ModelProto:
    """Parse ``path`` as an ONNX model that has a graph with inputs, outputs and nodes.

    Raises ``FileNotFoundError`` / ``IsADirectoryError`` / ``ValueError`` naming the file
    and what was expected: a missing file, a folder, an empty file, bytes that are not
    an ONNX protobuf (a text file, an image, a truncated download), an empty graph.
    ``check`` also runs the ONNX checker, which every model handed to a native runtime
    needs: OpenCV's importer crashes the process on some damaged graphs (an op name
    that is not UTF-8) that the checker refuses.
    """
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; expected an {what} file (.onnx)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; expected an {what} (.onnx)")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file; expected an {what} (.onnx)")
    try:
        model = onnx.load(str(path))
    except DecodeError as exc:
        raise ValueError(f"{path}: invalid ONNX model: not an ONNX protobuf, or a truncated one ({exc}); expected "
                         f"an {what} such as torch.onnx.export writes") from exc
    if model.ir_version <= 0 or not model.HasField("graph"):
        raise ValueError(f"{path}: invalid ONNX model: no IR version or no graph; expected an {what}")
    missing = [part for part, items in (("inputs", model.graph.input), ("outputs", model.graph.output),
                                        ("nodes", model.graph.node)) if not items]
    if missing:
        listed = " and no ".join([", no ".join(missing[:-1]), missing[-1]] if len(missing) > 1 else missing)
        raise ValueError(f"{path}: the model has no {listed}; expected an {what} with a network in its graph")
    if check:
        try:
            onnx.checker.check_model(model)
        except (onnx.checker.ValidationError, ValueError) as exc:  # ValueError: strings that are not UTF-8
            reason = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
            raise ValueError(f"{path}: invalid ONNX model ({reason})") from exc
    return model


def require_engine(path: PathLike) -> Path:
    """``path`` is a non-empty file (what TensorRT makes of its bytes is its own check)."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{path}: is a folder; expected a TensorRT engine file (.engine)")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; expected a TensorRT engine (.engine)")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: empty file; expected a TensorRT engine (.engine)")
    return path


def custom_ops(model: onnx.ModelProto) -> list[str]:
    """Nodes of operator domains outside ``STANDARD_DOMAINS`` (functions defined in the model itself excepted),
    as ``'node (domain:OpType)'``."""
    local = {(f.domain, f.name) for f in model.functions}
    return [f"{n.name or n.output[0]} ({n.domain}:{n.op_type})" for n in model.graph.node
            if n.domain not in STANDARD_DOMAINS and (n.domain, n.op_type) not in local]


def refuse_custom_ops(model: onnx.ModelProto, label: object, why: str) -> None:
    """``ValueError`` naming the custom-domain nodes of ``model`` (``why``: the step that cannot run them)."""
    found = custom_ops(model)
    if found:
        raise ValueError(f"{label}: custom-domain ops {', '.join(found[:5])}{' ...' if len(found) > 5 else ''}; "
                         f"{why}, which has no kernel for them: export them as standard ONNX ops (domains "
                         f"{', '.join(repr(d) for d in STANDARD_DOMAINS)})")


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


def io_specs(model: onnx.ModelProto) -> dict[str, list[dict[str, Any]]]:
    """Graph inputs/outputs (without initializers) as ``{name, shape, dtype}`` lists."""
    inits = {i.name for i in model.graph.initializer}

    def spec(v: onnx.ValueInfoProto) -> dict[str, Any]:
        tensor = v.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim]
        return {"name": v.name, "shape": dims, "dtype": onnx.helper.tensor_dtype_to_np_dtype(tensor.elem_type).name}

    return {"inputs": [spec(v) for v in model.graph.input if v.name not in inits],
            "outputs": [spec(v) for v in model.graph.output]}


def check_model(path: PathLike, *, min_opset: int = 13, require_static: bool = False) -> dict[str, Any]:
    """Run the ONNX checker and shape inference; report opset and static shapes.

    Raises ``ValueError`` naming the file for an invalid model, an opset below
    ``min_opset`` (per-channel Q/DQ needs 13), or dynamic shapes when
    ``require_static`` (DLA needs static shapes).
    """
    path = Path(path)
    model = load_model(path)
    try:
        onnx.checker.check_model(model, full_check=True)
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=True)
    except Exception as exc:
        raise ValueError(f"{path}: invalid ONNX model ({exc})") from exc
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    if opset < min_opset:
        raise ValueError(f"{path}: opset {opset} is below {min_opset}; re-export with opset >= {min_opset} "
                         "(per-channel QuantizeLinear needs 13)")
    specs = io_specs(inferred)
    dynamic = [s["name"] for s in specs["inputs"] + specs["outputs"] if any(not isinstance(d, int) or d <= 0
                                                                           for d in s["shape"])]
    if require_static and dynamic:
        raise ValueError(f"{path}: dynamic shapes on {dynamic}; DLA needs static shapes (fix the inputs with "
                         "--shape NAME:1x3xHxW or export with fixed sizes)")
    ops = sorted({n.op_type for n in model.graph.node})
    return {"path": str(path), "opset": opset, "ops": ops, "nodes": len(model.graph.node),
            "static_shapes": not dynamic, "dynamic": dynamic, "custom_ops": custom_ops(model), **specs}


def simplify(path_in: PathLike, path_out: PathLike) -> dict[str, Any]:
    """Simplify with onnxslim (constant folding, dead-node removal); checks the result loads and validates."""
    try:
        import onnxslim
    except ImportError:
        return {"simplified": False, "reason": "onnxslim not installed (pip install 'edgehdr[export]')"}
    model = onnx.load(str(path_in))
    before = len(model.graph.node)
    slim = onnxslim.slim(model)
    onnx.checker.check_model(slim)
    from edgehdr.io.atomic import write_bytes_atomic

    write_bytes_atomic(path_out, slim.SerializeToString())
    return {"simplified": True, "nodes_before": before, "nodes_after": len(slim.graph.node)}
