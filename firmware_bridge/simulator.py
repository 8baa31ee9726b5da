"""Display-controller simulator: the firmware's behaviour in Python, on the protocol code.

Sits at the far end of a pty pair or a UDP socket and behaves as PROTOCOL.md
says a controller must: answers HELLO with CAPS (negotiating the version), CONFIG
with ACK or NACK, applies ZONES latest-wins at its vsync to a simulated backlight
(through the configured drive curve), enforces the watchdog (safe level when the
host goes quiet), sends HEARTBEATs and answers STATUS requests. It is what the
demo, the tests and the link benchmarks talk to when no board is attached.
"""

from __future__ import annotations

import collections
import logging
import math
import select
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from firmware_bridge.protocol import (
    FEATURE_PACKED_ZONES,
    FLAG_ACK_REQUEST,
    MAX_PAYLOAD,
    PROTOCOL_VERSION,
    Ack,
    Caps,
    Config,
    FrameDecoder,
    Heartbeat,
    Hello,
    MsgType,
    Nack,
    NackReason,
    ProtocolError,
    State,
    Status,
    StatusRequest,
    Zones,
    decode_message,
    encode_message,
)
from firmware_bridge.transports import Transport, TransportError, UdpControllerEndpoint

if TYPE_CHECKING:
    from firmware_bridge.protocol import Frame, Message

__all__ = ["ControllerSimulator", "UdpControllerEndpoint"]

log = logging.getLogger("edgehdr.bridge.sim")


@dataclass
class _Counters:
    frames_applied: int = 0
    frames_superseded: int = 0
    rejected: int = 0
    faults: int = 0


