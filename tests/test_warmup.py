"""``warm_up`` compiles every numba kernel the pipeline runs, so no frame waits for the compiler."""

from __future__ import annotations

import importlib
import pkgutil

import edgehdr


def _dispatchers() -> dict:
    from numba.core.registry import CPUDispatcher

    found = {}
    for info in pkgutil.walk_packages(edgehdr.__path__, "edgehdr."):
        if ".training" in info.name or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if isinstance(value, CPUDispatcher):
                found[f"{info.name}.{name}"] = value
    return found


def test_no_kernel_compiles_after_warm_up(tmp_path):
    from edgehdr.demo import run_demo
    from edgehdr.warmup import warm_up

    warm_up()
    before = {name: len(d.signatures) for name, d in _dispatchers().items()}
    run_demo(tmp_path / "demo", seconds=2.0, quiet=True, width=640, height=360)
    after = {name: len(d.signatures) for name, d in _dispatchers().items()}
    late = sorted(name for name in after if after[name] > before.get(name, 0))
    assert not late, f"compiled during frames (add them to edgehdr.warmup.warm_up): {late}"


def test_jobs_follow_the_configuration():
    import pytest

    from edgehdr.pipeline.config import validate
    from edgehdr.warmup import ALL_JOBS, jobs_for_config, warm_up

    default = jobs_for_config(validate({}))
    # Reinhard global and max dimming take their statistics from the merge's kernel (MergeStatistics): their own
    # statistics kernels are not needed, nor the merge kernel that measures nothing.
    assert {"align", "merge_statistics", "tonemap", "dimming", "camera"} <= set(default)
    assert not {"merge", "tonemap_stats", "dimming_stats"} & set(default)
    assert "neural_tmo" not in default and "neural_merge" not in default and "deghost" not in default
    measuring = jobs_for_config(validate({"merge": {"method": "neural"}, "dimming": {"algorithm": "sqrt"}}))
    assert {"merge", "tonemap_stats", "dimming_stats", "neural_merge"} <= set(measuring)
    assert "merge_statistics" not in measuring
    custom = jobs_for_config(validate({"source": {"kind": "replay", "path": "x"}, "dimming": {"enabled": False},
                                       "tonemap": {"operator": "neural"}, "merge": {"deghost": True}}))
    assert "camera" not in custom and "dimming" not in custom and {"neural_tmo", "deghost"} <= set(custom)
    # the neural dimming's refinement steps have their own kernel, compiled only where they run
    neural = jobs_for_config(validate({"dimming": {"algorithm": "neural", "rows": 18, "cols": 32}}))
    assert "dimming_refine" in neural and "dimming_refine" not in default and "dimming_refine" not in measuring
    assert "dimming_refine" not in jobs_for_config(validate({"dimming": {"algorithm": "neural", "refine_steps": 0}}))
    assert set(default) | set(custom) <= set(ALL_JOBS)
    with pytest.raises(ValueError, match="unknown warm-up jobs"):
        warm_up(jobs=["tonemapp"])
    with pytest.raises(ValueError, match="workers must be >= 0"):
        warm_up(jobs=["camera"], workers=-1)


