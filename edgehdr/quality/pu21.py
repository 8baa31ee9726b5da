"""PU21 perceptually uniform encoding of absolute luminance (Mantiuk & Azimi 2021).

Turns cd/m^2 into values where equal steps are roughly equally visible, so SDR
metrics (PSNR, SSIM) can be applied to HDR images. Values run from 0 at
0.005 cd/m^2 to about 600 at 10,000 cd/m^2, with about 256 at 100 cd/m^2 (the
SDR peak): the reason PU-PSNR uses 256 as its peak.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from edgehdr.kernelcache import drop_stale_dependents

# The display refinement's kernels freeze this module's range into their compiled code (edgehdr.kernelcache):
# cached ones go when this file changes.
drop_stale_dependents()

__all__ = ["PU21_PARAMS", "PU21_L_MIN", "PU21_L_MAX", "pu21_encode", "pu21_decode", "pu21_derivative"]

PU21_L_MIN = 0.005
PU21_L_MAX = 10000.0

# Published fits, Mantiuk & Azimi 2021 (pu21_encoder); 'banding_glare' is the recommended one.
PU21_PARAMS = {
    "banding": (1.070275272, 0.4088273932, 0.153224308, 0.2520326168, 1.063512885, 1.14115047, 521.4527484),
    "banding_glare": (0.353487901, 0.3734658629, 8.277049286e-05, 0.9062562627, 0.09150303166, 0.9099517204,
                      596.3148142),
    "peaks": (1.043882782, 0.6459495343, 0.3194584211, 0.374025247, 1.114783422, 1.095360363, 384.9217577),
    "peaks_glare": (816.885024, 1479.463946, 0.001253215609, 0.9329636822, 0.06746643971, 1.573435413, 419.6006374),
}


def _params(variant: str) -> tuple[float, float, float, float, float, float, float]:
    try:
        return PU21_PARAMS[variant]
    except KeyError:
        raise ValueError(f"unknown PU21 variant {variant!r}; use one of {', '.join(PU21_PARAMS)}") from None


def pu21_encode(luminance_cd_m2: ArrayLike, variant: str = "banding_glare") -> np.ndarray:
    """``V = p7 (((p1 + p2 Y^p4) / (1 + p3 Y^p4))^p5 - p6)``, ``Y`` clamped to [0.005, 10000] cd/m^2.

    References
    ----------
    R. K. Mantiuk and M. Azimi, "PU21: A novel perceptually uniform encoding for
    adapting existing quality metrics for HDR," Picture Coding Symposium 2021.
    """
    p1, p2, p3, p4, p5, p6, p7 = _params(variant)
    y = np.clip(np.asarray(luminance_cd_m2, dtype=np.float64), PU21_L_MIN, PU21_L_MAX)
    yp = np.power(y, p4)
    return p7 * (np.power((p1 + p2 * yp) / (1.0 + p3 * yp), p5) - p6)


def pu21_decode(values: ArrayLike, variant: str = "banding_glare") -> np.ndarray:
    """Inverse of ``pu21_encode`` (within the clamped range)."""
    p1, p2, p3, p4, p5, p6, p7 = _params(variant)
    v = np.asarray(values, dtype=np.float64)
    t = np.power(np.maximum(v / p7 + p6, 0.0), 1.0 / p5)
    yp = np.maximum(t - p1, 0.0) / np.maximum(p2 - p3 * t, 1e-300)
    return np.power(yp, 1.0 / p4)


def pu21_derivative(luminance_cd_m2: ArrayLike, variant: str = "banding_glare") -> np.ndarray:
    """``dV/dY`` of ``pu21_encode``; zero outside the clamped range [0.005, 10000] cd/m^2.

    ``dV/dY = p7 p5 u^(p5 - 1) p4 Y^(p4 - 1) (p2 - p1 p3) / (1 + p3 Y^p4)^2`` with
    ``u = (p1 + p2 Y^p4) / (1 + p3 Y^p4)``.
    """
    p1, p2, p3, p4, p5, p6, p7 = _params(variant)
    y = np.asarray(luminance_cd_m2, dtype=np.float64)
    inside = (y > PU21_L_MIN) & (y < PU21_L_MAX)
    yc = np.clip(y, PU21_L_MIN, PU21_L_MAX)
    yp = np.power(yc, p4)
    den = 1.0 + p3 * yp
    u = (p1 + p2 * yp) / den
    d = p7 * p5 * np.power(u, p5 - 1.0) * p4 * np.power(yc, p4 - 1.0) * (p2 - p1 * p3) / (den * den)
    return np.where(inside, d, 0.0)
