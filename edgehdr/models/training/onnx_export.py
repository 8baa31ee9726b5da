"""ONNX export shared by the recipes: fixed tensor names, metadata, checked, written atomically, with a manifest."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["export_onnx", "write_training_log"]


def export_onnx(model: torch.nn.Module, path: str | os.PathLike[str], *, input_shape: Sequence[int], input_name: str,
                output_name: str, model_name: str, metadata: dict[str, Any], recipe: str,
                build_flags: dict[str, Any] | None = None, dynamic_hw: bool = False) -> Path:
    """Export ``model`` at ``input_shape`` (opset 17) with ``metadata`` as ONNX model properties.

    The sources' revision is recorded as ``edgehdr.source`` (``source_revision``) unless ``metadata``
    carries one already (a re-export of weights trained earlier).

    The model is checked by ``export.checks.check_model`` (static shapes unless
    ``dynamic_hw``: height and width of the input left symbolic) and gets an FP32
    manifest beside it, like every artefact of ``edgehdr-export``.
    """
    import onnx

    from edgehdr.infer.manifest import Manifest, sha256_file
    from edgehdr.io.atomic import write_bytes_atomic
    from edgehdr.models.training.reproduce import source_revision
    from export.checks import check_model, io_specs

    path = Path(path)
    tmp = path.with_name(f".{path.name}.export")
    axes = {input_name: {2: "height", 3: "width"}} if dynamic_hw else None
    torch.onnx.export(model.eval(), (torch.zeros(tuple(input_shape)),), str(tmp), input_names=[input_name],
                      output_names=[output_name], opset_version=17, dynamo=False, dynamic_axes=axes)
    m = onnx.load(str(tmp))
    tmp.unlink()
    meta = {"edgehdr.model": model_name, **{k: str(v) for k, v in metadata.items()}}
    meta.setdefault("edgehdr.source", source_revision())  # a re-export keeps the training's revision
    onnx.helper.set_model_props(m, meta)
    m.producer_name = f"edgehdr.models.training.{recipe}"
    write_bytes_atomic(path, m.SerializeToString())
    info = check_model(path, require_static=not dynamic_hw)
    specs = io_specs(onnx.load(str(path)))
    Manifest(model_name=model_name, model_version=meta.get("edgehdr.version", "1"), artefact=path.name,
             format="onnx", precision="fp32", source_onnx_sha256=sha256_file(path), inputs=specs["inputs"],
             outputs=specs["outputs"], build_flags={"opset": info["opset"], "recipe": recipe, **(build_flags or {})},
             calibration={}, created=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())).save(
        Manifest.path_for(path))
    return path


def write_training_log(path: str | os.PathLike[str], model: torch.nn.Module, input_shape: Sequence[int],
                       **figures: Any) -> dict[str, Any]:
    """The recipe's log (parameters, MAC per forward pass at ``input_shape``, PyTorch version and ``figures``)
    written atomically as JSON; returns it."""
    from edgehdr.io.atomic import write_text_atomic
    from edgehdr.models.training.nets import count_macs, count_parameters

    log = {"parameters": count_parameters(model), "macs_per_frame": count_macs(model, input_shape), **figures,
           "torch": torch.__version__}
    write_text_atomic(path, json.dumps(log, indent=2))
    return log
