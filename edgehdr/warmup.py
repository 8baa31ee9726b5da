"""Prepare a process for real-time work: numba kernels compiled, BLAS and OpenCV on one thread.

numba compiles a kernel on its first call (and caches it on disk for later
processes), so the first frames of a fresh installation would each wait seconds.
``warm_up`` runs every runtime kernel once on tiny inputs of the real dtypes: the
demo and the daemon call it before their clocks start.
"""

from __future__ import annotations

import functools
import gc
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edgehdr import kernelcache

__all__ = ["ALL_JOBS", "settle_heap", "jobs_for_config", "kernels_compiled_here", "limit_library_threads",
           "trim_heap", "warm_up"]

log = logging.getLogger("edgehdr.warmup")


def limit_library_threads() -> None:
    """Keep BLAS (numpy's linear algebra) and OpenCV on one thread each for the rest of the process.

    The runtime's stages already run side by side on their own threads, and numba's kernels
    use the cores as ``[run] kernel_threads`` allows; the libraries' own thread pools only add
    wake-ups and spinning on a small CPU. OpenBLAS workers spin after every call and starve the
    numba kernels of the next stage (measured); the runtime's matrix work is tiny anyway.
    OpenCV's calls in the pipeline (the alignment's grey image, its 1/2-scale resize and
    lookup tables, the dimming's backlight widening) take about 1 ms of a 1080p frame on one
    thread, and its pool (one worker on 2 cores) cost 1.9 ms of CPU a frame more than that:
    1080p30 pipeline, 34.7 against 36.6 ms a completed frame, the setting toggled every 8 s in
    one running pipeline, lower in 8 of 8 pairs. Offline tools (``edgehdr merge``, ``align
    --method auto``) do not call this and keep OpenCV's threads.
    """
    import cv2
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")
    cv2.setNumThreads(1)


def settle_heap() -> None:
    """Collect once, freeze what survives, and hand the allocator's free memory back to the OS.

    ``gc.freeze``: after start-up the heap holds the long-lived objects of the imported
    stack, numba's type system and the compiled kernels; a full collection walked all of
    them, 49-55 ms measured at 1080p, more than a frame's budget. Frozen, collections walk
    only what the frames allocate (0.3 ms measured). Objects frozen here are never
    collected, which is what a daemon's start-up objects are for anyway.

    ``malloc_trim`` (glibc): building the synthetic scene's 1080p layers leaves about
    120 MB of freed memory in the allocator's heap, counted in RSS until trimmed.

    Call once, after the runtime is built and before frames flow.
    """
    gc.collect()
    gc.freeze()
    trim_heap()


