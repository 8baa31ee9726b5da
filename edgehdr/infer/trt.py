"""Native TensorRT 10 runner: a serialized engine with name-based I/O and buffers reused across frames.

Deserialises the engine, checks its manifest against the running TensorRT version
and GPU (engines are not portable; a mismatch is refused with the command that
rebuilds it), allocates one page-locked host buffer and one device buffer per I/O
tensor (``num_io_tensors`` / ``get_tensor_name`` / ``set_tensor_address``), and runs
``execute_async_v3`` on its own stream. Nothing is allocated per frame.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from edgehdr.infer.base import (
    BackendUnavailable,
    EngineMismatch,
    PathLike,
    RunnerBase,
    RunnerDescription,
    TensorDescription,
    precision_or_unknown,
)
from edgehdr.infer.manifest import Manifest

if TYPE_CHECKING:
    from edgehdr.infer.cuda_buffers import CudaContext, DeviceBuffer

__all__ = [
    "TRT_DTYPE_NAMES",
    "TensorRTRunner",
    "TrtTensor",
    "check_engine_manifest",
    "engine_tensors",
    "import_tensorrt",
    "trt_description",
    "trt_dtype_name",
    "trt_shape",
]

# TensorRT 10 ``DataType`` member names -> numpy dtype names; types numpy lacks keep the ml_dtypes spelling.
TRT_DTYPE_NAMES: dict[str, str] = {
    "FLOAT": "float32", "HALF": "float16", "BF16": "bfloat16", "INT8": "int8", "INT32": "int32", "INT64": "int64",
    "BOOL": "bool", "UINT8": "uint8", "FP8": "float8_e4m3fn", "INT4": "int4", "FP4": "float4_e2m1fn",
    "E8M0": "float8_e8m0fnu",
}


class TrtTensor(NamedTuple):
    """One I/O tensor as TensorRT reports it: name, ``TensorIOMode`` name (``'INPUT'``/``'OUTPUT'``), dimensions
    (``-1`` where dynamic) and ``DataType`` name (``'FLOAT'``). Plain values, so describing needs no TensorRT."""

    name: str
    mode: str
    shape: tuple[int, ...]
    dtype: str


def _member_name(value: object) -> str:
    """``'FLOAT'`` from ``tensorrt.DataType.FLOAT`` (a pybind11 enum: ``.name``), ``'DataType.FLOAT'`` or
    ``'FLOAT'``."""
    name = value if isinstance(value, str) else getattr(value, "name", None) or str(value)
    return str(name).rsplit(".", 1)[-1]


def trt_dtype_name(dtype: object) -> str:
    """A TensorRT ``DataType`` (or its member name) as a numpy dtype name: ``FLOAT`` -> ``'float32'``.

    A type added after this table (TensorRT grows new ones) is reported as its lower-cased name.
    """
    key = _member_name(dtype).upper()
    return TRT_DTYPE_NAMES.get(key, key.lower())


def trt_shape(dims: Iterable[int]) -> tuple[int | str, ...]:
    """TensorRT dimensions (``Dims``, a list or tuple) as a shape tuple with ``'?'`` for dynamic (``-1``) ones."""
    return tuple(int(d) if int(d) >= 0 else "?" for d in dims)


def trt_description(engine_path: PathLike, tensors: Sequence[TrtTensor], *, precision: object,
                    device: str) -> RunnerDescription:
    """The ``RunnerDescription`` of an engine from its I/O table (in engine order) and manifest precision."""
    described = [(t.mode.upper(), TensorDescription(t.name, trt_shape(t.shape), trt_dtype_name(t.dtype)))
                 for t in tensors]
    unknown = sorted({mode for mode, _ in described} - {"INPUT", "OUTPUT"})
    if unknown:
        raise ValueError(f"{engine_path}: tensor I/O modes {unknown}; expected INPUT or OUTPUT")
    return RunnerDescription(backend=TensorRTRunner.name, model=str(engine_path), providers=(),
                             precision=precision_or_unknown(precision), device=device,
                             inputs=tuple(d for mode, d in described if mode == "INPUT"),
                             outputs=tuple(d for mode, d in described if mode == "OUTPUT"))


def engine_tensors(engine: Any) -> list[TrtTensor]:
    """The I/O table of a deserialised TensorRT 10 ``ICudaEngine`` (``num_io_tensors`` / ``get_tensor_*``)."""
    table = []
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        table.append(TrtTensor(name=name, mode=_member_name(engine.get_tensor_mode(name)),
                               shape=tuple(int(d) for d in engine.get_tensor_shape(name)),
                               dtype=_member_name(engine.get_tensor_dtype(name))))
    return table


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or ``BackendUnavailable`` saying how to get it (imported only when used)."""
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise BackendUnavailable("TensorRT is not installed: on a Jetson it comes with JetPack 6 "
                                 "(python3-libnvinfer); on a CUDA machine pip install 'edgehdr[trt]'. Engines are "
                                 "built on the device that runs them (edgehdr-export build MODEL.onnx --target trt)"
                                 ) from exc
    return trt


