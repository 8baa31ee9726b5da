"""``edgehdr-export inspect``: what a model or engine expects (I/O, ops, custom ops) and what it was built for."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from edgehdr.infer.base import PathLike

__all__ = ["inspect"]


def inspect(path: PathLike) -> dict[str, Any]:
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
    model = load_model(path) if path.suffix == ".onnx" else None
    if model is None:
        require_engine(path)
    info: dict[str, Any] = {"file": str(path), "bytes": path.stat().st_size}
    manifest_path = Manifest.path_for(path)
    if manifest_path.is_file():
        info["manifest"] = dataclasses.asdict(Manifest.load(manifest_path))
    if model is not None:  # an ONNX model
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
            # the nodes build left in float on purpose (score heads, constant adds), where a manifest records them
            calibration = info.get("manifest", {}).get("calibration")
            kept = calibration.get("kept_float") if isinstance(calibration, dict) else None
            kept = [str(k) for k in kept] if isinstance(kept, list) else []
            info["tensorrt_qdq_check"] = check_qdq_for_tensorrt(model, float_nodes=kept) or "passed"
    else:
        try:
            import tensorrt as trt
        except ImportError:
            if "manifest" not in info:  # nothing here can say what the file is
                raise ValueError(f"{path}: TensorRT is not installed here and there is no manifest "
                                 f"({manifest_path.name}) beside the engine; nothing can be read from it") from None
            info["engine_io"] = "TensorRT is not installed here; the manifest above says what the engine expects"
        else:
            engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(path.read_bytes())
            if engine is None:
                why = (f"TensorRT {trt.__version__} cannot deserialise it (not an engine, or built by another "
                       f"TensorRT version or for another GPU)")
                if "manifest" not in info:
                    raise ValueError(f"{path}: {why}")
                info["engine_io"] = why + "; the manifest above says what built it"
            else:
                info["engine_io"] = [{"name": engine.get_tensor_name(i),
                                      "mode": str(engine.get_tensor_mode(engine.get_tensor_name(i))),
                                      "shape": list(engine.get_tensor_shape(engine.get_tensor_name(i))),
                                      "dtype": str(engine.get_tensor_dtype(engine.get_tensor_name(i)))}
                                     for i in range(engine.num_io_tensors)]
    return info