@functools.cache
def _malloc_trim_function() -> Any:
    """glibc's ``malloc_trim``, or None where the C library has none (musl, macOS)."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")  # runs ldconfig: once
    if not name:
        return None
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    return trim


def trim_heap() -> None:
    """Hand the allocator's free memory back to the OS (glibc ``malloc_trim(0)``; nothing elsewhere).

    0.3-0.8 ms with a 1080p pipeline running. The pipeline calls it every ``trim_interval_s``: the first frames'
    transients left 40 MB free in the allocator's arenas, counted in RSS (1080p30, measured).
    """
    trim = _malloc_trim_function()
    if trim is not None:
        trim(0)


# Every job and its weight for the scheduler (about its cold compile time on the 2-core development machine, s).
# "tonemap_stats" is the frame statistics every operator (the network's too) shares; "tonemap" is Reinhard's
# global operator's apply kernel, and each other operator has its own apply job. Statistics and the kernels
# that use them are separate jobs so that they compile in different processes at the same time.
# Jobs run alone in a fresh process measured camera 1.6, align 3.7, merge 3.8, tonemap_stats 4.9, tonemap_local
# 5.8, score 1.2, dimming_stats 5.8, dimming 6.4 s, but the demo's cold start was faster with these weights:
# kernels ready in 14.3-17.0 s over four runs (the two statistics kernels in one process, the apply kernels in
# the other) against 18.5-19.3 s over three with the single-job times, which split them.
# "merge_statistics" is the merge kernel that also measures what the tone mapper and the dimming would
# (edgehdr.hdr.MergeStatistics); a configuration that uses it needs neither statistics job. Its weight went from 4.5
# to 6.5 when the merge gained its three-frame pass and flagged fallback (alone, cold: 9.1 against 7.0 s): at 4.5
# it shared a process with tonemap_local and the demo's kernels were ready in 19.8-21.9 s, at 6.5 in 15.9-16.4 s
# (the 1080p30 runtime's 13.6-13.8 s). "neural_merge" compiles in 23.5-24.5 s cold on its own: at its old weight
# of 7.3 it shared a process with the neural TMO and the cold `edgehdr demo --neural` had its kernels ready in
# 38.0-39.6 s, at 20 in 31.8-32.4 s.
JOB_SECONDS = {"camera": 1.0, "align": 4.3, "merge": 3.4, "merge_statistics": 6.5, "deghost": 5.8,
               "tonemap_stats": 5.5, "tonemap": 7.0,
               "tonemap_local": 9.2, "tonemap_drago": 7.0, "tonemap_parametric": 6.5, "score": 0.8,
               "dimming_stats": 5.8, "dimming": 5.0, "dimming_refine": 3.0, "neural_tmo": 6.9, "neural_merge": 20.0}
_OPERATOR_JOBS = {"reinhard": "tonemap", "reinhard-local": "tonemap_local", "drago": "tonemap_drago",
                  "parametric": "tonemap_parametric"}
ALL_JOBS = tuple(JOB_SECONDS)


def jobs_for_config(cfg: dict[str, Any]) -> tuple[str, ...]:
    """The warm-up jobs a validated daemon configuration needs (``edgehdr.pipeline.config``)."""
    from edgehdr.pipeline.stages import MERGE_MEASURED_DIMMING, MERGE_MEASURED_OPERATORS

    operator = cfg["tonemap"]["operator"]
    # What the runtime lets the classical merge measure (edgehdr.pipeline.daemon._share_merge_statistics).
    classical = cfg["merge"]["method"] != "neural"
    tonemap_from_merge = classical and operator in MERGE_MEASURED_OPERATORS
    zones_from_merge = classical and cfg["dimming"]["enabled"] and cfg["dimming"]["algorithm"] == MERGE_MEASURED_DIMMING
    merge = "merge_statistics" if tonemap_from_merge or zones_from_merge else "merge"
    jobs = ["align", merge] + ([] if tonemap_from_merge else ["tonemap_stats"]) + \
        ([_OPERATOR_JOBS[operator]] if operator in _OPERATOR_JOBS else [])
    if cfg["source"]["kind"] == "synthetic":
        jobs.append("camera")
    if cfg["merge"]["deghost"]:
        jobs.append("deghost")
    if cfg["merge"]["method"] == "neural":
        jobs.append("neural_merge")
    if cfg["tonemap"]["operator"] == "neural":
        jobs.append("neural_tmo")
    if cfg["score"]["every_n"]:
        jobs.append("score")
    if cfg["dimming"]["enabled"]:
        jobs += ["dimming"] if zones_from_merge else ["dimming_stats", "dimming"]
        if cfg["dimming"]["algorithm"] == "neural" and cfg["dimming"]["refine_steps"]:
            jobs.append("dimming_refine")
    return tuple(jobs)


def warm_up(*, deghost: bool = False, dimming: bool = True, jobs: Sequence[str] | None = None,
            workers: int | None = None) -> float:
    """Compile (or load from numba's cache) the per-frame kernels; returns the seconds it took.

    ``jobs`` (of ``ALL_JOBS``; ``jobs_for_config`` picks them for a configuration)
    default to all of them, ``deghost`` and ``dimming`` adding or removing theirs.
    On a cold cache the compilation is shared out over ``workers`` processes (default:
    the CPUs, at most 4; 0: compile in this process), longest jobs first, each writing
    numba's on-disk cache; this process then loads every kernel from the cache and never
    holds the compiler's memory (about 85 MB at 1080p, kept for the process's life).
    Cold, the demo's kernels took 45 s in one process on the 2-core development machine.
    Where the cache cannot be written (numba then compiles in memory only), the workers'
    work is lost and this process compiles everything itself, as it would without them.
    A cache warm in part (the probe cached, not every job: another tone mapper configured,
    or a test ran first) sends the jobs not recorded as cached for this source tree, numba
    version, interpreter and CPU (``edgehdr-warm-jobs.json`` beside the cache) to the workers
    as well.

    numba's cache lives in ``__pycache__`` beside the package's modules, or under
    ``NUMBA_CACHE_DIR`` when that is set: on a read-only root filesystem point it at a
    writable folder that persists across runs (systemd: ``CacheDirectory=edgehdr`` and
    ``Environment=NUMBA_CACHE_DIR=/var/cache/edgehdr``).
    """
    t0 = time.perf_counter()
    if jobs is None:
        jobs = [j for j in ALL_JOBS if (j != "deghost" or deghost) and (not j.startswith("dimming") or dimming)]
    unknown = sorted(set(jobs) - set(ALL_JOBS))
    if unknown:
        raise ValueError(f"unknown warm-up jobs {unknown}; known: {', '.join(ALL_JOBS)}")
    jobs = list(dict.fromkeys(jobs))
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    if workers < 0:
        raise ValueError(f"workers must be >= 0 (0: compile in this process), got {workers}")
    # The synthetic camera's kernel is the probe: when numba's cache does not hold it, the cache is cold
    # (a fresh install, or kernels changed) and the jobs go to the workers. Asked of the cache without
    # compiling, so a cold start does not compile the probe first and then start the workers.
    cold = _camera_cache_cold()
    if cold is None:  # the cache could not be asked: compile the probe and look whether it missed
        cold = sum(_camera_kernel().stats.cache_misses.values()) > 0
    # Kernels dropped as stale on import (a helper module changed) compile again: in the workers too.
    cold = cold or kernelcache.dropped_files > 0
    # A cache can also be warm in part: a test or another command filled the camera probe and some kernels, or
    # the configuration changed (another tone mapper). Jobs not recorded as cached for this tree, interpreter and
    # machine go to the workers too; recorded ones load here from the cache. (Measured, 1080p30 bench after one
    # small test run had cached the probe: the rest compiled here, 355 MB running peak against 281 MB.) Where the
    # cache's folder cannot be found (numba's locators are internal), the probe alone decides, as before.
    folder = kernelcache.marker_folder()
    key = _tree_key() if folder is not None else ""
    warm = set() if cold or folder is None else _recorded_jobs(folder, key)
    if cold:
        missing = list(jobs)
    else:
        missing = [] if folder is None else [j for j in jobs if j not in warm]
    if workers >= 1 and missing:
        _compile_in_workers(missing, workers)
    _run_jobs(jobs)
    if folder is not None and _tree_key() == key:  # not if the sources changed meanwhile (a pull during warm-up)
        _record_jobs(folder, key, jobs, warm)
    compiled = kernels_compiled_here()
    if workers >= 1 and compiled:
        # Silent otherwise: the process runs, but holds the compiler's memory for its life and compiles again at
        # every start.
        log.warning("%d numba kernels compiled in this process instead of loading from numba's cache (%s): the "
                    "compiler's memory, about 85 MB at 1080p, stays for the run, and every start compiles again; "
                    "point NUMBA_CACHE_DIR at a folder this user can write", compiled, folder or "not found")
    return time.perf_counter() - t0


def kernels_compiled_here() -> int:
    """How many of the package's numba kernels (signatures) this process compiled instead of loading them from
    numba's on-disk cache: the cache misses of every kernel of the ``edgehdr`` modules imported so far."""
    import sys

    from numba.core.registry import CPUDispatcher

    seen: set[int] = set()
    compiled = 0
    for name, module in list(sys.modules.items()):
        if module is None or not (name == "edgehdr" or name.startswith("edgehdr.")):
            continue
        for value in list(vars(module).values()):
            if isinstance(value, CPUDispatcher) and id(value) not in seen:
                seen.add(id(value))
                compiled += sum(value.stats.cache_misses.values())
    return compiled


