"""Host side of the LED-zone link: handshake, CONFIG with retries, latest-wins zones, heartbeat, reconnect.

Where the frame's journey ends on the host: the dimming stage hands each frame's
zone values to ``Link.send_zones``, which only swaps them into a one-slot mailbox
and wakes the link's I/O thread, so the pipeline never blocks on the wire. The
I/O thread owns the transport: it (re)opens it with backoff, says HELLO, sends
CONFIG until acknowledged, then sends the newest zone frame, heartbeats and
status requests, and reconnects when the transport fails or the controller goes
silent (PROTOCOL.md, "Behaviour").
"""

from __future__ import annotations

import logging
import os
import select
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from firmware_bridge.protocol import (
    FEATURE_PACKED_ZONES,
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
from firmware_bridge.transports import Transport, TransportError

if TYPE_CHECKING:
    from numpy.typing import ArrayLike

    from firmware_bridge.protocol import Message

__all__ = ["Link", "LinkStats"]

log = logging.getLogger("edgehdr.bridge")


@dataclass
class LinkStats:
    """Counters of one link (``Link.stats()`` returns a snapshot as a dict)."""

    state: str = "disconnected"
    connects: int = 0
    reconnects: int = 0
    frames_submitted: int = 0
    frames_sent: int = 0
    frames_superseded: int = 0
    bytes_sent: int = 0
    config_sent: int = 0
    config_acked: int = 0
    nacks: dict = field(default_factory=dict)
    heartbeats_received: int = 0
    rx_frames: int = 0
    rx_crc_errors: int = 0
    rx_framing_errors: int = 0
    rx_overflows: int = 0
    rx_rejected: int = 0
    rx_malformed: int = 0
    tx_dropped: int = 0
    transport_errors: int = 0
    rejections: int = 0
    handshake_retries: int = 0
    last_error: str = ""
    controller: dict = field(default_factory=dict)
    controller_status: dict = field(default_factory=dict)


class Link:
    """A session with one display controller over one transport.

    Parameters
    ----------
    transport : Transport
        Opened (and reopened after failures) by the link itself.
    config : Config
        Zone grid, bit depth, drive curve, safe level, watchdog and heartbeat periods.
    zone_encoding : {'auto', 'raw', 'packed'}
        ``auto`` packs zones when the depth is not 8 or 16 bits and the controller
        supports it.
    status_interval_s : float
        How often to ask the controller for STATUS (0 disables).
    handshake_timeout_s : float
        Reconnect when no CAPS arrives within this time of opening the transport.

    Examples
    --------
    >>> with Link(SerialTransport("/dev/ttyACM0"), Config(rows=16, cols=24, bits=12)) as link:
    ...     link.wait_running(2.0)
    ...     link.send_zones(values_u16, frame_id=1)
    """

    def __init__(self, transport: Transport, config: Config, *, zone_encoding: str = "auto",
                 status_interval_s: float = 1.0, handshake_timeout_s: float = 2.0) -> None:
        if zone_encoding not in ("auto", "raw", "packed"):
            raise ValueError(f"zone_encoding must be 'auto', 'raw' or 'packed', got {zone_encoding!r}")
        self.transport = transport
        self.config = config.validate()
        self.zone_encoding = zone_encoding
        self.status_interval_s = status_interval_s
        self.handshake_timeout_s = handshake_timeout_s
        self._stats = LinkStats()
        self._lock = threading.Lock()
        self._pending: tuple[np.ndarray, int, int] | None = None  # (values, frame_id, present_vsync)
        self._stop = threading.Event()
        self._running = threading.Event()
        self._thread: threading.Thread | None = None
        self._closed = False
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._seq = 0
        self._heartbeat_s = config.heartbeat_ms / 1000.0
        self._silence_s = max(0.15, 3 * self._heartbeat_s)
        self.sent_log: dict[int, int] = {}  # frame_id -> monotonic ns when written (bounded)
        self._decoder = FrameDecoder()
        self._reject_backoff = 1.0
        self._retry_at = 0.0

    # ---------------------------------------------------------------------------------- public API

    def start(self) -> Link:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"link:{self.transport.name}", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout_s: float = 2.0) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self.transport.close()
        self._set_state("stopped")

    def close(self) -> None:
        """Stop the I/O thread, close the transport and the wake pipe. Idempotent: a second call does nothing
        (closing the pipe's descriptors twice would close whatever file has reused their numbers)."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        fds, self._wake_r, self._wake_w = (self._wake_r, self._wake_w), -1, -1
        for fd in fds:
            try:
                os.close(fd)
            except OSError:
                pass

    def __enter__(self) -> Link:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def send_zones(self, values_u16: ArrayLike, frame_id: int, present_vsync: int = 0) -> None:
        """Queue one frame of zone values, replacing any frame not yet sent. Never blocks.

        Raises ``ValueError`` if the array does not match the configured grid or depth.
        """
        values = np.asarray(values_u16)
        expected = (self.config.rows, self.config.cols)
        if values.shape != expected:
            raise ValueError(f"zone values of shape {values.shape} do not match the configured grid {expected}")
        if values.size and (values.min() < 0 or int(values.max()) >= (1 << self.config.bits)):
            raise ValueError(f"zone values must be in 0..{(1 << self.config.bits) - 1} ({self.config.bits} bits)")
        frame = (np.array(values, dtype=np.uint16), int(frame_id) & 0xFFFFFFFF, int(present_vsync))
        with self._lock:
            if self._pending is not None:
                self._stats.frames_superseded += 1
            self._pending = frame
            self._stats.frames_submitted += 1
        self._wake()

    def wait_running(self, timeout_s: float) -> bool:
        """Block until the controller has acknowledged CONFIG (or the timeout)."""
        return self._running.wait(timeout_s)

    @property
    def running(self) -> bool:
        return self._running.is_set()

    def stats(self) -> dict[str, Any]:
        with self._lock:
            snapshot = asdict(self._stats)
        decoder = self._decoder
        snapshot["rx_frames"] = decoder.frames
        snapshot["rx_crc_errors"] = decoder.crc_errors
        snapshot["rx_framing_errors"] = decoder.framing_errors
        snapshot["rx_overflows"] = decoder.overflows
        snapshot["rx_rejected"] = decoder.rejected  # frames of another protocol version
        snapshot["tx_dropped"] = self.transport.dropped_sends
        return snapshot

    # ---------------------------------------------------------------------------------- internals

    def _wake(self) -> None:
        if self._wake_w < 0:
            return
        try:
            os.write(self._wake_w, b"\x01")
        except (BlockingIOError, OSError):
            pass

    def _set_state(self, state: str) -> None:
        with self._lock:
            previous, self._stats.state = self._stats.state, state
        if state != previous:
            log.debug("link %s: %s -> %s", self.transport.name, previous, state)
        if state == "running":
            self._running.set()
        else:
            self._running.clear()

    def _write(self, msg: Message, *, flags: int | None = None) -> int:
        seq = self._seq
        self._seq = (self._seq + 1) & 0xFFFF
        data = encode_message(msg, seq, flags=flags)
        self.transport.write(data)
        self._last_tx = time.monotonic()
        with self._lock:
            self._stats.bytes_sent += len(data)
        return seq

    def _run(self) -> None:
        backoff = 0.05
        while not self._stop.is_set():
            if not self.transport.is_open:
                try:
                    self.transport.open()
                except Exception as exc:  # noqa: BLE001 - any failure to open is retried and counted, never fatal
                    self._record_error(exc)
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, 1.0)
                    continue
                backoff = 0.05
                self._on_open()
            try:
                self._service()
            except Exception as exc:  # noqa: BLE001 - the link thread must not die: reconnect, counted and logged
                self._record_error(exc)
                log.warning("link %s: %s; reconnecting", self.transport.name, exc)
                self.transport.close()
                self._set_state("disconnected")
                self._stop.wait(0.05)

    def _record_error(self, exc: Exception) -> None:
        # a transport's own errors say what failed; anything else is named by its type (OverflowError: ...)
        message = str(exc) if isinstance(exc, TransportError) else f"{type(exc).__name__}: {exc}"
        with self._lock:
            self._stats.transport_errors += 1
            repeated = self._stats.last_error == message
            self._stats.last_error = message
        # A port that keeps failing the same way is logged once, then at debug level on every retry.
        log.log(logging.DEBUG if repeated else logging.WARNING, "link %s: %s (retrying)", self.transport.name, message)

    def _on_open(self) -> None:
        now = time.monotonic()
        self._decoder.discard_partial()  # a frame cut by the reconnect is not glued to the new stream's first
        self._last_rx = now
        self._last_tx = 0.0
        self._next_config = now
        self._config_backoff = 0.05
        self._config_seq: int | None = None  # the CONFIG frame an ACK must name
        self._next_status = now + self.status_interval_s
        self._encoding = 0
        with self._lock:
            self._stats.connects += 1
            self._stats.reconnects = self._stats.connects - 1
        self._begin_handshake(now)
        log.info("link %s: connected, saying HELLO", self.transport.name)

    def _begin_handshake(self, now: float) -> None:
        """State ``hello``: HELLO now, repeated with backoff, CAPS expected within ``handshake_timeout_s``."""
        self._opened_at = now
        self._next_hello = now
        self._hello_backoff = 0.05
        self._set_state("hello")

    def _service(self) -> None:
        fd = self.transport.fileno()
        fds = [self._wake_r] + ([fd] if fd is not None else [])
        wait = 0.002 if fd is None else 0.02
        select.select(fds, [], [], wait)
        try:
            while os.read(self._wake_r, 4096):
                pass
        except BlockingIOError:
            pass
        for frame in self._decoder.feed(self.transport.read()):
            self._last_rx = time.monotonic()
            try:
                self._handle(decode_message(frame), frame.seq)
            except ProtocolError as exc:
                with self._lock:
                    self._stats.rx_malformed += 1
                log.warning("link %s: malformed %s from controller: %s", self.transport.name,
                            MsgType(frame.type).name if frame.type in MsgType._value2member_map_ else frame.type, exc)
        now = time.monotonic()
        state = self._stats.state
        if state == "hello":
            if now - self._opened_at > self.handshake_timeout_s:
                raise TransportError(f"{self.transport.name}: no CAPS within {self.handshake_timeout_s} s")
            if now >= self._next_hello:
                self._write(Hello(PROTOCOL_VERSION, PROTOCOL_VERSION, 0))
                self._next_hello = now + self._hello_backoff
                self._hello_backoff = min(self._hello_backoff * 2, 0.5)
        elif state == "config":
            if now >= self._next_config:
                self._config_seq = self._write(self.config)
                with self._lock:
                    self._stats.config_sent += 1
                self._next_config = now + self._config_backoff
                self._config_backoff = min(self._config_backoff * 2, 1.0)
        elif state == "running":
            with self._lock:
                pending, self._pending = self._pending, None
            if pending is not None:
                values, frame_id, vsync = pending
                self._write(Zones(frame_id=frame_id, values=values, bits=self.config.bits, encoding=self._encoding,
                                  present_vsync=vsync))
                self.sent_log[frame_id] = time.monotonic_ns()
                if len(self.sent_log) > 4096:
                    self.sent_log.pop(next(iter(self.sent_log)))
                with self._lock:
                    self._stats.frames_sent += 1
            if self.status_interval_s and now >= self._next_status:
                self._write(StatusRequest())
                self._next_status = now + self.status_interval_s
        elif state == "rejected" and now >= self._retry_at:
            with self._lock:
                self._stats.handshake_retries += 1
                attempt = self._stats.handshake_retries
            log.warning("link %s: retrying the handshake after a rejection (attempt %d; last error: %s)",
                        self.transport.name, attempt, self._stats.last_error)
            self._begin_handshake(now)
        if state in ("config", "running", "rejected"):
            if now - self._last_tx >= self._heartbeat_s:
                self._write(Heartbeat(int(now * 1000), State.RUNNING if state == "running" else State.UNCONFIGURED))
            # A controller that refused the session has nothing to say until the next HELLO (the C firmware and the
            # simulator send no heartbeat before a session is negotiated): silence is expected while ``rejected``,
            # and reconnecting on it would skip the rejection's backoff.
            if state != "rejected" and now - self._last_rx > self._silence_s:
                raise TransportError(f"{self.transport.name}: controller silent for {now - self._last_rx:.2f} s")

    def _handle(self, msg: Message, seq: int) -> None:
        if isinstance(msg, Caps):
            if self._stats.state != "hello":
                log.debug("link %s: unsolicited CAPS ignored (state %s)", self.transport.name, self._stats.state)
                return  # CAPS only answers our HELLO; one out of turn (stale, or forged) changes nothing
            with self._lock:
                self._stats.controller = asdict(msg)
            if msg.version != PROTOCOL_VERSION:
                self._reject(f"controller chose protocol version {msg.version}, host speaks {PROTOCOL_VERSION}")
                return
            packed_ok = bool(msg.features & FEATURE_PACKED_ZONES)
            want_packed = self.zone_encoding == "packed" or (
                self.zone_encoding == "auto" and self.config.bits not in (8, 16))
            self._encoding = 1 if (want_packed and packed_ok) else 0
            if self._stats.state == "hello":
                self._set_state("config")
                self._next_config = time.monotonic()
        elif isinstance(msg, Ack):
            if msg.ref_type == MsgType.CONFIG and msg.ref_seq == self._config_seq and self._stats.state == "config":
                with self._lock:
                    self._stats.config_acked += 1
                self._set_state("running")
                self._reject_backoff = 1.0
                log.info("link %s: controller configured (%dx%d, %d bit)", self.transport.name,
                         self.config.rows, self.config.cols, self.config.bits)
        elif isinstance(msg, Nack):
            try:
                reason = NackReason(msg.reason).name
            except ValueError:
                reason = str(msg.reason)
            with self._lock:
                self._stats.nacks[reason] = self._stats.nacks.get(reason, 0) + 1
            if msg.reason == NackReason.NOT_CONFIGURED and self._stats.state == "running":
                self._set_state("config")  # the controller rebooted: configure it again
                self._config_backoff = 0.05
                self._next_config = time.monotonic()
            elif msg.reason in (NackReason.BAD_CONFIG, NackReason.UNSUPPORTED_VERSION):
                refused = (MsgType(msg.ref_type).name if msg.ref_type in MsgType._value2member_map_
                           else msg.ref_type)
                self._reject(f"controller refused {refused}: {reason}")
        elif isinstance(msg, Heartbeat):
            with self._lock:
                self._stats.heartbeats_received += 1
            if msg.state == State.UNCONFIGURED and self._stats.state == "running":
                self._set_state("config")
                self._config_backoff = 0.05
                self._next_config = time.monotonic()
        elif isinstance(msg, Status):
            with self._lock:
                self._stats.controller_status = asdict(msg)

    def _reject(self, message: str) -> None:
        """The controller refused the session: state ``rejected``; the handshake is retried with backoff
        (1 s doubling to 30 s), so a transient or forged refusal does not end the link for good."""
        log.error("link %s: %s; retrying in %.0f s", self.transport.name, message, self._reject_backoff)
        with self._lock:
            self._stats.last_error = message
            self._stats.rejections += 1
        self._retry_at = time.monotonic() + self._reject_backoff
        self._reject_backoff = min(self._reject_backoff * 2, 30.0)
        self._set_state("rejected")
