"""GStreamerSource against real GStreamer: a live ``videotestsrc`` whose ``videobalance`` brightness stands in
for Argus' exposure, read through appsink exactly as on a Jetson (no mocks).

Needs PyGObject and GStreamer's base/good plugins (``apt install gstreamer1.0-plugins-base
gstreamer1.0-plugins-good gir1.2-gstreamer-1.0`` and ``pip install "PyGObject<3.51"``); skipped without them.
Runs are kept to a second or two each.
"""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest

from edgehdr.camera.base import ExposurePlan, SourceError, SourceTimeout
from edgehdr.camera.devices import ExposureControl, GStreamerSource
from edgehdr.pipeline import Pipeline, Stage

try:
    import gi

    gi.require_version("Gst", "1.0")
    from gi.repository import Gst

    Gst.init(None)
except (ImportError, ValueError) as exc:  # no PyGObject, or no GStreamer typelib
    pytest.skip(f"GStreamer Python bindings missing ({exc}): apt install gir1.2-gstreamer-1.0 and "
                "pip install 'PyGObject<3.51'", allow_module_level=True)
_MISSING = [e for e in ("videotestsrc", "videobalance", "videoconvert", "capsfilter", "appsink")
            if Gst.ElementFactory.find(e) is None]
if _MISSING:
    pytest.skip(f"GStreamer elements missing: {', '.join(_MISSING)} (apt install gstreamer1.0-plugins-base "
                "gstreamer1.0-plugins-good)", allow_module_level=True)

FPS = 30
PLAN = ExposurePlan.of([1 / 2000, 1 / 500, 1 / 125])


def live_pipeline(num_buffers: int = -1) -> str:
    """A live 320x240 at 30/1 SMPTE pattern, brightness on ``exp``, caps on ``caps``, BGR into ``sink``."""
    return (f"videotestsrc is-live=true pattern=smpte num-buffers={num_buffers} ! "
            f"capsfilter name=caps caps=video/x-raw,width=320,height=240,framerate={FPS}/1 ! "
            "videobalance name=exp ! videoconvert ! video/x-raw,format=BGR ! "
            "appsink name=sink max-buffers=2 drop=true sync=false")




def brightness(exposure_s: float, gain: float) -> float:
    """One stop of exposure = 0.25 videobalance brightness, 0 at 1/500 s (videobalance passthrough)."""
    return max(-1.0, min(1.0, 0.25 * math.log2(exposure_s * gain * 500)))


CONTROL = ExposureControl("exp", "brightness", brightness)


def _source(num_buffers: int = -1, **kw) -> GStreamerSource:
    kw.setdefault("plan", PLAN)
    kw.setdefault("settle_frames", 0)
    return GStreamerSource(live_pipeline(num_buffers), control=CONTROL, **kw)


def _fail_stream(source: GStreamerSource) -> None:
    """A real streaming failure: caps nothing can meet, so videotestsrc stops with not-negotiated."""
    source.element("caps").set_property("caps", Gst.Caps.from_string("audio/x-raw"))


def test_a_change_shows_on_every_frame_captured_after_it():
    # Measures the settle behaviour: with the appsink queue filled, the first frames read after a change were
    # captured before it and show the OLD level; every frame captured after it shows the new one.
    with _source() as src:
        level = {}
        for value in (-0.5, 0.5):
            src.element("exp").set_property("brightness", value)
            time.sleep(0.1)
            level[value] = src._pull(1.0)[0].mean()
        assert level[0.5] - level[-0.5] > 100
        old_after_change = []
        for value in (-0.5, 0.5, -0.5, 0.5):
            time.sleep(0.08)  # the consumer is late: the appsink holds frames captured before the change
            src.element("exp").set_property("brightness", value)
            changed_ns = time.monotonic_ns()
            frames = [src._pull(1.0) for _ in range(4)]
            shows_new = [abs(f.mean() - level[value]) < 3 for f, _ in frames]
            captured_after = [stamp >= changed_ns for _, stamp in frames]
            # no frame captured after the change shows the old level
            assert all(new or not after for new, after in zip(shows_new, captured_after, strict=True))
            old_after_change.append(shows_new.count(False))
    # appsink max-buffers=2: up to two frames read after a change still show the old setting, and the
    # next one (the first captured after the change) shows the new one: the source drops exactly those
    assert 1 <= max(old_after_change) <= 2


