"""``edgehdr run``: the capture daemon, built from a validated configuration.

Builds the source, stages, sinks, preview server and controller link from
``edgehdr.toml`` (``config.py``), runs the pipeline, logs structured statistics to
stderr, talks to systemd (READY when frames flow, STATUS, WATCHDOG while healthy,
STOPPING), and shuts down gracefully on SIGTERM or SIGINT: capture stops, queued
frames drain through every stage, files are closed atomically, the link and the
source are closed, final statistics are logged.

Failure behaviour (README "Failure behaviour"): a frame a stage fails on is
dropped, logged and counted (``frames_failed``); when the first
``FAIL_FAST_FRAMES`` frames all fail, the configuration cannot work and the daemon
stops with the first error. Output (sink) failures are counted per sink
(``outputs`` in the stats, ``edgehdr_output_errors_total{sink=}``), logged at
error level (rate-limited), shown in ``STATUS=``, and make the exit status 1. The
controller link's state (connected, connecting, rejected, down) and last error are
logged on every change and shown in the stats, ``/metrics`` and ``STATUS=``.

Exit status: 0 after a clean stop with every output complete; 2 for a
configuration error (values, the files and models it names); 1 when the pipeline
could not start, stopped because every frame failed, ended without one completed
frame because frames or the source failed, never sent a frame to the controller,
or an output lost data.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from edgehdr.dimming.layout import LayoutError
from edgehdr.pipeline.config import ConfigError, load_config, sections_running_networks, validate
from edgehdr.pipeline.graph import Pipeline, Stage
from edgehdr.pipeline.notify import SystemdNotifier

if TYPE_CHECKING:
    from edgehdr.camera.base import BracketSource
    from edgehdr.dimming import LedLayout
    from edgehdr.hdr.crf import CameraResponse
    from edgehdr.infer.base import Runner
    from edgehdr.pipeline.preview import PreviewServer
    from edgehdr.pipeline.sinks import PreviewState
    from edgehdr.pipeline.stages import BridgeStage, OutputStage, ScoreStage
    from firmware_bridge.link import Link
    from firmware_bridge.simulator import ControllerSimulator
    from firmware_bridge.transports import PtyPair, Transport

__all__ = ["Runtime", "build_runtime", "check_models", "open_source", "open_source_and_warm_up", "run_daemon",
           "setup_logging"]

log = logging.getLogger("edgehdr.daemon")

FAIL_FAST_FRAMES = 30

# The link's protocol states, as an operator reads them.
LINK_STATES = {"running": "connected", "hello": "connecting", "config": "connecting", "rejected": "rejected",
               "disconnected": "down", "stopped": "down", "idle": "down"}


class _KeyValueFormatter(logging.Formatter):
    def __init__(self, as_json: bool) -> None:
        super().__init__()
        self.as_json = as_json

    def format(self, record: logging.LogRecord) -> str:
        fields = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
                  "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        fields.update(getattr(record, "fields", {}))
        if record.exc_info:  # log.exception's traceback: the cause, in the line (key=value) or a JSON field
            fields["exc"] = self.formatException(record.exc_info)
        if self.as_json:
            return json.dumps(fields, default=str)
        return " ".join(f"{k}={json.dumps(v) if isinstance(v, str) and (' ' in v or not v) else v}"
                        for k, v in fields.items())


class RepeatFilter(logging.Filter):
    """Lets a repeated per-frame message through once per ``interval_s`` and says how many it held back.

    A camera that delivers a non-finite pixel in every frame would otherwise log a
    warning per frame from each stage that met it (tone mapping, zone statistics,
    LCD compensation). Messages are grouped by logger and format string. Errors and
    records logged with ``extra={"always": True}`` pass every time: the periodic
    stats line (``[run] stats_interval_s`` may be shorter than the interval) and
    the link's state changes, which are logged only when they happen.
    """

    def __init__(self, interval_s: float = 10.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._seen: dict[tuple[str, str], list[float]] = {}  # key -> [last emitted at, held back since]

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR or getattr(record, "always", False):
            return True
        key = (record.name, str(record.msg))
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is None or now - seen[0] >= self.interval_s:
            held = int(seen[1]) if seen else 0
            self._seen[key] = [now, 0]
            if held:
                record.msg = f"{record.msg} ({held} more like this in the last {self.interval_s:g} s)"
            return True
        seen[1] += 1
        return False


def link_change_always_logged(before: tuple[Any, Any] | None, now: tuple[Any, Any]) -> bool:
    """Whether a change of the link's ``(state, last_error)`` passes the repeat filter: coming up, going down and a
    new error always do; an absent controller's connecting/down cycle with the same error (every handshake
    timeout, 2 s) is held back to one line per 10 s."""
    state_before, error_before = before or (None, None)
    return "connected" in (now[0], state_before) or now[1] != error_before


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_KeyValueFormatter(fmt == "json"))
    handler.addFilter(RepeatFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class Runtime:
    """Everything one daemon run owns; ``close()`` releases it in the right order."""

    def __init__(self) -> None:
        self.pipeline: Pipeline | None = None
        self.link: Link | None = None
        self.simulator: ControllerSimulator | None = None
        self.pty: PtyPair | None = None
        self.preview: PreviewServer | None = None
        self.preview_state: PreviewState | None = None
        self.source: BracketSource | None = None
        self.layout: LedLayout | None = None
        self.scorer: ScoreStage | None = None
        self.outputs: OutputStage | None = None
        self.bridge: BridgeStage | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._closed = False

    def built_pipeline(self) -> Pipeline:
        """The pipeline ``build_runtime`` wired; ``RuntimeError`` when there is none (the build failed)."""
        if self.pipeline is None:
            raise RuntimeError("this runtime has no pipeline: build it with build_runtime()")
        return self.pipeline

    def link_stats(self) -> dict[str, Any] | None:
        if self.link is None:
            return None
        link = self.link.stats()
        link["protocol_state"] = link.get("state")
        link["state"] = LINK_STATES.get(link.get("state", ""), "down")
        link["errors"] = link.get("transport_errors", 0) + link.get("rejections", 0)
        if self.bridge is not None:
            link["frames_unsent"] = self.bridge.unsent
        return link

    def stats(self) -> dict[str, Any]:
        stats = self.pipeline.stats() if self.pipeline else {}
        if self.outputs is not None:
            stats["outputs"] = self.outputs.snapshot()
            stats["output_errors"] = sum(o["errors"] for o in stats["outputs"])
        if self.link is not None:
            stats["link"] = self.link_stats()
        if self.preview is not None:  # what the preview server did with its connections; acceptor_failed: it is down
            stats["preview"] = self.preview.connection_stats()
        self._add_stage_stats(stats)
        if self.simulator is not None:
            st = self.simulator.status()
            stats["controller"] = {"frames_applied": st.frames_applied, "state": int(st.state),
                                   "crc_errors": st.crc_errors, "framing_errors": st.framing_errors}
        return stats

    def _add_stage_stats(self, stats: dict[str, Any]) -> None:
        """What stages hold beside the pipeline's counts, live and in the final stats: the merge's radiance pool
        ([run] radiance_buffers: arrays allocated, its limit, waits), the score stage's ``quality``, and per stage
        with a network (merge, tone map, dimming) the frames whose network output held a non-finite value, which
        the stage replaced (``NeuralMerger.finite_logits``, ``NeuralToneMapper.finite_grid``, the dimming
        network's full light; the score stage's unscored frames are in ``quality``), and the neural tone mapper's
        frames whose median luminance was not finite (radiance near float32's top; the previous median served)."""
        stages = self.pipeline.stages if self.pipeline is not None else []
        if len(stages) > 1 and hasattr(stages[1].fn, "radiance_pool"):
            stats["radiance_buffers"] = stages[1].fn.radiance_pool.snapshot()
        if self.scorer is not None:
            stats["quality"] = self.scorer.snapshot()
        faults: dict[str, int] = {}
        keys: dict[str, int] = {}
        for stage in stages:
            network = getattr(stage.fn, "merger", None) or getattr(stage.fn, "neural", None)
            if network is None:
                continue
            if hasattr(network, "non_finite_frames"):
                faults[stage.name] = int(network.non_finite_frames)
            if hasattr(network, "non_finite_key_frames"):
                keys[stage.name] = int(network.non_finite_key_frames)
        if faults:
            stats["network_non_finite_frames"] = faults
        if keys:
            stats["non_finite_key_frames"] = keys

    def close(self) -> dict[str, Any]:
        """Stop and release everything this run opened, in order; safe after a partial build and twice."""
        if self._closed:
            return {}
        self._closed = True
        final = self.pipeline.stop() if self.pipeline else {}
        if final:
            self._add_stage_stats(final)
        if self.pipeline is None and self.source is not None:
            try:
                self.source.close()
            except Exception as exc:  # noqa: BLE001 - keep closing the rest
                log.error("source close failed: %s", exc)
        if self.outputs is not None:
            final["outputs"] = self.outputs.snapshot()
            final["output_errors"] = sum(o["errors"] for o in final["outputs"])
        if self.link is not None:
            final["link"] = self.link_stats()
            self.link.close()
        if self.simulator is not None:
            self.simulator.stop()
        if self.pty is not None:
            self.pty.close()
        if self.preview is not None:
            self.preview.close()
        if self._tmp is not None:
            self._tmp.cleanup()
        return final


def _build_source(cfg: dict[str, Any], response_bits: int = 8) -> BracketSource:
    from edgehdr.camera.base import ExposurePlan

    src = cfg["source"]
    plan = ExposurePlan.of(src["exposures_s"], src["gains"] or None) if src["exposures_s"] else None
    kind = src["kind"]
    common: dict[str, Any] = dict(width=src["width"], height=src["height"], fps=src["fps"], plan=plan, mode=src["mode"])
    if kind == "synthetic":
        from edgehdr.camera.synthetic import SyntheticCamera

        # max_stacks ([source] buffers) is set once the stages are known (_bound_buffers)
        return SyntheticCamera(seed=src["seed"], response=src["response"] if src["response"] != "auto" else "srgb",
                               moving_objects=src["moving_objects"], shake_px=src["shake_px"], **common)
    if kind == "replay":
        from edgehdr.camera.replay import ReplaySource

        return ReplaySource(src["path"], bracket_size=src["bracket_size"], fps=src["fps"], loop=src["loop"])
    settle = {} if src["settle_frames"] == -1 else {"settle_frames": src["settle_frames"]}
    if kind == "v4l2":
        from edgehdr.camera.devices import V4L2Source

        return V4L2Source(src["path"], **settle, **common)
    if kind == "gstreamer":
        from edgehdr.camera.devices import GStreamerSource

        return GStreamerSource(src["pipeline"], sensor_id=src["sensor_id"], **settle, **common)
    from edgehdr.camera.devices import Picamera2Source

    return Picamera2Source(camera_num=src["sensor_id"], hdr_mode=src["hdr_mode"], **common)


def _model_runner(cfg: dict[str, Any], model: str) -> Runner:
    """A loaded runner for a neural stage's model: engine for this device, else ONNX Runtime (``[infer]``)."""
    from edgehdr.infer import open_runner
    from edgehdr.models import model_path

    inf = cfg["infer"]
    return open_runner(model_path(model), engine_dir=inf["engine_dir"] or None,
                       prefer="cpu" if inf["backend"] == "cpu" else "auto", intra_op_threads=inf["threads"])


@contextlib.contextmanager
def _model_key(section: str, model: str) -> Iterator[None]:
    """A model that cannot be found, loaded or used by its stage (another network's file, say) is a configuration
    error naming its key (exit 2 before any frame), not a start-up failure."""
    try:
        yield
    except ConfigError:
        raise
    except (ValueError, OSError) as exc:
        raise ConfigError(f"[{section}] model = {model!r}: {exc}") from exc


def check_models(cfg: dict[str, Any], source: BracketSource | None = None) -> None:
    """The models a configuration runs, each opened in ONNX Runtime (CPU) and checked as its stage checks it, then
    closed: ``ConfigError`` naming the key for another network's file. With the opened ``source`` the dimming
    model too (its input depends on the LED layout, which depends on the frame size), and the layout file against
    the frames. The daemon calls it between opening the source and the kernels' warm-up, so such a file fails in
    well under a second instead of after a first run's compilation (13-26 s on 2 cores). An engine for the device
    is checked when the runtime is built (it is made from the same ONNX file: ``open_runner`` matches its
    sha256)."""
    from edgehdr.infer import OnnxRuntimeRunner
    from edgehdr.models import model_path

    def merge_check(runner: Runner) -> None:
        from edgehdr.hdr.neural_merge import NeuralMerger

        NeuralMerger(runner)

    def tonemap_check(runner: Runner) -> None:
        from edgehdr.tonemap.neural import NeuralToneMapper

        NeuralToneMapper(runner)

    def score_check(runner: Runner) -> None:
        from edgehdr.quality.norvdpnet import NoRVDPNetScorer

        NoRVDPNetScorer(runner)

    checks: dict[str, Callable[[Runner], None]] = {"merge": merge_check, "tonemap": tonemap_check,
                                                   "score": score_check}
    dim = cfg["dimming"]
    if source is not None and dim["enabled"]:
        layout = _dimming_layout(cfg, *_frame_size(cfg, source))

        def dimming_check(runner: Runner) -> None:
            from edgehdr.dimming.neural import NeuralDimmer

            NeuralDimmer(runner, layout, model_path=model_path(dim["model"]), power_budget=dim["power_budget"],
                         refine_steps=dim["refine_steps"])

        checks["dimming"] = dimming_check
    for section in sections_running_networks(cfg):
        if section not in checks:  # the dimming model without the source
            continue
        with _model_key(section, cfg[section]["model"]):
            with OnnxRuntimeRunner(model_path(cfg[section]["model"]), intra_op_threads=1) as runner:
                checks[section](runner)


def open_source(cfg: dict[str, Any]) -> BracketSource:
    """The configured bracket source, opened: its device, or the synthetic camera's scene.

    The daemon, the demo and the runtime benchmark open it before loading the kernels and hand it to
    ``build_runtime(cfg, source=...)``: the synthetic scene's 1080p layers then come and go before numba's LLVM
    memory is there (the process's start-up peak 250 against 322 MB, below the running pipeline's), and nothing
    that talks to the controller waits through a first run's kernel compilation.
    """
    source = _build_source(cfg)
    source.open()
    return source


def build_runtime(cfg: dict[str, Any], *, extra_sinks: Iterable[Any] = (), start: datetime | None = None,
                  keep: Iterable[str] = (), source: BracketSource | None = None) -> Runtime:
    """Wire a runtime from a validated configuration (the caller starts and closes it).

    ``start`` (default: now) fills ``{start:...}`` in output names; ``keep`` names frame
    fields the pipeline must not release before the last stage (``Pipeline``'s ``keep``:
    the demo keeps what its contact sheet shows); ``source``: the configuration's source, already opened
    (``open_source``; default: opened here), which the runtime then owns. When a step fails,
    everything opened so far (source, simulator, pty, link, preview) is closed before
    the error propagates.
    """
    rt = Runtime()
    rt.source = source
    try:
        _wire(rt, cfg, extra_sinks, start or datetime.now(), keep)
    except BaseException:
        rt.close()
        raise
    return rt


def open_source_and_warm_up(cfg: dict[str, Any], jobs: Iterable[str] | None = None, *,
                            check: Callable[[BracketSource], None] | None = None) -> tuple[BracketSource, float]:
    """``open_source(cfg)``, then ``check(source)`` if given (the daemon's ``check_models``), then the kernels
    (``edgehdr.warmup.warm_up`` of ``jobs``, default the configuration's): the source and the warm-up's seconds.
    The source is closed again when the check or the warm-up fails."""
    from edgehdr.warmup import jobs_for_config, warm_up

    source = open_source(cfg)
    try:
        if check is not None:
            check(source)
        seconds = warm_up(jobs=tuple(jobs) if jobs is not None else jobs_for_config(cfg))
    except BaseException:
        source.close()
        raise
    return source, seconds


def _check_layout_fits(layout: LedLayout, width: int, height: int, where: str) -> None:
    if (layout.width_px, layout.height_px) != (width, height):
        raise ConfigError(f"{where}: the LED layout is for a {layout.width_px}x{layout.height_px} panel but the "
                          f"source delivers {width}x{height} frames; give a layout for that size or leave "
                          "[dimming] layout empty to lay the zones over the frame")


def _wire(rt: Runtime, cfg: dict[str, Any], extra_sinks: Iterable[Any], start: datetime,
          keep: Iterable[str] = ()) -> None:
    """Build the runtime step by step; each builder records on ``rt`` what it opened, so ``rt.close()``
    releases it when a later step fails."""
    from edgehdr.hdr.merge import resolve_response

    if rt.source is None:
        rt.source = _build_source(cfg)
        rt.source.open()  # open early: size, bits and response come from the device
    source = rt.source
    response = getattr(source, "response", None) or resolve_response(cfg["source"]["response"], source.bits)
    width, height = _frame_size(cfg, source)
    fps = cfg["source"]["fps"] or 30.0
    stages = _hdr_stages(cfg, source, response)
    tonemap, *score = _tonemap_stages(rt, cfg, fps)
    stages.append(tonemap)
    if cfg["dimming"]["enabled"]:
        # The dimming runs beside the tone mapper on the same frame (both read only the radiance): the zones and the
        # LCD image do not wait for the SDR picture, and a frame holds its radiance for one step instead of two.
        dimming = _dimming_stage(rt, cfg, width, height, fps)
        dimming.concurrent = True
        stages.append(dimming)
        if cfg["bridge"]["enabled"]:
            stages.append(_bridge_stage(rt, cfg))
    _share_merge_statistics(stages)
    stages += score  # after the zones are sent: scoring a frame never delays its zones
    stages.append(_output_stage(rt, cfg, extra_sinks, start, fps))
    keep = tuple(keep)
    _bound_buffers(cfg, source, stages, keep)
    rt.pipeline = Pipeline(source, stages, keep=keep, kernel_threads=cfg["run"]["kernel_threads"])


def _share_merge_statistics(stages: list[Stage]) -> None:
    """Let the classical merge measure what the tone mapper and the dimming would measure in passes of their own."""
    from edgehdr.pipeline.stages import DimmingStage, MergeStage, ToneMapStage

    merge = next((st.fn for st in stages if isinstance(st.fn, MergeStage)), None)
    if merge is None or merge.merger is not None:  # the network's merge measures nothing (nor its rare fallback)
        return
    zones = next((st.fn.merge_statistics_zones for st in stages if isinstance(st.fn, DimmingStage)), None)
    tonemap = any(st.fn.uses_merge_statistics for st in stages if isinstance(st.fn, ToneMapStage))
    merge.statistics, merge.statistics_zones = tonemap or zones is not None, zones


def _bound_buffers(cfg: dict[str, Any], source: BracketSource, stages: list[Stage], keep: tuple[str, ...]) -> None:
    """``[source] buffers`` bracket stacks (the synthetic camera's) and ``[run] radiance_buffers`` radiance arrays in
    flight at most (0: no limit), one more for each step after the first reader that holds the field too (a concurrent
    stage shares its predecessor's step) and one when the pipeline keeps the last frame's (the demo)."""
    from edgehdr.pipeline.graph import RELEASABLE_FIELDS
    from edgehdr.pipeline.stages import MergeStage

    def later_steps(field: str) -> int:  # the steps after the merge that read the field
        return sum(1 for st in stages[2:] if not st.concurrent and field in getattr(st.fn, "reads", RELEASABLE_FIELDS))

    if cfg["source"]["buffers"] and hasattr(source, "max_stacks"):
        source.max_stacks = cfg["source"]["buffers"] + later_steps("bracket") + int("bracket" in keep)
    merge = stages[1].fn
    if cfg["run"]["radiance_buffers"] and isinstance(merge, MergeStage):
        limit = cfg["run"]["radiance_buffers"] + max(later_steps("radiance") - 1, 0) + int("radiance" in keep)
        merge.radiance_pool.bound(limit)


def _hdr_stages(cfg: dict[str, Any], source: BracketSource, response: CameraResponse) -> list[Stage]:
    """Align and merge (with the exposure planner when the source takes exposure plans)."""
    from edgehdr.camera.planner import ExposurePlanner
    from edgehdr.pipeline.stages import AlignStage, MergeStage

    q = cfg["run"]["queue_size"]
    planner = None
    if cfg["planner"]["enabled"] and source.plan is not None:
        p = cfg["planner"]
        # at least two frames: a plan of one exposure (a scene of low range) could never be merged, and the
        # planner, fed by merged frames, would never see another frame to change it
        planner = ExposurePlanner(response, max_frames=p["max_frames"], min_frames=2,
                                  exposure_limits_s=(p["min_exposure_s"], p["max_exposure_s"]),
                                  gain_limits=(1.0, p["max_gain"]))
    merger = None
    if cfg["merge"]["method"] == "neural":
        from edgehdr.hdr.neural_merge import NeuralMerger

        with _model_key("merge", cfg["merge"]["model"]):
            merger = NeuralMerger(_model_runner(cfg, cfg["merge"]["model"]), response, fill=cfg["merge"]["fill"])
    return [Stage("align", AlignStage(cfg["align"]["method"], response=response,
                                      work_scale=cfg["align"]["work_scale"], defer_shifts=True), queue_size=q),
            Stage("merge", MergeStage(response, weighting=cfg["merge"]["weighting"], deghost=cfg["merge"]["deghost"],
                                      planner=planner, source=source, plan_every=cfg["planner"]["every_n"],
                                      merger=merger), queue_size=q)]


def _tonemap_stages(rt: Runtime, cfg: dict[str, Any], fps: float) -> list[Stage]:
    """Tone mapping, and the NoR-VDPNet quality score when ``[score] every_n`` asks for it."""
    from edgehdr.pipeline.stages import ScoreStage, ToneMapStage

    q = cfg["run"]["queue_size"]
    tm = cfg["tonemap"]
    params = {"key": tm["key"]} if tm["operator"] in ("reinhard", "reinhard-local", "parametric") else {}
    if tm["operator"] not in ("parametric", "neural"):
        params["saturation"] = tm["saturation"]
    if tm["operator"] == "reinhard-local":
        params["base_compression"] = tm["base_compression"]
    with _model_key("tonemap", tm["model"]) if tm["operator"] == "neural" else contextlib.nullcontext():
        runner = _model_runner(cfg, tm["model"]) if tm["operator"] == "neural" else None
        stages = [Stage("tonemap", ToneMapStage(tm["operator"], params, time_constant_s=tm["time_constant_s"],
                                                runner=runner, frame_interval_s=1 / fps), queue_size=q)]
    sc = cfg["score"]
    if sc["every_n"] > 0:
        with _model_key("score", sc["model"]):
            rt.scorer = ScoreStage(_model_runner(cfg, sc["model"]), every_n=sc["every_n"], model=sc["model"])
        stages.append(Stage("score", rt.scorer, queue_size=q))
    return stages


def _dimming_layout(cfg: dict[str, Any], width: int, height: int) -> LedLayout:
    """The configured LED layout for frames of ``width`` x ``height`` (``[dimming] layout``, checked against the
    frame size, or a rows x cols grid over the frame)."""
    from edgehdr.dimming import LedLayout, load_layout

    dim = cfg["dimming"]
    if dim["layout"]:
        layout = load_layout(dim["layout"])
        _check_layout_fits(layout, width, height, f"[dimming] layout = {dim['layout']!r}")
        return layout
    return LedLayout(rows=min(dim["rows"], height), cols=min(dim["cols"], width), width_px=width, height_px=height,
                     peak_luminance_cd_m2=dim["peak_luminance_cd_m2"], zone_bits=cfg["bridge"]["bits"],
                     source="[dimming] rows/cols")


def _frame_size(cfg: dict[str, Any], source: BracketSource) -> tuple[int, int]:
    """(width, height) of the frames an opened source delivers (the configuration's where it does not say)."""
    if hasattr(source, "width") and hasattr(source, "height"):
        return source.width, source.height
    return cfg["source"]["width"], cfg["source"]["height"]


def _dimming_stage(rt: Runtime, cfg: dict[str, Any], width: int, height: int, fps: float) -> Stage:
    """Local dimming over the configured layout (or a rows x cols grid over the frame)."""
    from edgehdr.pipeline.stages import DimmingStage

    dim = cfg["dimming"]
    layout = rt.layout = _dimming_layout(cfg, width, height)
    runner = model = None
    with _model_key("dimming", dim["model"]) if dim["algorithm"] == "neural" else contextlib.nullcontext():
        if dim["algorithm"] == "neural":
            from edgehdr.models import model_path

            model = model_path(dim["model"])
            runner = _model_runner(cfg, dim["model"])
        dimming = DimmingStage(layout, algorithm=dim["algorithm"], frame_interval_s=1 / fps, runner=runner,
                               model_path=model, power_budget=dim["power_budget"], refine_steps=dim["refine_steps"])
    for warning in getattr(dimming.neural, "warnings", []):
        log.warning("dimming model %s: %s", model, warning)
    return Stage("dimming", dimming, queue_size=cfg["run"]["queue_size"])


def _bridge_stage(rt: Runtime, cfg: dict[str, Any]) -> Stage:
    """The controller link (``port = "simulate"``: a controller simulator on a pty of its own)."""
    from edgehdr.pipeline.stages import BridgeStage
    from firmware_bridge.link import Link
    from firmware_bridge.protocol import Config, ProtocolError
    from firmware_bridge.transports import PtyPair, SerialTransport, open_transport

    br, layout = cfg["bridge"], rt.layout
    if layout is None:
        raise ConfigError("[bridge] enabled needs [dimming] enabled: the link carries the zone values")
    link_cfg = Config(rows=layout.rows, cols=layout.cols, bits=layout.zone_bits, safe_level=br["safe_level"],
                      watchdog_ms=br["watchdog_ms"], heartbeat_ms=br["heartbeat_ms"])
    try:
        link_cfg.validate()
    except ProtocolError as exc:
        raise ConfigError(f"[dimming] {layout.rows}x{layout.cols} zones at [bridge] bits = {layout.zone_bits} "
                          f"cannot go over the controller link: {exc}") from None
    transport: Transport
    if br["port"] == "simulate":
        from firmware_bridge.simulator import ControllerSimulator

        rt._tmp = tempfile.TemporaryDirectory(prefix="edgehdr-")
        rt.pty = PtyPair(Path(rt._tmp.name) / "ttyEH0")
        # The simulated panel refreshes at 120 Hz, like HDR LCDs, independent of the camera.
        rt.simulator = ControllerSimulator(rt.pty.controller, rows=layout.rows, cols=layout.cols,
                                           vsync_hz=120.0).start()
        transport = SerialTransport(rt.pty.path, br["baudrate"])
    else:
        transport = open_transport(br["port"], baudrate=br["baudrate"])
    rt.link = Link(transport, link_cfg).start()
    rt.bridge = BridgeStage(rt.link)
    return Stage("bridge", rt.bridge, queue_size=cfg["run"]["queue_size"], kernels=False)


def _output_stage(rt: Runtime, cfg: dict[str, Any], extra_sinks: Iterable[Any], start: datetime, fps: float) -> Stage:
    """Image sequences, the video and the preview server; output names filled with the run's start time."""
    from edgehdr.pipeline.preview import PreviewServer
    from edgehdr.pipeline.sinks import (
        ImageSequenceSink,
        PreviewSink,
        PreviewState,
        VideoSink,
        expand_run_pattern,
        unused_path,
    )
    from edgehdr.pipeline.stages import OutputStage

    sinks = list(extra_sinks)
    out = cfg["outputs"]
    stamp = start.strftime("%Y%m%d-%H%M%S")
    if out["frames_dir"]:
        sinks.append(ImageSequenceSink(expand_run_pattern(out["frames_dir"], start), every_n=out["frames_every_n"],
                                       prefix=f"sdr_{stamp}", name="frames"))
    if out["lcd_dir"] and cfg["dimming"]["enabled"]:
        sinks.append(ImageSequenceSink(expand_run_pattern(out["lcd_dir"], start), what="lcd",
                                       every_n=out["frames_every_n"], prefix=f"lcd_{stamp}", name="lcd"))
    if out["video"]:
        video = Path(expand_run_pattern(out["video"], start))
        if video.exists():
            log.warning("output video %s exists (a previous run's?): this run writes %s", video, unused_path(video))
        sinks.append(VideoSink(unused_path(video), fps=fps))
    if cfg["preview"]["enabled"]:
        rt.preview_state = PreviewState(rt.stats)
        sinks.append(PreviewSink(rt.preview_state, rt.layout))
        host, port = cfg["preview"]["host"], cfg["preview"]["port"]
        try:
            rt.preview = PreviewServer(rt.preview_state, host=host, port=port,
                                       allowed_hosts=cfg["preview"]["allowed_hosts"]).start()
        except OSError as exc:
            raise ConfigError(f"[preview] host = {host!r}, port = {port}: cannot listen there "
                              f"({exc.strerror or exc}); choose another port, 0 for any free one, or "
                              "[preview] enabled = false") from None
        if not rt.preview.loopback_only:
            log.warning("preview listens on %s, beyond this machine: anyone who reaches port %d sees the camera "
                        "(the default, 127.0.0.1, with an SSH tunnel keeps it local)", host, rt.preview.address[1])
    rt.outputs = OutputStage(sinks)
    return Stage("outputs", rt.outputs, queue_size=cfg["run"]["queue_size"], kernels=False)


def run_daemon(config_path: str | os.PathLike[str] | None = None, *, config: dict[str, Any] | None = None,
               seconds: float | None = None) -> int:
    """Run until SIGTERM/SIGINT (or ``seconds``); returns the exit status."""
    try:
        cfg = config if config is not None else (load_config(config_path) if config_path else validate({}))
    except (ValueError, FileNotFoundError) as exc:
        print(f"edgehdr run: error: {exc}", file=sys.stderr)
        return 2
    if seconds is not None and not (math.isfinite(seconds) and seconds >= 0):
        print(f"edgehdr run: error: --seconds must be a finite number >= 0 (0 = until stopped), got {seconds}",
              file=sys.stderr)
        return 2
    setup_logging(cfg["run"]["log_level"], cfg["run"]["log_format"])
    seconds = cfg["run"]["seconds"] if seconds is None else seconds
    from edgehdr.warmup import limit_library_threads

    limit_library_threads()  # BLAS and OpenCV pools spin and starve the numba kernels (measured)
    notifier = SystemdNotifier()
    stop = threading.Event()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        from edgehdr.warmup import settle_heap

        # the source before the kernels (open_source); another network's file fails before them too
        source, warm_s = open_source_and_warm_up(cfg, check=functools.partial(check_models, cfg))
        log.info("kernels ready", extra={"fields": {"seconds": round(warm_s, 2)}})
        rt = build_runtime(cfg, source=source)
        pipeline = rt.built_pipeline()
        settle_heap()
        pipeline.start()
    except (ConfigError, LayoutError) as exc:
        message = str(exc)
        if config_path and not message.startswith(str(config_path)):  # found while building: name the file too
            message = f"{config_path}: {message}"
        log.error("configuration error: %s", message)
        print(f"edgehdr run: error: {message}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - report any start-up failure with its reason
        log.error("could not start: %s: %s", type(exc).__name__, exc)
        print(f"edgehdr run: error: {exc}", file=sys.stderr)
        return 1
    log.info("started", extra={"fields": {"source": pipeline.source.describe(), "preview": (
        f"http://{rt.preview.address[0]}:{rt.preview.address[1]}/" if rt.preview else None)}})
    started = time.monotonic()
    ready = False
    next_stats = started + cfg["run"]["stats_interval_s"]
    next_watchdog = started
    failure: str | None = None
    link_seen: tuple[Any, Any] | None = None
    # falling_behind: each stats interval against the one before (the first, with the start-up's frames, is not judged)
    behind_from: tuple[dict[str, Any], float] | None = None
    next_behind_log = started
    cores = usable_cores()
    while not stop.is_set():
        stop.wait(0.1)
        now = time.monotonic()
        if not ready and pipeline.healthy():
            ready = True
            notifier.ready("frames flowing")
            log.info("ready: frames flowing")
        if notifier.watchdog_interval_s and now >= next_watchdog and pipeline.healthy(within_s=5.0):
            notifier.watchdog()
            next_watchdog = now + notifier.watchdog_interval_s
        link = rt.link_stats()
        if link is not None and (link["state"], link["last_error"]) != link_seen:
            # Coming up, going down and a new error always show; an absent controller's connecting/down cycle with
            # the same error every handshake timeout is held back by the repeat filter (one line per 10 s)
            always = link_change_always_logged(link_seen, (link["state"], link["last_error"]))
            link_seen = (link["state"], link["last_error"])
            level = logging.INFO if link["state"] in ("connected", "connecting") and not link["last_error"] \
                else logging.WARNING
            log.log(level, "controller link %s", link["state"], extra={"always": always, "fields": {
                "port": cfg["bridge"]["port"], "protocol_state": link["protocol_state"],
                "last_error": link["last_error"]}})
        if now >= next_stats:
            st = rt.stats()
            cpu_now = time.process_time()
            if behind_from is not None and now >= next_behind_log:
                behind = falling_behind(behind_from[0], st, cpu_s=cpu_now - behind_from[1], cores=cores)
                if behind:  # at most once a minute: the stats line below carries the counts every interval
                    log.warning(behind)
                    next_behind_log = now + 60.0
            behind_from = (st, cpu_now)
            summary = {k: st.get(k) for k in ("fps", "frames_completed", "frames_dropped", "frames_failed",
                                             "output_errors", "capture_to_zones_ms_median",
                                             "capture_to_zones_ms_p99", "source_restarts")}
            if link is not None:
                summary["link"] = link["state"]
            log.info("stats", extra={"always": True, "fields": summary})
            notifier.status(status_line(st))
            next_stats = now + cfg["run"]["stats_interval_s"]
        failure = pipeline.failing_from_start(FAIL_FAST_FRAMES)
        if failure:
            log.error("the first %d frames all failed; stopping: %s", FAIL_FAST_FRAMES, failure)
            notifier.status(f"stopped: every frame failed: {failure}")
            break
        if seconds and now - started >= seconds:
            break
        if pipeline.finished:
            log.info("source finished")
            break
    notifier.stopping()
    final = rt.close()
    log.info("stopped", extra={"fields": {k: final.get(k) for k in ("fps", "frames_captured", "frames_completed",
                                                                    "frames_dropped", "frames_failed",
                                                                    "output_errors", "capture_to_zones_ms_median",
                                                                    "capture_to_zones_ms_p99")}})
    notifier.close()
    status = 0
    if failure:
        print(f"edgehdr run: error: the first {FAIL_FAST_FRAMES} frames all failed: {failure}", file=sys.stderr)
        status = 1
    else:
        nothing = nothing_completed(final)
        if nothing:
            log.error(nothing)
            print(f"edgehdr run: error: {nothing}", file=sys.stderr)
            status = 1
    link = final.get("link")
    if link is not None and not link.get("frames_sent") and final.get("frames_completed"):
        print(f"edgehdr run: error: the controller link ({cfg['bridge']['port']}) never sent a frame: "
              f"{link.get('state')}, last error: {link.get('last_error') or 'none'}", file=sys.stderr)
        status = 1
    for out in final.get("outputs", []):
        if out["errors"]:
            log.error("output %s: %d failures, last: %s", out["sink"], out["errors"], out["last_error"])
            print(f"edgehdr run: error: output {out['sink']} failed {out['errors']} times "
                  f"(last: {out['last_error']})", file=sys.stderr)
            status = 1
    return status


def nothing_completed(stats: dict[str, Any]) -> str | None:
    """Why a run that completed no frame failed, from its final stats; None if it completed one, or if nothing went
    wrong (stopped before the first frame was through). A run shorter than the fail-fast rule's 30 frames, or one
    whose source failed at every read, would otherwise end with exit status 0."""
    if stats.get("frames_completed"):
        return None
    stages = stats.get("stages") or []
    reasons = []
    if stats.get("frames_failed"):
        last = next((s.get("last_error") for s in reversed(stages[1:]) if s.get("errors") and s.get("last_error")),
                    None)
        reasons.append(f"{stats['frames_failed']} frames failed (last: {last or 'unknown'})")
    capture = stages[0] if stages else {}
    if stats.get("source_restarts") or stats.get("source_stalls") or capture.get("errors"):
        reasons.append(f"the source failed ({stats.get('source_restarts', 0)} restarts, "
                       f"{stats.get('source_stalls', 0)} stalls; last: {capture.get('last_error') or 'unknown'})")
    if not reasons:
        return None
    return "no frame completed: " + "; ".join(reasons)


def usable_cores() -> int:
    """CPUs this process may run on (its affinity mask where the OS has one, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def falling_behind(before: dict[str, Any], after: dict[str, Any], *, cpu_s: float, cores: int) -> str | None:
    """Why the pipeline lost frames between two ``Pipeline.stats()`` snapshots, or None.

    Behind means more than 2 % of the brackets the source offered over at least 2 s were lost (dropped at a queue,
    or capture slots the source let pass): the pipeline's own ``drop_fraction`` over the interval, so no source
    has to state its bracket rate (a burst bracket, a replay's per-bracket rate, a device's settle frames). The
    text says what it cost: the process's CPU over the interval (``cpu_s``, every thread) against ``cores``; at
    85 % of them or more the machine is short of CPU (lower ``[source] fps`` or the frame size, or choose lighter
    stages), else something waits (a stage or the source stalls); and the stage whose thread spent the most CPU a
    delivered frame. None when it kept up or on too short an interval.
    """
    wall_s = float(after.get("elapsed_s", 0.0)) - float(before.get("elapsed_s", 0.0))
    if wall_s < 2.0:
        return None

    def change(key: str) -> int:
        return int(after.get(key, 0)) - int(before.get(key, 0))

    delivered, lost = change("frames_completed"), change("frames_dropped")
    offered = change("frames_captured") + change("frames_skipped")  # as Pipeline.stats' drop_fraction counts them
    if lost <= 0.02 * max(offered, 1):
        return None
    used = cpu_s / wall_s
    per_frame_ms = 1e3 * cpu_s / max(delivered, 1)
    spent = {st["name"]: (st.get("cpu_s_total") or 0.0) for st in before.get("stages", [])}
    heaviest = max(((st["name"], (st.get("cpu_s_total") or 0.0) - spent.get(st["name"], 0.0))
                    for st in after.get("stages", [])), key=lambda item: item[1], default=None)
    text = (f"pipeline losing frames: {delivered / wall_s:.1f} fps delivered over the last {wall_s:.0f} s, {lost} "
            f"of {offered} brackets lost ({100.0 * lost / max(offered, 1):.1f} %); the process used {used:.2f} of "
            f"{cores} cores ({per_frame_ms:.1f} ms of CPU a frame)")
    if heaviest is not None and heaviest[1] > 0:
        heaviest_ms = 1e3 * heaviest[1] / max(delivered, 1)
        text += f"; the heaviest stage: {heaviest[0]} ({heaviest_ms:.1f} ms of its thread a frame)"
    if used >= 0.85 * cores:
        return text + ": short of CPU; lower [source] fps or the frame size, or choose lighter stages"
    return text + ": not short of CPU, so a stage or the source waits (see the stages' latency in /stats.json)"


def status_line(stats: dict[str, Any]) -> str:
    """The systemd ``STATUS=`` text: rate, drops, failures, output errors per sink, frames a network's non-finite
    output was replaced in, link state."""
    parts = [f"{stats.get('fps')} fps", f"{stats.get('frames_dropped')} dropped",
             f"{stats.get('frames_failed')} failed"]
    failing = [f"{o['sink']} {o['errors']}" for o in stats.get("outputs", []) if o["errors"]]
    if failing:
        parts.append("output errors: " + ", ".join(failing))
    faulty = [f"{name} {n}" for name, n in stats.get("network_non_finite_frames", {}).items() if n]
    unscored = (stats.get("quality") or {}).get("non_finite_frames")
    if unscored:
        faulty.append(f"score {unscored}")
    if faulty:
        parts.append("non-finite network outputs: " + ", ".join(faulty))
    keys = [f"{name} {n}" for name, n in stats.get("non_finite_key_frames", {}).items() if n]
    if keys:
        parts.append("non-finite frame medians: " + ", ".join(keys))
    link = stats.get("link")
    if link is not None:
        parts.append(f"link {link['state']}" + (f" ({link['last_error']})" if link["state"] != "connected"
                                                 and link.get("last_error") else ""))
    return ", ".join(parts)
