"""``edgehdr run``: the capture daemon, built from a validated configuration.

Builds the source, stages, sinks, preview server and controller link from
``edgehdr.toml`` (``config.py``), runs the pipeline, logs structured statistics to
stderr, talks to systemd (READY when frames flow, STATUS, WATCHDOG while healthy,
STOPPING), and shuts down gracefully on SIGTERM or SIGINT: capture stops, queued
frames drain through every stage, files are closed atomically, the link and the
source are closed, final statistics are logged. Exit status: 0 after a clean stop,
2 for a configuration error, 1 when the pipeline could not start.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

from edgehdr.pipeline.config import load_config, validate
from edgehdr.pipeline.graph import Pipeline, Stage
from edgehdr.pipeline.notify import SystemdNotifier

__all__ = ["Runtime", "build_runtime", "run_daemon", "setup_logging"]

log = logging.getLogger("edgehdr.daemon")


class _KeyValueFormatter(logging.Formatter):
    def __init__(self, as_json: bool):
        super().__init__()
        self.as_json = as_json

    def format(self, record):
        fields = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
                  "level": record.levelname.lower(), "logger": record.name, "msg": record.getMessage()}
        fields.update(getattr(record, "fields", {}))
        if self.as_json:
            return json.dumps(fields, default=str)
        return " ".join(f"{k}={json.dumps(v) if isinstance(v, str) and (' ' in v or not v) else v}"
                        for k, v in fields.items())


def setup_logging(level: str = "info", fmt: str = "text") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_KeyValueFormatter(fmt == "json"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())


class Runtime:
    """Everything one daemon run owns; ``close()`` releases it in the right order."""

    def __init__(self):
        self.pipeline: Pipeline | None = None
        self.link = None
        self.simulator = None
        self.pty = None
        self.preview = None
        self.preview_state = None
        self.source = None
        self.layout = None
        self.scorer = None
        self._tmp = None

    def stats(self) -> dict:
        stats = self.pipeline.stats() if self.pipeline else {}
        if self.link is not None:
            stats["link"] = self.link.stats()
        if self.scorer is not None:
            stats["quality"] = self.scorer.snapshot()
        if self.simulator is not None:
            st = self.simulator.status()
            stats["controller"] = {"frames_applied": st.frames_applied, "state": int(st.state),
                                   "crc_errors": st.crc_errors, "framing_errors": st.framing_errors}
        return stats

    def close(self) -> dict:
        final = self.pipeline.stop() if self.pipeline else {}
        if self.link is not None:
            final["link"] = self.link.stats()
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


def _build_source(cfg: dict, response_bits: int = 8):
    from edgehdr.camera.base import ExposurePlan

    src = cfg["source"]
    plan = ExposurePlan.of(src["exposures_s"], src["gains"] or None) if src["exposures_s"] else None
    kind = src["kind"]
    common = dict(width=src["width"], height=src["height"], fps=src["fps"], plan=plan, mode=src["mode"])
    if kind == "synthetic":
        from edgehdr.camera.synthetic import SyntheticCamera

        return SyntheticCamera(seed=src["seed"], response=src["response"] if src["response"] != "auto" else "srgb",
                               moving_objects=src["moving_objects"], shake_px=src["shake_px"], **common)
    if kind == "replay":
        from edgehdr.camera.replay import ReplaySource

        return ReplaySource(src["path"], bracket_size=src["bracket_size"], fps=src["fps"], loop=src["loop"])
    if kind == "v4l2":
        from edgehdr.camera.devices import V4L2Source

        return V4L2Source(src["path"], **common)
    if kind == "gstreamer":
        from edgehdr.camera.devices import GStreamerSource

        return GStreamerSource(src["pipeline"], sensor_id=src["sensor_id"], **common)
    from edgehdr.camera.devices import Picamera2Source

    return Picamera2Source(camera_num=src["sensor_id"], **common)


def _model_runner(cfg: dict, model: str):
    """A loaded runner for a neural stage's model: engine for this device, else ONNX Runtime (``[infer]``)."""
    from edgehdr.infer import open_runner
    from edgehdr.models import model_path

    inf = cfg["infer"]
    return open_runner(model_path(model), engine_dir=inf["engine_dir"] or None,
                       prefer="cpu" if inf["backend"] == "cpu" else "auto", intra_op_threads=inf["threads"])