def test_rolling_brackets_follow_the_commanded_exposure():
    with _source() as src:
        means = {i: [] for i in range(len(PLAN))}
        seen = set()
        t0 = time.monotonic()
        reads = 0
        while time.monotonic() - t0 < 2.0:
            b = src.read_bracket(1.0)
            reads += 1
            assert b.frames.shape == (3, 240, 320, 3) and b.frames.dtype == np.uint8
            assert list(b.exposure_s) == list(PLAN.exposure_s)
            for i, (frame, stamp) in enumerate(zip(b.frames, b.timestamp_ns, strict=True)):
                if stamp not in seen:
                    seen.add(stamp)
                    means[i].append(float(frame.mean()))
            m = b.frames.reshape(3, -1).mean(axis=1)
            assert m[0] < m[1] < m[2], m
            if reads % 10 == 0:
                time.sleep(0.08)  # a late consumer: stale frames must be dropped, not filed under the new exposure
        stats = src.describe()
    assert reads >= 30  # one bracket per frame at 30 fps (~48 in 2 s), less the pauses
    assert stats["frames_discarded"] > 0 and stats["frames_stale"] == stats["frames_discarded"]
    levels = [np.array(means[i]) for i in range(3)]
    for lv in levels:  # every delivered frame shows its own exposure's level, none a neighbour's
        assert lv.size >= 10 and np.ptp(lv) < 2.0, lv
    assert levels[1].min() - levels[0].max() > 30 and levels[2].min() - levels[1].max() > 30


def test_timestamps_are_capture_times_33_ms_apart():
    with _source() as src:
        stamps, pulled = [], []
        for _ in range(31):
            b = src.read_bracket(1.0)
            stamps.append(int(max(b.timestamp_ns)))
            pulled.append(time.monotonic_ns())
        assert src.describe()["timestamps"] == "pts"
    dt_ms = np.diff(stamps) / 1e6
    frames = np.round(dt_ms / (1e3 / FPS))
    assert np.all(frames >= 1)  # every read brings a new frame
    np.testing.assert_allclose(dt_ms, frames * 1e3 / FPS, atol=0.01)  # pipeline clock: exact 1/30 s spacing
    assert np.median(dt_ms) == pytest.approx(1e3 / FPS, abs=0.01)
    age_ms = (np.array(pulled) - np.array(stamps)) / 1e6  # in time.monotonic_ns terms, just before the read
    assert np.all(age_ms >= 0) and np.median(age_ms) < 50


def test_end_of_stream_raises_a_source_error_naming_eos():
    with _source(num_buffers=12) as src:
        t0 = time.monotonic()
        delivered = 0
        with pytest.raises(SourceError, match=r"end of stream \(EOS\)") as info:
            for _ in range(20):
                src.read_bracket(2.0)
                delivered += 1
        assert not isinstance(info.value, SourceTimeout)  # an EOS is a failure to restart from, not a stall
        assert time.monotonic() - t0 < 1.5  # the error comes at once, no waiting for a timeout
        assert 2 + delivered + src.frames_discarded == 12  # every buffer accounted for: priming, brackets, drops
        assert src.describe()["last_error"] == "end of stream (EOS)"