_RECORD = "edgehdr-warm-jobs.json"


def _tree_key() -> str:
    """What a cached kernel depends on: numba's and numpy's versions (``edgehdr.kernelcache`` names the
    package's cache files per numpy), the interpreter (numba names its cache files per Python version and ABI), the
    machine numba compiles for (its codegen's "magic tuple", which numba's cache index is keyed on: triple, CPU name
    and features, ``NUMBA_CPU_NAME`` honoured), and the package's sources: path, size and modification time of
    every module (numba checks a kernel's own file by its contents; any change of any module's time is stricter,
    costing at most a start whose workers load what is cached)."""
    import hashlib
    import sys

    import numba

    try:
        from numba.core.registry import cpu_target

        machine = repr(cpu_target.target_context.codegen().magic_tuple())
    except Exception:  # noqa: BLE001 - numba's internals: the host CPU as LLVM names it instead
        import llvmlite.binding as llvm

        machine = f"{llvm.get_host_cpu_name()} {llvm.get_host_cpu_features().flatten()} " \
                  f"{os.environ.get('NUMBA_CPU_NAME', '')} {os.environ.get('NUMBA_CPU_FEATURES', '')}"
    package = os.path.dirname(os.path.abspath(__file__))
    digest = hashlib.sha256(f"{numba.__version__} {kernelcache.numpy_tag()} {sys.implementation.cache_tag} "
                            f"{sys.abiflags} {machine}".encode())
    for root, dirs, files in os.walk(package):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        for name in sorted(f for f in files if f.endswith(".py")):
            st = os.stat(os.path.join(root, name))
            digest.update(f"{os.path.relpath(os.path.join(root, name), package)} {st.st_size} {st.st_mtime_ns}\n"
                          .encode())
    return digest.hexdigest()


