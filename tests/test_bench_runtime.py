"""``edgehdr bench --runtime``'s memory figures: the resident set split by kind adds up to what ``statm`` reports,
and the split follows an allocation into the anonymous part; its CPU split by thread adds up to the process's."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from edgehdr.bench.runtime import _rss_mb, _rss_split_mb

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads Linux's /proc/self")


def test_rss_split_adds_up_to_the_resident_set():
    split = _rss_split_mb()
    total = _rss_mb()
    assert split["anonymous"] > 0 and split["file"] > 0
    assert abs(split["anonymous"] + split["file"] - total) < max(2.0, 0.02 * total)


def test_an_allocation_shows_in_the_anonymous_part():
    before = _rss_split_mb()["anonymous"]
    block = np.ones(64 << 20, np.uint8)  # 64 MB, touched
    after = _rss_split_mb()["anonymous"]
    assert 60 <= after - before <= 72
    assert block[-1] == 1


def test_the_peak_can_be_reset_to_the_current_resident_set():
    """``VmHWM`` after a 64 MB block was freed stays up; after the reset it is back near the current RSS."""
    from edgehdr.bench.runtime import _peak_rss_mb, _reset_peak_rss

    block = np.ones(64 << 20, np.uint8)
    del block  # above glibc's largest mmap threshold (32 MB): unmapped, the RSS falls back, the peak stays
    assert _peak_rss_mb() - _rss_mb() > 50
    if not _reset_peak_rss():
        pytest.skip("/proc/self/clear_refs cannot be written here")
    assert _peak_rss_mb() - _rss_mb() < 8


def test_thread_cpu_groups_add_up_to_the_process_and_follow_the_names():
    """Two Python threads named as the pipeline's and the link's burn CPU; their groups get it, and the groups add up
    to the process's CPU time over the same window."""
    import os
    import threading
    import time

    from edgehdr.bench.runtime import _cpu_s, _thread_cpu_s, _thread_group_cpu_s

    def burn(seconds: float) -> None:
        end = time.thread_time() + seconds
        x = 0
        while time.thread_time() < end:
            x += 1

    before, cpu0 = _thread_cpu_s(), _cpu_s()
    assert threading.get_native_id() in before
    burnt = [threading.Event(), threading.Event()]
    done = threading.Event()

    def named(seconds: float, finished: threading.Event) -> None:
        burn(seconds)
        finished.set()
        done.wait(60)  # alive at the second snapshot: a thread that ended is no longer listed

    workers = [threading.Thread(target=named, args=(0.3, burnt[0]), name="stage:probe"),
               threading.Thread(target=named, args=(0.2, burnt[1]), name="link:probe")]
    for t in workers:
        t.start()
    for finished in burnt:  # both have burnt their share, however long a loaded machine takes
        assert finished.wait(60)
    time.sleep(0.1)
    after, cpu1 = _thread_cpu_s(), _cpu_s()
    groups = _thread_group_cpu_s(before, after)  # while the threads live: their names are looked up now
    done.set()
    for t in workers:
        t.join()
    tick = 1.0 / os.sysconf("SC_CLK_TCK")
    assert groups["pipeline"] >= 0.3 - 2 * tick and groups["link"] >= 0.2 - 2 * tick, groups
    assert groups["pipeline"] < 0.6 and groups["link"] < 0.5, groups
    assert abs(sum(groups.values()) - (cpu1 - cpu0)) < 0.05 + 0.1 * (cpu1 - cpu0), (groups, cpu1 - cpu0)


def test_rss_drift_of_a_short_run_compares_its_first_and_last_third():
    """Below 2 minutes the first and the last minute were the same samples, so a 60 s run with a leak of 1 MB/s
    read +0.0 % (the trend alone showed it)."""
    from edgehdr.bench.runtime import rss_summary

    t = np.arange(0.0, 60.5, 0.5)
    settle, window, first, last, trend = rss_summary(t, 200.0 + 1.0 * t)
    assert (settle, window) == (0.0, 20.0)
    assert first == pytest.approx(210.0) and last == pytest.approx(250.0)
    assert trend == pytest.approx(60.0)
    t = np.arange(0.0, 300.5, 0.5)  # a long run: minute 2 against the last minute, the first minute left out
    settle, window, first, last, _ = rss_summary(t, np.where(t < 60, 100.0, 300.0))
    assert (settle, window, first, last) == (60.0, 60.0, 300.0, 300.0)


def test_resetting_the_latency_window_forgets_every_stages_warm_up_calls():
    """The benchmark's reset cleared the capture-to-zones window only: the stages' median and p99 kept the
    warm-up's slow calls (a run of 10 ms calls reported p99 200 ms)."""
    import time

    from edgehdr.camera.synthetic import SyntheticCamera
    from edgehdr.pipeline import Pipeline, Stage

    calls = []

    def slow_then_fast(ctx):
        calls.append(ctx.frame_id)
        time.sleep(0.2 if len(calls) <= 3 else 0.002)
        return ctx

    pipe = Pipeline(SyntheticCamera(64, 48, fps=0, moving_objects=0), [Stage("work", slow_then_fast)]).start()
    try:
        deadline = time.monotonic() + 30
        while len(calls) < 8 and time.monotonic() < deadline:
            time.sleep(0.01)
        pipe.reset_latency_window(500)
        start = len(calls)
        while len(calls) < start + 20 and time.monotonic() < deadline:
            time.sleep(0.01)
        work = next(s for s in pipe.stats()["stages"] if s["name"] == "work")
    finally:
        pipe.stop()
    assert work["latency_ms_p99"] < 100.0, work
