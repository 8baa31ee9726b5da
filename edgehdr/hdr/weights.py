"""Pixel weighting functions for exposure merging and CRF calibration.

A weight says how much a code value can be trusted: little near black (noise,
quantisation) and near white (clipping, the response's shoulder). All functions
take the normalised code ``x = z / (2^bits - 1)`` in [0, 1] and every one is
forced to zero at the first and last code so clipped samples never vote.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["WEIGHTINGS", "weight_function", "weight_lut"]


def _tutorial(x: np.ndarray) -> np.ndarray:
    # Banterle & Artusi tutorial, and HDR Toolbox's "hat": w(x) = 1 - (2x - 1)^12.
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
    "hat": _tutorial,
    "triangle": _triangle,
    "gaussian": _gaussian,
    "box": _box,
}


def weight_function(name: str) -> Callable[[np.ndarray], np.ndarray]:
    """Return the weighting function called ``name`` (see ``WEIGHTINGS``)."""
    try:
        return WEIGHTINGS[name]
    except KeyError:
        raise ValueError(f"unknown weighting {name!r}; use one of {', '.join(sorted(WEIGHTINGS))}") from None


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
