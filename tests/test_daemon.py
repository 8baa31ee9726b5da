"""The daemon: configuration errors, systemd notifications, SIGTERM, atomic outputs, preview server."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import cv2
import numpy as np
import pytest

from edgehdr.pipeline.config import ConfigError, load_config, validate
from edgehdr.pipeline.preview import LINK_STATES, PreviewServer, prometheus_text
from edgehdr.pipeline.sinks import PreviewState


@pytest.mark.parametrize("body,message", [
    ("[source]\nkind = 'webcam'\n", r"\[source\] kind = 'webcam': expected one of 'synthetic'"),
    ("[source]\nfps = 'fast'\n", r"\[source\] fps = 'fast': expected float"),
    ("[tonemap]\nkey = 3.0\n", r"\[tonemap\] key = 3.0: expected a number in 0.01..1.0"),
    ("[bridge]\nwatchdog_ms = 100\nheartbeat_ms = 80\n", r"\[bridge\] heartbeat_ms = 80: expected less than"),
    ("[bridge]\nport = 'udp:127.0.0.1:99999'\n", r"\[bridge\] port = 'udp:127.0.0.1:99999': .*port of 1-65535"),
    ("[bridge]\nport = 'udp:nohost'\n", r"\[bridge\] port = 'udp:nohost': bad UDP transport"),
    ("[bridge]\nport = 'spi:abc'\n", r"\[bridge\] port = 'spi:abc': bad SPI transport .*spi:BUS.DEVICE"),
    ("[outputs]\nmovie = 'x.avi'\n", r"unknown key \[outputs\] movie; allowed: frames_dir"),
    ("[outputs]\nvideo = 'out.txt'\n", r"\[outputs\] video = 'out.txt': expected a file ending in .avi"),
    ("[planner]\nmax_frames = 1\n", r"\[planner\] max_frames = 1: expected a number in 2..9"),
    ("[camera]\n", r"unknown section \[camera\]"),
    ("[source]\nkind = 'replay'\n", r"\[source\] path is required when kind = 'replay'"),
    ("[source]\nexposures_s = [0.01, -1]\n", r"\[source\] exposures_s"),
    ("[source]\nsettle_frames = 4\n", r"\[source\] settle_frames = 4: only the v4l2 and gstreamer sources"),
    ("[source]\nfps = " + "9" * 400 + "\n", r"\[source\] fps = 9+: expected float \(a number a float can hold\)"),
    ("[source]\nexposures_s = [0.01, " + "9" * 400 + "]\n", r"\[source\] exposures_s = .*finite positive"),
    ("[source]\nresponse = 'gammainf'\n", r"\[source\] response = 'gammainf': bad gamma .*finite number"),
    ("[outputs]\nframes_dir = '/tmp/{start[0]}'\n", r"\[outputs\] frames_dir = .*only placeholder allowed"),
    ("[outputs]\nvideo = '/tmp/{start.year:300000000}.avi'\n", r"\[outputs\] video = .*only placeholder allowed"),
    ("[preview]\nallowed_hosts = ['ok', '']\n", r"\[preview\] allowed_hosts = \['ok', ''\]: expected a list of host"),
    ("[preview]\nhost = ''\n", r"\[preview\] host = '': expected an address \(127.0.0.1: this machine only"),
    ("[bridge]\nport = 'udp:[::1]:5000'\n", r"\[bridge\] port = 'udp:\[::1\]:5000': .*the UDP link is IPv4"),
    ("[source]\nkind = 'gstreamer'\nsettle_frames = 9\n", r"\[source\] settle_frames = 9: expected a number in -1..8"),
    ("[source]\nkind = 'v4l2'\npath = '/dev/video0'\nhdr_mode = true\n",
     r"\[source\] hdr_mode = true: the Pi 5's HDR mode needs kind = \"picamera2\", not 'v4l2'"),
    ("[tonemap]\noperator = 'drago'\nbase_compression = 0.5\n",
     r"\[tonemap\] base_compression = 0.5: applies to operator = 'reinhard-local', not 'drago'"),
])
def test_config_errors_name_the_key_and_allowed_values(tmp_path, body, message):
    path = tmp_path / "edgehdr.toml"
    path.write_text(body)
    with pytest.raises(ConfigError, match=message):
        load_config(path)


@pytest.mark.parametrize("body,message", [
    ('[source]\nkind = "replay"\npath = "{tmp}/nope"\n', r"\[source\] path = '.*nope': no such folder or list file"),
    ('[dimming]\nlayout = "{tmp}/nope.json"\n', r"\[dimming\] layout = '.*nope.json': no such layout file"),
    ('[infer]\nengine_dir = "{tmp}/engines"\n[tonemap]\noperator = "neural"\n',
     r"\[infer\] engine_dir = '.*engines': no such folder"),
    ('[outputs]\nframes_dir = "{tmp}/edgehdr.toml/frames"\n',
     r"\[outputs\] frames_dir = '.*': .*edgehdr.toml exists and is not a folder"),
    ('[outputs]\nvideo = "{tmp}/missing/rec.avi"\n', r"\[outputs\] video = '.*': folder .*missing does not exist"),
    # a typo before the last folder is refused, not made into a tree of new folders (it used to be created)
    ('[outputs]\nframes_dir = "{tmp}/typo/frames"\n', r"\[outputs\] frames_dir = '.*': folder .*typo does not exist"),
    ('[source]\nkind = "replay"\npath = "{tmp}"\nresponse = "{tmp}/edgehdr.toml.json"\n',
     r"\[source\] response = '.*edgehdr.toml.json': no such response file"),
    # a model a stage runs: a typo fails with the file, before the kernels' warm-up
    ('[merge]\nmethod = "neural"\nmodel = "merge_nett"\n', r"\[merge\] model = 'merge_nett': model 'merge_nett' is not "
     r"shipped .*known models: .*merge_net"),
    ('[score]\nevery_n = 5\nmodel = "{tmp}/scorer.onnx"\n', r"\[score\] model = '.*scorer.onnx': .*no such ONNX model"),
    ('[dimming]\nalgorithm = "neural"\nmodel = "dimming"\n', r"\[dimming\] model = 'dimming': model 'dimming' is not"),
    ('[tonemap]\noperator = "neural"\nmodel = "tmo"\n', r"\[tonemap\] model = 'tmo': model 'tmo' is not shipped"),
])
def test_config_paths_that_do_not_exist_are_config_errors(tmp_path, body, message):
    """A file or folder the configuration names is checked with the file (a typo fails before any frame, exit 2),
    not at start-up; a missing engine folder would otherwise be ignored without a word."""
    path = tmp_path / "edgehdr.toml"
    path.write_text(body.format(tmp=tmp_path))
    with pytest.raises(ConfigError, match=message):
        load_config(path)
    # a model named for a stage that does not run is not looked for
    path.write_text('[merge]\nmodel = "merge_nett"\n[tonemap]\nmodel = "tmo"\n[dimming]\nmodel = "x"\n[score]\n'
                    'model = "y"\nevery_n = 0\n')
    assert load_config(path)["merge"]["model"] == "merge_nett"
    for pattern in ("frames-{start:%Y}/sdr", "frames/{start:%Y%m%d}", "frames"):  # created: the last fixed folder on
        path.write_text(f'[outputs]\nframes_dir = "{tmp_path}/{pattern}"\n')
        assert load_config(path)["outputs"]["frames_dir"].endswith(pattern)


def test_a_response_file_is_read_with_the_config_and_the_synthetic_camera_refuses_one(tmp_path):
    """A damaged response file fails with the configuration (exit 2, naming the key), not at start-up (exit 1);
    the synthetic camera renders with a named curve, so a response file there is refused, not a start-up error.
    Every suffix ``CameraResponse.load`` reads is a file, not only .json."""
    from edgehdr.hdr.crf import CameraResponse, ResponseCurve

    path = tmp_path / "edgehdr.toml"
    (tmp_path / "bad.json").write_text("not json")
    path.write_text(f'[source]\nkind = "replay"\npath = "{tmp_path}"\nresponse = "{tmp_path}/bad.json"\n')
    with pytest.raises(ConfigError, match=r"\[source\] response = '.*bad.json': .*not a JSON camera response"):
        load_config(path)
    CameraResponse.from_curve(ResponseCurve.parse("gamma2.2"), 8).save(tmp_path / "good.json")
    path.write_text(f'[source]\nresponse = "{tmp_path}/good.json"\n')
    with pytest.raises(ConfigError, match=r"\[source\] response = .*synthetic camera renders with a named curve"):
        load_config(path)
    for name in ("good.json", "missing.npy"):
        path.write_text(f'[source]\nkind = "replay"\npath = "{tmp_path}"\nresponse = "{tmp_path}/{name}"\n')
        if name.endswith(".json"):
            assert load_config(path)["source"]["response"].endswith(name)
        else:
            with pytest.raises(ConfigError, match=r"missing.npy': no such response file"):
                load_config(path)


def test_example_config_is_valid_and_complete():
    from pathlib import Path

    import edgehdr

    example = Path(edgehdr.__file__).parent / "deploy" / "edgehdr.example.toml"
    cfg = load_config(example)
    assert cfg == validate({}), "the example lists every key at its default"


def test_device_source_settings_reach_the_source():
    """``[source] settle_frames`` and ``hdr_mode`` are handed to the device sources (built, not opened: no device
    here); left out, each source keeps its own default."""
    from edgehdr.pipeline.daemon import _build_source

    def build(**src):
        return _build_source(validate({"source": src}))

    assert build(kind="v4l2", path="/dev/video0", settle_frames=5).settle_frames == 5
    assert build(kind="v4l2", path="/dev/video0").settle_frames == 2
    assert build(kind="gstreamer", settle_frames=0).settle_frames == 0
    assert build(kind="gstreamer").settle_frames == 3
    assert build(kind="picamera2", hdr_mode=True).hdr_mode is True
    assert build(kind="picamera2").hdr_mode is False


def _config(tmp_path, **sections):
    lines = []
    for section, values in sections.items():
        lines.append(f"[{section}]")
        for k, v in values.items():
            lines.append(f"{k} = {json.dumps(v)}")
    path = tmp_path / "edgehdr.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_sigterm_mid_run_exits_cleanly_with_notifications_and_complete_files(tmp_path):
    notify_path = str(tmp_path / "notify.sock")
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    listener.bind(notify_path)
    listener.settimeout(0.2)
    frames, video = tmp_path / "frames", tmp_path / "out.avi"
    cfg = _config(tmp_path,
                  source={"width": 320, "height": 180, "fps": 30},
                  dimming={"rows": 9, "cols": 16},
                  outputs={"frames_dir": str(frames), "frames_every_n": 5, "video": str(video)},
                  preview={"enabled": False},
                  run={"stats_interval_s": 0.5, "log_format": "json"})
    env = dict(os.environ, NOTIFY_SOCKET=notify_path, WATCHDOG_USEC="1000000")
    proc = subprocess.Popen([sys.executable, "-m", "edgehdr.cli", "run", "--config", str(cfg)],
                            stderr=subprocess.PIPE, text=True, env=env)
    messages = []
    deadline = time.monotonic() + 60
    try:
        while time.monotonic() < deadline and not any("READY=1" in m for m in messages):
            try:
                messages.append(listener.recv(4096).decode())
            except TimeoutError:
                pass
        assert any("READY=1" in m for m in messages), "no READY=1 from the daemon"
        time.sleep(2.0)  # frames flow, the video grows, status and watchdog pings go out, stats lines are logged
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    while True:
        try:
            messages.append(listener.recv(4096).decode())
        except TimeoutError:
            break
    listener.close()
    assert proc.returncode == 0, err[-2000:]
    joined = "\n".join(messages)
    assert "STATUS=" in joined and "WATCHDOG=1" in joined and "STOPPING=1" in joined
    logs = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(rec["msg"] == "signal SIGTERM: stopping" for rec in logs)
    # a stats line every stats_interval_s (0.5 s) over the 2 s after READY, none held back as a repeat
    stats_lines = [rec for rec in logs if rec["msg"].startswith("stats")]
    assert len(stats_lines) >= 3 and all(rec["msg"] == "stats" for rec in stats_lines), stats_lines
    final = next(rec for rec in logs if rec["msg"] == "stopped")
    assert final["frames_completed"] > 0 and final["frames_failed"] == 0
    # Outputs: complete files under their final names, nothing partial left behind.
    assert video.is_file() and not list(tmp_path.glob(".*partial*"))
    cap = cv2.VideoCapture(str(video))
    ok, first = cap.read()
    assert ok and first.shape == (180, 320, 3)
    pngs = sorted(frames.glob("sdr_*.png"))
    assert pngs and not list(frames.glob(".*"))
    assert cv2.imread(str(pngs[-1])).shape == (180, 320, 3)


def test_config_error_exits_2(tmp_path):
    cfg = _config(tmp_path, source={"kind": "teleporter"})
    proc = subprocess.run([sys.executable, "-m", "edgehdr.cli", "run", "--config", str(cfg)], capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 2 and "[source] kind = 'teleporter'" in proc.stderr


def test_preview_server_endpoints():
    stats = {"fps": 29.5, "frames_captured": 10, "frames_completed": 9, "frames_dropped": 1, "frames_failed": 0,
             "capture_to_zones_ms_median": 20.0, "capture_to_zones_ms_p99": 40.0, "source_restarts": 0,
             "stages": [{"name": "merge", "fps": 30.0, "latency_ms_median": 6.0, "latency_ms_p99": 9.0, "dropped": 1,
                         "errors": 0, "cpu_s_total": 1.25}]}
    state = PreviewState(lambda: stats)
    ok, jpeg = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    state.publish(jpeg.tobytes(), b"\x89PNG fake")
    server = PreviewServer(state, host="127.0.0.1", port=0).start()
    host, port = server.address
    try:
        base = f"http://{host}:{port}"
        page = urllib.request.urlopen(base + "/", timeout=5).read().decode()
        assert "29.5 fps" in page and "<td>merge</td>" in page
        metrics = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
        assert 'edgehdr_stage_latency_seconds{stage="merge",quantile="0.5"} 0.006' in metrics
        assert "edgehdr_frames_dropped_total 1" in metrics
        assert 'edgehdr_stage_cpu_seconds_total{stage="merge"} 1.25' in metrics
        for line in metrics.splitlines():  # every sample line: name{labels} value
            if not line.startswith("#"):
                name, value = line.rsplit(" ", 1)
                assert name.startswith("edgehdr_") and float(value) >= 0
        assert json.loads(urllib.request.urlopen(base + "/stats.json", timeout=5).read())["fps"] == 29.5
        stream = urllib.request.urlopen(base + "/stream.mjpg", timeout=5)
        assert stream.headers["Content-Type"].startswith("multipart/x-mixed-replace")
        state.publish(jpeg.tobytes())
        head = stream.read(200)
        assert head.startswith(b"--frame\r\nContent-Type: image/jpeg") and b"\xff\xd8" in head
        stream.close()
    finally:
        server.close()
    assert prometheus_text({}).count("# TYPE") >= 5


def test_metrics_of_a_real_runtime_parse_with_prometheus_client():
    """Every family of /metrics, from a runtime that ran, read by Prometheus' own parser: types and names."""
    parser = pytest.importorskip("prometheus_client.parser", reason="prometheus_client is a test dependency "
                                 "(pip install -e '.[test]')")
    from edgehdr.pipeline.daemon import build_runtime

    cfg = validate({"source": {"width": 160, "height": 96, "fps": 30}, "dimming": {"rows": 4, "cols": 6},
                    "preview": {"enabled": False}})
    rt = build_runtime(cfg)
    rt.pipeline.start()
    try:
        deadline = time.monotonic() + 120  # room for a cold compile on a loaded machine; ends at 10 frames
        while rt.stats().get("capture_to_zones_count", 0) < 10 and time.monotonic() < deadline:
            time.sleep(0.05)
        stats = rt.stats()
    finally:
        rt.close()
    families = {f.name: f for f in parser.text_string_to_metric_families(prometheus_text(stats))}
    kinds = {name: f.type for name, f in families.items()}
    assert kinds["edgehdr_capture_to_zones_seconds"] == "summary"
    assert kinds["edgehdr_stage_latency_seconds"] == "summary"
    assert kinds["edgehdr_frames_completed"] == "counter"  # the parser names counters without _total
    assert kinds["edgehdr_fps"] == "gauge" and kinds["edgehdr_link_state"] == "gauge"
    latency = families["edgehdr_capture_to_zones_seconds"].samples
    count = next(s.value for s in latency if s.name.endswith("_count"))
    assert count == stats["capture_to_zones_count"] >= 10 and len(latency) == 4  # 2 quantiles, _sum, _count
    merge = [s for s in families["edgehdr_stage_latency_seconds"].samples if s.labels.get("stage") == "merge"]
    assert {s.labels.get("quantile") for s in merge} == {"0.5", "0.99", None}
    assert next(s.value for s in merge if s.name.endswith("_count")) == next(
        st["processed"] for st in stats["stages"] if st["name"] == "merge")
    # Each stage's CPU seconds: a counter, no larger than the time the stage spent processing.
    assert kinds["edgehdr_stage_cpu_seconds"] == "counter"
    cpu = {s.labels["stage"]: s.value for s in families["edgehdr_stage_cpu_seconds"].samples}
    busy = {st["name"]: st["latency_s_total"] for st in stats["stages"]}
    assert cpu["merge"] > 0 and all(cpu[name] <= busy[name] + 1e-3 for name in cpu), (cpu, busy)
    # The bounded pools' waits: counters per pool, as the stats hold them.
    waits = {s.labels["buffer"]: s.value for s in families["edgehdr_buffer_waits"].samples}
    assert kinds["edgehdr_buffer_waits"] == "counter"
    assert waits == {"source": stats["source_buffer_waits"], "radiance": stats["radiance_buffers"]["waits"]}
    # One state at 1, the one the stats hold (normally "connected"; a loaded machine's link may be reconnecting).
    state = [s for s in families["edgehdr_link_state"].samples if s.value == 1]
    link = stats.get("link") or {}
    assert [s.labels["state"] for s in state] == [link["state"]] and link["state"] in LINK_STATES
    assert link["config_acked"] >= 1  # the runtime's link came up with the controller
    for name in families:
        assert name.startswith("edgehdr_"), name


