"""Native TensorRT 10 runner: a serialized engine with name-based I/O and buffers reused across frames.

Deserialises the engine, checks its manifest against the running TensorRT version
and GPU (engines are not portable; a mismatch is refused with the command that
rebuilds it), allocates one page-locked host buffer and one device buffer per I/O
tensor (``num_io_tensors`` / ``get_tensor_name`` / ``set_tensor_address``), and runs
``execute_async_v3`` on its own stream. Nothing is allocated per frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgehdr.infer.base import BackendUnavailable, EngineMismatch, Runner
from edgehdr.infer.manifest import Manifest

__all__ = ["TensorRTRunner", "check_engine_manifest", "import_tensorrt"]


def import_tensorrt():
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
                          engine_path=None) -> None:
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


class TensorRTRunner(Runner):
    """A TensorRT engine file plus its manifest (``ENGINE.manifest.json``)."""

    name = "tensorrt"

    def __init__(self, engine, *, device: int = 0):
        self.engine_path = Path(engine)
        self.device = device
        self.manifest: Manifest | None = None
        self._ctx = self._engine = self._context = None
        self._buffers: dict = {}
        self._inputs: list[str] = []
        self._outputs: list[str] = []

    def load(self) -> "TensorRTRunner":
        trt = import_tensorrt()
        from edgehdr.infer.cuda_buffers import CudaContext, DeviceBuffer, device_properties

        if not self.engine_path.is_file():
            raise FileNotFoundError(f"{self.engine_path}: no such engine")
        self.manifest = Manifest.load(Manifest.path_for(self.engine_path))
        props = device_properties(self.device)
        check_engine_manifest(self.manifest, trt_version=trt.__version__, engine_path=self.engine_path, **props)
        self._ctx = CudaContext(self.device)
        try:
            with self._ctx:
                self._create(trt, DeviceBuffer)
        except BaseException:
            self.close()
            raise
        return self

    def _create(self, trt, DeviceBuffer) -> None:
        logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(logger)
        dla_core = (self.manifest.build_flags or {}).get("dla_core")
        if dla_core is not None:
            runtime.DLA_core = int(dla_core)  # a DLA engine deserialises onto the core it was built for
        self._engine = runtime.deserialize_cuda_engine(self.engine_path.read_bytes())
        if self._engine is None:
            raise EngineMismatch(f"{self.engine_path}: TensorRT could not deserialise the engine; rebuild it")
        self._context = self._engine.create_execution_context()
        for i in range(self._engine.num_io_tensors):
            name = self._engine.get_tensor_name(i)
            shape = tuple(self._context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise EngineMismatch(f"{self.engine_path}: tensor {name} has a dynamic shape {shape}; build the "
                                     "engine with a fixed profile for the runtime stage")
            dtype = trt.nptype(self._engine.get_tensor_dtype(name))
            buf = DeviceBuffer(self._ctx, shape, dtype)
            self._buffers[name] = buf
            if not self._context.set_tensor_address(name, buf.address):
                raise RuntimeError(f"{self.engine_path.name}: set_tensor_address({name}) failed")
            if self._engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT:
                self._inputs.append(name)
            else:
                self._outputs.append(name)

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self._context is None:
            raise RuntimeError("runner not loaded")
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

    def describe(self) -> dict:
        return {"backend": self.name, "engine": str(self.engine_path),
                "precision": self.manifest.precision if self.manifest else None,
                "device": self.manifest.device_name if self.manifest else None,
                "inputs": {n: list(self._buffers[n].host.shape) for n in self._inputs},
                "outputs": {n: list(self._buffers[n].host.shape) for n in self._outputs}}

    def close(self) -> None:
        if self._ctx is not None and self._ctx.context is not None:
            with self._ctx:  # free device memory and TensorRT objects with their context current
                for buf in self._buffers.values():
                    buf.free()
                self._context = self._engine = None
            self._ctx.close()
        self._buffers.clear()
        self._inputs, self._outputs = [], []
        self._context = self._engine = None
        self._ctx = None
