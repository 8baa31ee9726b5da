"""The one runner contract every neural stage uses: ``load`` -> ``run(dict) -> dict`` -> ``describe``.

``Runner`` is the contract as a ``typing.Protocol``: anything with ``name``, ``load``,
``run``, ``describe``, ``close`` and the context-manager methods is a runner, and
``isinstance(obj, Runner)`` checks it at run time. ``describe`` returns one record,
``RunnerDescription``, whatever the backend (after Polygraphy's ``TensorMetadata``), so
callers never branch on the backend. ``RunnerBase`` holds the code runners share
(``with`` support). Runners own exactly the resources they create (a session, an
engine, device buffers, a stream) and free them in ``close`` (or on leaving a ``with``
block). Heavy libraries are imported in ``load``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias, cast, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from typing_extensions import Self

__all__ = [
    "PRECISIONS",
    "BackendUnavailable",
    "EngineMismatch",
    "PathLike",
    "Precision",
    "Runner",
    "RunnerBase",
    "RunnerDescription",
    "TensorDescription",
    "precision_or_unknown",
]

PathLike: TypeAlias = str | os.PathLike[str]  # a model, engine or manifest path

Precision = Literal["fp32", "fp16", "int8", "mixed", "unknown"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8", "mixed", "unknown")


class BackendUnavailable(RuntimeError):
    """The backend's library or hardware is absent; the message says what to install."""


class EngineMismatch(RuntimeError):
    """An engine built for another device or TensorRT version; the message says how to rebuild."""


def precision_or_unknown(value: object) -> Precision:
    """``value`` if it names a precision (``'fp32'``, ``'fp16'``, ``'int8'``, ``'mixed'``), else ``'unknown'``."""
    text = str(value).lower() if value is not None else "unknown"
    return cast(Precision, text) if text in PRECISIONS else "unknown"


@dataclass(frozen=True)
class TensorDescription:
    """One input or output tensor: name, shape and numpy dtype name.

    ``shape`` holds ints for fixed dimensions and strings for dynamic ones: the
    dimension's symbolic name (``'N'``) or ``'?'`` when it has none. ``dtype`` is a
    numpy dtype name (``'float32'``, ``'float16'``, ``'int64'``); types numpy lacks keep
    the ml_dtypes spelling (``'bfloat16'``, ``'float8_e4m3fn'``).
    """

    name: str
    shape: tuple[int | str, ...]
    dtype: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "shape", tuple(self.shape))

    @property
    def is_static(self) -> bool:
        """All dimensions fixed and positive."""
        return all(isinstance(d, int) and d > 0 for d in self.shape)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TensorDescription:
        return cls(name=str(data["name"]), shape=tuple(data["shape"]), dtype=str(data["dtype"]))


@dataclass(frozen=True)
class RunnerDescription:
    """What a loaded runner runs, where and how: the same record for every backend.

    Attributes
    ----------
    backend : str
        The runner's ``name`` (``'onnxruntime'``, ``'tensorrt'``).
    model : str
        Path of the ONNX model or engine file.
    providers : tuple of str
        ONNX Runtime execution providers in use, in priority order; empty for native TensorRT.
    precision : str
        ``'fp32'``, ``'fp16'``, ``'int8'``, ``'mixed'`` or ``'unknown'`` (from the artefact's manifest,
        or ``'mixed'`` when ONNX Runtime's TensorRT provider may lower precision per layer).
    device : str
        ``'cpu'``, or ``'cuda:N'`` (with the GPU's name in brackets when the backend knows it).
    inputs, outputs : tuple of TensorDescription
    """

    backend: str
    model: str
    providers: tuple[str, ...]
    precision: Precision
    device: str
    inputs: tuple[TensorDescription, ...] = field(default_factory=tuple)
    outputs: tuple[TensorDescription, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        object.__setattr__(self, "providers", tuple(self.providers))
        object.__setattr__(self, "inputs", tuple(self.inputs))
        object.__setattr__(self, "outputs", tuple(self.outputs))

    def as_dict(self) -> dict[str, Any]:
        """Plain dicts, lists and strings, ready for (strict) JSON."""
        return {"backend": self.backend, "model": self.model, "providers": list(self.providers),
                "precision": self.precision, "device": self.device,
                "inputs": [t.as_dict() for t in self.inputs], "outputs": [t.as_dict() for t in self.outputs]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunnerDescription:
        """The record ``as_dict`` wrote (after a trip through JSON)."""
        return cls(backend=str(data["backend"]), model=str(data["model"]), providers=tuple(data["providers"]),
                   precision=precision_or_unknown(data["precision"]), device=str(data["device"]),
                   inputs=tuple(TensorDescription.from_dict(t) for t in data["inputs"]),
                   outputs=tuple(TensorDescription.from_dict(t) for t in data["outputs"]))


@runtime_checkable
class Runner(Protocol):
    """What every inference backend provides (ONNX Runtime, native TensorRT).

    ``load()`` opens the model and returns the runner itself; ``run`` maps input names
    to arrays and returns output names to arrays; ``describe()`` reports the loaded
    model as a ``RunnerDescription``; ``close()`` frees what ``load`` created and may
    be called more than once. ``with runner:`` loads on entry and closes on exit.
    """

    @property
    def name(self) -> str:
        """The backend's short name (``'onnxruntime'``, ``'tensorrt'``)."""
        ...

    def load(self) -> Self: ...

    def run(self, feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]: ...

    def describe(self) -> RunnerDescription: ...

    def close(self) -> None: ...

    def __enter__(self) -> Self: ...

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None: ...


class RunnerBase:
    """Code the runners share: ``with runner:`` loads it and closes it again, also on an exception."""

    name: str = "runner"

    def load(self) -> Self:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self) -> Self:
        return self.load()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()
