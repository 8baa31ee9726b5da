"""A few steps of the display model on the zone light: the optimiser's descent at sub-zone resolution.

The local-dimming CNN (``edgehdr.dimming.neural``) imitates ``optimal_zone_light``; a few
steps of that optimiser's own descent, started from the network's answer, take it most of
the way to the optimiser's (``evaluate_dimming --refine``). At run time the steps work on
the statistics grid the network's encoder has already measured (each sub-zone's mean of
max-RGB, 4 x 4 sub-zones a zone), seen as a grey image, with the LED point-spread function
evaluated at that grid's cells: about 9,000 cells at 18 x 32 zones, whatever the panel's
resolution, so the cost does not grow with the frame.

``refine_zone_light`` is ``optimal_zone_light`` on that grey grid image, the same objective
(PU21 error of the displayed image, clipped where the backlight is too dim, raised by the
LCD's leakage where it is too bright; Mantiuk & Azimi 2021), projection (the power budget)
and Armijo line search, as one numba kernel: ``tests/test_dimming_refine.py`` checks it
against ``optimal_zone_light`` run on that image.
"""

from __future__ import annotations

import dataclasses
import math

import numba
import numpy as np

from edgehdr.dimming.backlight import BacklightModel, psf_support
from edgehdr.dimming.layout import LedLayout
from edgehdr.quality.pu21 import PU21_L_MAX, PU21_L_MIN, pu21_derivative, pu21_encode

__all__ = ["GridRefiner", "refine_zone_light", "project_into_budget", "project_power_budget"]

# PU21 (the 'banding_glare' fit) and its slope in log2 luminance, tabulated over PU21's range: the descent's
# cells read it by linear interpolation (two powers a cell cost more than the rest of a step). Within 2e-4 PU
# units of ``pu21_encode`` (tested).
_PU_STEPS = 4096
_LOG2_MIN, _LOG2_MAX = math.log2(PU21_L_MIN), math.log2(PU21_L_MAX)


def _pu_tables() -> tuple[np.ndarray, np.ndarray]:
    log2_y = np.linspace(_LOG2_MIN, _LOG2_MAX, _PU_STEPS + 1)
    y = np.exp2(log2_y)
    inside = np.clip(y, PU21_L_MIN * (1 + 1e-12), PU21_L_MAX * (1 - 1e-12))  # pu21_derivative is 0 at the ends
    return pu21_encode(y), pu21_derivative(inside) * y * math.log(2.0)  # and dV / dlog2(Y)


_PU_VALUE, _PU_SLOPE = _pu_tables()


@numba.njit(fastmath=True, cache=True, inline="always")
def _pu(y, values, slopes):
    """PU21 of ``y`` cd/m^2 and its derivative dV/dY (0 outside PU21's range) from the tables."""
    if y <= PU21_L_MIN:
        return values[0], 0.0
    if y >= PU21_L_MAX:
        return values[-1], 0.0
    u = (math.log2(y) - _LOG2_MIN) * (_PU_STEPS / (_LOG2_MAX - _LOG2_MIN))
    i = min(int(u), _PU_STEPS - 1)
    f = u - i
    value = values[i] + f * (values[i + 1] - values[i])
    slope = slopes[i] + f * (slopes[i + 1] - slopes[i])
    return value, slope / (y * math.log(2.0))


@numba.njit(cache=True)
def project_into_budget(light, budget, out):
    """Euclidean projection of flat ``light`` onto {0 <= l <= 1, mean(l) <= budget} into ``out``: a common shift
    found by bisection, its upper bound the unclipped largest light (a zone at 3 needs a shift past 2 to leave full
    light). The descent's and ``project_power_budget``'s (a budget of 1 or more: clipping only)."""
    n = light.size
    total = 0.0
    top = 0.0
    for i in range(n):
        v = min(max(light[i], 0.0), 1.0)
        out[i] = v
        total += v
        top = max(top, light[i])
    if budget >= 1.0 or total / n <= budget:
        return
    lo, hi = 0.0, top
    for _ in range(50):
        tau = 0.5 * (lo + hi)
        s = 0.0
        for i in range(n):
            s += min(max(light[i] - tau, 0.0), 1.0)
        if s / n > budget:
            lo = tau
        else:
            hi = tau
    for i in range(n):
        out[i] = min(max(light[i] - hi, 0.0), 1.0)


def project_power_budget(light: np.ndarray, budget: float | None) -> np.ndarray:
    """Euclidean projection onto ``{0 <= l <= 1, mean(l) <= budget}`` (bisection on a shift; None: clipping
    only): ``project_into_budget`` for an array of any shape, as ``optimal_zone_light`` projects."""
    light = np.asarray(light)
    flat = np.ascontiguousarray(light, np.float64).reshape(-1)
    out = np.empty_like(flat)
    project_into_budget(flat, 1.0 if budget is None else float(budget), out)
    return out.reshape(light.shape).astype(np.result_type(light.dtype, np.float32), copy=False)


