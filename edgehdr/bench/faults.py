"""``edgehdr bench --faults``: injected faults, each counted where an operator looks."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgehdr.progress import Progress

if TYPE_CHECKING:
    from edgehdr.pipeline.daemon import Runtime

__all__ = ["fault_run", "format_faults"]


def fault_run(*, width: int = 640, height: int = 360, fps: float = 30.0, quiet: bool = False) -> dict[str, Any]:
    """Source error, stall and a corrupt frame mid-stream, the serial link unplugged and replugged."""
    from edgehdr.camera.faults import FaultInjector
    from edgehdr.pipeline.config import validate
    from edgehdr.pipeline.daemon import build_runtime
    from firmware_bridge.simulator import ControllerSimulator
    from firmware_bridge.transports import PtyPair

    progress = Progress(3, quiet=quiet)
    cfg = validate({"source": {"width": width, "height": height, "fps": fps},
                    "planner": {"max_exposure_s": 10.0}, "preview": {"enabled": False},
                    "dimming": {"rows": 18, "cols": 32}})
    rt = build_runtime(cfg)
    pipeline, link, layout = rt.built_pipeline(), rt.link, rt.layout
    if rt.source is None or link is None or layout is None or rt.pty is None or rt.simulator is None:
        rt.close()
        raise RuntimeError("the fault run needs a source, dimming and the simulated controller link")
    faulty = FaultInjector(rt.source, raise_at=[60], stall_at=[120, 121], corrupt_at=[180])
    pipeline.source = faulty
    pipeline.read_timeout_s = 0.5
    pipeline.start()
    progress.step("source error at read 60, stall at 120-121, corrupt frame at 180")
    time.sleep(9.0)
    mid = rt.stats()
    progress.step("unplugging the controller link for 1 s, then replugging")
    path = rt.pty.link_path
    rt.simulator.stop()
    rt.pty.close()
    t_unplug = time.monotonic()
    while link.running and time.monotonic() - t_unplug < 5:
        time.sleep(0.005)
    detect_s = time.monotonic() - t_unplug
    time.sleep(1.0)
    rt.pty = pty = PtyPair(path)
    rt.simulator = simulator = ControllerSimulator(pty.controller, rows=layout.rows, cols=layout.cols,
                                                   vsync_hz=120.0).start()
    t_replug = time.monotonic()
    while not link.running and time.monotonic() - t_replug < 10:
        time.sleep(0.005)
    reconnect_s = time.monotonic() - t_replug
    applied0 = simulator.counters.frames_applied
    time.sleep(2.0)
    applied_after = simulator.counters.frames_applied - applied0
    progress.step("stopping")
    final = rt.close()
    stage_errors = {s["name"]: s["errors"] for s in final["stages"] if s["errors"]}
    return {
        "injected": faulty.injected, "source_restarts": final["source_restarts"],
        "source_stalls": final["source_stalls"], "frames_failed": final["frames_failed"],
        "stage_errors": stage_errors, "frames_completed": final["frames_completed"],
        "fps_before_unplug": mid["fps"], "unplug_detected_s": round(detect_s, 3),
        "link_back_after_replug_s": round(reconnect_s, 3), "zone_frames_applied_2s_after_replug": applied_after,
        "link_reconnects": final["link"]["reconnects"],
        "more": _more_faults(quiet=quiet),
    }


def _short_run(cfg: dict[str, Any], seconds: float, during: Callable[[Runtime], None] | None = None) -> dict[str, Any]:
    """Build, run for ``seconds`` (calling ``during(rt)`` once frames flow), close; the final statistics."""
    from edgehdr.pipeline.daemon import build_runtime

    rt = build_runtime(cfg)
    pipeline = rt.built_pipeline().start()
    try:
        deadline = time.monotonic() + 20
        while not pipeline.healthy() and time.monotonic() < deadline:
            time.sleep(0.05)
        if during is not None:
            during(rt)
        time.sleep(seconds)
        live = rt.stats()
    finally:
        final = rt.close()
    final["live"] = live
    return final


def _more_faults(*, quiet: bool = False) -> dict[str, Any]:
    """Disk-full outputs, a spoofed link datagram, a missing bridge port, a replay source: each counted where
    an operator looks (the run's statistics, which feed the log, ``/metrics`` and ``STATUS=``)."""
    import socket
    import subprocess
    import tempfile

    from edgehdr.pipeline.config import validate
    from firmware_bridge.protocol import Caps, encode_message
    from firmware_bridge.simulator import ControllerSimulator, UdpControllerEndpoint
    from firmware_bridge.transports import UdpTransport

    small = {"source": {"width": 320, "height": 200, "fps": 30.0}, "dimming": {"rows": 8, "cols": 12},
             "preview": {"enabled": False}}
    progress = Progress(4, quiet=quiet)
    result: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="edgehdr-faults-") as tmp:
        full = Path(tmp) / "full"
        full.mkdir()
        mounted = os.geteuid() == 0 and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1200k", "tmpfs", str(full)], capture_output=True).returncode == 0
        if mounted:
            try:
                cfg = validate({**small, "outputs": {"video": str(full / "rec.avi"), "frames_dir": str(full / "png"),
                                                     "frames_every_n": 10}})
                final = _short_run(cfg, 4.0)
                result["disk_full"] = {
                    "outputs": {o["sink"]: {"frames_written": o["frames_written"], "errors": o["errors"]}
                                for o in final["outputs"]},
                    "files": sorted(p.name for p in full.glob("*.avi")), "frames_failed": final["frames_failed"]}
            finally:
                subprocess.run(["umount", str(full)], capture_output=True)
        else:
            result["disk_full"] = {"skipped": "needs root to mount a 1.2 MB tmpfs"}
        progress.step("disk-full outputs (tmpfs of 1.2 MB)")

        endpoint = UdpControllerEndpoint(("127.0.0.1", 0))
        sim = ControllerSimulator(endpoint, rows=8, cols=12, vsync_hz=120.0).start()
        attacker = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        forged_sent = 0
        try:
            if endpoint.address is None:  # the simulator opened it
                raise RuntimeError("the UDP controller endpoint did not open")
            controller_port = endpoint.address[1]
            attacker.bind(("127.0.0.5", controller_port))
            forged = encode_message(Caps(version=9, fw_major=6, fw_minor=6, fw_patch=6, rows=1, cols=1, max_bits=8,
                                         features=0, max_fps=1, max_payload=16), 0)

            def spoof(rt: Runtime) -> None:
                nonlocal forged_sent
                transport = rt.link.transport if rt.link is not None else None
                local = transport.local_address if isinstance(transport, UdpTransport) else None
                if local is None:
                    raise RuntimeError("the spoofing run needs an open UDP controller link")
                for _ in range(20):
                    attacker.sendto(forged, ("127.0.0.1", local[1]))
                    forged_sent += 1
                    time.sleep(0.01)

            cfg = validate({**small, "bridge": {"port": f"udp:127.0.0.1:{controller_port}"}})
            final = _short_run(cfg, 2.0, spoof)
            result["spoofed_datagram"] = {"forged_sent": forged_sent, "link_state": final["link"]["state"],
                                          "rejections": final["link"]["rejections"],
                                          "frames_sent": final["link"]["frames_sent"],
                                          "frames_applied": sim.counters.frames_applied}
        finally:
            attacker.close()
            sim.stop()
        progress.step("spoofed CAPS(version 9) datagrams from 127.0.0.5 on a UDP link")

        cfg = validate({**small, "bridge": {"port": str(Path(tmp) / "ttyNOPE")}})
        final = _short_run(cfg, 2.0)
        result["missing_port"] = {"link_state": final["live"]["link"]["state"],
                                  "last_error": final["link"]["last_error"],
                                  "frames_unsent": final["link"].get("frames_unsent"),
                                  "capture_to_zones_ms_median": final["capture_to_zones_ms_median"],
                                  "frames_completed": final["frames_completed"]}
        progress.step("bridge port that does not exist")

        stack = Path(tmp) / "stack"
        subprocess.run([sys.executable, "-m", "edgehdr.cli", "-q", "synth", "-o", str(stack), "--width", "320",
                        "--height", "200"], check=True, capture_output=True)
        cfg = validate({"source": {"kind": "replay", "path": str(stack), "fps": 30.0},
                        "preview": {"enabled": False}})
        final = _short_run(cfg, 2.0)
        result["replay_default_dimming"] = {"frames_completed": final["frames_completed"],
                                            "frames_failed": final["frames_failed"]}
        progress.step("replay source with the default dimming configuration")
    return result


