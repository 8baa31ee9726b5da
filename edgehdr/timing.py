"""Timing of repeated calls for the benchmarks: median and tail latency, throughput.

One helper for every benchmark in the package (stage benchmarks, model evaluations,
export's artefact timing), so their figures mean the same thing: warm-up calls are
not timed, each call is timed on its own with ``perf_counter``, and the tail is
reported beside the median.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

__all__ = ["median_ms", "time_calls"]


def time_calls(fn: Callable[[], object], runs: int, warmup: int = 1) -> dict:
    """Call ``fn`` ``warmup`` times untimed, then ``runs`` times timed.

    Returns ``{"median_ms", "p90_ms", "p99_ms", "throughput_per_s", "runs"}``.
    """
    if runs < 1:
        raise ValueError(f"runs must be >= 1, got {runs}")
    for _ in range(warmup):
        fn()
    times = np.empty(runs)
    start = time.perf_counter()
    for i in range(runs):
        t0 = time.perf_counter()
        fn()
        times[i] = time.perf_counter() - t0
    total_s = time.perf_counter() - start
    ms = times * 1e3
    return {"median_ms": float(np.median(ms)), "p90_ms": float(np.percentile(ms, 90)),
            "p99_ms": float(np.percentile(ms, 99)), "throughput_per_s": runs / total_s, "runs": runs}


def median_ms(fn: Callable[[], object], repeat: int, warmup: int = 1) -> float:
    """Median milliseconds of ``repeat`` timed calls after ``warmup`` untimed ones."""
    return time_calls(fn, repeat, warmup)["median_ms"]
