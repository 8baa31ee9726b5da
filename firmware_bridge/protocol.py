"""The LED-zone link protocol (PROTOCOL.md): message types, framing, streaming decoder.

Pure functions and small value types, no I/O: the host link (``link.py``), the
controller simulator (``simulator.py``) and the test vectors all build on this
module, and the C99 library in ``c/`` implements the same bytes.
"""

from __future__ import annotations

import enum
import struct
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from cobs import cobs

if TYPE_CHECKING:
    from typing import TypeAlias

__all__ = [
    "PROTOCOL_VERSION",
    "MAGIC",
    "HEADER_SIZE",
    "CRC_SIZE",
    "MAX_PAYLOAD",
    "MAX_ENCODED",
    "FLAG_ACK_REQUEST",
    "FEATURE_PACKED_ZONES",
    "MsgType",
    "NackReason",
    "State",
    "ProtocolError",
    "Frame",
    "Hello",
    "Caps",
    "Config",
    "Zones",
    "Ack",
    "Nack",
    "Heartbeat",
    "StatusRequest",
    "Status",
    "encode_frame",
    "encode_message",
    "decode_message",
    "FrameDecoder",
    "pack_zone_values",
    "unpack_zone_values",
]

PROTOCOL_VERSION = 1
MAGIC = b"EH"
HEADER_SIZE = 10
CRC_SIZE = 4
MAX_PAYLOAD = 4864
MAX_FRAME = HEADER_SIZE + MAX_PAYLOAD + CRC_SIZE
MAX_ENCODED = MAX_FRAME + (MAX_FRAME + 253) // 254  # COBS worst case, without the delimiter
FLAG_ACK_REQUEST = 0x01
FEATURE_PACKED_ZONES = 0x01
_HEADER = struct.Struct("<2sBBBBHH")


class MsgType(enum.IntEnum):
    HELLO = 0x01
    CAPS = 0x02
    CONFIG = 0x03
    ZONES = 0x04
    ACK = 0x05
    NACK = 0x06
    HEARTBEAT = 0x07
    STATUS_REQUEST = 0x08
    STATUS = 0x09


class NackReason(enum.IntEnum):
    UNSUPPORTED_VERSION = 1
    BAD_LENGTH = 2
    BAD_CONFIG = 3
    NOT_CONFIGURED = 4
    ZONE_MISMATCH = 5
    UNKNOWN_TYPE = 6


class State(enum.IntEnum):
    UNCONFIGURED = 0
    RUNNING = 1
    FALLBACK = 2


class ProtocolError(ValueError):
    """A payload that does not follow PROTOCOL.md; ``reason`` is the NACK reason it maps to."""

    def __init__(self, message: str, reason: NackReason = NackReason.BAD_LENGTH) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class Frame:
    """One validated frame off the wire."""

    version: int
    type: int
    flags: int
    seq: int
    payload: bytes


# ---------------------------------------------------------------------------------------------- messages


@dataclass(frozen=True)
class Hello:
    version_min: int = PROTOCOL_VERSION
    version_max: int = PROTOCOL_VERSION
    host_features: int = 0
    TYPE = MsgType.HELLO
    _S = struct.Struct("<BBH")

    def pack(self) -> bytes:
        return self._S.pack(self.version_min, self.version_max, self.host_features)

    @classmethod
    def unpack(cls, data: bytes) -> Hello:
        return cls(*_unpack(cls._S, data, "HELLO"))


@dataclass(frozen=True)
class Caps:
    version: int = PROTOCOL_VERSION
    fw_major: int = 0
    fw_minor: int = 0
    fw_patch: int = 0
    rows: int = 0
    cols: int = 0
    max_bits: int = 16
    features: int = FEATURE_PACKED_ZONES
    max_fps: int = 120
    max_payload: int = MAX_PAYLOAD
    TYPE = MsgType.CAPS
    _S = struct.Struct("<BBBBBBBBHH")

    def pack(self) -> bytes:
        return self._S.pack(self.version, self.fw_major, self.fw_minor, self.fw_patch, self.rows, self.cols,
                            self.max_bits, self.features, self.max_fps, self.max_payload)

    @classmethod
    def unpack(cls, data: bytes) -> Caps:
        return cls(*_unpack(cls._S, data, "CAPS"))


