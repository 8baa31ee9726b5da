"""NoR-VDPNet: a no-reference quality metric, run through ``edgehdr.infer``.

NoR-VDPNet (Banterle et al., ICIP 2020) regresses a quality score in [0, 1] from
the distorted image alone: ten 3 x 3 convolutions with ReLU (widths 32-32-64-64-
128-128-256-256-512-512, max pooling after each pair, the last convolution with
stride 2), global mean pooling and a two-layer regressor ending in a sigmoid. The
PyTorch definition, with parameter names that load the authors' checkpoints, is
``edgehdr.models.training.nets.NoRVDPNet``; this module holds what the runtime
needs: the input encodings, the scorer and the tone-mapping variants that make
the project's training and calibration data.

Input encodings (as the authors' ``util.py``):

* SDR (8-bit, gamma encoded): PIL's ``L`` luma of the 8-bit RGB codes
  (``(19595 R + 38470 G + 7471 B + 2^15) >> 16``), divided by 255, linearised
  with ``x^2.2`` and mapped to ``2 x - 1`` (so [-1, 1]).
* HDR: Rec. 709 luminance, negatives to 0, clipped at ``max_clip`` (1e6),
  ``log10(1 + L)``.

The shipped default ``norvdpnet_tmo`` is a width-reduced variant (every width
divided by 4) trained in the project to predict the TMQI of a tone-mapped SDR
image from the image alone (the NoR-VDPNet++ "TMO" task); it takes the SDR
encoding at a fixed (1, 1, 128, 192): images are area-resampled to that size,
whatever their aspect ratio.

References
----------
F. Banterle, A. Artusi, A. Moreo, F. Carrara, "NoR-VDPNet: a no-reference high
dynamic range quality metric trained on HDR-VDP 2," ICIP 2020.
F. Banterle, A. Artusi, A. Moreo, F. Carrara, P. Cignoni, "NoR-VDPNet++: real-time
no-reference image quality metrics," IEEE Access 11, 2023.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numba
import numpy as np

from edgehdr.quality.correlation import pearson, spearman
from edgehdr.tonemap.color import REC709_LUMA, luminance
from edgehdr.tonemap.nonfinite import nonfinite_pixels

if TYPE_CHECKING:
    from edgehdr.infer.base import Runner

__all__ = ["model_encoding", "SCORE_INPUT_SHAPE", "pil_luma8", "encode_sdr", "encode_hdr", "NoRVDPNetScorer",
           "NonFiniteScore", "tone_mapping_variants", "VARIANT_KINDS", "WIDE_VARIANT_KINDS", "single_exposure",
           "opencv_render", "spearman", "pearson"]

SCORE_INPUT_SHAPE = (1, 1, 128, 192)
SDR_GAMMA = 2.2
HDR_MAX_CLIP = 1e6


_LINEAR = ((np.arange(256) / 255.0) ** SDR_GAMMA).astype(np.float32)


@numba.njit(cache=True, inline="always")
def _pil_luma(r, g, b):
    """PIL's ``convert('L')`` of one 8-bit RGB pixel: ITU-R 601 luma in 16-bit fixed point, rounded (``pil_luma8``)."""
    return (np.uint32(r) * 19595 + np.uint32(g) * 38470 + np.uint32(b) * 7471 + 0x8000) >> 16


@numba.njit(parallel=True, cache=True, nogil=True)
def _luma_linear(rgb, table, out):
    for y in numba.prange(rgb.shape[0]):
        for x in range(rgb.shape[1]):
            out[y, x] = table[_pil_luma(rgb[y, x, 0], rgb[y, x, 1], rgb[y, x, 2])]


