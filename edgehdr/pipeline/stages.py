"""The runtime's stages: thin, stateful wrappers around the plain functions of each package.

Each stage is a callable ``ctx -> ctx`` holding what must persist across frames
(a camera response, a temporal adaptation state, a backlight model, a link) and
nothing else; the algorithms stay in ``edgehdr.hdr``, ``edgehdr.tonemap`` and
``edgehdr.dimming``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from edgehdr.bracket import Bracket
from edgehdr.camera.base import BracketSource
from edgehdr.camera.planner import ExposurePlanner
from edgehdr.dimming import (
    DEFAULT_ALGORITHM,
    DEFAULT_POWER_BUDGET,
    HEURISTICS,
    BacklightModel,
    LedLayout,
    ZoneTemporalFilter,
    lcd_compensation,
    robust_peak_luminance,
    zone_light,
    zone_max_light,
    zone_statistics,
    zone_values_within_budget,
)
from edgehdr.hdr.align import ALIGN_METHODS, align_auto, align_homography, align_mtb, shifts_of
from edgehdr.hdr.crf import CameraResponse
from edgehdr.hdr.merge import MergeStatistics, merge_debevec
from edgehdr.pipeline.buffers import BufferPool
from edgehdr.tonemap import TemporalAdaptation, tonemap

if TYPE_CHECKING:
    from edgehdr.hdr.neural_merge import NeuralMerger
    from edgehdr.infer.base import Runner
    from edgehdr.pipeline.graph import FrameContext
    from firmware_bridge.link import Link

__all__ = ["AlignStage", "MergeStage", "ToneMapStage", "ScoreStage", "DimmingStage", "BridgeStage", "OutputStage"]

log = logging.getLogger("edgehdr.pipeline")

# The tone-map operators and the dimming algorithm that take what the classical merge measures
# (edgehdr.hdr.MergeStatistics) instead of a statistics pass of their own; the warm-up
# (edgehdr.warmup.jobs_for_config) compiles the kernels by the same lists.
MERGE_MEASURED_OPERATORS = ("reinhard", "drago")
MERGE_MEASURED_DIMMING = "max"


def _bracket(ctx: FrameContext, what: str) -> Bracket:
    """The captured bracket a stage before the merge works on."""
    if ctx.bracket is None:
        raise ValueError(f"frame {ctx.frame_id}: {what} needs the captured bracket, released before this stage")
    return ctx.bracket


def _radiance(ctx: FrameContext, what: str) -> np.ndarray:
    """The merged radiance a stage after the merge works on."""
    if ctx.radiance is None:
        raise ValueError(f"frame {ctx.frame_id}: {what} needs the merged radiance; put a merge stage before it")
    return ctx.radiance


class AlignStage:
    """Registers each bracket to its middle exposure (MTB by default, estimated at reduced scale).

    With ``defer_shifts`` the MTB path does not move the frames: ``ctx.aligned`` is the captured
    bracket and ``ctx.shifts`` the integer translations, which ``MergeStage`` applies while it reads
    (``merge_debevec(shifts=...)``). 1080p30: the shifted copy was 19 MB and 2-4 ms of CPU a frame.
    """

    reads: tuple[str, ...] = ("bracket",)  # of the releasable frame fields (edgehdr.pipeline.graph.RELEASABLE_FIELDS)

    def __init__(self, method: str = "mtb", *, response: CameraResponse | None = None, work_scale: int = 2,
                 defer_shifts: bool = False) -> None:
        if method not in ALIGN_METHODS:
            raise ValueError(f"align method must be one of {', '.join(ALIGN_METHODS)}, got {method!r}")
        self.method, self.response, self.work_scale = method, response, work_scale
        self.defer_shifts = defer_shifts
        self._cache: dict[Any, Any] = {}  # grey images and pair shifts reused across rolling brackets

    def __call__(self, ctx: FrameContext) -> FrameContext:
        b = _bracket(ctx, "alignment")
        if self.method == "none" or len(b) < 2:
            ctx.aligned = b
            return ctx
        ref = int(np.argsort(b.relative_exposure)[len(b) // 2])
        if self.method == "mtb":
            # Frames are cached by timestamp: only when every frame has its own (a source that stamps a whole
            # bracket at once would otherwise hand every frame the reference's cached pyramid, and no shift).
            stamps = [int(t) for t in b.timestamp_ns]
            keys = [(t, b.frames.shape) for t in stamps] if len(set(stamps)) == len(stamps) else None
            frames, motions = align_mtb(b.frames, reference_index=ref, exposures=b.relative_exposure,
                                        response=self.response, bits=b.bits, work_scale=self.work_scale,
                                        frame_keys=keys, cache=self._cache if keys else None,
                                        apply=not self.defer_shifts)
            if self.defer_shifts:
                shifts = shifts_of(motions)
                ctx.shifts = shifts if shifts.any() else None
        elif self.method == "auto":  # offline quality; at 1080p30 the MTB path is the one that keeps up
            frames, motions = align_auto(b.frames, reference_index=ref, exposures=b.relative_exposure,
                                         response=self.response, bits=b.bits)
        else:
            frames, motions = align_homography(b.frames, reference_index=ref, exposures=b.relative_exposure,
                                               response=self.response, bits=b.bits)
        ctx.aligned = b if frames is b.frames else Bracket(frames=frames, exposure_s=b.exposure_s, gain=b.gain,
                                                            bits=b.bits, timestamp_ns=b.timestamp_ns,
                                                            sequence=b.sequence, source=b.source)
        ctx.motions = motions
        return ctx


class MergeStage:
    """Merges the aligned bracket; every ``plan_every`` frames asks the planner for new exposures.

    With ``merger`` (an ``edgehdr.hdr.neural_merge.NeuralMerger``) 3-frame brackets are
    merged with the network's weights; other bracket sizes fall back to the classical
    merge and are counted in ``fallbacks``.

    With ``statistics`` the classical merge measures the radiance as it writes it
    (``ctx.merge_statistics``, an ``edgehdr.hdr.MergeStatistics``; zone maxima over
    ``statistics_zones`` when given): the runtime turns it on when the tone mapper or the
    dimming can use what it measures (``ToneMapStage.uses_merge_statistics``,
    ``DimmingStage.merge_statistics_zones``), which then skip a pass over the frame each.
    """

    reads: tuple[str, ...] = ("aligned", "bracket")

    def __init__(self, response: CameraResponse, *, weighting: str = "noise", deghost: bool = False,
                 planner: ExposurePlanner | None = None, source: BracketSource | None = None, plan_every: int = 5,
                 merger: NeuralMerger | None = None, radiance_buffers: int | None = None,
                 statistics: bool = False, statistics_zones: tuple[int, int] | None = None) -> None:
        self.response, self.weighting, self.deghost = response, weighting, deghost
        self.statistics, self.statistics_zones = statistics, statistics_zones
        self.planner, self.source, self.plan_every = planner, source, plan_every
        self.merger, self.fallbacks = merger, 0
        if merger is not None:
            merger.response = response
        self._last_plan_t: float | None = None
        # radiance_buffers: radiance arrays in flight at most (BufferPool's limit; None: as many as frames need)
        self.radiance_pool = BufferPool(limit=radiance_buffers)

    def __call__(self, ctx: FrameContext) -> FrameContext:
        b = ctx.aligned or _bracket(ctx, "the merge")
        h, w = b.frames.shape[1:3]
        if self.merger is not None and len(b) == 3:
            # the shifts the alignment deferred are applied as the network's encoder and merge read the frames
            ctx.radiance = self.merger(b.frames, b.relative_exposure, bits=b.bits, shifts=ctx.shifts,
                                       out=self.radiance_pool.take((h, w, 3), np.float32))
        else:
            if self.merger is not None:
                self.fallbacks += 1
                if self.fallbacks == 1:
                    log.warning("merge network takes 3 exposures, frame %d has %d: classical merge (counted)",
                                ctx.frame_id, len(b))
            stats = MergeStatistics(self.statistics_zones) if self.statistics else None
            ctx.radiance = merge_debevec(b, response=self.response, weighting=self.weighting, deghost=self.deghost,
                                         out=self.radiance_pool.take((h, w, 3), np.float32), shifts=ctx.shifts,
                                         statistics=stats)
            ctx.merge_statistics = stats
        if self.planner is not None and self.source is not None and ctx.frame_id % self.plan_every == 0:
            now = time.monotonic()
            dt = (now - self._last_plan_t) if self._last_plan_t else self.plan_every / 30.0
            self._last_plan_t = now
            current = self.source.plan
            if current is not None:
                # Radiance is in units of relative exposure; the planner wants the scene in those units.
                self.source.set_plan(self.planner.update(ctx.radiance, current, dt_s=dt))
        return ctx


class ToneMapStage:
    """Tone maps the radiance to sRGB with temporally smoothed adaptation.

    ``operator='neural'`` runs the real-time TMO network (``edgehdr.tonemap.neural``)
    through ``runner``; its parameter grid is smoothed over time instead. ``frame_interval_s``:
    the time between frames (``1 / fps``), so that ``time_constant_s`` holds at any frame rate,
    as in ``DimmingStage``.
    """

    reads: tuple[str, ...] = ("radiance",)

    def __init__(self, operator: str = "reinhard", params: dict[str, Any] | None = None, *,
                 time_constant_s: float = 0.4, runner: Runner | None = None,
                 frame_interval_s: float = 1 / 30) -> None:
        self.operator = operator
        self.params = dict(params or {})
        self.neural = None
        if operator == "neural":
            if runner is None:
                raise ValueError("the neural tone mapper needs a runner (edgehdr.infer.open_runner(model))")
            from edgehdr.tonemap.neural import NeuralToneMapper

            self.neural = NeuralToneMapper(runner, time_constant_s=time_constant_s, frame_interval_s=frame_interval_s)
        self.adaptation = TemporalAdaptation(time_constant_s=time_constant_s, frame_interval_s=frame_interval_s) \
            if operator != "parametric" or "mu" not in self.params else None
        self._sdr = BufferPool()

    def __call__(self, ctx: FrameContext) -> FrameContext:
        radiance = _radiance(ctx, "tone mapping")
        if self.neural is not None:
            ctx.sdr = self.neural(radiance)
            return ctx
        kwargs = dict(self.params)
        if self.adaptation is not None:
            kwargs["adaptation"] = self.adaptation
        stats = ctx.merge_statistics
        if self.uses_merge_statistics and stats is not None and stats.delta == self.params.get("delta", 1e-6):
            kwargs["statistics"] = (stats.log_average(), stats.max_luminance())
        ctx.sdr = tonemap(radiance, self.operator, out=self._sdr.take(radiance.shape, np.uint8), **kwargs)
        return ctx

    @property
    def uses_merge_statistics(self) -> bool:
        """Whether the operator takes the merge's global statistics instead of a pass of its own."""
        return self.operator in MERGE_MEASURED_OPERATORS


