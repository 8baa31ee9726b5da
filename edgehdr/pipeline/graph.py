"""The stage graph: capture -> align -> merge -> (tone map | dimming) -> bridge -> outputs, one thread per stage.

Stages hand ``FrameContext`` objects along bounded queues. Every hand-off is
latest-wins: when the next stage's queue is full, the oldest waiting frame is
dropped and counted, so overload sheds frames instead of piling them up (and
latency stays bounded). A stage that raises on a frame drops that frame, logs
it and counts it. The capture thread restarts a failing or stalled source with
exponential backoff. ``stop()`` drains: the capture thread stops, every queued
frame still flows through, stages are closed, the source is closed, and the
final statistics are returned. Heavy kernels release the GIL (numba ``nogil``,
OpenCV), so stages really run side by side (except on numba's workqueue threading
layer, where the stages that run kernels take turns: ``edgehdr.kernellock``).

A stage made with ``concurrent=True`` runs beside the stage before it on the same
frame (fork-join, on its own thread): the daemon runs the tone mapper and the local
dimming so, both reading only the radiance, so the zones do not wait for the SDR
picture and the LCD image and the zones still leave together.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgehdr.bracket import Bracket
from edgehdr.camera.base import BracketFault, BracketSource, SourceExhausted, SourceTimeout
from edgehdr.kernellock import kernel_lock, kernels_serialised

__all__ = ["FrameContext", "Stage", "Pipeline", "StageStats"]

log = logging.getLogger("edgehdr.pipeline")


class _Stop:
    """The end-of-stream marker that follows the last frame through every stage's queue."""


_STOP = _Stop()


@dataclass
class FrameContext:
    """Everything known about one frame as it travels the pipeline."""

    frame_id: int
    bracket: Bracket | None  # released (None) after its last reader, the merge, unless kept
    captured_ns: int
    aligned: Bracket | None = None
    motions: list[Any] | None = None
    shifts: np.ndarray | None = None  # (N, 2) integer (dx, dy) still to apply to ``aligned``; None: none to apply
    radiance: np.ndarray | None = None
    # what the classical merge measured of the radiance while writing it (edgehdr.hdr.MergeStatistics), for the
    # tone mapper and the dimming to skip their statistics passes; None: not gathered (they measure themselves)
    merge_statistics: Any = None
    sdr: np.ndarray | None = None
    quality_score: float | None = None
    display_scale: float | None = None
    light: np.ndarray | None = None
    zone_values: np.ndarray | None = None
    backlight: np.ndarray | None = None  # cd/m^2 at the light model's working resolution (dimming stage)
    lcd: np.ndarray | None = None
    zones_sent_ns: int | None = None
    stage_ms: dict[str, float] = field(default_factory=dict)


class StageStats:
    """Counters and a latency window of one stage (thread-safe)."""

    def __init__(self, name: str, window: int = 600) -> None:
        self.name = name
        self.processed = 0
        self.dropped = 0
        self.errors = 0
        self.last_error = ""
        self.first_error = ""
        self.total_s = 0.0  # cumulative processing time (a Prometheus summary's _sum)
        # CPU time of the stage's thread while it processed (time.thread_time: waiting and being descheduled
        # excluded): what a frame costs the machine, where the latency also counts the other threads' turns.
        self.cpu_total_s = 0.0
        self._cpu: deque[float] = deque(maxlen=window)
        self._latency: deque[float] = deque(maxlen=window)
        self._times: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()

    def record(self, seconds: float, cpu_seconds: float | None = None) -> None:
        with self._lock:
            self.processed += 1
            self.total_s += seconds
            self._latency.append(seconds)
            self._times.append(time.monotonic())
            if cpu_seconds is not None:
                self.cpu_total_s += cpu_seconds
                self._cpu.append(cpu_seconds)

    def drop(self, count: int = 1) -> None:
        with self._lock:
            self.dropped += count

    def reset_window(self, window: int | None = None) -> None:
        """Forget the latency, CPU and timing windows (the cumulative counters stay); ``window``: their new length
        in calls."""
        with self._lock:
            n = self._latency.maxlen if window is None else max(1, int(window))
            self._cpu, self._latency, self._times = deque(maxlen=n), deque(maxlen=n), deque(maxlen=n)

    def error(self, message: str) -> None:
        with self._lock:
            self.errors += 1
            self.last_error = message
            if not self.first_error:
                self.first_error = message

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            lat = np.array(self._latency) * 1e3 if self._latency else np.zeros(0)
            cpu = np.array(self._cpu) * 1e3 if self._cpu else np.zeros(0)
            span = (self._times[-1] - self._times[0]) if len(self._times) > 1 else 0.0
            fps = (len(self._times) - 1) / span if span > 0 else 0.0
            return {
                "name": self.name, "processed": self.processed, "dropped": self.dropped, "errors": self.errors,
                "fps": round(fps, 2),
                "latency_ms_median": round(float(np.median(lat)), 3) if lat.size else None,
                "latency_ms_p99": round(float(np.percentile(lat, 99)), 3) if lat.size else None,
                "latency_s_total": round(self.total_s, 6),
                "cpu_ms_median": round(float(np.median(cpu)), 3) if cpu.size else None,
                "cpu_s_total": round(self.cpu_total_s, 6),
                "last_error": self.last_error,
            }