def format_faults(fr: dict[str, Any]) -> str:
    """The fault run as the lines ``edgehdr bench --faults`` prints: each failure and where it was counted."""
    lines = [f"faults: injected {fr['injected']}; source restarts {fr['source_restarts']}, stalls "
             f"{fr['source_stalls']}, frames failed {fr['frames_failed']} {fr['stage_errors']}; link unplug "
             f"detected in {fr['unplug_detected_s']} s, back {fr['link_back_after_replug_s']} s after replug, "
             f"{fr['zone_frames_applied_2s_after_replug']} zone frames applied in the next 2 s; "
             f"{fr['frames_completed']} frames completed"]
    more = fr["more"]
    disk = more["disk_full"]
    if "skipped" in disk:
        lines.append(f"  disk full: skipped ({disk['skipped']})")
    else:
        sinks = ", ".join(f"{k} {v['frames_written']} written/{v['errors']} errors counted"
                          for k, v in disk["outputs"].items())
        lines.append(f"  disk full (1.2 MB tmpfs): {sinks}; files {disk['files']}; frames failed "
                     f"{disk['frames_failed']} (outputs -> stats 'outputs', edgehdr_output_errors_total, STATUS=)")
    sp = more["spoofed_datagram"]
    lines.append(f"  spoofed CAPS from 127.0.0.5: {sp['forged_sent']} sent; link {sp['link_state']}, rejections "
                 f"{sp['rejections']}, {sp['frames_sent']} zone frames sent, {sp['frames_applied']} applied")
    mp = more["missing_port"]
    lines.append(f"  missing bridge port: link {mp['link_state']} ({mp['last_error']}); {mp['frames_unsent']} "
                 f"zone frames not sent, capture-to-zones {mp['capture_to_zones_ms_median']} (none recorded); "
                 f"{mp['frames_completed']} frames completed")
    rp = more["replay_default_dimming"]
    lines.append(f"  replay 320x200 with default dimming: {rp['frames_completed']} completed, "
                 f"{rp['frames_failed']} failed")
    return "\n".join(lines)
