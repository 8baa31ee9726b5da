"""Link benchmarks: encode+write cost, a sustained 120 Hz stream over a pty, and the fault run.

``edgehdr bridge bench`` prints the figures; nothing here asserts timings.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from firmware_bridge.link import Link
from firmware_bridge.protocol import Config, MsgType, Zones, encode_message
from firmware_bridge.simulator import ControllerSimulator
from firmware_bridge.transports import PtyPair, SerialTransport

if TYPE_CHECKING:
    from firmware_bridge.qemu import MonitorLine, QemuController

__all__ = [
    "QEMU_STREAM_DEFAULTS",
    "encode_write_ms",
    "fault_run",
    "format_apply_on_receipt",
    "format_encode_write",
    "format_link_faults",
    "format_qemu_summary",
    "format_stream",
    "qemu_fault_run",
    "qemu_full_grid_run",
    "qemu_stream_run",
    "qemu_summary",
    "qemu_summary_ok",
    "qemu_uart_throughput",
    "stream_run",
]


def _grid(zones: int) -> tuple[int, int]:
    rows = int(np.sqrt(zones))
    while zones % rows:
        rows -= 1
    return rows, zones // rows


def encode_write_ms(zones: int = 2304, bits: int = 16, repeat: int = 2000) -> dict:
    """Median and p99 ms to encode one ZONES frame and write it to a serial port (a pty with a live reader)."""
    rows, cols = _grid(zones)
    values = np.random.default_rng(0).integers(0, 1 << bits, (rows, cols)).astype(np.uint16)
    with tempfile.TemporaryDirectory() as tmp:
        pair = PtyPair(Path(tmp) / "tty")
        sim = ControllerSimulator(pair.controller, rows=rows, cols=cols, vsync_hz=0).start()
        port = SerialTransport(pair.path)
        port.open()
        try:
            times = []
            for i in range(repeat):
                t0 = time.perf_counter()
                port.write(encode_message(Zones(frame_id=i, values=values, bits=bits), i))
                times.append(time.perf_counter() - t0)
                if i % 50 == 0:
                    time.sleep(0.002)  # let the reader drain: measure our cost, not a full pty buffer
        finally:
            port.close()
            sim.stop()
            pair.close()
    times_ms = np.array(times) * 1e3
    return {"zones": zones, "bits": bits, "bytes": len(encode_message(Zones(0, values, bits), 0)),
            "median_ms": float(np.median(times_ms)), "p99_ms": float(np.percentile(times_ms, 99))}


def stream_run(seconds: float = 60.0, hz: float = 120.0, zones: int = 2304, bits: int = 16,
               vsync_hz: float = 120.0) -> dict:
    """Stream zone frames at ``hz`` over a pty to the simulator and check every applied frame.

    Returns delivery (frames the controller received intact / frames submitted), frames
    applied at vsync, corrupted frames accepted (an applied frame whose values differ
    from what was sent under its id) and send-to-apply latency.
    """
    rows, cols = _grid(zones)
    rng = np.random.default_rng(1)
    patterns = [rng.integers(0, 1 << bits, (rows, cols)).astype(np.uint16) for _ in range(16)]
    config = Config(rows=rows, cols=cols, bits=bits, watchdog_ms=500, heartbeat_ms=100)
    with tempfile.TemporaryDirectory() as tmp:
        pair = PtyPair(Path(tmp) / "tty")
        sim = ControllerSimulator(pair.controller, rows=rows, cols=cols, vsync_hz=vsync_hz).start()
        link = Link(SerialTransport(pair.path, 2_000_000), config, status_interval_s=0).start()
        try:
            if not link.wait_running(5.0):
                raise RuntimeError(f"link did not come up: {link.stats()}")
            sim_received0 = sim.received[MsgType.ZONES]
            period = 1.0 / hz
            n = int(seconds * hz)
            start = time.monotonic()
            mismatches = 0
            checked = 0
            for i in range(1, n + 1):
                link.send_zones(patterns[i % len(patterns)], frame_id=i)
                target = start + i * period
                delay = target - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                if i % 30 == 0:  # spot-check the backlight against what was sent under that id
                    snap = sim.snapshot()
                    if snap["last_frame_id"]:
                        checked += 1
                        mismatches += int(not np.array_equal(snap["backlight_u16"],
                                                             patterns[snap["last_frame_id"] % len(patterns)]))
            time.sleep(0.1)
            stats = link.stats()
            received = sim.received[MsgType.ZONES] - sim_received0
            sent_ns = link.sent_log.copy()  # the link's thread evicts old entries while this runs
            latencies = [(t_apply - sent_ns[fid]) / 1e6 for fid, t_apply in list(sim.applied_log)
                         if fid in sent_ns]
        finally:
            link.close()
            sim.stop()
            pair.close()
    return {
        "seconds": seconds, "hz": hz, "zones": zones, "bits": bits, "vsync_hz": vsync_hz,
        "submitted": n, "sent": stats["frames_sent"], "superseded_on_host": stats["frames_superseded"],
        "received_by_controller": received, "delivered_fraction": received / n,
        "applied": sim.counters.frames_applied, "superseded_on_controller": sim.counters.frames_superseded,
        "controller_crc_errors": sim.decoder.crc_errors, "controller_framing_errors": sim.decoder.framing_errors,
        "corrupted_accepted": mismatches, "spot_checks": checked,
        "latency_ms_median": float(np.median(latencies)) if latencies else None,
        "latency_ms_p99": float(np.percentile(latencies, 99)) if latencies else None,
    }


def fault_run(hz: float = 120.0, zones: int = 2304) -> dict:
    """Unplug and replug the pty mid-stream, and inject garbage: reconnect time and frames lost."""
    rows, cols = _grid(zones)
    config = Config(rows=rows, cols=cols, bits=12, watchdog_ms=300, heartbeat_ms=50)
    values = np.random.default_rng(2).integers(0, 4096, (rows, cols)).astype(np.uint16)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "ttyEH0"
        pair = PtyPair(path)
        sim = ControllerSimulator(pair.controller, rows=rows, cols=cols, vsync_hz=0).start()
        link = Link(SerialTransport(str(path)), config, status_interval_s=0).start()
        result = {}
        try:
            link.wait_running(5.0)
            frame_id = 0

            def pump(duration_s):
                nonlocal frame_id
                end = time.monotonic() + duration_s
                while time.monotonic() < end:
                    frame_id += 1
                    link.send_zones(values, frame_id)
                    time.sleep(1.0 / hz)

            pump(0.5)
            sim.stop()
            pair.close()  # unplug
            t_unplug = time.monotonic()
            while link.running and time.monotonic() - t_unplug < 3:
                pump(0.01)
            result["detect_unplug_s"] = time.monotonic() - t_unplug
            pump(0.3)
            pair = PtyPair(path)  # replug
            sim = ControllerSimulator(pair.controller, rows=rows, cols=cols, vsync_hz=0).start()
            t_replug = time.monotonic()
            while not link.running and time.monotonic() - t_replug < 5:
                pump(0.005)
            result["reconnect_after_replug_s"] = time.monotonic() - t_replug
            first_after = frame_id
            while sim.last_frame_id is None and time.monotonic() - t_replug < 5:
                pump(0.005)
            result["first_frame_applied_after_replug_s"] = time.monotonic() - t_replug
            # Garbage: a burst of line noise (no delimiter) before every 10th frame for 2 s. Each
            # burst merges with the frame that follows it; that frame, and only it, is lost.
            applied0 = sim.counters.frames_applied
            received0 = sim.received[MsgType.ZONES]
            errors0 = sim.decoder.framing_errors + sim.decoder.crc_errors
            sent0 = link.stats()["frames_sent"]
            injections = 0
            end = time.monotonic() + 2.0
            k = 0
            while time.monotonic() < end:
                k += 1
                if k % 10 == 0:
                    os.write(pair.slave_fd, bytes(b or 1 for b in os.urandom(40)))
                    injections += 1
                    time.sleep(0.2 / hz)
                frame_id += 1
                link.send_zones(values, frame_id)
                time.sleep(1.0 / hz)
            time.sleep(0.1)
            sent = link.stats()["frames_sent"] - sent0
            received = sim.received[MsgType.ZONES] - received0
            result.update({
                "garbage_injections": injections,
                "frames_sent_during_garbage": sent,
                "frames_received_intact": received,
                "frames_lost_to_garbage": sent - received,
                "controller_errors_counted": sim.decoder.framing_errors + sim.decoder.crc_errors - errors0,
                "applied_during_garbage": sim.counters.frames_applied - applied0,
                "frames_before_replug_state": first_after,
            })
        finally:
            link.close()
            sim.stop()
            pair.close()
    return result


def summary(zones: int = 2304, seconds: float = 60.0, hz: float = 120.0) -> dict[str, Any]:
    return {"encode_write": encode_write_ms(zones), "stream": stream_run(seconds, hz, zones),
            "stream_apply_on_receipt": stream_run(min(seconds, 10.0), hz, zones, vsync_hz=0),
            "faults": fault_run(hz, zones)}



# ------------------------------------------------------------------------------------------ QEMU controller


@contextlib.contextmanager
def _qemu_controller(controller: QemuController | None) -> Iterator[QemuController]:
    """``controller`` as given, or a fresh ``QemuController`` for the duration (stopped afterwards)."""
    if controller is not None:
        yield controller
        return
    from firmware_bridge.qemu import QemuController

    with QemuController() as own:
        yield own


def _pattern_set(rng: np.random.Generator, rows: int, cols: int, bits: int,
                 drive_gamma_x100: int) -> tuple[list[np.ndarray], list[int]]:
    """16 random zone frames and the duty CRC the firmware reports for each under the power-law drive."""
    from firmware_bridge.drive import duty_crc32

    patterns = [rng.integers(0, 1 << bits, (rows, cols)).astype(np.uint16) for _ in range(16)]
    return patterns, [duty_crc32(p, bits, 1, drive_gamma_x100) for p in patterns]


def _qemu_link(controller: QemuController, config: Config, *, status_interval_s: float = 0.25) -> Link:
    # The emulated UART moves ~10 kB/s (below); a big frame takes longer than the default write timeout.
    transport = SerialTransport(controller.pty_path, 2_000_000, write_timeout_s=10.0)
    link = Link(transport, config, status_interval_s=status_interval_s, handshake_timeout_s=5.0).start()
    if not link.wait_running(10.0):
        link.close()
        raise RuntimeError(f"the QEMU controller did not come up: {link.stats()}")
    return link


def qemu_uart_throughput(controller: QemuController, n_bytes: int = 24576) -> float:
    """Bytes per second the emulated MCU's link UART accepts, measured with valid HEARTBEAT frames.

    QEMU's I/O thread hands the emulated UART one byte per main-loop iteration; the
    CMSDK UART (mps2_an385) then waits for the firmware to read it, the PL011
    (lm3s6965evb) queues up to 16 in its FIFO. Measured here: ~10 kB/s and ~100 kB/s,
    whatever baud rate the host sets. (Runs of 0x00 idle fill move several times slower
    than frame bytes on the PL011 board, so the figure is taken with real frames.)
    """
    import serial

    from firmware_bridge.protocol import FrameDecoder, Heartbeat, Status, StatusRequest, decode_message

    frame = encode_message(Heartbeat(0, 0), 0)
    burst = frame * (n_bytes // len(frame))
    port = serial.Serial(controller.pty_path, 2_000_000, timeout=0, write_timeout=60)
    try:
        port.write(frame * (16384 // len(frame)))  # fill the pty's buffer: the timed part moves at the MCU's pace
        rates = []
        for _ in range(2):  # the better of two bursts: the first can still include buffer effects
            t0 = time.perf_counter()
            port.write(burst)
            rates.append(len(burst) / (time.perf_counter() - t0))
        # The pty still holds up to ~16 kB (a second or more at the MCU's pace): wait until the firmware has
        # read it all, i.e. until it answers a STATUS request queued behind it, so that what runs next is
        # not delayed by this measurement's backlog.
        # The request goes again every 2 s: on a slow host the emulated firmware can fall behind the burst, its
        # receive ring overflows and a request in it is lost (seen on a 2-core VM: no answer in 30 s, 2 runs of 3).
        decoder, deadline = FrameDecoder(version=None), time.monotonic() + 30.0
        sequence, next_request = 1, 0.0
        while time.monotonic() < deadline:
            if time.monotonic() >= next_request:
                port.write(encode_message(StatusRequest(), sequence))
                sequence, next_request = sequence + 1, time.monotonic() + 2.0
            if any(isinstance(decode_message(f), Status) for f in decoder.feed(port.read(4096))):
                break
            time.sleep(0.01)
        else:
            raise RuntimeError("the QEMU controller did not answer STATUS after the throughput measurement")
        return max(rates)
    finally:
        port.close()


def _verify_applied(lines: Iterable[MonitorLine], expected_crc: Mapping[int, int],
                    sent_log: Mapping[int, int]) -> dict[str, Any]:
    """Check every frame the firmware latched against the duty CRC the host predicts for that frame id."""
    applied = [ln for ln in lines if ln.kind == "A" and ln.frame_id != 0]
    corrupted = [ln.frame_id for ln in applied if ln.crc32 != expected_crc.get(ln.frame_id)]
    latencies = [(ln.t_ns - sent_log[ln.frame_id]) / 1e6 for ln in applied if ln.frame_id in sent_log]
    return {"applied": len(applied), "corrupted_accepted": len(corrupted), "corrupted_ids": corrupted[:10],
            "latency_ms_median": float(np.median(latencies)) if latencies else None,
            "latency_ms_p99": float(np.percentile(latencies, 99)) if latencies else None}


def _vsync_clock(lines: Iterable[MonitorLine], fallback_period: float) -> tuple[float, float]:
    """(time of vsync 0, vsync period), both s on the host's monotonic clock, from the firmware's apply lines.

    A least-squares line through (vsync count, time read) gives the period; the
    offset is then moved to the earliest reading (each line is read some time
    after its tick, never before).
    """
    applied = [ln for ln in lines if ln.kind == "A"]
    if len(applied) < 10:
        first_s = applied[0].t_ns / 1e9 if applied else time.monotonic()
        return first_s - (applied[0].vsync if applied else 0) * fallback_period, fallback_period
    v = np.array([ln.vsync for ln in applied], np.float64)
    t = np.array([ln.t_ns for ln in applied], np.float64) / 1e9
    period, offset = np.polyfit(v - v[0], t, 1)
    offset += float(np.min(t - (offset + period * (v - v[0]))))
    return offset - v[0] * period, float(period)


# What each emulated board's link carries with room to spare: (frames/s, rows, cols, bits). mps2_an385's CMSDK UART
# (~10 kB/s) takes a 4x6x8-bit stream (52 bytes a frame) at 60 Hz, about half its capacity; 120 Hz of even 4x4 zones
# would fill ~90 %. lm3s6965evb's PL011 (~30-120 kB/s) takes it at 120 Hz; there a few per cent of the frames can be
# superseded on the 2-core VM (a frame late by the host's or QEMU's scheduling pairs up with the next one in one vsync).
QEMU_STREAM_DEFAULTS = {"mps2_an385": (60.0, 4, 6, 8), "lm3s6965evb": (120.0, 4, 6, 8)}


def qemu_stream_run(seconds: float = 60.0, hz: float | None = None, rows: int | None = None,
                    cols: int | None = None, bits: int | None = None, drive_gamma_x100: int = 220,
                    controller: QemuController | None = None, lead: float = 0.5) -> dict[str, Any]:
    """Stream zone frames at ``hz`` to the reference firmware in QEMU and verify every frame it applies.

    The firmware reports, for each frame it latches at vsync, the CRC-32 of the 16-bit
    duty values it drove (after its fixed-point drive curve); the host predicts that CRC
    with ``firmware_bridge.drive`` from what it sent under the frame id, so every applied
    frame is checked bit for bit, not sampled. Sends are locked to the controller's vsync
    clock, fitted from the firmware's apply lines (vsync count against the time read)
    and re-fitted every second, as a host that drives the same panel's video timing is:
    free-running at a nominal rate, the two clocks drift (QEMU's timers run late when the
    host is busy) and frames pair up in one vsync interval (superseded, latest-wins,
    not lost). Each frame goes out half a period before the tick it is meant for.
    Latency is from the host's write to the host reading the firmware's apply line (so
    it includes the UART transfer, the vsync wait and the monitor polling).
    """
    with _qemu_controller(controller) as qemu:
        return _qemu_stream(qemu, seconds, hz, rows, cols, bits, drive_gamma_x100, lead)


def _drained_stats(link: Link, timeout_s: float = 2.0) -> dict[str, Any]:
    """The link's statistics once no frame is pending: then every submitted frame is counted as sent or
    superseded, so differences of two such snapshots account for every frame submitted between them."""
    deadline = time.monotonic() + timeout_s
    while True:
        stats = link.stats()
        if (stats["frames_submitted"] == stats["frames_sent"] + stats["frames_superseded"]
                or time.monotonic() >= deadline):
            return stats
        time.sleep(0.005)


def _qemu_stream(controller: QemuController, seconds: float, hz: float | None, rows: int | None, cols: int | None,
                 bits: int | None, drive_gamma_x100: int, lead: float) -> dict[str, Any]:
    default_hz, default_rows, default_cols, default_bits = QEMU_STREAM_DEFAULTS[controller.board]
    hz, rows, cols, bits = hz or default_hz, rows or default_rows, cols or default_cols, bits or default_bits
    patterns, pattern_crc = _pattern_set(np.random.default_rng(3), rows, cols, bits, drive_gamma_x100)
    config = Config(rows=rows, cols=cols, bits=bits, drive_curve=1, drive_gamma_x100=drive_gamma_x100,
                    watchdog_ms=1000, heartbeat_ms=100)
    throughput = qemu_uart_throughput(controller)
    link = _qemu_link(controller, config)
    try:
        period = 1.0 / hz
        frame_id = 0

        def send_at(target: float) -> None:
            nonlocal frame_id
            delay = target - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            frame_id += 1
            link.send_zones(patterns[frame_id % len(patterns)], frame_id)

        # Warm-up: free-running for 1 s; the apply lines then give the controller's vsync clock.
        mark = len(controller.snapshot())
        start = time.monotonic()
        for i in range(int(hz)):
            send_at(start + i * period)
        time.sleep(0.05)
        clock = _vsync_clock(controller.snapshot(mark), period)
        # Stream: one frame per controller vsync (or per `step` of them), each sent `lead` of a period before the
        # tick it is meant for, the clock re-fitted every second from the last two seconds of apply lines (the
        # controller's timer drifts against the host's). Half a period measured as well as 0.8 and adds less delay.
        mark = len(controller.snapshot())
        before = _drained_stats(link)
        sent0, superseded0 = before["frames_sent"], before["frames_superseded"]
        first_id = frame_id + 1
        t0, vsync_period = clock
        step = max(1, round(1.0 / (hz * vsync_period)))  # vsyncs per frame
        k = int((time.monotonic() - t0) / vsync_period) + 2
        n = int(seconds * hz)
        refit_at = time.monotonic() + 1.0
        for _ in range(n):
            send_at(t0 + (k - lead) * vsync_period)
            k += step
            if time.monotonic() >= refit_at:
                recent = [ln for ln in controller.snapshot(mark) if ln.t_ns >= time.monotonic_ns() - 2e9]
                fitted = _vsync_clock(recent, vsync_period)
                # keep the frame schedule continuous: re-anchor k on the new clock
                k = round((t0 + k * vsync_period - fitted[0]) / fitted[1])
                t0, vsync_period = fitted
                refit_at += 1.0
        time.sleep(0.3)
        stats = _drained_stats(link)
        expected = {fid: pattern_crc[fid % len(patterns)] for fid in range(first_id, frame_id + 1)}
        lines = [ln for ln in controller.snapshot(mark) if ln.kind != "A" or ln.frame_id >= first_id]
        verified = _verify_applied(lines, expected, link.sent_log)
        applied = [ln for ln in lines if ln.kind == "A"]
        vsync_hz = ((applied[-1].vsync - applied[0].vsync) / ((applied[-1].t_ns - applied[0].t_ns) / 1e9)
                    if len(applied) > 1 and applied[-1].t_ns > applied[0].t_ns else None)
    finally:
        link.close()
    status = stats["controller_status"]
    sent = stats["frames_sent"] - sent0
    superseded = stats["frames_superseded"] - superseded0
    encoding = 1 if bits not in (8, 16) else 0  # what Link's 'auto' picks with a controller that packs
    wire_bytes = len(encode_message(Zones(frame_id=1, values=patterns[0], bits=bits, encoding=encoding), 1))
    return {
        "seconds": seconds, "hz": hz, "rows": rows, "cols": cols, "bits": bits, "bytes_per_frame": wire_bytes,
        "uart_bytes_per_s": round(throughput), "uart_load": wire_bytes * hz / throughput,
        "frames_submitted": n, "frames_sent": sent,
        "frames_superseded_on_host": superseded, "frames_applied": verified["applied"],
        "applied_fraction": verified["applied"] / n if n else 0.0,
        "corrupted_accepted": verified["corrupted_accepted"], "corrupted_ids": verified["corrupted_ids"],
        "latency_ms_median": verified["latency_ms_median"], "latency_ms_p99": verified["latency_ms_p99"],
        "firmware_status": status, "host_nacks": stats["nacks"], "host_reconnects": stats["reconnects"],
        "controller_vsync_hz": vsync_hz,
    }


def qemu_full_grid_run(frames: int = 6, rows: int = 48, cols: int = 48, bits: int = 16,
                       drive_gamma_x100: int = 220, controller: QemuController | None = None) -> dict[str, Any]:
    """The firmware's largest grid (48 x 48 x 16 bit, 4.6 kB per frame) at the rate the emulated UART carries.

    Frames go one at a time, each after the previous one was applied; every applied
    frame's duty CRC is checked, for the power-law and the linear drive curve.
    """
    from firmware_bridge.drive import duty_crc32

    rng = np.random.default_rng(4)
    result: dict[str, Any] = {"rows": rows, "cols": cols, "bits": bits}
    with _qemu_controller(controller) as qemu:
        for curve in (1, 0):
            config = Config(rows=rows, cols=cols, bits=bits, drive_curve=curve, drive_gamma_x100=drive_gamma_x100,
                            watchdog_ms=5000, heartbeat_ms=1000)
            link = _qemu_link(qemu, config, status_interval_s=0)
            try:
                mark = len(qemu.snapshot())
                expected, t0 = {}, time.monotonic()
                for fid in range(1, frames + 1):
                    values = rng.integers(0, 1 << bits, (rows, cols)).astype(np.uint16)
                    expected[fid] = duty_crc32(values, bits, curve, drive_gamma_x100)
                    link.send_zones(values, fid)
                    deadline = time.monotonic() + 5.0
                    while time.monotonic() < deadline and not any(
                            ln.kind == "A" and ln.frame_id == fid for ln in qemu.snapshot(mark)):
                        time.sleep(0.005)
                elapsed = time.monotonic() - t0
                verified = _verify_applied(qemu.snapshot(mark), expected, link.sent_log)
            finally:
                link.close()
            name = "power_law" if curve else "linear"
            result[name] = {"frames": frames, "applied": verified["applied"],
                            "corrupted_accepted": verified["corrupted_accepted"],
                            "frames_per_s": frames / elapsed}
    return result


def qemu_fault_run(hz: float = 120.0, rows: int = 4, cols: int = 6, bits: int = 8, bursts: int = 20,
                   controller: QemuController | None = None) -> dict[str, Any]:
    """Line noise between host and MCU, then an MCU reset through QEMU's monitor, mid-stream.

    Noise: a burst of 40 random non-zero bytes (no delimiter) written into the MCU's
    receive line before every 10th frame; each burst corrupts exactly the frame it
    lands in, so the firmware's CRC + framing error counters (from STATUS) must grow
    by exactly the number of bursts, and no corrupted frame may be applied. Reset:
    ``system_reset`` on QEMU's monitor; the firmware boots unconfigured, NACKs the
    next ZONES (not configured), the host re-sends CONFIG, and the stream resumes.
    ``resume_after_reset_s`` is from the reset command to the host reading the first
    frame applied after the reboot.
    """
    gamma_x100 = 220
    rng = np.random.default_rng(5)
    patterns, pattern_crc = _pattern_set(rng, rows, cols, bits, gamma_x100)
    config = Config(rows=rows, cols=cols, bits=bits, drive_curve=1, drive_gamma_x100=gamma_x100, watchdog_ms=1000,
                    heartbeat_ms=100)
    result: dict = {}
    with _qemu_controller(controller) as qemu:
        link = _qemu_link(qemu, config, status_interval_s=0.1)
        try:
            frame_id = 0
            mark = len(qemu.snapshot())

            def send() -> None:
                nonlocal frame_id
                frame_id += 1
                link.send_zones(patterns[frame_id % len(patterns)], frame_id)
                time.sleep(1.0 / hz)

            for _ in range(int(hz // 2)):
                send()
            time.sleep(0.3)
            before = dict(link.stats()["controller_status"])
            injected = 0
            k = 0
            while injected < bursts:
                k += 1
                if k % 10 == 0:
                    qemu.inject(bytes(b or 1 for b in rng.integers(0, 256, 40, dtype=np.uint8).tobytes()))
                    injected += 1
                send()
            for _ in range(int(hz // 4)):
                send()
            # Two STATUS replies at least; then until the counters show every burst, or 10 s (a STATUS reply can
            # lag on a loaded host: QEMU or the link's thread descheduled).
            time.sleep(0.5)
            deadline = time.monotonic() + 10.0
            while True:
                after = dict(link.stats()["controller_status"])
                errors = ((after["crc_errors"] + after["framing_errors"])
                          - (before["crc_errors"] + before["framing_errors"]))
                if errors >= injected or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            result.update({"noise_bursts": injected, "errors_counted_by_firmware": errors,
                           "all_bursts_counted": errors == injected})
            # MCU reset mid-stream.
            acked0 = link.stats()["config_acked"]
            reset_mark = len(qemu.snapshot())
            t_reset = qemu.reset()
            resumed = None
            deadline = time.monotonic() + 5.0
            while time.monotonic() < deadline and resumed is None:
                send()
                lines = qemu.snapshot(reset_mark)
                boot = next((i for i, ln in enumerate(lines) if ln.kind == "B"), None)
                if boot is not None:
                    resumed = next((ln for ln in lines[boot:] if ln.kind == "A" and ln.frame_id != 0), None)
            for _ in range(int(hz // 2)):
                send()
            time.sleep(0.3)
            stats = link.stats()
            expected = {fid: pattern_crc[fid % len(patterns)] for fid in range(1, frame_id + 1)}
            verified = _verify_applied(qemu.snapshot(mark), expected, link.sent_log)
            boot_lines = [ln.fields for ln in qemu.snapshot(reset_mark) if ln.kind == "B"]
            result.update({
                "reset_boot_line": " ".join(boot_lines[0]) if boot_lines else None,
                "resume_after_reset_s": (resumed.t_ns - t_reset) / 1e9 if resumed else None,
                "reconfigured": stats["config_acked"] - acked0, "host_nacks": stats["nacks"],
                "frames_applied": verified["applied"], "corrupted_accepted": verified["corrupted_accepted"],
                "firmware_status": stats["controller_status"],
            })
        finally:
            link.close()
    return result


def qemu_summary(seconds: float = 60.0, hz: float | None = None, progress: Callable[[str], object] | None = None,
                 board: str = "mps2_an385") -> dict[str, Any]:
    """The whole QEMU controller bench on one emulated MCU: stream, full grid, faults."""
    from firmware_bridge.qemu import QemuController

    say = progress or (lambda text: None)
    with QemuController(board=board) as controller:
        hz = hz or QEMU_STREAM_DEFAULTS[board][0]
        say(f"[1/3] {hz:g} Hz stream to the firmware in QEMU for {seconds:g} s, every applied frame verified")
        stream = qemu_stream_run(seconds, hz, controller=controller)
        say("[2/3] 48 x 48 x 16-bit frames at the emulated UART's pace, both drive curves")
        full = qemu_full_grid_run(controller=controller)
        say("[3/3] fault run: line noise, then an MCU reset through QEMU's monitor")
        faults = qemu_fault_run(hz, controller=controller)
    return {"board": board, "stream": stream, "full_grid": full, "faults": faults}


# --- reports: the lines ``edgehdr bridge bench`` prints ---------------------------------------------------------


def format_encode_write(ew: dict[str, Any], zones: int) -> str:
    return (f"encode+write {zones} x 16-bit zones ({ew['bytes']} bytes on the wire): median "
            f"{ew['median_ms']:.3f} ms, p99 {ew['p99_ms']:.3f} ms "
            f"({100 * ew['median_ms'] / (1000 / 60):.2f}% of a 60 fps frame)")


def format_stream(st: dict[str, Any]) -> str:
    return (f"stream {st['seconds']:g} s at {st['hz']:g} Hz: delivered {100 * st['delivered_fraction']:.2f}% "
            f"({st['received_by_controller']}/{st['submitted']}), applied {st['applied']}, "
            f"corrupted accepted {st['corrupted_accepted']} of {st['spot_checks']} spot checks, "
            f"send-to-apply latency median {st['latency_ms_median']:.2f} ms, p99 {st['latency_ms_p99']:.2f} ms")


def format_apply_on_receipt(st: dict[str, Any]) -> str:
    return (f"apply on receipt: delivered {100 * st['delivered_fraction']:.2f}%, send-to-apply latency median "
            f"{st['latency_ms_median']:.2f} ms, p99 {st['latency_ms_p99']:.2f} ms")


def format_link_faults(fr: dict[str, Any]) -> str:
    return (f"unplug detected after {fr['detect_unplug_s']:.3f} s; reconnected {fr['reconnect_after_replug_s']:.3f} s "
            f"after replug, first frame applied after {fr['first_frame_applied_after_replug_s']:.3f} s; "
            f"garbage: {fr['garbage_injections']} injections, {fr['frames_lost_to_garbage']} of "
            f"{fr['frames_sent_during_garbage']} frames lost, {fr['controller_errors_counted']} errors counted")


def format_qemu_summary(result: dict[str, Any]) -> str:
    """The QEMU bench (``qemu_summary``) as the lines ``edgehdr bridge bench --controller qemu`` prints."""
    st, full, fr = result["stream"], result["full_grid"], result["faults"]
    lines = [f"board {result['board']}: emulated link UART {st['uart_bytes_per_s'] / 1e3:.1f} kB/s (QEMU hands over "
             f"one byte per main-loop iteration), controller vsync {st['controller_vsync_hz'] or 0:.2f} Hz; stream "
             f"uses {st['rows']}x{st['cols']}x{st['bits']}-bit zones, {st['bytes_per_frame']} bytes a "
             f"frame, {100 * st['uart_load']:.0f}% of it",
             f"stream {st['seconds']:g} s at {st['hz']:g} Hz: sent {st['frames_sent']}/{st['frames_submitted']}, "
             f"applied {st['frames_applied']} ({100 * st['applied_fraction']:.2f}%), corrupted accepted "
             f"{st['corrupted_accepted']} (every applied frame's duty CRC checked), send-to-apply latency median "
             f"{st['latency_ms_median']:.2f} ms, p99 {st['latency_ms_p99']:.2f} ms; firmware STATUS "
             f"{st['firmware_status']}"]
    for curve in ("power_law", "linear"):
        r = full[curve]
        lines.append(f"{full['rows']}x{full['cols']}x{full['bits']}-bit, {curve.replace('_', ' ')} drive: applied "
                     f"{r['applied']}/{r['frames']}, corrupted accepted {r['corrupted_accepted']}, "
                     f"{r['frames_per_s']:.2f} frames/s")
    resume = fr["resume_after_reset_s"]
    lines.append(f"faults: {fr['noise_bursts']} noise bursts, {fr['errors_counted_by_firmware']} errors counted by "
                 f"the firmware; MCU reset: boot line '{fr['reset_boot_line']}', re-configured {fr['reconfigured']}x, "
                 f"resumed {'never' if resume is None else f'{resume:.3f} s'} after the reset; corrupted accepted "
                 f"{fr['corrupted_accepted']}")
    return "\n".join(lines)


def qemu_summary_ok(result: dict[str, Any]) -> bool:
    """Nothing corrupt applied anywhere, every noise burst counted, and the stream resumed after the reset."""
    st, full, fr = result["stream"], result["full_grid"], result["faults"]
    return (st["corrupted_accepted"] == 0 and fr["corrupted_accepted"] == 0 and fr["all_bursts_counted"]
            and fr["resume_after_reset_s"] is not None
            and all(full[c]["corrupted_accepted"] == 0 for c in ("power_law", "linear")))

