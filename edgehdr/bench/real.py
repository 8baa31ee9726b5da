"""``edgehdr bench --real PATHS``: EdgeHDR and OpenCV side by side on your own exposure stacks.

For each stack (a folder with ``list.txt`` or EXIF exposures, or a list file), each
tool recovers its own camera response and merges; the figure of merit is the
**reprojection error**: every input frame's codes predicted from the merged radiance
times the frame's relative exposure, through the response the tool recovered (one
global scale fitted per tool, in the log domain), compared with the real codes as
the mean absolute code error over pixels with codes 13..242 (neither black nor
clipped). It needs no ground truth, so it works on any camera; lower is better.
Times are medians of three calls after a warm-up call, measured in the same run. pfstools (``pfshdrcalibrate``) is
added where it is installed.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from typing import Any

import cv2
import numpy as np

from edgehdr.hdr.crf import CameraResponse

__all__ = ["format_real", "real_stack_report", "reprojection_error"]

_LO, _HI = 13, 242


def _lut3(response: CameraResponse) -> np.ndarray:
    """The response's inverse LUT as float64 (3, K), a shared curve repeated per channel."""
    lut = np.asarray(response.inverse_lut, np.float64)
    return np.broadcast_to(lut, (3, lut.shape[-1])) if lut.ndim == 1 else lut


def _forward(response: CameraResponse, exposure: np.ndarray) -> np.ndarray:
    """Codes (float) a response gives to relative exposures, channel by channel (inverse of its LUT)."""
    lut = _lut3(response)
    codes = np.empty(exposure.shape, np.float64)
    levels = np.arange(lut.shape[1], dtype=np.float64)
    for c in range(3):
        codes[..., c] = np.interp(exposure[..., c], lut[c], levels)
    return codes


def reprojection_error(frames: np.ndarray, relative_exposure: Sequence[float] | np.ndarray, radiance: np.ndarray,
                       response: CameraResponse) -> float:
    """Mean |predicted - real| code over pixels with codes 13..242 in every frame of a stack.

    ``predicted = response^-1(s * radiance * t_j)`` with one scale ``s`` fitted in the log
    domain over all frames and pixels (a merge fixes radiance only up to scale).
    """
    stack = np.asarray(frames)
    lut = _lut3(response)
    logs, obs = [], []
    for j, t in enumerate(relative_exposure):
        z = stack[j].astype(np.int64)
        ok = (z >= _LO) & (z <= _HI) & (radiance > 0)
        x = np.take_along_axis(lut, z.reshape(-1, 3).T, axis=1).T.reshape(z.shape)
        keep = ok & (x > 0)
        logs.append(np.log(x[keep]) - np.log(radiance[keep] * t))
        obs.append(keep)
    scale = float(np.exp(np.median(np.concatenate(logs)))) if logs and sum(a.size for a in logs) else 1.0
    errors = []
    for j, t in enumerate(relative_exposure):
        predicted = _forward(response, radiance * (scale * t))
        errors.append(np.abs(predicted - stack[j])[obs[j]])
    return float(np.concatenate(errors).mean())


def _timed(fn: Any, runs: int = 3) -> tuple[Any, float]:
    """The result and the median milliseconds of ``runs`` calls after one untimed call (JIT, caches)."""
    out = fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return out, float(np.median(times))


def real_stack_report(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Reprojection error and per-call times of EdgeHDR (CLI defaults) and OpenCV on one stack."""
    from edgehdr.hdr.align import align_bracket
    from edgehdr.hdr.crf import calibrate_debevec
    from edgehdr.hdr.merge import merge_debevec
    from edgehdr.io import read_ldr_stack

    bracket = read_ldr_stack(path)
    if bracket.bits != 8:
        raise ValueError(f"{path}: --real compares with OpenCV's 8-bit calibration; got {bracket.bits}-bit frames")
    frames, t = bracket.frames, np.asarray(bracket.relative_exposure, np.float64)
    row: dict[str, Any] = {"stack": str(path), "frames": len(bracket), "size": [frames.shape[2], frames.shape[1]]}
    # EdgeHDR with the CLI's defaults: calibrated response, automatic alignment, default weighting.
    try:
        response, cal_ms = _timed(lambda: calibrate_debevec(frames, t, bits=8))
    except ValueError as exc:  # an all-black bracket, say: name the stack
        raise ValueError(f"{path}: {exc}") from None
    (aligned, motions), align_ms = _timed(lambda: align_bracket(bracket, "auto", response=response))
    radiance, merge_ms = _timed(lambda: merge_debevec(aligned, response=response))
    row["edgehdr"] = {"reprojection_codes": reprojection_error(aligned.frames, t, radiance, response),
                      "calibrate_ms": cal_ms, "align_ms": align_ms, "merge_ms": merge_ms,
                      "motions": [m.as_dict() for m in motions]}
    # OpenCV: CalibrateDebevec + MergeDebevec on the same (unaligned) frames, its own response.
    bgr = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in frames]
    times = t.astype(np.float32)
    cv_resp, cv_cal_ms = _timed(lambda: cv2.createCalibrateDebevec().process(bgr, times))
    cv_rad, cv_merge_ms = _timed(lambda: cv2.createMergeDebevec().process(bgr, times, cv_resp))
    lut = np.maximum.accumulate(np.maximum(np.asarray(cv_resp).reshape(256, 3).T[::-1], 1e-9), axis=1)
    cv_response = CameraResponse(lut.astype(np.float32))
    rgb = cv2.cvtColor(np.asarray(cv_rad, np.float32), cv2.COLOR_BGR2RGB)
    row["opencv"] = {"reprojection_codes": reprojection_error(frames, t, rgb, cv_response),
                     "calibrate_ms": cv_cal_ms, "merge_ms": cv_merge_ms}
    row["pfstools"] = ({"note": "pfshdrcalibrate found; not compared yet"} if shutil.which("pfshdrcalibrate")
                       else {"note": "not installed (apt install pfstools)"})
    return row


def format_real(rows: Sequence[dict[str, Any]]) -> str:
    lines = [f"{'stack':<28} {'size':>10} {'EdgeHDR err':>11} {'OpenCV err':>10} {'cal ms':>14} {'merge ms':>14}",
             "-" * 92]
    for r in rows:
        e, o = r["edgehdr"], r["opencv"]
        name = os.path.basename(r["stack"].rstrip("/")) or r["stack"]
        lines.append(f"{name[:28]:<28} {r['size'][0]:>5}x{r['size'][1]:<4} {e['reprojection_codes']:>11.2f} "
                     f"{o['reprojection_codes']:>10.2f} {e['calibrate_ms']:>6.0f}/{o['calibrate_ms']:<7.0f} "
                     f"{e['merge_ms']:>6.0f}/{o['merge_ms']:<7.0f}")
    lines.append("(reprojection error: mean |code| over codes 13..242, each tool through its own response, lower is "
                 "better; times EdgeHDR/OpenCV per call in this run; pfstools: " + rows[0]["pfstools"]["note"] + ")"
                 if rows else "(no stacks)")
    return "\n".join(lines)
