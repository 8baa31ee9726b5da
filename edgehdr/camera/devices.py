"""Camera devices: V4L2 through OpenCV, GStreamer (Jetson ``nvarguscamerasrc``), picamera2.

All three capture single frames at a commanded exposure and leave grouping into
brackets to ``FrameGrouper`` (rolling: exposures alternate frame by frame and a
bracket comes out at capture rate; burst: a whole bracket per read). Sensors apply
new exposure controls a frame or two late, so every source discards frames until
the new setting has taken effect: picamera2 by checking each frame's metadata,
GStreamer by each buffer's timestamp plus settle frames, V4L2 by a configured
number of settle frames. Libraries are imported when a source opens; failures
raise ``SourceError`` with what to check.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from edgehdr.bracket import Bracket
from edgehdr.camera.base import BracketSource, ExposurePlan, FrameGrouper, PendingPlan, SourceError, SourceTimeout

if TYPE_CHECKING:
    import cv2

__all__ = ["ExposureControl", "GStreamerSource", "Picamera2Source", "V4L2Source"]

log = logging.getLogger("edgehdr.camera")


# Packed 8-bit layouts a source can hand over, and the OpenCV conversion of each to RGB (None: already RGB). The
# 4-byte ones let a pipeline end at the converter that made them (Jetson's nvvidconv writes BGRx) without a CPU
# videoconvert pass to BGR before the appsink.
PIXEL_LAYOUTS: dict[str, str | None] = {"BGR": "COLOR_BGR2RGB", "RGB": None, "BGRx": "COLOR_BGRA2RGB",
                                        "BGRA": "COLOR_BGRA2RGB", "RGBx": "COLOR_RGBA2RGB", "RGBA": "COLOR_RGBA2RGB"}


class _GroupingSource(BracketSource):
    """Shared plan handling and frame grouping of the device sources."""

    def __init__(self, plan: ExposurePlan | None, mode: str) -> None:
        self._plan = plan or ExposurePlan.of([1 / 2000, 1 / 500, 1 / 125])
        # set_plan runs on the merge stage's thread, read_bracket on the capture thread: the new plan waits here
        # and the capture thread adopts it before its next frame (the grouper is only touched by that thread).
        self._pending_plan = PendingPlan()
        self.mode = mode
        self._grouper = FrameGrouper(len(self._plan), mode)
        self._index = 0
        self._sequence = 0
        self.frames_discarded = 0

    @property
    def plan(self) -> ExposurePlan:
        """The plan of the next frame: the last one set, adopted or not yet."""
        pending = self._pending_plan.peek()
        return pending if pending is not None else self._plan

    def set_plan(self, plan: ExposurePlan) -> None:
        """Use ``plan`` from the next frame on; returns at once, also while a read is in progress."""
        self._pending_plan.put(plan)

    def _adopt_pending_plan(self) -> ExposurePlan:
        plan = self._pending_plan.take()
        if plan is not None:
            if len(plan) != len(self._plan):
                self._grouper.reset(len(plan))
                self._index = 0
            self._plan = plan
        return self._plan

    def _capture(self, exposure_s: float, gain: float, timeout_s: float) -> tuple[np.ndarray, int]:
        """(frame RGB, timestamp ns) at this exposure; implemented per device."""
        raise NotImplementedError

    def _applied_exposure_s(self, exposure_s: float) -> float:
        """The exposure the device really applies for a requested one (what the bracket records); a device whose
        control is quantised overrides it."""
        return exposure_s

    def _to_rgb(self, pixels: np.ndarray, layout: str = "BGR") -> np.ndarray:
        """An 8-bit (H, W, 3 or 4) frame in ``layout`` (a key of ``PIXEL_LAYOUTS``; rows may be padded, memory
        read only) as RGB in one of the grouper's recycled frame buffers, in one OpenCV pass. The channel swap
        by numpy's ``bgr[..., ::-1].copy()`` took 12-25 ms at 1080p on this project's 2-core VM against
        0.2-0.35 ms for ``cv2.cvtColor`` into a buffer."""
        import cv2

        channels = len(layout)
        if pixels.ndim != 3 or pixels.shape[2] != channels or pixels.dtype != np.uint8:
            raise SourceError(f"{self.name}: expected an 8-bit {layout} frame (H, W, {channels}), got "
                              f"{pixels.dtype} {tuple(pixels.shape)}")
        out = self._grouper.frame_buffer((*pixels.shape[:2], 3))
        conversion = PIXEL_LAYOUTS[layout]
        if conversion is None:
            np.copyto(out, pixels)
            return out
        return cv2.cvtColor(pixels, getattr(cv2, conversion), dst=out)

    def describe(self) -> dict[str, Any]:
        frames, stacks = self._grouper.frame_pool, self._grouper.stack_pool
        return {**super().describe(), "mode": self.mode,
                "buffers": {"frames_allocated": frames.allocated, "frames_reused": frames.reused,
                            "stacks_allocated": stacks.allocated, "stacks_reused": stacks.reused}}

    def read_bracket(self, timeout_s: float = 1.0) -> Bracket:
        deadline = time.monotonic() + timeout_s
        while True:
            plan = self._adopt_pending_plan()
            i = self._index % len(plan)
            frame, stamp = self._capture(plan.exposure_s[i], plan.gain[i], max(0.0, deadline - time.monotonic()))
            self._index = (i + 1) % len(plan)
            if self._grouper.add(i, frame, self._applied_exposure_s(plan.exposure_s[i]), plan.gain[i], stamp):
                self._sequence += 1
                return self._grouper.take(self.bits, self._sequence, self.name)
            if time.monotonic() > deadline:
                raise SourceTimeout(f"{self.name}: no complete bracket within {timeout_s} s")


class V4L2Source(_GroupingSource):
    """A V4L2 camera (``/dev/videoN``) through OpenCV with manual exposure and gain.

    OpenCV's V4L2 backend maps ``CAP_PROP_AUTO_EXPOSURE`` to ``exposure_auto``
    (1 = manual) and ``CAP_PROP_EXPOSURE`` to ``exposure_time_absolute`` in units of
    100 us on UVC cameras (``exposure_unit_s``); drivers apply a change after one or
    two frames, so ``settle_frames`` frames are discarded after every change. With
    per-frame changes the bracket rate is ``fps / (N (1 + settle_frames))``.
    """

    name = "v4l2"

    def __init__(self, device: str = "/dev/video0", *, width: int = 1920, height: int = 1080, fps: float = 30.0,
                 plan: ExposurePlan | None = None, mode: str = "rolling", settle_frames: int = 2,
                 exposure_unit_s: float = 100e-6, fourcc: str = "MJPG") -> None:
        super().__init__(plan, mode)
        self.device, self.width, self.height, self.fps = device, width, height, fps
        self.settle_frames, self.exposure_unit_s, self.fourcc = settle_frames, exposure_unit_s, fourcc
        self._cap: cv2.VideoCapture | None = None
        self._bgr: np.ndarray | None = None
        self._current: tuple[float, float] | None = None

    def open(self) -> None:
        if self._cap is not None:  # open already (the daemon opens the source before the pipeline starts)
            return
        import cv2

        cap = cv2.VideoCapture(self.device, cv2.CAP_V4L2)
        if not cap.isOpened():
            raise SourceError(f"{self.device}: cannot open the V4L2 device; check that it exists (v4l2-ctl "
                              "--list-devices), that your user is in the 'video' group, and that no other process "
                              "holds it")
        cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter.fourcc(*self.fourcc))
        cap.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        cap.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        cap.set(cv2.CAP_PROP_FPS, self.fps)
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        if not cap.set(cv2.CAP_PROP_AUTO_EXPOSURE, 1):
            cap.release()
            raise SourceError(f"{self.device}: the driver refuses manual exposure (exposure_auto=1)")
        self._cap = cap
        self._current = None

    def close(self) -> None:
        if self._cap is not None:
            try:
                self._cap.release()
            finally:  # forgotten even when releasing failed: the next open makes a new capture
                self._cap = None

    def _exposure_units(self, exposure_s: float) -> int:
        """``exposure_time_absolute`` is a whole number of units (100 us on UVC cameras), at least one."""
        return max(1, round(exposure_s / self.exposure_unit_s))

    def _applied_exposure_s(self, exposure_s: float) -> float:
        # what the driver applies, not what was asked: a 10 us plan entry is exposed for 100 us
        return self._exposure_units(exposure_s) * self.exposure_unit_s

    def _capture(self, exposure_s: float, gain: float, timeout_s: float) -> tuple[np.ndarray, int]:
        import cv2

        if self._cap is None:
            raise SourceError(f"{self.device}: not open")
        if self._current != (exposure_s, gain):
            self._cap.set(cv2.CAP_PROP_EXPOSURE, self._exposure_units(exposure_s))
            self._cap.set(cv2.CAP_PROP_GAIN, gain)
            self._current = (exposure_s, gain)
            for _ in range(self.settle_frames):
                self._cap.grab()
                self.frames_discarded += 1
        ok, bgr = self._cap.read(self._bgr)  # decoded into the last frame's array when the size still fits
        if not ok or bgr is None:
            raise SourceError(f"{self.device}: read failed (camera unplugged?)")
        self._bgr = bgr
        return self._to_rgb(bgr), time.monotonic_ns()


_ARGUS = "argus"
_POLL_S = 0.1  # longest wait for a frame before the bus is read again: errors surface within this time


@dataclass(frozen=True)
class ExposureControl:
    """Where a GStreamer pipeline takes its exposure, and how a plan entry becomes a property value.

    Parameters
    ----------
    element : str
        Name (``name=...`` in the pipeline) of the live element that carries the exposure.
    property_name : str
        Property set on ``element`` while PLAYING. Ignored in ``"argus"`` mode, which sets
        ``exposuretimerange`` and ``gainrange``.
    mapping : "argus" or callable
        ``"argus"`` (default): Jetson ``nvarguscamerasrc`` ranges pinned to one value,
        ``exposuretimerange="t_ns t_ns"`` and ``gainrange="g g"``. A callable
        ``mapping(exposure_s, gain) -> value`` gives the value set on ``property_name``
        for any other element (a test source, a V4L2 ``extra-controls`` structure, ...).

    Examples
    --------
    A test pattern whose brightness stands in for exposure (one stop = 0.25):

    >>> ExposureControl("exp", "brightness", lambda t_s, g: 0.25 * math.log2(t_s * g * 500))  # doctest: +SKIP
    """

    element: str = "src"
    property_name: str = "exposuretimerange"
    mapping: str | Callable[[float, float], object] = _ARGUS

    def __post_init__(self) -> None:
        if self.mapping != _ARGUS and not callable(self.mapping):
            raise ValueError(f"mapping must be 'argus' or a callable (exposure_s, gain) -> value, got {self.mapping!r}")

    @property
    def properties(self) -> tuple[str, ...]:
        """Names of the properties this control sets."""
        return ("exposuretimerange", "gainrange") if self.mapping == _ARGUS else (self.property_name,)

    def apply(self, element: Any, exposure_s: float, gain: float) -> None:
        """Set ``element``'s properties (a ``Gst.Element``) for this exposure time (s) and analogue gain."""
        mapping = self.mapping
        if isinstance(mapping, str):  # "argus": __post_init__ admits no other string
            t_ns = int(exposure_s * 1e9)
            element.set_property("exposuretimerange", f"{t_ns} {t_ns}")
            element.set_property("gainrange", f"{gain:g} {gain:g}")
        else:
            element.set_property(self.property_name, mapping(exposure_s, gain))

    def describe(self) -> dict[str, Any]:
        mapping = self.mapping if self.mapping == _ARGUS else getattr(self.mapping, "__name__", "callable")
        return {"element": self.element, "properties": list(self.properties), "mapping": mapping}


