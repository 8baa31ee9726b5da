"""Backend choice at runtime: an engine built for this device, else ONNX Runtime's best provider, else CPU."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from edgehdr.infer.base import BackendUnavailable, EngineMismatch, PathLike, Runner
from edgehdr.infer.ort import OnnxRuntimeRunner

__all__ = ["open_runner"]

log = logging.getLogger("edgehdr.infer")


def open_runner(onnx_path: PathLike, *, engine_dir: PathLike | None = None, prefer: str = "auto",
                **ort_options: Any) -> Runner:
    """Load the best runner for a model and return it (loaded).

    Order: a TensorRT engine in ``engine_dir`` whose manifest matches this device and
    TensorRT version -> ONNX Runtime with the best provider present -> ONNX Runtime CPU.
    ``prefer='cpu'`` goes straight to ONNX Runtime CPU. Every step that is skipped is
    logged with the reason.
    """
    onnx_path = Path(onnx_path)
    if prefer != "cpu" and engine_dir is not None:
        for engine in sorted(Path(engine_dir).glob(f"{onnx_path.stem}*.engine")):
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