@numba.njit(fastmath=True, cache=True)
def _spread(light, a_rows, rows_from, rows_to, a_cols_t, gain, mixed, backlight):
    """backlight = gain * A_r L A_c^T (``BacklightModel``'s separable spread), float32: A_r over its support,
    A_c^T dense (a grid row is 4 cells a zone column wide; the dense loop vectorises, the band's does not)."""
    h, w = backlight.shape
    rows, cols = light.shape
    for y in range(h):
        m = mixed[y]
        for c in range(cols):
            m[c] = 0.0
        for r in range(rows_from[y], rows_to[y]):
            a = a_rows[y, r]
            lr = light[r]
            for c in range(cols):
                m[c] += a * lr[c]
        row = backlight[y]
        for x in range(w):
            row[x] = 0.0
        for c in range(cols):
            mc = m[c] * gain
            band = a_cols_t[c]
            for x in range(w):
                row[x] += mc * band[x]


@numba.njit(fastmath=True, cache=True)
def _spread_adjoint(grad_b, a_rows, rows_from, rows_to, a_cols, gain, mixed, grad):
    """grad = gain * A_r^T G A_c, the adjoint of ``_spread``; G is zero but where the display alters a cell
    (a few per cent of them), so only its non-zero cells are spread back."""
    h, w = grad_b.shape
    rows, cols = grad.shape
    for r in range(rows):
        for c in range(cols):
            grad[r, c] = 0.0
    for y in range(h):
        g = grad_b[y]
        m = mixed[y]
        touched = False
        for x in range(w):
            gx = g[x]
            if gx != 0.0:
                if not touched:
                    for c in range(cols):
                        m[c] = 0.0
                    touched = True
                band = a_cols[x]
                for c in range(cols):
                    m[c] += gx * band[c]
        if touched:
            for r in range(rows_from[y], rows_to[y]):
                a = a_rows[y, r] * gain
                gr = grad[r]
                for c in range(cols):
                    gr[c] += a * m[c]


@numba.njit(cache=True)
def _objective(light, target, psf, gain, leak, values, slopes, work):
    """PU21 error of the grey grid image shown under ``light`` (rows, cols), and its gradient (in ``work[4]``)."""
    a_rows, rows_from, rows_to, a_cols_t, a_cols = psf
    light32, mixed, backlight, grad_b, grad32 = work
    for r in range(light.shape[0]):
        for c in range(light.shape[1]):
            light32[r, c] = np.float32(light[r, c])
    _spread(light32, a_rows, rows_from, rows_to, a_cols_t, gain, mixed, backlight)
    h, w = target.shape
    n = h * w
    value = 0.0
    for y in range(h):
        for x in range(w):
            t = target[y, x]
            b = np.float64(backlight[y, x])
            g = 0.0
            if t > b or t < leak * b:
                shown = min(max(t, leak * b), b)
                v_shown, slope = _pu(shown, values, slopes)
                v_target, _ = _pu(t, values, slopes)
                err = v_shown - v_target
                value += err * err
                g = 2.0 * err * slope * (1.0 if t > b else leak) / n
            grad_b[y, x] = np.float32(g)
    _spread_adjoint(grad_b, a_rows, rows_from, rows_to, a_cols, gain, mixed, grad32)
    return value / n


@numba.njit(cache=True, nogil=True)
def _descend(init, target, psf, gain, leak, values, slopes, budget, steps, tolerance):
    rows, cols = init.shape
    h, w = target.shape
    work = (np.empty((rows, cols), np.float32), np.empty((h, cols), np.float32), np.empty((h, w), np.float32),
            np.empty((h, w), np.float32), np.empty((rows, cols), np.float32))
    grad32 = work[4]
    n = init.size
    light = np.empty((rows, cols))
    project_into_budget(init.reshape(-1), budget, light.reshape(-1))
    grad = np.empty((rows, cols))
    cand = np.empty((rows, cols))
    cand_grad = np.empty((rows, cols))
    trial = np.empty(n)
    value = _objective(light, target, psf, gain, leak, values, slopes, work)
    largest = 0.0
    for r in range(rows):
        for c in range(cols):
            grad[r, c] = np.float64(grad32[r, c])
            largest = max(largest, abs(grad[r, c]))
    step = 0.05 / max(largest, 1e-12)
    for _ in range(steps):
        while True:
            lf, gf = light.reshape(-1), grad.reshape(-1)
            for i in range(n):
                trial[i] = lf[i] - step * gf[i]
            project_into_budget(trial, budget, cand.reshape(-1))
            cand_value = _objective(cand, target, psf, gain, leak, values, slopes, work)
            for r in range(rows):
                for c in range(cols):
                    cand_grad[r, c] = np.float64(grad32[r, c])
            decrease = 0.0
            cf = cand.reshape(-1)
            for i in range(n):
                decrease += gf[i] * (lf[i] - cf[i])
            if cand_value <= value - 1e-4 * decrease or step < 1e-14:
                break
            step *= 0.5
        if cand_value > value:  # no descent left at any step size: stay at the best point
            break
        converged = value - cand_value <= tolerance * max(1e-12, abs(value))
        light, cand = cand, light
        grad, cand_grad = cand_grad, grad
        value = cand_value
        step *= 2.0
        if converged:
            break
    return light


