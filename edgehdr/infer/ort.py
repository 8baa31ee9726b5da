"""ONNX Runtime runner: CPU by default; CUDA and TensorRT execution providers with onnxruntime-gpu."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgehdr.infer.base import BackendUnavailable, Runner

__all__ = ["model_metadata", "OnnxRuntimeRunner", "best_providers"]


def best_providers(available: list[str] | None = None) -> list[str]:
    """Providers in preference order among those this onnxruntime build has: TensorRT, CUDA, CPU."""
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    order = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    return [p for p in order if p in available] or ["CPUExecutionProvider"]


class OnnxRuntimeRunner(Runner):
    """An ONNX model in an ONNX Runtime session.

    Parameters
    ----------
    model : path
    providers : 'cpu', 'auto' (best available) or an explicit provider list
    intra_op_threads, inter_op_threads : int
        Thread settings (0 = ONNX Runtime's default).
    trt_fp16, trt_int8 : bool
        TensorRT execution-provider precision options.
    trt_cache_dir : path, optional
        TensorRT EP engine cache (built on first run, reused after).
    """

    name = "onnxruntime"

    def __init__(self, model, *, providers="cpu", intra_op_threads: int = 0, inter_op_threads: int = 0,
                 trt_fp16: bool = False, trt_int8: bool = False, trt_cache_dir=None):
        self.model = Path(model)
        self.providers = providers
        self.intra_op_threads, self.inter_op_threads = intra_op_threads, inter_op_threads
        self.trt_fp16, self.trt_int8, self.trt_cache_dir = trt_fp16, trt_int8, trt_cache_dir
        self.session = None

    def load(self) -> "OnnxRuntimeRunner":
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise BackendUnavailable("onnxruntime is not installed: pip install onnxruntime "
                                     "(onnxruntime-gpu for CUDA/TensorRT)") from exc
        if not self.model.is_file():
            raise FileNotFoundError(f"{self.model}: no such ONNX model")
        if self.providers == "cpu":
            names = ["CPUExecutionProvider"]
        elif self.providers == "auto":
            names = best_providers()
        else:
            names = list(self.providers)
            missing = [p for p in names if p not in ort.get_available_providers()]
            if missing:
                raise BackendUnavailable(f"execution providers {missing} are not in this onnxruntime build "
                                         f"(have {ort.get_available_providers()}); install onnxruntime-gpu")
        providers = []
        for name in names:
            if name == "TensorrtExecutionProvider":
                opts = {"trt_fp16_enable": self.trt_fp16, "trt_int8_enable": self.trt_int8}
                if self.trt_cache_dir:
                    opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(self.trt_cache_dir))
                providers.append((name, opts))
            else:
                providers.append(name)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = self.inter_op_threads
        # ORT's pool spin-waits after every run by default; on a small CPU that steals the cores the next
        # numba stage needs (measured: the merge kernel 2x slower right after the merge network ran).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.model), sess_options=options, providers=providers)
        except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
            raise ValueError(f"{self.model}: ONNX Runtime cannot load the model ({exc})") from exc
        return self

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.session is None:
            raise RuntimeError("runner not loaded: call load() or use it in a with block")
        expected = {i.name for i in self.session.get_inputs()}
        if set(feed) != expected:
            raise ValueError(f"{self.model.name}: inputs {sorted(feed)} do not match the model's {sorted(expected)}")
        names = [o.name for o in self.session.get_outputs()]
        return dict(zip(names, self.session.run(names, feed)))

    def describe(self) -> dict:
        s = self.session
        return {
            "backend": self.name, "model": str(self.model),
            "providers": s.get_providers() if s else None,
            "inputs": [{"name": i.name, "shape": i.shape, "dtype": i.type} for i in s.get_inputs()] if s else [],
            "outputs": [{"name": o.name, "shape": o.shape, "dtype": o.type} for o in s.get_outputs()] if s else [],
            "threads": {"intra_op": self.intra_op_threads, "inter_op": self.inter_op_threads},
        }

    def close(self) -> None:
        self.session = None


def model_metadata(model) -> dict[str, str]:
    """The ``metadata_props`` of an ONNX model (key -> value), read through ONNX Runtime.

    The runtime needs no ``onnx`` package for this: ``get_modelmeta().custom_metadata_map``
    holds the same keys. Raises ``FileNotFoundError`` or ``ValueError`` naming the file.
    """
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise BackendUnavailable("onnxruntime is not installed: pip install onnxruntime") from exc
    path = Path(model)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such ONNX model")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    try:
        session = ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - ORT raises its own exception types
        raise ValueError(f"{path}: not a loadable ONNX model ({exc})") from exc
    return dict(session.get_modelmeta().custom_metadata_map)

