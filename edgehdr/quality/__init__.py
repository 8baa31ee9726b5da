"""Quality metrics: PSNR (linear, mu-law), PU21 encoding with PU-PSNR and PU-SSIM, SSIM, TMQI, and the
colour and highlight checks of a tone-mapped rendering."""

from edgehdr.quality.metrics import (
    MU_LAW_MU,
    absolute_scale,
    mu_law,
    psnr,
    psnr_mu,
    pu21_psnr,
    pu21_ssim,
    ssim,
)
from edgehdr.quality.pu21 import PU21_L_MAX, PU21_L_MIN, PU21_PARAMS, pu21_decode, pu21_encode
from edgehdr.quality.rendering import colourfulness, highlight_clipping, midtone_saturation
from edgehdr.quality.tmqi import TMQI_CONSTANTS, TMQIResult, statistical_naturalness, structural_fidelity, tmqi

__all__ = [
    "MU_LAW_MU",
    "absolute_scale",
    "mu_law",
    "psnr",
    "psnr_mu",
    "pu21_psnr",
    "pu21_ssim",
    "ssim",
    "PU21_L_MAX",
    "PU21_L_MIN",
    "PU21_PARAMS",
    "pu21_decode",
    "pu21_encode",
    "TMQI_CONSTANTS",
    "TMQIResult",
    "statistical_naturalness",
    "structural_fidelity",
    "tmqi",
    "colourfulness",
    "highlight_clipping",
    "midtone_saturation",
]
