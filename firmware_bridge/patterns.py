"""Test patterns of zone values for bringing up a display controller (``edgehdr bridge send``)."""

from __future__ import annotations

import numpy as np

__all__ = ["PATTERNS", "test_pattern"]

PATTERNS = ("gradient", "checker", "random")


def test_pattern(kind: str, rows: int, cols: int, bits: int, frame: int) -> np.ndarray:
    """Zone values (rows, cols) uint16 in 0..2^bits-1 for frame number ``frame``.

    ``gradient``: a diagonal ramp moving one zone per frame (every level from 0 to
    full scale appears); ``checker``: full on/off zones alternating every frame (the
    worst case for a panel's PSF and the driver's slew); ``random``: uniform values,
    reproducible per frame.
    """
    if kind not in PATTERNS:
        raise ValueError(f"unknown test pattern {kind!r}; use one of {', '.join(PATTERNS)}")
    top = (1 << bits) - 1
    yy, xx = np.mgrid[0:rows, 0:cols]
    if kind == "gradient":
        period = rows + cols
        values = ((xx + yy + frame) % period) * top // max(period - 1, 1)
    elif kind == "checker":
        values = ((xx + yy + frame) % 2) * top
    else:
        values = np.random.default_rng(frame).integers(0, top + 1, (rows, cols))
    return np.clip(values, 0, top).astype(np.uint16)


# A pattern generator, not a pytest test. (Set through __dict__: a function's type declares no __test__.)
test_pattern.__dict__["__test__"] = False
