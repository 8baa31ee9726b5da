"""Optimisation-based zone values: the quality reference the heuristics are measured against.

Minimises the perceptual error between the target and the displayed image plus a
power term,

    E(l) = mean_{p,c} [PU(D_pc(l)) - PU(Y_pc)]^2 + w * mean_z drive(l_z),
    D(l) = clip(Y, leak B(l), B(l)),  B(l) = the PSF backlight of zone light l,

over ``0 <= l <= 1`` and, optionally, a power budget ``mean(l) <= P``, by projected
gradient descent with a backtracking line search (Armijo), on the target
area-averaged to the backlight model's working resolution. ``D`` is the display
model with ideal LCD compensation (``edgehdr.dimming.compensation``): clipping
where the backlight is too dim, leakage where it is too bright. PU is PU21
(Mantiuk & Azimi 2021), so errors count as they are seen. Seconds per frame: a
reference, not a runtime stage (the local-dimming CNN learns to imitate it).
"""

from __future__ import annotations

import logging

import cv2
import numpy as np

from edgehdr.dimming.backlight import BacklightModel
from edgehdr.dimming.layout import LedLayout, require_finite_light
from edgehdr.dimming.refine import project_power_budget  # re-exported: the optimiser's projection
from edgehdr.dimming.zones import within_budget, zone_statistics
from edgehdr.quality.pu21 import pu21_derivative, pu21_encode
from edgehdr.tonemap.nonfinite import nonfinite_pixels, report_nonfinite

__all__ = ["optimal_zone_light", "project_power_budget", "quantise_within_budget", "zone_values_within_budget"]

log = logging.getLogger("edgehdr.dimming")


def quantise_within_budget(light: np.ndarray, layout: LedLayout, budget: float | None) -> np.ndarray:
    """Zone drive codes nearest to ``light`` whose mean light stays within ``budget``.

    Plain rounding can lift the mean light above a budget the continuous answer met;
    this floors every zone, then gives one LSB back to the zones with the largest
    remainders while the budget allows (largest-remainder rounding). The budget is in
    light, as everywhere: with a drive LUT each LSB costs the light it adds at that code
    (with linear drive, 1 / (2^bits - 1)). ``ValueError`` on a non-finite light fraction,
    as ``LedLayout.to_zone_values``.
    """
    top = (1 << layout.zone_bits) - 1
    exact = np.clip(layout.drive_from_light(require_finite_light(light)), 0.0, 1.0) * top
    codes = np.floor(exact + 1e-9).astype(np.int64)
    if budget is None:
        return np.rint(exact).astype(np.uint16)
    flat = codes.ravel()
    remainder = (exact - codes).ravel()
    order = np.argsort(-remainder, kind="stable")
    candidates = order[: int(np.count_nonzero(remainder >= 0.5))]
    candidates = candidates[flat[candidates] < top]
    floored_light = layout.light_from_drive(flat / top)
    extra = layout.light_from_drive((flat[candidates] + 1) / top) - floored_light[candidates]
    allowance = budget * flat.size - float(floored_light.sum())
    give = candidates[np.cumsum(extra) <= allowance + 1e-9 * max(1.0, budget * flat.size)]
    flat[give] += 1
    return flat.reshape(codes.shape).astype(np.uint16)


def zone_values_within_budget(light: np.ndarray, layout: LedLayout, budget: float | None) -> np.ndarray:
    """Drive codes for ``light`` under ``budget`` (mean light fraction; None: no cap): the light scaled
    down to the budget (``within_budget``), then rounded within it (``quantise_within_budget``).

    The last step of every dimming path, offline (``dim_frame``) and at runtime (``DimmingStage``),
    after the rate limiter, which can lift zones above what the algorithm chose.
    """
    if budget is None:
        return layout.to_zone_values(light)
    return quantise_within_budget(within_budget(light, budget), layout, budget)


