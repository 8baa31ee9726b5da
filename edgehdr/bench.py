"""``edgehdr bench``: median per-stage latency against OpenCV, measured in the same run.

For each frame size a synthetic 3-exposure bracket (with a small hand shake) goes
through alignment, merging and tone mapping, once with EdgeHDR and once with the
OpenCV equivalent (``AlignMTB``, ``MergeDebevec`` with the same response,
``TonemapReinhard``). The ratio column is OpenCV time / EdgeHDR time: above 1
means EdgeHDR is faster. OpenCV's tone mapper is timed without the sRGB/uint8
conversion EdgeHDR's includes, which favours OpenCV. ``align_mtb`` is the raw
MTB path (OpenCV's search inside); ``align_mtb_matched`` is the exposure-matched
MTB the runtime uses when the response is known (more robust, somewhat slower).
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from pathlib import Path

import cv2
import numpy as np

from edgehdr.hdr.align import align_mtb
from edgehdr.hdr.merge import merge_debevec
from edgehdr.progress import Progress
from edgehdr.synth import CameraModel, capture_bracket, make_scene, suggest_exposures
from edgehdr.timing import median_ms
from edgehdr.tonemap import reinhard_global, reinhard_local

__all__ = ["SIZES", "run_benchmark", "format_table"]

SIZES = {"720p": (720, 1280), "1080p": (1080, 1920), "4k": (2160, 3840)}


def run_benchmark(sizes=("720p", "1080p", "4k"), *, repeat: int = 7, seed: int = 0, quiet: bool = False) -> dict:
    """Measure every stage at every size; returns a JSON-ready dict."""
    for name in sizes:
        if name not in SIZES:
            raise ValueError(f"unknown size {name!r}; use one of {', '.join(SIZES)}")
    progress = Progress(len(sizes) * 2, quiet=quiet)
    rows = []
    for name in sizes:
        h, w = SIZES[name]
        progress.step(f"{name}: rendering a synthetic 3-exposure bracket ({w}x{h})")
        scene = make_scene(seed, h, w)
        camera = CameraModel()
        shot = capture_bracket(scene, suggest_exposures(scene.radiance, 3, 2.0), camera=camera, seed=seed,
                               camera_poses=[(3.0, -2.0, 0.0), (0.0, 0.0, 0.0), (-4.0, 1.0, 0.0)])
        bracket = shot.bracket
        frames_bgr = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in bracket.frames]
        times = bracket.relative_exposure.astype(np.float32)
        response = shot.response
        # OpenCV gets the same (floored) response: it takes the log of the LUT itself.
        response_cv = np.ascontiguousarray(np.exp(response.log_lut())[::-1].T.reshape(256, 1, 3))
        radiance = merge_debevec(bracket, response=response)
        radiance_bgr = cv2.cvtColor(radiance, cv2.COLOR_RGB2BGR)
        mtb = cv2.createAlignMTB()
        merger = cv2.createMergeDebevec()
        tonemapper = cv2.createTonemapReinhard()
        progress.step(f"{name}: timing {repeat} runs per stage")
        stage = {
            "align_mtb": (
                median_ms(lambda: align_mtb(bracket.frames), repeat),
                median_ms(lambda: mtb.process(frames_bgr, [f.copy() for f in frames_bgr]), repeat),
            ),
            "align_mtb_matched": (
                median_ms(lambda: align_mtb(bracket.frames, exposures=bracket.relative_exposure,
                                             response=response), repeat),
                median_ms(lambda: mtb.process(frames_bgr, [f.copy() for f in frames_bgr]), repeat),
            ),
            "merge": (
                median_ms(lambda: merge_debevec(bracket, response=response), repeat),
                median_ms(lambda: merger.process(frames_bgr, times, response_cv), repeat),
            ),
            "tonemap_global": (
                median_ms(lambda: reinhard_global(radiance), repeat),
                median_ms(lambda: tonemapper.process(radiance_bgr), repeat),
            ),
        }
        local_ms = median_ms(lambda: reinhard_local(radiance), repeat)
        for key, (ours, ocv) in stage.items():
            rows.append({"size": name, "stage": key, "edgehdr_ms": round(ours, 2), "opencv_ms": round(ocv, 2),
                         "ratio": round(ocv / ours, 2)})
        rows.append({"size": name, "stage": "tonemap_local", "edgehdr_ms": round(local_ms, 2), "opencv_ms": None,
                     "ratio": None, "local_over_global": round(local_ms / stage["tonemap_global"][0], 2)})
    return {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "opencv": cv2.__version__, "numpy": np.__version__},
        "repeat": repeat,
        "exposures": 3,
        "rows": rows,
    }


def format_table(result: dict) -> str:
    lines = [f"{'size':<6} {'stage':<18} {'edgehdr ms':>11} {'opencv ms':>10} {'ratio':>7}  note",
             "-" * 68]
    for row in result["rows"]:
        ocv = "-" if row["opencv_ms"] is None else f"{row['opencv_ms']:.2f}"
        ratio = "-" if row["ratio"] is None else f"{row['ratio']:.1f}x"
        note = f"local/global = {row['local_over_global']:.2f}" if "local_over_global" in row else ""
        lines.append(f"{row['size']:<6} {row['stage']:<18} {row['edgehdr_ms']:>11.2f} {ocv:>10} {ratio:>7}  {note}")
    m = result["machine"]
    lines.append(f"(median of {result['repeat']} runs, {result['exposures']} exposures; {m['cpus']} CPUs, "
                 f"OpenCV {m['opencv']}, Python {m['python']}; ratio = OpenCV ms / EdgeHDR ms)")
    return "\n".join(lines)


def dumps(result: dict) -> str:
    return json.dumps(result, indent=2)


def merge_quality_report(seeds=range(10), *, height: int = 360, width: int = 640, quiet: bool = False) -> dict:
    """Merge quality against exact ground truth over synthetic scenes (PU21-PSNR, dB).

    Per scene: EdgeHDR vs ``cv2.MergeDebevec`` with the same (known) response; a
    Debevec-calibrated response vs the known one (calibrated radiance scale-aligned
    once, globally, since calibration fixes radiance only up to scale); and PU21-PSNR
    inside the moving regions with and without deghosting.
    """
    from edgehdr.hdr.crf import calibrate_debevec
    from edgehdr.quality import pu21_psnr

    seeds = list(seeds)
    progress = Progress(len(seeds), quiet=quiet)
    rows = []
    for seed in seeds:
        progress.step(f"scene {seed}")
        scene = make_scene(seed, height, width, moving_objects=2, object_speed_px=0.02 * width)
        static = capture_bracket(make_scene(seed, height, width), suggest_exposures(scene.radiance, 3), seed=seed)
        moving = capture_bracket(scene, suggest_exposures(scene.radiance, 3), seed=seed)
        b, truth, resp = static.bracket, static.radiance, static.response
        ours = merge_debevec(b, response=resp)
        lut = np.ascontiguousarray(np.exp(resp.log_lut())[::-1].T.reshape(256, 1, 3))
        cv = cv2.cvtColor(cv2.createMergeDebevec().process([cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in b.frames],
                                                           b.relative_exposure.astype(np.float32), lut),
                          cv2.COLOR_BGR2RGB)
        calibrated = merge_debevec(b, response=calibrate_debevec(b.frames, b.relative_exposure))
        calibrated *= np.float32(np.exp(np.median(np.log(ours / calibrated))))
        plain = merge_debevec(moving.bracket, response=resp)
        clean = merge_debevec(moving.bracket, response=resp, deghost=True, reference_index=moving.reference_index)
        mask = moving.motion_mask
        rows.append({
            "seed": seed, "kind": scene.kind,
            "edgehdr_db": round(pu21_psnr(ours, truth), 2),
            "opencv_db": round(pu21_psnr(cv, truth), 2),
            "calibrated_db": round(pu21_psnr(calibrated, truth), 2),
            "moving_plain_db": round(pu21_psnr(plain, moving.radiance, mask=mask), 2),
            "moving_deghost_db": round(pu21_psnr(clean, moving.radiance, mask=mask), 2),
        })
    return {"size": [width, height], "exposures": 3, "rows": rows}


def format_quality(report: dict) -> str:
    head = (f"{'seed':>4} {'kind':<8} {'edgehdr':>8} {'opencv':>8} {'calibr.':>8} "
            f"{'moving':>8} {'deghost':>8}   (PU21-PSNR dB)")
    lines = [head, "-" * len(head)]
    for r in report["rows"]:
        lines.append(f"{r['seed']:>4} {r['kind']:<8} {r['edgehdr_db']:>8.2f} {r['opencv_db']:>8.2f} "
                     f"{r['calibrated_db']:>8.2f} {r['moving_plain_db']:>8.2f} {r['moving_deghost_db']:>8.2f}")
    mean = {k: float(np.mean([r[k] for r in report["rows"]])) for k in
            ("edgehdr_db", "opencv_db", "calibrated_db", "moving_plain_db", "moving_deghost_db")}
    lines.append(f"{'mean':>4} {'':<8} {mean['edgehdr_db']:>8.2f} {mean['opencv_db']:>8.2f} "
                 f"{mean['calibrated_db']:>8.2f} {mean['moving_plain_db']:>8.2f} {mean['moving_deghost_db']:>8.2f}")
    w, h = report["size"]
    lines.append(f"({w}x{h}, {report['exposures']} exposures; edgehdr/opencv: known response; calibr.: Debevec "
                 "response from the stack; moving/deghost: inside moving regions without/with deghosting)")
    return "\n".join(lines)


def dimming_benchmark(*, repeat: int = 15, seed: int = 0, quiet: bool = False) -> dict:
    """Median ms at 1080p with 48 x 48 = 2304 zones: zone values + backlight + LCD compensation per heuristic.

    Also times each part and, for scale, OpenCV resizing a frame (the backlight upsampling step).
    """
    from edgehdr.dimming import BacklightModel, LedLayout, display_target, lcd_compensation, zone_light, zone_statistics
    from edgehdr.dimming.zones import HEURISTICS

    progress = Progress(2, quiet=quiet)
    progress.step("rendering a 1080p synthetic target")
    layout = LedLayout(rows=48, cols=48, width_px=1920, height_px=1080)
    target = display_target(make_scene(seed, 1080, 1920).radiance, layout)
    model = BacklightModel(layout)
    backlight = np.empty((1080, 1920), np.float32)
    lcd = np.empty(target.shape, np.uint8)
    progress.step(f"timing {repeat} runs per algorithm")
    rows = []
    for algorithm in HEURISTICS:
        def run():
            stats = zone_statistics(target, layout, histogram=algorithm == "percentile")
            light = zone_light(target, layout, algorithm, stats=stats)
            model.simulate(light, out=backlight)
            lcd_compensation(target, backlight, layout, out=lcd)

        rows.append({"algorithm": algorithm, "total_ms": round(median_ms(run, repeat), 2)})
    light = zone_light(target, layout, "sqrt")
    parts = {
        "zone_statistics_ms": median_ms(lambda: zone_statistics(target, layout), repeat),
        "backlight_ms": median_ms(lambda: model.simulate(light, out=backlight), repeat),
        "lcd_compensation_ms": median_ms(lambda: lcd_compensation(target, backlight, layout, out=lcd), repeat),
    }
    return {"size": "1080p", "zones": layout.zones, "repeat": repeat, "rows": rows,
            "parts": {k: round(v, 2) for k, v in parts.items()}}


def dimming_quality_table(seeds=range(10), *, height: int = 540, width: int = 960, rows: int = 24, cols: int = 32,
                          quiet: bool = False) -> dict:
    """PU-PSNR, halo and power of every algorithm over synthetic scenes; the optimiser at each heuristic's power."""
    from edgehdr.dimming import (
        BacklightModel,
        LedLayout,
        dimming_metrics,
        display_target,
        lcd_compensation,
        optimal_zone_light,
        quantise_within_budget,
        simulate_display,
        zone_light,
    )
    from edgehdr.dimming.zones import HEURISTICS

    layout = LedLayout(rows=rows, cols=cols, width_px=width, height_px=height)
    model = BacklightModel(layout)
    seeds = list(seeds)
    progress = Progress(len(seeds), quiet=quiet)

    def evaluate(light, target, budget=None):
        light = layout.light_from_zone_values(quantise_within_budget(light, layout, budget)).astype(np.float32)
        backlight = model.simulate(light)
        shown = simulate_display(lcd_compensation(target, backlight, layout), backlight, layout)
        return dimming_metrics(target, shown, light, layout)

    results = []
    for seed in seeds:
        progress.step(f"scene {seed}: heuristics and the optimiser at each heuristic's power")
        target = display_target(make_scene(seed, height, width).radiance, layout)
        for algorithm in HEURISTICS:
            light = zone_light(target, layout, algorithm)
            m = evaluate(light, target)
            opt = optimal_zone_light(target, layout, model=model, init=light, power_budget=m["power"])
            mo = evaluate(opt, target, budget=m["power"])  # 12-bit codes rounded within the budget
            results.append({"seed": seed, "algorithm": algorithm, **{k: m[k] for k in ("pu_psnr_db", "halo_pu", "power",
                                                                                      "clipped_fraction")},
                            "optimal_pu_psnr_db": mo["pu_psnr_db"], "optimal_halo_pu": mo["halo_pu"],
                            "optimal_power": mo["power"]})
    return {"panel": [width, height], "zones": [rows, cols], "rows": results}


