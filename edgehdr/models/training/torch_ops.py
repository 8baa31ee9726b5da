"""Differentiable PyTorch twins of runtime pieces the recipes optimise through: TMQI and the grid TMO.

Each mirrors a NumPy/numba implementation in the runtime step by step (same
constants, paddings and interpolation conventions) so that what a network is
trained to maximise is what the runtime renders and the evaluation measures;
tests compare the twins on the same inputs.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from edgehdr.quality.tmqi import TMQI_CONSTANTS
from edgehdr.tonemap.neural import BLOCK, CHROMA_KNEE, GUIDE_EPS, PARAM_RANGES, guide_radius

__all__ = ["tmqi_torch", "apply_grid_torch", "chroma_rolloff_torch", "srgb_encode_torch", "box_symmetric"]

_LUMA709 = (0.2126, 0.7152, 0.0722)
_TMQI_LUMA = _LUMA709  # the reference TMQI code's Y (matched to its outputs, edgehdr.quality.tmqi)


def box_symmetric(x: torch.Tensor, r: int) -> torch.Tensor:
    """Normalised (2r+1)^2 box filter with OpenCV's BORDER_REFLECT (edge pixel repeated) on (B, C, H, W)."""
    def pad(t: torch.Tensor, dim: int) -> torch.Tensor:
        n = t.shape[dim]
        if r > n:
            raise ValueError(f"box radius {r} exceeds the size {n}")
        head = t.narrow(dim, 0, r).flip(dim)
        tail = t.narrow(dim, n - r, r).flip(dim)
        return torch.cat([head, t, tail], dim)

    x = pad(pad(x, 2), 3)
    k = 2 * r + 1
    return F.avg_pool2d(x, k, stride=1)


def srgb_encode_torch(v: torch.Tensor) -> torch.Tensor:
    """Linear [0, 1] -> sRGB code values in [0, 255] (float, not rounded)."""
    v = v.clamp(0.0, 1.0)
    return 255.0 * torch.where(v <= 0.0031308, 12.92 * v, 1.055 * v.clamp_min(1e-12).pow(1 / 2.4) - 0.055)


def apply_grid_torch(radiance: torch.Tensor, params: torch.Tensor, key_log2: torch.Tensor, *,
                     rolloff: bool = True) -> torch.Tensor:
    """``edgehdr.tonemap.neural.apply_parameter_grid`` in PyTorch: (B, 3, H, W) radiance -> sRGB codes.

    ``params`` (B, 3, gh, gw) physical (alpha, s, gamma); ``key_log2`` (B,). H and W must be
    multiples of 4 (the working resolution is exact 4 x 4 block means). ``rolloff``: the runtime's highlight roll-off
    (``chroma_rolloff_torch``); without it each channel clips on its own, as the runtime did before it.
    """
    b, _, h, w = radiance.shape
    if h % BLOCK or w % BLOCK:
        raise ValueError(f"training frames must be multiples of {BLOCK} pixels, got {h}x{w}")
    lum = (_LUMA709[0] * radiance[:, 0:1] + _LUMA709[1] * radiance[:, 1:2]
           + _LUMA709[2] * radiance[:, 2:3]).clamp_min(1e-9)
    blocks = F.avg_pool2d(lum, BLOCK)
    key = key_log2.view(b, 1, 1, 1)
    guide = torch.log2(blocks.clamp_min(1e-9)) - key
    r = guide_radius(h, w)
    nby, nbx = blocks.shape[2:]
    p = F.interpolate(params, size=(nby, nbx), mode="bilinear", align_corners=False)
    mean_i = box_symmetric(guide, r)
    var_i = (box_symmetric(guide * guide, r) - mean_i * mean_i).clamp_min(0.0) + GUIDE_EPS
    mean_p = box_symmetric(p, r)
    a = (box_symmetric(guide * p, r) - mean_i * mean_p) / var_i
    coef_a = box_symmetric(a, r)
    coef_b = box_symmetric(mean_p - a * mean_i, r)
    coef_a = F.interpolate(coef_a, size=(h, w), mode="bilinear", align_corners=False)
    coef_b = F.interpolate(coef_b, size=(h, w), mode="bilinear", align_corners=False)
    g = torch.log2(lum) - key
    maps = coef_a * g + coef_b
    lo = torch.tensor([r_[0] for r_ in PARAM_RANGES], dtype=maps.dtype).view(1, 3, 1, 1)
    hi = torch.tensor([r_[1] for r_ in PARAM_RANGES], dtype=maps.dtype).view(1, 3, 1, 1)
    maps = torch.maximum(torch.minimum(maps, hi), lo)
    alpha, mid, gamma = maps[:, 0:1], maps[:, 1:2], maps[:, 2:3]
    ld = torch.sigmoid(alpha * (g - mid) * math.log(2.0))
    ratio = (radiance / lum).clamp_min(1e-30)
    colour = ld * ratio.pow(gamma)
    return srgb_encode_torch(chroma_rolloff_torch(colour) if rolloff else colour)