def test_bounded_buffers_follow_the_config_and_what_the_pipeline_keeps():
    from edgehdr.pipeline.daemon import build_runtime

    class EverythingSink:  # says nothing of what it reads: the output step holds every field of its frame
        def write(self, ctx):
            pass

    class SdrSink(EverythingSink):
        reads = ("sdr",)

    raw = {"source": {"width": 96, "height": 64, "fps": 0}, "preview": {"enabled": False}}
    for keep, sections, sinks, radiance_limit, max_stacks in [
            ((), {}, (), 1, 1), (("bracket", "radiance"), {}, (), 2, 2),  # the demo keeps the last frame's
            ((), {}, (EverythingSink(),), 2, 2), ((), {}, (SdrSink(),), 1, 1),  # one more for a later reader
            ((), {"run": {"radiance_buffers": 0}, "source": {"buffers": 0}}, (), None, None),
            ((), {"run": {"radiance_buffers": 2}, "source": {"buffers": 4}}, (), 2, 4)]:
        cfg = {k: dict(v) for k, v in raw.items()}
        for section, values in sections.items():
            cfg.setdefault(section, {}).update(values)
        rt = build_runtime(validate(cfg), keep=keep, extra_sinks=sinks)
        try:
            assert rt.pipeline.stages[1].fn.radiance_pool.limit == radiance_limit, (keep, sections)
            assert rt.source.max_stacks == max_stacks, (keep, sections)
        finally:
            rt.close()