class ScoreStage:
    """No-reference quality of the tone-mapped output (NoR-VDPNet) on every ``every_n``-th frame.

    The score lands in ``ctx.quality_score`` (None on frames not scored) and in the
    running statistics ``snapshot()`` reports (the daemon's stats under ``quality``).
    """

    reads: tuple[str, ...] = ("sdr",)

    def __init__(self, runner: Runner, *, every_n: int = 30, model: str = "norvdpnet_tmo", window: int = 100) -> None:
        from edgehdr.quality.norvdpnet import NonFiniteScore, NoRVDPNetScorer

        self._non_finite = NonFiniteScore
        if every_n < 1:
            raise ValueError(f"[score] every_n must be >= 1 for a score stage, got {every_n}")
        self.scorer, self.every_n, self.model = NoRVDPNetScorer(runner), int(every_n), model
        self.recent: list[float] = []
        self.window, self.frames_scored = window, 0
        self.non_finite_frames = 0  # frames the model gave a non-finite score: left unscored, the frame goes on

    def __call__(self, ctx: FrameContext) -> FrameContext:
        if ctx.sdr is not None and ctx.frame_id % self.every_n == 0:
            try:
                ctx.quality_score = self.scorer.score(ctx.sdr)
            except self._non_finite as exc:  # the picture is fine, its score is not (other errors fail the frame)
                self.non_finite_frames += 1
                log.warning("frame %d not scored: %s (frames so far: %d)", ctx.frame_id, exc, self.non_finite_frames)
                return ctx
            self.frames_scored += 1
            self.recent = (self.recent + [ctx.quality_score])[-self.window:]
        return ctx

    def snapshot(self) -> dict[str, Any]:
        recent = list(self.recent)
        return {"model": self.model, "every_n": self.every_n, "frames_scored": self.frames_scored,
                "non_finite_frames": self.non_finite_frames,
                "last": round(recent[-1], 4) if recent else None,
                "mean_recent": round(float(np.mean(recent)), 4) if recent else None}