class GStreamerSource(_GroupingSource):
    """A GStreamer pipeline through PyGObject; by default Jetson's Argus camera (``nvarguscamerasrc``).

    Exposure on a running pipeline needs a live element: by default the source
    element named ``src`` gets its ``exposuretimerange`` and ``gainrange``
    properties (time in ns, as "min max" strings) pinned to one value while
    PLAYING, with ``aelock=true``. ``control`` names another element, property and
    mapping (see ``ExposureControl``). (OpenCV's GStreamer capture cannot reach
    the element, hence PyGObject: ``apt install python3-gi gir1.2-gstreamer-1.0``;
    see ``docs/jetson-capture.md``.)

    After a change, a frame is kept only when (a) it was captured after the
    change, judged by its buffer timestamp (PTS) on the pipeline clock, which
    drops frames already queued in the appsink, and (b) at least
    ``settle_frames`` frames have been dropped since the change, for devices that
    apply controls late (Argus: a few frames). Timestamps are the buffers' PTS on
    the pipeline clock expressed in ``time.monotonic_ns`` terms (pull time when a
    buffer has no PTS). Errors posted on the bus raise ``SourceError`` naming the
    element and reason, and the end of the stream (EOS) raises ``SourceError``
    naming EOS; either way the caller (the daemon's capture loop) closes and
    reopens the source, which rebuilds the pipeline and counts ``restarts``.

    Parameters
    ----------
    pipeline : str
        ``gst-launch-1.0`` description ending in ``appsink name=sink`` that delivers
        BGR; empty for the Argus default (``default_pipeline``).
    sensor_id, width, height, fps
        Argus sensor and stream size (px) and rate (frames/s) of the default pipeline.
    plan : ExposurePlan, optional
    mode : {"rolling", "burst"}
        How ``FrameGrouper`` forms brackets.
    settle_frames : int
        Frames dropped after every exposure change on top of those captured before it.
    control : ExposureControl, optional
        Default: Argus ranges on ``src``, optional (a custom pipeline without a
        ``src`` that has them runs uncontrolled). An explicit control whose element
        or property is missing makes ``open`` fail.
    max_discard : int
        A change not visible after this many dropped frames raises ``SourceTimeout``.
    start_timeout_s : float
        How long ``open`` waits for the pipeline to reach PLAYING (Argus needs ~1-2 s).
    """

    name = "gstreamer"

    def __init__(self, pipeline: str = "", *, sensor_id: int = 0, width: int = 1920, height: int = 1080,
                 fps: float = 30.0, plan: ExposurePlan | None = None, mode: str = "rolling", settle_frames: int = 3,
                 control: ExposureControl | None = None, max_discard: int = 8,
                 start_timeout_s: float = 10.0) -> None:
        super().__init__(plan, mode)
        if settle_frames < 0 or max_discard < settle_frames:
            raise ValueError(f"need 0 <= settle_frames <= max_discard, got {settle_frames} and {max_discard}")
        self.sensor_id, self.width, self.height, self.fps = sensor_id, width, height, fps
        self.settle_frames, self.max_discard, self.start_timeout_s = settle_frames, max_discard, start_timeout_s
        self.control = control or ExposureControl()
        self._control_required = control is not None
        self.pipeline_text = pipeline or self.default_pipeline(sensor_id, width, height, fps,
                                                               self._plan.exposure_s[0])
        self._Gst: Any = None  # the gi.repository.Gst module, imported by open()
        # Gst.Pipeline, its appsink, bus, exposure element and clock while open (PyGObject has no type stubs).
        self._pipeline: Any | None = None
        self._sink: Any | None = None
        self._bus: Any | None = None
        self._element: Any | None = None
        self._clock: Any | None = None
        self._base_time_ns = 0
        self._clock_is_monotonic = False
        self._current: tuple[float, float] | None = None
        self._opened_before = False
        self.restarts = 0  # reopenings after the first open (each rebuilds the pipeline)
        self.bus_errors = 0
        self.last_error = ""
        self.frames_stale = 0  # of frames_discarded: captured before the change they were read after
        self.timestamps = "pts"

    @staticmethod
    def default_pipeline(sensor_id: int = 0, width: int = 1920, height: int = 1080, fps: float = 30.0,
                         exposure_s: float = 1 / 2000) -> str:
        """The Jetson pipeline: ``nvarguscamerasrc`` (manual exposure, AE locked) -> NVMM NV12 -> ``nvvidconv`` (VIC
        hardware) -> BGRx appsink; the source turns BGRx into RGB in one OpenCV pass (no CPU ``videoconvert``)."""
        t_ns = int(exposure_s * 1e9)
        return (f'nvarguscamerasrc name=src sensor-id={sensor_id} aelock=true exposuretimerange="{t_ns} {t_ns}" '
                f'gainrange="1 1" ! video/x-raw(memory:NVMM),width={width},height={height},framerate={int(fps)}/1 ! '
                "nvvidconv ! video/x-raw,format=BGRx ! appsink name=sink max-buffers=2 drop=true sync=false")

    def open(self) -> None:
        if self._pipeline is not None:  # open already: a second pipeline would leak the first, and count a restart
            return
        import cv2  # noqa: F401 - here, not at the first frame's conversion (a cold import takes about a second)

        try:
            import gi

            gi.require_version("Gst", "1.0")
            from gi.repository import Gst
        except (ImportError, ValueError) as exc:
            raise SourceError("GStreamer Python bindings missing: apt install python3-gi gir1.2-gstreamer-1.0 "
                              "(and use the system Python or --system-site-packages), or pip install "
                              "'PyGObject<3.51' with libgirepository1.0-dev; see docs/jetson-capture.md") from exc
        Gst.init(None)
        self._Gst = Gst
        try:
            pipeline = Gst.parse_launch(self.pipeline_text)
        except Exception as exc:  # GLib.Error
            hint = ""
            if "nvarguscamerasrc" in str(exc) or "nvvidconv" in str(exc):
                hint = " (Jetson elements come with JetPack's nvidia-l4t-gstreamer; elsewhere give a pipeline)"
            raise SourceError(f"GStreamer pipeline does not parse: {exc}{hint}") from exc
        sink = pipeline.get_by_name("sink")
        if sink is None or sink.get_factory() is None or sink.get_factory().get_name() != "appsink":
            raise SourceError("the GStreamer pipeline needs an 'appsink name=sink'")
        if sink.get_property("max-buffers") == 0:
            # appsink's default queue is unbounded: a live camera's frames would pile up (6 MB each at 1080p) while
            # nothing reads them, e.g. through a first run's kernel compilation after the source is opened
            # (edgehdr.pipeline.daemon.open_source). A live source wants the newest frames: 2, the oldest dropped,
            # as the Argus default pipeline sets it.
            sink.set_property("max-buffers", 2)
            sink.set_property("drop", True)
            log.info("GStreamer appsink: max-buffers=2 drop=true (the pipeline left its queue unbounded)")
        element = self._control_element(pipeline)
        bus = pipeline.get_bus()
        started = pipeline.set_state(Gst.State.PLAYING) != Gst.StateChangeReturn.FAILURE
        if started:
            result, state, _ = pipeline.get_state(int(self.start_timeout_s * 1e9))
            started = result != Gst.StateChangeReturn.FAILURE and state == Gst.State.PLAYING
        if not started:
            reason = self._bus_error(bus) or f"not PLAYING within {self.start_timeout_s:g} s"
            pipeline.set_state(Gst.State.NULL)
            raise SourceError(f"GStreamer pipeline failed to start: {reason} (camera connected? nvargus-daemon "
                              "running? try the pipeline with gst-launch-1.0)")
        self._pipeline, self._sink, self._bus, self._element = pipeline, sink, bus, element
        self._clock, self._base_time_ns = pipeline.get_clock(), pipeline.get_base_time()
        self._clock_is_monotonic = (isinstance(self._clock, Gst.SystemClock)
                                    and self._clock.props.clock_type == Gst.ClockType.MONOTONIC)
        self._current = None
        # Frames from before a restart do not belong with the new pipeline's frames.
        self._grouper.reset(len(self._plan))
        self._index = 0
        if self._opened_before:
            self.restarts += 1
        self._opened_before = True

    def _control_element(self, pipeline: Any) -> Any | None:
        """The live element carrying the exposure, or None when the (default) control is absent."""
        element = pipeline.get_by_name(self.control.element)
        missing = [p for p in self.control.properties if element is not None and element.find_property(p) is None]
        if element is not None and not missing:
            return element
        if self._control_required:
            what = (f"no element named {self.control.element!r}" if element is None
                    else f"{self.control.element!r} has no property {missing[0]!r}")
            raise SourceError(f"GStreamer pipeline: {what} to carry the exposure; name the live element in the "
                              "pipeline (name=...) or fix the ExposureControl")
        log.warning("gstreamer: no element %r with %s: exposures are not applied", self.control.element,
                    "/".join(self.control.properties))
        return None

    def close(self) -> None:
        if self._pipeline is not None:
            try:
                self._pipeline.set_state(self._Gst.State.NULL)
            finally:  # forgotten even when stopping it failed: the next open builds a new one (open skips an open one)
                self._pipeline = self._sink = self._bus = self._element = self._clock = None

    def element(self, name: str) -> Any | None:
        """The running pipeline's element called ``name`` (None when absent), e.g. to tune other properties."""
        if self._pipeline is None:
            raise SourceError(f"{self.name}: not open")
        return self._pipeline.get_by_name(name)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "pipeline": self.pipeline_text, "control": self.control.describe(),
                "controlled": self._element is not None, "settle_frames": self.settle_frames,
                "frames_discarded": self.frames_discarded, "frames_stale": self.frames_stale,
                "restarts": self.restarts, "bus_errors": self.bus_errors, "last_error": self.last_error,
                "timestamps": self.timestamps}

    def _bus_error(self, bus: Any) -> str:
        """Drain the bus: log warnings, return the first error as text ('' when none)."""
        Gst = self._Gst
        error = ""
        while True:
            msg = bus.pop_filtered(Gst.MessageType.ERROR | Gst.MessageType.WARNING)  # drops other messages
            if msg is None:
                return error
            if msg.type == Gst.MessageType.WARNING:
                warn, debug = msg.parse_warning()
                log.warning("gstreamer: %s: %s", msg.src.get_name() if msg.src else "?", warn.message)
            elif not error:
                err, debug = msg.parse_error()
                reason = (debug or "").strip().splitlines()[-1:] or [""]
                error = f"error from {msg.src.get_name() if msg.src else '?'}: {err.message} {reason[0]}".strip()

    def _check_bus(self) -> None:
        error = self._bus_error(self._bus)
        if error:
            self.bus_errors += 1
            self.last_error = error
            raise SourceError(f"{self.name}: pipeline {error}; the source must be reopened (the daemon restarts it)")

    def _pull(self, timeout_s: float) -> tuple[np.ndarray, int]:
        sink = self._sink
        if sink is None:
            raise SourceError(f"{self.name}: not open")
        deadline = time.monotonic() + timeout_s
        while True:
            self._check_bus()
            wait_s = min(max(0.0, deadline - time.monotonic()), _POLL_S)
            sample = sink.emit("try-pull-sample", int(wait_s * 1e9))
            if sample is not None:
                break
            self._check_bus()  # a failing element also ends the stream: report its error, not the EOS
            if sink.get_property("eos"):
                self.last_error = "end of stream (EOS)"
                raise SourceError(f"{self.name}: end of stream (EOS): the pipeline stopped delivering frames "
                                  "(Argus sends EOS when the camera fails); the source must be reopened")
            if time.monotonic() >= deadline:
                raise SourceTimeout(f"{self.name}: no frame within {timeout_s:.2f} s")
        buf = sample.get_buffer()
        caps = sample.get_caps().get_structure(0)
        w, h = caps.get_value("width"), caps.get_value("height")
        layout = caps.get_string("format")
        if layout not in PIXEL_LAYOUTS:
            raise SourceError(f"{self.name}: the appsink receives format={layout}; it takes "
                              f"{', '.join(PIXEL_LAYOUTS)}: end the pipeline in e.g. 'videoconvert ! "
                              "video/x-raw,format=BGR ! appsink name=sink'")
        size = len(layout)
        ok, info = buf.map(self._Gst.MapFlags.READ)
        if not ok:
            raise SourceError(f"{self.name}: cannot map a buffer")
        try:
            stride = info.size // h  # GStreamer pads each 3-byte row to a multiple of 4 bytes
            if stride < w * size:
                raise SourceError(f"{self.name}: a {w}x{h} {layout} buffer of {info.size} bytes is too small for "
                                  f"{size} bytes a pixel")
            rows = np.frombuffer(info.data, np.uint8, count=stride * h).reshape(h, stride)
            rgb = self._to_rgb(rows[:, : w * size].reshape(h, w, size), layout)
        finally:
            buf.unmap(info)
        return rgb, self._stamp_ns(sample, buf)

    def _stamp_ns(self, sample: Any, buf: Any) -> int:
        """Capture time of a buffer in ``time.monotonic_ns`` terms, from its PTS on the pipeline clock."""
        Gst = self._Gst
        now_ns = time.monotonic_ns()
        if self._clock is None or buf.pts == Gst.CLOCK_TIME_NONE:
            self.timestamps = "pull"
            return now_ns
        running_ns = sample.get_segment().to_running_time(Gst.Format.TIME, buf.pts)
        if running_ns == Gst.CLOCK_TIME_NONE:
            self.timestamps = "pull"
            return now_ns
        clock_ns = self._base_time_ns + running_ns
        if self._clock_is_monotonic:  # GStreamer's system clock reads CLOCK_MONOTONIC, as time.monotonic_ns does
            return clock_ns
        return now_ns - (self._clock.get_time() - clock_ns)  # any other clock: shift by the buffer's age

    def _capture(self, exposure_s: float, gain: float, timeout_s: float) -> tuple[np.ndarray, int]:
        if self._pipeline is None:
            raise SourceError(f"{self.name}: not open")
        deadline = time.monotonic() + timeout_s
        changed_ns = None
        if self._element is not None and self._current != (exposure_s, gain):
            try:
                self.control.apply(self._element, exposure_s, gain)
            except (TypeError, ValueError) as exc:
                target = f"{self.control.element}.{'/'.join(self.control.properties)}"
                raise SourceError(f"{self.name}: cannot set {target} for {exposure_s:g} s, gain {gain:g}: {exc}; "
                                  "check the ExposureControl mapping") from exc
            self._current = (exposure_s, gain)
            changed_ns = time.monotonic_ns()  # after the set: later frames were processed with the new value
        dropped = 0
        while True:
            frame, stamp = self._pull(max(deadline - time.monotonic(), 0.05))
            if changed_ns is None or (dropped >= self.settle_frames and stamp >= changed_ns):
                return frame, stamp
            self.frames_discarded += 1
            self.frames_stale += stamp < changed_ns
            dropped += 1
            if dropped > self.max_discard:
                raise SourceTimeout(f"{self.name}: exposure {exposure_s * 1e3:g} ms / gain {gain:g}: no frame "
                                    f"captured after the change within {self.max_discard} frames (do the "
                                    "buffers carry pipeline-clock timestamps?)")


