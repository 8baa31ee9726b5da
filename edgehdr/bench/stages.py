"""``edgehdr bench``: median per-stage latency against OpenCV, measured in the same run.

For each frame size a synthetic 3-exposure bracket (with a small hand shake) goes
through alignment, merging and tone mapping, once with EdgeHDR and once with the
OpenCV equivalent (``AlignMTB``, ``MergeDebevec`` with the same response,
``TonemapReinhard``). The ratio column is OpenCV time / EdgeHDR time: above 1
means EdgeHDR is faster. OpenCV's tone mapper is timed without the sRGB/uint8
conversion EdgeHDR's includes, which favours OpenCV. ``align_mtb`` is the raw
MTB path (histogram-matched pairs); ``align_mtb_matched`` is the exposure-matched
MTB the runtime uses when the response is known.
"""

from __future__ import annotations

import os
import platform
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from edgehdr.hdr.align import align_mtb
from edgehdr.hdr.merge import merge_debevec
from edgehdr.progress import Progress
from edgehdr.synth import CameraModel, capture_bracket, make_scene, suggest_exposures
from edgehdr.timing import median_ms
from edgehdr.tonemap import reinhard_global, reinhard_local

__all__ = ["SIZES", "format_table", "run_benchmark"]

SIZES = {"720p": (720, 1280), "1080p": (1080, 1920), "4k": (2160, 3840)}


def run_benchmark(sizes: Sequence[str] = ("720p", "1080p", "4k"), *, repeat: int = 7, seed: int = 0,
                  quiet: bool = False) -> dict[str, Any]:
    """Measure every stage at every size; returns a JSON-ready dict."""
    for name in sizes:
        if name not in SIZES:
            raise ValueError(f"unknown size {name!r}; use one of {', '.join(SIZES)}")
    progress = Progress(len(sizes) * 2, quiet=quiet)
    rows = []
    for name in sizes:
        rows += _benchmark_size(name, repeat=repeat, seed=seed, progress=progress)
    return {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count(),
                    "opencv": cv2.__version__, "numpy": np.__version__},
        "repeat": repeat,
        "exposures": 3,
        "rows": rows,
    }


def _benchmark_size(name: str, *, repeat: int, seed: int, progress: Progress) -> list[dict[str, Any]]:
    """The rows of one frame size: every stage timed with EdgeHDR and with OpenCV."""
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
            median_ms(lambda: mtb.process(frames_bgr, [np.empty_like(f) for f in frames_bgr]), repeat),
        ),
        "align_mtb_matched": (
            median_ms(lambda: align_mtb(bracket.frames, exposures=bracket.relative_exposure,
                                         response=response), repeat),
            median_ms(lambda: mtb.process(frames_bgr, [np.empty_like(f) for f in frames_bgr]), repeat),
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
    rows: list[dict[str, Any]] = []
    for key, (ours, ocv) in stage.items():
        rows.append({"size": name, "stage": key, "edgehdr_ms": round(ours, 2), "opencv_ms": round(ocv, 2),
                     "ratio": round(ocv / ours, 2)})
    rows.append({"size": name, "stage": "tonemap_local", "edgehdr_ms": round(local_ms, 2), "opencv_ms": None,
                 "ratio": None, "local_over_global": round(local_ms / stage["tonemap_global"][0], 2)})
    return rows


def format_table(result: dict[str, Any]) -> str:
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
