"""ONNX Runtime runner: CPU by default; CUDA and TensorRT execution providers with onnxruntime-gpu."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from edgehdr.infer.base import (
    BackendUnavailable,
    PathLike,
    Precision,
    RunnerBase,
    RunnerDescription,
    TensorDescription,
    precision_or_unknown,
)
from edgehdr.infer.manifest import Manifest

if TYPE_CHECKING:
    import onnxruntime

log = logging.getLogger("edgehdr.infer")

__all__ = [
    "GRAPH_OPTIMIZATION_LEVELS",
    "OnnxRuntimeRunner",
    "best_providers",
    "is_qdq_model",
    "model_metadata",
    "ort_device",
    "ort_dtype_name",
    "ort_shape",
    "ort_tensor",
]

# ONNX Runtime's element type names (the inside of 'tensor(...)') whose numpy name differs
_ORT_TO_NUMPY = {"float": "float32", "double": "float64", "string": "object",
                 "float8e4m3fn": "float8_e4m3fn", "float8e4m3fnuz": "float8_e4m3fnuz", "float8e5m2": "float8_e5m2",
                 "float8e5m2fnuz": "float8_e5m2fnuz"}


# ``OnnxRuntimeRunner(graph_optimization=...)``: "all" is ONNX Runtime's default. "basic" runs a quantised
# (Q/DQ) model's QuantizeLinear / DequantizeLinear nodes as written instead of fusing them into ONNX Runtime's int8
# kernels: the Q/DQ model's own arithmetic, which TensorRT computes (int8 products summed in int32). On x86 CPUs
# without VNNI the fused kernels saturate (AVX2's 16-bit pair sums): tmo_net's INT8 parameter grid 31.8 dB PSNR against
# FP32 on such a CPU (tone-mapped output 27.1 dB), 50.4 dB (49.6) under "basic" on the same CPU, which the fused
# kernels also gave on the earlier development machine (49.7) (export.validate judges Q/DQ models under "basic").
GRAPH_OPTIMIZATION_LEVELS = {"all": "ORT_ENABLE_ALL", "basic": "ORT_ENABLE_BASIC"}


def best_providers(available: list[str] | None = None) -> list[str]:
    """Providers in preference order among those this onnxruntime build has: TensorRT, CUDA, CPU."""
    if available is None:
        import onnxruntime as ort

        available = ort.get_available_providers()
    order = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    return [p for p in order if p in available] or ["CPUExecutionProvider"]


def ort_dtype_name(ort_type: str) -> str:
    """ONNX Runtime's type string as a numpy dtype name: ``'tensor(float)'`` -> ``'float32'``.

    Element types numpy spells the same way (``int64``, ``float16``, ``bool``) pass through;
    a non-tensor type (``'seq(tensor(float))'``, ``'map(string,tensor(float))'``) is returned as it is.
    """
    if not (ort_type.startswith("tensor(") and ort_type.endswith(")")):
        return ort_type
    element = ort_type[len("tensor("):-1]
    return _ORT_TO_NUMPY.get(element, element)


def ort_shape(dims: Sequence[int | str | None] | None) -> tuple[int | str, ...]:
    """ONNX Runtime's shape list as a tuple: ints stay, a symbolic dimension keeps its name, an unnamed one
    (``None`` or negative) becomes ``'?'``; no shape at all gives ``()``."""
    if dims is None:
        return ()
    return tuple(d if isinstance(d, str) and d else d if isinstance(d, int) and d >= 0 else "?" for d in dims)


def ort_tensor(node_arg: Any) -> TensorDescription:
    """A ``TensorDescription`` from an ONNX Runtime ``NodeArg`` (``session.get_inputs()[i]``)."""
    return TensorDescription(name=str(node_arg.name), shape=ort_shape(node_arg.shape),
                             dtype=ort_dtype_name(str(node_arg.type)))


def ort_device(providers: Sequence[str], provider_options: Mapping[str, Mapping[str, Any]] | None = None) -> str:
    """Where a session with ``providers`` (in priority order) runs: ``'cpu'`` or ``'cuda:N'``."""
    first = providers[0] if providers else "CPUExecutionProvider"
    if first in ("CUDAExecutionProvider", "TensorrtExecutionProvider"):
        device_id = (provider_options or {}).get(first, {}).get("device_id", 0)
        return f"cuda:{device_id}"
    if first == "CPUExecutionProvider":
        return "cpu"
    return first.removesuffix("ExecutionProvider").lower()


class OnnxRuntimeRunner(RunnerBase):
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

    def __init__(self, model: PathLike, *, providers: str | Sequence[str] = "cpu", intra_op_threads: int = 0,
                 inter_op_threads: int = 0, trt_fp16: bool = False, trt_int8: bool = False,
                 trt_cache_dir: PathLike | None = None, graph_optimization: str = "all") -> None:
        if graph_optimization not in GRAPH_OPTIMIZATION_LEVELS:
            raise ValueError(f"graph_optimization must be one of {', '.join(GRAPH_OPTIMIZATION_LEVELS)}, "
                             f"got {graph_optimization!r}")
        self.graph_optimization = graph_optimization
        self.model = Path(model)
        self.providers = providers
        self.intra_op_threads, self.inter_op_threads = intra_op_threads, inter_op_threads
        self.trt_fp16, self.trt_int8, self.trt_cache_dir = trt_fp16, trt_int8, trt_cache_dir
        self.session: onnxruntime.InferenceSession | None = None
        self._inputs: tuple[_InputCheck, ...] = ()  # what run() checks each feed against, read once at load
        self._input_names: frozenset[str] = frozenset()
        self._output_names: list[str] = []

    def load(self) -> OnnxRuntimeRunner:
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
        providers: list[str | tuple[str, dict[str, Any]]] = []
        for name in names:
            if name == "TensorrtExecutionProvider":
                opts: dict[str, Any] = {"trt_fp16_enable": self.trt_fp16, "trt_int8_enable": self.trt_int8}
                if self.trt_cache_dir:
                    opts.update(trt_engine_cache_enable=True, trt_engine_cache_path=str(self.trt_cache_dir))
                providers.append((name, opts))
            else:
                providers.append(name)
        options = ort.SessionOptions()
        options.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                                   GRAPH_OPTIMIZATION_LEVELS[self.graph_optimization])
        options.intra_op_num_threads = self.intra_op_threads
        options.inter_op_num_threads = self.inter_op_threads
        # ORT's pool spin-waits after every run by default; on a small CPU that steals the cores the next
        # numba stage needs (measured: the merge kernel 2x slower right after the merge network ran).
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        options.add_session_config_entry("session.inter_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(self.model), sess_options=options, providers=providers)
        except Exception as exc:  # ORT raises its own exception types
            raise ValueError(f"{self.model}: ONNX Runtime cannot load the model ({exc})") from exc
        self._inputs = tuple(_InputCheck.of(i) for i in self.session.get_inputs())
        self._input_names = frozenset(i.name for i in self._inputs)
        self._output_names = [o.name for o in self.session.get_outputs()]
        if (self.session.get_providers()[0] == "CPUExecutionProvider" and self.graph_optimization == "all"
                and is_qdq_model(self.model)):
            log.warning("%s: an INT8 Q/DQ model on ONNX Runtime's CPU provider runs slower than its FP32 model "
                        "(measured 1.4-2.1x: tmo_net, merge_net, dimming_net on an x86 CPU with VNNI); Q/DQ is "
                        "made for TensorRT (edgehdr-export build --target trt on the device): on a CPU run the "
                        "FP32 ONNX model", self.model.name)
        return self

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Outputs ``{name: array}`` for inputs ``{name: array}``. Every input must be a numpy array of the model
        input's dtype and shape (a dynamic dimension takes any size; nothing is cast), else ``ValueError``
        naming the input, what the model expects and what was given."""
        if self.session is None:
            raise RuntimeError("runner not loaded: call load() or use it in a with block")
        if feed.keys() != self._input_names:
            raise ValueError(f"{self.model.name}: inputs {sorted(feed)} do not match the model's "
                             f"{sorted(self._input_names)}")
        for spec in self._inputs:
            value = feed[spec.name]
            if not isinstance(value, np.ndarray) or (spec.dtype is not None and value.dtype != spec.dtype) or (
                    value.shape != spec.shape if spec.static else not spec.fits(value.shape)):
                raise ValueError(f"{self.model.name}: input {spec.name!r}: {spec.given(value)}; the model expects "
                                 f"{spec.expected()}")
        return dict(zip(self._output_names, self.session.run(self._output_names, feed)))

    def describe(self) -> RunnerDescription:
        """Providers in use, precision, device and the model's inputs and outputs as ONNX Runtime reports them."""
        s = self.session
        if s is None:
            raise RuntimeError(f"{self.model.name}: runner not loaded: call load() or use it in a with block")
        providers = tuple(s.get_providers())
        return RunnerDescription(backend=self.name, model=str(self.model), providers=providers,
                                 precision=self._precision(providers), device=ort_device(providers,
                                                                                         s.get_provider_options()),
                                 inputs=tuple(ort_tensor(i) for i in s.get_inputs()),
                                 outputs=tuple(ort_tensor(o) for o in s.get_outputs()))

    def _precision(self, providers: Sequence[str]) -> Precision:
        """The manifest's precision when one lies beside the model; ``'mixed'`` when TensorRT's provider may
        lower layers to FP16/INT8 itself; else ``'unknown'`` (an ONNX graph does not state one)."""
        if providers and providers[0] == "TensorrtExecutionProvider" and (self.trt_fp16 or self.trt_int8):
            return "mixed"
        manifest = Manifest.path_for(self.model)
        if not manifest.is_file():
            return "unknown"
        try:
            return precision_or_unknown(Manifest.load(manifest).precision)
        except (OSError, ValueError, TypeError):  # a damaged manifest does not stop the model from running
            return "unknown"

    def close(self) -> None:
        self.session = None
        self._inputs, self._input_names, self._output_names = (), frozenset(), []