class ControllerSimulator:
    """A simulated LED-backlight controller on a transport.

    Parameters
    ----------
    transport : Transport
        The controller's end (``PtyPair.controller``, ``UdpControllerEndpoint``).
    rows, cols : int
        Largest zone grid the "hardware" has (reported in CAPS).
    max_bits : int
        Deepest zone values it accepts.
    vsync_hz : float
        Display refresh; zone frames are applied at vsync. 0 applies on receipt.
    version_range : (int, int)
        Protocol versions this firmware speaks.
    """

    def __init__(self, transport: Transport, *, rows: int = 48, cols: int = 48, max_bits: int = 16,
                 vsync_hz: float = 120.0, fw_version: tuple[int, int, int] = (1, 0, 0),
                 version_range: tuple[int, int] = (1, 1), packed_zones: bool = True) -> None:
        # CAPS carries rows, cols and max_bits as u8, max_fps as u16 (PROTOCOL.md); refuse what cannot be sent,
        # here rather than in the controller thread at the first HELLO.
        for name, value, lo, hi in (("rows", rows, 1, 255), ("cols", cols, 1, 255), ("max_bits", max_bits, 8, 16)):
            if not lo <= value <= hi:
                raise ValueError(f"ControllerSimulator {name}={value} out of range; allowed {lo}..{hi}")
        if not (math.isfinite(vsync_hz) and 0 <= vsync_hz < 65536):
            raise ValueError(f"ControllerSimulator vsync_hz={vsync_hz} out of range; allowed 0 (apply on receipt) "
                             "up to 65535")
        self.transport = transport
        self.rows, self.cols, self.max_bits = rows, cols, max_bits
        self.vsync_hz = vsync_hz
        self.fw_version = fw_version
        self.version_range = version_range
        self.packed_zones = packed_zones
        self.decoder = FrameDecoder(version=None)
        self.counters = _Counters()
        self.config: Config | None = None
        self.state = State.UNCONFIGURED
        self.version: int | None = None
        self.backlight_u16 = np.zeros((rows, cols), np.uint16)
        self.duty = np.zeros((rows, cols), np.float32)
        self.last_frame_id: int | None = None
        self.vsync_count = 0
        self.applied_log: collections.deque[tuple[int, int]] = collections.deque(maxlen=100_000)  # (frame_id, ns)
        self.received: collections.Counter[int] = collections.Counter()  # frames received per message type
        self._pending: Zones | None = None
        self._seq = 0
        self._start = time.monotonic()
        self._last_rx: float | None = None
        self._last_tx = 0.0
        self._last_not_configured = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # ------------------------------------------------------------------------------------------ lifecycle

    def start(self) -> ControllerSimulator:
        self.transport.open()
        self._thread = threading.Thread(target=self._run, name="controller-sim", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2.0)
            self._thread = None

    def __enter__(self) -> ControllerSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def status(self) -> Status:
        return Status(frames_applied=self.counters.frames_applied, frames_superseded=self.counters.frames_superseded,
                      crc_errors=self.decoder.crc_errors, framing_errors=self.decoder.framing_errors,
                      rejected=self.counters.rejected + self.decoder.rejected,
                      last_frame_id=self.last_frame_id or 0,
                      faults=self.counters.faults | (0x2 if self.decoder.overflows else 0),  # bit 1: RX overflow
                      state=self.state)

    # ------------------------------------------------------------------------------------------ loop

    def _run(self) -> None:
        period = 1.0 / self.vsync_hz if self.vsync_hz else None
        next_vsync = time.monotonic() + (period or 0)
        while not self._stop.is_set():
            now = time.monotonic()
            timeout = 0.01 if period is None else max(0.0, min(0.01, next_vsync - now))
            fd = self.transport.fileno()
            try:
                if fd is not None:
                    select.select([fd], [], [], timeout)
                else:
                    time.sleep(timeout)
                data = self.transport.read()
            except (TransportError, OSError, ValueError):
                return  # unplugged
            with self._lock:
                for frame in self.decoder.feed(data):
                    self._on_frame(frame)
                now = time.monotonic()
                if period is None:
                    self._vsync()
                elif now >= next_vsync:
                    self._vsync()
                    next_vsync += period * max(1, int((now - next_vsync) / period) + 1)
                self._watchdog(now)
                self._maybe_heartbeat(now)

    def _send(self, msg: Message, flags: int = 0) -> None:
        if self._stop.is_set():
            return  # stopping, or the transport failed (a write error): nothing more goes out
        data = encode_message(msg, self._seq, flags=flags, version=self.version or PROTOCOL_VERSION)
        self._seq = (self._seq + 1) & 0xFFFF
        try:
            self.transport.write(data)
        except TransportError:
            self._stop.set()
        self._last_tx = time.monotonic()

    def _on_frame(self, frame: Frame) -> None:
        self.received[frame.type] += 1
        # As the C firmware: HELLO passes in any version (to negotiate, or to be refused); every other frame must
        # carry the negotiated version, PROTOCOL_VERSION before any HELLO. A refused frame does not feed the
        # watchdog (the firmware's handler, which notes the time, sees only frames its decoder accepted).
        if frame.type != MsgType.HELLO and frame.version != (self.version or PROTOCOL_VERSION):
            self.counters.rejected += 1
            return
        self._last_rx = time.monotonic()
        try:
            msg = decode_message(frame)
        except ProtocolError as exc:
            if frame.type == MsgType.ZONES:
                self._on_bad_zones(frame)
                return
            self.counters.rejected += 1
            self._send(Nack(frame.seq, frame.type, int(exc.reason)))
            return
        if isinstance(msg, Hello):
            lo, hi = max(msg.version_min, self.version_range[0]), min(msg.version_max, self.version_range[1])
            if lo > hi:
                self._send(Nack(frame.seq, frame.type, NackReason.UNSUPPORTED_VERSION))
                return
            self.version = hi
            self._send(Caps(version=hi, fw_major=self.fw_version[0], fw_minor=self.fw_version[1],
                            fw_patch=self.fw_version[2], rows=self.rows, cols=self.cols, max_bits=self.max_bits,
                            features=FEATURE_PACKED_ZONES if self.packed_zones else 0, max_fps=int(self.vsync_hz),
                            max_payload=MAX_PAYLOAD))
        elif isinstance(msg, Config):
            try:
                msg.validate()
                if msg.rows > self.rows or msg.cols > self.cols or msg.bits > self.max_bits:
                    raise ProtocolError(f"grid {msg.rows}x{msg.cols}x{msg.bits} exceeds the hardware",
                                        NackReason.BAD_CONFIG)
            except ProtocolError as exc:
                self._send(Nack(frame.seq, frame.type, int(exc.reason)))
                return
            self.config = msg
            self.backlight_u16 = np.full((msg.rows, msg.cols), msg.safe_level, np.uint16)
            self._drive()
            self.state = State.RUNNING
            self._pending = None
            self.last_frame_id = None
            if frame.flags & FLAG_ACK_REQUEST:
                self._send(Ack(frame.seq, frame.type))
        elif isinstance(msg, Zones):
            self._on_zones(msg, frame.seq)
        elif isinstance(msg, StatusRequest):
            self._send(self.status())
        elif isinstance(msg, (Heartbeat, Ack, Nack, Caps, Status)):
            pass
        if frame.flags & FLAG_ACK_REQUEST and not isinstance(msg, Config):
            self._send(Ack(frame.seq, frame.type))

    def _not_configured(self, seq: int) -> None:
        now = time.monotonic()
        if now - self._last_not_configured >= 1.0:
            self._last_not_configured = now
            self._send(Nack(seq, MsgType.ZONES, NackReason.NOT_CONFIGURED))

    def _on_bad_zones(self, frame: Frame) -> None:
        """A ZONES payload that does not decode, answered in the C firmware's order (``on_zones``): not configured
        first; then a head whose grid differs from the configuration is NACK(zone mismatch); any other fault of
        the payload (its length, encoding, or a value wider than its bits) is NACK(bad length)."""
        cfg = self.config
        if cfg is None:
            self._not_configured(frame.seq)
            return
        payload = frame.payload
        if len(payload) >= 12 and tuple(payload[8:11]) == (cfg.rows, cfg.cols, cfg.bits) and self._stale(
                int.from_bytes(payload[:4], "little")):
            self.counters.frames_superseded += 1  # the firmware drops a stale frame before it reads the data
            return
        self.counters.rejected += 1
        grid_differs = len(payload) >= 12 and tuple(payload[8:11]) != (cfg.rows, cfg.cols, cfg.bits)
        self._send(Nack(frame.seq, MsgType.ZONES, NackReason.ZONE_MISMATCH if grid_differs else NackReason.BAD_LENGTH))

    def _stale(self, frame_id: int) -> bool:
        """Whether ``frame_id`` is not newer than the pending frame, or else the last applied one (RFC 1982)."""
        newest = self._pending.frame_id if self._pending is not None else self.last_frame_id
        return newest is not None and (frame_id == newest or ((frame_id - newest) & 0xFFFFFFFF) >= 0x80000000)

    def _on_zones(self, zones: Zones, seq: int) -> None:
        cfg = self.config
        if cfg is None:
            self._not_configured(seq)
            return
        if zones.values.shape != (cfg.rows, cfg.cols) or zones.bits != cfg.bits:
            self.counters.rejected += 1
            self._send(Nack(seq, MsgType.ZONES, NackReason.ZONE_MISMATCH))
            return
        if self._stale(zones.frame_id):
            self.counters.frames_superseded += 1  # stale (older than what we hold): dropped
            return
        if self._pending is not None:
            self.counters.frames_superseded += 1
        self._pending = zones

    def _vsync(self) -> None:
        self.vsync_count += 1
        pending = self._pending
        if pending is None or (pending.present_vsync and pending.present_vsync > self.vsync_count):
            return
        self._pending = None
        self.backlight_u16 = pending.values.copy()
        self.last_frame_id = pending.frame_id
        self.counters.frames_applied += 1
        self.applied_log.append((pending.frame_id, time.monotonic_ns()))
        if self.state == State.FALLBACK:
            self.state = State.RUNNING
        self._drive()

    def _drive(self) -> None:
        cfg = self.config
        if cfg is None:
            return
        level = self.backlight_u16.astype(np.float32) / float((1 << cfg.bits) - 1)
        self.duty = level if cfg.drive_curve == 0 else np.power(level, cfg.drive_gamma_x100 / 100.0)

    def _watchdog(self, now: float) -> None:
        cfg = self.config
        if cfg is None or self.state != State.RUNNING or self._last_rx is None:
            return
        if (now - self._last_rx) * 1000.0 > cfg.watchdog_ms:
            self.state = State.FALLBACK
            self.counters.faults |= 0x1
            self._pending = None
            self.backlight_u16 = np.full((cfg.rows, cfg.cols), cfg.safe_level, np.uint16)
            self._drive()
            log.warning("controller: host silent for %.0f ms, safe backlight", (now - self._last_rx) * 1000)

    def _maybe_heartbeat(self, now: float) -> None:
        period = (self.config.heartbeat_ms if self.config else 100) / 1000.0
        if self.version is not None and now - self._last_tx >= period:
            self._send(Heartbeat(int((now - self._start) * 1000), self.state))

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {"state": State(self.state).name, "backlight_u16": self.backlight_u16.copy(),
                    "last_frame_id": self.last_frame_id, "status": self.status(), "vsync_count": self.vsync_count}
