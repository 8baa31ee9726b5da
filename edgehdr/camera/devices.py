"""Camera devices: V4L2 through OpenCV, GStreamer (Jetson ``nvarguscamerasrc``), picamera2.

All three capture single frames at a commanded exposure and leave grouping into
brackets to ``FrameGrouper`` (rolling: exposures alternate frame by frame and a
bracket comes out at capture rate; burst: a whole bracket per read). Sensors apply
new exposure controls a frame or two late, so every source discards frames until
the new setting has taken effect: picamera2 by checking each frame's metadata,
the others by a configured number of settle frames. Libraries are imported when a
source opens; failures raise ``SourceError`` with what to check.
"""

from __future__ import annotations

import time

import numpy as np

from edgehdr.bracket import Bracket
from edgehdr.camera.base import BracketSource, ExposurePlan, FrameGrouper, SourceError, SourceTimeout

__all__ = ["V4L2Source", "GStreamerSource", "Picamera2Source"]


class _GroupingSource(BracketSource):
    """Shared plan handling and frame grouping of the device sources."""

    def __init__(self, plan: ExposurePlan | None, mode: str):
        self._plan = plan or ExposurePlan.of([1 / 2000, 1 / 500, 1 / 125])
        self.mode = mode
        self._grouper = FrameGrouper(len(self._plan), mode)
        self._index = 0
        self._sequence = 0
        self.frames_discarded = 0

    @property
    def plan(self) -> ExposurePlan:
        return self._plan

    def set_plan(self, plan: ExposurePlan) -> None:
        if len(plan) != len(self._plan):
            self._grouper.reset(len(plan))
            self._index = 0
        self._plan = plan

    def _capture(self, exposure_s: float, gain: float, timeout_s: float):
        """(frame RGB, timestamp ns) at this exposure; implemented per device."""
        raise NotImplementedError

    def read_bracket(self, timeout_s: float = 1.0) -> Bracket:
        deadline = time.monotonic() + timeout_s
        while True:
            plan = self._plan
            i = self._index % len(plan)
            frame, stamp = self._capture(plan.exposure_s[i], plan.gain[i], max(0.0, deadline - time.monotonic()))
            self._index = (i + 1) % len(plan)
            if self._grouper.add(i, frame, plan.exposure_s[i], plan.gain[i], stamp):
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
                 exposure_unit_s: float = 100e-6, fourcc: str = "MJPG"):
        super().__init__(plan, mode)
        self.device, self.width, self.height, self.fps = device, width, height, fps
        self.settle_frames, self.exposure_unit_s, self.fourcc = settle_frames, exposure_unit_s, fourcc
        self._cap = None
        self._current = None

    def open(self) -> None:
        import cv2

        cap = cv2.VideoCapture(self.device, cv2.CAP_V4L2)
        if not cap.isOpened():
            raise SourceError(f"{self.device}: cannot open the V4L2 device; check that it exists (v4l2-ctl "
                              "--list-devices), that your user is in the 'video' group, and that no other process "
                              "holds it")
        cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.fourcc))
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
            self._cap.release()
            self._cap = None

    def _capture(self, exposure_s, gain, timeout_s):
        import cv2

        if self._cap is None:
            raise SourceError(f"{self.device}: not open")
        if self._current != (exposure_s, gain):
            self._cap.set(cv2.CAP_PROP_EXPOSURE, max(1.0, exposure_s / self.exposure_unit_s))
            self._cap.set(cv2.CAP_PROP_GAIN, gain)
            self._current = (exposure_s, gain)
            for _ in range(self.settle_frames):
                self._cap.grab()
                self.frames_discarded += 1
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            raise SourceError(f"{self.device}: read failed (camera unplugged?)")
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), time.monotonic_ns()