def chroma_rolloff_torch(colour: torch.Tensor) -> torch.Tensor:
    """``edgehdr.tonemap.neural._encode_rolled_row``'s roll-off of saturated highlights on (B, 3, H, W) linear
    colour: past a knee ``1 - (1 - CHROMA_KNEE) s`` (``s`` the colour's saturation) the largest channel ``m`` rolls
    off softly below 1 and the other channels scale with it."""
    top = colour.amax(dim=1, keepdim=True)
    low = colour.amin(dim=1, keepdim=True).clamp_min(0.0)
    saturation = 1.0 - low / top.clamp_min(1e-30)
    span = (1.0 - CHROMA_KNEE) * saturation
    knee = 1.0 - span
    u = (top - knee).clamp_min(0.0) / span.clamp_min(1e-30)
    factor = (knee + span * u / (1.0 + u)) / top.clamp_min(1e-30)
    # the knee is never below CHROMA_KNEE: colours beyond it are the ones the runtime's early-out lets through
    return colour * torch.where(top > knee, factor, torch.ones_like(factor))


def _gauss_1d(dtype: torch.dtype) -> torch.Tensor:
    n, sigma = TMQI_CONSTANTS["window_size"], TMQI_CONSTANTS["window_sigma"]
    x = torch.arange(n, dtype=dtype) - (n - 1) / 2
    k = torch.exp(-(x * x) / (2 * sigma * sigma))
    return k / k.sum()


def _norm_cdf(x: torch.Tensor, mu: float, sigma: float) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf((x - mu) / (sigma * math.sqrt(2.0))))


def _downsample2(x: torch.Tensor) -> torch.Tensor:
    h, w = x.shape[2:]
    if h % 2 or w % 2:  # MATLAB 'symmetric' padding on the far side only matters for odd sizes
        x = torch.cat([x, x[:, :, -1:, :]], 2) if h % 2 else x
        x = torch.cat([x, x[:, :, :, -1:]], 3) if w % 2 else x
    return F.avg_pool2d(x, 2)


def _beta_log_pdf(x: torch.Tensor, a: float, b: float) -> torch.Tensor:
    log_beta = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    x = x.clamp(1e-12, 1 - 1e-12)
    return (a - 1) * torch.log(x) + (b - 1) * torch.log1p(-x) - log_beta


