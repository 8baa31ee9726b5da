"""Temporal stabilisation of tone-mapping adaptation for video.

Per-frame statistics (log-average luminance, white point) jitter with noise and
jump with content; feeding them straight into a global operator makes a static
scene flicker. ``TemporalAdaptation`` holds the adaptation state and moves it
towards each frame's statistics exponentially in the log domain with a time
constant, after a small dead band, in the spirit of the visual adaptation models
used for video tone mapping (Pattanaik et al. 2000; Krawczyk et al. 2005;
Boitard et al. 2012 on temporal coherency). It is the one stateful piece of
``edgehdr.tonemap``.
"""

from __future__ import annotations

import math

__all__ = ["TemporalAdaptation"]


class TemporalAdaptation:
    """Exponential, dead-banded smoothing of log-domain adaptation statistics.

    Parameters
    ----------
    time_constant_s : float
        Time for the state to cover 63% of a step in the scene statistics.
    dead_band_stops : float
        Changes smaller than this (in stops) are ignored: noise on a static scene
        never moves the output.
    frame_interval_s : float
        Default time between frames when ``update`` gets no ``dt_s``.
    """

    def __init__(self, time_constant_s: float = 0.4, dead_band_stops: float = 0.02, frame_interval_s: float = 1 / 30):
        if time_constant_s < 0 or dead_band_stops < 0 or frame_interval_s <= 0:
            raise ValueError("time_constant_s and dead_band_stops must be >= 0, frame_interval_s > 0")
        self.time_constant_s = float(time_constant_s)
        self.dead_band = float(dead_band_stops) * math.log(2.0)
        self.frame_interval_s = float(frame_interval_s)
        self._state: dict[str, float] = {}

    def reset(self) -> None:
        """Forget the state: the next frame adapts at once (e.g. after a scene cut)."""
        self._state.clear()

    def update(self, dt_s: float | None = None, **values: float) -> dict[str, float]:
        """Feed this frame's positive statistics (e.g. ``log_average=..., white=...``); get the smoothed ones.

        A non-finite value raises ``ValueError`` and leaves the state as it was: one NaN
        would otherwise stay in the state and spoil every later frame. ``dt_s`` is the time
        since the previous frame in seconds; ``None`` or a non-finite value (NaN, inf: a
        broken timestamp) stands for the frame interval, as in ``NeuralToneMapper``, and a
        negative one for 0 (the state does not move).
        """
        for name, value in values.items():
            if not math.isfinite(float(value)):
                raise ValueError(f"adaptation statistic {name} = {float(value)}: expected a finite number "
                                 f"(the adaptation state is unchanged)")
        dt = self.frame_interval_s if dt_s is None or not math.isfinite(dt_s) else max(float(dt_s), 0.0)
        step = 1.0 if self.time_constant_s == 0 else 1.0 - math.exp(-dt / self.time_constant_s)
        out = {}
        for name, value in values.items():
            target = math.log(max(float(value), 1e-30))
            state = self._state.get(name)
            if state is None:
                state = target
            else:
                diff = target - state
                if abs(diff) > self.dead_band:
                    # Move towards the edge of the dead band, not its centre, so the
                    # state settles without a residual limit cycle.
                    state += step * (diff - math.copysign(self.dead_band, diff))
            self._state[name] = state
            out[name] = math.exp(state)
        return out
