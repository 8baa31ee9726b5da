"""Backend choice at runtime: an engine built for this device, else ONNX Runtime's best provider, else CPU."""

from __future__ import annotations

import glob
import logging
from pathlib import Path
from typing import Any

from edgehdr.infer.base import BackendUnavailable, EngineMismatch, PathLike, Runner
from edgehdr.infer.manifest import Manifest, sha256_file
from edgehdr.infer.ort import OnnxRuntimeRunner

__all__ = ["engine_manifest_problem", "open_runner"]

log = logging.getLogger("edgehdr.infer")


def open_runner(onnx_path: PathLike, *, engine_dir: PathLike | None = None, prefer: str = "auto",
                **ort_options: Any) -> Runner:
    """Load the best runner for a model and return it (loaded).

    Order: a TensorRT engine in ``engine_dir`` whose manifest matches this device and
    TensorRT version -> ONNX Runtime with the best provider present -> ONNX Runtime CPU.
    ``prefer='cpu'`` goes straight to ONNX Runtime CPU. Every step that is skipped is
    logged with the reason.

    The engines considered for ``NAME.onnx`` are ``NAME.*.engine`` (``edgehdr-export build``
    writes ``NAME.PRECISION.engine``) whose manifest (``engine_manifest_problem``) names model
    ``NAME``, was built from this very ONNX file (its sha256) and passed its accuracy budget;
    any other is skipped with a warning naming the file and why.
    """
    onnx_path = Path(onnx_path)
    if prefer != "cpu" and engine_dir is not None:
        engines = sorted(Path(engine_dir).glob(f"{glob.escape(onnx_path.stem)}.*.engine"))
        source_sha = sha256_file(onnx_path) if engines and onnx_path.is_file() else ""
        for engine in engines:
            problem = engine_manifest_problem(engine, model_name=onnx_path.stem, source_sha256=source_sha)
            if problem:
                log.warning("not using engine %s: %s", engine, problem)
                continue
            try:
                from edgehdr.infer.trt import TensorRTRunner

                return TensorRTRunner(engine).load()
            except (BackendUnavailable, EngineMismatch, FileNotFoundError, ValueError) as exc:
                log.info("not using engine %s: %s", engine, exc)
            except Exception as exc:  # noqa: BLE001 - CUDA's own errors (pycuda's classes are not RuntimeError: out
                # of device memory, a failed cuInit), a TensorRT data type NumPy cannot hold: fall back, said loudly
                log.warning("not using engine %s: %s: %s; falling back to ONNX Runtime", engine, type(exc).__name__,
                            exc)
    if prefer != "cpu":
        try:
            return OnnxRuntimeRunner(onnx_path, providers="auto", **ort_options).load()
        except BackendUnavailable as exc:
            log.info("ONNX Runtime GPU providers unavailable: %s", exc)
    return OnnxRuntimeRunner(onnx_path, providers="cpu", **ort_options).load()


def engine_manifest_problem(engine: PathLike, *, model_name: str, source_sha256: str) -> str | None:
    """Why the engine's manifest rules it out for the ONNX model ``model_name`` (file sha256 ``source_sha256``),
    or None: no readable manifest, another model's, built from another version of the ONNX file (a stale engine),
    or outside its accuracy budget (``edgehdr-export build`` still publishes such an engine, with exit status 1,
    for inspection). Whether it fits this GPU and TensorRT version is ``TensorRTRunner.load``'s check."""
    try:
        manifest = Manifest.load(Manifest.path_for(engine))
    except (OSError, ValueError) as exc:
        return str(exc)
    if manifest.model_name != model_name:
        return f"its manifest is for model {manifest.model_name!r}, not {model_name!r}"
    if manifest.source_onnx_sha256 != source_sha256:
        return (f"built from another ONNX file (source sha256 {manifest.source_onnx_sha256[:12] or 'not recorded'}, "
                f"{model_name}.onnx here is {source_sha256[:12] or 'unreadable'}): rebuild it with edgehdr-export "
                "build --target trt")
    budget = manifest.accuracy_vs_fp32.get("budget") if isinstance(manifest.accuracy_vs_fp32, dict) else None
    if isinstance(budget, dict) and budget.get("passed") is False:
        return f"its validation failed the accuracy budget ({budget.get('rule', 'no rule recorded')})"
    return None
