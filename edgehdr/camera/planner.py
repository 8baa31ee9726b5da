"""Exposure planning: which exposures the next bracket should use.

From the luminance histogram of recent merged frames, choose as few exposures as
cover the scene's dynamic range, after Gallo et al. (2012) and Hasinoff et al.
(2010): each frame reliably measures the radiances that land between
``well_exposed`` code fractions (through the camera response), frames overlap by
``overlap_stops``, and the shortest frame keeps the scene's robust peak just
below clipping. With more range than ``max_frames`` can cover, the placement
that covers the most pixels wins. Limits: exposure time within
``exposure_limits_s`` (the upper bound follows the frame rate), gain within
``gain_limits`` (used only when the time runs out). Plans are smoothed in the log
domain over time, with a dead band, and the frame count changes only after it
has been wanted for several updates in a row (no flip-flopping).
"""

from __future__ import annotations

import math

import numpy as np

from edgehdr.camera.base import ExposurePlan
from edgehdr.hdr.crf import CameraResponse
from edgehdr.tonemap.color import luminance

__all__ = ["ExposurePlanner"]


class ExposurePlanner:
    """Chooses bracket exposures from the merged radiance (relative units of the current plan).

    Parameters
    ----------
    response : CameraResponse
        The camera's inverse response (sets which radiances each frame measures well).
    max_frames, min_frames : int
    exposure_limits_s : (float, float)
        Shortest and longest exposure time; for a rolling bracket the longest should
        not exceed one frame period.
    gain_limits : (float, float)
    low_percentile, high_percentile : float
        The luminance range to cover (robust ends of the histogram).
    well_exposed : (float, float)
        Code-value fractions a frame measures reliably.
    overlap_stops : float
        Overlap of neighbouring frames' ranges (noise averaging, misregistration margin).
    time_constant_s, dead_band_stops : float
        Temporal smoothing of each exposure (log domain).
    hysteresis_updates : int
        Updates in a row a new frame count must be wanted before it is used.

    References
    ----------
    O. Gallo, M. Tico, R. Manduchi, N. Gelfand and K. Pulli, "Metering for exposure
    stacks," Computer Graphics Forum 31(2), 2012. S. W. Hasinoff, F. Durand and
    W. T. Freeman, "Noise-optimal capture for high dynamic range photography," CVPR 2010.
    """

    def __init__(self, response: CameraResponse, *, max_frames: int = 3, min_frames: int = 1,
                 exposure_limits_s: tuple[float, float] = (1e-5, 1 / 30),
                 gain_limits: tuple[float, float] = (1.0, 16.0), low_percentile: float = 1.0,
                 high_percentile: float = 99.5, well_exposed: tuple[float, float] = (0.08, 0.92),
                 overlap_stops: float = 1.0, time_constant_s: float = 0.5, dead_band_stops: float = 0.1,
                 hysteresis_updates: int = 5) -> None:
        if not 1 <= min_frames <= max_frames <= 9:
            raise ValueError(f"need 1 <= min_frames <= max_frames <= 9, got {min_frames}, {max_frames}")
        if not 0 < exposure_limits_s[0] < exposure_limits_s[1]:
            raise ValueError(f"exposure_limits_s must be increasing and positive, got {exposure_limits_s}")
        if not 0 < gain_limits[0] <= gain_limits[1]:
            raise ValueError(f"gain_limits must be positive and increasing, got {gain_limits}")
        self.response = response
        self.max_frames, self.min_frames = max_frames, min_frames
        self.exposure_limits_s = tuple(map(float, exposure_limits_s))
        self.gain_limits = tuple(map(float, gain_limits))
        self.low_percentile, self.high_percentile = low_percentile, high_percentile
        lut = response.inverse_lut.mean(axis=0)
        top = lut.size - 1
        self.x_low = float(lut[int(well_exposed[0] * top)])
        self.x_high = float(lut[int(well_exposed[1] * top)])
        self.span_stops = math.log2(self.x_high / max(self.x_low, 1e-12))
        self.overlap_stops = overlap_stops
        self.time_constant_s, self.dead_band = time_constant_s, dead_band_stops
        self.hysteresis_updates = hysteresis_updates
        self._log_k: np.ndarray | None = None
        self._wanted_count: int | None = None
        self._wanted_streak = 0

    # ------------------------------------------------------------------------------------------

    def target_exposures(self, log2_luminance: np.ndarray) -> np.ndarray:
        """Relative exposures (t * g) for one histogram of log2 luminance, shortest first."""
        lo, hi = np.percentile(log2_luminance, [self.low_percentile, self.high_percentile])
        step = max(self.span_stops - self.overlap_stops, 0.5)
        # Shortest frame: the robust peak at the top of the well-exposed range.
        k_short = math.log2(self.x_high) - hi
        needed = hi - lo - self.span_stops
        n = int(min(self.max_frames, max(self.min_frames, 1 + math.ceil(max(needed, 0.0) / step))))
        if n < self.max_frames or needed <= (n - 1) * step:
            return k_short + np.arange(n) * step
        # Not enough frames for the whole range: slide the ladder to cover the most pixels.
        values = np.sort(log2_luminance.ravel())
        best, best_cover = k_short, -1
        for shift in np.linspace(0.0, needed - (n - 1) * step, 9):
            ladder = k_short + shift + np.arange(n) * step
            covered = 0
            lows = math.log2(self.x_low) - ladder
            highs = math.log2(self.x_high) - ladder
            for a, b in zip(lows, highs):
                covered += np.searchsorted(values, b) - np.searchsorted(values, a)
            if covered > best_cover:
                best, best_cover = k_short + shift, covered
        return best + np.arange(n) * step

    def update(self, radiance: np.ndarray, current: ExposurePlan, dt_s: float = 1 / 30) -> ExposurePlan:
        """New plan from a merged frame (radiance in the units of ``current``'s relative exposure)."""
        lum = np.maximum(luminance(np.asarray(radiance, np.float32)[::8, ::8]), 1e-12)
        log_k = self.target_exposures(np.log2(lum))
        # Frame count: change only after it has been wanted hysteresis_updates times in a row.
        count = len(current) if self._log_k is None else len(self._log_k)
        if len(log_k) != count:
            if self._wanted_count == len(log_k):
                self._wanted_streak += 1
            else:
                self._wanted_count, self._wanted_streak = len(log_k), 1
            if self._wanted_streak < self.hysteresis_updates:
                log_k = np.interp(np.linspace(0, 1, count), np.linspace(0, 1, len(log_k)), log_k) if len(log_k) > 1 \
                    else np.full(count, log_k[0])
            else:
                self._log_k = None  # adopt the new count at once
        else:
            self._wanted_streak = 0
        if self._log_k is None or len(self._log_k) != len(log_k):
            self._log_k = np.log2(current.relative)[: len(log_k)] if len(current) == len(log_k) else log_k.copy()
        alpha = 1.0 if self.time_constant_s == 0 else 1.0 - math.exp(-dt_s / self.time_constant_s)
        diff = log_k - self._log_k
        move = np.where(np.abs(diff) > self.dead_band, diff - np.sign(diff) * self.dead_band, 0.0)
        self._log_k = self._log_k + alpha * move
        return self._split(np.exp2(self._log_k))

    def _split(self, relative: np.ndarray) -> ExposurePlan:
        """Relative exposure -> (time, gain) within limits: time first, gain only beyond the longest time."""
        t_min, t_max = self.exposure_limits_s
        g_min, g_max = self.gain_limits
        times, gains = [], []
        for k in relative:
            t = min(max(k / g_min, t_min), t_max)
            g = min(max(k / t, g_min), g_max)
            times.append(t)
            gains.append(g)
        return ExposurePlan.of(times, gains)