@pytest.mark.parametrize("sections", [{}, {"run": {"radiance_buffers": 0}, "source": {"buffers": 0}}])
def test_frames_through_bounded_buffers_are_right_and_the_pools_stay_within_their_limits(sections):
    """The last frame's radiance is the merge of its bracket (no buffer was written while a stage still read it),
    and the pools held no more arrays than their limits (one past a limit only after waiting wait_s, counted)."""
    from edgehdr.hdr.merge import merge_debevec
    from edgehdr.pipeline.daemon import build_runtime

    raw = {"source": {"width": 96, "height": 64, "fps": 0, "moving_objects": 1},
           "preview": {"enabled": False}, "dimming": {"rows": 4, "cols": 6}}
    for section, values in sections.items():
        raw.setdefault(section, {}).update(values)
    rt = build_runtime(validate(raw), keep=("bracket", "radiance"))
    merge = rt.pipeline.stages[1].fn
    rt.pipeline.start()
    try:
        deadline = time.monotonic() + 30
        while rt.stats()["frames_completed"] < 30 and time.monotonic() < deadline:
            time.sleep(0.02)
        stats = rt.stats()
        last = rt.pipeline.last_context
    finally:
        rt.close()
    assert stats["frames_completed"] >= 30 and stats["frames_failed"] == 0
    np.testing.assert_array_equal(last.radiance, merge_debevec(last.bracket, response=merge.response))
    pool = stats["radiance_buffers"]
    if merge.radiance_pool.limit is not None:
        assert pool["allocated"] - pool["over_limit"] <= merge.radiance_pool.limit == 2
        assert rt.source.stacks_allocated <= rt.source.max_stacks == 2


