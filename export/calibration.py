"""Calibration and held-out data: HDR images (files or synthetic scenes) through the runtime's pre-processing, or
anyone's tensors (``.npz``/``.npy`` folders, a Python data-loader hook) as they are.

PTQ ranges are only as good as the data they are measured on, so calibration
feeds the network what the runtime stage will feed it: HDR radiance or exposure
brackets through the same pre-processing. A model names its pre-processing in
its ONNX metadata (``edgehdr.preprocess``); without one it is ``log_radiance``:
log2 of radiance relative to the median luminance (radiance maps are relative,
so the encoding is scale-invariant), mapped from [-16, 16] stops to [0, 1], at
the network's input size. ``bracket_ldr`` stacks the K frames of a
bracket (code values / full scale, RGB) into 3K channels, shortest exposure first.
``norvdpnet_sdr`` tone maps each radiance map several ways (varied operators and
parameters) and feeds the SDR renderings through the scorer's encoding.

Calibration and held-out sets never overlap: synthetic scenes draw from disjoint
seed ranges; a folder (or hook) serving both roles (``build`` without ``--holdout``)
is split, every fifth item held out; ``build --holdout`` uses its source whole
(and its calibration source whole), and refuses the same source for both
(``same_source``).

Data for anyone's model
-----------------------
Models that are not EdgeHDR's take their calibration and held-out data as
tensors, fed to the network as they are (no pre-processing), in one of these
forms (``--calib``, ``--holdout``, ``--data``):

* A folder of ``.npz`` files, as Polygraphy and trtexec users keep them: each
  file holds one array per model input, named after the input (``np.savez(path,
  pixels=x)``); arrays of other names are ignored.
* For a model with a single input, a folder of ``.npy`` files (one array each).
  Both kinds may sit in one folder; files are read in name order (names
  starting with ``.`` skipped). A folder that holds any ``.npz``/``.npy`` file
  is read as tensors, never as images.
* A Python data-loader hook, ``MODULE.PATH:FUNCTION`` (an importable module) or
  ``FILE.py:FUNCTION`` (``FILE.py`` alone calls ``load_data``, Polygraphy's
  default name). The function is called with no arguments and returns an
  iterable (a list, a generator; it may be endless) of dicts ``{input_name:
  numpy array}``, one dict per sample; only the samples needed are drawn. It is
  called once per use, so when the same hook serves as calibration and held-out
  data it must yield the same samples in the same order on every call.

One array (a file's, or a dict value) is one sample when its shape is the
model input's shape (after ``--shape``), or a stack of samples along axis 0
when the input's first dimension is fixed at ``B`` and the array's is a
multiple ``K*B`` with the other dimensions equal: a ``(16, 3, 32, 32)`` array
for a ``1x3x32x32`` input is 16 samples (in a ``.npz``, every array must give
the same count). A dimension the model leaves dynamic (``validate`` without
``--shape``) matches any size. Every array is checked as it is read, before
any calibration (files beyond the count are not read), and refused with the
file (or the hook and its dict number), the array's name and what was expected against what was found: a missing input,
a dtype other than the input's (nothing is cast, float64 included: save
float32 for a float32 input), a shape that fits neither rule, NaN or
infinite values, an unreadable file or a pickled (object) array.

A folder or hook given for both roles (``build`` without ``--holdout``) holds
every fifth sample out for validation; given for one role, all its samples
(up to the count) serve that role; given as both ``--calib`` and ``--holdout``
it is refused (the held-out samples would be the calibration samples). The
manifest's calibration ``data`` records the source, the format, the files read,
the sample count, the input shapes and dtypes, and a sha256 over the samples as
fed.
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, TypedDict, overload

import cv2
import numpy as np

if TYPE_CHECKING:
    from typing import TypeAlias

    import onnx

    from edgehdr.bracket import Bracket
    from edgehdr.dimming import LedLayout
    from edgehdr.infer.base import PathLike
    from export.shapes import ShapeOverrides

    Feed: TypeAlias = dict[str, np.ndarray]  # one sample: {input name: array}

__all__ = ["CALIBRATION_SEED", "HOLDOUT_SEED", "PREPROCESSING", "TENSOR_SUFFIXES", "CalibrationReader", "batches",
           "bracket_folders", "bracket_nchw", "check_source", "hdr_files", "hook_samples", "input_specs", "is_hook",
           "load_hook", "log_encode_nchw", "model_feeds", "preprocessing_of", "same_source", "samples_of",
           "synthetic_brackets", "synthetic_hdr", "tensor_files", "tensor_folder_samples", "tone_mapped_pairs",
           "user_feeds"]

CALIBRATION_SEED = 0
HOLDOUT_SEED = 100_000  # synthetic held-out scenes start here: disjoint from any calibration set
TENSOR_SUFFIXES = (".npz", ".npy")
HOOK_DEFAULT_FUNCTION = "load_data"  # FILE.py without :FUNCTION, as Polygraphy's --data-loader-script


def log_encode_nchw(radiance: np.ndarray, height: int, width: int, *, stops: float = 16.0) -> np.ndarray:
    """HDR radiance (H, W, 3) -> (1, 3, height, width) float32 in [0, 1]: log2(radiance / median luminance),
    +-``stops`` mapped to [0, 1] (scale-invariant: a radiance map's absolute scale is arbitrary)."""
    small = cv2.resize(np.asarray(radiance, np.float32), (width, height), interpolation=cv2.INTER_AREA)
    luminance = small @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    key = max(float(np.median(luminance)), 1e-12)
    enc = (np.log2(np.maximum(small / key, 2.0**-stops)) + stops) / (2.0 * stops)
    return np.ascontiguousarray(np.clip(enc, 0.0, 1.0).transpose(2, 0, 1)[None], dtype=np.float32)


def bracket_nchw(bracket: Bracket, height: int, width: int) -> np.ndarray:
    """A bracket (N frames, shortest exposure first) -> (1, 3N, height, width) float32 code values in [0, 1]."""
    order = np.argsort(np.asarray(bracket.exposure_s) * np.asarray(bracket.gain))
    if bracket.bits is None:  # Bracket() fills it in from the frames' dtype
        raise ValueError("bracket without a bit depth: build it with edgehdr.bracket.Bracket")
    full_scale = float(2 ** bracket.bits - 1)
    planes = []
    for i in order:
        frame = cv2.resize(bracket.frames[i], (width, height), interpolation=cv2.INTER_AREA)
        planes.append(frame.astype(np.float32).transpose(2, 0, 1) / full_scale)
    return np.ascontiguousarray(np.concatenate(planes)[None], dtype=np.float32)


def synthetic_brackets(count: int, frames: int, *, seed: int = 0, height: int = 256, width: int = 384,
                       moving_objects: int = 0,
                       with_truth: bool = False) -> Iterator[Bracket | tuple[Bracket, np.ndarray]]:
    """``count`` synthetic brackets of ``frames`` exposures each (noisy, with hand shake), seeds from ``seed``;
    ``with_truth`` yields ``(bracket, exact radiance of the reference frame)``."""
    from edgehdr.synth import capture_bracket, make_scene, random_camera_motion, suggest_exposures

    for i in range(count):
        scene = make_scene(seed + i, height, width, moving_objects=moving_objects, object_speed_px=0.02 * width)
        exposures = suggest_exposures(scene.radiance, n=frames)
        poses = random_camera_motion(frames, max_shift_px=3.0, seed=seed + i)
        sb = capture_bracket(scene, exposures, seed=seed + i, camera_poses=poses)
        yield (sb.bracket, sb.radiance) if with_truth else sb.bracket


def bracket_folders(folder: PathLike) -> Iterator[Bracket]:
    """Brackets from the sub-folders of ``folder`` (one bracket of LDR images per sub-folder, sorted)."""
    from edgehdr.io import read_ldr_stack

    subdirs = sorted(p for p in Path(folder).iterdir() if p.is_dir())
    if not subdirs:
        raise ValueError(f"{folder}: no sub-folders; bracket calibration data is one folder of LDR images per bracket")
    for d in subdirs:
        yield read_ldr_stack([d])


def synthetic_hdr(count: int, *, seed: int = 0, height: int = 256, width: int = 384) -> Iterator[np.ndarray]:
    """``count`` synthetic scenes (radiance arrays); seeds from ``seed`` up (disjoint sets for calibration vs
    held-out)."""
    from edgehdr.synth import make_scene

    for i in range(count):
        yield make_scene(seed + i, height, width).radiance


def hdr_files(folder: PathLike) -> Iterator[np.ndarray]:
    """Radiance maps (.exr/.hdr/.pfm) in a folder, sorted by name."""
    from edgehdr.io import read_radiance
    from edgehdr.io.hdr_files import RADIANCE_SUFFIXES

    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in RADIANCE_SUFFIXES)
    if not paths:
        raise ValueError(f"{folder}: no .exr, .hdr or .pfm files (radiance maps for calibration or validation) and "
                         "no .npz/.npy tensors")
    for p in paths:
        yield read_radiance(p)


