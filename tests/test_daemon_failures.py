"""The daemon when things go wrong: full disks, dead links, configurations that cannot work.

Each failure must be counted where an operator looks (log, stats, STATUS=), leave
nothing partial under a final name, and end in a non-zero exit status.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from edgehdr.pipeline.config import ConfigError, validate
from edgehdr.pipeline.daemon import build_runtime, status_line
from edgehdr.pipeline.sinks import VideoSink, expand_run_pattern, unused_path
from edgehdr.pipeline.stages import OutputStage


def _toml(path: Path, **sections) -> Path:
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    path.write_text("\n".join(lines) + "\n")
    return path


def _daemon(config: Path, cwd: Path, timeout_s: float = 120.0):
    proc = subprocess.run([sys.executable, "-m", "edgehdr.cli", "run", "--config", str(config)], cwd=cwd,
                          capture_output=True, text=True, timeout=timeout_s)
    logs = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    return proc, logs


# ------------------------------------------------------------------------------------------------ sinks


def test_video_that_lost_frames_is_kept_as_incomplete_and_close_raises(tmp_path):
    # A file-size limit makes the container's writes fail mid-stream, as a full disk does; OpenCV only warns.
    script = textwrap.dedent(f"""
        import resource, signal, numpy as np
        from types import SimpleNamespace
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))
        from edgehdr.pipeline.sinks import VideoSink
        sink = VideoSink({str(tmp_path / 'rec.avi')!r}, fps=30)
        rng = np.random.default_rng(0)
        for i in range(120):
            sink.write(SimpleNamespace(sdr=rng.integers(0, 255, (120, 160, 3), dtype=np.uint8), frame_id=i))
        try:
            sink.close()
        except OSError as exc:
            print("RAISED", exc)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "RAISED" in proc.stdout and "video incomplete" in proc.stdout, proc.stdout + proc.stderr[-2000:]
    assert not (tmp_path / "rec.avi").exists(), "a video with lost frames must not appear under its final name"
    assert (tmp_path / "rec.incomplete.avi").is_file()
    assert not list(tmp_path.glob(".*partial*"))


def test_complete_video_is_renamed_into_place_with_every_frame(tmp_path):
    sink = VideoSink(tmp_path / "ok.avi", fps=30)
    for i in range(25):
        sink.write(SimpleNamespace(sdr=np.full((64, 96, 3), i * 10, np.uint8), frame_id=i))
    sink.close()
    cap = cv2.VideoCapture(str(tmp_path / "ok.avi"))
    n = 0
    while cap.grab():
        n += 1
    assert n == 25


def test_output_stage_counts_per_sink_and_rate_limits_its_log(caplog):
    class Failing:
        name = "frames"
        written = 0

        def write(self, ctx):
            raise OSError(28, "No space left on device")

    class Fine:
        name = "video"
        written = 0

        def write(self, ctx):
            self.written += 1

    stage = OutputStage([Failing(), Fine()], log_interval_s=60.0)
    with caplog.at_level(logging.ERROR, logger="edgehdr.pipeline"):
        for i in range(50):
            stage(SimpleNamespace(frame_id=i))
    snap = {s["sink"]: s for s in stage.snapshot()}
    assert snap["frames"]["errors"] == 50 and "No space left" in snap["frames"]["last_error"]
    assert snap["video"] == {"sink": "video", "frames_written": 50, "errors": 0, "last_error": None}
    lines = [r for r in caplog.records if "output frames failed" in r.getMessage()]
    assert len(lines) == 1, "the first failure is logged at once, the rest are counted until the next interval"
    line = status_line({"fps": 30.0, "frames_dropped": 0, "frames_failed": 0, "outputs": stage.snapshot(),
                        "link": {"state": "down", "last_error": "/dev/ttyX: no such port"}})
    assert "output errors: frames 50" in line and "link down (/dev/ttyX: no such port)" in line