@dataclass(frozen=True)
class Config:
    rows: int
    cols: int
    bits: int = 12
    drive_curve: int = 0
    drive_gamma_x100: int = 100
    safe_level: int = 0
    watchdog_ms: int = 500
    heartbeat_ms: int = 100
    TYPE = MsgType.CONFIG
    _S = struct.Struct("<BBBBHHHH")

    def validate(self) -> Config:
        """Raise ``ProtocolError(BAD_CONFIG)`` naming the field that is out of range."""
        checks = [
            (1 <= self.rows <= 255, "rows", "1..255"),
            (1 <= self.cols <= 255, "cols", "1..255"),
            (8 <= self.bits <= 16, "bits", "8..16"),
            (self.drive_curve in (0, 1), "drive_curve", "0 (linear PWM) or 1 (power law)"),
            (1 <= self.drive_gamma_x100 <= 1000, "drive_gamma_x100", "1..1000"),
            (0 <= self.safe_level < (1 << self.bits) if 8 <= self.bits <= 16 else False, "safe_level",
             f"0..{(1 << self.bits) - 1 if 8 <= self.bits <= 16 else '2^bits-1'}"),
            (50 <= self.watchdog_ms <= 65535, "watchdog_ms", "50..65535"),
            (10 <= self.heartbeat_ms and 2 * self.heartbeat_ms < self.watchdog_ms, "heartbeat_ms",
             "10 .. watchdog_ms/2"),
            (_zone_payload_size(self.rows, self.cols, self.bits, 0) <= MAX_PAYLOAD, "grid",
             f"a grid whose raw zone payload fits {MAX_PAYLOAD} bytes "
             f"({self.rows}x{self.cols} zones at {self.bits} bit need "
             f"{_zone_payload_size(self.rows, self.cols, self.bits, 0)})"),
        ]
        for ok, name, allowed in checks:
            if not ok:
                value = f"{self.rows}x{self.cols}" if name == "grid" else repr(getattr(self, name, None))
                raise ProtocolError(f"CONFIG field {name}={value} out of range; "
                                    f"allowed {allowed}", NackReason.BAD_CONFIG)
        return self

    def pack(self) -> bytes:
        return self._S.pack(self.rows, self.cols, self.bits, self.drive_curve, self.drive_gamma_x100,
                            self.safe_level, self.watchdog_ms, self.heartbeat_ms)

    @classmethod
    def unpack(cls, data: bytes) -> Config:
        return cls(*_unpack(cls._S, data, "CONFIG"))


def _zone_payload_size(rows: int, cols: int, bits: int, encoding: int) -> int:
    n = rows * cols
    if encoding == 1:
        return 12 + (n * bits + 7) // 8
    return 12 + n * (1 if bits <= 8 else 2)


def pack_zone_values(values: np.ndarray, bits: int, encoding: int) -> bytes:
    """Zone values (row-major, ``< 2^bits``) as ZONES data: raw u8/u16 LE, or an LSB-first bit stream."""
    flat = np.ascontiguousarray(values, dtype=np.uint16).reshape(-1)
    if encoding == 0:
        return flat.astype(np.uint8).tobytes() if bits <= 8 else flat.astype("<u2").tobytes()
    if encoding == 1:
        bit_matrix = (flat[:, None] >> np.arange(bits, dtype=np.uint16)) & 1
        return np.packbits(bit_matrix.astype(np.uint8).reshape(-1), bitorder="little").tobytes()
    raise ProtocolError(f"unknown zone encoding {encoding}", NackReason.BAD_LENGTH)


def unpack_zone_values(data: bytes, rows: int, cols: int, bits: int, encoding: int) -> np.ndarray:
    """Inverse of ``pack_zone_values``; (rows, cols) uint16."""
    n = rows * cols
    expected = _zone_payload_size(rows, cols, bits, encoding) - 12
    if len(data) != expected:
        raise ProtocolError(f"ZONES data holds {len(data)} bytes, {rows}x{cols}x{bits}-bit encoding {encoding} "
                            f"needs {expected}", NackReason.BAD_LENGTH)
    if encoding == 0:
        dtype = np.uint8 if bits <= 8 else np.dtype("<u2")
        values = np.frombuffer(data, dtype=dtype).astype(np.uint16).reshape(rows, cols)
        if bits < 16 and values.size and int(values.max()) >> bits:
            raise ProtocolError(f"ZONES value {int(values.max())} is wider than {bits} bits", NackReason.BAD_LENGTH)
        return values
    bit_stream = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")[: n * bits].reshape(n, bits)
    weights = (1 << np.arange(bits, dtype=np.uint32)).astype(np.uint32)
    return (bit_stream.astype(np.uint32) @ weights).astype(np.uint16).reshape(rows, cols)


