"""``edgehdr bench``: the package's benchmarks, one module per subject.

- ``stages``: per-stage latency against OpenCV at 720p, 1080p and 4K (the default)
- ``merge_quality``: merge quality against exact ground truth (``--quality``)
- ``dimming``: local-dimming timing and quality (``--dimming``)
- ``runtime``: the daemon's pipeline sustained, with memory (``--runtime``)
- ``faults``: injected faults and where each is counted (``--faults``)
- ``real``: EdgeHDR and OpenCV on your own exposure stacks (``--real PATHS``)
- ``calls``: per-call time of calibrate, merge and MTB against OpenCV at 0.3-12 MP (``--calls``)
"""

from edgehdr.bench.calls import calls_benchmark, format_calls
from edgehdr.bench.dimming import dimming_benchmark, dimming_quality_table, format_dimming
from edgehdr.bench.faults import fault_run, format_faults
from edgehdr.bench.merge_quality import format_quality, format_real_merge, merge_quality_report, real_merge_report
from edgehdr.bench.real import format_real, real_stack_report
from edgehdr.bench.runtime import format_runtime, runtime_benchmark
from edgehdr.bench.stages import SIZES, format_table, run_benchmark

__all__ = [
    "SIZES",
    "calls_benchmark",
    "format_calls",
    "dimming_benchmark",
    "dimming_quality_table",
    "fault_run",
    "format_dimming",
    "format_faults",
    "format_quality",
    "format_real_merge",
    "format_real",
    "format_runtime",
    "format_table",
    "merge_quality_report",
    "real_merge_report",
    "real_stack_report",
    "run_benchmark",
    "runtime_benchmark",
]
