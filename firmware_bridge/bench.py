"""Link benchmarks: encode+write cost, a sustained 120 Hz stream over a pty, and the fault run.

``edgehdr bridge bench`` prints the figures; nothing here asserts timings.
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import numpy as np

from firmware_bridge.link import Link
from firmware_bridge.protocol import Config, MsgType, Zones, encode_message
from firmware_bridge.simulator import ControllerSimulator
from firmware_bridge.transports import PtyPair, SerialTransport

__all__ = ["encode_write_ms", "stream_run", "fault_run"]


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
            latencies = [(t_apply - link.sent_log[fid]) / 1e6 for fid, t_apply in list(sim.applied_log)
                         if fid in link.sent_log]
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


def summary(zones: int = 2304, seconds: float = 60.0, hz: float = 120.0) -> dict:
    return {"encode_write": encode_write_ms(zones), "stream": stream_run(seconds, hz, zones),
            "stream_apply_on_receipt": stream_run(min(seconds, 10.0), hz, zones, vsync_hz=0),
            "faults": fault_run(hz, zones)}

