"""LED-zone protocol: framing round trips, shared vectors, decoder robustness (hypothesis), C library."""

from __future__ import annotations

import shutil
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
from cobs import cobs
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from firmware_bridge import vectors
from firmware_bridge.protocol import (
    HEADER_SIZE,
    MAX_ENCODED,
    MAX_PAYLOAD,
    Caps,
    Config,
    FrameDecoder,
    Heartbeat,
    MsgType,
    ProtocolError,
    Status,
    Zones,
    decode_message,
    encode_frame,
    encode_message,
    pack_zone_values,
    unpack_zone_values,
)

C_DIR = Path(vectors.__file__).with_name("c")


def test_committed_vectors_match_a_fresh_build():
    fresh = vectors.build_vectors()
    for name, text in fresh.items():
        committed = (vectors.VECTOR_DIR / name).read_text()
        assert committed == text, f"{name} drifted from the encoder: run python -m firmware_bridge.vectors"


def test_frame_vectors_decode_to_their_fields():
    lines = [ln.split() for ln in (vectors.VECTOR_DIR / "frames.txt").read_text().splitlines() if ln[:1] != "#"]
    assert len(lines) >= 15
    for name, version, msg_type, flags, seq, payload_hex, frame_hex in lines:
        decoder = FrameDecoder()
        frames = decoder.feed(bytes.fromhex(frame_hex))
        assert len(frames) == 1, name
        f = frames[0]
        payload = b"" if payload_hex == "-" else bytes.fromhex(payload_hex)
        assert (f.version, f.type, f.flags, f.seq, f.payload) == (int(version), int(msg_type), int(flags), int(seq),
                                                                  payload), name


def test_wire_format_by_hand():
    # Independent of the encoder: build header | payload | crc with struct and zlib, COBS it, compare.
    import struct

    payload = Heartbeat(uptime_ms=0x01020304, state=1).pack()
    body = b"EH" + bytes([1, MsgType.HEARTBEAT, 0, 0]) + struct.pack("<HH", 513, len(payload)) + payload
    expected = cobs.encode(body + struct.pack("<I", zlib.crc32(body))) + b"\x00"
    assert encode_frame(MsgType.HEARTBEAT, payload, 513) == expected
    assert payload == bytes([4, 3, 2, 1, 1, 0, 0, 0])


@pytest.mark.parametrize("bits,encoding", [(8, 0), (10, 1), (12, 1), (12, 0), (13, 1), (16, 0), (16, 1)])
def test_zone_packing_round_trip_and_size(bits, encoding):
    rng = np.random.default_rng(bits)
    values = rng.integers(0, 1 << bits, size=(48, 48)).astype(np.uint16)
    data = pack_zone_values(values, bits, encoding)
    expected = (48 * 48 * bits + 7) // 8 if encoding else 48 * 48 * (1 if bits <= 8 else 2)
    assert len(data) == expected
    np.testing.assert_array_equal(unpack_zone_values(data, 48, 48, bits, encoding), values)


def test_packed_bit_order_is_lsb_first():
    # Two 12-bit values 0xABC, 0x123 -> bits LSB first: bytes 0xBC, 0x3A, 0x12.
    assert pack_zone_values(np.array([[0xABC, 0x123]]), 12, 1) == bytes([0xBC, 0x3A, 0x12])


def test_largest_frame_fits_and_oversize_is_refused():
    zones = Zones(frame_id=1, values=np.full((48, 48), 65535, np.uint16), bits=16)
    frame = encode_message(zones, 0)
    assert len(frame) - 1 <= MAX_ENCODED
    assert FrameDecoder().feed(frame)[0].payload == zones.pack()
    with pytest.raises(ProtocolError, match="exceeds MAX_PAYLOAD"):
        encode_frame(MsgType.ZONES, bytes(MAX_PAYLOAD + 1), 0)


