"""TMQI, the tone-mapped image quality index (Yeganeh & Wang 2013).

Scores an SDR rendering of an HDR image without a viewer: multi-scale structural
fidelity ``S`` (does the SDR keep the HDR image's visible structure?) and
statistical naturalness ``N`` (does its brightness and contrast look like a
natural image?), combined as ``Q = a S^alpha + (1 - a) N^beta``. The teacher of
the neural TMO and the target of the NoR-VDPNet TMO task.

The port reproduces the authors' MATLAB code (``TMQI.m``, version 1.0) as GNU
Octave runs it, to the last bit where it matters: the HDR luminance is stretched
to [0, 2^32 - 1], so the local variances ``E[x^2] - E[x]^2`` lose most of their
digits to cancellation in bright, flat regions, and the rounding noise that
survives decides whether such a region counts as visible structure. The Gaussian
window is therefore applied as Octave's ``conv2`` applies it (a direct 11 x 11
sum, terms added in the same order) rather than separably or through a DFT.
``tests/test_tmqi_reference.py`` holds the port to the reference's scores.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypedDict

import numba
import numpy as np
from numpy.typing import ArrayLike

from edgehdr import kernelcache  # noqa: F401 - before the kernels below: it names their numba cache files

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
    luma: tuple[float, float, float]
    hdr_range: float


# Published constants (Yeganeh & Wang 2013, sec. II-III; the authors' TMQI.m).
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
    "luma": (0.2126, 0.7152, 0.0722),  # the Y row of RGBtoYxy's sRGB -> XYZ matrix
    "hdr_range": 2.0**32 - 1,  # the HDR luminance is stretched to [0, hdr_range]
}


@dataclass
class TMQIResult:
    """TMQI scores: overall ``Q``, structural fidelity ``S``, naturalness ``N``, ``S`` per scale (finest first)."""

    Q: float
    S: float
    N: float
    s_local: tuple[float, ...]


def _octave_sum(values: np.ndarray) -> float:
    # Octave's sum() adds left to right; the window's normalisation depends on it at the last bit.
    total = 0.0
    for v in values:
        total += float(v)
    return total


def _gauss_window() -> np.ndarray:
    """The reference's window, bit for bit: fspecial('gaussian', 11, 1.5), normalised twice."""
    n, sigma = TMQI_CONSTANTS["window_size"], TMQI_CONSTANTS["window_sigma"]
    offsets = np.arange(n, dtype=np.float64) - (n - 1) / 2
    dist = offsets[:, None] ** 2 + offsets[None, :] ** 2
    denom = 2.0 * sigma**2
    window = np.array([[math.exp(-d / denom) for d in row] for row in dist])
    window = window / _octave_sum(window.ravel(order="F"))  # fspecial: f /= sum(f(:))
    column_sums = np.array([_octave_sum(window[:, j]) for j in range(n)])
    return window / _octave_sum(column_sums)  # Slocal: window / sum(sum(window))


_WINDOW = _gauss_window()


def _csf_threshold(spatial_freq: float) -> float:
    # Mannos-Sakrison CSF A(f) (x 100) sets the mean visibility threshold of local contrast.
    csf = 100.0 * 2.6 * (0.0192 + 0.114 * spatial_freq) * math.exp(-((0.114 * spatial_freq) ** 1.1))
    return 128.0 / (1.4 * csf)


_TILE = 512  # columns per pass: the five accumulator rows stay in L1 cache


