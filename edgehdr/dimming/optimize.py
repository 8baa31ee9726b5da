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

import cv2
import numpy as np

from edgehdr.dimming.backlight import BacklightModel
from edgehdr.dimming.layout import LedLayout
from edgehdr.dimming.zones import zone_statistics
from edgehdr.quality.pu21 import pu21_derivative, pu21_encode

__all__ = ["optimal_zone_light", "project_power_budget"]


def project_power_budget(light: np.ndarray, budget: float | None) -> np.ndarray:
    """Euclidean projection onto ``{0 <= l <= 1, mean(l) <= budget}`` (bisection on a shift)."""
    out = np.clip(light, 0.0, 1.0)
    if budget is None or out.mean() <= budget:
        return out
    lo, hi = 0.0, float(out.max())
    for _ in range(50):
        tau = 0.5 * (lo + hi)
        if np.clip(light - tau, 0.0, 1.0).mean() > budget:
            lo = tau
        else:
            hi = tau
    return np.clip(light - hi, 0.0, 1.0)


def optimal_zone_light(
    target_cd_m2: np.ndarray,
    layout: LedLayout,
    *,
    power_budget: float | None = None,
    power_weight: float = 0.0,
    iterations: int = 200,
    model: BacklightModel | None = None,
    init: np.ndarray | None = None,
    tolerance: float = 1e-7,
) -> np.ndarray:
    """Zone light fractions (rows, cols) minimising the PU21 error of the displayed image.

    Parameters
    ----------
    power_budget : float, optional
        Upper bound on the mean light fraction (1 = all LEDs full on): compare with a
        heuristic at equal or lower power by passing that heuristic's power.
    power_weight : float
        Weight ``w`` of the power term (PU units^2 per unit of mean light).
    iterations : int
        Projected-gradient steps (each one forward and one adjoint backlight pass).
    init : ndarray, optional
        Starting light; default the zone maxima (no clipping), projected on the budget.

    References
    ----------
    H. Seetzen et al., ACM TOG 23(3), 2004 (the display model). R. K. Mantiuk and
    M. Azimi, PCS 2021 (PU21). Projected gradient with Armijo backtracking: D. P.
    Bertsekas, Nonlinear Programming, 1999, sec. 2.3.
    """
    model = model or BacklightModel(layout)
    h, w = model.work_shape
    target = np.asarray(target_cd_m2, np.float32)
    small = cv2.resize(target, (w, h), interpolation=cv2.INTER_AREA).astype(np.float64)
    pu_target = pu21_encode(small)
    leak = layout.leakage
    n = small.size

    def objective_and_grad(light):
        b = model.forward(light).astype(np.float64)[..., None]
        lower, upper = leak * b, b
        shown = np.clip(small, lower, upper)
        err = pu21_encode(shown) - pu_target
        value = float(np.sum(err * err) / n + power_weight * float(layout.light_from_drive(light).mean()))
        # dD/dB: 1 where clipped at the backlight, leak where raised by leakage, else 0.
        d_shown = np.where(small > upper, 1.0, np.where(small < lower, leak, 0.0))
        g_b = np.sum(2.0 * err * pu21_derivative(shown) * d_shown, axis=2) / n
        grad = model.adjoint(g_b.astype(np.float32)).astype(np.float64)
        if power_weight:
            grad += power_weight / light.size
        return value, grad

    if init is None:
        zmax, _, _ = zone_statistics(target, layout)
        init = zmax
    light = project_power_budget(np.asarray(init, np.float64), power_budget)
    value, grad = objective_and_grad(light)
    step = 1.0 / max(float(np.abs(grad).max()), 1e-12) * 0.05
    for _ in range(iterations):
        while True:
            candidate = project_power_budget(light - step * grad, power_budget)
            cand_value, cand_grad = objective_and_grad(candidate)
            decrease = float(np.sum(grad * (light - candidate)))
            if cand_value <= value - 1e-4 * decrease or step < 1e-12:
                break
            step *= 0.5
        converged = abs(value - cand_value) <= tolerance * max(1.0, abs(value))
        light, value, grad = candidate, cand_value, cand_grad
        step *= 1.5  # let the step grow back after a successful move
        if converged:
            break
    return light.astype(np.float32)