def test_message_validation_names_the_field():
    with pytest.raises(ProtocolError, match="safe_level=5000"):
        Config(rows=8, cols=8, bits=12, safe_level=5000).validate()
    with pytest.raises(ProtocolError, match="heartbeat_ms"):
        Config(rows=8, cols=8, bits=12, watchdog_ms=100, heartbeat_ms=60).validate()
    with pytest.raises(ProtocolError, match="does not fit 12 bits"):
        Zones(frame_id=1, values=np.full((2, 2), 4096), bits=12).pack()
    with pytest.raises(ProtocolError, match="CAPS payload must be 12 bytes"):
        Caps.unpack(b"\x01\x02")
    raw16 = Zones(frame_id=1, values=np.full((2, 2), 4095), bits=12).pack()
    bad = bytearray(raw16)
    bad[10] = 12
    bad[12:14] = (5000).to_bytes(2, "little")
    with pytest.raises(ProtocolError, match="wider than 12 bits"):
        Zones.unpack(bytes(bad))


def test_version_is_checked_and_wrong_versions_counted():
    decoder = FrameDecoder()
    frames = decoder.feed(encode_frame(MsgType.HEARTBEAT, Heartbeat().pack(), 1, version=2))
    assert frames == [] and decoder.rejected == 1
    assert FrameDecoder(version=None).feed(encode_frame(MsgType.HELLO, bytes(4), 1, version=2))[0].version == 2


