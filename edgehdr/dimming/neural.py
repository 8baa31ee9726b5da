"""The local-dimming CNN: zone light from a downsampled frame, distilled from the PU21 optimiser.

The network sees, for every zone, a 4 x 4 grid of sub-zone statistics of the
display target (max and mean of max-RGB as a fraction of the panel peak, the
same statistics the heuristics use per zone, at 4x the zone resolution), and
predicts the zone light fractions that ``optimal_zone_light`` (projected
gradient on the PU21 error of the simulated display, Seetzen et al. 2004 model)
would choose, in one pass of well under a millisecond.

Input encoding (ONNX input ``zone_stats``, (1, 3, 4 R, 4 C) float32): channel 0
the sub-zone maxima, channel 1 the sub-zone means, each ``log2(v) / 12 + 1``
clipped to [0, 1] (12 stops below the peak to the peak); channel 2 the power
budget (mean light fraction allowed, 1 = no limit) everywhere. A model with a
fourth input channel (``train_dimming --min-stat``) gets the sub-zone minima
there, encoded as the maxima (the darkest pixel, where the LCD's leakage lifts the
black level first); the model's input shape says which encoding it takes. Output ``light``
(1, 1, R, C) in [0, 1], then scaled down uniformly if its mean exceeds the budget
(``within_budget``; training optimises through the same step), so the result
never draws more than the budget. A model is made for one zone grid and PSF (its
metadata says which); the stage refuses a model whose grid differs from the
layout's.

Refinement (``refine_steps``, 4 by default): the network's light then takes that many steps of
its teacher's own descent (``edgehdr.dimming.refine``) on the sub-zone means the encoder has
measured, seen as a grey image at that grid's resolution, within the power budget. On 16
held-out scenes at 640 x 360 the network is 0.65 dB below its teacher and 0.45 dB after four
steps; the steps cost about 0.1-0.6 ms a frame whatever the panel's resolution (README).

Non-finite pixels enter the statistics as ``zone_statistics`` counts them (black or
peak, with a warning). Should the network itself return a non-finite zone value, that
zone gets full light, so the LCD still shows the target there (a warning names how
many zones), instead of a dark zone or a NaN reaching the LED drive.
"""

from __future__ import annotations

import json
import logging

import numpy as np

from edgehdr.dimming.layout import LedLayout
from edgehdr.dimming.zones import within_budget, zone_statistics_with_min  # within_budget: re-exported

__all__ = ["SUBDIVISION", "STATS_STOPS", "INPUT_CHANNELS", "ENCODINGS", "REFINE_STEPS", "MAX_REFINE_STEPS",
           "encode_dimming_input", "within_budget", "NeuralDimmer", "model_layout_metadata"]

log = logging.getLogger("edgehdr.dimming")

SUBDIVISION = 4
STATS_STOPS = 12.0
INPUT_CHANNELS = 3
ENCODINGS = (3, 4)  # input channels: max, mean, budget (the shipped model); and the sub-zone minima after them
REFINE_STEPS = 4  # steps of the teacher's descent after the network (NeuralDimmer, [dimming] refine_steps)
MAX_REFINE_STEPS = 32


def _stats_layout(layout: LedLayout) -> LedLayout:
    return LedLayout(rows=layout.rows * SUBDIVISION, cols=layout.cols * SUBDIVISION, width_px=layout.width_px,
                     height_px=layout.height_px, peak_luminance_cd_m2=layout.peak_luminance_cd_m2,
                     source=f"{layout.source} (x{SUBDIVISION} statistics grid)")


def _require_budget(power_budget: float) -> None:
    if not 0.0 < power_budget <= 1.0:
        raise ValueError(f"power_budget must be in (0, 1], got {power_budget}")


def encode_dimming_input(target: np.ndarray, layout: LedLayout, *, scale: float = 1.0, power_budget: float = 1.0,
                         stats_layout: LedLayout | None = None, channels: int = INPUT_CHANNELS) -> np.ndarray:
    """(1, channels, 4 R, 4 C) float32 network input from a target in cd/m^2 (or radiance times ``scale``).

    ``channels`` is 3 (max, mean, budget) or 4 (and the sub-zone minima); module docstring.
    """
    _require_budget(power_budget)
    if channels not in ENCODINGS:
        raise ValueError(f"channels must be one of {ENCODINGS}, got {channels}")
    zmax, zmean, zmin, _ = zone_statistics_with_min(target, stats_layout or _stats_layout(layout), scale=scale,
                                                    minimum=channels == 4)
    return _encode_statistics(zmax, zmean, zmin, power_budget, channels)


