"""Live synthetic camera: a procedural scene as a bracket stream, cheap enough never to be the bottleneck.

What is expensive is done once: the scene's background is rendered and stored as
log2 radiance in 8.8 fixed point (int16), sprites likewise. A frame at any
exposure is then one pass: ``code = LUT[log2 L + log2(t g k)]``, the LUT holding
the camera response, clipping and quantisation; a precomputed dither stands in
for sensor noise. Moving sprites are pasted per frame, a slow illumination
change scales the scene (``k``), hand shake shifts the crop window. Rolling
(``mode="rolling"``: one new frame per read, exposures cycling, output at capture
rate) and burst brackets (all frames per read) are both supported. The exact
camera model of ``edgehdr.synth`` stays the ground truth for accuracy tests.
"""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import numba
import numpy as np

from edgehdr import kernelcache  # noqa: F401 - before the kernels below: it names their numba cache files
from edgehdr.bracket import Bracket
from edgehdr.camera.base import BracketSource, ExposurePlan, PendingPlan, SourceTimeout
from edgehdr.hdr.crf import CameraResponse, ResponseCurve
from edgehdr.kernellock import kernel_lock
from edgehdr.pipeline.buffers import unshared, wait_until
from edgehdr.synth.scenes import make_scene

__all__ = ["SyntheticCamera"]

_Q = 256  # fixed point: 1/256 stop
_LOG_MIN = -40.0  # stops; LUT covers log2(L t) in [_LOG_MIN, 0] (clipped above)
# The kernels read a LUT padded by this many entries on both sides with its end codes, so that no index a frame
# forms (an int16 log radiance, plus the exposure's offset, plus the dither) falls outside it. The offset is
# clamped to the range where that holds (SyntheticCamera._padded_offset); beyond it every index already lies in
# one padding, so the clamp changes no code.
_LUT_PAD = 1 << 17


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _expose(log_q: np.ndarray, y0: int, x0: int, offset_q: int | np.integer, lut: np.ndarray, dither: np.ndarray,
            dither_y: int, dither_x: int, out: np.ndarray) -> np.ndarray:
    # ``dither`` is a (dh, >= w + dither_x) tile repeated along x: the pixel (y, x) reads
    # row (y + dither_y) % dh, column x + dither_x, contiguous (a per-pixel modulo cost
    # 60 % of the frame). ``lut`` is the padded table (SyntheticCamera._padded_offset): every
    # index the frame can form lies inside it, so no clamp per value (this loop alone, 1080p on one
    # core: 3.5 against 4.2 ms with the clamp to the unpadded table, codes identical).
    h, w, _ = out.shape
    dh = dither.shape[0]
    for y in numba.prange(h):
        src = log_q[y0 + y, x0:x0 + w]
        drow = dither[(y + dither_y) % dh, dither_x:dither_x + w]
        orow = out[y]
        for x in range(w):
            base = offset_q + drow[x]
            for c in range(3):
                orow[x, c] = lut[np.int32(src[x, c]) + base]
    return out


@numba.njit(fastmath=True, cache=True, nogil=True)
def _paste(log_q: np.ndarray, mask: np.ndarray, sy: int, sx: int, offset_q: int | np.integer, lut: np.ndarray,
           out: np.ndarray) -> None:
    # A sprite (log radiance, mask) with its top-left corner at (sy, sx), clipped to the frame: one pass
    # (the NumPy version, a clipped copy, an int32 patch, a clip, a LUT gather and a masked copy, took
    # 1.5 ms of the 1080p frame's 4.1). ``lut`` and ``offset_q`` as _expose's (padded, no clamp).
    h, w = mask.shape
    for y in range(max(sy, 0), min(sy + h, out.shape[0])):
        src, keep, orow = log_q[y - sy], mask[y - sy], out[y]
        for x in range(max(sx, 0), min(sx + w, out.shape[1])):
            if keep[x - sx]:
                for c in range(3):
                    orow[x, c] = lut[np.int32(src[x - sx, c]) + offset_q]