def build_runtime(cfg: dict, *, extra_sinks=()) -> Runtime:
    """Wire a runtime from a validated configuration (the caller starts and closes it)."""
    from edgehdr.camera.planner import ExposurePlanner
    from edgehdr.dimming import LedLayout, load_layout
    from edgehdr.hdr.merge import resolve_response
    from edgehdr.pipeline.preview import PreviewServer
    from edgehdr.pipeline.sinks import ImageSequenceSink, PreviewSink, PreviewState, VideoSink
    from edgehdr.pipeline.stages import (AlignStage, BridgeStage, DimmingStage, MergeStage, OutputStage, ScoreStage,
                                         ToneMapStage)

    rt = Runtime()
    source = _build_source(cfg)
    rt.source = source
    source.open()  # open early: size, bits and response come from the device
    response = getattr(source, "response", None) or resolve_response(cfg["source"]["response"], source.bits)
    q = cfg["run"]["queue_size"]
    stages = [Stage("align", AlignStage(cfg["align"]["method"], response=response,
                                        work_scale=cfg["align"]["work_scale"]), queue_size=q)]
    planner = None
    if cfg["planner"]["enabled"] and source.plan is not None:
        p = cfg["planner"]
        planner = ExposurePlanner(response, max_frames=p["max_frames"],
                                  exposure_limits_s=(p["min_exposure_s"], p["max_exposure_s"]),
                                  gain_limits=(1.0, p["max_gain"]))
    merger = None
    if cfg["merge"]["method"] == "neural":
        from edgehdr.hdr.neural_merge import NeuralMerger

        merger = NeuralMerger(_model_runner(cfg, cfg["merge"]["model"]), response)
    stages.append(Stage("merge", MergeStage(response, weighting=cfg["merge"]["weighting"],
                                            deghost=cfg["merge"]["deghost"], planner=planner, source=source,
                                            plan_every=cfg["planner"]["every_n"], merger=merger), queue_size=q))
    tm = cfg["tonemap"]
    params = {"key": tm["key"]} if tm["operator"] in ("reinhard", "reinhard-local", "parametric") else {}
    if tm["operator"] not in ("parametric", "neural"):
        params["saturation"] = tm["saturation"]
    tm_runner = _model_runner(cfg, tm["model"]) if tm["operator"] == "neural" else None
    stages.append(Stage("tonemap", ToneMapStage(tm["operator"], params, time_constant_s=tm["time_constant_s"],
                                                runner=tm_runner), queue_size=q))
    sc = cfg["score"]
    if sc["every_n"] > 0:
        rt.scorer = ScoreStage(_model_runner(cfg, sc["model"]), every_n=sc["every_n"], model=sc["model"])
        stages.append(Stage("score", rt.scorer, queue_size=q))
    width, height = cfg["source"]["width"], cfg["source"]["height"]
    if hasattr(source, "width"):
        width, height = source.width, source.height
    dim = cfg["dimming"]
    fps = cfg["source"]["fps"] or 30.0
    if dim["enabled"]:
        if dim["layout"]:
            layout = load_layout(dim["layout"])
        else:
            layout = LedLayout(rows=min(dim["rows"], height), cols=min(dim["cols"], width), width_px=width,
                               height_px=height, peak_luminance_cd_m2=dim["peak_luminance_cd_m2"],
                               zone_bits=cfg["bridge"]["bits"], source="[dimming] rows/cols")
        rt.layout = layout
        dim_runner = dim_model = None
        if dim["algorithm"] == "neural":
            from edgehdr.models import model_path

            dim_model = model_path(dim["model"])
            dim_runner = _model_runner(cfg, dim["model"])
        dimming = DimmingStage(layout, algorithm=dim["algorithm"], frame_interval_s=1 / fps, runner=dim_runner,
                               model_path=dim_model, power_budget=dim["power_budget"])
        for warning in getattr(dimming.neural, "warnings", []):
            log.warning("dimming model %s: %s", dim_model, warning)
        stages.append(Stage("dimming", dimming, queue_size=q))
        br = cfg["bridge"]
        if br["enabled"]:
            from firmware_bridge.link import Link
            from firmware_bridge.protocol import Config
            from firmware_bridge.transports import PtyPair, SerialTransport, open_transport

            link_cfg = Config(rows=layout.rows, cols=layout.cols, bits=layout.zone_bits, safe_level=br["safe_level"],
                              watchdog_ms=br["watchdog_ms"], heartbeat_ms=br["heartbeat_ms"])
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
            stages.append(Stage("bridge", BridgeStage(rt.link), queue_size=q))
    sinks = list(extra_sinks)
    out = cfg["outputs"]
    if out["frames_dir"]:
        sinks.append(ImageSequenceSink(out["frames_dir"], every_n=out["frames_every_n"]))
    if out["lcd_dir"] and dim["enabled"]:
        sinks.append(ImageSequenceSink(out["lcd_dir"], what="lcd", every_n=out["frames_every_n"]))
    if out["video"]:
        sinks.append(VideoSink(out["video"], fps=fps))
    if cfg["preview"]["enabled"]:
        rt.preview_state = PreviewState(rt.stats)
        sinks.append(PreviewSink(rt.preview_state, rt.layout))
        rt.preview = PreviewServer(rt.preview_state, host=cfg["preview"]["host"], port=cfg["preview"]["port"]).start()
    stages.append(Stage("outputs", OutputStage(sinks), queue_size=q))
    rt.pipeline = Pipeline(source, stages)
    return rt


