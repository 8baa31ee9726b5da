"""``edgehdr bench --runtime``: the daemon's pipeline sustained: fps, drops, latency, memory."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from edgehdr.progress import Progress

__all__ = ["format_runtime", "runtime_benchmark"]


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    """The process's peak resident set (``VmHWM``), MB; what ``/usr/bin/time -v`` reports as maximum RSS."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    raise OSError("/proc/self/status has no VmHWM line")


def _rss_split_mb() -> dict[str, float]:
    """Resident memory by kind, MB: ``anonymous`` (heap, arrays: the process's own) and ``file`` (mapped library
    code and data, clean pages the kernel reclaims under pressure and re-reads when touched)."""
    fields = {"Rss:": 0.0, "Anonymous:": 0.0}
    with open("/proc/self/smaps_rollup") as fh:
        for line in fh:
            key = line.split(":", 1)[0] + ":"
            if key in fields:
                fields[key] = int(line.split()[1]) / 1024.0
    return {"anonymous": round(fields["Anonymous:"], 1), "file": round(fields["Rss:"] - fields["Anonymous:"], 1)}


def _reset_peak_rss() -> bool:
    """Reset the process's ``VmHWM`` to its current RSS (Linux >= 4.0, ``/proc/self/clear_refs``); False if not."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _cpu_s() -> float:
    """User + system CPU time of the process (all threads), s."""
    t = os.times()
    return t.user + t.system


def _thread_cpu_s() -> dict[int, float]:
    """User + system CPU time of each live thread of this process, s, by native thread id (Linux's
    ``/proc/self/task/*/stat``; empty elsewhere). A thread that ended meanwhile is missing."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    times: dict[int, float] = {}
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return times
    for tid in tasks:
        try:
            with open(f"/proc/self/task/{tid}/stat") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()  # after the command name, which may hold spaces
        except OSError:
            continue
        times[int(tid)] = (int(fields[11]) + int(fields[12])) / tick  # utime, stime (fields 14 and 15)
    return times


# How the per-thread CPU is grouped: Python threads by name; every other thread is a native worker (numba's
# OpenMP team, ONNX Runtime's pool, BLAS).
_THREAD_GROUPS = (("pipeline", ("capture", "stage:")), ("link", ("link:", "controller-sim")), ("main", ("MainThread",)))


def _thread_group_cpu_s(before: dict[int, float], after: dict[int, float]) -> dict[str, float]:
    """CPU seconds between two ``_thread_cpu_s`` snapshots, summed by group: ``pipeline`` (the capture and stage
    threads), ``link`` (the link and the controller simulator), ``main``, ``other_python`` and ``native_workers``.
    Python threads are named as they are now: call it while the measured threads still run."""
    import threading

    names = {t.native_id: t.name for t in threading.enumerate() if t.native_id is not None}
    groups = {"pipeline": 0.0, "link": 0.0, "main": 0.0, "other_python": 0.0, "native_workers": 0.0}
    for tid, seconds in after.items():
        spent = seconds - before.get(tid, 0.0)
        name = names.get(tid)
        if name is None:
            groups["native_workers"] += spent
            continue
        group = next((g for g, prefixes in _THREAD_GROUPS if name.startswith(prefixes)), "other_python")
        groups[group] += spent
    return groups


def runtime_benchmark(seconds: float = 60.0, *, width: int = 1920, height: int = 1080, fps: float = 30.0,
                      warmup_s: float = 5.0, memory_every_s: float = 1.0, quiet: bool = False, shake_px: int = 0,
                      overrides: dict[str, dict[str, Any]] | None = None) -> dict[str, Any]:
    """The daemon's pipeline on the synthetic camera: sustained fps, drops, latency, memory.

    Synthetic 3-exposure rolling bracket at ``fps``; align (exposure-matched MTB at 1/2
    scale), merge with exposure planning, Reinhard tone mapping with temporal
    adaptation, 48 x 48-zone dimming, zones over a pty to the controller simulator.
    Kernels are compiled (or loaded from numba's cache) before the pipeline starts, as the
    daemon does; figures cover the window after ``warmup_s`` (planner settling, first frames):
    CPU % is the process's CPU time (all threads) over the window's wall time (100 % =
    one core); RSS is sampled every ``memory_every_s``; the peak is the process's
    high-water mark (``VmHWM``) from the moment frames start (the mark is reset then; the start-up's own peak,
    what ``/usr/bin/time -v`` would report if higher, is in ``rss_startup_mb``).
    ``shake_px``: the synthetic camera's hand shake (0: on a tripod), which the alignment then finds and the merge
    applies. ``overrides`` (section -> {key: value}) change the daemon configuration.
    The planner may expose up to 10 s (``[planner] max_exposure_s``): the synthetic scene's radiance scale is
    arbitrary, so that stands for a 1/30 s exposure of a scene 300 times brighter. Under the daemon's default
    limit (1/30 s) the planner runs out of exposure on this scene (1080p: all three frames at 1/30 s, gains 4.6, 8
    and 8; 8.9 % of the samples black in every frame), and the merge spends about a fifth more on them.
    """
    from edgehdr.pipeline.config import validate
    from edgehdr.pipeline.daemon import build_runtime, falling_behind, open_source_and_warm_up, usable_cores
    from edgehdr.warmup import limit_library_threads, settle_heap

    limit_library_threads()
    startup_mb = {"imported": round(_rss_mb(), 1)}  # the runtime's modules (numba, OpenCV, NumPy) loaded
    raw: dict[str, dict[str, Any]] = {"source": {"width": width, "height": height, "fps": fps, "shake_px": shake_px},
                                      "planner": {"max_exposure_s": 10.0}, "preview": {"enabled": False}}
    for section, values in (overrides or {}).items():  # e.g. {"run": {"queue_size": 1}}
        raw.setdefault(section, {}).update(values)
    cfg = validate(raw)
    progress = Progress(4, quiet=quiet)
    progress.step("the camera's scene, then the kernels: compiling, or loading numba's cache")
    # As the daemon does: the source first (open_source: the synthetic scene's layers before LLVM's memory), and the
    # kernels before the frames: on a cold numba cache (a fresh install) they would otherwise compile on the first
    # frames, inside the measured window (a first run measured 18 fps and a 7.7 s p99.9 that way).
    source, _ = open_source_and_warm_up(cfg)
    startup_mb["kernels"] = round(_rss_mb(), 1)
    rt = build_runtime(cfg, source=source)
    pipeline = rt.built_pipeline()
    settle_heap()
    startup_mb["built"] = round(_rss_mb(), 1)  # source, stages, link and simulator, before the first frame
    split_before = _rss_split_mb()
    # The start-up's own high-water mark (the synthetic camera's 1080p scene: 322 MB when built after the kernels
    # were loaded, 250 MB before them), then the mark reset so that the peak reported is the running pipeline's.
    startup_mb["peak"] = round(_peak_rss_mb(), 1)
    peak_is_running = _reset_peak_rss()
    pipeline.start()
    progress.step(f"warming up {warmup_s:g} s")
    time.sleep(warmup_s)
    base = rt.stats()
    # Windows that hold the whole measured run (a stage keeps its last 600 calls by default: the figures of a
    # short run included the warm-up's, those of a long one covered its last 20 s only).
    pipeline.reset_latency_window(int(seconds * max(fps, 1.0) * 1.5) + 100)
    cpu0, wall0, threads0 = _cpu_s(), time.monotonic(), _thread_cpu_s()
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
    cpu_s = _cpu_s() - cpu0
    thread_groups = _thread_group_cpu_s(threads0, _thread_cpu_s())
    cpu_percent = 100.0 * cpu_s / (time.monotonic() - wall0)
    memory.append((round(time.monotonic() - t0, 1), _rss_mb()))
    peak_mb = _peak_rss_mb()
    split_running = _rss_split_mb()
    progress.step("stopping")
    final = rt.close()
    window = end["elapsed_s"] - base["elapsed_s"]
    captured = end["frames_captured"] - base["frames_captured"]
    completed = end["frames_completed"] - base["frames_completed"]
    dropped = end["frames_dropped"] - base["frames_dropped"]
    skipped = end["frames_skipped"] - base["frames_skipped"]  # capture slots the camera let pass: never captured
    failed = end["frames_failed"] - base["frames_failed"]
    # CPU time of each stage's thread (and of the capture thread) per completed frame over the window: frames
    # dropped after a stage still cost that stage, so this is what a delivered frame costs, stage by stage.
    base_cpu = {st["name"]: st.get("cpu_s_total") or 0.0 for st in base["stages"]}
    stage_cpu = {st["name"]: round(1e3 * ((st.get("cpu_s_total") or 0.0) - base_cpu.get(st["name"], 0.0))
                                   / max(completed, 1), 2) for st in end["stages"]}
    settle, span, first, last, slope = rss_summary([t for t, _ in memory], [m for _, m in memory])
    rss = np.array([m for _, m in memory])
    return {
        "size": [width, height], "target_fps": fps, "shake_px": cfg["source"]["shake_px"], "seconds": round(window, 2),
        "fps": round(completed / window, 2), "frames_captured": captured, "frames_completed": completed,
        "frames_dropped": dropped, "frames_failed": failed,
        # Counted drops and failures over the frames the window offered (captured, and slots the camera let pass):
        # 1 - completed / captured is off by the frames in flight at the window's two ends (it read -0.03 % on a
        # run that dropped none).
        "drop_fraction": round((dropped + failed) / (captured + skipped), 4) if captured + skipped else None,
        "capture_to_zones_ms_median": end["capture_to_zones_ms_median"],
        "capture_to_zones_ms_p99": end["capture_to_zones_ms_p99"],
        "capture_to_zones_ms_p999": end["capture_to_zones_ms_p999"],
        # the bounded pools ([source] buffers, [run] radiance_buffers) over the whole run, warm-up included
        "buffers": {"source_waits": end.get("source_buffer_waits", 0),
                    "source_wait_s": end.get("source_buffer_wait_s", 0.0),
                    "source_stacks": getattr(rt.source, "stacks_allocated", None),
                    "source_max_stacks": getattr(rt.source, "max_stacks", None),
                    "radiance": end.get("radiance_buffers")},
        "cpu_percent": round(cpu_percent, 1), "cpu_ms_per_frame": round(1e3 * cpu_s / max(completed, 1), 2),
        "stage_cpu_ms_per_frame": stage_cpu,
        # CPU by thread group over the window (Linux; empty dict elsewhere): the pipeline's own threads, the kernels'
        # native worker threads, the link and the controller simulator
        "thread_cpu_ms_per_frame": ({k: round(1e3 * v / max(completed, 1), 2) for k, v in thread_groups.items()}
                                    if threads0 else {}),
        # why the window lost frames (the daemon logs the same), or None
        "behind": falling_behind(base, end, cpu_s=cpu_s, cores=usable_cores()),
        "rss_peak_mb": round(peak_mb, 1),
        # True: rss_peak_mb is the running pipeline's (VmHWM reset when frames started); False: the process's,
        # start-up included (the reset is not available).
        "rss_peak_is_running": peak_is_running,
        "rss_median_mb": round(float(np.median(rss)), 1),
        "rss_startup_mb": startup_mb, "rss_split_before_frames_mb": split_before,
        "rss_split_running_mb": split_running,
        "stages": end["stages"], "controller_applied": end.get("controller", {}).get("frames_applied"),
        "link_reconnects": final.get("link", {}).get("reconnects"),
        "rss_mb": [(t, round(m, 1)) for t, m in memory[::max(1, int(round(10.0 / memory_every_s)))]],
        "rss_settle_s": settle, "rss_window_s": round(span, 1),
        "rss_first_minute_median_mb": round(float(first), 1), "rss_last_minute_median_mb": round(float(last), 1),
        "rss_change_after_warmup": round(float((last - first) / first), 4),
        "rss_trend_mb_per_min": round(slope, 3),
    }


def rss_summary(times_s: Sequence[float], rss_mb: Sequence[float]) -> tuple[float, float, float, float, float]:
    """The resident set's drift over a run sampled at ``times_s``: ``(settle_s, window_s, first_mb, last_mb,
    trend_mb_per_min)``.

    RSS moves by tens of MB with the frames in flight at the sampling instant (each ~70 MB at
    1080p), and the allocator's per-thread arenas fill during the first minute. So: from 3 minutes
    on, the first minute is left out (``settle_s`` 60) and the slope taken after it; the medians
    compared are of the first and the last ``window_s`` of what remains, a minute each, or a third
    of it where that is shorter (runs under 4 minutes; a minute each was the same samples below 2
    minutes, and a 60 s run with a leak read +0.0 %).
    """
    t_mem, rss = np.asarray(times_s, np.float64), np.asarray(rss_mb, np.float64)
    settle = 60.0 if t_mem.max() >= 180.0 else 0.0
    span = min(60.0, (t_mem.max() - settle) / 3.0)
    first = float(np.median(rss[(t_mem >= settle) & (t_mem <= settle + span)]))
    last = float(np.median(rss[t_mem >= t_mem.max() - span]))
    tail = t_mem >= settle
    slope = float(np.polyfit(t_mem[tail], rss[tail], 1)[0]) * 60.0 if tail.sum() > 2 else 0.0
    return settle, span, first, last, slope


def format_runtime(rb: dict[str, Any]) -> str:
    """The runtime benchmark as the lines ``edgehdr bench --runtime`` prints."""
    shake = f", hand shake {rb['shake_px']} px" if rb.get("shake_px") else ""
    lines = [f"runtime {rb['size'][0]}x{rb['size'][1]}, 3-exposure rolling bracket at {rb['target_fps']:g} fps{shake}, "
             f"{rb['seconds']} s: {rb['fps']} fps, {rb['frames_completed']}/{rb['frames_captured']} frames, "
             f"{rb['frames_dropped']} dropped ({100 * (rb['drop_fraction'] or 0):.2f}%), {rb['frames_failed']} "
             f"failed",
             f"capture-to-zones p50 {rb['capture_to_zones_ms_median']} ms, p99 {rb['capture_to_zones_ms_p99']} ms, "
             f"p99.9 {rb['capture_to_zones_ms_p999']} ms; CPU {rb['cpu_percent']:.0f} % (100 % = one core)",
             f"RSS peak {rb['rss_peak_mb']:.0f} MB"
             f"{' while running' if rb.get('rss_peak_is_running') else ' (start-up included)'}, "
             f"median {rb['rss_median_mb']:.0f} MB; "
             f"median of the first {rb.get('rss_window_s', 60.0):g} s after {rb['rss_settle_s']:g} s "
             f"{rb['rss_first_minute_median_mb']} MB, "
             f"of the last {rb.get('rss_window_s', 60.0):g} s {rb['rss_last_minute_median_mb']} MB "
             f"({100 * rb['rss_change_after_warmup']:+.1f}%), "
             f"trend {rb['rss_trend_mb_per_min']:+.2f} MB/min"]
    if "rss_startup_mb" in rb:
        up, before, running = rb["rss_startup_mb"], rb["rss_split_before_frames_mb"], rb["rss_split_running_mb"]
        lines.append(f"RSS before the first frame: modules {up['imported']:.0f} MB, with the camera and the "
                     f"kernels {up['kernels']:.0f} MB, the runtime built {up['built']:.0f} MB, start-up peak "
                     f"{up['peak']:.0f} MB "
                     f"({before['anonymous']:.0f} MB anonymous, {before['file']:.0f} MB file-backed); at the end "
                     f"{running['anonymous']:.0f} MB anonymous, {running['file']:.0f} MB file-backed (library code "
                     f"the kernel can reclaim)")
    buffers = rb.get("buffers") or {}
    radiance = buffers.get("radiance") or {}
    if buffers:
        lines.append(f"buffers over the run (warm-up included): camera stacks allocated {buffers.get('source_stacks')} "
                     f"(at most {buffers.get('source_max_stacks')} at once; an idle one is let go), the "
                     f"capture waited for one {buffers['source_waits']} times ({buffers['source_wait_s']} s); "
                     f"radiance arrays allocated {radiance.get('allocated')} (limit {radiance.get('limit')}, "
                     f"{radiance.get('over_limit')} past it), the merge waited {radiance.get('waits')} times "
                     f"({radiance.get('wait_s')} s)")
    per_frame = rb.get("stage_cpu_ms_per_frame", {})
    threads = rb.get("thread_cpu_ms_per_frame") or {}
    if threads:  # Linux: each thread's own CPU time
        split = (f"capture and stage threads {threads['pipeline']:.1f} ms, their kernels' native worker threads "
                 f"(numba's, as [run] kernel_threads allows; ONNX Runtime's) {threads['native_workers']:.1f} ms, "
                 f"link and controller simulator {threads['link']:.1f} ms, other "
                 f"{threads['main'] + threads['other_python']:.1f} ms")
    else:
        split = (f"of which the capture and stage threads themselves {sum(per_frame.values()):.1f} ms (the rest: "
                 f"their kernels' worker threads, as [run] kernel_threads allows, the link and the controller "
                 f"simulator)")
    lines.append(f"CPU per completed frame {rb.get('cpu_ms_per_frame')} ms: {split}; capture is the synthetic camera "
                 f"rendering each frame in software ({per_frame.get('capture', 0.0)} ms on its own thread), which a "
                 f"camera's driver does not cost")
    for st in rb["stages"]:
        lines.append(f"  {st['name']:<9} {st['fps']:6.2f} fps  median {st['latency_ms_median']} ms  p99 "
                     f"{st['latency_ms_p99']} ms  CPU {st.get('cpu_ms_median')} ms a call, "
                     f"{per_frame.get(st['name'])} ms a completed frame  dropped {st['dropped']}")
    if rb.get("behind"):
        lines.append(rb["behind"])
    return "\n".join(lines)