class GStreamerSource(_GroupingSource):
    """A GStreamer pipeline through PyGObject; by default Jetson's Argus camera (``nvarguscamerasrc``).

    Exposure on a running pipeline needs a live element: the source element is
    named ``src`` and its ``exposuretimerange`` and ``gainrange`` properties (time in
    ns, as "min max" strings) are set to a single value while PLAYING, with
    ``aelock=true``; Argus applies them a few frames later, so ``settle_frames``
    frames are dropped after a change. (OpenCV's GStreamer capture cannot reach the
    element, hence PyGObject: ``apt install python3-gi gir1.2-gstreamer-1.0``.)
    A custom ``pipeline`` must end in ``appsink name=sink`` delivering BGR and may
    name its controllable source ``src``.
    """

    name = "gstreamer"

    def __init__(self, pipeline: str = "", *, sensor_id: int = 0, width: int = 1920, height: int = 1080,
                 fps: float = 30.0, plan: ExposurePlan | None = None, mode: str = "rolling", settle_frames: int = 3):
        super().__init__(plan, mode)
        self.sensor_id, self.width, self.height, self.fps = sensor_id, width, height, fps
        self.settle_frames = settle_frames
        t_ns = int(self._plan.exposure_s[0] * 1e9)
        self.pipeline_text = pipeline or (
            f'nvarguscamerasrc name=src sensor-id={sensor_id} aelock=true exposuretimerange="{t_ns} {t_ns}" '
            f'gainrange="1 1" ! video/x-raw(memory:NVMM),width={width},height={height},framerate={int(fps)}/1 ! '
            "nvvidconv ! video/x-raw,format=BGRx ! videoconvert ! video/x-raw,format=BGR ! "
            "appsink name=sink max-buffers=2 drop=true sync=false")
        self._pipeline = self._src = self._sink = None
        self._current = None

    def open(self) -> None:
        try:
            import gi

            gi.require_version("Gst", "1.0")
            from gi.repository import Gst
        except (ImportError, ValueError) as exc:
            raise SourceError("GStreamer Python bindings missing: apt install python3-gi gir1.2-gstreamer-1.0 "
                              "(and use the system Python or --system-site-packages)") from exc
        Gst.init(None)
        try:
            pipeline = Gst.parse_launch(self.pipeline_text)
        except Exception as exc:  # GLib.Error
            raise SourceError(f"GStreamer pipeline does not parse: {exc}") from exc
        sink = pipeline.get_by_name("sink")
        if sink is None:
            raise SourceError("the GStreamer pipeline needs an 'appsink name=sink'")
        if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
            raise SourceError("GStreamer pipeline failed to start (camera connected? nvargus-daemon running?)")
        self._Gst = Gst
        self._pipeline, self._sink, self._src = pipeline, sink, pipeline.get_by_name("src")
        self._current = None

    def close(self) -> None:
        if self._pipeline is not None:
            self._pipeline.set_state(self._Gst.State.NULL)
            self._pipeline = self._src = self._sink = None

    def _pull(self, timeout_s):
        sample = self._sink.emit("try-pull-sample", int(timeout_s * 1e9))
        if sample is None:
            raise SourceTimeout(f"{self.name}: no frame within {timeout_s:.2f} s")
        buf = sample.get_buffer()
        caps = sample.get_caps().get_structure(0)
        w, h = caps.get_value("width"), caps.get_value("height")
        ok, info = buf.map(self._Gst.MapFlags.READ)
        if not ok:
            raise SourceError(f"{self.name}: cannot map a buffer")
        try:
            bgr = np.frombuffer(info.data, np.uint8, count=w * h * 3).reshape(h, w, 3)
            rgb = bgr[..., ::-1].copy()
        finally:
            buf.unmap(info)
        return rgb, time.monotonic_ns()

    def _capture(self, exposure_s, gain, timeout_s):
        if self._pipeline is None:
            raise SourceError(f"{self.name}: not open")
        if self._src is not None and self._current != (exposure_s, gain):
            t_ns = int(exposure_s * 1e9)
            self._src.set_property("exposuretimerange", f"{t_ns} {t_ns}")
            self._src.set_property("gainrange", f"{gain:g} {gain:g}")
            self._current = (exposure_s, gain)
            for _ in range(self.settle_frames):
                self._pull(timeout_s)
                self.frames_discarded += 1
        return self._pull(max(timeout_s, 0.05))


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
                 tolerance: float = 0.05, max_discard: int = 8):
        super().__init__(plan, mode)
        self.camera_num, self.width, self.height, self.fps = camera_num, width, height, fps
        self.hdr_mode, self.tolerance, self.max_discard = hdr_mode, tolerance, max_discard
        self._cam = None

    def open(self) -> None:
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
        except Exception as exc:  # noqa: BLE001 - libcamera raises many kinds
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
        deadline = time.monotonic() + timeout_s
        plan_us = np.asarray(self._plan.exposure_s) * 1e6
        while time.monotonic() < deadline:
            request = self._cam.capture_request()
            try:
                md = request.get_metadata()
                got_us = md.get("ExposureTime", 0)
                slot = int(np.argmin(np.abs(np.log(np.maximum(plan_us, 1)) - np.log(max(got_us, 1)))))
                frame = np.ascontiguousarray(request.make_array("main")[..., ::-1])
                stamp = int(md.get("SensorTimestamp", time.monotonic_ns()))
            finally:
                request.release()
            if self._grouper.add(slot, frame, got_us / 1e6, md.get("AnalogueGain", 1.0), stamp):
                self._sequence += 1
                return self._grouper.take(self.bits, self._sequence, self.name)
        raise SourceTimeout(f"{self.name}: no complete HDR bracket within {timeout_s} s")

    def _capture(self, exposure_s, gain, timeout_s):
        if self._cam is None:
            raise SourceError(f"{self.name}: not open")
        want_us = int(round(exposure_s * 1e6))
        if not self.hdr_mode:
            self._cam.set_controls({"ExposureTime": want_us, "AnalogueGain": float(gain)})
        for _ in range(self.max_discard + 1):
            request = self._cam.capture_request()
            try:
                md = request.get_metadata()
                got_us, got_gain = md.get("ExposureTime", 0), md.get("AnalogueGain", 0.0)
                matches = abs(got_us - want_us) <= self.tolerance * want_us + 20 and \
                    abs(got_gain - gain) <= self.tolerance * gain
                if self.hdr_mode or matches:
                    bgr = request.make_array("main")  # libcamera "RGB888" is BGR in memory
                    stamp = md.get("SensorTimestamp", time.monotonic_ns())
                    return np.ascontiguousarray(bgr[..., ::-1]), int(stamp)
                self.frames_discarded += 1
            finally:
                request.release()
        raise SourceTimeout(f"{self.name}: exposure {want_us} us / gain {gain:g} never took effect "
                            f"in {self.max_discard} frames")