def test_run_patterns_and_never_overwriting(tmp_path):
    start = datetime(2026, 11, 29, 23, 15, 0)
    assert expand_run_pattern("rec/{start:%Y%m%d-%H%M%S}.avi", start) == "rec/20261129-231500.avi"
    assert expand_run_pattern("plain.avi", start) == "plain.avi"
    with pytest.raises(ValueError, match=r"only the placeholder \{start:%Y%m%d-%H%M%S\}"):
        expand_run_pattern("rec-{when}.avi", start)
    target = tmp_path / "rec.avi"
    assert unused_path(target) == target
    target.write_bytes(b"first run")
    (tmp_path / "rec-1.avi").write_bytes(b"second run")
    assert unused_path(target) == tmp_path / "rec-2.avi"


# ------------------------------------------------------------------------------------------------ daemon runs


def _can_mount_tmpfs(folder: Path) -> bool:
    if os.geteuid() != 0:
        return False
    folder.mkdir(exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(folder)],
                          capture_output=True).returncode == 0


def test_disk_full_is_counted_per_sink_and_the_run_exits_1(tmp_path):
    full = tmp_path / "full"
    if not _can_mount_tmpfs(full):
        pytest.skip("needs root to mount a 1.2 MB tmpfs (the disk-full case); the size-limited writer test "
                    "above covers the video sink without it")
    try:
        cfg = _toml(tmp_path / "edgehdr.toml",
                    source={"width": 320, "height": 200, "fps": 30},
                    dimming={"rows": 8, "cols": 12},
                    outputs={"video": str(full / "rec-{start:%H%M%S}.avi"), "frames_dir": str(full / "frames"),
                             "frames_every_n": 10},
                    preview={"enabled": False},
                    run={"seconds": 5, "stats_interval_s": 1, "log_format": "json"})
        proc, logs = _daemon(cfg, tmp_path)
        assert proc.returncode == 1, proc.stderr[-3000:]
        final = next(r for r in logs if r["msg"] == "stopped")
        assert final["output_errors"] > 0 and final["frames_failed"] == 0
        assert "edgehdr run: error: output video failed" in proc.stderr
        errors = [r for r in logs if r["level"] == "error" and "output video failed" in r["msg"]]
        assert 1 <= len(errors) <= 3, "logged at error level, rate-limited"
        videos = [p.name for p in full.glob("*.avi")]
        assert len(videos) == 1 and ".incomplete.avi" in videos[0], videos
        assert not list(full.glob(".*")) and not list((full / "frames").glob(".*")), "no temporary files left"
    finally:
        subprocess.run(["umount", str(full)], capture_output=True)