@dataclass(frozen=True, eq=False)
class Zones:
    frame_id: int
    values: np.ndarray  # (rows, cols) uint16
    bits: int = 12
    encoding: int = 0
    present_vsync: int = 0
    TYPE = MsgType.ZONES
    _S = struct.Struct("<IIBBBB")

    def pack(self) -> bytes:
        values = np.asarray(self.values)
        if values.ndim != 2:
            raise ProtocolError(f"zone values must be a (rows, cols) array, got shape {values.shape}")
        rows, cols = values.shape
        if values.size and int(values.max()) >= (1 << self.bits):
            raise ProtocolError(f"zone value {int(values.max())} does not fit {self.bits} bits")
        head = self._S.pack(self.frame_id & 0xFFFFFFFF, self.present_vsync & 0xFFFFFFFF, rows, cols, self.bits,
                            self.encoding)
        return head + pack_zone_values(values, self.bits, self.encoding)

    @classmethod
    def unpack(cls, data: bytes) -> Zones:
        if len(data) < cls._S.size:
            raise ProtocolError(f"ZONES payload of {len(data)} bytes is shorter than its 12-byte head")
        frame_id, vsync, rows, cols, bits, encoding = cls._S.unpack_from(data)
        if not 8 <= bits <= 16 or encoding not in (0, 1) or rows == 0 or cols == 0:
            raise ProtocolError(f"ZONES head invalid: {rows}x{cols}, bits={bits}, encoding={encoding}",
                                NackReason.ZONE_MISMATCH)
        values = unpack_zone_values(data[cls._S.size:], rows, cols, bits, encoding)
        return cls(frame_id=frame_id, values=values, bits=bits, encoding=encoding, present_vsync=vsync)

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Zones) and (self.frame_id, self.bits, self.encoding, self.present_vsync)
                == (other.frame_id, other.bits, other.encoding, other.present_vsync)
                and np.array_equal(self.values, other.values))


@dataclass(frozen=True)
class Ack:
    ref_seq: int
    ref_type: int
    TYPE = MsgType.ACK
    _S = struct.Struct("<HBx")

    def pack(self) -> bytes:
        return self._S.pack(self.ref_seq, self.ref_type)

    @classmethod
    def unpack(cls, data: bytes) -> Ack:
        return cls(*_unpack(cls._S, data, "ACK"))


@dataclass(frozen=True)
class Nack:
    ref_seq: int
    ref_type: int
    reason: int
    TYPE = MsgType.NACK
    _S = struct.Struct("<HBB")

    def pack(self) -> bytes:
        return self._S.pack(self.ref_seq, self.ref_type, self.reason)

    @classmethod
    def unpack(cls, data: bytes) -> Nack:
        return cls(*_unpack(cls._S, data, "NACK"))


@dataclass(frozen=True)
class Heartbeat:
    uptime_ms: int = 0
    state: int = State.UNCONFIGURED
    TYPE = MsgType.HEARTBEAT
    _S = struct.Struct("<IB3x")

    def pack(self) -> bytes:
        return self._S.pack(self.uptime_ms & 0xFFFFFFFF, self.state)

    @classmethod
    def unpack(cls, data: bytes) -> Heartbeat:
        return cls(*_unpack(cls._S, data, "HEARTBEAT"))


@dataclass(frozen=True)
class StatusRequest:
    TYPE = MsgType.STATUS_REQUEST

    def pack(self) -> bytes:
        return b""

    @classmethod
    def unpack(cls, data: bytes) -> StatusRequest:
        if data:
            raise ProtocolError(f"STATUS_REQUEST carries no payload, got {len(data)} bytes")
        return cls()


@dataclass(frozen=True)
class Status:
    frames_applied: int = 0
    frames_superseded: int = 0
    crc_errors: int = 0
    framing_errors: int = 0
    rejected: int = 0
    last_frame_id: int = 0
    faults: int = 0
    state: int = State.UNCONFIGURED
    TYPE = MsgType.STATUS
    _S = struct.Struct("<IIIIIIHBx")

    def pack(self) -> bytes:
        return self._S.pack(*(v & 0xFFFFFFFF for v in (self.frames_applied, self.frames_superseded,
                                                       self.crc_errors, self.framing_errors, self.rejected,
                                                       self.last_frame_id)), self.faults, self.state)

    @classmethod
    def unpack(cls, data: bytes) -> Status:
        return cls(*_unpack(cls._S, data, "STATUS"))


if TYPE_CHECKING:
    Message: TypeAlias = Hello | Caps | Config | Zones | Ack | Nack | Heartbeat | StatusRequest | Status