def _encode_statistics(zmax: np.ndarray, zmean: np.ndarray, zmin: np.ndarray | None, power_budget: float,
                       channels: int) -> np.ndarray:
    x = np.empty((1, channels) + zmax.shape, np.float32)
    floor = np.float32(2.0 ** -STATS_STOPS)
    x[0, 0] = np.log2(np.maximum(zmax, floor))
    x[0, 1] = np.log2(np.maximum(zmean, floor))
    np.clip(x[0, :2] / np.float32(STATS_STOPS) + 1, 0, 1, out=x[0, :2])
    x[0, 2] = power_budget
    if zmin is not None:
        x[0, 3] = np.log2(np.maximum(zmin, floor))
        np.clip(x[0, 3] / np.float32(STATS_STOPS) + 1, 0, 1, out=x[0, 3])
    return x


def model_layout_metadata(layout: LedLayout) -> dict:
    """What a dimming model is made for (stored in its ONNX metadata as ``edgehdr.layout``)."""
    return {"rows": layout.rows, "cols": layout.cols, "psf_model": layout.psf_model,
            "psf_sigma_pitch": layout.psf_sigma_pitch, "native_contrast": layout.native_contrast,
            "peak_luminance_cd_m2": layout.peak_luminance_cd_m2}


class NeuralDimmer:
    """Zone light for each frame from the dimming network (a loaded ``edgehdr.infer`` runner).

    Raises ``ValueError`` at construction when the model's zone grid is not the layout's;
    differences in PSF or contrast are reported in ``warnings`` (the model still runs,
    but was distilled for another panel).
    """

    def __init__(self, runner, layout: LedLayout, *, model_path=None, power_budget: float = 1.0,
                 refine_steps: int = REFINE_STEPS):
        _require_budget(power_budget)
        if not 0 <= refine_steps <= MAX_REFINE_STEPS:
            raise ValueError(f"refine_steps must be in 0..{MAX_REFINE_STEPS}, got {refine_steps}")
        self.runner, self.layout, self.power_budget = runner, layout, float(power_budget)
        self.refine_steps = int(refine_steps)
        self.non_finite_frames = 0  # frames whose network output held a non-finite zone value (given full light)
        (spec,) = runner.describe().inputs
        self._input_name, shape = spec.name, spec.shape
        self.channels = shape[1] if len(shape) == 4 and shape[1] in ENCODINGS else INPUT_CHANNELS
        expected = [1, self.channels, layout.rows * SUBDIVISION, layout.cols * SUBDIVISION]
        if list(shape) != expected:
            raise ValueError(f"dimming model {model_path or ''} expects input {list(shape)}, the layout "
                             f"({layout.rows}x{layout.cols} zones) needs {expected}; make a model for this layout "
                             f"with: python -m edgehdr.models.training.train_dimming --rows {layout.rows} "
                             f"--cols {layout.cols}")
        self.warnings = []
        if model_path is not None:
            from edgehdr.infer.ort import model_metadata

            meta = model_metadata(model_path)  # through ONNX Runtime: the device install has no onnx package
            made_for = json.loads(meta.get("edgehdr.layout", "{}"))
            ours = model_layout_metadata(layout)
            for key in ("psf_model", "psf_sigma_pitch", "native_contrast", "peak_luminance_cd_m2"):
                if key in made_for and made_for[key] != ours[key]:
                    self.warnings.append(f"model made for {key}={made_for[key]}, layout has {ours[key]}")
        self._stats_layout = _stats_layout(layout)
        self._refiner = None
        if self.refine_steps:
            from edgehdr.dimming.refine import GridRefiner

            if layout.psf_model != "gaussian":
                self.refine_steps = 0
                self.warnings.append("refinement steps need the Gaussian PSF model; the network's light is used as "
                                     "it is")
            else:
                self._refiner = GridRefiner(layout, (self._stats_layout.rows, self._stats_layout.cols))

    def __call__(self, target: np.ndarray, *, scale: float = 1.0, power_budget: float | None = None) -> np.ndarray:
        budget = self.power_budget if power_budget is None else float(power_budget)
        _require_budget(budget)
        zmax, zmean, zmin, _ = zone_statistics_with_min(target, self._stats_layout, scale=scale,
                                                        minimum=self.channels == 4)
        x = _encode_statistics(zmax, zmean, zmin, budget, self.channels)
        (light,) = self.runner.run({self._input_name: x}).values()
        light = np.asarray(light, np.float32).reshape(self.layout.rows, self.layout.cols)
        finite = np.isfinite(light)
        if not finite.all():
            self.non_finite_frames += 1
            log.warning("dimming network returned %d non-finite zone values of %d; those zones get full light "
                        "(frames so far: %d)", light.size - int(np.count_nonzero(finite)), light.size,
                        self.non_finite_frames)
            light = np.where(finite, light, np.float32(1.0))
        light = within_budget(np.clip(light, 0.0, 1.0), budget)
        if self._refiner is not None:  # from the network's light within the budget: each step stays within it
            grid_cd_m2 = zmean * np.float32(self.layout.peak_luminance_cd_m2)
            light = within_budget(self._refiner(light, grid_cd_m2, steps=self.refine_steps, power_budget=budget),
                                  budget)
        return light
