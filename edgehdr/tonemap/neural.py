"""The real-time neural tone mapper: a small CNN predicts the parametric operator's parameters per region.

The network sees a downsampled log luminance and predicts, on a coarse grid,
the three parameters of the tutorial's parametric operator (Banterle & Artusi,
tone mapping section):

    L_d = L_w^alpha / (L_w^alpha + mu),      C_d = (C_w / L_w)^gamma * L_d

with ``mu = (m * 2^s)^alpha`` written through ``s``, the mid-point in stops
relative to the frame's median luminance ``m`` (so ``L_d = 1 / (1 + 2^-t)`` with
``t = alpha (log2 L_w - log2 m - s)``). The grid is brought to full resolution
edge-aware, as HDRNet does with its bilateral grid (Gharbi et al. 2017): each
parameter map, bilinearly upsampled to 1/4 resolution, is guided-filtered with
the 1/4-resolution log luminance as guide, and the guided filter's linear
coefficients are interpolated per pixel and applied to the full-resolution log
luminance (fast guided filter, He & Sun 2015). The network therefore never
runs at full resolution; the application is one fused numba pass. A saturated
colour whose largest channel would overshoot is scaled down softly, keeping its
chromaticity (``_encode_rolled_row``, ``CHROMA_KNEE``), instead of clipping that
channel alone: bright saturated regions keep their hue and gradation.

Input encoding (the ONNX input ``log_luminance``, (1, 1, 128, 224) float32):
4 x 4 block means of the Rec. 709 luminance, area-resampled to 128 x 224,
``(log2(L) - log2(median) + 16) / 32`` clipped to [0, 1]. Output ``params``
(1, 3, 8, 14): alpha in [0.2, 1.6], s in [-6, 10] stops, gamma in [0.3, 1.3].

The training recipe (``edgehdr/models/training/train_tmo.py``) renders with a
PyTorch twin of ``apply_parameter_grid``; a test holds the two together.

Non-finite pixels follow the policy of ``edgehdr.tonemap.nonfinite``: left out of
the block statistics the network sees, shown black (NaN, ``-inf``) or white
(``+inf``), counted in one warning per call.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import cv2
import numba
import numpy as np

from edgehdr.fastmath import exp2_bits, log2_from_bits
from edgehdr.tonemap.guided import widen_maps
from edgehdr.tonemap.nonfinite import (
    any_nonfinite,
    paint_nonfinite_row,
    report_nonfinite,
)
from edgehdr.tonemap.operators import (
    _MAX_LUM,
    _bits,
    _check_radiance,
    _colour_ratios,
    _output_array,
    frame_statistics,
    srgb8,
)

__all__ = ["TMO_INPUT_SHAPE", "TMO_GRID_SHAPE", "PARAM_RANGES", "CHROMA_KNEE", "encode_tmo_input",
           "apply_parameter_grid", "guide_radius", "NeuralToneMapper", "GUIDE_EPS", "BLOCK", "LOG_STOPS"]

TMO_INPUT_SHAPE = (1, 1, 128, 224)
TMO_GRID_SHAPE = (1, 3, 8, 14)
# Physical ranges of alpha, s (stops from the median) and gamma; the network's last layer maps into them.
PARAM_RANGES = ((0.2, 1.6), (-6.0, 10.0), (0.3, 1.3))
BLOCK = 4  # the working resolution of the edge-aware upsampling is 1/BLOCK of the frame
GUIDE_EPS = 0.25  # guided-filter regulariser, stops^2: parameter edges follow luminance edges above ~0.5 stop
RADIUS_FRACTION = 0.025  # guided-filter radius as a fraction of the frame's long side
LOG_STOPS = 16.0  # the input encoding spans +-16 stops around the median
_MIN_LUM = 1e-9
log = logging.getLogger("edgehdr.tonemap")
_LUMA_R, _LUMA_G, _LUMA_B = 0.2126, 0.7152, 0.0722


def guide_radius(height: int, width: int) -> int:
    """Guided-filter radius in working-resolution pixels (scale-invariant: 2.5 % of the long side)."""
    return max(1, int(round(RADIUS_FRACTION * max(height, width) / BLOCK)))


def _encode_blocks(blocks: np.ndarray):
    small = cv2.resize(blocks, (TMO_INPUT_SHAPE[3], TMO_INPUT_SHAPE[2]), interpolation=cv2.INTER_AREA)
    log_small = np.log2(np.maximum(small, np.float32(_MIN_LUM)))
    key_log2 = float(np.median(log_small))
    x = np.clip((log_small - np.float32(key_log2) + np.float32(LOG_STOPS)) / np.float32(2 * LOG_STOPS), 0.0, 1.0)
    return np.ascontiguousarray(x[None, None], np.float32), key_log2


def encode_tmo_input(radiance: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """The network input and its reference: ``(x (1, 1, 128, 224) float32, key_log2, blocks)``.

    ``key_log2`` is log2 of the median luminance of the downsampled frame (the
    anchor ``s`` is measured from); ``blocks`` the 4 x 4 block-mean luminance that
    the application reuses as its working-resolution guide.
    """
    rgb = _check_radiance(radiance)
    _, _, blocks = frame_statistics(rgb, block=BLOCK)
    x, key_log2 = _encode_blocks(blocks)
    return x, key_log2, blocks


def _coefficients(params: np.ndarray, blocks: np.ndarray, key_log2: float, height: int, width: int):
    """Guided-filter coefficients (a, b) of the three parameter maps at the working resolution, (6, nby, nbx).

    One guided filter per map sharing the guide's box statistics (He et al. 2013, eq. 7-8 with
    the mean of the coefficients over each window).
    """
    params = np.asarray(params, np.float32).reshape(TMO_GRID_SHAPE[1:])
    nby, nbx = blocks.shape
    guide = np.log2(np.maximum(blocks, np.float32(_MIN_LUM))) - np.float32(key_log2)
    r = guide_radius(height, width)
    ksize = (2 * r + 1, 2 * r + 1)

    def box(img: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(img, cv2.CV_32F, ksize, normalize=True, borderType=cv2.BORDER_REFLECT)

    mean_i = box(guide)
    var_i = np.maximum(box(guide * guide) - mean_i * mean_i, 0.0) + np.float32(GUIDE_EPS)
    coef = np.empty((6, nby, nbx), np.float32)
    for c in range(3):
        p = cv2.resize(params[c], (nbx, nby), interpolation=cv2.INTER_LINEAR)
        mean_p = box(p)
        a = (box(guide * p) - mean_i * mean_p) / var_i
        coef[2 * c] = box(a)
        coef[2 * c + 1] = box(mean_p - a * mean_i)
    return coef


def _row_taps(n_src: int, n_dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bilinear taps (half-pixel centres, clamped; OpenCV's INTER_LINEAR and torch's align_corners=False)."""
    f = np.clip((np.arange(n_dst, dtype=np.float64) + 0.5) * (n_src / n_dst) - 0.5, 0.0, n_src - 1)
    i0 = np.minimum(f.astype(np.int32), max(n_src - 2, 0))
    i1 = np.minimum(i0 + 1, n_src - 1).astype(np.int32)
    return i0, i1, (f - i0).astype(np.float32)