@numba.njit(parallel=True, cache=True, nogil=True)
def _fidelity_row_sums(a_pad: np.ndarray, b_pad: np.ndarray, window: np.ndarray, tau: float, c1: float,
                       c2: float) -> np.ndarray:  # pragma: no cover - compiled
    # The five local moments of one scale and the S_local map, row by row, summed per row. Each moment is
    # Octave's conv2(x, rot90(w, 2), 'same') of the zero-padded image: terms added kernel column by kernel
    # column (left to right), bottom row first within a column, starting from 0 -- the order of its
    # dconv2o loop, so the cancellation in E[x^2] - E[x]^2 leaves the same residue as in the reference.
    n = window.shape[0]
    h = a_pad.shape[0] - n + 1
    w = a_pad.shape[1] - n + 1
    theta = tau / 3.0
    inv = 1.0 / (theta * math.sqrt(2.0))
    sums = np.zeros(h)
    for p in numba.prange(h):
        m1 = np.empty(_TILE)
        m2 = np.empty(_TILE)
        e11 = np.empty(_TILE)
        e22 = np.empty(_TILE)
        e12 = np.empty(_TILE)
        acc = 0.0
        for q0 in range(0, w, _TILE):
            tw = min(_TILE, w - q0)
            m1[:] = 0.0
            m2[:] = 0.0
            e11[:] = 0.0
            e22[:] = 0.0
            e12[:] = 0.0
            for jj in range(n):
                for ii in range(n - 1, -1, -1):
                    wt = window[ii, jj]
                    ra = a_pad[p + ii, q0 + jj:q0 + jj + tw]
                    rb = b_pad[p + ii, q0 + jj:q0 + jj + tw]
                    for q in range(tw):
                        x = ra[q]
                        y = rb[q]
                        m1[q] += wt * x
                        m2[q] += wt * y
                        e11[q] += wt * (x * x)
                        e22[q] += wt * (y * y)
                        e12[q] += wt * (x * y)
            for q in range(tw):
                mu1 = m1[q]
                mu2 = m2[q]
                s1 = math.sqrt(max(0.0, e11[q] - mu1 * mu1))
                s2 = math.sqrt(max(0.0, e22[q] - mu2 * mu2))
                s12 = e12[q] - mu1 * mu2
                p1 = 0.5 * math.erfc(-(s1 - tau) * inv)
                p2 = 0.5 * math.erfc(-(s2 - tau) * inv)
                acc += ((2.0 * p1 * p2 + c1) / (p1 * p1 + p2 * p2 + c1)) * ((s12 + c2) / (s1 * s2 + c2))
        sums[p] = acc
    return sums


def _local_fidelity(l_hdr: np.ndarray, l_ldr: np.ndarray, spatial_freq: float) -> float:
    r = TMQI_CONSTANTS["window_size"] // 2
    a_pad = np.pad(l_hdr, r)
    b_pad = np.pad(l_ldr, r)
    sums = _fidelity_row_sums(a_pad, b_pad, _WINDOW, _csf_threshold(spatial_freq), TMQI_CONSTANTS["C1"],
                              TMQI_CONSTANTS["C2"])
    return float(sums.sum() / l_hdr.size)


def _downsample2(img: np.ndarray) -> np.ndarray:
    # imfilter(x, ones(2)/4, 'symmetric', 'same') then x(1:2:end, 1:2:end): the mean of each 2 x 2 block, an odd
    # last row / column paired with itself; the four terms added in the order of Octave's dconv2i.
    h, w = img.shape
    p = np.pad(img, ((0, h % 2), (0, w % 2)), mode="edge")
    return ((0.25 * p[1::2, 1::2] + 0.25 * p[0::2, 1::2]) + 0.25 * p[1::2, 0::2]) + 0.25 * p[0::2, 0::2]


def structural_fidelity(l_hdr: ArrayLike, l_ldr: ArrayLike) -> tuple[float, tuple[float, ...]]:
    """Multi-scale structural fidelity ``S`` of two luminance maps and its per-scale values.

    Parameters
    ----------
    l_hdr : array_like, shape (H, W)
        HDR luminance as TMQI sees it, already stretched to [0, 2^32 - 1] (``tmqi`` does this).
    l_ldr : array_like, shape (H, W)
        SDR luminance in code values, [0, 255].

    Returns
    -------
    S : float
        ``prod_l S_l ** w_l`` over the five scales; a negative ``S_l`` counts as 0.
    s_local : tuple of float
        ``S_l``, finest scale first.

    Notes
    -----
    At every scale ``l`` (spatial frequency ``f = 16, 8, 4, 2, 1`` cycles/degree) the local statistics come
    from the 11 x 11 Gaussian window (sigma 1.5) over the zero-padded image, and the local fidelity is
    (Yeganeh & Wang 2013, sec. II-A)

    .. math:: S_{local} = \\frac{2 \\sigma'_x \\sigma'_y + C_1}{\\sigma'^2_x + \\sigma'^2_y + C_1}
              \\cdot \\frac{\\sigma_{xy} + C_2}{\\sigma_x \\sigma_y + C_2},

    with ``C1 = 0.01``, ``C2 = 10`` and ``sigma' = Phi((sigma - tau) / theta)``, the normal CDF centred on the
    visibility threshold ``tau = 128 / (1.4 A(f))``, ``theta = tau / 3``, where
    ``A(f) = 260 (0.0192 + 0.114 f) exp(-(0.114 f)^1.1)`` is the Mannos-Sakrison CSF. ``S_l`` is the mean
    of the map; the next scale is the image low-passed by a 2 x 2 mean and decimated by two. The weights
    ``w_l`` are 0.0448, 0.2856, 0.3001, 0.2363, 0.1333. The reference raises a negative ``S_l`` to a
    fractional power (a complex ``S``); here it counts as 0.

    References
    ----------
    H. Yeganeh and Z. Wang, "Objective quality assessment of tone-mapped images," IEEE Trans. Image
    Process. 22(2), 657-667, 2013.
    """
    a = np.ascontiguousarray(l_hdr, dtype=np.float64)
    b = np.ascontiguousarray(l_ldr, dtype=np.float64)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"luminance maps must be 2-D and of one size, got {a.shape} and {b.shape}")
    f = 32.0
    s_local = []
    for _ in range(TMQI_CONSTANTS["levels"]):
        f /= 2.0
        s_local.append(_local_fidelity(a, b, f))
        a, b = _downsample2(a), _downsample2(b)
    s = 1.0
    for s_l, weight in zip(s_local, TMQI_CONSTANTS["level_weights"]):
        s *= max(s_l, 0.0) ** weight
    return s, tuple(s_local)