# The large per-frame data a frame carries; the pipeline releases each once no later stage reads it. The bracket
# (an N x H x W x 3 stack, 19 MB at 1080p with 3 exposures) is read by the align and merge stages only: held to the
# last stage it kept every frame after the merge 19 MB heavier (1080p30 bench: live arrays 221 -> 189 MB median).
RELEASABLE_FIELDS = ("bracket", "aligned", "radiance", "sdr", "light", "backlight", "lcd")


class Stage:
    """A named step: ``fn(ctx) -> ctx`` (or None to drop the frame on purpose); optional ``close()``.

    ``fn.reads``, when present, names the ``FrameContext`` fields the step reads (of
    ``RELEASABLE_FIELDS``, the captured ``bracket`` included); a step without it is taken
    to read them all. The pipeline drops a field from a frame as soon as no later step
    reads it, so a 1080p frame in flight does not hold its 25 MB radiance through the
    bridge and output queues, nor its 19 MB bracket past the merge: a step that declares
    ``reads`` and uses ``ctx.bracket`` must name it.
    """

    def __init__(self, name: str, fn: Callable[[FrameContext], FrameContext | None], *,
                 queue_size: int = 2, concurrent: bool = False, kernels: bool = True) -> None:
        self.name = name
        self.fn = fn
        # False: ``fn`` launches no numba parallel kernel, so it need not take turns with the stages that do where
        # numba's threading layer is not thread-safe (``edgehdr.kernellock``): the bridge, the outputs.
        self.kernels = kernels
        # Runs beside the previous stage on the same frame (module docstring): it must not read what that stage
        # writes, nor write what it reads. Its queue only carries the frames the previous stage passes it.
        self.concurrent = concurrent
        self.queue: queue.Queue[FrameContext | _Stop] = queue.Queue(maxsize=queue_size)
        self.stats = StageStats(name)
        self.thread: threading.Thread | None = None

    def close(self) -> None:
        closer = getattr(self.fn, "close", None)
        if callable(closer):
            closer()