def run_daemon(config_path=None, *, config: dict | None = None, seconds: float | None = None) -> int:
    """Run until SIGTERM/SIGINT (or ``seconds``); returns the exit status."""
    try:
        cfg = config if config is not None else (load_config(config_path) if config_path else validate({}))
    except (ValueError, FileNotFoundError) as exc:
        print(f"edgehdr run: error: {exc}", file=sys.stderr)
        return 2
    setup_logging(cfg["run"]["log_level"], cfg["run"]["log_format"])
    seconds = cfg["run"]["seconds"] if seconds is None else seconds
    # BLAS threads spin after every call and starve the numba kernels (measured): keep BLAS on one thread.
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(limits=1, user_api="blas")
    except ImportError:
        pass
    notifier = SystemdNotifier()
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, on_signal)
    try:
        from edgehdr.warmup import warm_up

        log.info("kernels ready", extra={"fields": {"seconds": round(warm_up(deghost=cfg["merge"]["deghost"],
                                                                            dimming=cfg["dimming"]["enabled"]), 2)}})
        rt = build_runtime(cfg)
        rt.pipeline.start()
    except Exception as exc:  # noqa: BLE001 - report any start-up failure with its reason
        log.error("could not start: %s: %s", type(exc).__name__, exc)
        print(f"edgehdr run: error: {exc}", file=sys.stderr)
        return 1
    log.info("started", extra={"fields": {"source": rt.source.describe(), "preview": (
        f"http://{rt.preview.address[0]}:{rt.preview.address[1]}/" if rt.preview else None)}})
    started = time.monotonic()
    ready = False
    next_stats = started + cfg["run"]["stats_interval_s"]
    next_watchdog = started
    while not stop.is_set():
        stop.wait(0.1)
        now = time.monotonic()
        if not ready and rt.pipeline.healthy():
            ready = True
            notifier.ready("frames flowing")
            log.info("ready: frames flowing")
        if notifier.watchdog_interval_s and now >= next_watchdog and rt.pipeline.healthy(within_s=5.0):
            notifier.watchdog()
            next_watchdog = now + notifier.watchdog_interval_s
        if now >= next_stats:
            st = rt.stats()
            summary = {k: st.get(k) for k in ("fps", "frames_completed", "frames_dropped", "frames_failed",
                                             "capture_to_zones_ms_median", "capture_to_zones_ms_p99",
                                             "source_restarts")}
            log.info("stats", extra={"fields": summary})
            notifier.status(f"{summary['fps']} fps, {summary['frames_dropped']} dropped")
            next_stats = now + cfg["run"]["stats_interval_s"]
        if seconds and now - started >= seconds:
            break
        if rt.pipeline.finished:
            log.info("source finished")
            break
    notifier.stopping()
    final = rt.close()
    log.info("stopped", extra={"fields": {k: final.get(k) for k in ("fps", "frames_captured", "frames_completed",
                                                                    "frames_dropped", "frames_failed",
                                                                    "capture_to_zones_ms_median",
                                                                    "capture_to_zones_ms_p99")}})
    notifier.close()
    return 0