def _beta_pdf_ratio(x: float, a: float, b: float) -> float:
    # Beta(a, b) density at x over its value at the mode; 0 outside (0, 1) as betapdf gives.
    if not 0.0 < x < 1.0:
        return 0.0
    mode = (a - 1) / (a + b - 2)
    return math.exp((a - 1) * (math.log(x) - math.log(mode)) + (b - 1) * (math.log1p(-x) - math.log1p(-mode)))


def statistical_naturalness(l_ldr: ArrayLike) -> float:
    """Statistical naturalness ``N`` of an SDR luminance map in code values [0, 255].

    Parameters
    ----------
    l_ldr : array_like, shape (H, W)
        SDR luminance (``tmqi`` uses ``0.2126 R + 0.7152 G + 0.0722 B`` of the 8-bit codes).

    Returns
    -------
    float
        ``N`` in [0, 1]; 1 at the modes of both densities.

    Notes
    -----
    (Yeganeh & Wang 2013, sec. II-B) ``N = P_m P_d`` with the brightness term
    ``P_m = exp(-(m - 115.94)^2 / (2 * 27.99^2))`` of the global mean ``m`` and the contrast term
    ``P_d = Beta(d / 64.29; 4.4, 10.1) / Beta(mode; 4.4, 10.1)`` of ``d``, the mean of the sample standard
    deviations of 11 x 11 blocks, both normalised by their maxima. Blocks follow Octave's ``blkproc``: the
    image is zero-padded at the bottom and right to whole blocks, and a cut block's deviation (zeros included)
    counts like any other.

    References
    ----------
    H. Yeganeh and Z. Wang, "Objective quality assessment of tone-mapped images," IEEE Trans. Image
    Process. 22(2), 657-667, 2013.
    """
    lum = np.asarray(l_ldr, np.float64)
    if lum.ndim != 2 or lum.size == 0:
        raise ValueError(f"SDR luminance must be a non-empty 2-D array, got shape {lum.shape}")
    k = TMQI_CONSTANTS["block"]
    h, w = lum.shape
    padded = np.pad(lum, ((0, -h % k), (0, -w % k)))
    hp, wp = padded.shape
    blocks = padded.reshape(hp // k, k, wp // k, k).transpose(0, 2, 1, 3).reshape(-1, k * k)
    d = float(blocks.std(axis=1, ddof=1).mean())
    m = float(lum.mean())
    ca, cb = TMQI_CONSTANTS["contrast_beta"]
    p_d = _beta_pdf_ratio(d / TMQI_CONSTANTS["contrast_scale"], ca, cb)
    p_m = math.exp(-0.5 * ((m - TMQI_CONSTANTS["brightness_mean"]) / TMQI_CONSTANTS["brightness_std"]) ** 2)
    return p_m * p_d


def _luminance(rgb: np.ndarray) -> np.ndarray:
    # RGBtoYxy's Y: one row of a matrix product, terms added R, G, B.
    r, g, b = TMQI_CONSTANTS["luma"]
    x = rgb.astype(np.float64, copy=False)
    return x[..., 0] * r + x[..., 1] * g + x[..., 2] * b


def tmqi(hdr: ArrayLike, sdr: ArrayLike) -> TMQIResult:
    """Tone-mapped image quality index of ``sdr`` against ``hdr``.

    Parameters
    ----------
    hdr : array_like, shape (H, W, 3) or (H, W)
        Linear HDR radiance (RGB, or luminance), any positive scale; exact zeros are fine.
    sdr : array_like, shape (H, W, 3) or (H, W)
        The SDR rendering in 8-bit code values: uint8, or finite float in [0, 255]. Other integer
        types are refused rather than guessed at (a uint16 image may hold 16-, 12- or 10-bit codes):
        bring them to 0..255 first, e.g. ``x / 257`` for 16-bit codes.

    Returns
    -------
    TMQIResult
        ``Q`` in [0, 1] (higher is better), fidelity ``S``, naturalness ``N`` and the per-scale fidelities.

    Raises
    ------
    ValueError
        Sizes differ, either side is under 11 x 11 pixels (the window; the reference refuses these too), the
        HDR image is constant or not finite, the SDR image is not finite, is of an integer type other than
        uint8, or looks normalised to [0, 1] (a float image whose largest value is above 0 and at most 1; an
        all-black one is scored).

    Notes
    -----
    (Yeganeh & Wang 2013, sec. II-C) ``Q = a S^alpha + (1 - a) N^beta`` with ``a = 0.8012``,
    ``alpha = 0.3046``, ``beta = 0.7088``; ``S`` from :func:`structural_fidelity`, ``N`` from
    :func:`statistical_naturalness`. As in the authors' code, luminance is ``Y = 0.2126 R + 0.7152 G +
    0.0722 B`` on both sides, and the HDR luminance is stretched to
    ``round((2^32 - 1) / (L_max - L_min)) (L - L_min)``, so the index does not depend on the HDR image's
    absolute scale. Images need not be multiples of the 11 x 11 block or of 2^4: every size from 11 x 11 up
    is scored as the reference scores it, matching its ``Q``, ``S`` and ``N`` to about 1e-10.

    References
    ----------
    H. Yeganeh and Z. Wang, "Objective quality assessment of tone-mapped images," IEEE Trans. Image
    Process. 22(2), 657-667, 2013.
    """
    hdr = np.asarray(hdr)
    sdr = np.asarray(sdr)
    if hdr.shape[:2] != sdr.shape[:2]:
        raise ValueError(f"HDR {hdr.shape} and SDR {sdr.shape} differ in size")
    for name, img in (("HDR", hdr), ("SDR", sdr)):
        if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] == 3)):
            raise ValueError(f"{name} image must be (H, W, 3) RGB or (H, W) luminance, got shape {img.shape}")
    n = TMQI_CONSTANTS["window_size"]
    if min(hdr.shape[:2]) < n:
        raise ValueError(f"TMQI needs images of at least {n}x{n} pixels (its window), got {hdr.shape[:2]}")
    if sdr.dtype.kind in "biu" and sdr.dtype != np.uint8:
        raise ValueError(f"SDR image is {sdr.dtype}; TMQI expects 8-bit code values: uint8, or float in [0, 255] "
                         f"(scale other integer codes to 0..255 first, e.g. x / 257 for 16-bit)")
    if sdr.dtype.kind not in "uf":
        raise ValueError(f"SDR image is {sdr.dtype}; TMQI expects code values as uint8 or float in [0, 255]")
    if sdr.dtype.kind == "f":
        if not np.all(np.isfinite(sdr)):
            raise ValueError("SDR image has NaN or infinite values; TMQI expects finite code values in [0, 255]")
        if 0.0 < sdr.max() <= 1.0:
            raise ValueError(f"SDR image looks normalised to [0, 1] (largest value {float(sdr.max())}); TMQI "
                             f"expects code values in [0, 255]: multiply by 255")
    l_hdr = _luminance(hdr) if hdr.ndim == 3 else hdr.astype(np.float64)
    l_ldr = _luminance(sdr) if sdr.ndim == 3 else sdr.astype(np.float64)
    lmin, lmax = float(l_hdr.min()), float(l_hdr.max())
    if not (math.isfinite(lmin) and math.isfinite(lmax)):
        raise ValueError("HDR image has NaN or infinite values; replace them before scoring")
    if lmax <= lmin:
        raise ValueError("HDR image is constant; TMQI needs some contrast in the reference")
    stretch = math.floor(TMQI_CONSTANTS["hdr_range"] / (lmax - lmin) + 0.5)  # MATLAB round(), half away from 0
    l_hdr = stretch * (l_hdr - lmin)
    s, s_local = structural_fidelity(l_hdr, l_ldr)
    nat = statistical_naturalness(l_ldr)
    c = TMQI_CONSTANTS
    q = c["a"] * s ** c["alpha"] + (1 - c["a"]) * nat ** c["beta"]
    return TMQIResult(Q=float(q), S=float(s), N=float(nat), s_local=s_local)
