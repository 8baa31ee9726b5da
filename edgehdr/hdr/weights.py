"""Pixel weighting functions for exposure merging and CRF calibration.

A weight says how much a code value can be trusted: little near black (noise,
quantisation) and near white (clipping, the response's shoulder). The fixed
weightings take the normalised code ``x = z / (2^bits - 1)`` in [0, 1]; the
noise-aware one (``noise``) is derived from a camera noise model and the inverse
response (``noise_weights``). Every weighting is forced to zero at the first and
last code so clipped samples never vote.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike

__all__ = [
    "WEIGHTINGS",
    "NoiseModel",
    "noise_variance",
    "noise_weights",
    "weight_function",
    "weight_lut",
    "weighting_names",
]


@dataclass(frozen=True)
class NoiseModel:
    """Noise of a camera's linear signal, for the ``noise`` weighting.

    With ``X`` the relative linear exposure of a code (``X = f^-1(z)``, 1 at the
    clip of a frame at unit gain) and ``G`` the frame's analogue gain, the model is

        var(X | z) = a G X + b G^2 + (dX/dz)^2 (1/12 + s^2)

    Attributes
    ----------
    shot_gain : float
        ``a``: photon (shot) noise variance per unit of ``X`` at unit gain, i.e.
        ``1 / full_well_e``. Default 1e-4 (10 000 e- full well, a small-pixel sensor).
    read_variance : float
        ``b``: read noise variance in ``X^2`` at unit gain, ``(read_noise_e / full_well_e)^2``.
        Default 9e-8 (3 e- read noise).
    code_sigma : float
        ``s``: noise added after the response, in 8-bit code units (JPEG compression
        and in-camera processing), on top of the quantisation's ``1/12 code^2``.
        Default 0.5.
    black_taper : (float, float)
        Normalised codes ``(zero_until, full_from)``: weight 0 at and below the first,
        a smoothstep up to full weight at the second. Black codes are biased upward
        (negative noise clipped at 0, the tone curve's toe). Default (0.01, 0.06).
    white_taper : (float, float)
        Normalised codes ``(full_until, zero_from)``: full weight up to the first, a
        smoothstep down to 0 at the second. Near the clip the code is biased downward
        (noise clipped at the top) and JPEG pipelines add a tone-curve shoulder and
        colour processing after clipping, none of which the variance model sees.
        Default (0.85, 0.97).
    """

    shot_gain: float = 1e-4
    read_variance: float = 9e-8
    code_sigma: float = 0.5
    black_taper: tuple[float, float] = (0.01, 0.06)
    white_taper: tuple[float, float] = (0.85, 0.97)

    def __post_init__(self) -> None:
        values = (self.shot_gain, self.read_variance, self.code_sigma)
        if not all(math.isfinite(v) and v >= 0 for v in values):
            raise ValueError(f"NoiseModel: shot_gain, read_variance and code_sigma must be finite and >= 0, "
                             f"got {values}")
        b0, b1 = (float(v) for v in self.black_taper)
        w0, w1 = (float(v) for v in self.white_taper)
        if not 0.0 <= b0 < b1 <= w0 < w1 <= 1.0:
            raise ValueError(f"NoiseModel: need 0 <= black_taper[0] < black_taper[1] <= white_taper[0] < "
                             f"white_taper[1] <= 1, got {self.black_taper} and {self.white_taper}")
        object.__setattr__(self, "black_taper", (b0, b1))
        object.__setattr__(self, "white_taper", (w0, w1))

    @classmethod
    def from_sensor(cls, full_well_e: float, read_noise_e: float, code_sigma: float = 0.5) -> NoiseModel:
        """The model of a sensor with ``full_well_e`` electrons at clip and ``read_noise_e`` read noise (std, e-).

        Tapers keep their defaults; change them with ``dataclasses.replace``.
        """
        if not full_well_e > 0 or not read_noise_e >= 0:
            raise ValueError(f"need full_well_e > 0 and read_noise_e >= 0, got {full_well_e} and {read_noise_e}")
        return cls(shot_gain=1.0 / full_well_e, read_variance=(read_noise_e / full_well_e) ** 2, code_sigma=code_sigma)


def _smoothstep(s: np.ndarray) -> np.ndarray:
    s = np.clip(s, 0.0, 1.0)
    return s * s * (3.0 - 2.0 * s)


def _taper(x: np.ndarray, model: NoiseModel) -> np.ndarray:
    (b0, b1), (w0, w1) = model.black_taper, model.white_taper
    return _smoothstep((x - b0) / (b1 - b0)) * _smoothstep((w1 - x) / (w1 - w0))


def noise_variance(inverse_lut: ArrayLike, gain: float = 1.0, model: NoiseModel | None = None) -> np.ndarray:
    """``var(X | z)`` for every code of an inverse response (``X = inverse_lut[c, z]``), float64 (C, K).

    See ``NoiseModel`` for the equation; ``dX/dz`` is the central difference of the LUT.
    """
    model = NoiseModel() if model is None else model
    lut = np.atleast_2d(np.asarray(inverse_lut, dtype=np.float64))
    levels = lut.shape[-1]
    slope = np.gradient(lut, axis=-1)
    code_var = 1.0 / 12.0 + (model.code_sigma * (levels - 1) / 255.0) ** 2
    return model.shot_gain * gain * lut + model.read_variance * gain * gain + slope * slope * code_var


def noise_weights(inverse_lut: ArrayLike, gains: ArrayLike = (1.0,), model: NoiseModel | None = None) -> np.ndarray:
    """Noise-optimal weights of the log-domain merge, per frame, channel and code: (N, C, K) float64.

    Parameters
    ----------
    inverse_lut : (C, K) array
        Inverse camera response, code -> relative linear exposure ``X`` (``CameraResponse.inverse_lut``).
    gains : sequence of float
        Analogue gain of every frame (``Bracket.gain``); scales the shot and read noise.
    model : NoiseModel, optional
        Sensor noise and clip margins; default ``NoiseModel()`` (an 8-bit JPEG camera).

    Returns
    -------
    ndarray, (N, C, K) float64
        ``w = X^2 / var(X)`` times the black and white tapers, scaled to a largest
        value of 1 over all frames; zero at the first and last code.

    Notes
    -----
    The merge averages per-frame estimates of log radiance (Debevec & Malik 1997, eq. 6),
    ``ln E_j = ln X_j - ln t_j`` with ``X_j = f^-1(Z_j)``. Inverse-variance weights are
    the minimum-variance unbiased combination of independent estimates; by the delta
    method

        var(ln E_j) = var(X_j) / X_j^2,   so   w_j = X_j^2 / var(X_j) = SNR_j^2,

    with ``var(X_j) = a G_j X_j + b G_j^2 + (dX/dz)^2 (1/12 + s^2)`` (``NoiseModel``).
    The exposure time does not appear: it cancels between ``ln X`` and ``ln t``.
    Granados et al. (2010) and Hasinoff et al. (2010) derive the maximum-likelihood
    merge in the linear domain, ``E = sum w'_j X_j / t_j / sum w'_j`` with
    ``w'_j = t_j^2 / var(X_j)`` (the inverse variance of ``E_j = X_j / t_j``). Since
    ``X_j = E t_j``, ``w_j = E^2 w'_j``: the two weightings differ by a factor common
    to every frame of a pixel, so to first order they are the same estimator. (On
    synthetic noisy brackets the two give PU21-PSNR within 0.1 dB.)

    The noise model does not see the bias of clipped samples (a code near 255 is the
    clipped value of a noisy signal, a code near 0 the clipped value of a negative
    one) nor the shoulder and colour processing of JPEG pipelines; the tapers of
    ``NoiseModel`` take them out.

    References
    ----------
    M. Granados, B. Ajdin, M. Wand, C. Theobalt, H.-P. Seidel and H. P. A. Lensch,
    "Optimal HDR reconstruction with linear digital cameras," CVPR 2010.
    S. W. Hasinoff, F. Durand and W. T. Freeman, "Noise-optimal capture for high
    dynamic range photography," CVPR 2010.
    """
    model = NoiseModel() if model is None else model
    lut = np.atleast_2d(np.asarray(inverse_lut, dtype=np.float64))
    gains = np.asarray(gains, dtype=np.float64).reshape(-1)
    if lut.ndim != 2 or lut.shape[1] < 4:
        raise ValueError(f"inverse_lut must have shape (C, K) with K >= 4, got {lut.shape}")
    if gains.size == 0 or not np.all(np.isfinite(gains)) or np.any(gains <= 0):
        raise ValueError(f"gains must be positive and finite, got {gains.tolist()}")
    levels = lut.shape[1]
    taper = _taper(np.arange(levels, dtype=np.float64) / (levels - 1), model)
    out = np.empty((gains.size, *lut.shape))
    for i, gain in enumerate(gains):
        var = noise_variance(lut, float(gain), model)
        out[i] = lut * lut / np.maximum(var, 1e-300) * taper
    out[..., 0] = 0.0
    out[..., -1] = 0.0
    peak = float(out.max())
    return out / peak if peak > 0 else out


@functools.cache
def _noise_srgb_peak() -> float:
    x = np.arange(256, dtype=np.float64) / 255.0
    return float(np.max(_noise_srgb_raw(x)))


def _noise_srgb_raw(x: np.ndarray) -> np.ndarray:
    from edgehdr.hdr.crf import ResponseCurve  # crf imports this module

    model = NoiseModel()
    x = np.asarray(x, dtype=np.float64)
    big_x = ResponseCurve("srgb").inverse(x)
    # dX/dz of the sRGB decoding, per 8-bit code.
    slope = np.where(x <= 0.04045, 1.0 / 12.92, 2.4 / 1.055 * np.power((np.clip(x, 0, 1) + 0.055) / 1.055, 1.4)) / 255
    var = model.shot_gain * big_x + model.read_variance + slope * slope * (1.0 / 12.0 + model.code_sigma**2)
    return big_x * big_x / var * _taper(x, model)


def _noise_srgb(x: np.ndarray) -> np.ndarray:
    # The noise weighting as a fixed curve: an 8-bit sRGB camera at unit gain with the default NoiseModel.
    # merge_debevec does not use this: it derives the weights from the actual response (noise_weights).
    return _noise_srgb_raw(x) / _noise_srgb_peak()


def _tutorial(x: np.ndarray) -> np.ndarray:
    # Banterle & Artusi tutorial, and HDR Toolbox: w(x) = 1 - (2x - 1)^12.
    return 1.0 - (2.0 * x - 1.0) ** 12


def _triangle(x: np.ndarray) -> np.ndarray:
    # Debevec & Malik 1997, eq. 4: the hat that rises linearly to mid-grey.
    return 1.0 - np.abs(2.0 * x - 1.0)


def _gaussian(x: np.ndarray) -> np.ndarray:
    # Robertson, Borman & Stevenson 2003: exp(-4 (x - 0.5)^2 / 0.5^2).
    return np.exp(-4.0 * (x - 0.5) ** 2 / 0.25)


def _box(x: np.ndarray) -> np.ndarray:
    # Every unclipped code counts alike; the zero ends are set by weight_lut.
    return np.ones_like(x)


WEIGHTINGS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "tutorial": _tutorial,
    "hat": _triangle,
    "triangle": _triangle,
    "gaussian": _gaussian,
    "box": _box,
    "noise": _noise_srgb,
}
"""Weighting name -> function of the normalised code.

``tutorial``
    ``1 - (2x - 1)^12`` (Banterle & Artusi's tutorial, HDR Toolbox). Nearly flat: codes
    within a few percent of black and white keep most of their weight. Fine on clean
    synthetic frames, but on real JPEG brackets it trusts the crushed toe and the
    clipped shoulder: measured reprojection error 12.5 codes, against 4.4-4.8 for
    ``triangle`` and ``gaussian`` (and 5.9 for OpenCV's merge).
``hat``, ``triangle``
    ``1 - |2x - 1|``, the hat of Debevec & Malik (1997, eq. 4) and of OpenCV's
    ``MergeDebevec``. ``hat`` is a synonym.
``gaussian``
    ``exp(-16 (x - 0.5)^2)`` (Robertson et al. 2003).
``box``
    1 for every code but the first and last.
``noise``
    Noise-optimal ``X^2 / var(X)`` with clip tapers (``noise_weights``). The merge
    derives it from its response and the frames' gains; as a fixed curve (calibration)
    it is that of an 8-bit sRGB camera at unit gain.
"""


def weighting_names() -> tuple[str, ...]:
    """Names accepted by ``weight_function``, ``weight_lut`` and the merge's ``weighting``, sorted."""
    return tuple(sorted(WEIGHTINGS))


def weight_function(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """Return the weighting function called ``name`` (see ``WEIGHTINGS``)."""
    try:
        return WEIGHTINGS[name]
    except KeyError:
        raise ValueError(f"unknown weighting {name!r}; use one of {', '.join(weighting_names())}") from None


def weight_lut(name: str, levels: int) -> np.ndarray:
    """Weights for every code value ``0 .. levels - 1`` as a float32 LUT.

    Notes
    -----
    The first and last code are set to zero whatever the function: a black or
    clipped sample bounds the radiance but does not measure it (the merge's
    fallback handles pixels that are clipped in every frame).
    """
    if levels < 4:
        raise ValueError(f"levels must be >= 4, got {levels}")
    x = np.arange(levels, dtype=np.float64) / (levels - 1)
    lut = np.clip(weight_function(name)(x), 0.0, None)
    lut[0] = 0.0
    lut[-1] = 0.0
    return lut.astype(np.float32)