def batches(images: Iterable[np.ndarray], input_name: str, shape: Sequence[int],
            preprocess: Callable[[np.ndarray], np.ndarray] | None = None) -> Iterator[Feed]:
    """Model feeds ``{input_name: array}`` from radiance images through ``preprocess``."""
    _, _, h, w = shape
    preprocess = preprocess or (lambda rad: log_encode_nchw(rad, h, w))
    for rad in images:
        yield {input_name: preprocess(rad)}


def _tmo_input(radiance: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    from edgehdr.tonemap.neural import encode_tmo_input  # the runtime stage's own encoder

    return encode_tmo_input(radiance)[0]


def dimming_layout_for(radiance: np.ndarray, shape: Sequence[int]) -> LedLayout:
    """The layout a dimming model's input implies for a frame: its zone grid on a panel of the frame's size."""
    from edgehdr.dimming import LedLayout
    from edgehdr.dimming.neural import SUBDIVISION

    h, w = np.asarray(radiance).shape[:2]
    return LedLayout(rows=shape[2] // SUBDIVISION, cols=shape[3] // SUBDIVISION, width_px=w, height_px=h,
                     source="calibration")


def _dimming_input(radiance: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    from edgehdr.dimming import display_target
    from edgehdr.dimming.neural import encode_dimming_input  # the runtime stage's own encoder

    layout = dimming_layout_for(radiance, shape)
    return encode_dimming_input(display_target(radiance, layout), layout, channels=int(shape[1]))


def tone_mapped_pairs(radiance_items: Iterable[np.ndarray], count: int, *, per_scene: int = 4,
                      seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``(radiance, sdr_u8)`` pairs: each radiance map tone mapped ``per_scene`` ways (varied operators and
    parameters, ``edgehdr.quality.norvdpnet.tone_mapping_variants``), ``count`` pairs in all."""
    from edgehdr.quality.norvdpnet import tone_mapping_variants

    pairs: list[tuple[np.ndarray, np.ndarray]] = []
    for i, radiance in enumerate(radiance_items):
        pairs += [(radiance, sdr) for sdr, _ in tone_mapping_variants(radiance, per_scene, seed=seed + i)]
        if len(pairs) >= count:
            break
    return pairs[:count]


def _merge_input(item: tuple[Bracket, np.ndarray | None], shape: Sequence[int]) -> np.ndarray:
    from edgehdr.hdr.neural_merge import encode_merge_input, working_size  # the runtime merger's own encoder

    return encode_merge_input(item[0], response=MERGE_RESPONSE, size=working_size(tuple(shape)))


def _score_input(pair: tuple[np.ndarray, np.ndarray], shape: Sequence[int]) -> np.ndarray:
    from edgehdr.quality.norvdpnet import encode_sdr  # the runtime scorer's own encoder

    return encode_sdr(pair[1], shape)


class _PreprocessingRequired(TypedDict):
    source: str  # what the items are: radiance, bracket, bracket_truth (with exact radiance), tone_mapped
    to_nchw: Callable[[Any, Sequence[int]], np.ndarray]  # (item, input shape) -> the network's input


class Preprocessing(_PreprocessingRequired, total=False):
    """How calibration items become a network's input; ``synth_size`` (height, width) of synthetic scenes."""

    synth_size: tuple[int, int]


PREPROCESSING: dict[str, Preprocessing] = {
    "log_radiance": {"source": "radiance", "to_nchw": lambda item, shape: log_encode_nchw(item, shape[2], shape[3])},
    "bracket_ldr": {"source": "bracket", "to_nchw": lambda item, shape: bracket_nchw(item, shape[2], shape[3])},
    "tmo_log_luminance": {"source": "radiance", "to_nchw": _tmo_input},
    "dimming_zone_stats": {"source": "radiance", "to_nchw": _dimming_input, "synth_size": (360, 640)},
    "norvdpnet_sdr": {"source": "tone_mapped", "to_nchw": _score_input},
    "merge_bracket": {"source": "bracket_truth", "to_nchw": _merge_input, "synth_size": (272, 480)},
}
MERGE_RESPONSE = "srgb"  # brackets of a folder are taken as sRGB-encoded; the synthetic camera's curve is sRGB


def preprocessing_of(model: onnx.ModelProto | PathLike) -> str:
    """The pre-processing a model declares in its metadata (``edgehdr.preprocess``), default ``log_radiance``."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    name = {p.key: p.value for p in model.metadata_props}.get("edgehdr.preprocess", "log_radiance")
    if name not in PREPROCESSING:
        raise ValueError(f"model metadata edgehdr.preprocess={name!r}; known: {', '.join(PREPROCESSING)}")
    return name


def check_source(source: PathLike, option: str) -> None:
    """``source`` is 'synth', an existing folder or a data-loader hook that imports (``option`` names it in the
    error); a hook's function is looked up, not called."""
    if source == "synth" or Path(source).is_dir():
        return
    if is_hook(source):
        load_hook(source, option)
        return
    raise ValueError(f"{option} {source}: neither 'synth' nor a folder (of .exr/.hdr/.pfm files, of bracket folders, "
                     "or of .npz/.npy tensors) nor a data-loader hook (MODULE:FUNCTION or FILE.py:FUNCTION)")


def same_source(a: PathLike, b: PathLike) -> bool:
    """Whether two data sources are the same data: one folder (however spelt: the resolved path) or one hook
    (the same module, or the same resolved file, and function). ``synth`` is never the same as anything: its
    calibration and held-out scenes come from disjoint seeds."""
    def identity(source: PathLike) -> tuple[str, str] | None:
        text = str(source)
        if text == "synth":
            return None
        if is_hook(text):
            target, sep, function = text.rpartition(":")
            if not sep:
                target, function = text, HOOK_DEFAULT_FUNCTION
            return ("hook", f"{Path(target).resolve() if target.endswith('.py') else target}:{function}")
        return ("path", str(Path(text).resolve()))

    ia = identity(a)
    return ia is not None and ia == identity(b)


# ------------------------------------------------------------------------------------ data for anyone's model
class InputSpec(NamedTuple):
    """A model input as data must match it: numpy dtype, dimensions (ints; a string for a dynamic one; ``None``
    when the model gives no shape)."""

    name: str
    dtype: np.dtype
    dims: list[int | str] | None


def input_specs(model: onnx.ModelProto | PathLike) -> dict[str, InputSpec]:
    """``{name: InputSpec}`` of the fed inputs of an ONNX model (a ModelProto or a path), in graph order."""
    import onnx

    from export.shapes import model_inputs, written_dims

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    specs: dict[str, InputSpec] = {}
    for v in model_inputs(model):
        elem = v.type.tensor_type.elem_type if v.type.HasField("tensor_type") else 0
        if not elem:
            raise ValueError(f"model input {v.name!r} is not a tensor of a known element type; tensor data "
                             "(.npz/.npy, a hook) can only feed tensor inputs")
        specs[v.name] = InputSpec(v.name, np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)), written_dims(v))
    return specs


def _fits(shape: Sequence[int], dims: Sequence[int | str] | None) -> bool:
    return dims is None or (len(shape) == len(dims) and
                            all(not isinstance(d, int) or d == n for d, n in zip(dims, shape)))


def _sample_count(array: np.ndarray, spec: InputSpec, label: str) -> int:
    """1 when ``array`` is one sample of ``spec``; K when it stacks K samples along axis 0 (the input's first
    dimension fixed at B, the array's K*B); ``ValueError`` otherwise."""
    dims = spec.dims
    if dims is None or _fits(array.shape, dims):  # no shape in the model: anything fits
        return 1
    batch = dims[0] if dims and isinstance(dims[0], int) else None
    if batch and array.ndim == len(dims) and array.shape[0] % batch == 0 and _fits((batch, *array.shape[1:]), dims):
        return array.shape[0] // batch
    stacked = ", ".join(["K" if batch == 1 else f"K*{batch}", *(repr(d) for d in (dims or [])[1:])])
    stack = f", or K samples stacked along axis 0: [{stacked}]" if batch else ""
    hint = ""
    if dims and array.ndim == len(dims) - 1 and _fits((batch or 1, *array.shape), dims):
        hint = "; the batch dimension is missing (store x[None])"
    raise ValueError(f"{label}: array {spec.name!r} has shape {list(array.shape)}; model input {spec.name!r} takes "
                     f"{dims} (one sample{stack}){hint}")


def _require_inputs(label: str, present: Collection[str], specs: Mapping[str, InputSpec]) -> None:
    missing = [name for name in specs if name not in present]
    if missing:
        raise ValueError(f"{label}: no array named {', '.join(repr(m) for m in missing)} (model input"
                         f"{'s' if len(missing) > 1 else ''}); it holds {sorted(present)}, the model's inputs are "
                         f"{list(specs)}: one array per input, named after it")


def samples_of(arrays: Mapping[str, np.ndarray], specs: Mapping[str, InputSpec], label: str) -> list[Feed]:
    """Samples ``{input: array}`` from one file's (or one hook dict's) arrays, checked against the model.

    Every model input needs an array of that name (others are ignored) with the input's
    dtype exactly, finite values, and the input's shape or a stack of it along axis 0
    (``_sample_count``; all arrays stacking the same number). ``label`` (the file, or the
    hook and dict number) starts every error, which names the array, expected vs found.
    """
    _require_inputs(label, list(arrays), specs)
    counts: dict[str, int] = {}
    for name, spec in specs.items():
        array = arrays[name]
        if array.dtype != spec.dtype:
            raise ValueError(f"{label}: array {name!r} is {array.dtype}; model input {name!r} takes {spec.dtype} "
                             f"(nothing is cast: store it as {spec.dtype})")
        counts[name] = _sample_count(array, spec, label)
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            nan = int(np.isnan(array).sum())
            raise ValueError(f"{label}: array {name!r} has {nan} NaN and {int((~np.isfinite(array)).sum()) - nan} "
                             "infinite values; calibration and validation data must be finite")
    if len(set(counts.values())) > 1:
        raise ValueError(f"{label}: the arrays stack different numbers of samples along axis 0: {counts}")
    n = next(iter(counts.values()), 1)
    if n == 1:
        return [{name: np.ascontiguousarray(arrays[name]) for name in specs}]
    # n > 1: every array stacks samples, so every input's first dimension is fixed (``_sample_count``)
    batch = {name: spec.dims[0] for name, spec in specs.items() if spec.dims and isinstance(spec.dims[0], int)}
    return [{name: np.ascontiguousarray(arrays[name][k * batch[name]:(k + 1) * batch[name]]) for name in specs}
            for k in range(n)]


def tensor_files(folder: PathLike) -> list[Path]:
    """The ``.npz`` and ``.npy`` files of ``folder`` in name order (names starting with '.' skipped)."""
    return sorted(p for p in Path(folder).iterdir()
                  if p.suffix.lower() in TENSOR_SUFFIXES and not p.name.startswith(".") and p.is_file())


def _unreadable(path: Path, exc: Exception) -> ValueError:
    why = "pickled (object) arrays are not loaded: store plain numeric arrays" if "allow_pickle" in str(exc) \
        else f"{type(exc).__name__}: {exc}"
    return ValueError(f"{path}: not a readable {path.suffix.lower()} file ({why})")


def _file_samples(path: Path, specs: Mapping[str, InputSpec]) -> list[Feed]:
    if path.suffix.lower() == ".npy":
        if len(specs) != 1:
            raise ValueError(f"{path}: a .npy file holds one array, the model has inputs {list(specs)}: give one .npz "
                             "per sample holding an array per input, named after it")
        try:
            array = np.load(path, allow_pickle=False)
        except Exception as exc:  # numpy raises many types for a damaged file
            raise _unreadable(path, exc) from exc
        return samples_of({next(iter(specs)): array}, specs, str(path))
    try:
        with np.load(path, allow_pickle=False) as npz:
            _require_inputs(str(path), npz.files, specs)
            arrays = {name: npz[name] for name in specs}  # only the model's inputs are read
    except ValueError as exc:
        if str(exc).startswith(str(path)):
            raise
        raise _unreadable(path, exc) from exc
    except Exception as exc:  # zipfile, OSError, EOFError for a damaged file
        raise _unreadable(path, exc) from exc
    return samples_of(arrays, specs, str(path))


def tensor_folder_samples(folder: PathLike, specs: Mapping[str, InputSpec]) -> Iterator[tuple[Path, Feed]]:
    """``(file, sample)`` pairs from the ``.npz``/``.npy`` files of ``folder`` in name order, each file checked
    (``samples_of``) when it is reached: a consumer that stops early leaves later files unread."""
    for path in tensor_files(folder):
        for sample in _file_samples(path, specs):
            yield path, sample


def is_hook(source: PathLike) -> bool:
    """``source`` is written as a data-loader hook: ``MODULE.PATH:FUNCTION``, ``FILE.py:FUNCTION`` or ``FILE.py``."""
    text = str(source)
    if text == "synth" or Path(text).is_dir():
        return False
    target, sep, function = text.rpartition(":")
    if not sep:
        return text.endswith(".py")
    return function.isidentifier() and (target.endswith(".py") or
                                        all(part.isidentifier() for part in target.split(".")))


def _where(exc: BaseException) -> str:
    """``Type: message (file:line)`` of an exception raised in user code, the innermost frame."""
    import traceback

    if isinstance(exc, SyntaxError):  # its message names the file and line already
        return f"{type(exc).__name__}: {exc}"
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith("<frozen")]
    at = f" ({frames[-1].filename}:{frames[-1].lineno})" if frames else ""
    return f"{type(exc).__name__}: {exc}{at}"