class GridRefiner:
    """The descent of ``refine_zone_light`` for one layout's statistics grid; the PSF matrices made once.

    ``grid_shape`` (rows, cols) is the statistics grid (a multiple of the zone grid); the grid image is
    the panel seen at that resolution, the LED PSF sampled at its cells' centres (``BacklightModel``'s
    matrices at a working resolution of exactly the grid). The descent repeats ``optimal_zone_light``'s
    loop line for line, as a numba kernel (the tests hold the two together).
    """

    def __init__(self, layout: LedLayout, grid_shape: tuple[int, int]):
        grid_rows, grid_cols = int(grid_shape[0]), int(grid_shape[1])
        if grid_rows < layout.rows or grid_cols < layout.cols:
            raise ValueError(f"statistics grid {grid_rows}x{grid_cols} is coarser than the zone grid "
                             f"{layout.rows}x{layout.cols}")
        self.layout = layout
        if layout.psf_model != "gaussian":
            raise ValueError("refinement steps need the Gaussian PSF model (a measured PSF image has no separable "
                             "matrices)")
        self.grid_shape = (grid_rows, grid_cols)
        # BacklightModel at a working resolution of exactly the grid: a panel k times the grid's size at
        # work_scale k samples the PSF at the grid's cells (a layout is at least 16 pixels a side)
        k = max(1, -(-16 // min(grid_rows, grid_cols)))
        model = BacklightModel(dataclasses.replace(layout, width_px=grid_cols * k, height_px=grid_rows * k),
                               work_scale=k)
        assert model.work_shape == self.grid_shape
        a_rows = np.ascontiguousarray(model._a_rows, np.float32)
        rows_from, rows_to = psf_support(a_rows)
        # (A_r, its support per grid row, A_c^T, A_c): BacklightModel's matrices
        self._psf = (a_rows, rows_from, rows_to, np.ascontiguousarray(model._a_cols_t, np.float32),
                     np.ascontiguousarray(model._a_cols, np.float32))
        self._gain = np.float32(model.gain)

    def __call__(self, light: np.ndarray, grid_cd_m2: np.ndarray, *, steps: int, power_budget: float = 1.0,
                 tolerance: float = 1e-6) -> np.ndarray:
        light = np.asarray(light, np.float64)
        if light.shape != (self.layout.rows, self.layout.cols):
            raise ValueError(f"zone light of shape {light.shape} does not match the layout "
                             f"{(self.layout.rows, self.layout.cols)}")
        target = np.asarray(grid_cd_m2, np.float64)
        if target.shape != self.grid_shape:
            raise ValueError(f"grid image of shape {target.shape}, expected {self.grid_shape}")
        target = np.ascontiguousarray(np.minimum(np.where(np.isfinite(target), target, 0.0),
                                                 self.layout.peak_luminance_cd_m2))
        out = _descend(np.ascontiguousarray(light), target, self._psf, self._gain, float(self.layout.leakage),
                       _PU_VALUE, _PU_SLOPE, float(power_budget), int(steps), float(tolerance))
        return out.astype(np.float32)


def refine_zone_light(light: np.ndarray, grid_cd_m2: np.ndarray, layout: LedLayout, *, steps: int = 4,
                      power_budget: float = 1.0) -> np.ndarray:
    """Zone light after ``steps`` steps of the PU21 optimiser's descent on a grey grid image.

    Parameters
    ----------
    light : ndarray (rows, cols)
        Starting zone light fractions (the network's answer).
    grid_cd_m2 : ndarray (grid rows, grid cols)
        The panel's target at the statistics grid's resolution in cd/m^2 (each cell's mean of max-RGB),
        non-finite cells as black; cells above the panel's peak are the peak.
    steps : int
        Projected-gradient steps with Armijo backtracking, as ``optimal_zone_light`` takes them.
    power_budget : float
        Mean light fraction allowed (1: no limit); every step stays within it.

    References
    ----------
    H. Seetzen et al., ACM TOG 23(3), 2004 (the display model). R. K. Mantiuk and M. Azimi, PCS 2021 (PU21).
    """
    return GridRefiner(layout, np.shape(grid_cd_m2))(light, grid_cd_m2, steps=steps, power_budget=power_budget)