def test_a_pipeline_error_is_reported_and_a_reopen_resumes_frames():
    src = _source()
    with src:
        for _ in range(5):
            src.read_bracket(1.0)
        _fail_stream(src)
        t0 = time.monotonic()
        with pytest.raises(SourceError, match=r"error from videotestsrc.*not-negotiated") as info:
            for _ in range(10):
                src.read_bracket(5.0)
        assert not isinstance(info.value, SourceTimeout)
        # at once, not after a read's 5 s time-out (room for a loaded machine)
        assert time.monotonic() - t0 < 2.5 and src.bus_errors == 1 and "not-negotiated" in src.last_error
    reopened_ns = time.monotonic_ns()
    src.open()  # what the daemon's capture loop does: close, reopen
    try:
        b = src.read_bracket(1.0)
        assert b.frames.shape[0] == 3 and src.restarts == 1
        assert min(b.timestamp_ns) > reopened_ns  # no frame of the failed pipeline joins a new bracket
    finally:
        src.close()


def test_the_daemon_restarts_the_source_after_a_pipeline_error():
    src = _source()
    got = []
    pipe = Pipeline(src, [Stage("check", lambda ctx: got.append(ctx.bracket) or ctx, queue_size=8)],
                    read_timeout_s=0.5, max_backoff_s=0.2).start()
    try:
        time.sleep(0.5)
        before = len(got)
        failed_ns = time.monotonic_ns()
        threading.Timer(0, _fail_stream, args=(src,)).start()
        deadline = time.monotonic() + 20.0  # ends as soon as frames flow again (about 0.5 s when not loaded)
        while time.monotonic() < deadline and not (src.restarts and len(got) > before + 10):
            time.sleep(0.05)
    finally:
        stats = pipe.stop()
    assert before >= 5
    assert stats["source_restarts"] == 1 and src.restarts == 1 and src.bus_errors == 1
    assert "not-negotiated" in stats["stages"][0]["last_error"]
    resumed = [b for b in got if min(b.timestamp_ns) > failed_ns]
    assert len(resumed) >= 10  # frames flow again, each bracket still ordered by exposure
    assert all(np.all(np.diff(b.frames.reshape(3, -1).mean(axis=1)) > 30) for b in resumed)


@pytest.mark.parametrize("layout", ["BGR", "RGB", "BGRx", "RGBA"])
def test_padded_rows_and_colour_order_survive_the_appsink(layout):
    # 322 px of BGR is 966 bytes, padded by GStreamer to 968: reading it as packed would shear the image. The
    # 4-byte layouts are what a converter such as Jetson's nvvidconv hands over without a videoconvert pass.
    pipeline = ("videotestsrc is-live=true pattern=smpte ! video/x-raw,width=322,height=30,framerate=30/1 ! "
                f"videoconvert ! video/x-raw,format={layout} ! appsink name=sink")
    with GStreamerSource(pipeline, plan=ExposurePlan.of([0.01]), settle_frames=0) as src:
        frame = src.read_bracket(1.0).frames[0]
    assert frame.shape == (30, 322, 3)
    assert np.all(frame[:18] == frame[0])  # the top two thirds of SMPTE bars: identical rows, no shear
    bars = frame[0, 23::46]  # centres of the seven bars: white, yellow, cyan, green, magenta, red, blue (RGB)
    np.testing.assert_array_equal(bars > 128, [[1, 1, 1], [1, 1, 0], [0, 1, 1], [0, 1, 0], [1, 0, 1], [1, 0, 0],
                                              [0, 0, 1]])


def test_a_pixel_format_the_source_cannot_read_is_named():
    pipeline = ("videotestsrc is-live=true ! video/x-raw,width=64,height=48,framerate=30/1 ! "
                "videoconvert ! video/x-raw,format=I420 ! appsink name=sink")
    with GStreamerSource(pipeline, plan=ExposurePlan.of([0.01]), settle_frames=0) as src:
        with pytest.raises(SourceError, match=r"format=I420; it takes BGR, RGB, BGRx"):
            src.read_bracket(1.0)


def test_a_mapping_that_returns_the_wrong_type_is_a_clear_error():
    control = ExposureControl("exp", "brightness", lambda t_s, g: f"{t_s}")
    with (GStreamerSource(live_pipeline(), plan=PLAN, settle_frames=0, control=control) as src,
          pytest.raises(SourceError, match=r"cannot set exp\.brightness for 0\.0005 s.*ExposureControl mapping")):
        src.read_bracket(1.0)