def format_dimming(bench: dict | None, table: dict | None) -> str:
    lines = []
    if bench:
        lines.append(f"1080p, {bench['zones']} zones: zone values + backlight + LCD compensation (median of "
                     f"{bench['repeat']})")
        for r in bench["rows"]:
            lines.append(f"  {r['algorithm']:<11} {r['total_ms']:6.2f} ms")
        p = bench["parts"]
        lines.append(f"  parts (sqrt): statistics {p['zone_statistics_ms']:.2f} ms, backlight "
                     f"{p['backlight_ms']:.2f} ms, LCD {p['lcd_compensation_ms']:.2f} ms")
    if table:
        w, h = table["panel"]
        zr, zc = table["zones"]
        lines.append(f"quality over {len({r['seed'] for r in table['rows']})} scenes ({w}x{h}, {zr}x{zc} zones); "
                     "optimal = optimisation at the heuristic's power budget")
        lines.append(f"  {'algorithm':<11} {'PU-PSNR':>8} {'halo PU':>8} {'power':>7} {'clipped':>8} | "
                     f"{'optimal':>8} {'halo PU':>8} {'power':>7}  wins")
        for algorithm in dict.fromkeys(r["algorithm"] for r in table["rows"]):
            rs = [r for r in table["rows"] if r["algorithm"] == algorithm]

            def mean(key):
                vals = [r[key] for r in rs if r[key] is not None]
                return float(np.mean(vals)) if vals else float("nan")

            wins = sum(r["optimal_pu_psnr_db"] > r["pu_psnr_db"] and r["optimal_power"] <= r["power"] + 1e-9 for r in rs)
            lines.append(f"  {algorithm:<11} {mean('pu_psnr_db'):8.2f} {mean('halo_pu'):8.3f} {mean('power'):7.4f} "
                         f"{mean('clipped_fraction'):8.3f} | {mean('optimal_pu_psnr_db'):8.2f} "
                         f"{mean('optimal_halo_pu'):8.3f} {mean('optimal_power'):7.4f}  {wins}/{len(rs)}")
    return "\n".join(lines)


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def runtime_benchmark(seconds: float = 60.0, *, width: int = 1920, height: int = 1080, fps: float = 30.0,
                      warmup_s: float = 5.0, memory_every_s: float = 10.0, quiet: bool = False) -> dict:
    """The daemon's pipeline on the synthetic camera: sustained fps, drops, latency, memory.

    Synthetic 3-exposure rolling bracket at ``fps``; align (exposure-matched MTB at 1/2
    scale), merge with exposure planning, Reinhard tone mapping with temporal
    adaptation, 48 x 48-zone dimming, zones over a pty to the controller simulator.
    Figures cover the window after ``warmup_s`` (JIT compilation, planner settling).
    """
    from edgehdr.pipeline.config import validate
    from edgehdr.pipeline.daemon import build_runtime
    from edgehdr.warmup import limit_blas_threads

    limit_blas_threads()
    cfg = validate({"source": {"width": width, "height": height, "fps": fps},
                    "planner": {"max_exposure_s": 10.0}, "preview": {"enabled": False}})
    rt = build_runtime(cfg)
    rt.pipeline.start()
    progress = Progress(3, quiet=quiet)
    progress.step(f"warming up {warmup_s:g} s")
    time.sleep(warmup_s)
    base = rt.stats()
    with rt.pipeline._lat_lock:
        rt.pipeline._latency.clear()
    memory = [(0.0, _rss_mb())]
    progress.step(f"measuring {seconds:g} s at {width}x{height}, {fps:g} fps")
    t0 = time.monotonic()
    next_mem = t0 + memory_every_s
    while time.monotonic() - t0 < seconds:
        time.sleep(0.2)
        if time.monotonic() >= next_mem:
            memory.append((round(time.monotonic() - t0, 1), _rss_mb()))
            next_mem += memory_every_s
    end = rt.stats()
    memory.append((round(time.monotonic() - t0, 1), _rss_mb()))
    progress.step("stopping")
    final = rt.close()
    window = end["elapsed_s"] - base["elapsed_s"]
    captured = end["frames_captured"] - base["frames_captured"]
    completed = end["frames_completed"] - base["frames_completed"]
    t_mem = np.array([t for t, _ in memory])
    rss = np.array([m for _, m in memory])
    # RSS moves by tens of MB with the frames in flight at the sampling instant (each ~70 MB at
    # 1080p), and the allocator's per-thread arenas fill during the first minute. So: medians of
    # minute 2 and of the last minute, and the slope after the first minute (runs >= 3 min);
    # shorter runs compare their first and last minute.
    settle = 60.0 if t_mem.max() >= 180.0 else 0.0
    first = np.median(rss[(t_mem >= settle) & (t_mem <= settle + 60.0)])
    last = np.median(rss[t_mem >= t_mem.max() - 60.0])
    tail = t_mem >= settle
    slope = float(np.polyfit(t_mem[tail], rss[tail], 1)[0]) * 60.0 if tail.sum() > 2 else 0.0
    return {
        "size": [width, height], "target_fps": fps, "seconds": round(window, 2),
        "fps": round(completed / window, 2), "frames_captured": captured, "frames_completed": completed,
        "frames_dropped": end["frames_dropped"] - base["frames_dropped"],
        "frames_failed": end["frames_failed"] - base["frames_failed"],
        "drop_fraction": round(1 - completed / captured, 4) if captured else None,
        "capture_to_zones_ms_median": end["capture_to_zones_ms_median"],
        "capture_to_zones_ms_p99": end["capture_to_zones_ms_p99"],
        "stages": end["stages"], "controller_applied": end.get("controller", {}).get("frames_applied"),
        "link_reconnects": final.get("link", {}).get("reconnects"),
        "rss_mb": [(t, round(m, 1)) for t, m in memory],
        "rss_settle_s": settle,
        "rss_first_minute_median_mb": round(float(first), 1), "rss_last_minute_median_mb": round(float(last), 1),
        "rss_change_after_warmup": round(float((last - first) / first), 4),
        "rss_trend_mb_per_min": round(slope, 3),
    }