# The highlight roll-off: a fully saturated colour's largest channel starts to roll off at this value, a grey
# one's never (``_encode_rolled_row``).
CHROMA_KNEE = 0.8


@numba.njit(fastmath=True, cache=True, inline="always")
def _encode_rolled_row(dst, ld_row, colour_row):
    """sRGB codes of ``C = L_d * colour`` with a soft roll-off of saturated highlights that keeps their
    chromaticity: where the largest channel ``m`` passes a knee ``k = 1 - (1 - CHROMA_KNEE) s`` (``s = 1 - min /
    max``, the colour's saturation), all three channels scale by ``r(m) / m`` with ``r = k + (1 - k) u / (1 + u)``
    (``u`` the excess beyond the knee in units of ``1 - k``): continuous in value and slope at the knee, below 1
    for every finite colour, so the channels keep their ratios (hue and saturation) and their gradation where the
    tutorial's ``(C_w / L_w)^gamma L_d`` clipped the largest channel alone at 255 (a shifted hue, a flat patch).
    Grey (``s = 0``, knee 1) is untouched: white stays reachable. The colour pays in luminance, not in saturation
    (blending towards the luminance instead turned a warm-lit orange table white)."""
    one = np.float32(1.0)
    for x in range(ld_row.size):
        ld = ld_row[x]
        c0, c1, c2 = ld * colour_row[3 * x], ld * colour_row[3 * x + 1], ld * colour_row[3 * x + 2]
        top = max(c0, c1, c2)
        if top > np.float32(CHROMA_KNEE):  # bright pixels only
            saturation = one - max(min(c0, c1, c2), np.float32(0.0)) / top
            span = np.float32(1.0 - CHROMA_KNEE) * saturation
            knee = one - span
            if top > knee:
                u = (top - knee) / max(span, np.float32(1e-30))
                factor = (knee + span * u / (one + u)) / top
                c0, c1, c2 = c0 * factor, c1 * factor, c2 * factor
        dst[3 * x] = srgb8(c0)
        dst[3 * x + 1] = srgb8(c1)
        dst[3 * x + 2] = srgb8(c2)


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _apply_grid_kernel(rgb, bits, coef, key_log2, y0s, y1s, tys, lo, hi, out, row_black, row_white):
    h, w, _ = rgb.shape
    for y in numba.prange(h):
        src = rgb[y].reshape(-1)
        dst = out[y].reshape(-1)
        y0, y1, ty = y0s[y], y1s[y], tys[y]
        # Vertical half of the bilinear interpolation (the horizontal half is done at working rows).
        rows = np.empty((6, w), np.float32)
        for c in range(6):
            r0, r1, rc = coef[c, y0], coef[c, y1], rows[c]
            for x in range(w):
                rc[x] = r0[x] * (1 - ty) + r1[x] * ty
        lum_row = np.empty(w, np.float32)
        for x in range(w):
            lum = (np.float32(_LUMA_R) * src[3 * x] + np.float32(_LUMA_G) * src[3 * x + 1]
                   + np.float32(_LUMA_B) * src[3 * x + 2])
            # Clamped above as the operators' luminance (edgehdr.tonemap.operators): 1 / L stays a normal float32.
            lum_row[x] = min(max(lum, np.float32(_MIN_LUM)), np.float32(_MAX_LUM))
        row_bits = bits[y]
        fix_row = any_nonfinite(row_bits)  # while the row is in cache; fixed up at the end
        lum_bits = lum_row.view(np.int32)
        t_row = np.empty(w, np.float32)
        gam = np.empty(w, np.float32)
        a_al, b_al, a_mid, b_mid, a_gam, b_gam = rows[0], rows[1], rows[2], rows[3], rows[4], rows[5]
        for x in range(w):
            g = log2_from_bits(lum_bits[x]) - key_log2
            alpha = min(max(a_al[x] * g + b_al[x], lo[0]), hi[0])
            mid = min(max(a_mid[x] * g + b_mid[x], lo[1]), hi[1])
            gam[x] = min(max(a_gam[x] * g + b_gam[x], lo[2]), hi[2])
            t_row[x] = min(max(-alpha * (g - mid), np.float32(-126.0)), np.float32(126.0))
        ld_bits = np.empty(w, np.int32)
        for x in range(w):
            ld_bits[x] = exp2_bits(t_row[x])
        powed = ld_bits.view(np.float32)
        ld = np.empty(w, np.float32)
        inv_lum = np.empty(w, np.float32)
        for x in range(w):
            ld[x] = np.float32(1.0) / (np.float32(1.0) + powed[x])
            inv_lum[x] = np.float32(1.0) / lum_row[x]
        # Schlick colour: C_d = L_d (C_w / L_w)^gamma, the power as exp2(gamma log2(ratio)). The three
        # channels go through one contiguous 3W loop (gamma spread to match): per-channel loops over the
        # interleaved row ran 4 ms slower at 1080p (strided loads and byte stores).
        ratio_bits = _colour_ratios(src, inv_lum).view(np.int32)
        gam3 = np.empty(3 * w, np.float32)
        for x in range(w):
            gamma_x = gam[x]
            gam3[3 * x] = gamma_x
            gam3[3 * x + 1] = gamma_x
            gam3[3 * x + 2] = gamma_x
        pw_bits = np.empty(3 * w, np.int32)
        for j in range(3 * w):
            pw_bits[j] = exp2_bits(min(max(gam3[j] * log2_from_bits(ratio_bits[j]), np.float32(-126.0)),
                                       np.float32(126.0)))
        _encode_rolled_row(dst, ld, pw_bits.view(np.float32))
        # Non-finite pixels: what was computed for them is replaced by black or white.
        black = white = 0
        if fix_row:
            black, white = paint_nonfinite_row(dst, row_bits, w, 255)
        row_black[y] = black
        row_white[y] = white
    return out