@functools.lru_cache(maxsize=16)
def _area_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Box-overlap taps of area resampling from ``n_in`` to ``n_out <= n_in`` samples (OpenCV's INTER_AREA): output
    ``i`` covers ``[i s, (i + 1) s)`` with ``s = n_in / n_out``; per output its first input index, its tap count and
    the overlaps (float64, a row of ``ceil(s) + 1`` per output, unused taps 0), divided by ``s``. Kept per size pair
    (read-only): built in Python, 1.6 ms for a 1080p frame's."""
    scale = n_in / n_out
    width = int(math.ceil(scale)) + 1
    start = np.empty(n_out, np.int64)
    count = np.empty(n_out, np.int64)
    weight = np.zeros((n_out, width), np.float64)
    for i in range(n_out):
        lo, hi = i * scale, min((i + 1) * scale, n_in)
        first = int(math.floor(lo))
        last = min(int(math.ceil(hi)), n_in)
        start[i], count[i] = first, last - first
        for t, r in enumerate(range(first, last)):
            weight[i, t] = (min(r + 1, hi) - max(r, lo)) / scale
    for a in (start, count, weight):
        a.flags.writeable = False
    return start, count, weight


@numba.njit(parallel=True, cache=True, nogil=True)
def _luma_area(rgb, table, y_start, y_count, y_weight, x_start, x_count, x_weight, out):
    """PIL's luma, linearised through ``table``, area-resampled to ``out`` (``_area_taps`` down and across) in
    one pass over the 8-bit RGB: each output row sums its input rows' weighted linear luma, then each output
    column its columns'. The frame is read once (an input row on an output row's edge twice), where the luma
    image and OpenCV's fractional INTER_AREA took 1.4 + 3.8 ms at 1080p on two cores."""
    n_cols = rgb.shape[1]
    for i in numba.prange(out.shape[0]):
        acc = np.zeros(n_cols, np.float32)
        codes = np.empty(n_cols, np.uint8)
        for t in range(y_count[i]):
            row = rgb[y_start[i] + t].reshape(-1)
            for x in range(n_cols):  # PIL's fixed-point luma: vectorised, apart from the table's reads below
                codes[x] = _pil_luma(row[3 * x], row[3 * x + 1], row[3 * x + 2])
            w = np.float32(y_weight[i, t])
            for x in range(n_cols):
                acc[x] += w * table[codes[x]]
        for j in range(out.shape[1]):
            total = np.float32(0.0)
            for t in range(x_count[j]):
                total += np.float32(x_weight[j, t]) * acc[x_start[j] + t]
            out[i, j] = total


def pil_luma8(rgb_u8: np.ndarray) -> np.ndarray:
    """PIL's ``convert('L')`` of 8-bit RGB: ITU-R 601 luma in 16-bit fixed point, rounded (uint8)."""
    rgb = np.asarray(rgb_u8)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"SDR image must be uint8 RGB (H, W, 3), got {rgb.dtype} {rgb.shape}")
    r, g, b = (rgb[..., i].astype(np.uint32) for i in range(3))
    return ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)


