"""TMQI, the tone-mapped image quality index (Yeganeh & Wang 2013).

Scores an SDR rendering of an HDR image without a viewer: multi-scale structural
fidelity ``S`` (does the SDR keep the HDR image's visible structure?) and
statistical naturalness ``N`` (does its brightness and contrast look like a
natural image?), combined as ``Q = a S^alpha + (1 - a) N^beta``. The teacher of
the neural TMO and the target of the NoR-VDPNet TMO task.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypedDict

import cv2
import numpy as np
from numpy.typing import ArrayLike

__all__ = ["tmqi", "TMQIResult", "structural_fidelity", "statistical_naturalness", "TMQI_CONSTANTS"]

class _TMQIConstants(TypedDict):
    a: float
    alpha: float
    beta: float
    levels: int
    level_weights: tuple[float, ...]
    brightness_mean: float
    brightness_std: float
    contrast_beta: tuple[float, float]
    contrast_scale: float
    block: int
    window_size: int
    window_sigma: float
    C1: float
    C2: float


# Published constants (Yeganeh & Wang 2013, sec. IV; authors' code).
TMQI_CONSTANTS: _TMQIConstants = {
    "a": 0.8012,
    "alpha": 0.3046,
    "beta": 0.7088,
    "levels": 5,
    "level_weights": (0.0448, 0.2856, 0.3001, 0.2363, 0.1333),
    "brightness_mean": 115.94,
    "brightness_std": 27.99,
    "contrast_beta": (4.4, 10.1),
    "contrast_scale": 64.29,
    "block": 11,
    "window_size": 11,
    "window_sigma": 1.5,
    "C1": 0.01,
    "C2": 10.0,
}
_TMQI_LUMA = np.array([0.213, 0.715, 0.072])  # the authors' lum()


@dataclass
class TMQIResult:
    Q: float
    S: float
    N: float
    s_local: tuple[float, ...]


def _erf(x: np.ndarray) -> np.ndarray:
    # Abramowitz & Stegun 7.1.26, |error| < 1.5e-7; vectorised (no SciPy dependency).
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = ((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592
    y = 1.0 - poly * t * np.exp(-x * x)
    return sign * y


def _norm_cdf(x: np.ndarray, mu: float, sigma: float) -> np.ndarray:
    return 0.5 * (1.0 + _erf((x - mu) / (sigma * math.sqrt(2.0))))


def _beta_pdf(x: ArrayLike, a: float, b: float) -> np.ndarray:
    x = np.clip(np.asarray(x, np.float64), 1e-300, 1.0 - 1e-16)
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    return np.exp((a - 1) * np.log(x) + (b - 1) * np.log1p(-x) - log_beta)


def _gauss_window() -> np.ndarray:
    k = cv2.getGaussianKernel(TMQI_CONSTANTS["window_size"], TMQI_CONSTANTS["window_sigma"], cv2.CV_64F)
    window = k @ k.T
    return window / window.sum()


def _local_fidelity(l_hdr: np.ndarray, l_ldr: np.ndarray, window: np.ndarray, spatial_freq: float) -> float:
    def filt(img: np.ndarray) -> np.ndarray:
        # MATLAB filter2(..., 'same'): correlation with zero padding.
        return cv2.filter2D(img, cv2.CV_64F, window, borderType=cv2.BORDER_CONSTANT)

    mu1, mu2 = filt(l_hdr), filt(l_ldr)
    s1 = np.sqrt(np.maximum(filt(l_hdr * l_hdr) - mu1 * mu1, 0.0))
    s2 = np.sqrt(np.maximum(filt(l_ldr * l_ldr) - mu2 * mu2, 0.0))
    s12 = filt(l_hdr * l_ldr) - mu1 * mu2
    # Mannos-Sakrison CSF sets the visibility threshold of local contrast (eq. 6-8).
    csf = 100.0 * 2.6 * (0.0192 + 0.114 * spatial_freq) * math.exp(-((0.114 * spatial_freq) ** 1.1))
    u = 128.0 / (1.4 * csf)
    p1 = _norm_cdf(s1, u, u / 3.0)
    p2 = _norm_cdf(s2, u, u / 3.0)
    c1, c2 = TMQI_CONSTANTS["C1"], TMQI_CONSTANTS["C2"]
    smap = ((2 * p1 * p2 + c1) / (p1 * p1 + p2 * p2 + c1)) * ((s12 + c2) / (s1 * s2 + c2))
    return float(smap.mean())


def _downsample2(img: np.ndarray) -> np.ndarray:
    # MATLAB imfilter(ones(2)/4, 'symmetric') then (1:2:end): means of 2x2 blocks.
    h, w = img.shape
    padded = np.pad(img, ((0, h % 2), (0, w % 2)), mode="symmetric")
    return 0.25 * (padded[0::2, 0::2] + padded[1::2, 0::2] + padded[0::2, 1::2] + padded[1::2, 1::2])


def structural_fidelity(l_hdr: np.ndarray, l_ldr: np.ndarray) -> tuple[float, tuple[float, ...]]:
    """Multi-scale structural fidelity ``S`` and its per-scale values (eq. 3-9)."""
    window = _gauss_window()
    f = 32.0
    s_local = []
    a, b = l_hdr, l_ldr
    for _ in range(TMQI_CONSTANTS["levels"]):
        f /= 2.0
        s_local.append(_local_fidelity(a, b, window, f))
        a, b = _downsample2(a), _downsample2(b)
    weights = np.asarray(TMQI_CONSTANTS["level_weights"])
    s = float(np.prod(np.power(np.maximum(s_local, 0.0), weights)))
    return s, tuple(s_local)


def statistical_naturalness(l_ldr: ArrayLike) -> float:
    """Statistical naturalness ``N = P_m P_d`` (eq. 10-13) of an SDR luminance in [0, 255].

    The contrast term uses the mean standard deviation of non-overlapping 11x11
    blocks; blocks cut by the image border are ignored (the authors' blkproc
    zero-pads them instead).
    """
    l_ldr = np.asarray(l_ldr, np.float64)
    u = float(l_ldr.mean())
    k = TMQI_CONSTANTS["block"]
    h, w = (l_ldr.shape[0] // k) * k, (l_ldr.shape[1] // k) * k
    if h == 0 or w == 0:
        raise ValueError(f"image smaller than one {k}x{k} block")
    blocks = l_ldr[:h, :w].reshape(h // k, k, w // k, k).transpose(0, 2, 1, 3).reshape(-1, k * k)
    sig = float(blocks.std(axis=1, ddof=1).mean())
    ca, cb = TMQI_CONSTANTS["contrast_beta"]
    mode = (ca - 1) / (ca + cb - 2)
    pc = float(_beta_pdf(sig / TMQI_CONSTANTS["contrast_scale"], ca, cb) / _beta_pdf(mode, ca, cb))
    mu, sd = TMQI_CONSTANTS["brightness_mean"], TMQI_CONSTANTS["brightness_std"]
    pb = math.exp(-0.5 * ((u - mu) / sd) ** 2)
    return pb * pc


def tmqi(hdr: np.ndarray, sdr: np.ndarray) -> TMQIResult:
    """Tone-mapped image quality index of ``sdr`` (uint8 or [0, 255] float) against ``hdr``.

    Returns
    -------
    TMQIResult
        ``Q`` in [0, 1] (higher is better), fidelity ``S``, naturalness ``N`` and
        the per-scale fidelities.

    References
    ----------
    H. Yeganeh and Z. Wang, "Objective quality assessment of tone-mapped images,"
    IEEE TIP 22(2), 2013.
    """
    hdr = np.asarray(hdr, np.float64)
    sdr = np.asarray(sdr)
    if hdr.shape[:2] != sdr.shape[:2]:
        raise ValueError(f"HDR {hdr.shape} and SDR {sdr.shape} differ in size")
    if min(hdr.shape[:2]) < 2 ** (TMQI_CONSTANTS["levels"] - 1) * TMQI_CONSTANTS["window_size"]:
        raise ValueError(f"TMQI needs images of at least 176x176 pixels for 5 scales, got {hdr.shape[:2]}")
    if sdr.dtype.kind == "f" and sdr.max() <= 1.0:
        raise ValueError("SDR image looks normalised to [0, 1]; TMQI expects code values in [0, 255]")
    l_hdr = hdr @ _TMQI_LUMA if hdr.ndim == 3 else hdr
    l_ldr = np.asarray(sdr, np.float64) @ _TMQI_LUMA if sdr.ndim == 3 else np.asarray(sdr, np.float64)
    lmin, lmax = float(l_hdr.min()), float(l_hdr.max())
    if lmax <= lmin:
        raise ValueError("HDR image is constant")
    l_hdr = np.round((2.0**32 - 1) / (lmax - lmin)) * (l_hdr - lmin)
    s, s_local = structural_fidelity(l_hdr, l_ldr)
    n = statistical_naturalness(l_ldr)
    c = TMQI_CONSTANTS
    q = c["a"] * s ** c["alpha"] + (1 - c["a"]) * n ** c["beta"]
    return TMQIResult(Q=float(q), S=s, N=float(n), s_local=s_local)
