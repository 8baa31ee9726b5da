"""Shared test vectors: the Python side writes them, the Python and C tests both check them.

``python -m firmware_bridge.vectors`` rewrites ``firmware_bridge/vectors/*.txt``
(deterministic). ``tests/test_bridge_protocol.py`` asserts the committed files equal
a fresh build (so the Python encoder cannot drift) and decodes them; the C test
(``c/test_ehlink.c``) decodes and re-encodes every frame and checks byte equality.

Files (one record per line, ``#`` comments, hex without spaces, ``-`` for empty):
- ``frames.txt``: ``name version type flags seq payload_hex frame_hex``
- ``zones.txt``: ``name rows cols bits encoding values_csv payload_hex``
- ``streams.txt``: ``name frames crc_errors framing_errors overflows rejected stream_hex``
  (decoder counters after feeding the stream to a version-1 decoder)
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from firmware_bridge.protocol import (
    FLAG_ACK_REQUEST,
    Ack,
    Caps,
    Config,
    FrameDecoder,
    Heartbeat,
    Hello,
    MsgType,
    Nack,
    NackReason,
    State,
    Status,
    StatusRequest,
    Zones,
    encode_frame,
    encode_message,
)

VECTOR_DIR = Path(__file__).with_name("vectors")


def _hex(data: bytes) -> str:
    return data.hex() if data else "-"


def _zone_cases():
    rng = np.random.default_rng(2024)
    cases = [
        ("zones_2x3_8bit_raw", 2, 3, 8, 0),
        ("zones_4x4_10bit_packed", 4, 4, 10, 1),
        ("zones_3x5_12bit_packed", 3, 5, 12, 1),
        ("zones_3x5_12bit_raw", 3, 5, 12, 0),
        ("zones_2x2_16bit_raw", 2, 2, 16, 0),
        ("zones_7x9_13bit_packed", 7, 9, 13, 1),
        ("zones_48x48_16bit_raw", 48, 48, 16, 0),
        ("zones_48x48_12bit_packed", 48, 48, 12, 1),
    ]
    for name, rows, cols, bits, encoding in cases:
        values = rng.integers(0, 1 << bits, size=(rows, cols), dtype=np.uint32).astype(np.uint16)
        values.flat[0] = (1 << bits) - 1  # extremes always present
        values.flat[-1] = 0
        yield name, Zones(frame_id=int(rng.integers(0, 2**32)), values=values, bits=bits, encoding=encoding,
                          present_vsync=int(rng.integers(0, 2**16)))


def _frame_cases():
    yield "hello", Hello(1, 1, 0), 0
    yield "caps", Caps(version=1, fw_major=1, fw_minor=2, fw_patch=3, rows=48, cols=48, max_bits=16), 1
    yield "config", Config(rows=48, cols=48, bits=12, drive_curve=1, drive_gamma_x100=220, safe_level=512,
                           watchdog_ms=500, heartbeat_ms=100), 2
    yield "ack", Ack(ref_seq=2, ref_type=MsgType.CONFIG), 3
    yield "nack", Nack(ref_seq=9, ref_type=MsgType.ZONES, reason=NackReason.NOT_CONFIGURED), 4
    yield "heartbeat", Heartbeat(uptime_ms=123456789, state=State.RUNNING), 5
    yield "status_request", StatusRequest(), 6
    yield "status", Status(frames_applied=100000, frames_superseded=17, crc_errors=3, framing_errors=4,
                           rejected=1, last_frame_id=0xFFFFFFFE, faults=1, state=State.FALLBACK), 0xFFFF
    for i, (name, zones) in enumerate(_zone_cases()):
        yield name, zones, 100 + i


def build_vectors() -> dict[str, str]:
    """The three vector files as text, built from scratch."""
    frames = ["# name version type flags seq payload_hex frame_hex"]
    encoded = {}
    for name, msg, seq in _frame_cases():
        payload = msg.pack()
        flags = FLAG_ACK_REQUEST if msg.TYPE == MsgType.CONFIG else 0
        frame = encode_message(msg, seq)
        encoded[name] = frame
        frames.append(f"{name} 1 {int(msg.TYPE)} {flags} {seq} {_hex(payload)} {frame.hex()}")
    # COBS edge cases: runs of 253/254/255 non-zero bytes around block boundaries, and zeros.
    for name, payload in (("cobs_253", bytes(range(1, 254))), ("cobs_254", bytes([7]) * 244),
                          ("cobs_255", bytes([9]) * 245), ("cobs_zeros", bytes(16)),
                          ("cobs_long", bytes((i % 255) + 1 for i in range(1000)))):
        frame = encode_frame(MsgType.STATUS_REQUEST, payload, 42)
        frames.append(f"{name} 1 {int(MsgType.STATUS_REQUEST)} 0 42 {_hex(payload)} {frame.hex()}")

    zones_lines = ["# name rows cols bits encoding values_csv payload_hex"]
    for name, z in _zone_cases():
        rows, cols = z.values.shape
        values = ",".join(str(int(v)) for v in z.values.reshape(-1))
        zones_lines.append(f"{name} {rows} {cols} {z.bits} {z.encoding} {values} {z.pack().hex()}")

    good = encoded["config"]
    corrupt = bytearray(encoded["heartbeat"])
    corrupt[5] ^= 0x10  # one bit flipped inside the COBS body: CRC (or COBS) catches it
    version2 = encode_frame(MsgType.HEARTBEAT, Heartbeat(1, 1).pack(), 7, version=2)
    # A payload bit flipped under an intact COBS layer: only the CRC can catch it.
    from cobs import cobs

    raw = bytearray(cobs.decode(encoded["status"][:-1]))
    raw[12] ^= 0x04
    crc_flip = cobs.encode(bytes(raw)) + b"\x00"
    streams = {
        "clean_pair": good + encoded["hello"],
        "idle_fill": b"\x00\x00\x00" + good + b"\x00\x00" + encoded["ack"],
        "garbage_then_frame": b"\x13\x37\xff\x42" + b"\x00" + good,
        "truncated_then_frame": good[: len(good) // 2] + b"\x00" + good,
        "bit_flip_then_frame": bytes(corrupt) + good,
        "crc_error_then_frame": crc_flip + good,
        "wrong_version_then_frame": version2 + good,
        "overflow_then_frame": b"\x01" * 6000 + b"\x00" + good,
        "mid_stream_join": good[7:] + encoded["status"],
        "bad_magic": encode_frame(MsgType.HELLO, b"", 1)[:1] + b"\x58" + encode_frame(MsgType.HELLO, b"", 1)[2:] + good,
    }
    stream_lines = ["# name frames crc_errors framing_errors overflows rejected stream_hex"]
    for name, data in streams.items():
        d = FrameDecoder()
        d.feed(data)
        stream_lines.append(f"{name} {d.frames} {d.crc_errors} {d.framing_errors} {d.overflows} {d.rejected} "
                            f"{data.hex()}")
    return {"frames.txt": "\n".join(frames) + "\n", "zones.txt": "\n".join(zones_lines) + "\n",
            "streams.txt": "\n".join(stream_lines) + "\n"}


def write_vectors(folder: Path = VECTOR_DIR) -> list[Path]:
    from edgehdr.io.atomic import write_text_atomic

    folder.mkdir(parents=True, exist_ok=True)
    return [write_text_atomic(folder / name, text) for name, text in build_vectors().items()]


if __name__ == "__main__":
    for path in write_vectors(Path(sys.argv[1]) if len(sys.argv) > 1 else VECTOR_DIR):
        print(path)