def _recorded_jobs(folder: Path, key: str) -> set[str]:
    """The jobs a process of this tree (``key``) ran to the end with numba's cache in ``folder`` (their kernels
    are cached); empty where there is no record, it is of another tree, or it cannot be read."""
    import json

    try:
        record = json.loads((folder / _RECORD).read_text())
        jobs = record.get("jobs") if isinstance(record, dict) and record.get("key") == key else None
        if isinstance(jobs, list):
            return {j for j in jobs if isinstance(j, str)}
    except (OSError, ValueError):
        pass
    return set()


def _record_jobs(folder: Path, key: str, jobs: Sequence[str], warm: set[str]) -> None:
    """Record ``jobs`` (with ``warm``, recorded before) as cached for ``key``, atomically; a cache folder that
    cannot be written keeps no record (numba could not cache the kernels there either)."""
    import json

    from edgehdr.io.atomic import write_text_atomic

    if set(jobs) <= warm:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_text_atomic(folder / _RECORD, json.dumps({"key": key, "jobs": sorted(warm | set(jobs))}))
    except OSError as exc:
        log.debug("no record of the cached kernels (%s)", exc)


def _camera_args() -> tuple[Any, ...]:
    """Arguments of the types ``SyntheticCamera.capture`` passes to its kernel, on a 1-pixel frame."""
    return (np.zeros((1, 1, 3), np.int16), 0, 0, np.int32(0), np.zeros(1, np.uint8), np.zeros((1, 1), np.int32),
            0, 0, np.empty((1, 1, 3), np.uint8))