def encode_sdr(rgb_u8: np.ndarray, shape: Sequence[int] | None = SCORE_INPUT_SHAPE) -> np.ndarray:
    """An 8-bit sRGB image -> the SDR input of NoR-VDPNet, (1, 1, H, W) float32 in [-1, 1].

    Luma as PIL's ``L``, ``(luma / 255)^2.2``, ``2 x - 1``; area-resampled to ``shape``
    (``shape=None`` keeps the image's size, as the authors' evaluation does).
    """
    rgb = np.asarray(rgb_u8)
    if rgb.dtype != np.uint8 or not (rgb.ndim == 2 or (rgb.ndim == 3 and rgb.shape[2] == 3)):
        raise ValueError(f"SDR image must be uint8 grey (H, W) or RGB (H, W, 3), got {rgb.dtype} {rgb.shape}")
    if shape is not None and rgb.ndim == 3 and shape[2] <= rgb.shape[0] and shape[3] <= rgb.shape[1]:
        # a reduction, the usual case: luma, linearisation and area resampling fused (``_luma_area``)
        small = np.empty((shape[2], shape[3]), np.float32)
        _luma_area(np.ascontiguousarray(rgb), _LINEAR, *_area_taps(rgb.shape[0], shape[2]),
                   *_area_taps(rgb.shape[1], shape[3]), small)
        return np.ascontiguousarray((small * 2.0 - 1.0)[None, None], dtype=np.float32)
    if rgb.ndim == 2:
        lin = _LINEAR[rgb]
    else:  # PIL's luma and the linearisation fused (numba): 1 ms at 1080p where NumPy takes ~10
        lin = np.empty(rgb.shape[:2], np.float32)
        _luma_linear(np.ascontiguousarray(rgb), _LINEAR, lin)
    if shape is not None:
        lin = cv2.resize(lin, (shape[3], shape[2]), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray((lin * 2.0 - 1.0)[None, None], dtype=np.float32)


def encode_hdr(radiance: np.ndarray, shape: Sequence[int] | None = None, *,
               max_clip: float = HDR_MAX_CLIP) -> np.ndarray:
    """HDR radiance (H, W, 3) or luminance (H, W) -> (1, 1, H, W) float32 ``log10(1 + L)`` (Rec. 709 L, clipped)."""
    rad = np.asarray(radiance, np.float32)
    lum = luminance(rad) if rad.ndim == 3 else rad
    lum = np.nan_to_num(lum, nan=max_clip, posinf=max_clip)
    lum = np.clip(lum, 0.0, max_clip)
    if shape is not None:
        lum = cv2.resize(lum, (shape[3], shape[2]), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(np.log10(1.0 + lum)[None, None], dtype=np.float32)


def model_encoding(onnx_path: str | os.PathLike[str]) -> str:
    """'sdr' or 'hdr': the input encoding a NoR-VDPNet ONNX file declares (``edgehdr.preprocess``)."""
    from edgehdr.infer.ort import model_metadata

    meta = model_metadata(onnx_path)
    return "hdr" if meta.get("edgehdr.preprocess") == "norvdpnet_hdr" else "sdr"


class NonFiniteScore(ValueError):
    """The quality model answered NaN or infinity for an image (a broken model or engine)."""


class NoRVDPNetScorer:
    """Scores SDR frames with a NoR-VDPNet model through a runner (``edgehdr.infer``).

    ``score(image)`` returns the model's output in [0, 1] (for the shipped
    ``norvdpnet_tmo``, a TMQI estimate: higher is better). ``encoding='hdr'`` is for
    the authors' HDR checkpoints (``jpg_xt``, ``itmo``): ``score`` then takes radiance.
    """

    def __init__(self, runner: Runner, *, encoding: str = "sdr") -> None:
        if encoding not in ("sdr", "hdr"):
            raise ValueError(f"encoding must be 'sdr' or 'hdr', got {encoding!r}")
        self.runner, self.encoding = runner, encoding
        description = runner.describe()
        name = getattr(runner, "model", None) or getattr(runner, "engine_path", "")
        if len(description.inputs) != 1:
            raise ValueError(f"quality model {name}: has {len(description.inputs)} inputs; NoR-VDPNet has one "
                             "(1, 1, H, W) grey image")
        first = description.inputs[0]
        self.input_name, shape = first.name, first.shape
        if len(shape) != 4 or shape[1] != 1:
            raise ValueError(f"quality model {name}: input must be (1, 1, H, W) grey, got {list(shape)}")
        # One score per image: a model with a larger output (another network of the zoo, e.g. tmo_net's parameter
        # grid) is refused here; its first value would otherwise rank the images.
        outputs = description.outputs
        if len(outputs) != 1 or any(isinstance(d, int) and d != 1 for d in outputs[0].shape):
            raise ValueError(f"quality model {name}: outputs {[list(o.shape) for o in outputs]}; a NoR-VDPNet "
                             "model has one output of one value per image (e.g. norvdpnet_tmo)")
        # a static input size is resampled to; a dynamic one (an imported checkpoint) takes the image as it is
        self.shape: tuple[int, ...] | None = (tuple(int(d) for d in shape)
                                               if all(isinstance(d, int) and d > 0 for d in shape) else None)

    def score(self, image: np.ndarray) -> float:
        x = encode_sdr(image, self.shape) if self.encoding == "sdr" else encode_hdr(image, self.shape)
        out = self.runner.run({self.input_name: x})
        result = np.asarray(next(iter(out.values())))
        if result.size != 1:
            raise ValueError(f"the quality model returned {result.size} values of shape {list(result.shape)}, "
                             "not one score")
        value = float(result.reshape(-1)[0])
        if not math.isfinite(value):  # a broken model or engine: no score rather than a NaN in averages and ranks
            raise NonFiniteScore(f"the quality model returned a non-finite score ({value})")
        return value

    def rank(self, paths: Iterable[str | os.PathLike[str]]) -> list[tuple[float, Path]]:
        """``(score, path)`` for image files, best first (8-bit images; radiance files for an HDR model)."""
        scored = []
        for name in paths:
            p = Path(name)
            if self.encoding == "hdr":
                from edgehdr.io import read_radiance

                image = read_radiance(p)
            else:  # the checked reader: headers, truncated and damaged JPEGs refused naming the file
                from edgehdr.io import read_ldr_image

                image = read_ldr_image(p)
                if image.dtype == np.uint16:  # 16-bit files reduced to 8 bits: the high byte (imread rounds; +-1)
                    image = (image >> 8).astype(np.uint8)
            try:
                scored.append((self.score(image), p))
            except NonFiniteScore as exc:
                raise NonFiniteScore(f"{p}: {exc}") from exc
        return sorted(scored, key=lambda t: -t[0])


# --- data: tone mappings of a radiance map by the project's operators, with varied parameters ---------------

VARIANT_KINDS = ("reinhard", "reinhard-local", "drago", "parametric", "grid", "exposure")
# The cross-scene recipe's wider set: OpenCV's tone mappers (what users already have), colour pushed over and
# under (Schlick's power far from 1; TMQI sees it only through the luma), and highlights clipped by a
# brightened global curve.
WIDE_VARIANT_KINDS = (*VARIANT_KINDS, "opencv-reinhard", "opencv-drago", "opencv-mantiuk", "saturation",
                      "clipped")


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def single_exposure(radiance: np.ndarray, stops: float) -> np.ndarray:
    """One camera exposure of ``radiance``: the median luminance at 0.18 x 2^stops, clipped, sRGB uint8.

    float32 throughout, as the shipped model's training data was made (``srgb_encode`` works in
    float64 and moves a few codes at rounding boundaries).
    """
    lum = np.asarray(radiance, np.float32) @ REC709_LUMA
    scale = 0.18 * 2.0 ** stops / max(float(np.median(lum)), 1e-12)
    lin = np.clip(np.asarray(radiance, np.float32) * scale, 0.0, 1.0)
    srgb = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * np.power(lin, 1 / 2.4) - 0.055)
    return np.round(srgb * 255.0).astype(np.uint8)


def opencv_render(radiance: np.ndarray, tonemapper: cv2.Tonemap) -> np.ndarray:
    """Radiance RGB through one of OpenCV's tone mappers, as a user of OpenCV renders it: BGR, normalised
    by the maximum, ``process``, non-finite results to 0 (1 for +inf), codes rounded; sRGB uint8 RGB.

    Non-finite pixels follow ``edgehdr.tonemap.nonfinite``'s policy: the maximum is taken over the
    finite values, and a pixel with a NaN or infinite channel goes into ``process`` as the finite
    pixels' median colour (so that it moves OpenCV's frame statistics as little as one pixel can;
    one NaN used to make every pixel NaN, a black frame or an OpenCV assertion) and comes out black
    (NaN or ``-inf`` in a channel) or white (``+inf`` only). ``ValueError`` if no pixel is finite.
    """
    rgb = np.asarray(radiance, np.float32)
    shown_black, shown_white = nonfinite_pixels(rgb)
    bad = shown_black | shown_white
    if bad.any():
        if bad.all():
            raise ValueError(f"opencv_render: all {bad.size} pixels are non-finite (NaN or +-inf): nothing to render")
        rgb = rgb.copy()
        rgb[bad] = np.median(rgb[~bad], axis=0)
    bgr = np.ascontiguousarray(rgb[..., ::-1])
    out = np.nan_to_num(tonemapper.process(bgr / max(float(bgr.max()), 1e-12)), nan=0.0, posinf=1.0, neginf=0.0)
    out[shown_black] = 0.0
    out[shown_white] = 1.0
    return np.ascontiguousarray(np.clip(out * 255.0 + 0.5, 0, 255).astype(np.uint8)[..., ::-1])


def _one_variant(radiance: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, Any]]:
    from edgehdr.tonemap import tonemap
    from edgehdr.tonemap.neural import PARAM_RANGES, TMO_GRID_SHAPE, apply_parameter_grid

    if kind in ("reinhard", "reinhard-local"):
        params = {"key": _loguniform(rng, 0.02, 0.8)}
        return tonemap(radiance, kind, **params), params
    if kind == "drago":
        params = {"bias": float(rng.uniform(0.5, 1.0)), "max_display_cd_m2": _loguniform(rng, 30, 400)}
        return tonemap(radiance, kind, **params), params
    if kind == "parametric":
        params = {"alpha": float(rng.uniform(0.25, 1.5)), "key": _loguniform(rng, 0.02, 0.8),
                  "gamma": float(rng.uniform(0.3, 1.3))}
        return tonemap(radiance, kind, **params), params
    if kind == "grid":  # spatially varying parameters, as the neural TMO produces (smooth random field)
        _, _, gh, gw = TMO_GRID_SHAPE
        grid = np.empty((3, gh, gw), np.float32)
        for c, (lo, hi) in enumerate(PARAM_RANGES):
            centre = rng.uniform(lo + 0.15 * (hi - lo), hi - 0.25 * (hi - lo))
            field = cv2.resize(rng.normal(size=(3, 4)).astype(np.float32), (gw, gh), interpolation=cv2.INTER_CUBIC)
            grid[c] = np.clip(centre + field * rng.uniform(0.0, 0.25) * (hi - lo), lo, hi)
        return apply_parameter_grid(radiance, grid), {"grid_mean": grid.mean(axis=(1, 2)).round(3).tolist()}
    if kind == "exposure":  # a single camera exposure: scale, clip, sRGB (over- and under-exposure)
        stops = float(rng.uniform(-4.0, 4.0))
        return single_exposure(radiance, stops), {"stops": stops}
    if kind.startswith("opencv-"):
        gamma = float(rng.uniform(1.6, 2.8))
        tm: cv2.Tonemap
        if kind == "opencv-reinhard":
            params = {"gamma": gamma, "intensity": float(rng.uniform(-3.0, 3.0)),
                      "light_adapt": float(rng.uniform(0.0, 1.0)), "color_adapt": float(rng.uniform(0.0, 1.0))}
            tm = cv2.createTonemapReinhard(**params)
        elif kind == "opencv-drago":
            params = {"gamma": gamma, "saturation": float(rng.uniform(0.4, 1.4)), "bias": float(rng.uniform(0.6, 0.95))}
            tm = cv2.createTonemapDrago(**params)
        elif kind == "opencv-mantiuk":
            params = {"gamma": gamma, "scale": float(rng.uniform(0.4, 1.0)), "saturation": float(rng.uniform(0.4, 1.4))}
            tm = cv2.createTonemapMantiuk(**params)
        else:
            raise ValueError(f"unknown tone-mapping variant {kind!r}; known: {', '.join(WIDE_VARIANT_KINDS)}")
        return opencv_render(radiance, tm), {k: round(v, 3) for k, v in params.items()}
    if kind == "saturation":  # colour far from the scene's: drained (s < 0.6) or pushed (s > 1.3)
        s = float(rng.uniform(0.1, 0.6) if rng.uniform() < 0.5 else rng.uniform(1.3, 2.0))
        params = {"key": _loguniform(rng, 0.05, 0.5), "saturation": s}
        return tonemap(radiance, "reinhard", **params), params
    if kind == "clipped":  # a global curve brightened until the highlights clip
        params = {"key": _loguniform(rng, 0.3, 2.0), "white": float(rng.uniform(0.5, 2.0))}
        return tonemap(radiance, "reinhard", key=params["key"], white=params["white"]), params
    raise ValueError(f"unknown tone-mapping variant {kind!r}; known: {', '.join(WIDE_VARIANT_KINDS)}")