def test_exposure_control_configuration_is_checked():
    with pytest.raises(ValueError, match="'argus' or a callable"):
        ExposureControl("exp", "brightness", "linear")
    with pytest.raises(ValueError, match="settle_frames <= max_discard"):
        GStreamerSource(live_pipeline(), settle_frames=9, max_discard=8)
    with pytest.raises(SourceError, match="no element named 'lamp'"):
        GStreamerSource(live_pipeline(), control=ExposureControl("lamp", "brightness", brightness)).open()
    with pytest.raises(SourceError, match="'exp' has no property 'exposure'"):
        GStreamerSource(live_pipeline(), control=ExposureControl("exp", "exposure", brightness)).open()
    with pytest.raises(SourceError, match="needs an 'appsink name=sink'"):
        GStreamerSource("videotestsrc ! fakesink name=sink").open()
    # the default Argus control is optional: a custom pipeline without it runs (exposures not applied)
    with GStreamerSource(live_pipeline(), plan=PLAN, settle_frames=0) as src:
        assert src.read_bracket(1.0).frames.shape[0] == 3 and not src.describe()["controlled"]
    assert ExposureControl().describe() == {"element": "src", "properties": ["exposuretimerange", "gainrange"],
                                            "mapping": "argus"}


def test_the_argus_default_and_its_absence_is_explained():
    src = GStreamerSource()
    assert src.pipeline_text == (
        'nvarguscamerasrc name=src sensor-id=0 aelock=true exposuretimerange="500000 500000" gainrange="1 1" ! '
        "video/x-raw(memory:NVMM),width=1920,height=1080,framerate=30/1 ! nvvidconv ! video/x-raw,format=BGRx ! "
        "appsink name=sink max-buffers=2 drop=true sync=false")
    assert src.settle_frames == 3 and src.control == ExposureControl()

    class Element:  # what the Argus mapping writes, recorded
        def __init__(self):
            self.props = {}

        def set_property(self, name, value):
            self.props[name] = value

    el = Element()
    ExposureControl().apply(el, 1 / 125, 2.0)
    assert el.props == {"exposuretimerange": "8000000 8000000", "gainrange": "2 2"}
    if Gst.ElementFactory.find("nvarguscamerasrc") is None:
        with pytest.raises(SourceError, match=r'no element "nvarguscamerasrc".*nvidia-l4t-gstreamer'):
            src.open()


def test_an_unbounded_appsink_keeps_only_the_newest_frames_while_nothing_reads():
    """A pipeline that leaves appsink's queue unbounded (its default) gets max-buffers=2 drop=true: frames that
    nobody reads for a while (a first run's kernel compilation after the source is opened) do not pile up, and the
    next read is of a recent frame. A pipeline that sets its own bound keeps it."""
    pipeline = ("videotestsrc is-live=true pattern=smpte ! video/x-raw,width=64,height=48,framerate=30/1 ! "
                "videoconvert ! video/x-raw,format=BGR ! appsink name=sink")
    with GStreamerSource(pipeline, plan=ExposurePlan.of([0.01]), settle_frames=0) as src:
        sink = src._sink
        assert sink.get_property("max-buffers") == 2 and sink.get_property("drop") is True
        time.sleep(0.5)  # 15 frames arrive unread
        stamp = src.read_bracket(1.0).timestamp_ns[0]
        # one of the last frames (about 70 ms old; room for a loaded machine), not the first of the half second
        assert time.monotonic_ns() - stamp < 300e6
    own = pipeline.replace("appsink name=sink", "appsink name=sink max-buffers=5")
    with GStreamerSource(own, plan=ExposurePlan.of([0.01]), settle_frames=0) as src:
        assert src._sink.get_property("max-buffers") == 5
