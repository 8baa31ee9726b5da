"""Validation of a converted model (FP16, INT8 Q/DQ, TensorRT engine) against its FP32 original on held-out data."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

__all__ = ["compare_runners", "write_report"]


def compare_runners(reference, candidate, feeds, *, task_metric=None) -> dict:
    """Max/mean absolute error and PSNR of every output (peak = FP32 output range); optional task metric.

    ``reference`` and ``candidate`` are loaded runners (``edgehdr.infer``); ``task_metric(ref_outputs,
    cand_outputs)`` may add the model's own figure (e.g. TMQI, SROCC) under ``"task"``.
    """
    per_output: dict[str, dict] = {}
    ref_all, cand_all = [], []
    for feed in feeds:
        ref = reference.run(feed)
        out = candidate.run(feed)
        ref_all.append(ref)
        cand_all.append(out)
        for name, value in ref.items():
            acc = per_output.setdefault(name, {"max_abs": 0.0, "sum_abs": 0.0, "sum_sq": 0.0, "n": 0,
                                              "lo": math.inf, "hi": -math.inf,
                                              "elements": int(np.asarray(value).size)})
            diff = np.asarray(out[name], np.float64) - np.asarray(value, np.float64)
            acc["max_abs"] = max(acc["max_abs"], float(np.abs(diff).max()))
            acc["sum_abs"] += float(np.abs(diff).sum())
            acc["sum_sq"] += float((diff * diff).sum())
            acc["n"] += diff.size
            acc["lo"] = min(acc["lo"], float(np.min(value)))
            acc["hi"] = max(acc["hi"], float(np.max(value)))
    report = {"samples": len(ref_all), "outputs": {}}
    for name, acc in per_output.items():
        mse = acc["sum_sq"] / max(acc["n"], 1)
        peak = max(acc["hi"] - acc["lo"], 1e-12)
        report["outputs"][name] = {"max_abs_error": acc["max_abs"], "mean_abs_error": acc["sum_abs"] / max(acc["n"], 1),
                                   "psnr_db": float("inf") if mse == 0 else 10 * math.log10(peak * peak / mse),
                                   "fp32_range": [acc["lo"], acc["hi"]], "elements": acc["elements"]}
    if task_metric is not None:
        report["task"] = task_metric(ref_all, cand_all)
    return report


def write_report(report: dict, out_base, *, title: str) -> list[Path]:
    """``OUT_BASE.json`` and ``OUT_BASE.md`` (atomic; a .json/.md suffix on ``out_base`` is dropped).

    The JSON is strict: undefined figures (the PSNR of identical outputs, a correlation of
    constant scores) are ``null``."""
    from edgehdr.io.atomic import dumps_json, write_json_atomic, write_text_atomic
    from export.strict_json import null_undefined

    out_base = Path(out_base)
    if out_base.suffix in (".json", ".md"):
        out_base = out_base.with_suffix("")
    json_path, md_path = Path(f"{out_base}.json"), Path(f"{out_base}.md")
    lines = [f"# {title}", "", f"{report['samples']} held-out samples.", "",
             "| output | max abs error | mean abs error | PSNR dB | FP32 range |", "| --- | ---: | ---: | ---: | --- |"]
    for name, r in report["outputs"].items():
        psnr = "n/a (score)" if r.get("scalar") else f"{r['psnr_db']:.2f}"
        lines.append(f"| {name} | {r['max_abs_error']:.3g} | {r['mean_abs_error']:.3g} | {psnr} | "
                     f"{r['fp32_range'][0]:.3g} .. {r['fp32_range'][1]:.3g} |")
    if report.get("task"):
        lines += ["", f"Task metric: {dumps_json(null_undefined(report['task']))}"]
    if "budget" in report:
        lines += ["", f"Budget: {report['budget']['rule']} -> {'PASS' if report['budget']['passed'] else 'FAIL'}"]
    return [write_json_atomic(json_path, null_undefined(report)),
            write_text_atomic(md_path, "\n".join(lines) + "\n")]