def tone_mapping_variants(radiance: np.ndarray, count: int, *, seed: int = 0, contrast_loss: float = 0.25,
                          kinds: Sequence[str] = VARIANT_KINDS) -> list[tuple[np.ndarray, dict[str, Any]]]:
    """``count`` 8-bit tone mappings of one radiance map with varied operators and parameters.

    Kinds cycle through ``kinds`` (``VARIANT_KINDS``, or ``WIDE_VARIANT_KINDS`` with OpenCV's
    tone mappers, colour pushed over and under and clipped highlights); a fraction ``contrast_loss`` of them is
    further blended towards mid grey (washed-out renderings), so the set spans good
    and poor results. Returns a list of ``(sdr_u8, description)``; seeded.
    """
    rng = np.random.default_rng(seed)
    out = []
    for i in range(count):
        kind = kinds[(i + seed) % len(kinds)]
        sdr, params = _one_variant(radiance, kind, rng)
        if rng.uniform() < contrast_loss:
            amount = float(rng.uniform(0.2, 0.7))
            sdr = np.round(sdr.astype(np.float32) * (1 - amount) + 128.0 * amount).astype(np.uint8)
            params = {**params, "grey_blend": round(amount, 3)}
        out.append((np.ascontiguousarray(sdr), {"kind": kind, **params}))
    return out


