"""Engine / model manifests: what a model or engine is, what it was built from and for.

``export`` writes one JSON manifest next to every engine or quantised model (see
ARCHITECTURE.md "Engines and manifests"); the runtime reads it to check that an
engine fits this device and TensorRT version before loading it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgehdr.infer.base import PathLike
from edgehdr.tomlconfig import unique_json_keys

__all__ = ["Manifest", "TensorSpec", "sha256_file"]


def sha256_file(path: PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class TensorSpec:
    name: str
    shape: list[int | str]
    dtype: str


@dataclass
class Manifest:
    """Metadata of one built artefact (ONNX model, quantised ONNX, or TensorRT engine)."""

    model_name: str
    model_version: str = "0"
    artefact: str = ""  # file name of the engine / model next to the manifest
    format: str = "onnx"  # onnx | tensorrt
    precision: str = "fp32"  # fp32 | fp16 | int8
    source_onnx_sha256: str = ""
    inputs: list[dict[str, Any]] = field(default_factory=list)
    outputs: list[dict[str, Any]] = field(default_factory=list)
    calibration: dict[str, Any] = field(default_factory=dict)
    accuracy_vs_fp32: dict[str, Any] = field(default_factory=dict)
    tensorrt_version: str | None = None
    device_name: str | None = None
    compute_capability: str | None = None
    build_flags: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    tool: str = "edgehdr-export"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, default=str)

    def save(self, path: PathLike) -> Path:
        from edgehdr.io.atomic import write_text_atomic

        return write_text_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: PathLike) -> Manifest:
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=unique_json_keys)
        except FileNotFoundError:
            raise FileNotFoundError(
                f"{path}: no manifest (engines need the manifest written by edgehdr-export)") from None
        except ValueError as exc:  # JSONDecodeError, or a key given twice (unique_json_keys)
            raise ValueError(f"{path}: not a JSON manifest ({exc})") from exc
        if not isinstance(data, dict):  # valid JSON, but null, a number, a string or a list
            kind = {list: "array", str: "string", bool: "boolean", int: "number", float: "number"}.get(
                type(data), "null")
            raise ValueError(f"{path}: not a manifest: the file holds a JSON {kind}, where a manifest is a JSON "
                             "object of fields (model_name, artefact, ...)")
        known = set(cls.__dataclass_fields__)
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{path}: unknown manifest fields {sorted(unknown)}")
        if "model_name" not in data:
            raise ValueError(f"{path}: manifest lacks 'model_name'")
        return cls(**data)

    @staticmethod
    def path_for(artefact: PathLike) -> Path:
        artefact = Path(artefact)
        return artefact.with_name(artefact.name + ".manifest.json")