class SyntheticCamera(BracketSource):
    """A synthetic scene streamed as brackets at a target frame rate.

    Parameters
    ----------
    width, height : int
    fps : float
        Capture rate (frames per second); 0 = as fast as possible.
    plan : ExposurePlan, optional
        Initial exposures; default three frames 2 stops apart around the scene.
    mode : {'rolling', 'burst'}
        Rolling: each read returns a bracket after one new capture (output at capture
        rate); burst: each read captures a whole bracket.
    seed, kind, moving_objects, object_speed_px : scene parameters (``edgehdr.synth``).
    illumination_stops, illumination_period_s : float
        The scene's light swings by +-stops with this period (0 disables).
    shake_px : int
        Hand-shake amplitude in whole pixels.
    response : str
        Camera response curve.
    max_stacks : int, optional
        Bracket stacks in flight at most, as a camera driver's fixed buffer count: when the
        pipeline holds every one (a hiccup downstream), the read waits for one to be released
        (counted in ``buffer_waits`` and ``buffer_wait_s``; the slots the sensor passed meanwhile
        in ``frames_skipped``) instead of allocating another 19 MB stack at 1080p. None: a new
        stack whenever all are held (a caller collecting brackets in a list).
    """

    name = "synthetic"
    bits = 8

    def __init__(self, width: int = 1920, height: int = 1080, *, fps: float = 30.0, plan: ExposurePlan | None = None,
                 mode: str = "rolling", seed: int = 0, kind: str | None = "outdoor", moving_objects: int = 2,
                 object_speed_px: float | None = None, illumination_stops: float = 0.5,
                 illumination_period_s: float = 8.0, shake_px: int = 0, response: str = "srgb",
                 noise_codes: float = 1.0, max_stacks: int | None = None) -> None:
        if mode not in ("rolling", "burst"):
            raise ValueError(f"mode must be 'rolling' or 'burst', got {mode!r}")
        if max_stacks is not None and max_stacks < 1:
            raise ValueError(f"max_stacks must be >= 1 or None, got {max_stacks}")
        self.width, self.height, self.fps, self.mode = int(width), int(height), float(fps), mode
        self.seed, self.kind, self.moving_objects = seed, kind, moving_objects
        self.object_speed_px = object_speed_px if object_speed_px is not None else 0.006 * width
        self.illumination_stops, self.illumination_period_s = illumination_stops, illumination_period_s
        self.shake_px = int(shake_px)
        self.curve = ResponseCurve.parse(response)
        self.response = CameraResponse.from_curve(self.curve, 8)
        self.noise_codes = noise_codes
        self._plan = plan
        self._lock = threading.Lock()  # held by read_bracket for a whole read (its wait for the slot included)
        # set_plan only leaves the plan here (a lock held for microseconds): the next read adopts it. Waiting for
        # self._lock instead blocked the merge stage for up to a frame period and a capture every plan update
        # (the p99 of 720p60's capture-to-zones latency, measured).
        self._pending_plan = PendingPlan()
        self._opened = False
        self.frames_captured = 0
        self.stacks_allocated = self.stacks_reused = 0  # bracket stacks: new, or a pooled one reused
        self.frames_copied = 0  # retained frames copied into a reused or new stack
        self.stack_pool_size = 4  # bracket stacks kept for reuse (frames in flight between capture and merge)
        # A free stack not handed out for this many reads is let go, as BufferPool's idle_takes (900: 30 s at
        # 30 fps): a hiccup's extra stacks do not stay for the whole run.
        self.stack_idle_reads = 900
        self.stacks_released = 0
        self.max_stacks = max_stacks
        self.buffer_waits = 0  # reads that waited for the pipeline to release a stack (all max_stacks held)
        self.buffer_wait_s = 0.0
        self.frames_skipped = 0  # capture slots passed without a capture (a read more than a period late)
        self._slots_passed = 0.0  # the same, unrounded: the schedule moves by fractions of a slot

    # ------------------------------------------------------------------------------------------ set-up

    def open(self) -> None:
        if self._opened:
            return
        scene = make_scene(self.seed, self.height, self.width, kind=self.kind, moving_objects=self.moving_objects,
                           object_speed_px=self.object_speed_px)
        m = scene.margin  # the scene itself is not kept: its full-size layers are only needed here
        self._margin = min(m, max(self.shake_px, 0))
        bg = scene.background
        pad = self._margin
        crop = bg[m - pad : m + self.height + pad, m - pad : m + self.width + pad]
        self._log_bg = self._to_log_q(crop)
        self._sprites = [(s, self._to_log_q(s.radiance), np.ascontiguousarray(s.alpha > 0.5)) for s in scene.sprites]
        # LUT: index i <-> log2(L t g k) = _LOG_MIN + i / _Q; code = round(255 f(clip(2^v))).
        v = _LOG_MIN + np.arange(int(-_LOG_MIN * _Q) + 1) / _Q
        self._lut = np.rint(self.curve.forward(np.minimum(np.exp2(v), 1.0)) * 255).astype(np.uint8)
        self._lut_padded = np.concatenate([np.full(_LUT_PAD, self._lut[0], np.uint8), self._lut,
                                           np.full(_LUT_PAD, self._lut[-1], np.uint8)])
        rng = np.random.default_rng(self.seed + 1)
        # Dither in log units, stronger in the dark (shot noise ~ 1/sqrt(signal)); a tile reused with offsets.
        tiles = [np.rint(rng.standard_normal((64, 64)) * self.noise_codes * 4).astype(np.int32) for _ in range(4)]
        self._dither_max = max(int(np.abs(t).max()) for t in tiles)
        if self._dither_max >= 1 << 15:  # _padded_offset's bound needs 2 |dither| below _LUT_PAD - 2^16 + 1
            raise ValueError(f"noise_codes={self.noise_codes} makes a dither of {self._dither_max} (1/{_Q} stops); "
                             f"keep it below {(1 << 15) // (4 * 6)}")
        # Each tile repeated along x to the frame width plus one tile, so a shifted tile is a slice.
        reps = -(-(self.width + 64) // 64)
        self._dithers = [np.ascontiguousarray(np.tile(t, (1, reps))) for t in tiles]
        pending = self._pending_plan.take()  # a plan set before open() sizes the buffers
        if pending is not None:
            self._plan = pending
        if self._plan is None:
            from edgehdr.synth import suggest_exposures

            self._plan = ExposurePlan.of(suggest_exposures(scene.radiance, 3, 2.0))
        self._latest: np.ndarray | None = None  # the last bracket's frames (None: none retained)
        self._pool: list[np.ndarray] = []  # bracket stacks kept for reuse, and the frame each slot holds
        self._pool_frames: list[list[int]] = []
        self._pool_last_read: list[int] = []  # the read (self._reads) that last took each pooled stack
        self._reads = 0
        self._slot_frames = [-1] * len(self._plan)  # the newest frame (capture count) of each exposure slot
        self._latest_frames: list[int] = []  # the frame each slot of the stack being filled holds
        self._exposures: list[tuple[float, float, int] | None] = [None] * len(self._plan)
        self._next_index = 0
        self._t0 = time.monotonic()
        self._next_capture = self._t0
        self._opened = True

    @staticmethod
    def _to_log_q(radiance: np.ndarray) -> np.ndarray:
        log2 = np.log2(np.maximum(radiance, 1e-12))
        return np.clip(np.rint((log2 - _LOG_MIN) * _Q), -32768, 32767).astype(np.int16)

    def _padded_offset(self, offset_q: int) -> int:
        """``offset_q`` as an offset into the padded LUT, clamped to where every index stays inside it.

        An index is ``log_q + offset + dither`` with ``log_q`` an int16 and ``|dither| <= D``: inside
        ``[-_LUT_PAD, top + _LUT_PAD]`` for every pixel when the offset lies in ``[2^15 + D - _LUT_PAD,
        top + _LUT_PAD - 2^15 + 1 - D]``. Below that range every index of the frame is negative (code 0's
        padding) and stays so at its lower end, since ``2^15 - 1 + 2^15 + 2 D - _LUT_PAD < 0``; above it
        likewise every index exceeds ``top``. So the clamp changes no code.
        """
        d = self._dither_max
        top = self._lut.shape[0] - 1
        return min(max(offset_q, (1 << 15) + d - _LUT_PAD), top + _LUT_PAD - (1 << 15) + 1 - d) + _LUT_PAD

    def close(self) -> None:
        self._opened = False

    @property
    def plan(self) -> ExposurePlan | None:
        """The plan of the next bracket: the last one set, adopted or not yet."""
        pending = self._pending_plan.peek()
        return pending if pending is not None else self._plan

    def set_plan(self, plan: ExposurePlan) -> None:
        """Use ``plan`` from the next read on; returns at once, also while a read is in progress."""
        self._pending_plan.put(plan)

    def _adopt_pending_plan(self) -> None:
        # Under self._lock, at the start of a read.
        plan = self._pending_plan.take()
        if plan is None:
            return
        if self._plan is None or len(plan) != len(self._plan):
            self._latest = None
            self._slot_frames = [-1] * len(plan)
            self._exposures = [None] * len(plan)
            self._next_index = 0
        self._plan = plan

    def illumination(self, t_s: float) -> float:
        if not self.illumination_period_s or not self.illumination_stops:
            return 1.0
        return 2.0 ** (self.illumination_stops * math.sin(2 * math.pi * t_s / self.illumination_period_s))

    # ------------------------------------------------------------------------------------------ capture

    def capture(self, exposure_s: float, gain: float, t_s: float, out: np.ndarray | None = None) -> np.ndarray:
        """One frame (H, W, 3) uint8 at time ``t_s`` (seconds since the first read), into ``out`` if given."""
        k = exposure_s * gain * self.illumination(t_s)
        lut_offset = self._padded_offset(int(round(math.log2(k) * _Q)))
        n = self.frames_captured
        rng_shift = (n * 7919) % 997
        dy = dx = self._margin
        if self.shake_px:
            dy = self._margin + int(round(self.shake_px * math.sin(0.9 * t_s + 1.3)))
            dx = self._margin + int(round(self.shake_px * math.sin(1.3 * t_s)))
        if out is None:
            out = np.empty((self.height, self.width, 3), np.uint8)
        # The tile rolled by (rng_shift % 64, (rng_shift // 64) % 64) rows and columns.
        dither = self._dithers[n % len(self._dithers)]
        with kernel_lock():  # it runs on the capture thread, beside the stages (edgehdr.kernellock)
            _expose(self._log_bg, dy, dx, np.int32(lut_offset), self._lut_padded, dither, -(rng_shift % 64) % 64,
                    -((rng_shift // 64) % 64) % 64, out)
        frame_time = t_s * (self.fps or 30.0)
        for sprite, log_q, mask in self._sprites:
            sx, sy = sprite.position(frame_time)
            # The background is read at (y + dy, x + dx) of the margin-padded scene, so its content moves by
            # -(dy - margin, dx - margin) in the frame; a sprite at rest in the scene moves with it.
            sx -= dx - self._margin
            sy -= dy - self._margin
            _paste(log_q, mask, int(sy), int(sx), np.int32(lut_offset), self._lut_padded, out)
        self.frames_captured += 1
        return out

    def _sleep_until_slot(self, timeout_s: float) -> None:
        """Sleep until the next frame's capture time, when one is set and due within ``timeout_s`` (the slot's own
        accounting, skipped slots and the time-out, stays with ``_wait_for_slot``)."""
        if self.fps and self._reads > 0:
            delay = self._next_capture - time.monotonic()
            if 0 < delay <= timeout_s:
                time.sleep(delay)

    def _wait_for_slot(self, timeout_s: float) -> float:
        now = time.monotonic()
        if self._reads == 0:
            # The scene's clock (its light swing, its moving objects) starts with the stream, not at open(): the
            # daemon opens the camera before the kernels load, and a first run's 11 s of compiling had put its
            # frames at another phase of the light than every later run's (the demo's last frame 3 s into the
            # swing, or 15 s).
            self._t0 = now
        if self.fps:
            if self._reads == 0:  # the first read after open(): the stream starts now, nothing was passed yet
                self._next_capture = max(self._next_capture, now)
            delay = self._next_capture - now
            if delay > timeout_s:
                raise SourceTimeout(f"{self.name}: next frame due in {delay:.3f} s, after the timeout")
            if delay > 0:
                time.sleep(delay)
            period = 1.0 / self.fps
            scheduled = self._next_capture + period
            caught_up = time.monotonic() - period  # a late read may catch up one period, not more
            if caught_up > scheduled:
                # counted unrounded and rounded once: rounding each read's fraction of a slot lost or added one
                # in every few reads of a pipeline slower than the camera (40 reads 1.5 slots apart: 79 slots
                # captured or skipped where 63 had passed)
                self._slots_passed += (caught_up - scheduled) * self.fps
                self.frames_skipped = int(self._slots_passed + 0.5)
            self._next_capture = max(scheduled, caught_up)
        return time.monotonic() - self._t0

    def _wait_for_stack(self, timeout_s: float) -> None:
        """With ``max_stacks`` stacks all held downstream, wait (polling) until the pipeline releases one."""
        limit = self.max_stacks
        if limit is None:
            return

        def none_free() -> bool:
            if len(self._pool) < limit:
                return False
            # A free stack of another shape counts: it is let go and a new one allocated. self._latest is the
            # camera's own reference to the last bracket's stack, which it drops before reusing it.
            for j in range(len(self._pool)):
                if unshared(self._pool[j], int(self._pool[j] is self._latest)):
                    return False
            return True

        if not none_free():
            return
        self.buffer_waits += 1
        released, waited = wait_until(lambda: not none_free(), timeout_s)
        self.buffer_wait_s += waited
        if not released:
            raise SourceTimeout(f"{self.name}: all {limit} bracket buffers held downstream for {timeout_s:g} s")

    def _pool_index(self, stack: np.ndarray | None) -> int:
        for j in range(len(self._pool)):
            if self._pool[j] is stack:
                return j
        return -1

    def _stack_for(self, shape: tuple[int, ...], keep: list[int]) -> np.ndarray:
        """A stack for the next bracket whose slots ``keep`` hold the newest frames of their exposures.

        A pooled stack is reused when nothing outside the camera holds it or a view of it (``unshared``): the
        pipeline let go of that bracket. Of those, the one whose slots already hold the most of the newest frames
        is taken (the last bracket's own stack when free: only the new capture is written); the other kept slots
        are copied in from the last bracket's stack, which is only read. With none free, a new stack, kept while
        the pool has room. A bracket still in use is never written to. Reusing only the last bracket's stack, and
        allocating a fresh one with two frames copied in whenever the pipeline still held it, reused 0 of 451
        stacks at 1080p30 with one kernel thread per stage; with the pool, RSS at 1080p30 settles 30-50 MB lower
        (README, issue 16 figures).
        """
        source = self._latest  # the last bracket's stack: read only
        self._latest = None
        self._reads += 1
        for j in reversed(range(len(self._pool))):  # of another frame count or size, or free and idle: let go
            idle = self._reads - self._pool_last_read[j] > self.stack_idle_reads and self._pool[j] is not source
            if self._pool[j].shape != shape or (idle and unshared(self._pool[j])):
                del self._pool[j], self._pool_frames[j], self._pool_last_read[j]
                self.stacks_released += 1
        source_j = self._pool_index(source)
        if source_j >= 0 or (source is not None and source.shape != shape):
            source = None  # a pooled one is read through the pool: a local reference would count as a holder
        best, best_matches = -1, -1
        for j in range(len(self._pool)):
            if unshared(self._pool[j]):  # the pool's list item is its only reference
                matches = sum(self._pool_frames[j][i] == self._slot_frames[i] for i in keep)
                if matches > best_matches:
                    best, best_matches = j, matches
        if best >= 0:
            stack = self._pool[best]
            held = self._pool_frames[best]
            self._pool_last_read[best] = self._reads
            self.stacks_reused += 1
        else:
            stack = np.empty(shape, np.uint8)
            held = [-1] * shape[0]
            self.stacks_allocated += 1
            if len(self._pool) < max(self.stack_pool_size, self.max_stacks or 0):
                self._pool.append(stack)
                self._pool_frames.append(held)
                self._pool_last_read.append(self._reads)
        if source_j >= 0:
            source = self._pool[source_j]
        for i in keep:
            if held[i] != self._slot_frames[i]:
                assert source is not None  # a kept slot was captured into the last bracket's stack
                stack[i] = source[i]
                held[i] = self._slot_frames[i]
                self.frames_copied += 1
        self._latest_frames = held
        return stack

    def read_bracket(self, timeout_s: float = 1.0) -> Bracket:
        if not self._opened:
            raise SourceTimeout(f"{self.name}: not open")
        with self._lock:
            self._adopt_pending_plan()
            plan = self._plan
            if plan is None:  # open() always sets one
                raise SourceTimeout(f"{self.name}: not open")
            n = len(plan)
            shape = (n, self.height, self.width, 3)
            rolling = self.mode == "rolling" and all(i >= 0 for i in self._slot_frames) and \
                len(self._slot_frames) == n and self._latest is not None and self._latest.shape == shape
            fresh = [self._next_index] if rolling else list(range(n))
            frames: np.ndarray | None = None
            for _ in range(len(fresh)):
                if frames is None:
                    # Up to the frame's slot first: the pipeline has usually let go of a stack by then, so the
                    # wait for one rarely polls (polling from the end of the last read cost the capture thread
                    # 0.7 ms of CPU a frame at 1080p30 with one stack).
                    self._sleep_until_slot(timeout_s)
                    self._wait_for_stack(timeout_s)
                t_s = self._wait_for_slot(timeout_s)  # on a timeout the last bracket's frames stay retained
                if frames is None:
                    frames = self._stack_for(shape, keep=[i for i in range(n) if i not in fresh])
                i = self._next_index
                self.capture(plan.exposure_s[i], plan.gain[i], t_s, out=frames[i])
                self._slot_frames[i] = self.frames_captured  # capture() counted it
                self._latest_frames[i] = self.frames_captured
                self._exposures[i] = (plan.exposure_s[i], plan.gain[i], time.monotonic_ns())
                self._next_index = (i + 1) % n
            assert frames is not None  # fresh is never empty
            self._latest = frames
            # Every slot is filled: the first bracket after open() or a new frame count captures them all.
            meta = [e for e in self._exposures if e is not None]
            exposure = [e[0] for e in meta]
            gains = [e[1] for e in meta]
            stamps = [e[2] for e in meta]
            self._sequence = getattr(self, "_sequence", 0) + 1
        return Bracket(frames=frames, exposure_s=exposure, gain=gains, bits=8, timestamp_ns=stamps,
                       sequence=self._sequence, source=self.name,
                       extra={"illumination": self.illumination(time.monotonic() - self._t0)})

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "bits": 8, "size": [self.width, self.height], "fps": self.fps, "mode": self.mode,
                "seed": self.seed, "response": self.curve.name}