_LO = np.array([r[0] for r in PARAM_RANGES], np.float32)
_HI = np.array([r[1] for r in PARAM_RANGES], np.float32)


def apply_parameter_grid(radiance: np.ndarray, params: np.ndarray, *, key_log2: float | None = None,
                         blocks: np.ndarray | None = None, out: np.ndarray | None = None) -> np.ndarray:
    """Tone map ``radiance`` with a parameter grid ``params`` (3, gh, gw): alpha, s (stops), gamma.

    ``key_log2`` and ``blocks`` come from ``encode_tmo_input``; what is not given is computed (the
    blocks from the frame, the key from the blocks), what is given is used as it is. ``out``: a
    C-contiguous (H, W, 3) uint8 array to write into. Returns sRGB uint8 (H, W, 3).

    References
    ----------
    F. Banterle and A. Artusi, "Modern HDR imaging at the time of deep learning", tone mapping
    (parametric operator, colour correction after luminance tone mapping). M. Gharbi et al., "Deep
    bilateral learning for real-time image enhancement," ACM TOG 36(4), 2017. K. He and J. Sun,
    "Fast guided filter," arXiv:1505.00996, 2015.
    """
    rgb = _check_radiance(radiance)
    h, w, _ = rgb.shape
    out = _output_array(out, rgb.shape)
    if blocks is None:
        _, _, blocks = frame_statistics(rgb, block=BLOCK)
    if key_log2 is None:
        key_log2 = _encode_blocks(blocks)[1]
    elif not math.isfinite(key_log2):
        raise ValueError(f"key_log2 must be a finite number (log2 of the median luminance), got {key_log2!r}")
    coef = _coefficients(params, blocks, key_log2, h, w)
    coef = widen_maps(coef, w)  # the kernel blends rows
    row_black = np.empty(h, np.int64)
    row_white = np.empty(h, np.int64)
    _apply_grid_kernel(rgb, _bits(rgb), coef, np.float32(key_log2), *_row_taps(coef.shape[1], h), _LO, _HI, out,
                       row_black, row_white)
    report_nonfinite(log, "tonemap neural", row_black.sum(), row_white.sum(), h * w)
    return out


