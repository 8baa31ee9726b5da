"""pycuda, kept in one small module: device buffers, page-locked host buffers and a stream."""

from __future__ import annotations

from collections.abc import Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import DTypeLike

from edgehdr.infer.base import BackendUnavailable

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = ["CudaContext", "DeviceBuffer", "device_properties"]


def _cuda() -> Any:
    try:
        import pycuda.driver as cuda
    except ImportError as exc:
        raise BackendUnavailable("pycuda is not installed: pip install 'edgehdr[trt]' on a machine with CUDA "
                                 "(JetPack ships CUDA; pycuda builds against it)") from exc
    return cuda


def device_properties(index: int = 0) -> dict[str, str]:
    """Name and compute capability of CUDA device ``index``."""
    cuda = _cuda()
    cuda.init()
    if cuda.Device.count() <= index:
        raise BackendUnavailable(f"no CUDA device {index} (found {cuda.Device.count()})")
    dev = cuda.Device(index)
    major, minor = dev.compute_capability()
    return {"device_name": dev.name(), "compute_capability": f"{major}.{minor}"}


class CudaContext:
    """A CUDA context and stream owned by one runner.

    The context is not left current on the creating thread: every use is wrapped in
    ``with ctx:`` (push ... pop), so a runner loaded on one thread can run frames on
    another (the pipeline's stage threads).
    """

    def __init__(self, index: int = 0) -> None:
        self.cuda = _cuda()
        self.cuda.init()
        if self.cuda.Device.count() <= index:
            raise BackendUnavailable(f"no CUDA device {index} (found {self.cuda.Device.count()})")
        self.context: Any = self.cuda.Device(index).make_context()  # created current on this thread
        try:
            self.stream: Any = self.cuda.Stream()
        finally:
            self.context.pop()

    def __enter__(self) -> Self:
        self.context.push()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.cuda.Context.pop()

    def close(self) -> None:
        if self.context is not None:
            self.stream = None
            self.context.detach()
            self.context = None


class DeviceBuffer:
    """A page-locked host array and its device twin, allocated once and reused for every frame."""

    def __init__(self, ctx: CudaContext, shape: Sequence[int], dtype: DTypeLike) -> None:
        self.ctx = ctx
        self.host: np.ndarray = ctx.cuda.pagelocked_empty(tuple(shape), np.dtype(dtype))
        self.device: Any = ctx.cuda.mem_alloc(self.host.nbytes)

    @property
    def address(self) -> int:
        return int(self.device)

    def upload(self, array: np.ndarray) -> None:
        np.copyto(self.host, array, casting="same_kind")
        self.ctx.cuda.memcpy_htod_async(self.device, self.host, self.ctx.stream)

    def download(self) -> None:
        self.ctx.cuda.memcpy_dtoh_async(self.host, self.device, self.ctx.stream)

    def free(self) -> None:
        if self.device is not None:
            self.device.free()
            self.device = None