def load_hook(spec: PathLike, option: str = "--calib") -> Callable[[], object]:
    """The function a data-loader hook names, imported (``FILE.py`` runs once per version of the file)."""
    target, sep, function = str(spec).rpartition(":")
    if not sep:
        target, function = str(spec), HOOK_DEFAULT_FUNCTION
    label = f"{option} {spec}"
    if target.endswith(".py"):
        path = Path(target)
        if not path.is_file():
            raise FileNotFoundError(f"{label}: {path}: no such file (a data-loader hook is MODULE:FUNCTION or "
                                    "FILE.py:FUNCTION)")
        stat = path.stat()
        key = "_edgehdr_export_hook_" + hashlib.sha256(
            f"{path.resolve()}:{stat.st_mtime_ns}:{stat.st_size}".encode()).hexdigest()[:16]
        module = sys.modules.get(key)
        if module is None:
            loader_spec = importlib.util.spec_from_file_location(key, path)
            if loader_spec is None or loader_spec.loader is None:
                raise ValueError(f"{label}: {path}: Python has no loader for this file (a data-loader hook is "
                                 "MODULE:FUNCTION or FILE.py:FUNCTION)")
            module = importlib.util.module_from_spec(loader_spec)
            try:
                loader_spec.loader.exec_module(module)
            except Exception as exc:  # user code
                raise ValueError(f"{label}: running {path} failed: {_where(exc)}") from exc
            sys.modules[key] = module
    else:
        try:
            module = importlib.import_module(target)
        except ModuleNotFoundError as exc:
            if exc.name and (target == exc.name or target.startswith(exc.name + ".")):
                raise ValueError(f"{label}: no module named {exc.name!r}: install it, add its folder to PYTHONPATH, "
                                 "or give the file (FILE.py:FUNCTION)") from exc
            raise ValueError(f"{label}: importing {target} failed: {_where(exc)}") from exc
        except Exception as exc:  # user code
            raise ValueError(f"{label}: importing {target} failed: {_where(exc)}") from exc
    fn = getattr(module, function, None)
    if fn is None:
        raise ValueError(f"{label}: {target} has no function {function!r}")
    if not callable(fn):
        raise ValueError(f"{label}: {target}.{function} is a {type(fn).__name__}, not a function")
    return fn