class DimmingStage:
    """Zone values, backlight and LCD image for the panel, from the radiance.

    ``ctx.backlight`` is the simulated backlight at the light model's working resolution
    (1/4 of the panel's); the LCD compensation interpolates it per pixel row as it goes,
    and ``edgehdr.dimming.full_resolution_backlight`` brings it to the panel's.

    The display mapping sends the radiance's robust peak (99.9th percentile luminance
    of a 1/64 subsample) to the panel peak, smoothed over time like the tone mapper's
    adaptation so the backlight does not pump.
    """

    reads: tuple[str, ...] = ("radiance",)

    def __init__(self, layout: LedLayout, *, algorithm: str = DEFAULT_ALGORITHM, max_rise_per_s: float = 8.0,
                 max_fall_per_s: float = 2.0, peak_percentile: float = 99.9, time_constant_s: float = 0.4,
                 frame_interval_s: float = 1 / 30, runner: Runner | None = None,
                 model_path: str | os.PathLike[str] | None = None,
                 power_budget: float = DEFAULT_POWER_BUDGET, refine_steps: int | None = None) -> None:
        if algorithm not in (*HEURISTICS, "neural"):
            raise ValueError(f"runtime dimming algorithm must be a heuristic ({', '.join(HEURISTICS)}) or "
                             f"neural, got {algorithm!r}; 'optimal' is an offline reference")
        if not 0.0 < power_budget <= 1.0:
            raise ValueError(f"power_budget must be in (0, 1], got {power_budget}")
        self.layout, self.algorithm, self.peak_percentile = layout, algorithm, peak_percentile
        self.power_budget = float(power_budget)
        self.neural = None
        if algorithm == "neural":
            if runner is None:
                raise ValueError("neural dimming needs a runner (edgehdr.infer.open_runner(model))")
            from edgehdr.dimming.neural import REFINE_STEPS, NeuralDimmer

            self.neural = NeuralDimmer(runner, layout, model_path=model_path, power_budget=power_budget,
                                       refine_steps=REFINE_STEPS if refine_steps is None else refine_steps)
        self.model = BacklightModel(layout)
        self.temporal = ZoneTemporalFilter(max_rise_per_s, max_fall_per_s, frame_interval_s)
        self.adaptation = TemporalAdaptation(time_constant_s=time_constant_s, frame_interval_s=frame_interval_s)
        self._lcd = BufferPool()

    def __call__(self, ctx: FrameContext) -> FrameContext:
        rad = _radiance(ctx, "local dimming")
        if rad.shape[:2] != (self.layout.height_px, self.layout.width_px):
            raise ValueError(f"frame {rad.shape[1]}x{rad.shape[0]} does not match the panel "
                             f"{self.layout.width_px}x{self.layout.height_px} of the LED layout")
        robust = robust_peak_luminance(rad, self.peak_percentile, step=8)  # over finite pixels only
        robust = self.adaptation.update(peak=max(robust, 1e-9))["peak"]
        scale = self.layout.peak_luminance_cd_m2 / robust
        measured, zones = ctx.merge_statistics, self.merge_statistics_zones
        if self.neural is not None:
            light = self.temporal.update(self.neural(rad, scale=scale))
        elif zones is not None and measured is not None and measured.zones == zones:
            light = self.temporal.update(zone_max_light(measured.zone_max, self.layout, scale=scale))
        else:
            stats = zone_statistics(rad, self.layout, histogram=self.algorithm == "percentile", scale=scale)
            light = self.temporal.update(zone_light(rad, self.layout, self.algorithm, stats=stats))
        ctx.zone_values = zone_values_within_budget(light, self.layout,
                                                    self.power_budget if self.power_budget < 1.0 else None)
        ctx.light = self.layout.light_from_zone_values(ctx.zone_values).astype(np.float32)
        ctx.backlight = self.model.forward(ctx.light)
        lcd_dtype = np.uint8 if self.layout.lcd_bits == 8 else np.uint16
        ctx.lcd = lcd_compensation(rad, ctx.backlight, self.layout, self._lcd.take(rad.shape, lcd_dtype), scale=scale)
        ctx.display_scale = scale
        return ctx

    @property
    def merge_statistics_zones(self) -> tuple[int, int] | None:
        """The zone grid whose maxima the merge can measure for this stage (the ``max`` heuristic's only input)."""
        return (self.layout.rows, self.layout.cols) if self.algorithm == MERGE_MEASURED_DIMMING else None


