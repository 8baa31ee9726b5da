"""Calibration and held-out data: HDR images (files or synthetic scenes) through the runtime's pre-processing.

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
seed ranges, and a folder is split (every fifth file held out).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

__all__ = ["CALIBRATION_SEED", "HOLDOUT_SEED", "PREPROCESSING", "CalibrationReader", "batches", "bracket_folders",
           "bracket_nchw", "check_source", "hdr_files", "log_encode_nchw", "model_feeds", "preprocessing_of",
           "synthetic_brackets", "synthetic_hdr", "tone_mapped_pairs"]

CALIBRATION_SEED = 0
HOLDOUT_SEED = 100_000  # synthetic held-out scenes start here: disjoint from any calibration set


def log_encode_nchw(radiance: np.ndarray, height: int, width: int, *, stops: float = 16.0) -> np.ndarray:
    """HDR radiance (H, W, 3) -> (1, 3, height, width) float32 in [0, 1]: log2(radiance / median luminance),
    +-``stops`` mapped to [0, 1] (scale-invariant: a radiance map's absolute scale is arbitrary)."""
    small = cv2.resize(np.asarray(radiance, np.float32), (width, height), interpolation=cv2.INTER_AREA)
    luminance = small @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    key = max(float(np.median(luminance)), 1e-12)
    enc = (np.log2(np.maximum(small / key, 2.0**-stops)) + stops) / (2.0 * stops)
    return np.ascontiguousarray(np.clip(enc, 0.0, 1.0).transpose(2, 0, 1)[None], dtype=np.float32)


def bracket_nchw(bracket, height: int, width: int) -> np.ndarray:
    """A bracket (N frames, shortest exposure first) -> (1, 3N, height, width) float32 code values in [0, 1]."""
    order = np.argsort(np.asarray(bracket.exposure_s) * np.asarray(bracket.gain))
    full_scale = float(2 ** bracket.bits - 1)
    planes = []
    for i in order:
        frame = cv2.resize(bracket.frames[i], (width, height), interpolation=cv2.INTER_AREA)
        planes.append(frame.astype(np.float32).transpose(2, 0, 1) / full_scale)
    return np.ascontiguousarray(np.concatenate(planes)[None], dtype=np.float32)


def synthetic_brackets(count: int, frames: int, *, seed: int = 0, height: int = 256, width: int = 384,
                       moving_objects: int = 0, with_truth: bool = False):
    """``count`` synthetic brackets of ``frames`` exposures each (noisy, with hand shake), seeds from ``seed``;
    ``with_truth`` yields ``(bracket, exact radiance of the reference frame)``."""
    from edgehdr.synth import capture_bracket, make_scene, random_camera_motion, suggest_exposures

    for i in range(count):
        scene = make_scene(seed + i, height, width, moving_objects=moving_objects, object_speed_px=0.02 * width)
        exposures = suggest_exposures(scene.radiance, n=frames)
        poses = random_camera_motion(frames, max_shift_px=3.0, seed=seed + i)
        sb = capture_bracket(scene, exposures, seed=seed + i, camera_poses=poses)
        yield (sb.bracket, sb.radiance) if with_truth else sb.bracket


def bracket_folders(folder):
    """Brackets from the sub-folders of ``folder`` (one bracket of LDR images per sub-folder, sorted)."""
    from edgehdr.io import read_ldr_stack

    subdirs = sorted(p for p in Path(folder).iterdir() if p.is_dir())
    if not subdirs:
        raise ValueError(f"{folder}: no sub-folders; bracket calibration data is one folder of LDR images per bracket")
    for d in subdirs:
        yield read_ldr_stack([d])


def synthetic_hdr(count: int, *, seed: int = 0, height: int = 256, width: int = 384):
    """``count`` synthetic scenes (radiance arrays); seeds from ``seed`` up (disjoint sets for calibration vs held-out)."""
    from edgehdr.synth import make_scene

    for i in range(count):
        yield make_scene(seed + i, height, width).radiance


def hdr_files(folder):
    """Radiance maps (.exr/.hdr/.pfm) in a folder, sorted by name."""
    from edgehdr.io import read_radiance
    from edgehdr.io.hdr_files import RADIANCE_SUFFIXES

    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in RADIANCE_SUFFIXES)
    if not paths:
        raise ValueError(f"{folder}: no .exr, .hdr or .pfm files (radiance maps for calibration or validation)")
    for p in paths:
        yield read_radiance(p)


def batches(images, input_name: str, shape, preprocess=None):
    """Model feeds ``{input_name: array}`` from radiance images through ``preprocess``."""
    _, _, h, w = shape
    preprocess = preprocess or (lambda rad: log_encode_nchw(rad, h, w))
    for rad in images:
        yield {input_name: preprocess(rad)}


def _tmo_input(radiance, shape):
    from edgehdr.tonemap.neural import encode_tmo_input  # the runtime stage's own encoder

    return encode_tmo_input(radiance)[0]


def dimming_layout_for(radiance, shape):
    """The layout a dimming model's input implies for a frame: its zone grid on a panel of the frame's size."""
    from edgehdr.dimming import LedLayout
    from edgehdr.dimming.neural import SUBDIVISION

    h, w = np.asarray(radiance).shape[:2]
    return LedLayout(rows=shape[2] // SUBDIVISION, cols=shape[3] // SUBDIVISION, width_px=w, height_px=h,
                     source="calibration")


