"""The reference controller firmware, cross-compiled for Cortex-M3 and run in QEMU (mps2-an385).

Every test talks to the real firmware through the real host ``Link`` over the
emulated MCU's UART (a pty): nothing is simulated in Python. They skip, saying
what to install, where the cross-compiler or QEMU is missing; ``.ci/run`` installs
both. The drive-curve mirror (``firmware_bridge.drive``) is also checked against
floating point, so a bit-exact match with the firmware means the firmware is right.
"""

from __future__ import annotations

import re
import subprocess

import numpy as np
import pytest

from firmware_bridge import bench
from firmware_bridge.drive import drive_table, duty_u16
from firmware_bridge.qemu import FIRMWARE_DIR, QemuController, build_firmware, toolchain_missing

needs_toolchain = pytest.mark.skipif(
    bool(toolchain_missing()),
    reason=f"{', '.join(toolchain_missing())} missing: apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi "
           "qemu-system-arm (.ci/run does)")


def test_drive_mirror_follows_the_power_law():
    x = np.arange(257) / 256
    for gamma_x100 in (50, 100, 220, 300):
        table = drive_table(gamma_x100).astype(float)
        assert np.abs(table - np.round(65535 * x ** (gamma_x100 / 100))).max() <= 2
    levels = np.arange(4096)
    assert np.abs(duty_u16(levels, 12, 1, 220) - 65535 * (levels / 4095) ** 2.2).max() < 2.5
    assert np.abs(duty_u16(levels, 12, 0) - levels / 4095 * 65535).max() <= 0.5
    assert duty_u16([0, 65535], 16, 1, 220).tolist() == [0, 65535]


@pytest.fixture(scope="module")
def controller(tmp_path_factory):
    if toolchain_missing():
        pytest.skip(f"{', '.join(toolchain_missing())} missing: apt-get install gcc-arm-none-eabi "
                    "libnewlib-arm-none-eabi qemu-system-arm")
    elf = build_firmware(tmp_path_factory.mktemp("fw"))
    with QemuController(elf) as qemu:
        yield qemu


@needs_toolchain
def test_firmware_fits_its_budgets(tmp_path):
    """flash <= 32 KiB and RAM (data + bss, both 48x48x16-bit frame buffers) <= 24 KiB, as the build reports."""
    proc = subprocess.run(["make", "-C", str(FIRMWARE_DIR), f"BUILD={tmp_path}"], capture_output=True, text=True,
                          check=True)
    match = re.search(r"flash (\d+) of 32768 bytes, RAM \(data \+ bss \+ noinit\) (\d+) of 24576", proc.stdout)
    assert match, proc.stdout
    flash, ram = int(match.group(1)), int(match.group(2))
    assert flash <= 32 * 1024 and ram <= 24 * 1024
    assert ram >= 2 * 48 * 48 * 2  # the double buffer really is in there


@needs_toolchain
def test_stream_every_applied_frame_is_what_was_sent(controller):
    # 60 Hz: QEMU's one-byte UART carries ~5-10 kB/s here; 120 Hz of even 4x4 zones fills ~90 % of it.
    result = bench.qemu_stream_run(2.0, 60.0, controller=controller)
    assert result["corrupted_accepted"] == 0
    # Every submitted frame is either written or counted as superseded on the host (latest-wins when the link's
    # writer thread is descheduled: CI once saw 3 of 120); none vanishes uncounted.
    assert result["frames_sent"] + result["frames_superseded_on_host"] == result["frames_submitted"], result
    assert result["frames_sent"] >= 0.5 * result["frames_submitted"], result
    # Latest-wins may supersede frames when the host or QEMU is descheduled (a 2 s run on a loaded 2-core CI
    # machine saw 94 %; the 60 s bench 99.8-99.9 %); what must hold exactly is that nothing corrupt is applied.
    assert result["applied_fraction"] >= 0.5, result  # a timing figure under load; the bench reports it
    status = result["firmware_status"]
    assert status["state"] == 1 and status["crc_errors"] == 0 and status["framing_errors"] == 0
    # The APB timer is programmed for 120 Hz of wall time. QEMU's timers run late, never early, when the host is
    # busy (110 Hz seen on this 2-core machine with the suite's load, 99.99 Hz with a training run beside it): a
    # wrong divider would give 60 or 240, which these bounds still tell apart.
    assert 90.0 <= result["controller_vsync_hz"] <= 123.0, result