def default_parameter_grid(alpha: float = 0.8, s: float = 0.0, gamma: float = 0.8) -> np.ndarray:
    """A constant grid: the global parametric operator with its mid-point at the median."""
    grid = np.empty(TMO_GRID_SHAPE[1:], np.float32)
    grid[0], grid[1], grid[2] = alpha, s, gamma
    return grid


class NeuralToneMapper:
    """The neural TMO as a stateful per-frame operator: runner + encoding + temporal smoothing + application.

    Parameters
    ----------
    runner : edgehdr.infer.Runner
        A loaded runner for the TMO network (``open_runner(model_path('tmo_net'))``).
    time_constant_s : float
        Exponential smoothing of the parameter grid and of the median (log domain) across
        frames; 0 turns it off. Without it, sensor noise moves the median and the
        predicted grid by small amounts every frame, which reads as flicker.
    """

    def __init__(self, runner, *, time_constant_s: float = 0.4, frame_interval_s: float = 1 / 30):
        self.runner = runner
        self.time_constant_s = float(time_constant_s)
        self.frame_interval_s = float(frame_interval_s)
        self._params: np.ndarray | None = None
        self._key: float | None = None
        self.non_finite_frames = 0  # frames whose network output held a non-finite parameter (``finite_grid``)
        self.non_finite_key_frames = 0  # frames whose median luminance was not finite (the previous one was used)
        description = runner.describe()
        inputs, outputs = description.inputs, description.outputs
        shapes_in = [list(i.shape) for i in inputs]

        def fits(shape: Sequence[Any], wanted: Sequence[int]) -> bool:  # a named (dynamic) dimension fits any size
            return len(shape) == len(wanted) and all(not isinstance(d, int) or d == w for d, w in zip(shape, wanted))

        # A wrong model (another network of the zoo, say) is refused here, not by the runtime at the first frame.
        if len(inputs) != 1 or not fits(inputs[0].shape, TMO_INPUT_SHAPE) or len(outputs) != 1 or (
                all(isinstance(d, int) for d in outputs[0].shape)
                and int(np.prod(outputs[0].shape)) != int(np.prod(TMO_GRID_SHAPE))):
            name = getattr(runner, "model", None) or getattr(runner, "engine_path", "")
            raise ValueError(f"tone-mapping model {name}: expects input {shapes_in} and output "
                             f"{[list(o.shape) for o in outputs]}; the neural tone mapper "
                             f"needs one input {list(TMO_INPUT_SHAPE)} and one output of "
                             f"{int(np.prod(TMO_GRID_SHAPE))} values {list(TMO_GRID_SHAPE)} (a tmo_net model)")
        self._input_name = inputs[0].name

    def reset(self) -> None:
        self._params, self._key = None, None

    def predict(self, radiance: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
        """Raw network prediction for one frame: ``(params (3, 8, 14), key_log2, blocks)``."""
        x, key_log2, blocks = encode_tmo_input(radiance)
        (params,) = self.runner.run({self._input_name: x}).values()
        return np.asarray(params, np.float32).reshape(TMO_GRID_SHAPE[1:]), key_log2, blocks

    def finite_grid(self, params: np.ndarray) -> np.ndarray:
        """The network's grid made safe to apply and to smooth: a non-finite parameter (a broken model or engine,
        e.g. an FP16 overflow) takes the smoothed grid's value for its cell (the default grid's before the first
        frame), counted in ``non_finite_frames`` and named in a warning, so that one bad output neither corrupts
        the picture (the guided upsampling would spread it over a third of the frame) nor stays in the temporal
        state; every parameter is then held to ``PARAM_RANGES``, which the network's last layer maps into."""
        finite = np.isfinite(params)
        if not finite.all():
            self.non_finite_frames += 1
            previous = self._params if self._params is not None else default_parameter_grid()
            log.warning("tone-mapping network returned %d non-finite parameters of %d; those cells keep the "
                        "previous grid's values (frames so far: %d)", params.size - int(np.count_nonzero(finite)),
                        params.size, self.non_finite_frames)
            params = np.where(finite, params, previous)
        return np.clip(params, _LO[:, None, None], _HI[:, None, None]).astype(np.float32)

    def __call__(self, radiance: np.ndarray, *, dt_s: float | None = None, out=None) -> np.ndarray:
        params, key_log2, blocks = self.predict(radiance)
        params = self.finite_grid(params)
        if not math.isfinite(key_log2):  # block means overflowed (radiance near float32's top): not a key to keep
            self.non_finite_key_frames += 1
            log.warning("tone mapping: the frame's median luminance is not finite; the previous one is used "
                        "(frames so far: %d)", self.non_finite_key_frames)
            key_log2 = self._key if self._key is not None else 0.0
        if self.time_constant_s > 0 and self._params is not None and self._key is not None:
            dt = self.frame_interval_s if dt_s is None or not math.isfinite(dt_s) else max(float(dt_s), 0.0)
            k = np.float32(1.0 - math.exp(-dt / self.time_constant_s))
            self._params += k * (params - self._params)
            self._key += float(k) * (key_log2 - self._key)
            smoothed, key = self._params, self._key
        else:
            smoothed, key = params.copy(), key_log2
            self._params, self._key = smoothed, key
        return apply_parameter_grid(radiance, smoothed, key_log2=key, blocks=blocks, out=out)

