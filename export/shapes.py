"""Concrete input shapes for models exported with dynamic dimensions (``--shape NAME:1x3x64x64``).

Calibration, validation, benchmarking and engine building feed a model concrete
tensors, so a model exported with a dynamic batch ``N`` or a free height needs
those dimensions fixed first. ``--shape`` follows trtexec's ``--shapes``
spelling (one input per option, dimensions joined by ``x``). ``fix_input_shapes``
writes the values into a copy of the graph and lets shape inference carry them
to the outputs, so every later step, the manifests and the engine see one
static model; without an override, ``static_shape`` refuses a dynamic input
with its shape as written in the model and the ``--shape`` that would fix it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING

import onnx

if TYPE_CHECKING:
    from typing import TypeAlias, TypeGuard

    # ``{name: dims}``, ``(name, dims)`` pairs or ``'NAME:DIMS'`` strings (``--shape``)
    ShapeOverrides: TypeAlias = Mapping[str, Iterable[int]] | Iterable[str | tuple[str, Iterable[int]]]

__all__ = ["SHAPE_FORMAT", "fix_input_shapes", "format_dims", "is_static", "model_inputs", "overrides", "parse_shape",
           "resolve_shape", "static_shape", "written_dims"]

SHAPE_FORMAT = "NAME:DIMS, DIMS positive integers joined by 'x' (e.g. image:1x3x64x64)"


def format_dims(dims: Iterable[object]) -> str:
    return "x".join(str(d) for d in dims)


def parse_shape(text: str) -> tuple[str, tuple[int, ...]]:
    """``'image:1x3x64x64'`` -> ``('image', (1, 3, 64, 64))``; the last ``:`` splits, so names may hold one."""
    name, sep, dims = str(text).rpartition(":")
    parts = dims.lower().split("x")
    if not sep or not name or not all(p.isascii() and p.isdigit() and int(p) > 0 for p in parts):
        raise ValueError(f"expected {SHAPE_FORMAT}, got {text!r}")
    return name, tuple(int(p) for p in parts)


def overrides(shapes: ShapeOverrides | None) -> dict[str, tuple[int, ...]]:
    """``{name: dims}`` from a mapping, ``(name, dims)`` pairs or ``'NAME:DIMS'`` strings; repeats must agree."""
    if not shapes:
        return {}
    pairs = shapes.items() if isinstance(shapes, dict) else [parse_shape(s) if isinstance(s, str) else s
                                                             for s in shapes]
    result: dict[str, tuple[int, ...]] = {}
    for name, dims in pairs:
        dims = tuple(int(d) for d in dims)
        if result.get(name, dims) != dims:
            raise ValueError(f"--shape {name}: given twice ({format_dims(result[name])} and {format_dims(dims)})")
        result[name] = dims
    return result


def model_inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    """Graph inputs that are fed (initializers listed as inputs excluded)."""
    inits = {i.name for i in model.graph.initializer}
    return [v for v in model.graph.input if v.name not in inits]


def written_dims(value_info: onnx.ValueInfoProto) -> list[int | str] | None:
    """Dimensions as written in the model: ints, symbolic names (``'N'``), ``'?'`` for unnamed ones;
    ``None`` when the model gives no shape at all."""
    tensor = value_info.type.tensor_type
    if not tensor.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor.shape.dim]


def is_static(dims: Sequence[int | str] | None) -> TypeGuard[Sequence[int]]:
    return dims is not None and all(isinstance(d, int) and d > 0 for d in dims)


def _suggestion(name: str, dims: Sequence[int | str] | None) -> str:
    """The ``--shape`` to suggest: batch 1, the model's fixed dims, a placeholder (the dim's name) elsewhere."""
    if dims is None:
        return f"--shape {name}:1x3xHxW"
    fill = [d if is_static([d]) else (1 if k == 0 else (str(d).upper() if d != "?" else f"D{k}"))
            for k, d in enumerate(dims)]
    return f"--shape {name}:{format_dims(fill)}"


def _check_override(label: object, name: str, written: Sequence[int | str] | None, dims: Sequence[int]) -> None:
    """An override must keep the input's rank and every dimension the model fixes."""
    if written is None:
        return
    if len(written) != len(dims):
        raise ValueError(f"{label}: --shape {name}:{format_dims(dims)} has {len(dims)} dims, input {name!r} has "
                         f"{len(written)}: {written}")
    for k, (was, now) in enumerate(zip(written, dims)):
        if is_static([was]) and was != now:
            raise ValueError(f"{label}: --shape {name}:{format_dims(dims)} changes dim {k} of input {name!r} "
                             f"{written}, which the model fixes at {was}")


