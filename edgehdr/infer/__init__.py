"""Inference backends for the neural stages: ONNX Runtime and native TensorRT runners, manifests, selection."""

from edgehdr.infer.base import (
    BackendUnavailable,
    EngineMismatch,
    Runner,
    RunnerBase,
    RunnerDescription,
    TensorDescription,
)
from edgehdr.infer.manifest import Manifest, TensorSpec, sha256_file
from edgehdr.infer.ort import OnnxRuntimeRunner, best_providers
from edgehdr.infer.select import open_runner

__all__ = [
    "BackendUnavailable",
    "EngineMismatch",
    "Manifest",
    "OnnxRuntimeRunner",
    "Runner",
    "RunnerBase",
    "RunnerDescription",
    "TensorDescription",
    "TensorSpec",
    "best_providers",
    "open_runner",
    "sha256_file",
]
