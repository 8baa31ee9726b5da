"""``edgehdr bench --calls``: per-call time of the HDR core's public functions against OpenCV, 0.3 to 12 MP.

A real HDR photograph (the largest in ``../shared/data/hdr``) is re-taken through a
realistic JPEG camera (``edgehdr.synth.rephotograph``, 3 frames 2 stops apart, a
small hand shake) at each size, and each call is timed through the public API in
the same run as its OpenCV counterpart: ``calibrate_debevec`` vs
``CalibrateDebevec.process``, ``merge_debevec`` (calibrated response) vs
``MergeDebevec.process`` (OpenCV's own calibrated response), exposure-matched
``align_mtb`` (grey conversion, search and shifted frames) vs ``AlignMTB.process``.
Small inputs show fixed per-call costs that a 1080p benchmark hides.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from edgehdr.progress import Progress
from edgehdr.timing import median_ms

__all__ = ["MEGAPIXELS", "calls_benchmark", "format_calls"]

MEGAPIXELS = (0.3, 0.5, 1.0, 3.0, 12.0)


def calls_benchmark(megapixels: Sequence[float] = MEGAPIXELS, *, quiet: bool = False) -> dict[str, Any]:
    """Median ms per call, EdgeHDR and OpenCV, at each size (11 calls up to 1 MP, 5 above).

    Each side gets two untimed calls first: the first calls after the other tool
    ran pay page faults on fresh output buffers and thread wake-ups (15 ms instead
    of 4.5 ms for a 0.5 MP merge on a 2-core VM), which is not the call's cost.
    """
    from edgehdr.synth import real_hdr_scenes

    name, radiance = max(real_hdr_scenes(), key=lambda item: item[1].shape[0] * item[1].shape[1])
    progress = Progress(len(megapixels), quiet=quiet)
    rows = []
    for mp in megapixels:
        aspect = radiance.shape[0] / radiance.shape[1]
        h = int(round((mp * 1e6 * aspect) ** 0.5))
        w = int(round(mp * 1e6 / h))
        progress.step(f"{mp:g} MP ({w}x{h}): re-photographing {name} and timing")
        scaled = cv2.resize(radiance, (w, h), interpolation=cv2.INTER_LINEAR)
        for call, (ours, theirs) in _time_size(scaled, 11 if mp <= 1.0 else 5).items():
            rows.append({"megapixels": mp, "size": [w, h], "call": call, "edgehdr_ms": round(ours, 2),
                         "opencv_ms": round(theirs, 2), "ratio": round(theirs / ours, 2)})
    return {"scene": name, "rows": rows}


def _time_size(radiance: np.ndarray, repeat: int) -> dict[str, tuple[float, float]]:
    from edgehdr.hdr.align import align_mtb
    from edgehdr.hdr.crf import calibrate_debevec
    from edgehdr.hdr.merge import merge_debevec
    from edgehdr.synth import rephotograph

    shot = rephotograph(radiance, n=3, seed=0, shake_px=2)
    frames, t = shot.bracket.frames, shot.bracket.relative_exposure.astype(np.float32)
    bgr = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in frames]
    response = calibrate_debevec(frames, t, bits=8)
    cv_response = cv2.createCalibrateDebevec().process(bgr, t)
    mtb = cv2.createAlignMTB()
    return {
        "calibrate": (median_ms(lambda: calibrate_debevec(frames, t, bits=8), repeat, warmup=2),
                      median_ms(lambda: cv2.createCalibrateDebevec().process(bgr, t), repeat, warmup=2)),
        "merge": (median_ms(lambda: merge_debevec(shot.bracket, response=response), repeat, warmup=2),
                  median_ms(lambda: cv2.createMergeDebevec().process(bgr, t, cv_response), repeat, warmup=2)),
        "align_mtb_matched": (
            median_ms(lambda: align_mtb(frames, reference_index=1, exposures=t, response=response, bits=8),
                      repeat, warmup=2),
            median_ms(lambda: mtb.process(bgr, [np.empty_like(b) for b in bgr]), repeat, warmup=2)),
    }


def format_calls(result: dict[str, Any]) -> str:
    lines = [f"{'MP':>5} {'size':>10}  {'call':<18} {'edgehdr ms':>10} {'opencv ms':>10} {'ratio':>7}", "-" * 66]
    for r in result["rows"]:
        lines.append(f"{r['megapixels']:>5g} {r['size'][0]:>5}x{r['size'][1]:<4}  {r['call']:<18} "
                     f"{r['edgehdr_ms']:>10.2f} {r['opencv_ms']:>10.2f} {r['ratio']:>6.2f}x")
    lines.append(f"(median per call; {result['scene']} re-taken through a JPEG camera, 3 frames 2 stops apart; "
                 "ratio = OpenCV ms / EdgeHDR ms)")
    return "\n".join(lines)