def test_cold_cache_is_filled_by_worker_processes(tmp_path):
    """On a cold cache the jobs are shared out, longest first, over spawned workers, which write numba's cache; the
    caller compiles nothing (the compiler's memory would stay in it) and loads every kernel from the cache."""
    import subprocess
    import sys

    code = ("from edgehdr.warmup import warm_up, _camera_cache_cold; import edgehdr.dimming.zones as z; "
            "print(_camera_cache_cold()); "
            "warm_up(jobs=['camera', 'score', 'dimming_stats'], workers=2); "
            "print(_camera_cache_cold()); "
            "import edgehdr.camera.synthetic as c; "
            "zs, cs = z._zone_stats_kernel.stats, c._expose.stats; "
            "print(sum(zs.cache_misses.values()), sum(zs.cache_hits.values()), sum(cs.cache_hits.values()))")
    env = {**__import__("os").environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    # The probe asks the cache without compiling: cold before, warm after (a worker compiled the camera kernel).
    assert out.stdout.split()[:2] == ["True", "False"], out.stdout
    # dimming_stats (the longest job) in one worker, camera and score in the other: this process found both in the
    # cache and compiled neither.
    zone_misses, zone_hits, camera_hits = map(int, out.stdout.split()[-3:])
    assert zone_misses == 0 and zone_hits >= 1 and camera_hits >= 1, out.stdout
    assert any(p.suffix == ".nbi" for p in tmp_path.rglob("*"))


def test_library_threads_limited_to_one():
    """The runtime's processes run BLAS and OpenCV on the calling thread only (their pools cost CPU a frame,
    measured); in a fresh interpreter, so this test's process keeps its own settings."""
    import subprocess
    import sys

    code = ("import cv2, threadpoolctl\n"
            "from edgehdr.warmup import limit_library_threads\n"
            "limit_library_threads()\n"
            "blas = [p['num_threads'] for p in threadpoolctl.threadpool_info() if p['user_api'] == 'blas']\n"
            "print(cv2.getNumThreads(), max(blas, default=1))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.split() == ["1", "1"], out.stdout + out.stderr


def test_a_cache_warm_in_part_sends_the_missing_jobs_to_the_workers(tmp_path):
    """The camera probe cached (a test or another command ran first) but not every kernel a configuration needs: the
    jobs this source tree has not recorded as cached compile in the workers, and this process compiles nothing. A
    record of another tree (the sources or numba changed since) counts for nothing."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    code = """
import json, sys
from numba.core.registry import CPUDispatcher
import edgehdr.quality.norvdpnet, edgehdr.hdr.align, edgehdr.camera.synthetic
import edgehdr.warmup as w
probe_cold = w._camera_cache_cold()
to_workers = []
compile_in_workers = w._compile_in_workers
w._compile_in_workers = lambda jobs, n: (to_workers.extend(jobs), compile_in_workers(jobs, n))
w.warm_up(jobs=sys.argv[1].split(","), workers=int(sys.argv[2]))
misses = sum(sum(d.stats.cache_misses.values()) for m in list(sys.modules.values()) if m and
             m.__name__.startswith("edgehdr") for d in vars(m).values() if isinstance(d, CPUDispatcher))
print(json.dumps({"probe_cold": probe_cold, "misses": misses, "workers": sorted(to_workers)}))
"""

    def run(jobs: str, workers: int) -> dict:
        out = subprocess.run([sys.executable, "-c", code, jobs, str(workers)], env=env, capture_output=True,
                             text=True, timeout=600)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])

    first = run("camera", 0)  # compiles the probe here: the cache is now warm in part
    assert first["probe_cold"] is True and first["misses"] >= 1, first
    second = run("camera,score", 2)  # only the job not recorded goes to the workers
    assert second == {"probe_cold": False, "misses": 0, "workers": ["score"]}, second
    record = next(tmp_path.rglob("edgehdr-warm-jobs.json"))
    assert json.loads(record.read_text())["jobs"] == ["camera", "score"]
    # Everything recorded: no worker starts, and this process compiles nothing (the record is trusted across
    # processes of the same tree).
    assert run("camera,score", 2) == {"probe_cold": False, "misses": 0, "workers": []}
    # A record of another tree claiming "align" is ignored: the workers get every job, this process compiles none.
    record.write_text(json.dumps({"key": "another tree", "jobs": ["align", "camera", "score"]}))
    third = run("camera,align", 2)
    assert third == {"probe_cold": False, "misses": 0, "workers": ["align", "camera"]}, third
    assert set(json.loads(record.read_text())["jobs"]) == {"camera", "align"}


def test_kernels_compiled_in_the_running_process_are_reported(tmp_path):
    """When the workers leave the cache without a kernel (here: they do not run), the running process compiles it
    and holds the compiler's memory for its life; the warm-up says so with the count. The next start loads what
    that process cached and says nothing."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    code = """
import logging, sys
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
import edgehdr.warmup as w
if sys.argv[1] == "no-workers":
    w._compile_in_workers = lambda jobs, n: None  # workers that leave nothing in the cache
w.warm_up(jobs=["camera", "score"], workers=2)
print("compiled", w.kernels_compiled_here())
"""

    def run(mode: str) -> tuple[int, str]:
        out = subprocess.run([sys.executable, "-c", code, mode], env=env, capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stderr
        return int(out.stdout.split()[-1]), out.stderr

    compiled, log = run("no-workers")
    assert compiled >= 2, log  # the camera's two kernels at least, and the score's
    assert f"WARNING {compiled} numba kernels compiled in this process" in log and "NUMBA_CACHE_DIR" in log, log
    compiled, log = run("normal")
    assert compiled == 0 and "compiled in this process" not in log, log