def _dimming_input(radiance, shape):
    from edgehdr.dimming import display_target
    from edgehdr.dimming.neural import encode_dimming_input  # the runtime stage's own encoder

    layout = dimming_layout_for(radiance, shape)
    return encode_dimming_input(display_target(radiance, layout), layout)


def tone_mapped_pairs(radiance_items, count: int, *, per_scene: int = 4, seed: int = 0):
    """``(radiance, sdr_u8)`` pairs: each radiance map tone mapped ``per_scene`` ways (varied operators and
    parameters, ``edgehdr.quality.norvdpnet.tone_mapping_variants``), ``count`` pairs in all."""
    from edgehdr.quality.norvdpnet import tone_mapping_variants

    pairs = []
    for i, radiance in enumerate(radiance_items):
        pairs += [(radiance, sdr) for sdr, _ in tone_mapping_variants(radiance, per_scene, seed=seed + i)]
        if len(pairs) >= count:
            break
    return pairs[:count]


def _merge_input(item, shape):
    from edgehdr.hdr.neural_merge import encode_merge_input  # the runtime merger's own encoder

    return encode_merge_input(item[0], response=MERGE_RESPONSE)


def _score_input(pair, shape):
    from edgehdr.quality.norvdpnet import encode_sdr  # the runtime scorer's own encoder

    return encode_sdr(pair[1], shape)


PREPROCESSING = {
    "log_radiance": {"source": "radiance", "to_nchw": lambda item, shape: log_encode_nchw(item, shape[2], shape[3])},
    "bracket_ldr": {"source": "bracket", "to_nchw": lambda item, shape: bracket_nchw(item, shape[2], shape[3])},
    "tmo_log_luminance": {"source": "radiance", "to_nchw": _tmo_input},
    "dimming_zone_stats": {"source": "radiance", "to_nchw": _dimming_input, "synth_size": (360, 640)},
    "norvdpnet_sdr": {"source": "tone_mapped", "to_nchw": _score_input},
    "merge_bracket": {"source": "bracket_truth", "to_nchw": _merge_input, "synth_size": (272, 480)},
}
MERGE_RESPONSE = "srgb"  # brackets of a folder are taken as sRGB-encoded; the synthetic camera's curve is sRGB


def preprocessing_of(model) -> str:
    """The pre-processing a model declares in its metadata (``edgehdr.preprocess``), default ``log_radiance``."""
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(str(model), load_external_data=False)
    name = {p.key: p.value for p in model.metadata_props}.get("edgehdr.preprocess", "log_radiance")
    if name not in PREPROCESSING:
        raise ValueError(f"model metadata edgehdr.preprocess={name!r}; known: {', '.join(PREPROCESSING)}")
    return name


def check_source(source, option: str) -> None:
    """``source`` is 'synth' or an existing folder (``option`` names it in the error)."""
    if source != "synth" and not Path(source).is_dir():
        raise ValueError(f"{option} {source}: neither 'synth' nor a folder (of .exr/.hdr/.pfm files, or of "
                         "bracket folders)")


def model_feeds(model_path, source, count: int, *, role: str = "calibration", with_items: bool = False,
                shapes=None):
    """Feeds for a model from ``source`` ('synth' or a folder) and a description for the manifest.

    ``role`` is 'calibration' or 'holdout': synthetic data comes from disjoint seed
    ranges; a folder gives every fifth item to the held-out set and the rest to
    calibration. The model's single image input decides the shape; ``shapes``
    (``{input: dims}``, ``export.shapes``) fixes its dynamic dimensions. Returns ``(feeds,
    description)``, plus the source items (radiance maps or brackets) with ``with_items``.
    """
    import onnx

    from export.shapes import fix_input_shapes, model_inputs, static_shape

    if role not in ("calibration", "holdout"):
        raise ValueError(f"role must be 'calibration' or 'holdout', got {role!r}")
    model = onnx.load(str(model_path), load_external_data=False)
    if shapes:
        model = fix_input_shapes(model, shapes, label=model_path)
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
        size = dict(zip(("height", "width"), spec["synth_size"])) if "synth_size" in spec else {}
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
            raise ValueError(f"calibration source {source!r}: neither 'synth' nor a folder")
        every = list(bracket_folders(folder) if spec["source"].startswith("bracket") else hdr_files(folder))
        picked = [x for i, x in enumerate(every) if (i % 5 == 4) == (role == "holdout")]
        if spec["source"] == "bracket_truth":
            picked = [(b, None) for b in picked]  # no ground truth for captured brackets
        items = tone_mapped_pairs(picked, count) if spec["source"] == "tone_mapped" else picked[:count]
        description = {"source": str(folder), "split": "every 5th item held out"}
    feeds = [{inputs[0].name: spec["to_nchw"](item, shape)} for item in items]
    if not feeds:
        raise ValueError(f"{source}: no {role} samples (a folder needs at least 5 items to hold one out)")
    description.update(role=role, samples=len(feeds), preprocess=kind)
    return (feeds, description, items) if with_items else (feeds, description)


class CalibrationReader:
    """ONNX Runtime ``CalibrationDataReader`` over a list of feeds (re-iterable via ``rewind``)."""

    def __init__(self, feeds, description: dict | None = None):
        self.feeds = list(feeds)
        self.description = {"samples": len(self.feeds), **(description or {})}
        self._it = iter(self.feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):
        self._it = iter(self.feeds)

    def __len__(self):
        return len(self.feeds)