def tmqi_torch(hdr: torch.Tensor, sdr_codes: torch.Tensor) -> torch.Tensor:
    """TMQI ``Q`` per image, differentiable in the SDR codes; mirrors ``edgehdr.quality.tmqi``.

    ``hdr`` (B, 3, H, W) radiance, ``sdr_codes`` (B, 3, H, W) in [0, 255]. The authors rescale
    the HDR luminance to [0, 2^32 - 1]; here it is kept in [0, 1] (float32) and the constant
    C2 and the CSF threshold of the HDR side are scaled by 2^-32 to match, which is the same
    index. The five local moments share one separable, grouped Gaussian filtering per scale, in
    float64: HDR local variances in dark regions sit eighteen orders below 1 and are lost in float32.

    References
    ----------
    H. Yeganeh and Z. Wang, "Objective quality assessment of tone-mapped images," IEEE TIP 22(2), 2013.
    """
    c = TMQI_CONSTANTS
    hdr = hdr.double()
    sdr = sdr_codes.double()
    l_hdr = _TMQI_LUMA[0] * hdr[:, 0:1] + _TMQI_LUMA[1] * hdr[:, 1:2] + _TMQI_LUMA[2] * hdr[:, 2:3]
    l_ldr = _TMQI_LUMA[0] * sdr[:, 0:1] + _TMQI_LUMA[1] * sdr[:, 1:2] + _TMQI_LUMA[2] * sdr[:, 2:3]
    with torch.no_grad():
        lmin = l_hdr.amin(dim=(1, 2, 3), keepdim=True).double()
        lmax = l_hdr.amax(dim=(1, 2, 3), keepdim=True).double()
        scale = torch.round((2.0 ** 32 - 1) / (lmax - lmin))  # the authors' integer scale factor
    unit = 2.0 ** -32
    a = (l_hdr - lmin) * scale * unit  # = the authors' HDR luminance x 2^-32
    b = l_ldr
    g = _gauss_1d(torch.float64)
    n = g.numel()
    kx = g.view(1, 1, 1, n).repeat(5, 1, 1, 1)
    ky = g.view(1, 1, n, 1).repeat(5, 1, 1, 1)

    def filt5(x: torch.Tensor) -> torch.Tensor:  # zero-padded 'same' correlation, MATLAB filter2 as in the reference
        x = F.conv2d(x, kx, padding=(0, n // 2), groups=5)
        return F.conv2d(x, ky, padding=(n // 2, 0), groups=5)

    f = 32.0
    s_total = torch.ones(hdr.shape[0], dtype=torch.float64)
    for level in range(c["levels"]):
        f /= 2.0
        m = filt5(torch.cat([a, b, a * a, b * b, a * b], 1))
        mu1, mu2 = m[:, 0:1], m[:, 1:2]
        s1 = (m[:, 2:3] - mu1 * mu1).clamp_min(0.0).sqrt()
        s2 = (m[:, 3:4] - mu2 * mu2).clamp_min(1e-12).sqrt()
        s12 = m[:, 4:5] - mu1 * mu2
        csf = 100.0 * 2.6 * (0.0192 + 0.114 * f) * math.exp(-((0.114 * f) ** 1.1))
        u = 128.0 / (1.4 * csf)
        p1 = _norm_cdf(s1 / unit, u, u / 3.0)
        p2 = _norm_cdf(s2, u, u / 3.0)
        c2 = c["C2"] * unit
        smap = ((2 * p1 * p2 + c["C1"]) / (p1 * p1 + p2 * p2 + c["C1"])) * ((s12 + c2) / (s1 * s2 + c2))
        s_level = smap.mean(dim=(1, 2, 3)).clamp_min(1e-12)
        s_total = s_total * s_level.pow(c["level_weights"][level])
        a, b = _downsample2(a), _downsample2(b)
    # Statistical naturalness over 11 x 11 blocks; like the reference's blkproc, the image is padded with zeros
    # to whole blocks and the border blocks count too (edgehdr.quality.tmqi matches the authors' code).
    k = c["block"]
    mean_level = l_ldr.mean(dim=(1, 2, 3))
    padded = F.pad(l_ldr, (0, (-l_ldr.shape[3]) % k, 0, (-l_ldr.shape[2]) % k))
    blocks = padded.unfold(2, k, k).unfold(3, k, k).reshape(l_ldr.shape[0], -1, k * k)
    sig = blocks.std(dim=2, unbiased=True).mean(dim=1)
    ca, cb = c["contrast_beta"]
    mode = (ca - 1) / (ca + cb - 2)
    log_mode = _beta_log_pdf(torch.tensor(mode, dtype=torch.float64), ca, cb)
    pc = torch.exp(_beta_log_pdf(sig / c["contrast_scale"], ca, cb) - log_mode)
    pb = torch.exp(-0.5 * ((mean_level - c["brightness_mean"]) / c["brightness_std"]) ** 2)
    nat = pb * pc
    return c["a"] * s_total.pow(c["alpha"]) + (1 - c["a"]) * nat.clamp_min(1e-12).pow(c["beta"])


def to_nchw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(np.asarray(image, np.float32).transpose(2, 0, 1)))[None]
