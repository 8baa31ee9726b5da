"""Task metrics and budgets of converted models: what a precision change does to the stage's real output.

The generic validation compares raw network outputs; a stage's budget is about
what the stage produces from them. A task is looked up by the model's
pre-processing name (its ONNX metadata ``edgehdr.preprocess``) and gets the
held-out source items (radiance maps or brackets) with both runners' outputs.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["TASKS", "task_for"]


def _tmo_output_psnr(items, ref_outputs, cand_outputs) -> dict:
    """Tone-mapped sRGB frames rendered from the FP32 and converted parameter grids: PSNR (peak 255)."""
    from edgehdr.tonemap.neural import apply_parameter_grid, encode_tmo_input

    values = []
    for radiance, ref, cand in zip(items, ref_outputs, cand_outputs):
        _, key, blocks = encode_tmo_input(radiance)
        a = apply_parameter_grid(radiance, next(iter(ref.values()))[0], key_log2=key, blocks=blocks)
        b = apply_parameter_grid(radiance, next(iter(cand.values()))[0], key_log2=key, blocks=blocks)
        mse = float(np.mean((a.astype(np.float64) - b) ** 2))
        values.append(float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse))
    finite = [v for v in values if math.isfinite(v)]
    return {"tmo_output_psnr_db_mean": float(np.mean(finite)) if finite else float("inf"),
            "tmo_output_psnr_db_min": min(values)}


def _tmo_budget(task) -> list:
    return [(f"tone-mapped output PSNR {task['tmo_output_psnr_db_mean']:.2f} dB >= 40",
             task["tmo_output_psnr_db_mean"] >= 40.0)]


def _zone_light_error(items, ref_outputs, cand_outputs) -> dict:
    """Zone light of the converted model against FP32: mean and max absolute error (light fraction, 1 = full)."""
    diffs = [np.abs(np.asarray(next(iter(c.values())), np.float64) - next(iter(r.values())))
             for r, c in zip(ref_outputs, cand_outputs)]
    return {"zone_light_mae": float(np.mean([d.mean() for d in diffs])),
            "zone_light_max_abs": float(max(d.max() for d in diffs))}


def _dimming_budget(task) -> list:
    return [(f"zone light mean abs error {task['zone_light_mae']:.4f} <= 0.01 (1 % of full drive)",
             task["zone_light_mae"] <= 0.01)]


def _score_correlation(items, ref_outputs, cand_outputs) -> dict:
    """Spearman correlation with TMQI of the FP32 and the converted scorer on held-out (radiance, SDR) pairs."""
    from edgehdr.quality import tmqi
    from edgehdr.quality.norvdpnet import spearman

    labels = [tmqi(radiance, sdr).Q for radiance, sdr in items]
    ref = [float(np.asarray(next(iter(r.values()))).reshape(-1)[0]) for r in ref_outputs]
    cand = [float(np.asarray(next(iter(c.values()))).reshape(-1)[0]) for c in cand_outputs]
    return {"srocc_fp32": spearman(ref, labels), "srocc_converted": spearman(cand, labels),
            "score_max_abs_diff": float(np.max(np.abs(np.subtract(ref, cand))))}


def _score_budget(task) -> list:
    drop = task["srocc_fp32"] - task["srocc_converted"]
    return [(f"SROCC with TMQI {task['srocc_converted']:.4f} vs FP32 {task['srocc_fp32']:.4f}: drop {drop:.4f} <= 0.02",
             drop <= 0.02)]


TASKS = {
    "tmo_log_luminance": {"metric": _tmo_output_psnr, "budget": _tmo_budget},
    "dimming_zone_stats": {"metric": _zone_light_error, "budget": _dimming_budget},
    "norvdpnet_sdr": {"metric": _score_correlation, "budget": _score_budget},
}


def task_for(preprocess: str):
    return TASKS.get(preprocess)
