"""The refinement steps after the dimming network (edgehdr.dimming.refine) against the optimiser they repeat."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from edgehdr.dimming import BacklightModel, LedLayout, optimal_zone_light
from edgehdr.dimming.refine import _PU_SLOPE, _PU_VALUE, GridRefiner, _pu, refine_zone_light
from edgehdr.quality.pu21 import pu21_derivative, pu21_encode


def _grid_image(rng, shape=(72, 128)):
    """A grey grid image with dark regions, mid-tones and highlights above what half the LEDs give."""
    image = (rng.random(shape) ** 4 * 1500.0).astype(np.float32)
    image[:10, :20] = 0.01
    image[30:34, 60:64] = 950.0
    return image


@pytest.mark.parametrize("budget", [1.0, 0.3])
@pytest.mark.parametrize("steps", [1, 3, 8])
def test_refinement_is_the_optimisers_descent_on_the_grid_image(steps, budget):
    """``optimal_zone_light`` run on the grid image (grey in all three channels, a panel of the grid's size, its
    PSF at full resolution) takes the same steps: same line search, projection and stopping rule. The kernel's
    PU21 is a table (within 2e-4 PU units), so the lights agree to float32 rounding, not bit for bit."""
    rng = np.random.default_rng(steps)
    layout = LedLayout(rows=18, cols=32, width_px=640, height_px=360)
    grid = _grid_image(rng)
    init = rng.random((18, 32)).astype(np.float32)
    ours = refine_zone_light(init, grid, layout, steps=steps, power_budget=budget)
    panel = dataclasses.replace(layout, width_px=128, height_px=72)
    theirs = optimal_zone_light(np.repeat(grid[..., None], 3, axis=2), panel, init=init, iterations=steps,
                                model=BacklightModel(panel, work_scale=1), power_budget=None if budget >= 1 else budget)
    np.testing.assert_allclose(ours, theirs, atol=2e-5)
    assert ours.mean() <= budget + 1e-6
    assert not np.allclose(ours, np.clip(init, 0, 1), atol=1e-3)  # it moved


def test_refinement_lowers_the_error_it_descends_on():
    """Each further step lowers (never raises) the PU21 error of the grid image shown under the light."""
    rng = np.random.default_rng(5)
    layout = LedLayout(rows=6, cols=8, width_px=320, height_px=240)
    grid = _grid_image(rng, (24, 32))
    init = np.full((6, 8), 0.2, np.float32)
    panel = dataclasses.replace(layout, width_px=32, height_px=24)
    model = BacklightModel(panel, work_scale=1)

    def error(light):
        b = model.forward(light).astype(np.float64)
        shown = np.clip(grid, layout.leakage * b, b)
        return float(np.mean((pu21_encode(shown) - pu21_encode(np.minimum(grid, 1000.0))) ** 2))

    errors = [error(refine_zone_light(init, grid, layout, steps=k)) for k in (0, 1, 2, 4, 8)]
    assert all(a >= b - 1e-9 for a, b in zip(errors, errors[1:])) and errors[-1] < 0.8 * errors[0], errors


def test_pu21_table_matches_the_encoder():
    y = np.geomspace(0.001, 20000.0, 5001)
    got = np.array([_pu(v, _PU_VALUE, _PU_SLOPE) for v in y])
    np.testing.assert_allclose(got[:, 0], pu21_encode(y), atol=2e-4)
    np.testing.assert_allclose(got[:, 1], pu21_derivative(y), rtol=2e-3, atol=1e-6)


def test_refiner_checks_its_inputs():
    layout = LedLayout(rows=3, cols=4, width_px=64, height_px=48)
    refiner = GridRefiner(layout, (12, 16))
    with pytest.raises(ValueError, match="does not match the layout"):
        refiner(np.zeros((4, 3)), np.zeros((12, 16)), steps=1)
    with pytest.raises(ValueError, match="expected"):
        refiner(np.zeros((3, 4)), np.zeros((16, 12)), steps=1)
    with pytest.raises(ValueError, match="coarser"):
        GridRefiner(layout, (2, 16))
    # non-finite cells are black; cells above the peak are the peak: a finite answer within [0, 1]
    grid = np.full((12, 16), np.nan, np.float32)
    grid[0, 0] = np.inf
    light = refiner(np.full((3, 4), 0.5), grid, steps=2)
    assert np.isfinite(light).all() and light.min() >= 0 and light.max() <= 1