@needs_toolchain
def test_the_port_to_a_second_board_behaves_the_same(tmp_path):
    """board_lm3s6965evb.c (PL011 UART, vsync from a general-purpose timer) is the only board file that differs."""
    elf = build_firmware(tmp_path, board="lm3s6965evb")
    with QemuController(elf, board="lm3s6965evb") as qemu:
        stream = bench.qemu_stream_run(2.0, bits=12, controller=qemu)  # 120 Hz, 4x6 zones at 12 bit, packed
        faults = bench.qemu_fault_run(60.0, bursts=5, controller=qemu)
    # 120 Hz on 2 cores beside QEMU: a few per cent superseded (latest-wins); none corrupt.
    # Exact: nothing corrupt applied. The applied fraction is a timing figure (QEMU on a loaded 2-core host
    # measured 0.80-1.00); the test only asserts the stream flowed, the bench reports the figure.
    assert stream["corrupted_accepted"] == 0 and stream["applied_fraction"] >= 0.5, stream
    assert stream["hz"] == 120.0 and stream["bits"] == 12
    # the GPTM timer at 120 Hz of wall time (QEMU's timers run late when the host is busy; 60 or 240 is a wrong divider)
    assert 90.0 <= stream["controller_vsync_hz"] <= 123.0, stream
    assert faults["errors_counted_by_firmware"] == 5 and faults["reset_boot_line"] == "reset", faults
    assert faults["resume_after_reset_s"] is not None and faults["resume_after_reset_s"] <= 2.0, faults


@needs_toolchain
def test_full_grid_both_drive_curves_bit_exact(controller):
    result = bench.qemu_full_grid_run(frames=2, controller=controller)
    for curve in ("power_law", "linear"):
        assert result[curve]["applied"] == 2 and result[curve]["corrupted_accepted"] == 0, result


@needs_toolchain
def test_noise_is_counted_and_a_reset_mcu_is_reconfigured(controller):
    result = bench.qemu_fault_run(60.0, bursts=10, controller=controller)
    assert result["noise_bursts"] == 10
    assert result["errors_counted_by_firmware"] == 10, result
    assert result["reset_boot_line"] == "reset"
    assert result["reconfigured"] >= 1 and result["host_nacks"].get("NOT_CONFIGURED", 0) >= 1
    # about 0.1-0.3 s from the reset to the first frame applied; 2 s is room for a loaded host (the bench reports it)
    assert result["resume_after_reset_s"] is not None and result["resume_after_reset_s"] <= 2.0, result
    assert result["corrupted_accepted"] == 0


@needs_toolchain
def test_firmware_nacks_a_bad_config_and_an_unsupported_version(controller):
    """Raw messages on the wire: CONFIG out of the hardware's range -> NACK(bad config); HELLO for v2..3 ->
    NACK(unsupported version), sent in a version-2 header and still answered."""
    import time

    import serial

    from firmware_bridge.protocol import (
        FLAG_ACK_REQUEST,
        Config,
        FrameDecoder,
        Hello,
        Nack,
        NackReason,
        decode_message,
        encode_message,
    )

    port = serial.Serial(controller.pty_path, 2_000_000, timeout=0, write_timeout=5)
    try:
        port.write(encode_message(Config(rows=64, cols=64, bits=8, watchdog_ms=500, heartbeat_ms=100), 7,
                                  flags=FLAG_ACK_REQUEST))
        port.write(encode_message(Hello(2, 3, 0), 8, version=2))
        decoder, nacks = FrameDecoder(version=None), {}
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and len(nacks) < 2:
            for frame in decoder.feed(port.read(4096)):
                msg = decode_message(frame)
                if isinstance(msg, Nack):
                    nacks[msg.ref_seq] = msg.reason
            time.sleep(0.01)
    finally:
        port.close()
    assert nacks == {7: NackReason.BAD_CONFIG, 8: NackReason.UNSUPPORTED_VERSION}