def fault_run(*, width: int = 640, height: int = 360, fps: float = 30.0, quiet: bool = False) -> dict:
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
    faulty = FaultInjector(rt.source, raise_at=[60], stall_at=[120, 121], corrupt_at=[180])
    rt.pipeline.source = faulty
    rt.pipeline.read_timeout_s = 0.5
    rt.pipeline.start()
    progress.step("source error at read 60, stall at 120-121, corrupt frame at 180")
    time.sleep(9.0)
    mid = rt.stats()
    progress.step("unplugging the controller link for 1 s, then replugging")
    path = rt.pty.link_path
    rt.simulator.stop()
    rt.pty.close()
    t_unplug = time.monotonic()
    while rt.link.running and time.monotonic() - t_unplug < 5:
        time.sleep(0.005)
    detect_s = time.monotonic() - t_unplug
    time.sleep(1.0)
    rt.pty = PtyPair(path)
    rt.simulator = ControllerSimulator(rt.pty.controller, rows=rt.layout.rows, cols=rt.layout.cols,
                                       vsync_hz=120.0).start()
    t_replug = time.monotonic()
    while not rt.link.running and time.monotonic() - t_replug < 10:
        time.sleep(0.005)
    reconnect_s = time.monotonic() - t_replug
    applied0 = rt.simulator.counters.frames_applied
    time.sleep(2.0)
    applied_after = rt.simulator.counters.frames_applied - applied0
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