# keyed by the wire's type byte (an int; MsgType members hash and compare equal to theirs)
_MESSAGES: dict[int, type[Message]] = {
    m.TYPE: m for m in (Hello, Caps, Config, Zones, Ack, Nack, Heartbeat, StatusRequest, Status)}


def _unpack(st: struct.Struct, data: bytes, name: str) -> tuple[Any, ...]:
    if len(data) != st.size:
        raise ProtocolError(f"{name} payload must be {st.size} bytes, got {len(data)}")
    return st.unpack(data)


# ---------------------------------------------------------------------------------------------- framing


def encode_frame(msg_type: int, payload: bytes, seq: int, *, flags: int = 0, version: int = PROTOCOL_VERSION) -> bytes:
    """``COBS(header | payload | crc32) 0x00`` for one message."""
    if len(payload) > MAX_PAYLOAD:
        raise ProtocolError(f"payload of {len(payload)} bytes exceeds MAX_PAYLOAD={MAX_PAYLOAD}")
    body = _HEADER.pack(MAGIC, version, int(msg_type), flags, 0, seq & 0xFFFF, len(payload)) + payload
    return cobs.encode(body + struct.pack("<I", zlib.crc32(body))) + b"\x00"


def encode_message(msg: Message, seq: int, *, flags: int | None = None, version: int = PROTOCOL_VERSION) -> bytes:
    """Frame a message object; CONFIG asks for an ACK unless ``flags`` says otherwise."""
    if flags is None:
        flags = FLAG_ACK_REQUEST if msg.TYPE == MsgType.CONFIG else 0
    return encode_frame(msg.TYPE, msg.pack(), seq, flags=flags, version=version)


def decode_message(frame: Frame) -> Message:
    """Parse a frame's payload into its message object (``ProtocolError`` if malformed)."""
    cls = _MESSAGES.get(frame.type)
    if cls is None:
        raise ProtocolError(f"unknown message type 0x{frame.type:02x}", NackReason.UNKNOWN_TYPE)
    return cls.unpack(frame.payload)


@dataclass
class FrameDecoder:
    """Streaming decoder: feed any chunking of the byte stream, get validated frames.

    Garbage, truncated or corrupted frames are dropped and counted; decoding picks
    up again at the next 0x00 delimiter. ``version=None`` accepts any version (the
    controller does, to answer HELLO); otherwise frames of another version count as
    ``rejected``.
    """

    version: int | None = PROTOCOL_VERSION
    frames: int = 0
    crc_errors: int = 0
    framing_errors: int = 0
    overflows: int = 0
    rejected: int = 0
    _buffer: bytearray = field(default_factory=bytearray)
    _discarding: bool = False

    def discard_partial(self) -> None:
        """Drop a frame in progress (the stream was cut, e.g. by a reconnect); the counters stay."""
        self._buffer.clear()
        self._discarding = False

    def feed(self, data: bytes) -> list[Frame]:
        out: list[Frame] = []
        start = 0
        while True:
            end = data.find(b"\x00", start)
            if end < 0:
                self._append(data[start:])
                return out
            self._append(data[start:end])
            if self._discarding:
                self._discarding = False
            elif self._buffer:
                frame = self._finish(bytes(self._buffer))
                if frame is not None:
                    out.append(frame)
            self._buffer.clear()
            start = end + 1

    def _append(self, chunk: bytes) -> None:
        if self._discarding or not chunk:
            return
        if len(self._buffer) + len(chunk) > MAX_ENCODED:
            self.overflows += 1
            self.framing_errors += 1
            self._buffer.clear()
            self._discarding = True
            return
        self._buffer += chunk

    def _finish(self, encoded: bytes) -> Frame | None:
        try:
            raw = cobs.decode(encoded)
        except cobs.DecodeError:
            self.framing_errors += 1
            return None
        if len(raw) < HEADER_SIZE + CRC_SIZE or raw[:2] != MAGIC:
            self.framing_errors += 1
            return None
        body, crc = raw[:-CRC_SIZE], struct.unpack_from("<I", raw, len(raw) - CRC_SIZE)[0]
        if zlib.crc32(body) != crc:
            self.crc_errors += 1
            return None
        _, version, msg_type, flags, _, seq, length = _HEADER.unpack_from(body)
        if length != len(body) - HEADER_SIZE or length > MAX_PAYLOAD:
            self.framing_errors += 1
            return None
        if self.version is not None and version != self.version:
            self.rejected += 1
            return None
        self.frames += 1
        return Frame(version=version, type=msg_type, flags=flags, seq=seq, payload=body[HEADER_SIZE:])