def _camera_kernel() -> Any:
    """The synthetic camera's kernels (the exposure and the sprites' paste), called on a 1-pixel frame (no scene
    is built); returns the exposure kernel's dispatcher."""
    from edgehdr.camera.synthetic import _expose, _paste

    _expose(*_camera_args())
    _paste(np.zeros((1, 1, 3), np.int16), np.ones((1, 1), np.bool_), 0, 0, np.int32(0), np.zeros(1, np.uint8),
           np.empty((1, 1, 3), np.uint8))
    return _expose


def _camera_cache_cold() -> bool | None:
    """Whether numba's on-disk cache lacks the camera kernel (None: the cache could not be asked).

    Looks the signature up with the dispatcher's cache (numba's own first step before it
    compiles), which is not public API: any failure answers None and the caller compiles.
    """
    try:
        import numba

        from edgehdr.camera.synthetic import _expose

        dispatcher: Any = _expose
        signature = tuple(numba.typeof(a) for a in _camera_args())
        return dispatcher._cache.load_overload(signature, dispatcher.targetctx) is None
    except Exception:  # noqa: BLE001 - an internal API: fall back to compiling the probe
        return None


def _compile_in_workers(jobs: Sequence[str], workers: int) -> None:
    import concurrent.futures
    import multiprocessing

    groups: list[list[str]] = [[] for _ in range(workers)]
    loads = [0.0] * workers
    for job in sorted(jobs, key=lambda j: -JOB_SECONDS[j]):  # longest first, onto the least-loaded worker
        k = loads.index(min(loads))
        groups[k].append(job)
        loads[k] += JOB_SECONDS[job]
    groups = [g for g in groups if g]
    # Every group compiles in a worker, none here: LLVM's memory from compiling stays in the process that
    # compiled (a first 1080p30 run held 366 MB against 277 MB loading the same kernels from the cache, 85 MB
    # more anonymous memory for the run's whole life). Compiling the largest group here instead saved one process
    # start: the cold demo's kernels were ready in 9.2 s that way, 9.6 s this way.
    try:
        context = multiprocessing.get_context("spawn")
        with concurrent.futures.ProcessPoolExecutor(len(groups), mp_context=context) as pool:
            for future in [pool.submit(_run_jobs, g) for g in groups]:
                future.result()
    except Exception as exc:  # noqa: BLE001 - this process compiles whatever the workers did not leave cached
        log.warning("parallel kernel compilation failed (%s: %s); compiling in this process", type(exc).__name__, exc)