def _short_run(cfg: dict, seconds: float, during=None) -> dict:
    """Build, run for ``seconds`` (calling ``during(rt)`` once frames flow), close; the final statistics."""
    from edgehdr.pipeline.daemon import build_runtime

    rt = build_runtime(cfg)
    rt.pipeline.start()
    try:
        deadline = time.monotonic() + 20
        while not rt.pipeline.healthy() and time.monotonic() < deadline:
            time.sleep(0.05)
        if during is not None:
            during(rt)
        time.sleep(seconds)
        live = rt.stats()
    finally:
        final = rt.close()
    final["live"] = live
    return final


def _more_faults(*, quiet: bool = False) -> dict:
    """Disk-full outputs, a spoofed link datagram, a missing bridge port, a replay source: each counted where
    an operator looks (the run's statistics, which feed the log, ``/metrics`` and ``STATUS=``)."""
    import socket
    import subprocess
    import tempfile

    from edgehdr.pipeline.config import validate
    from firmware_bridge.protocol import Caps, encode_message
    from firmware_bridge.simulator import ControllerSimulator, UdpControllerEndpoint

    small = {"source": {"width": 320, "height": 200, "fps": 30.0}, "dimming": {"rows": 8, "cols": 12},
             "preview": {"enabled": False}}
    progress = Progress(4, quiet=quiet)
    result = {}
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
            attacker.bind(("127.0.0.5", endpoint.address[1]))
            forged = encode_message(Caps(version=9, fw_major=6, fw_minor=6, fw_patch=6, rows=1, cols=1, max_bits=8,
                                         features=0, max_fps=1, max_payload=16), 0)

            def spoof(rt):
                nonlocal forged_sent
                local = rt.link.transport.local_address
                for _ in range(20):
                    attacker.sendto(forged, ("127.0.0.1", local[1]))
                    forged_sent += 1
                    time.sleep(0.01)

            cfg = validate({**small, "bridge": {"port": f"udp:127.0.0.1:{endpoint.address[1]}"}})
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