def test_a_source_opened_before_the_kernels_is_closed_when_the_warm_up_or_the_build_fails(tmp_path, monkeypatch):
    """``open_source_and_warm_up`` and ``build_runtime(source=...)``: the runtime owns the source it is handed, so a
    failure on the way (a warm-up error, a layout for another panel) closes it; a good build uses it as it is."""
    from edgehdr.dimming.layout import LayoutError
    from edgehdr.pipeline.daemon import build_runtime, open_source, open_source_and_warm_up

    cfg = validate({"source": {"width": 96, "height": 64, "fps": 0}, "preview": {"enabled": False},
                    "dimming": {"rows": 4, "cols": 6}})
    opened = []
    import edgehdr.camera.synthetic as synthetic

    original_open = synthetic.SyntheticCamera.open

    def recording_open(self):  # the real open(), noting which camera it was
        opened.append(self)
        return original_open(self)

    monkeypatch.setattr(synthetic.SyntheticCamera, "open", recording_open)
    with pytest.raises(ValueError, match="unknown warm-up jobs"):
        open_source_and_warm_up(cfg, jobs=("no such job",))
    assert len(opened) == 1 and not opened[0]._opened  # closed again
    layout = tmp_path / "layout.toml"
    layout.write_text("[panel]\nwidth_px = 1920\nheight_px = 1080\n[zones]\nrows = 8\ncols = 12\n")
    bad = validate({"source": {"width": 96, "height": 64, "fps": 0}, "preview": {"enabled": False},
                    "dimming": {"layout": str(layout)}})
    source = open_source(bad)
    with pytest.raises((ConfigError, LayoutError), match="1920x1080 panel"):
        build_runtime(bad, source=source)
    assert not source._opened
    source, seconds = open_source_and_warm_up(cfg)
    rt = build_runtime(cfg, source=source)
    try:
        assert rt.source is source and source._opened and seconds >= 0.0
        assert len(opened) == 3  # build_runtime did not open another camera
        assert source.read_bracket().frames.shape == (3, 64, 96, 3)
    finally:
        rt.close()
    assert not source._opened