def test_a_qemu_that_never_names_its_pty_times_out(tmp_path):
    """A QEMU that runs but prints nothing (or its pty line in another form) fails ``start`` within the boot
    timeout; reading its output line by line used to block until the process ended. A stand-in executable plays
    that QEMU; no cross-compiler is needed."""
    import os
    import time

    from firmware_bridge.qemu import FirmwareUnavailable

    quiet = tmp_path / "quiet-qemu"
    quiet.write_text("#!/bin/sh\necho 'QEMU 9.9 monitor - a line without the pty'\nexec sleep 30\n")
    os.chmod(quiet, 0o755)
    (tmp_path / "fw.elf").write_bytes(b"\x7fELF")
    controller = QemuController(tmp_path / "fw.elf", qemu=str(quiet), boot_timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(FirmwareUnavailable, match=r"did not report its pty within 0.5 s: .*without the pty"):
        controller.start()
    assert time.monotonic() - started < 5.0
    assert controller._proc is None and controller._tmp is None  # the process stopped and waited for


def test_a_pty_line_without_its_newline_is_read(tmp_path):
    """QEMU's 'redirected to /dev/pts/N (label serial0)' without a trailing newline (the output cut there) is still
    read: the error used to say the pty was not reported while quoting the line that reported it. The stand-in then
    boots no firmware, so start fails later, on the boot line, not on the pty."""
    import os

    from firmware_bridge.qemu import FirmwareUnavailable

    fake = tmp_path / "unterminated-qemu"
    fake.write_text("#!/bin/sh\nprintf 'char device redirected to /dev/pts/999 (label serial0)'\nexec sleep 30\n")
    os.chmod(fake, 0o755)
    (tmp_path / "fw.elf").write_bytes(b"\x7fELF")
    controller = QemuController(tmp_path / "fw.elf", qemu=str(fake), boot_timeout_s=0.5)
    with pytest.raises(FirmwareUnavailable) as failure:
        controller.start()
    assert controller.pty_path == "/dev/pts/999" and "did not report its pty" not in str(failure.value)


def _bad_zone_nacks(port_path: str) -> dict[int, int]:
    """Configure a 4 x 6 x 12-bit grid, then send ZONES frames that do not decode; the NACK reason per frame seq."""
    import struct
    import time

    import serial

    from firmware_bridge.protocol import (
        FLAG_ACK_REQUEST,
        Config,
        FrameDecoder,
        Hello,
        MsgType,
        Nack,
        decode_message,
        encode_frame,
        encode_message,
    )

    def zones(frame_id: int, rows: int, cols: int, bits: int, encoding: int, data: bytes) -> bytes:
        return struct.pack("<IIBBBB", frame_id, 0, rows, cols, bits, encoding) + data

    raw = np.full(24, 100, "<u2")
    wide = raw.copy()
    wide[5] = 5000  # wider than 12 bits
    frames = {
        20: zones(1, 4, 6, 12, 0, wide.tobytes()),
        21: zones(2, 4, 6, 12, 2, raw.tobytes()),  # no encoding 2
        22: zones(3, 5, 6, 12, 0, np.full(30, 100, "<u2").tobytes()),  # the grid differs
        23: zones(4, 4, 6, 12, 0, raw.tobytes()[:-1]),  # a byte short
        24: zones(5, 4, 6, 20, 0, raw.tobytes()),  # no 20-bit zones
        25: b"\x01\x02\x03",  # shorter than the head
    }
    port = serial.Serial(port_path, 2_000_000, timeout=0, write_timeout=5)
    try:
        port.write(encode_message(Hello(1, 1, 0), 1))
        port.write(encode_message(Config(rows=4, cols=6, bits=12, watchdog_ms=2000, heartbeat_ms=500), 2,
                                  flags=FLAG_ACK_REQUEST))
        time.sleep(0.3)
        for seq, payload in frames.items():
            port.write(encode_frame(MsgType.ZONES, payload, seq))
        decoder, nacks = FrameDecoder(version=None), {}
        deadline = time.monotonic() + 3.0
        while time.monotonic() < deadline and len(nacks) < len(frames):
            for frame in decoder.feed(port.read(4096)):
                msg = decode_message(frame)
                if isinstance(msg, Nack) and msg.ref_seq in frames:
                    nacks[msg.ref_seq] = int(msg.reason)
            time.sleep(0.01)
    finally:
        port.close()
    return nacks


@needs_toolchain
def test_the_simulator_refuses_bad_zone_frames_as_the_firmware_does(controller, tmp_path):
    """The simulator answered a zone value wider than its bits, and an unknown encoding, with NACK(zone mismatch)
    where the C firmware says NACK(bad length); both now judge a ZONES frame in PROTOCOL.md's order."""
    from firmware_bridge.protocol import NackReason
    from firmware_bridge.simulator import ControllerSimulator
    from firmware_bridge.transports import PtyPair

    expected = {20: NackReason.BAD_LENGTH, 21: NackReason.BAD_LENGTH, 22: NackReason.ZONE_MISMATCH,
                23: NackReason.BAD_LENGTH, 24: NackReason.ZONE_MISMATCH, 25: NackReason.BAD_LENGTH}
    assert _bad_zone_nacks(controller.pty_path) == expected
    pair = PtyPair()
    sim = ControllerSimulator(pair.controller, rows=48, cols=48).start()
    try:
        assert _bad_zone_nacks(pair.slave_path) == expected
        assert sim.counters.rejected == len(expected)
    finally:
        sim.stop()
        pair.close()