def test_replay_takes_its_frame_size_from_the_files(tmp_path):
    stack = tmp_path / "stack"
    assert subprocess.run([sys.executable, "-m", "edgehdr.cli", "-q", "synth", "-o", str(stack), "--width", "320",
                           "--height", "200"], capture_output=True, timeout=120).returncode == 0
    cfg = _toml(tmp_path / "edgehdr.toml", source={"kind": "replay", "path": str(stack), "fps": 30},
                preview={"enabled": False}, run={"seconds": 3, "log_format": "json"})
    proc, logs = _daemon(cfg, tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = next(r for r in logs if r["msg"] == "stopped")
    # frames flowed (90 offered in 3 s; a loaded machine completes fewer) and none failed
    assert final["frames_completed"] >= 10 and final["frames_failed"] == 0


def test_layout_for_another_panel_is_a_config_error(tmp_path):
    layout = tmp_path / "layout.toml"
    layout.write_text("[panel]\nwidth_px = 1920\nheight_px = 1080\n[zones]\nrows = 8\ncols = 12\n")
    cfg = _toml(tmp_path / "edgehdr.toml", source={"width": 320, "height": 200},
                dimming={"layout": str(layout)}, preview={"enabled": False}, run={"seconds": 2})
    proc, _ = _daemon(cfg, tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "the LED layout is for a 1920x1080 panel but the source delivers 320x200 frames" in proc.stderr
    layout.write_text("[zones]\nrows = 8\ncols = 12\n[drive]\nresponse = \"lut\"\nlut = [0.0, nan, 1.0]\n")
    proc, _ = _daemon(cfg, tmp_path)
    assert proc.returncode == 2 and "layout.toml" in proc.stderr and "lut[1]" in proc.stderr, proc.stderr[-2000:]


def test_missing_bridge_port_is_visible_and_the_run_exits_1(tmp_path):
    cfg = _toml(tmp_path / "edgehdr.toml", source={"width": 320, "height": 200},
                dimming={"rows": 8, "cols": 12}, bridge={"port": str(tmp_path / "ttyNOPE")},
                preview={"enabled": False}, run={"seconds": 3, "stats_interval_s": 1, "log_format": "json"})
    proc, logs = _daemon(cfg, tmp_path)
    assert proc.returncode == 1, proc.stderr[-3000:]
    down = [r for r in logs if r["msg"] == "controller link down"]
    assert down and "ttyNOPE" in down[0]["last_error"] and down[0]["level"] == "warning"
    stats = [r for r in logs if r["msg"] == "stats"]
    assert stats and all(r["link"] == "down" for r in stats)
    final = next(r for r in logs if r["msg"] == "stopped")
    assert final["frames_completed"] > 0 and final["capture_to_zones_ms_median"] is None, \
        "no capture-to-zones latency for zones that were never sent"
    assert "the controller link" in proc.stderr and "never sent a frame" in proc.stderr


# ------------------------------------------------------------------------------------------------ in process


def test_pipeline_reports_a_configuration_that_fails_every_frame():
    from edgehdr.camera.synthetic import SyntheticCamera
    from edgehdr.pipeline.graph import Pipeline, Stage

    def boom(ctx):
        raise ValueError("layout 1920x1080 does not fit a 64x48 frame")

    pipe = Pipeline(SyntheticCamera(width=64, height=48, fps=0), [Stage("dimming", boom, queue_size=64)]).start()
    try:
        deadline = time.monotonic() + 30
        failure = None
        while failure is None and time.monotonic() < deadline:
            time.sleep(0.05)
            failure = pipe.failing_from_start(10)
    finally:
        pipe.stop()
    assert failure is not None and failure.startswith("stage dimming: frame 1: ValueError: layout 1920x1080")


def test_build_runtime_closes_what_it_opened_when_a_later_step_fails():
    import socket

    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    before = {t.name for t in threading.enumerate()}
    cfg = validate({"source": {"width": 64, "height": 48}, "dimming": {"rows": 4, "cols": 4},
                    "preview": {"port": port}})
    try:
        with pytest.raises(ConfigError, match=rf"\[preview\] host = '127.0.0.1', port = {port}: cannot listen"):
            build_runtime(cfg)
    finally:
        busy.close()
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        left = {t.name for t in threading.enumerate() if t.is_alive()} - before
        if not left:
            break
        time.sleep(0.05)
    assert not left, f"threads left running after a failed build: {left}"


def test_repeated_per_frame_warnings_are_held_back_and_counted():
    from edgehdr.pipeline.daemon import RepeatFilter

    f = RepeatFilter(interval_s=0.2)

    def record(msg, level=logging.WARNING, name="edgehdr.tonemap"):
        return logging.LogRecord(name, level, __file__, 1, msg, (), None)

    passed = [f.filter(record("%d non-finite pixels")) for _ in range(50)]
    assert passed[0] and not any(passed[1:])
    assert f.filter(record("another message")), "a different message is not held back"
    assert f.filter(record("output failed", level=logging.ERROR)) and f.filter(record("output failed", logging.ERROR))
    for _ in range(3):  # the stats line and the link's state changes pass every time
        always = record("controller link %s", level=logging.INFO, name="edgehdr.daemon")
        always.always = True
        assert f.filter(always) and "more like this" not in always.msg
    time.sleep(0.25)
    later = record("%d non-finite pixels")
    assert f.filter(later) and "(49 more like this in the last 0.2 s)" in later.msg


def test_log_lines_carry_the_exception_of_log_exception():
    """``log.exception`` (the preview's failures) printed no cause: the traceback is a field of the line."""
    import json
    import sys as _sys

    from edgehdr.pipeline.daemon import _KeyValueFormatter

    try:
        raise KeyError("stage table")
    except KeyError:
        info = _sys.exc_info()
    record = logging.LogRecord("edgehdr.preview", logging.ERROR, __file__, 1, "request failed", (), info)
    line = _KeyValueFormatter(as_json=False).format(record)
    assert "exc=" in line and "KeyError: 'stage table'" in line
    fields = json.loads(_KeyValueFormatter(as_json=True).format(record))
    assert fields["msg"] == "request failed" and fields["exc"].splitlines()[-1] == "KeyError: 'stage table'"


def test_a_run_that_completed_no_frame_because_of_failures_exits_1(tmp_path):
    """A replay whose bracket mixes frame sizes fails at every read: each bracket is dropped and counted (no source
    restart: the replay goes on), the run completed nothing and must not end with status 0; the message names the
    file and both sizes (the fail-fast rule's, once 30 brackets in a row failed, or the end of run's)."""
    stack = tmp_path / "stack"
    assert subprocess.run([sys.executable, "-m", "edgehdr.cli", "-q", "synth", "-o", str(stack), "--width", "64",
                           "--height", "48"], capture_output=True, timeout=120).returncode == 0
    frame = cv2.imread(str(stack / "frame_1.png"))
    assert cv2.imwrite(str(stack / "frame_1.png"), cv2.resize(frame, (80, 60)))
    cfg = _toml(tmp_path / "edgehdr.toml", source={"kind": "replay", "path": str(stack), "fps": 30},
                preview={"enabled": False}, run={"seconds": 2, "log_format": "json"})
    proc, logs = _daemon(cfg, tmp_path)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert ("edgehdr run: error: no frame completed: the source failed" in proc.stderr
            or "edgehdr run: error: the first 30 frames all failed: source replay: bracket dropped" in proc.stderr)
    assert "frame_1.png: 80x60 uint8 differs from the rest of its bracket" in proc.stderr
    assert "64x48 uint8" in proc.stderr
    final = next(r for r in logs if r["msg"] == "stopped")
    assert final["frames_completed"] == 0


def test_nothing_completed_names_the_failures_and_only_failures():
    from edgehdr.pipeline.daemon import nothing_completed

    capture = {"name": "capture", "errors": 0, "last_error": ""}
    stage = {"name": "tonemap", "errors": 15, "last_error": "ValueError: model input"}
    assert nothing_completed({"frames_completed": 3, "frames_failed": 9, "stages": [capture, stage]}) is None
    # stopped before the first frame was through, nothing wrong: not a failure
    assert nothing_completed({"frames_completed": 0, "frames_failed": 0, "source_restarts": 0,
                              "stages": [capture, {**stage, "errors": 0, "last_error": ""}]}) is None
    message = nothing_completed({"frames_completed": 0, "frames_failed": 15, "stages": [capture, stage]})
    assert message == "no frame completed: 15 frames failed (last: ValueError: model input)"
    stalled = nothing_completed({"frames_completed": 0, "frames_failed": 0, "source_stalls": 4,
                                 "stages": [{**capture, "errors": 4, "last_error": "stall: no frame"}]})
    assert stalled == "no frame completed: the source failed (0 restarts, 4 stalls; last: stall: no frame)"


@pytest.mark.parametrize("section,values,message", [
    ("tonemap", {"operator": "neural", "model": "dimming_net"},
     r"\[tonemap\] model = 'dimming_net': tone-mapping model .*dimming_net.onnx: expects input \[\[1, 3, 72, 128\]\]"),
    ("merge", {"method": "neural", "model": "nope"}, r"\[merge\] model = 'nope': model 'nope' is not shipped"),
    ("dimming", {"algorithm": "neural", "model": "tmo_net", "rows": 4, "cols": 6},
     r"\[dimming\] model = 'tmo_net': dimming model .*tmo_net.onnx expects input"),
])
def test_a_model_its_stage_cannot_use_is_a_configuration_error(section, values, message):
    """Another network's file, or none: refused while the runtime is built (exit 2, naming the key), not by ONNX
    Runtime at the first frame (which failed every frame of a short run and exited 0)."""
    cfg = validate({"source": {"width": 160, "height": 96}, "preview": {"enabled": False}, section: values})
    with pytest.raises(ConfigError, match=message):
        build_runtime(cfg)


def test_the_tone_map_cli_refuses_another_networks_model(tmp_path, capsys):
    from edgehdr.cli import main
    from edgehdr.io import write_radiance

    write_radiance(tmp_path / "in.exr", np.full((48, 64, 3), 0.5, np.float32))
    assert main(["tonemap", str(tmp_path / "in.exr"), "-o", str(tmp_path / "o.png"), "--operator", "neural",
                 "--model", "dimming_net"]) == 2
    assert "the neural tone mapper needs one input [1, 1, 128, 224]" in capsys.readouterr().err
    assert not (tmp_path / "o.png").exists()


def test_a_configuration_error_found_while_building_names_the_file(tmp_path, capsys):
    from edgehdr.pipeline.daemon import run_daemon

    path = _toml(tmp_path / "edgehdr.toml", source={"width": 160, "height": 96}, preview={"enabled": False},
                 tonemap={"operator": "neural", "model": "dimming_net"})
    import signal

    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:  # run_daemon installs its own SIGINT/SIGTERM handlers: this process's come back after
        assert run_daemon(path, seconds=1.0) == 2
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert f"edgehdr run: error: {path}: [tonemap] model = 'dimming_net': " in capsys.readouterr().err


@pytest.mark.parametrize("section,values", [("tonemap", {"operator": "neural", "model": "dimming_net"}),
                                            ("score", {"every_n": 5, "model": "tmo_net"}),
                                            ("merge", {"method": "neural", "model": "norvdpnet_tmo"}),
                                            ("dimming", {"algorithm": "neural", "model": "tmo_net", "rows": 4,
                                                         "cols": 6})])
def test_another_networks_model_fails_before_the_kernels_warm_up(tmp_path, capsys, monkeypatch, section, values):
    """check_models opens each model a configured stage runs before the warm-up (13-26 s cold on 2 cores): the
    daemon exits 2 naming the key without compiling anything or opening the link (the dimming model once the
    source is open: its input depends on the frame size)."""
    import signal

    import edgehdr.warmup
    from edgehdr.pipeline.daemon import run_daemon

    warmed = []
    monkeypatch.setattr(edgehdr.warmup, "warm_up", lambda **kw: warmed.append(kw) or 0.0)
    path = _toml(tmp_path / "edgehdr.toml", source={"width": 160, "height": 96}, preview={"enabled": False},
                 **{section: values})
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        assert run_daemon(path, seconds=1.0) == 2
    finally:
        for sig, handler in handlers.items():
            signal.signal(sig, handler)
    assert f"edgehdr run: error: {path}: [{section}] model = '{values['model']}': " in capsys.readouterr().err
    assert warmed == []


def test_check_models_passes_the_shipped_models_and_ignores_stages_that_do_not_run():
    from edgehdr.pipeline.daemon import check_models, open_source

    cfg = validate({"source": {"width": 160, "height": 96}, "merge": {"method": "neural"},
                    "tonemap": {"operator": "neural"}, "score": {"every_n": 5},
                    "dimming": {"algorithm": "neural", "rows": 18, "cols": 32}})
    source = open_source(cfg)
    try:
        check_models(cfg, source)
        # the dimming model is made for 18 x 32 zones: another grid is refused with the source's frame size known
        with pytest.raises(ConfigError, match=r"\[dimming\] model = 'dimming_net': .*the layout \(9x16 zones\)"):
            check_models(validate({**cfg, "dimming": {**cfg["dimming"], "rows": 9, "cols": 16}}), source)
        check_models(validate({**cfg, "dimming": {**cfg["dimming"], "rows": 9, "cols": 16}}))  # no source: not checked
    finally:
        source.close()
    # named but not run: not opened (another network's file would be refused if it were)
    check_models(validate({"merge": {"model": "tmo_net"}, "tonemap": {"model": "dimming_net"},
                           "score": {"every_n": 0, "model": "tmo_net"},
                           "dimming": {"algorithm": "max", "model": "tmo_net"}}))


def test_link_state_changes_that_always_show_and_the_cycle_that_is_held_back():
    from edgehdr.pipeline.daemon import link_change_always_logged as always

    assert always(None, ("connecting", ""))  # the first state
    assert always(("connecting", ""), ("connected", ""))  # up
    assert always(("connected", ""), ("down", "write timeout"))  # down, with a new error
    assert always(("connected", ""), ("connecting", ""))  # lost, no error text
    assert always(("down", "timeout"), ("down", "port gone"))  # a new error
    # an absent controller: connecting <-> down every handshake timeout, the same error: held back
    assert not always(("connecting", "no answer"), ("down", "no answer"))
    assert not always(("down", "no answer"), ("connecting", "no answer"))
