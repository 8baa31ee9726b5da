"""The controller's LED drive curve in integer arithmetic, bit-exact with the reference firmware.

PROTOCOL.md's CONFIG carries ``drive_curve`` (0 linear PWM, 1 power law with
exponent ``drive_gamma_x100 / 100``). A Cortex-M3 has no FPU, so the reference
firmware (``firmware/controller.c``) maps zone levels to 16-bit LED duty through a
257-entry table built at CONFIG time with fixed-point ``log2``/``exp2``, and linear
interpolation between entries. This module is the same arithmetic in Python
integers, so the host can predict every duty value the firmware drives and verify
the firmware's per-frame checksum (``duty_crc32``) exactly. The table is within 1 duty
code of ``round(65535 * x ** gamma)`` for gamma <= 2.2, 2 at 3 and 7 at 10 (the fixed-point
exp2 error grows with the exponent); interpolation adds under 2 codes at gamma 2.2.

References
----------
The power-law drive of the LED backlight is the ``f^-1`` of the dual-modulation
display model in Banterle & Artusi, "Modern HDR Imaging at the Time of Deep
Learning" (local dimming section); the fixed-point log2 by repeated squaring is
C. S. Turner, "A fast binary logarithm algorithm", IEEE Signal Processing Magazine
27(5), 2010.
"""

from __future__ import annotations

import zlib
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

__all__ = ["DUTY_MAX", "drive_table", "duty_crc32", "duty_u16"]

DUTY_MAX = 65535
LUT_STEPS = 256
# round(2 ** (-2 ** -i) * 2 ** 30) for i = 1..16; the same literals are in controller.c.
_EXP2_NEG_Q30 = (759250125, 902905651, 984625594, 1028218693, 1050733751, 1062175491, 1067942999, 1070838486,
                 1072289173, 1073015252, 1073378477, 1073560135, 1073650976, 1073696399, 1073719111, 1073730468)


def _log2_q16(k: int) -> int:
    """log2(k) in Q16 for 1 <= k <= 256 (integer part from the bit length, 16 fraction bits by squaring)."""
    n = k.bit_length() - 1
    x = k << (30 - n)  # Q30 in [1, 2)
    frac = 0
    for i in range(1, 17):
        x = (x * x) >> 30
        if x >= 2 << 30:
            x >>= 1
            frac |= 1 << (16 - i)
    return (n << 16) | frac


def _exp2_neg_q16(e: int) -> int:
    """2 ** (-e / 65536) in Q30 for e >= 0."""
    whole, frac = e >> 16, e & 0xFFFF
    r = 1 << 30
    for i in range(1, 17):
        if frac & (1 << (16 - i)):
            r = (r * _EXP2_NEG_Q30[i - 1]) >> 30
    return r >> whole if whole < 31 else 0


def drive_table(gamma_x100: int) -> np.ndarray:
    """The firmware's 257-entry power-law table: duty at level fraction ``k / 256``, uint16."""
    if not 1 <= gamma_x100 <= 1000:
        raise ValueError(f"drive_gamma_x100 must be in 1..1000, got {gamma_x100}")
    lut = np.zeros(LUT_STEPS + 1, np.uint16)
    for k in range(1, LUT_STEPS + 1):
        e = ((8 << 16) - _log2_q16(k)) * gamma_x100 // 100  # -log2(k/256) * gamma, Q16, >= 0
        lut[k] = (_exp2_neg_q16(e) * DUTY_MAX + (1 << 29)) >> 30
    return lut


def duty_u16(levels: ArrayLike, bits: int, drive_curve: int = 0, gamma_x100: int = 100) -> np.ndarray:
    """Duty (0..65535) the firmware drives for zone ``levels`` of depth ``bits`` under a CONFIG's curve.

    Linear: ``round(level * 65535 / (2^bits - 1))``. Power law: position
    ``t = floor(level * 2^24 / (2^bits - 1))`` (Q16 over 256 steps), table entry
    ``t >> 16`` plus the rounded linear interpolation to the next one.
    """
    levels = np.asarray(levels, dtype=np.int64)
    top = (1 << bits) - 1
    if drive_curve == 0:
        return ((levels * DUTY_MAX + top // 2) // top).astype(np.uint16)
    lut = drive_table(gamma_x100).astype(np.int64)
    t = (levels << 24) // top
    k = np.minimum(t >> 16, LUT_STEPS - 1)
    f = np.where(t >> 16 >= LUT_STEPS, 65536, t & 0xFFFF)
    return (lut[k] + (((lut[k + 1] - lut[k]) * f + 0x8000) >> 16)).astype(np.uint16)


def duty_crc32(levels: ArrayLike, bits: int, drive_curve: int = 0, gamma_x100: int = 100) -> int:
    """CRC-32 (zlib) of the duty values as little-endian u16, row-major: what the firmware reports per frame."""
    return zlib.crc32(duty_u16(levels, bits, drive_curve, gamma_x100).astype("<u2").tobytes())