class _InputCheck(NamedTuple):
    """One model input as ``OnnxRuntimeRunner.run`` checks a feed against it, built once at load: the numpy
    dtype (None where numpy has none, or for strings, left to ONNX Runtime), the dimensions (None where dynamic;
    ``dims`` None when the model states no shape) and, when every dimension is fixed, the shape to compare
    with one tuple comparison."""

    name: str
    dtype: np.dtype | None
    dims: tuple[int | None, ...] | None
    static: bool
    shape: tuple[int, ...]
    ort_type: str
    ort_dims: tuple[int | str, ...]

    @classmethod
    def of(cls, node_arg: Any) -> _InputCheck:
        ort_type = str(node_arg.type)
        try:
            dtype: np.dtype | None = np.dtype(ort_dtype_name(ort_type))
        except TypeError:  # bfloat16, float8 ...: numpy has no such dtype
            dtype = None
        if dtype is not None and dtype.kind == "O":  # string tensors: numpy gives them as str or object arrays
            dtype = None
        raw = node_arg.shape
        dims = None if raw is None else tuple(d if isinstance(d, int) and d >= 0 else None for d in raw)
        shape = tuple(d for d in dims if d is not None) if dims is not None else ()
        static = dims is not None and len(shape) == len(dims)
        return cls(name=str(node_arg.name), dtype=dtype, dims=dims, static=static, shape=shape if static else (),
                   ort_type=ort_type, ort_dims=ort_shape(raw))

    def fits(self, shape: tuple[int, ...]) -> bool:
        """``shape`` has the input's rank and its size in every fixed dimension (any size in a dynamic one)."""
        if self.dims is None:
            return True
        return len(shape) == len(self.dims) and all(d is None or d == n for d, n in zip(self.dims, shape))

    def expected(self) -> str:
        dtype = str(self.dtype) if self.dtype is not None else ort_dtype_name(self.ort_type)
        shape = "any shape" if self.dims is None else f"shape {list(self.ort_dims)}"
        dynamic = " ('?' or a name: any size)" if self.dims is not None and not self.static else ""
        return f"a numpy array of dtype {dtype}, {shape}{dynamic}"

    def given(self, value: object) -> str:
        if not isinstance(value, np.ndarray):
            return f"given a {type(value).__name__}"
        return f"given dtype {value.dtype}, shape {list(value.shape)}"


def is_qdq_model(model: PathLike) -> bool:
    """Whether an ONNX model is quantised with QuantizeLinear / DequantizeLinear nodes: its graph names a
    ``DequantizeLinear`` operator (ONNX stores each node's operator type as a plain string, so the runtime needs no
    ``onnx`` package for this). The graph, not a manifest beside it: a model copied over another keeps the other's
    manifest."""
    try:
        return b"DequantizeLinear" in Path(model).read_bytes()
    except OSError:
        return False


def model_metadata(model: PathLike) -> dict[str, str]:
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
    except Exception as exc:  # ORT raises its own exception types
        raise ValueError(f"{path}: not a loadable ONNX model ({exc})") from exc
    return dict(session.get_modelmeta().custom_metadata_map)