def test_the_pipeline_runs_on_numbas_workqueue_layer(tmp_path):
    """Without libgomp or TBB numba falls back to its workqueue layer, which terminates the process when two threads
    launch parallel kernels at once; the stages and the synthetic camera then take ``edgehdr.kernellock``'s lock and
    the run completes (here the layer is forced, as on a machine without libgomp), with a warning naming the fix."""
    cfg = _config(tmp_path, source={"width": 320, "height": 180, "fps": 30}, dimming={"rows": 9, "cols": 16},
                  preview={"enabled": False}, run={"log_format": "json"})
    env = dict(os.environ, NUMBA_THREADING_LAYER="workqueue")
    proc = subprocess.run([sys.executable, "-m", "edgehdr.cli", "run", "--config", str(cfg), "--seconds", "3"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    logs = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    final = next(rec for rec in logs if rec["msg"] == "stopped")
    # frames flowed (90 offered in 3 s; a loaded machine completes fewer) and none failed
    assert final["frames_completed"] >= 10 and final["frames_failed"] == 0
    assert any("workqueue" in rec["msg"] and "libgomp1" in rec["msg"] for rec in logs)


def test_a_stage_waiting_for_a_buffer_lets_go_of_the_kernel_lock(monkeypatch):
    """On the workqueue layer the stages take turns under one lock; a stage that waits for a buffer a later stage
    holds must let go of it while it waits, or that stage cannot run to release the buffer (each wait would run to
    its timeout). The layer is set as found serialised here; the lock and the wait are the runtime's own."""
    import threading

    from edgehdr import kernellock
    from edgehdr.pipeline.buffers import wait_until

    monkeypatch.setattr(kernellock, "_serialised", True)
    released = threading.Event()
    inner_depth = []

    def later_stage():
        with kernellock.kernel_lock():
            released.set()

    with kernellock.kernel_lock(), kernellock.kernel_lock():  # held twice, as a stage calling a locked helper
        threading.Thread(target=later_stage).start()
        ok, waited_s = wait_until(released.is_set, 5.0)
        inner_depth.append(kernellock._LOCK._local.depth)
    assert ok and waited_s < 2.0
    assert inner_depth == [2]  # taken back at its depth after the wait
    assert kernellock._LOCK._lock.acquire(blocking=False)  # and let go on the way out
    kernellock._LOCK._lock.release()


def _snapshot(elapsed_s, captured, skipped, completed, dropped, stage_cpu_s):
    return {"elapsed_s": elapsed_s, "frames_captured": captured, "frames_skipped": skipped,
            "frames_completed": completed, "frames_dropped": dropped,
            "stages": [{"name": name, "cpu_s_total": cpu} for name, cpu in stage_cpu_s.items()]}


def test_falling_behind_names_the_cost_or_stays_silent():
    """The daemon's warning when the pipeline loses frames: silent when it loses at most 2 % of the brackets the
    source offered or was judged too briefly; otherwise it says whether the process used the machine's cores (short
    of CPU) or not (something waits), with the stage whose thread spent the most a frame. No bracket rate is
    assumed: the offered brackets are the captured ones and the capture slots the source let pass."""
    from edgehdr.pipeline.daemon import falling_behind

    before = _snapshot(10.0, 300, 0, 300, 0, {"align": 1.0, "merge": 3.0, "tonemap": 1.5})
    kept_up = _snapshot(20.0, 598, 2, 598, 2, {"align": 1.5, "merge": 4.2, "tonemap": 2.0})  # 2 of 300 lost
    assert falling_behind(before, kept_up, cpu_s=12.0, cores=2) is None
    behind = _snapshot(20.0, 585, 15, 573, 27, {"align": 1.6, "merge": 6.3, "tonemap": 2.4})  # 27 of 300 lost
    assert falling_behind(before, dict(behind, frames_dropped=6), cpu_s=17.0, cores=2) is None  # 2 % exactly
    assert falling_behind(before, dict(behind, elapsed_s=11.5), cpu_s=1.7, cores=2) is None
    # a burst or replay source offering 10 brackets a second, not the 30 its camera captures: judged the same way
    slow_source = _snapshot(20.0, 392, 8, 373, 27, {"align": 1.6, "merge": 6.3, "tonemap": 2.4})
    assert "27 of 100 brackets lost (27.0 %)" in falling_behind(before, slow_source, cpu_s=5.0, cores=2)
    short = falling_behind(before, behind, cpu_s=17.0, cores=2)  # 1.7 of 2 cores
    assert short is not None
    assert "27.3 fps delivered" in short and "27 of 300 brackets lost (9.0 %)" in short
    assert "1.70 of 2 cores" in short and "62.3 ms of CPU a frame" in short  # 17 s over 273 frames
    assert "heaviest stage: merge (12.1 ms" in short and "short of CPU" in short  # 3.3 s over 273 frames
    waits = falling_behind(before, behind, cpu_s=8.0, cores=4)
    assert waits is not None and "not short of CPU" in waits and "0.80 of 4 cores" in waits


def test_the_daemon_warns_when_the_machine_cannot_keep_up(tmp_path):
    """A capture rate no machine keeps up with through the whole pipeline (1000 brackets a second): the daemon
    keeps running, counts the lost frames, and logs why, once, with what the process spent."""
    cfg = _config(tmp_path, source={"width": 320, "height": 180, "fps": 1000}, dimming={"rows": 9, "cols": 16},
                  preview={"enabled": False}, run={"log_format": "json", "stats_interval_s": 2.5})
    proc = subprocess.run([sys.executable, "-m", "edgehdr.cli", "run", "--config", str(cfg), "--seconds", "6"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    logs = [json.loads(line) for line in proc.stderr.splitlines() if line.startswith("{")]
    final = next(rec for rec in logs if rec["msg"] == "stopped")
    assert final["frames_failed"] == 0 and final["frames_dropped"] > 0 and final["fps"] < 980
    warnings = [rec for rec in logs if rec["msg"].startswith("pipeline losing frames")]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning"
    assert "brackets lost" in warnings[0]["msg"] and "cores" in warnings[0]["msg"]


def test_an_engine_folder_is_checked_only_where_engines_would_be_used(tmp_path):
    """A configuration shared with a CPU-only host, or one without networks, may name the device's engine folder."""
    path = tmp_path / "edgehdr.toml"
    missing = tmp_path / "engines"
    path.write_text(f'[infer]\nengine_dir = "{missing}"\nbackend = "cpu"\n[score]\nevery_n = 15\n')
    assert load_config(path)["infer"]["engine_dir"] == str(missing)
    path.write_text(f'[infer]\nengine_dir = "{missing}"\n')  # no network configured
    assert load_config(path)["infer"]["engine_dir"] == str(missing)
    path.write_text(f'[infer]\nengine_dir = "{missing}"\n[score]\nevery_n = 15\n')
    with pytest.raises(ConfigError, match=r"\[infer\] engine_dir = .*: no such folder"):
        load_config(path)


def test_the_daemons_planner_never_plans_a_single_exposure():
    """A scene of low range (a uniform wall) needs one exposure by the planner's own measure; a bracket of one
    cannot be merged, and the planner, fed by merged frames, would never change it again: every frame then failed
    while the run went on and exited 0. The daemon's planner plans at least two."""
    import numpy as np

    from edgehdr.camera.base import ExposurePlan
    from edgehdr.camera.synthetic import SyntheticCamera
    from edgehdr.hdr.merge import resolve_response
    from edgehdr.pipeline.daemon import _hdr_stages

    cfg = validate({})
    plan = ExposurePlan.of([0.004, 0.008])
    source = SyntheticCamera(64, 48, fps=30, plan=plan)
    stages = _hdr_stages(cfg, source, resolve_response("srgb", 8))
    planner = next(s.fn.planner for s in stages if getattr(s.fn, "planner", None) is not None)
    wall = np.full((48, 64, 3), 0.18, np.float32)
    for _ in range(40):
        plan = planner.update(wall, plan)
    assert len(plan) >= 2


@pytest.mark.parametrize("fps", [15, 60])
def test_the_tone_mapper_adapts_at_the_configured_frame_rate(fps):
    """The tone mapper's adaptation assumed 30 fps whatever the source ran at (the dimming had 1 / fps): at 60 fps
    the picture adapted twice as fast as [tonemap] time_constant_s and out of step with the backlight."""
    from edgehdr.pipeline.daemon import build_runtime
    from edgehdr.pipeline.stages import DimmingStage, ToneMapStage

    cfg = validate({"source": {"width": 160, "height": 96, "fps": fps}, "bridge": {"enabled": False},
                    "preview": {"enabled": False}})
    rt = build_runtime(cfg)
    try:
        stages = [st.fn for st in rt.built_pipeline().stages]
    finally:
        rt.close()
    tonemap = next(s for s in stages if isinstance(s, ToneMapStage))
    dimming = next(s for s in stages if isinstance(s, DimmingStage))
    assert tonemap.adaptation.frame_interval_s == dimming.adaptation.frame_interval_s == pytest.approx(1 / fps)