def optimal_zone_light(
    target_cd_m2: np.ndarray,
    layout: LedLayout,
    *,
    power_budget: float | None = None,
    power_weight: float = 0.0,
    iterations: int = 150,
    model: BacklightModel | None = None,
    init: np.ndarray | None = None,
    tolerance: float = 1e-6,
) -> np.ndarray:
    """Zone light fractions (rows, cols) minimising the PU21 error of the displayed image.

    The objective is evaluated at full panel resolution, where clipping of small
    highlights happens; only pixels the display alters (clipped or raised by
    leakage) need a PU21 evaluation, which keeps an iteration cheap. The gradient
    with respect to the backlight is brought to the working resolution by area
    summation (the adjoint of the bilinear upsampling, up to its weights); the line
    search keeps every step a decrease of the exact objective.

    Parameters
    ----------
    power_budget : float, optional
        Upper bound on the mean light fraction (1 = all LEDs full on): compare with a
        heuristic at equal or lower power by passing that heuristic's power.
    power_weight : float
        Weight ``w`` of the power term (PU units^2 per unit of mean light).
    iterations : int
        Projected-gradient steps.
    init : ndarray, optional
        Starting light (e.g. a heuristic's answer); default the zone maxima. It is
        projected on the budget first.

    References
    ----------
    H. Seetzen et al., ACM TOG 23(3), 2004 (the display model). R. K. Mantiuk and
    M. Azimi, PCS 2021 (PU21). Projected gradient with Armijo backtracking: D. P.
    Bertsekas, Nonlinear Programming, 1999, sec. 2.3.
    """
    model = model or BacklightModel(layout)
    target = np.asarray(target_cd_m2, np.float32)
    black = None
    if not np.isfinite(target).all():
        # Non-finite pixels are optimised as they will be shown: black (NaN, -inf) or the peak (+inf).
        black, white = nonfinite_pixels(target)
        report_nonfinite(log, "optimal zone light", np.count_nonzero(black), np.count_nonzero(white),
                         target.shape[0] * target.shape[1])
    target = np.minimum(target, np.float32(layout.peak_luminance_cd_m2))
    if black is not None:
        target[black] = 0.0
        target[white] = np.float32(layout.peak_luminance_cd_m2)
    h, w = target.shape[:2]
    wh, ww = model.work_shape
    flat = target.reshape(-1, 3)
    t_max = flat.max(axis=1)
    t_min = flat.min(axis=1)
    pu_target = None  # computed lazily per affected pixel
    leak = np.float32(layout.leakage)
    n = float(flat.size)
    area = (h * w) / float(wh * ww)

    def objective_and_grad(light: np.ndarray) -> tuple[float, np.ndarray]:
        b = model.simulate(light).reshape(-1)
        idx = np.flatnonzero((t_max > b) | (t_min < leak * b))
        tb = flat[idx].astype(np.float64)
        bb = b[idx].astype(np.float64)[:, None]
        shown = np.clip(tb, leak * bb, bb)
        err = pu21_encode(shown) - pu21_encode(tb)
        value = float(np.sum(err * err) / n + power_weight * float(light.mean()))  # the budget's unit: mean light
        d_shown = np.where(tb > bb, 1.0, np.where(tb < leak * bb, float(leak), 0.0))
        g_full = np.zeros(h * w, np.float32)
        g_full[idx] = (np.sum(2.0 * err * pu21_derivative(shown) * d_shown, axis=1) / n).astype(np.float32)
        g_work = cv2.resize(g_full.reshape(h, w), (ww, wh), interpolation=cv2.INTER_AREA) * np.float32(area)
        grad = model.adjoint(g_work).astype(np.float64)
        if power_weight:
            grad += power_weight / light.size
        return value, grad

    del pu_target
    if init is None:
        init, _, _ = zone_statistics(target, layout)
    light = project_power_budget(np.asarray(init, np.float64), power_budget)
    value, grad = objective_and_grad(light)
    step = 0.05 / max(float(np.abs(grad).max()), 1e-12)
    for _ in range(iterations):
        while True:
            candidate = project_power_budget(light - step * grad, power_budget)
            cand_value, cand_grad = objective_and_grad(candidate)
            decrease = float(np.sum(grad * (light - candidate)))
            if cand_value <= value - 1e-4 * decrease or step < 1e-14:
                break
            step *= 0.5
        if cand_value > value:  # no descent left at any step size: stay at the best point
            break
        converged = value - cand_value <= tolerance * max(1e-12, abs(value))
        light, value, grad = candidate, cand_value, cand_grad
        step *= 2.0  # let the step grow back after a successful move
        if converged:
            break
    return light.astype(np.float32)