def _run_jobs(jobs: Sequence[str]) -> None:
    from edgehdr.bracket import Bracket
    from edgehdr.hdr import align_mtb, merge_debevec, standard_response

    # Inputs of the runtime's dtypes and layouts, made without numba (a worker compiles only its own jobs).
    rng = np.random.default_rng(0)
    bracket = Bracket(frames=rng.integers(0, 256, (3, 48, 64, 3), dtype=np.uint8), exposure_s=[0.25, 1.0, 4.0], bits=8)
    response = standard_response("srgb")
    radiance = np.ascontiguousarray(((bracket.frames[1] / np.float32(255.0)) ** 2.2).astype(np.float32))
    big = np.repeat(np.repeat(bracket.frames, 16, axis=1), 16, axis=2)  # 768 x 1024: the parallel/block paths
    for job in jobs:
        if job == "camera":
            _camera_kernel()
        elif job == "align":
            align_mtb(bracket.frames, reference_index=1, exposures=bracket.relative_exposure, response=response,
                      work_scale=2, frame_keys=[0, 1, 2], cache={})
            align_mtb(bracket.frames, reference_index=1)  # the raw path (no response)
        elif job in ("merge", "deghost"):
            deghost = job == "deghost"
            merge_debevec(bracket, response=response, deghost=deghost)
            # Frames above a few thousand pixels take the merge's parallel kernel (small ones the serial one).
            merge_debevec(big, bracket.relative_exposure, response, bits=bracket.bits, deghost=deghost)
        elif job == "merge_statistics":
            from edgehdr.hdr import MergeStatistics

            for frames in (bracket, big):  # the serial and the parallel kernel
                merge_debevec(frames, bracket.relative_exposure, response, bits=bracket.bits,
                              statistics=MergeStatistics((3, 4)))
        elif job == "tonemap_stats":
            from edgehdr.tonemap import frame_statistics

            frame_statistics(radiance)
        elif job.startswith("tonemap"):
            from edgehdr.tonemap.operators import compile_apply_kernel

            # colour correction and saturation are run-time arguments of the same kernel
            compile_apply_kernel(next(op for op, j in _OPERATOR_JOBS.items() if j == job))
        elif job == "score":
            from edgehdr.quality.norvdpnet import encode_sdr

            encode_sdr(np.ascontiguousarray(bracket.frames[1]))  # smaller than the model's input: luma, then OpenCV
            encode_sdr(np.ascontiguousarray(big[1]))  # larger (a camera's frame): the fused luma and area kernel
        elif job == "dimming_refine":
            from edgehdr.dimming import LedLayout
            from edgehdr.dimming.refine import refine_zone_light

            grid = np.full((12, 16), 100.0, np.float32)
            grid[0, 0] = 5000.0  # a cell the backlight clips: the descent's every path
            refine_zone_light(np.full((3, 4), 0.5, np.float32), grid, LedLayout(rows=3, cols=4, width_px=64,
                                                                               height_px=48), steps=2)
        elif job.startswith("dimming"):
            from edgehdr.dimming import BacklightModel, LedLayout, lcd_compensation, zone_statistics

            layout = LedLayout(rows=3, cols=4, width_px=64, height_px=48)
            target = np.ascontiguousarray(radiance, dtype=np.float32)
            if job == "dimming_stats":
                zone_statistics(target, layout)
                zone_statistics(target, layout, histogram=True)
            else:  # the backlight (working resolution, as the stage has it) and the LCD image, from zone light
                # made without the statistics kernel; the display scale's robust peak (as the stage measures it)
                from edgehdr.dimming import robust_peak_luminance

                robust_peak_luminance(target, step=8)
                backlight = BacklightModel(layout).forward(np.full((3, 4), 0.5, np.float32))
                lcd_compensation(target, backlight, layout)
        elif job == "neural_tmo":
            from edgehdr.tonemap.neural import BLOCK, apply_parameter_grid, default_parameter_grid

            # blocks given, so the statistics kernel stays tonemap_stats's (another process compiles it meanwhile)
            h, w = radiance.shape[:2]
            blocks = np.full((-(-h // BLOCK), -(-w // BLOCK)), 0.5, np.float32)
            apply_parameter_grid(radiance, default_parameter_grid(), key_log2=0.0, blocks=blocks)
        elif job == "neural_merge":
            from edgehdr.hdr.fill import LOWER_BOUND, fill_unmeasured
            from edgehdr.hdr.neural_merge import encode_merge_input, merge_with_weights

            encode_merge_input(bracket, response=response)
            encode_merge_input(big, bracket.relative_exposure, response, bits=bracket.bits)
            for gate in (True, False):
                merge_with_weights(bracket, np.full((3, 4, 4), 1 / 3, np.float32), response=response,
                                   consistency_gate=gate, fill=gate)  # the daemon's merger: gate and fill
            # The fill's own pass runs only where a sample fell back: compile it on one that did.
            flags = np.zeros(radiance.shape, np.uint8)
            flags[0, 0, 0] = LOWER_BOUND
            fill_unmeasured(radiance.copy(), flags)