class Picamera2Source(_GroupingSource):
    """Raspberry Pi cameras through picamera2, every frame checked against its metadata.

    Auto exposure is off (``AeEnable``); ``ExposureTime`` (us) and ``AnalogueGain`` are
    set per frame and each captured frame's metadata is compared with what was
    asked: frames whose controls have not taken effect yet are discarded (counted
    in ``frames_discarded``). With ``hdr_mode=True`` on a Pi 5 the ISP's
    ``MultiExposureUnmerged`` mode alternates exposures itself; frames are then
    grouped by the exposure their metadata reports.
    """

    name = "picamera2"

    def __init__(self, *, camera_num: int = 0, width: int = 1920, height: int = 1080, fps: float = 30.0,
                 plan: ExposurePlan | None = None, mode: str = "rolling", hdr_mode: bool = False,
                 tolerance: float = 0.05, max_discard: int = 8) -> None:
        super().__init__(plan, mode)
        self.camera_num, self.width, self.height, self.fps = camera_num, width, height, fps
        self.hdr_mode, self.tolerance, self.max_discard = hdr_mode, tolerance, max_discard
        self._cam: Any | None = None  # a picamera2.Picamera2 while open

    def open(self) -> None:
        if self._cam is not None:  # open already (libcamera allows one session per camera)
            return
        import cv2  # noqa: F401 - here, not at the first frame's conversion (a cold import takes about a second)

        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise SourceError("picamera2 is not installed: on Raspberry Pi OS, apt install python3-picamera2 "
                              "(or pip install 'edgehdr[pi]' with libcamera present)") from exc
        try:
            cam = Picamera2(self.camera_num)
            config = cam.create_video_configuration(main={"size": (self.width, self.height), "format": "RGB888"},
                                                    controls={"FrameRate": self.fps})
            cam.configure(config)
            controls = {"AeEnable": False, "AwbEnable": False}
            if self.hdr_mode:
                from libcamera import controls as lc

                controls["HdrMode"] = lc.HdrModeEnum.MultiExposureUnmerged
            cam.set_controls(controls)
            cam.start()
        except Exception as exc:
            raise SourceError(f"camera {self.camera_num}: cannot start ({exc}); is it connected and enabled?") from exc
        self._cam = cam

    def close(self) -> None:
        if self._cam is not None:
            try:
                self._cam.stop()
                self._cam.close()
            finally:
                self._cam = None

    def read_bracket(self, timeout_s: float = 1.0) -> Bracket:
        if not self.hdr_mode:
            return super().read_bracket(timeout_s)
        # The ISP alternates exposures itself: file each frame under the plan slot nearest
        # to the exposure its metadata reports.
        cam = self._cam
        if cam is None:
            raise SourceError(f"{self.name}: not open")
        deadline = time.monotonic() + timeout_s
        plan_us = np.asarray(self._adopt_pending_plan().exposure_s) * 1e6
        while time.monotonic() < deadline:
            request = cam.capture_request()
            try:
                md = request.get_metadata()
                got_us = md.get("ExposureTime", 0)
                slot = int(np.argmin(np.abs(np.log(np.maximum(plan_us, 1)) - np.log(max(got_us, 1)))))
                frame = self._to_rgb(request.make_array("main"))  # libcamera "RGB888" is BGR in memory
                stamp = int(md.get("SensorTimestamp", time.monotonic_ns()))
            finally:
                request.release()
            if self._grouper.add(slot, frame, got_us / 1e6, md.get("AnalogueGain", 1.0), stamp):
                self._sequence += 1
                return self._grouper.take(self.bits, self._sequence, self.name)
        raise SourceTimeout(f"{self.name}: no complete HDR bracket within {timeout_s} s")

    def _capture(self, exposure_s: float, gain: float, timeout_s: float) -> tuple[np.ndarray, int]:
        cam = self._cam
        if cam is None:
            raise SourceError(f"{self.name}: not open")
        want_us = int(round(exposure_s * 1e6))
        if not self.hdr_mode:
            cam.set_controls({"ExposureTime": want_us, "AnalogueGain": float(gain)})
        for _ in range(self.max_discard + 1):
            request = cam.capture_request()
            try:
                md = request.get_metadata()
                got_us, got_gain = md.get("ExposureTime", 0), md.get("AnalogueGain", 0.0)
                matches = abs(got_us - want_us) <= self.tolerance * want_us + 20 and \
                    abs(got_gain - gain) <= self.tolerance * gain
                if self.hdr_mode or matches:
                    bgr = request.make_array("main")  # libcamera "RGB888" is BGR in memory
                    stamp = md.get("SensorTimestamp", time.monotonic_ns())
                    return self._to_rgb(bgr), int(stamp)
                self.frames_discarded += 1
            finally:
                request.release()
        raise SourceTimeout(f"{self.name}: exposure {want_us} us / gain {gain:g} never took effect "
                            f"in {self.max_discard} frames")