class BridgeStage:
    """Hands the zone values to the display-controller link (never blocks).

    The stage uses the link but does not own it: whoever opened the link (the
    runtime in ``pipeline/daemon.py``) closes it, once, after the pipeline stopped.
    While the link is not running (connecting, rejected, down) a frame's zones are
    not sent and no capture-to-zones latency is recorded for it; ``unsent`` counts them.
    """

    reads: tuple[str, ...] = ()

    def __init__(self, link: Link) -> None:
        self.link = link
        self.unsent = 0

    def __call__(self, ctx: FrameContext) -> FrameContext:
        if ctx.zone_values is not None:
            if not self.link.running:
                self.unsent += 1
                return ctx
            self.link.send_zones(ctx.zone_values, ctx.frame_id)
            ctx.zones_sent_ns = time.monotonic_ns()
        return ctx


class _SinkCounts(TypedDict):
    errors: int
    last_error: str | None
    logged_at: float | None  # time.monotonic() of the last log line about this sink
    unlogged: int  # failures since that line


class OutputStage:
    """Feeds every sink; a failing sink drops its own output for that frame, not the others'.

    Failures are counted per sink (``snapshot()``: frames written, errors, last error)
    and logged at error level: the first failure of a sink at once, then at most one
    line per ``log_interval_s`` with the count since the last line. A sink whose
    ``close()`` fails (e.g. a video that lost frames) counts one more error.
    """

    def __init__(self, sinks: Iterable[Any], *, log_interval_s: float = 10.0) -> None:
        self.sinks = list(sinks)
        self.log_interval_s = log_interval_s
        self._names: list[str] = []
        for i, sink in enumerate(self.sinks):
            name = getattr(sink, "name", None) or type(sink).__name__
            self._names.append(name if name not in self._names else f"{name}{i}")
        self._counts = {name: _SinkCounts(errors=0, last_error=None, logged_at=None, unlogged=0)
                        for name in self._names}

    @property
    def errors(self) -> dict[str, int]:
        return {name: c["errors"] for name, c in self._counts.items()}

    @property
    def reads(self) -> tuple[str, ...]:
        """The frame fields the sinks need; a sink that does not say is taken to need them all."""
        from edgehdr.pipeline.graph import RELEASABLE_FIELDS

        needed = set().union(*(getattr(sink, "reads", RELEASABLE_FIELDS) for sink in self.sinks))
        return tuple(f for f in RELEASABLE_FIELDS if f in needed)

    def __call__(self, ctx: FrameContext) -> FrameContext:
        for name, sink in zip(self._names, self.sinks):
            try:
                sink.write(ctx)
            except Exception as exc:  # noqa: BLE001 - count per sink, keep the others going
                self._failed(name, f"frame {ctx.frame_id}: {type(exc).__name__}: {exc}")
        return ctx

    def _failed(self, name: str, message: str) -> None:
        c = self._counts[name]
        c["errors"] += 1
        c["last_error"] = message
        now = time.monotonic()
        if c["logged_at"] is None or now - c["logged_at"] >= self.log_interval_s:
            log.error("output %s failed: %s (%d failures so far, %d since the last report)",
                      name, message, c["errors"], c["unlogged"] + 1)
            c["logged_at"], c["unlogged"] = now, 0
        else:
            c["unlogged"] += 1

    def snapshot(self) -> list[dict[str, Any]]:
        """Per sink: ``{"sink", "frames_written", "errors", "last_error"}``."""
        return [{"sink": name, "frames_written": int(getattr(sink, "written", 0)),
                 "errors": self._counts[name]["errors"], "last_error": self._counts[name]["last_error"]}
                for name, sink in zip(self._names, self.sinks)]

    def close(self) -> None:
        for name, sink in zip(self._names, self.sinks):
            closer = getattr(sink, "close", None)
            if callable(closer):
                try:
                    closer()
                except Exception as exc:  # noqa: BLE001 - every sink gets closed
                    self._counts[name]["logged_at"] = None  # a close failure is always logged
                    self._failed(name, f"close: {type(exc).__name__}: {exc}")