messages = st.one_of(
    st.builds(Heartbeat, uptime_ms=st.integers(0, 2**32 - 1), state=st.integers(0, 2)),
    st.builds(Status, *[st.integers(0, 2**32 - 1)] * 6, st.integers(0, 65535), st.integers(0, 2)),
    st.builds(lambda r, c, b, seed: Zones(frame_id=seed, bits=b, encoding=int(b not in (8, 16)),
                                          values=np.random.default_rng(seed).integers(0, 1 << b, (r, c))
                                          .astype(np.uint16)),
              st.integers(1, 48), st.integers(1, 48), st.integers(8, 16), st.integers(0, 2**32 - 1)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(msgs=st.lists(messages, min_size=1, max_size=5), cuts=st.lists(st.integers(0, 20000), max_size=6),
       seq=st.integers(0, 65535))
def test_round_trip_under_any_chunking(msgs, cuts, seq):
    stream = b"".join(encode_message(m, seq) for m in msgs)
    decoder = FrameDecoder()
    frames, start = [], 0
    for cut in sorted(c % (len(stream) + 1) for c in cuts) + [len(stream)]:
        frames += decoder.feed(stream[start:cut])
        start = cut
    assert [decode_message(f) for f in frames] == msgs
    assert decoder.crc_errors == decoder.framing_errors == 0


@settings(max_examples=300, deadline=None)
@given(garbage=st.binary(max_size=3000))
def test_random_bytes_never_raise_and_never_fake_a_frame(garbage):
    decoder = FrameDecoder()
    frames = decoder.feed(garbage)
    # A frame out of random bytes needs magic, length and a CRC-32 to agree: not in 300 tries.
    assert frames == []
    good = encode_message(Heartbeat(7, 1), 9)
    assert [decode_message(f) for f in decoder.feed(b"\x00" + good)] == [Heartbeat(7, 1)]


@settings(max_examples=300, deadline=None)
@given(position=st.integers(0, 10_000), bit=st.integers(0, 7), extra_flips=st.lists(st.tuples(
    st.integers(0, 10_000), st.integers(0, 7)), max_size=3))
def test_bit_flips_are_rejected_counted_and_cost_only_their_frame(position, bit, extra_flips):
    msg = Status(frames_applied=123, last_frame_id=99, faults=2, state=1)
    frame = bytearray(encode_message(msg, 5))
    original = bytes(frame)
    for pos, b in [(position, bit)] + extra_flips:
        frame[pos % (len(frame) - 1)] ^= 1 << b
    good = encode_message(Heartbeat(1, 1), 6)
    decoder = FrameDecoder()
    frames = decoder.feed(bytes(frame) + good)
    decoded = [decode_message(f) for f in frames]
    if bytes(frame) == original:  # flips cancelled out
        assert decoded == [msg, Heartbeat(1, 1)]
    else:
        assert decoded == [Heartbeat(1, 1)], "a corrupted frame was accepted or the next frame was lost"
        assert decoder.crc_errors + decoder.framing_errors >= 1


def test_overflow_discards_until_the_next_delimiter():
    decoder = FrameDecoder()
    good = encode_message(Heartbeat(3, 1), 1)
    assert decoder.feed(b"\x07" * (MAX_ENCODED + 10)) == []
    assert decoder.overflows == 1
    assert decoder.feed(b"\x05\x06\x00" + good)[0].seq == 1  # tail of the oversize frame dropped, then back in sync


def test_stream_vectors_give_the_recorded_counters():
    for line in (vectors.VECTOR_DIR / "streams.txt").read_text().splitlines():
        if line.startswith("#"):
            continue
        name, frames, crc, framing, overflows, rejected, data = line.split()
        d = FrameDecoder()
        got = d.feed(bytes.fromhex(data))
        assert (len(got), d.crc_errors, d.framing_errors, d.overflows, d.rejected) == (
            int(frames), int(crc), int(framing), int(overflows), int(rejected)), name


def _c_compiler():
    return shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")


@pytest.mark.skipif(_c_compiler() is None or shutil.which("make") is None, reason="no C compiler or make on PATH")
def test_c_reference_library_passes_make_test(tmp_path):
    """Builds with -std=c99 -Wall -Wextra -Werror -pedantic, runs vectors + fuzzing under ASan/UBSan."""
    result = subprocess.run(["make", "-s", "test", f"BUILD={tmp_path}", "FUZZ=100000"], cwd=C_DIR,
                            capture_output=True, text=True, timeout=300)
    if result.returncode != 0 and "sanitizer" in (result.stderr + result.stdout).lower() and "cannot" in result.stderr:
        pytest.skip(f"sanitizer runtime unavailable: {result.stderr[-300:]}")
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    assert ", 0 failures" in result.stdout
    assert "0 crashes" in result.stdout


@settings(max_examples=200, deadline=None)
@given(chunks=st.lists(st.tuples(st.binary(max_size=200), st.integers(0, 2**32 - 1)), min_size=1, max_size=8))
def test_interleaved_garbage_costs_no_frame_behind_a_delimiter(chunks):
    stream, expected = b"", []
    for garbage, uptime in chunks:
        msg = Heartbeat(uptime, 1)
        stream += garbage + b"\x00" + encode_message(msg, uptime & 0xFFFF)
        expected.append(msg)
    decoder = FrameDecoder()
    assert [decode_message(f) for f in decoder.feed(stream)] == expected


@settings(max_examples=200, deadline=None)
@given(cut=st.integers(1, 10_000), wrong_length=st.integers(0, 65535))
def test_truncated_frames_and_lying_length_fields_are_rejected(cut, wrong_length):
    import struct

    msg = Status(frames_applied=5, state=1)
    frame = encode_message(msg, 1)
    truncated = frame[: cut % (len(frame) - 1)] + b"\x00"
    raw = bytearray(cobs.decode(frame[:-1]))
    body = raw[:-4]
    if wrong_length != len(body) - HEADER_SIZE:
        body[8:10] = struct.pack("<H", wrong_length)
    lying = cobs.encode(bytes(body) + struct.pack("<I", zlib.crc32(bytes(body)))) + b"\x00"  # valid CRC, bad length
    decoder = FrameDecoder()
    frames = decoder.feed(truncated + lying + frame)
    if wrong_length == len(body) - HEADER_SIZE:
        assert [decode_message(f) for f in frames] == [msg, msg]
    else:
        assert [decode_message(f) for f in frames] == [msg]
        assert decoder.framing_errors >= 1