class Pipeline:
    """Runs a bracket source through stages on threads (see the module docstring).

    Parameters
    ----------
    source : BracketSource
    stages : list of Stage
    read_timeout_s : float
        A read that takes longer is a stall.
    stalls_before_restart : int
        Consecutive stalls (or one error) after which the source is reopened.
    max_backoff_s : float
        Cap of the exponential restart backoff.
    keep : iterable of str
        Frame fields held to the end of the pipeline (e.g. the demo's last frame).
    kernel_threads : int or None
        numba threads of each stage's parallel kernels; 0 or None: all of numba's (one per core).
    trim_interval_s : float
        The capture thread hands the allocator's free memory back to the OS this often, between frames
        (``edgehdr.warmup.trim_heap``); 0 never.
    """

    def __init__(self, source: BracketSource, stages: list[Stage], *, read_timeout_s: float = 1.0,
                 stalls_before_restart: int = 2, max_backoff_s: float = 5.0, keep: Iterable[str] = (),
                 kernel_threads: int | None = 0, trim_interval_s: float = 10.0) -> None:
        self.source = source
        self.trim_interval_s = trim_interval_s
        for i, st in enumerate(stages):
            if st.concurrent and (i == 0 or stages[i - 1].concurrent):
                raise ValueError(f"stage {st.name}: a concurrent stage runs beside the stage before it, which must "
                                 "be an ordinary stage")
        # A concurrent stage's outcome per frame, back to the stage before it: the frame it returned (None when
        # dropped on purpose) and whether it failed.
        self._joined: dict[int, queue.SimpleQueue[tuple[FrameContext | None, bool]]] = {
            i: queue.SimpleQueue() for i, st in enumerate(stages) if st.concurrent}
        self._both_failed = 0  # frames both stages of a concurrent pair failed on: one frame, two stage errors
        self._completed = 0  # frames through the last step (a concurrent pair at the end: once both passed it)
        # Fields to release after stage i: those no later stage reads, less ``keep`` (e.g. the demo's last frame).
        self._release: list[tuple[str, ...]] = []
        for i in range(len(stages)):
            later: set[str] = set(keep)
            for st in stages[i + 1:]:
                later |= set(getattr(st.fn, "reads", RELEASABLE_FIELDS))
            self._release.append(tuple(f for f in RELEASABLE_FIELDS if f not in later))
        # Each stage thread (and the capture thread) runs numba's parallel kernels on this many threads (0 or None:
        # all of numba's, one per core). All cores, although the stages already run side by side: 1080p30 on 2
        # cores, 60 s runs alternating, capture-to-zones p50 25.6-25.8 / p99 36.1-36.5 ms and peak RSS 321-342 MB
        # against 34.6-41.4 / 53.5-61.6 ms and 416-440 MB with one thread per stage, CPU 147-149 % against
        # 142-152 %; 720p60 p99 18.9 against 27.2 ms. A frame's critical path (align, merge, dimming) runs on
        # both cores while the other stages wait for frames; saturated (1080p at 60 fps asked), it delivered
        # 27.5 against 28.3 fps.
        if kernel_threads is not None and kernel_threads < 0:
            raise ValueError(f"kernel_threads must be >= 0 (0: all cores), got {kernel_threads}")
        self.kernel_threads = kernel_threads
        self.stages = stages
        self.read_timeout_s = read_timeout_s
        self.stalls_before_restart = stalls_before_restart
        self.max_backoff_s = max_backoff_s
        self.capture = StageStats("capture")
        self._source_skipped = 0  # the source's frames_skipped already counted in capture.dropped
        self.source_restarts = 0
        self.source_stalls = 0
        self._stop = threading.Event()
        self._capture_thread: threading.Thread | None = None
        self._next_id = 0
        self._started: float | None = None
        # capture -> zones sent, seconds: the last 8192 frames (over 2 min at 60 fps; enough samples for a p99.9)
        self._latency: deque[float] = deque(maxlen=8192)
        self._lat_lock = threading.Lock()
        self._latency_count = 0  # cumulative, beside the window: a Prometheus summary's _count and _sum
        self._latency_sum_s = 0.0
        self.last_context: FrameContext | None = None
        self.exhausted = False

    # ------------------------------------------------------------------------------------------ control

    def start(self) -> Pipeline:
        self._started = time.monotonic()
        kernels_serialised()  # numba's threading layer, found here before the threads start (edgehdr.kernellock)
        self.source.open()
        for i, stage in enumerate(self.stages):
            stage.thread = threading.Thread(target=self._worker, args=(i,), name=f"stage:{stage.name}", daemon=True)
            stage.thread.start()
        self._capture_thread = threading.Thread(target=self._capture_loop, name="capture", daemon=True)
        self._capture_thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> dict[str, Any]:
        """Stop capturing, drain queued frames through every stage, close everything; return final stats."""
        self._stop.set()
        if self._capture_thread is not None:
            self._capture_thread.join(timeout_s)
        deadline = time.monotonic() + timeout_s
        for stage in self.stages:
            if stage.thread is not None:
                stage.thread.join(max(0.1, deadline - time.monotonic()))
        for stage in self.stages:
            try:
                stage.close()
            except Exception as exc:  # noqa: BLE001 - a failing close must not stop the others
                log.error("stage %s: close failed: %s", stage.name, exc)
        try:
            self.source.close()
        except Exception as exc:  # noqa: BLE001
            log.error("source close failed: %s", exc)
        return self.stats()

    @property
    def finished(self) -> bool:
        """A finite source ran out and every stage has drained."""
        return self.exhausted and all(s.thread is not None and not s.thread.is_alive() for s in self.stages)

    @property
    def running(self) -> bool:
        return self._capture_thread is not None and self._capture_thread.is_alive()

    def reset_latency_window(self, frames: int | None = None) -> None:
        """Forget the capture-to-zones latencies and every stage's latency window so far (a benchmark starts its
        window after warm-up: the stages' medians and p99 included warm-up calls); ``frames``: the windows' new
        length, so that they hold a whole measured run (by default the stages keep their last 600 calls and the
        capture-to-zones figures their last 8192 frames)."""
        with self._lat_lock:
            self._latency = deque(maxlen=max(int(frames), 1) if frames is not None else self._latency.maxlen)
        for stats in [self.capture] + [s.stats for s in self.stages]:
            stats.reset_window(frames)

    def failing_from_start(self, frames: int) -> str | None:
        """The first error, when at least ``frames`` frames failed in a stage and none ever completed.

        A configuration that cannot work (a layout for another frame size, a bracket
        the merge refuses) fails every frame; the daemon stops on this instead of
        running on silently.
        """
        if not self.stages or self.stages[-1].stats.processed:
            return None
        if self.capture.errors >= frames and not self.capture.processed:
            return f"source {self.source.name}: {self.capture.first_error}"
        for stage in self.stages:
            if stage.stats.errors >= frames:
                return f"stage {stage.name}: {stage.stats.first_error}"
        return None

    def healthy(self, within_s: float = 2.0) -> bool:
        """True when the last stage finished a frame within ``within_s`` seconds."""
        last = self.stages[-1].stats._times
        return bool(last) and time.monotonic() - last[-1] < within_s

    # ------------------------------------------------------------------------------------------ threads

    def _offer(self, index: int, item: FrameContext) -> None:
        q = self.stages[index].queue
        while True:
            try:
                q.put_nowait(item)
                return
            except queue.Full:
                try:
                    q.get_nowait()  # latest wins: the oldest waiting frame goes
                    self.stages[index].stats.drop()
                except queue.Empty:
                    pass

    def _limit_kernel_threads(self) -> None:
        """numba's threads for this thread's parallel kernels (``kernel_threads``; 0 or None: all of numba's)."""
        import numba

        limit = numba.config.NUMBA_NUM_THREADS  # type: ignore[attr-defined]
        numba.set_num_threads(max(1, min(self.kernel_threads or limit, limit)))

    def _capture_loop(self) -> None:
        from edgehdr.warmup import trim_heap

        self._limit_kernel_threads()  # a synthetic or replay source runs kernels on this thread too
        failures = 0
        backoff = 0.1
        # The first trim soon after the start: for about 3 s the stages are slower (1080p30, per frame: merge 20-60
        # against 9 ms later, while the exposure planner converges), frames wait in the queues with their buffers,
        # and tens of MB stay free in the allocator afterwards (RSS 440 MB at 0.5 s, 387 MB at 2 s untrimmed).
        next_trim = time.monotonic() + min(2.0, self.trim_interval_s)
        while not self._stop.is_set():
            if self.trim_interval_s and time.monotonic() >= next_trim:
                trim_heap()
                next_trim = time.monotonic() + self.trim_interval_s
            t0 = time.perf_counter()
            c0 = time.thread_time()
            try:
                bracket = self.source.read_bracket(self.read_timeout_s)
            except SourceExhausted as exc:
                log.info("source %s finished: %s", self.source.name, exc)
                self.exhausted = True
                break
            except SourceTimeout as exc:
                self.source_stalls += 1
                failures += 1
                self.capture.error(f"stall: {exc}")
                log.warning("source %s stalled (%s)", self.source.name, exc)
                if failures >= self.stalls_before_restart:
                    backoff = self._restart_source(backoff)
                    failures = 0  # a fresh source gets its own stalls_before_restart (its first frame may be slow)
                continue
            except BracketFault as exc:  # one bad bracket (a damaged recorded file): dropped and counted, no restart
                self.capture.error(f"bracket dropped: {exc}")
                self.capture.drop()  # a capture slot lost, as the frames_skipped and drop_fraction figures count
                log.error("source %s: bracket dropped: %s", self.source.name, exc)
                continue
            except Exception as exc:  # noqa: BLE001 - any device failure: restart, never die
                failures += 1
                self.capture.error(f"{type(exc).__name__}: {exc}")
                log.error("source %s failed: %s", self.source.name, exc)
                backoff = self._restart_source(backoff)
                failures = 0
                continue
            failures = 0
            backoff = 0.1
            self.capture.record(time.perf_counter() - t0, time.thread_time() - c0)
            # Capture slots the source let pass (the synthetic camera waiting for a bracket buffer the stages still
            # held): frames lost before the first stage, counted as the capture's drops.
            skipped = getattr(self.source, "frames_skipped", 0)
            if skipped > self._source_skipped:
                self.capture.drop(skipped - self._source_skipped)
            self._source_skipped = skipped
            self._next_id += 1
            captured = int(np.max(bracket.timestamp_ns)) if bracket.timestamp_ns is not None else time.monotonic_ns()
            self._offer(0, FrameContext(frame_id=self._next_id, bracket=bracket,
                                        captured_ns=captured or time.monotonic_ns()))
            # Not held here during the next read: a source may reuse a bracket's memory once the stages let go of
            # it (the synthetic camera does).
            del bracket
        self._offer_stop(0)

    def _offer_stop(self, index: int) -> None:
        # The stop marker must not be dropped: wait for room (the stage keeps draining).
        while True:
            try:
                self.stages[index].queue.put(_STOP, timeout=0.5)
                return
            except queue.Full:
                thread = self.stages[index].thread
                if thread is None or not thread.is_alive():
                    return

    def _restart_source(self, backoff: float) -> float:
        self.source_restarts += 1
        try:
            self.source.close()
        except Exception:  # noqa: BLE001
            pass
        if self._stop.wait(backoff):
            return backoff
        try:
            self.source.open()
            log.info("source %s reopened", self.source.name)
        except Exception as exc:  # noqa: BLE001
            self.capture.error(f"reopen failed: {exc}")
            log.error("source %s: reopen failed: %s", self.source.name, exc)
        return min(backoff * 2, self.max_backoff_s)

    @staticmethod
    def _stage_failed(stage: Stage, item: FrameContext, reason: str) -> None:
        """A stage failed on a frame: counted in its errors and logged; the frame is dropped."""
        stage.stats.error(f"frame {item.frame_id}: {reason}")
        log.error("stage %s dropped frame %d: %s", stage.name, item.frame_id, reason)

    def _run_stage(self, stage: Stage, item: FrameContext) -> tuple[FrameContext | None, bool]:
        """One stage on one frame, timed and counted: what it returned (None: dropped on purpose) and whether it
        failed (raised; then counted in its errors)."""
        t0 = time.perf_counter()
        c0 = time.thread_time()
        try:
            # A no-op unless numba's threading layer is not thread-safe (edgehdr.kernellock).
            lock = kernel_lock() if stage.kernels else contextlib.nullcontext()
            with lock:
                out = stage.fn(item)
        except Exception as exc:  # noqa: BLE001 - one bad frame must not stop the daemon
            self._stage_failed(stage, item, f"{type(exc).__name__}: {exc}")
            return None, True
        dt = time.perf_counter() - t0
        stage.stats.record(dt, time.thread_time() - c0)
        if out is not None:
            out.stage_ms[stage.name] = dt * 1e3
        return out, False

    def _concurrent_worker(self, index: int) -> None:
        # The thread of a concurrent stage: frames come from the stage before it, the outcome goes back to it,
        # always (the stage before waits for it): anything that goes wrong counts as this stage failing the frame.
        stage = self.stages[index]
        self._limit_kernel_threads()
        item: FrameContext | _Stop | None = None
        outcome: tuple[FrameContext | None, bool] = (None, True)
        while True:
            item, outcome = None, (None, True)  # nothing of the last frame held while waiting
            item = stage.queue.get()
            if isinstance(item, _Stop):
                return
            try:
                outcome = self._run_stage(stage, item)
                if outcome[0] is not None and outcome[0] is not item:
                    self._stage_failed(stage, item, "a concurrent stage must return the frame it was given")
                    outcome = (None, True)
            except Exception as exc:  # noqa: BLE001 - e.g. a stage returning something that is not a frame
                self._stage_failed(stage, item, f"{type(exc).__name__}: {exc}")
            finally:
                self._joined[index].put(outcome)

    def _worker(self, index: int) -> None:
        stage = self.stages[index]
        if stage.concurrent:
            self._concurrent_worker(index)
            return
        partner = index + 1 if index + 1 < len(self.stages) and self.stages[index + 1].concurrent else None
        end = index if partner is None else partner  # the last stage of this step
        last = end == len(self.stages) - 1
        release = self._release[end]
        self._limit_kernel_threads()
        item: FrameContext | _Stop | None = None
        out: FrameContext | None = None
        while True:
            item = out = None  # nothing of the last frame held while waiting (its buffers go back to their pools)
            item = stage.queue.get()
            if isinstance(item, _Stop):
                if partner is not None:
                    self.stages[partner].queue.put(_STOP)
                if not last:
                    self._offer_stop(end + 1)
                return
            if partner is not None:  # its queue is empty: it finished the previous frame before this one came
                self.stages[partner].queue.put(item)
            out, failed = self._run_stage(stage, item)
            dropper = stage if out is None and not failed else None  # a stage that returned None on purpose
            if partner is not None:  # the frame goes on only when both stages passed it
                partner_out, partner_failed = self._joined[partner].get()
                if failed and partner_failed:
                    with self._lat_lock:
                        self._both_failed += 1
                if partner_out is None and not partner_failed and dropper is None:
                    dropper = self.stages[partner]
                if failed or partner_failed:
                    dropper = None  # counted as failed, not also as dropped
                if partner_out is not out:
                    out = None
            if dropper is not None:  # dropped on purpose: counted once a frame, so every captured frame is counted
                dropper.stats.drop()
            if out is None:
                # A frame that failed or was dropped goes no further: its buffers go back now, not when the next
                # frame arrives (a failed frame held the synthetic camera's only bracket buffer, which stalled the
                # source into a restart).
                for name in RELEASABLE_FIELDS:
                    setattr(item, name, None)
                continue
            for name in release:
                setattr(out, name, None)
            if out.zones_sent_ns is not None and self.stages[end].name == "bridge":
                with self._lat_lock:
                    seconds = (out.zones_sent_ns - out.captured_ns) / 1e9
                    self._latency.append(seconds)
                    self._latency_count += 1
                    self._latency_sum_s += seconds
            if last:
                with self._lat_lock:
                    self._completed += 1
                self.last_context = out
            else:
                self._offer(end + 1, out)

    # ------------------------------------------------------------------------------------------ stats

    def stats(self) -> dict[str, Any]:
        with self._lat_lock:
            lat = np.array(self._latency) * 1e3
            lat_count, lat_sum_s = self._latency_count, self._latency_sum_s
        stages = [self.capture.snapshot()] + [s.stats.snapshot() for s in self.stages]
        captured = self.capture.processed
        with self._lat_lock:
            finished = self._completed
        elapsed = time.monotonic() - self._started if self._started else 0.0
        return {
            "elapsed_s": round(elapsed, 2),
            "frames_captured": captured,
            "frames_completed": finished,
            "frames_dropped": self.capture.dropped + sum(s.stats.dropped for s in self.stages),
            # of those, capture slots the source let pass (never captured): completed + dropped + failed ==
            # captured + skipped once the queues are drained
            "frames_skipped": self.capture.dropped,
            "frames_failed": sum(s.stats.errors for s in self.stages) - self._both_failed,
            # Over the frames the source offered: captured ones and capture slots it let pass (counted as the
            # capture's drops, never captured), so a source that skips slots cannot hide its losses.
            "drop_fraction": (round(1.0 - finished / (captured + self.capture.dropped), 4)
                              if captured + self.capture.dropped else 0.0),
            "fps": round(finished / elapsed, 2) if elapsed > 0 else 0.0,
            "source_stalls": self.source_stalls,
            "source_restarts": self.source_restarts,
            # a source with a fixed number of buffers (the synthetic camera's [source] buffers): reads that waited
            # for the stages to release one, and for how long in all
            "source_buffer_waits": getattr(self.source, "buffer_waits", 0),
            "source_buffer_wait_s": round(getattr(self.source, "buffer_wait_s", 0.0), 3),
            "capture_to_zones_ms_median": round(float(np.median(lat)), 2) if lat.size else None,
            "capture_to_zones_ms_p99": round(float(np.percentile(lat, 99)), 2) if lat.size else None,
            "capture_to_zones_ms_p999": round(float(np.percentile(lat, 99.9)), 2) if lat.size else None,
            "capture_to_zones_count": lat_count,
            "capture_to_zones_s_total": round(lat_sum_s, 6),
            "stages": stages,
        }
