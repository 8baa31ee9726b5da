"""The vectorisable exp2/log2 of edgehdr.fastmath against float64 NumPy."""

from __future__ import annotations

import numba
import numpy as np

from edgehdr.fastmath import exp2_bits, log2_from_bits


@numba.njit(fastmath=True)
def _exp2_all(t: np.ndarray, out: np.ndarray) -> None:
    for j in range(t.shape[0]):
        out[j] = exp2_bits(t[j])


@numba.njit(fastmath=True)
def _log2_all(bits: np.ndarray, out: np.ndarray) -> None:
    for j in range(bits.shape[0]):
        out[j] = log2_from_bits(bits[j])


def test_exp2_is_accurate_over_its_range_and_next_to_integers():
    rng = np.random.default_rng(0)
    whole = np.arange(-126, 126)
    t = np.concatenate([whole, [126.0], rng.uniform(-126, 126, 200_000), whole + 0.99995, whole + 0.9999999,
                        whole + 1e-7]).astype(np.float32)
    out = np.empty(t.size, np.int32)
    _exp2_all(t, out)
    got = out.view(np.float32).astype(np.float64)
    exact = np.exp2(t.astype(np.float64))
    # The polynomial's own error is 8.4e-6; an exponent taken from int(t + 1000) gave 2.1e-5 just below integers.
    assert np.abs(got / exact - 1).max() < 9e-6
    assert np.array_equal(got[: whole.size + 1], exact[: whole.size + 1])  # powers of two exactly


def test_log2_is_accurate_for_normal_floats():
    rng = np.random.default_rng(1)
    x = np.exp2(rng.uniform(-125, 127, 200_000)).astype(np.float32)
    out = np.empty(x.size, np.float32)
    _log2_all(x.view(np.int32), out)
    exact = np.log2(x.astype(np.float64))
    # The polynomial's error (5.1e-6) plus the float32 rounding of the result (up to 7.6e-6 near log2 = 127).
    assert np.all(np.abs(out.astype(np.float64) - exact) < 5.1e-6 + np.spacing(np.abs(out)))