def fix_input_shapes(model: onnx.ModelProto, shapes: ShapeOverrides | None, *, label: object) -> onnx.ModelProto:
    """A copy of ``model`` with the inputs named in ``shapes`` fixed to those dimensions.

    Symbolic dimensions of the same name elsewhere (outputs, value infos) take the same
    value; strict shape inference then checks that the network accepts the shapes and
    fills in the outputs. ``label`` (the model's file) names the model in errors.
    """
    shapes = overrides(shapes)
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    inputs = {v.name: v for v in model_inputs(fixed)}
    unknown = sorted(set(shapes) - set(inputs))
    if unknown:
        raise ValueError(f"{label}: --shape for {unknown}, but the model's inputs are {sorted(inputs)}")
    symbols: dict[str, int] = {}
    for name, dims in shapes.items():
        written = written_dims(inputs[name])
        _check_override(label, name, written, dims)
        for was, now in zip(written or (), dims):
            if isinstance(was, str) and was != "?" and symbols.setdefault(was, now) != now:
                raise ValueError(f"{label}: --shape gives the model's dimension {was!r} two values "
                                 f"({symbols[was]} and {now})")
        shape = inputs[name].type.tensor_type.shape
        del shape.dim[:]
        for d in dims:
            shape.dim.add().dim_value = d
    for v in list(fixed.graph.output) + list(fixed.graph.value_info):
        for d in v.type.tensor_type.shape.dim:
            if not d.HasField("dim_value") and d.dim_param in symbols:
                d.dim_value = symbols[d.dim_param]
    try:
        inferred = onnx.shape_inference.infer_shapes(fixed, strict_mode=True)
    except (onnx.shape_inference.InferenceError, onnx.checker.ValidationError) as exc:
        given = ", ".join(f"{n}:{format_dims(d)}" for n, d in shapes.items())
        reason = "; ".join(line.strip() for line in str(exc).splitlines() if line.strip())
        raise ValueError(f"{label}: the network does not accept --shape {given} ({reason})") from exc
    found = {v.name: v for v in inferred.graph.output}
    for v in fixed.graph.output:
        if not is_static(written_dims(v)) and v.name in found and is_static(written_dims(found[v.name])):
            v.type.CopyFrom(found[v.name].type)
    return fixed


def static_shape(value_info: onnx.ValueInfoProto, *, label: object, why: str) -> list[int]:
    """The input's dimensions, or ``ValueError`` naming the input, its shape as written and the ``--shape``
    that would fix it (``why``: what needs concrete dimensions)."""
    dims = written_dims(value_info)
    if not is_static(dims):
        raise ValueError(f"{label}: input {value_info.name!r} has shape {dims if dims is not None else 'unknown'}; "
                         f"{why} needs concrete dimensions: give them with {_suggestion(value_info.name, dims)}")
    return list(dims)


def resolve_shape(name: str, dims: Iterable[int | str | None], shapes: ShapeOverrides | None, *, label: object,
                  why: str) -> list[int]:
    """Concrete dimensions for input ``name`` reported as ``dims`` by a runner (ints; strings, ``None`` or
    negative values for dynamic ones): the ``shapes`` override if given, else ``dims`` if static."""
    written = [d if isinstance(d, int) and d > 0 else (d if isinstance(d, str) else "?") for d in dims]
    given = overrides(shapes).get(name)
    if given is not None:
        _check_override(label, name, written, given)
        return list(given)
    if not is_static(written):
        raise ValueError(f"{label}: input {name!r} has shape {written}; {why} needs concrete dimensions: give "
                         f"them with {_suggestion(name, written)}")
    return list(written)