def check_engine_manifest(manifest: Manifest, *, trt_version: str, device_name: str, compute_capability: str,
                          engine_path: PathLike | None = None) -> None:
    """Raise ``EngineMismatch`` unless the engine was built with this TensorRT version on this kind of GPU."""
    problems = []
    if manifest.format != "tensorrt":
        problems.append(f"manifest format is {manifest.format!r}, not 'tensorrt'")
    if manifest.tensorrt_version != trt_version:
        problems.append(f"built with TensorRT {manifest.tensorrt_version}, running {trt_version}")
    if manifest.compute_capability != compute_capability:
        problems.append(f"built for compute capability {manifest.compute_capability} ({manifest.device_name}), "
                        f"this GPU is {compute_capability} ({device_name})")
    if problems:
        where = f"{engine_path}: " if engine_path else ""
        raise EngineMismatch(where + "; ".join(problems) + ". Rebuild it on this device: edgehdr-export build "
                             f"<{manifest.model_name}.onnx> --target trt --precision {manifest.precision} -o <dir>")


class TensorRTRunner(RunnerBase):
    """A TensorRT engine file plus its manifest (``ENGINE.manifest.json``).

    ``run`` may be called from any thread (each call pushes the runner's CUDA context), but ``close`` belongs on the
    thread that called ``load``: pycuda detaches a context only on the thread that made it, and elsewhere leaves it
    (and its device memory) behind without an error.
    """

    name = "tensorrt"

    def __init__(self, engine: PathLike, *, device: int = 0) -> None:
        self.engine_path = Path(engine)
        self.device = device
        self.manifest: Manifest | None = None
        self._ctx: CudaContext | None = None
        self._engine: Any = None
        self._context: Any = None
        self._buffers: dict[str, DeviceBuffer] = {}
        self._inputs: list[str] = []
        self._outputs: list[str] = []
        self._tensors: list[TrtTensor] = []
        self._device_label = f"cuda:{device}"

    def load(self) -> TensorRTRunner:
        trt = import_tensorrt()
        from edgehdr.infer.cuda_buffers import CudaContext, DeviceBuffer, device_properties

        if not self.engine_path.is_file():
            raise FileNotFoundError(f"{self.engine_path}: no such engine")
        self.manifest = Manifest.load(Manifest.path_for(self.engine_path))
        props = device_properties(self.device)
        check_engine_manifest(self.manifest, trt_version=trt.__version__, engine_path=self.engine_path, **props)
        self._device_label = f"cuda:{self.device} ({props['device_name']})"
        self._ctx = CudaContext(self.device)
        try:
            with self._ctx:
                self._create(trt, self._ctx, DeviceBuffer)
        except BaseException:
            self.close()
            raise
        return self

    def _create(self, trt: Any, ctx: CudaContext, DeviceBuffer: type[DeviceBuffer]) -> None:
        assert self.manifest is not None  # load() read it
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        dla_core = (self.manifest.build_flags or {}).get("dla_core")
        if dla_core is not None:
            runtime.DLA_core = int(dla_core)  # a DLA engine deserialises onto the core it was built for
        self._engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self._engine is None:
            raise EngineMismatch(f"{self.engine_path}: TensorRT could not deserialise the engine; rebuild it")
        self._context = self._engine.create_execution_context()
        self._tensors = engine_tensors(self._engine)
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            shape = tuple(self._context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise EngineMismatch(f"{self.engine_path}: tensor {name} has a dynamic shape {shape}; build the "
                                     "engine with a fixed profile for the runtime stage")
            dtype = trt.nptype(self._engine.get_tensor_dtype(name))
            buf = DeviceBuffer(ctx, shape, dtype)
            self._buffers[name] = buf
            if not self._context.set_tensor_address(name, buf.address):
                raise RuntimeError(f"{self.engine_path.name}: set_tensor_address({name}) failed")
            if self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self._inputs.append(name)
            else:
                self._outputs.append(name)

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._context is None or self._ctx is None:
            raise RuntimeError(f"{self.engine_path.name}: runner not loaded: call load() or use it in a with block")
        if set(feed) != set(self._inputs):
            raise ValueError(f"{self.engine_path.name}: inputs {sorted(feed)} do not match {sorted(self._inputs)}")
        for name in self._inputs:
            if feed[name].shape != self._buffers[name].host.shape:
                raise ValueError(f"input {name}: shape {feed[name].shape}, engine expects "
                                 f"{self._buffers[name].host.shape}")
        with self._ctx:
            for name in self._inputs:
                self._buffers[name].upload(feed[name])
            if not self._context.execute_async_v3(self._ctx.stream.handle):
                raise RuntimeError(f"{self.engine_path.name}: execute_async_v3 failed")
            for name in self._outputs:
                self._buffers[name].download()
            self._ctx.stream.synchronize()
        return {name: self._buffers[name].host.copy() for name in self._outputs}

    def describe(self) -> RunnerDescription:
        """The engine's I/O as TensorRT reports it, the manifest's precision and the GPU it runs on."""
        if self._context is None or self.manifest is None:
            raise RuntimeError(f"{self.engine_path.name}: runner not loaded: call load() or use it in a with block")
        return trt_description(self.engine_path, self._tensors, precision=self.manifest.precision,
                               device=self._device_label)

    def close(self) -> None:
        if self._ctx is not None and self._ctx.context is not None:
            with self._ctx:  # free device memory and TensorRT objects with their context current
                for buf in self._buffers.values():
                    buf.free()
                self._context = self._engine = None
            self._ctx.close()
        self._buffers.clear()
        self._inputs, self._outputs, self._tensors = [], [], []
        self._context = self._engine = None
        self._ctx = None