def hook_samples(spec: PathLike, specs: Mapping[str, InputSpec], *,
                 option: str = "--calib") -> Iterator[tuple[str, Feed]]:
    """``(label, sample)`` pairs from a data-loader hook: its function called with no arguments returns an
    iterable of dicts ``{input name: numpy array}``, each checked as a file's arrays are (``samples_of``).
    Drawn lazily: an endless generator is fine."""
    fn = load_hook(spec, option)
    label = f"{option} {spec}"
    try:
        returned = fn()
    except Exception as exc:  # user code
        raise ValueError(f"{label}: calling it raised {_where(exc)}") from exc
    if isinstance(returned, (Mapping, np.ndarray, str, bytes)) or not hasattr(returned, "__iter__"):
        raise ValueError(f"{label}: returned {type(returned).__name__} {_short(returned)}; a hook returns an "
                         "iterable (list, generator) of dicts {input name: numpy array}, one per sample")
    iterator = iter(returned)
    k = 0
    while True:
        try:
            item = next(iterator)
        except StopIteration:
            return
        except Exception as exc:  # user code
            raise ValueError(f"{label}: raised {_where(exc)} while producing dict {k}") from exc
        where = f"{label} dict {k}"
        if not isinstance(item, Mapping):  # a bad input for the CLI (ValueError: exit 2), not a bug
            raise ValueError(
                f"{where}: a {type(item).__name__}; a hook yields one dict {{input name: numpy array}} per sample")
        _require_inputs(where, [str(key) for key in item], specs)
        arrays: dict[str, np.ndarray] = {}
        for name in specs:
            value = item[name]
            if not isinstance(value, np.ndarray):
                try:
                    value = np.asarray(value) if hasattr(value, "__array__") else None
                except Exception:  # noqa: BLE001 - e.g. a GPU tensor: refused below
                    value = None
                if value is None:
                    raise ValueError(f"{where}: {name!r} is a {type(item[name]).__name__}; expected a numpy array "
                                     "(on the CPU)")
            arrays[name] = value
        for sample in samples_of(arrays, specs, where):
            yield where, sample
        k += 1


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _fingerprint(feeds: Iterable[Feed]) -> str:
    """sha256 over the samples as fed (names, dtypes, shapes, bytes), in order: the data set's identity."""
    digest = hashlib.sha256()
    for feed in feeds:
        for name in sorted(feed):
            array = np.ascontiguousarray(feed[name])
            digest.update(f"{name}|{array.dtype.str}|{array.shape}|".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


def is_tensor_source(source: PathLike) -> bool:
    """``source`` is data for anyone's model: a hook, or a folder holding ``.npz``/``.npy`` files."""
    if source == "synth":
        return False
    if is_hook(source):
        return True
    return Path(source).is_dir() and bool(tensor_files(source))


def user_feeds(model: onnx.ModelProto | PathLike, source: PathLike, count: int, *, role: str = "calibration",
               split: bool = False, option: str = "--calib") -> tuple[list[Feed], dict[str, Any]]:
    """Feeds from user tensors (a ``.npz``/``.npy`` folder or a hook) for ``model`` (a ModelProto with its
    shapes already fixed, or a path) and a description for the manifest.

    ``split``: the source serves both roles, so every fifth sample is the held-out set's
    and the others calibration's; otherwise all samples serve ``role``. At most ``count``
    samples are drawn (later files stay unread).
    """
    specs = input_specs(model)
    stream: Iterator[tuple[str | Path, Feed]]
    description: dict[str, Any]
    if is_hook(source):
        stream = hook_samples(source, specs, option=option)
        description = {"source": str(source), "format": "python hook"}
    else:
        files = tensor_files(source)
        stream = tensor_folder_samples(source, specs)
        description = {"source": str(source),
                       "format": "+".join(s[1:] for s in TENSOR_SUFFIXES if any(p.suffix.lower() == s for p in files))}
    feeds: list[Feed] = []
    origins: list[object] = []  # the file (or the hook and dict number) of each sample
    for index, (origin, sample) in enumerate(stream):
        if split and (index % 5 == 4) != (role == "holdout"):
            continue
        feeds.append(sample)
        origins.append(origin)
        if len(feeds) >= count:
            break
    if not feeds:
        need = " (the same source serves calibration and validation: at least 5 samples to hold one out)" \
            if split else ""
        raise ValueError(f"{option} {source}: no {role} samples{need}")
    if description["format"] != "python hook":
        description["files"] = len(dict.fromkeys(origins))
    description.update(split="every 5th sample held out" if split else "all samples",
                       inputs={name: {"shape": list(feeds[0][name].shape), "dtype": str(feeds[0][name].dtype)}
                               for name in specs},
                       sha256=_fingerprint(feeds))
    return feeds, description


class _SceneSize(TypedDict, total=False):
    height: int
    width: int


@overload
def model_feeds(model_path: PathLike, source: PathLike, count: int, *, role: str = ...,
                with_items: Literal[False] = ..., shapes: ShapeOverrides | None = ..., split: bool | None = ...,
                option: str | None = ...) -> tuple[list[Feed], dict[str, Any]]: ...


@overload
def model_feeds(model_path: PathLike, source: PathLike, count: int, *, role: str = ..., with_items: Literal[True],
                shapes: ShapeOverrides | None = ..., split: bool | None = ...,
                option: str | None = ...) -> tuple[list[Feed], dict[str, Any], list[Any]]: ...


def model_feeds(model_path: PathLike, source: PathLike, count: int, *, role: str = "calibration",
                with_items: bool = False, shapes: ShapeOverrides | None = None, split: bool | None = None,
                option: str | None = None
                ) -> tuple[list[Feed], dict[str, Any]] | tuple[list[Feed], dict[str, Any], list[Any]]:
    """Feeds for a model from ``source`` ('synth', a folder or a hook) and a description for the manifest.

    ``role`` is 'calibration' or 'holdout': synthetic data comes from disjoint seed
    ranges; a folder of HDR images or brackets gives every fifth item to the held-out set
    and the rest to calibration, unless ``split`` is False (the folder serves ``role``
    alone: all its items). User tensors (a ``.npz``/``.npy`` folder or a hook, see
    the module notes) are fed as they are: split that way when ``split`` (the source
    serves both roles), else all to ``role``; their description has ``preprocess``
    'none'. Otherwise the model's single image input decides the shape. ``shapes``
    (``{input: dims}``, ``export.shapes``) fixes dynamic dimensions. ``option`` names the
    source in errors. Returns ``(feeds, description)``, plus the source items (radiance
    maps or brackets; ``None`` per user sample) with ``with_items``.
    """
    import onnx

    from export.shapes import fix_input_shapes, model_inputs, static_shape

    if role not in ("calibration", "holdout"):
        raise ValueError(f"role must be 'calibration' or 'holdout', got {role!r}")
    model = onnx.load(str(model_path), load_external_data=False)
    if shapes:
        model = fix_input_shapes(model, shapes, label=model_path)
    if is_tensor_source(source):
        option = option or ("--calib" if role == "calibration" else "--holdout")
        feeds, description = user_feeds(model, source, count, role=role, split=bool(split), option=option)
        description.update(role=role, samples=len(feeds), preprocess="none")
        return (feeds, description, [None] * len(feeds)) if with_items else (feeds, description)
    inputs = model_inputs(model)
    if len(inputs) != 1:
        raise ValueError(f"{model_path}: calibration feeds one image input, the model has {[v.name for v in inputs]}")
    shape = static_shape(inputs[0], label=model_path,
                         why="calibration" if role == "calibration" else "validation on held-out data")
    if len(shape) != 4:
        raise ValueError(f"{model_path}: input {inputs[0].name!r} has shape {shape}; {role} feeds an NCHW image "
                         "(4 dimensions)")
    kind = preprocessing_of(model)
    spec = PREPROCESSING[kind]
    if source == "synth":
        seed = CALIBRATION_SEED if role == "calibration" else HOLDOUT_SEED
        size: _SceneSize = {}
        if "synth_size" in spec:
            size["height"], size["width"] = spec["synth_size"]
        items: list[Any]
        if spec["source"] == "bracket_truth":  # 3 frames with moving objects, the exact radiance beside them
            items = list(synthetic_brackets(count, 3, seed=seed, moving_objects=2, with_truth=True, **size))
        elif spec["source"] == "tone_mapped":
            items = tone_mapped_pairs(synthetic_hdr(count, seed=seed, **size), count, seed=seed)
        elif spec["source"] == "radiance":
            items = list(synthetic_hdr(count, seed=seed, **size))
        else:
            items = list(synthetic_brackets(count, shape[1] // 3, seed=seed, **size))
        description = {"source": "synthetic scenes", "seeds": [seed, seed + count - 1]}
    else:
        folder = Path(source)
        if not folder.is_dir():
            raise ValueError(f"calibration source {source!r}: neither 'synth' nor a folder nor a data-loader hook "
                         "(MODULE:FUNCTION or FILE.py:FUNCTION)")
        every = list(bracket_folders(folder) if spec["source"].startswith("bracket") else hdr_files(folder))
        whole = split is False  # the folder serves this role alone (build --holdout)
        picked: list[Any] = every if whole else [x for i, x in enumerate(every) if (i % 5 == 4) == (role == "holdout")]
        if spec["source"] == "bracket_truth":
            picked = [(b, None) for b in picked]  # no ground truth for captured brackets
        items = tone_mapped_pairs(picked, count) if spec["source"] == "tone_mapped" else picked[:count]
        description = {"source": str(folder), "split": "all items" if whole else "every 5th item held out"}
    feeds = [{inputs[0].name: spec["to_nchw"](item, shape)} for item in items]
    if not feeds:
        need = "" if source == "synth" or split is False else " (a folder needs at least 5 items to hold one out)"
        raise ValueError(f"{source}: no {role} samples{need}")
    description.update(role=role, samples=len(feeds), preprocess=kind)
    return (feeds, description, items) if with_items else (feeds, description)


class CalibrationReader:
    """ONNX Runtime ``CalibrationDataReader`` over a list of feeds (re-iterable via ``rewind``)."""

    def __init__(self, feeds: Iterable[Feed], description: dict[str, Any] | None = None) -> None:
        self.feeds = list(feeds)
        self.description = {"samples": len(self.feeds), **(description or {})}
        self._it = iter(self.feeds)

    def get_next(self) -> Feed | None:
        return next(self._it, None)

    def rewind(self) -> None:
        self._it = iter(self.feeds)

    def __len__(self) -> int:
        return len(self.feeds)
