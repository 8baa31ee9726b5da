"""Task metrics and budgets of converted models: what a precision change does to the stage's real output.

The generic validation compares raw network outputs; a stage's budget is about
what the stage produces from them. A task is looked up by the model's
pre-processing name (its ONNX metadata ``edgehdr.preprocess``) and gets the
held-out source items (radiance maps or brackets) with both runners' outputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

if TYPE_CHECKING:
    from typing import TypeAlias

    Outputs: TypeAlias = Mapping[str, np.ndarray]  # one sample's outputs: {output name: array}

__all__ = ["TASKS", "Task", "task_for"]


class Task(TypedDict):
    """A stage's figure of merit: ``metric(items, fp32 outputs, converted outputs)`` -> figures, and
    ``budget(figures)`` -> ``(rule, passed)`` checks."""

    metric: Callable[[Sequence[Any], Sequence[Outputs], Sequence[Outputs]], dict[str, Any]]
    budget: Callable[[dict[str, Any]], list[tuple[str, bool]]]


def _tmo_output_psnr(items: Sequence[Any], ref_outputs: Sequence[Outputs],
                     cand_outputs: Sequence[Outputs]) -> dict[str, Any]:
    """Tone-mapped sRGB frames rendered from the FP32 and converted parameter grids: PSNR (peak 255).

    ``tmo_output_psnr_db_mean`` is the PSNR of the mean squared error over all samples (every
    sample counts, those identical to FP32 with their zero error); ``tmo_output_psnr_db_min``
    the worst sample's PSNR (infinite where every sample is identical).
    """
    from edgehdr.tonemap.neural import apply_parameter_grid, encode_tmo_input

    def psnr(mse: float) -> float:
        return float("inf") if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)  # NaN stays NaN

    errors = []
    for radiance, ref, cand in zip(items, ref_outputs, cand_outputs):
        _, key, blocks = encode_tmo_input(radiance)
        a = apply_parameter_grid(radiance, next(iter(ref.values()))[0], key_log2=key, blocks=blocks)
        b = apply_parameter_grid(radiance, next(iter(cand.values()))[0], key_log2=key, blocks=blocks)
        errors.append(float(np.mean((a.astype(np.float64) - b) ** 2)))
    return {"tmo_output_psnr_db_mean": psnr(float(np.mean(errors))),
            "tmo_output_psnr_db_min": psnr(float(np.max(errors)))}


def _tmo_budget(task: dict[str, Any]) -> list[tuple[str, bool]]:
    return [(f"tone-mapped output PSNR {task['tmo_output_psnr_db_mean']:.2f} dB >= 40 (the PSNR of the mean "
             "squared error over the samples)", task["tmo_output_psnr_db_mean"] >= 40.0)]


def _zone_light_error(items: Sequence[Any], ref_outputs: Sequence[Outputs],
                      cand_outputs: Sequence[Outputs]) -> dict[str, Any]:
    """Zone light of the converted model against FP32: mean and max absolute error (light fraction, 1 = full)."""
    diffs = [np.abs(np.asarray(next(iter(c.values())), np.float64) - next(iter(r.values())))
             for r, c in zip(ref_outputs, cand_outputs)]
    return {"zone_light_mae": float(np.mean([d.mean() for d in diffs])),
            "zone_light_max_abs": float(np.max([d.max() for d in diffs]))}  # NaN shows (Python's max hid it)


def _dimming_budget(task: dict[str, Any]) -> list[tuple[str, bool]]:
    return [(f"zone light mean abs error {task['zone_light_mae']:.4f} <= 0.01 (1 % of full drive)",
             task["zone_light_mae"] <= 0.01)]


def _score_correlation(items: Sequence[Any], ref_outputs: Sequence[Outputs],
                       cand_outputs: Sequence[Outputs]) -> dict[str, Any]:
    """Spearman correlation with TMQI of the FP32 and the converted scorer on held-out (radiance, SDR) pairs."""
    from edgehdr.quality import tmqi
    from edgehdr.quality.norvdpnet import spearman

    labels = [tmqi(radiance, sdr).Q for radiance, sdr in items]
    ref = [float(np.asarray(next(iter(r.values()))).reshape(-1)[0]) for r in ref_outputs]
    cand = [float(np.asarray(next(iter(c.values()))).reshape(-1)[0]) for c in cand_outputs]

    def srocc(scores: list[float]) -> float:  # a rank correlation ranks NaN like a number: undefined instead
        return spearman(scores, labels) if np.isfinite(scores).all() and np.isfinite(labels).all() else math.nan

    return {"srocc_fp32": srocc(ref), "srocc_converted": srocc(cand),
            "score_max_abs_diff": float(np.max(np.abs(np.subtract(ref, cand))))}


def _score_budget(task: dict[str, Any]) -> list[tuple[str, bool]]:
    drop = task["srocc_fp32"] - task["srocc_converted"]
    return [(f"SROCC with TMQI {task['srocc_converted']:.4f} vs FP32 {task['srocc_fp32']:.4f}: drop {drop:.4f} <= 0.02",
             drop <= 0.02)]


def _merge_quality(items: Sequence[Any], ref_outputs: Sequence[Outputs],
                   cand_outputs: Sequence[Outputs]) -> dict[str, Any]:
    """Radiance merged with the FP32 and the converted weights: PSNR-mu against the exact radiance where the
    items carry it (synthetic brackets), and of the converted merge against the FP32 merge."""
    from edgehdr.hdr.neural_merge import frame_weights, merge_with_weights
    from edgehdr.quality import psnr_mu
    from export.calibration import MERGE_RESPONSE

    vs_truth_ref, vs_truth_cand, vs_fp32 = [], [], []
    for (bracket, truth), r, c in zip(items, ref_outputs, cand_outputs):
        if not all(np.isfinite(np.asarray(v)).all() for v in c.values()):
            # merge_with_weights refuses non-finite weights: the candidate's figures are NaN, which fails the
            # budget (as every non-finite output does) instead of stopping the validation
            vs_fp32.append(float("nan"))
            if truth is not None:
                vs_truth_ref.append(float("nan"))
                vs_truth_cand.append(float("nan"))
            continue
        merged = [merge_with_weights(bracket, frame_weights(next(iter(out.values())), bracket.relative_exposure),
                                     response=MERGE_RESPONSE) for out in (r, c)]
        vs_fp32.append(psnr_mu(merged[1], merged[0]))
        if truth is not None:
            vs_truth_ref.append(psnr_mu(merged[0], truth))
            vs_truth_cand.append(psnr_mu(merged[1], truth))
    result = {"merge_psnr_mu_vs_fp32_db": float(np.mean(vs_fp32))}
    if vs_truth_ref:
        result.update(merge_psnr_mu_fp32_db=float(np.mean(vs_truth_ref)),
                      merge_psnr_mu_converted_db=float(np.mean(vs_truth_cand)))
    return result


def _merge_budget(task: dict[str, Any]) -> list[tuple[str, bool]]:
    if "merge_psnr_mu_fp32_db" in task:
        drop = task["merge_psnr_mu_fp32_db"] - task["merge_psnr_mu_converted_db"]
        return [(f"merge PSNR-mu vs ground truth {task['merge_psnr_mu_converted_db']:.2f} dB vs FP32 "
                 f"{task['merge_psnr_mu_fp32_db']:.2f} dB: drop {drop:.2f} <= 0.5 dB", drop <= 0.5)]
    return [(f"merge PSNR-mu against the FP32 merge {task['merge_psnr_mu_vs_fp32_db']:.2f} dB >= 40 (no ground "
             f"truth in this data)", task["merge_psnr_mu_vs_fp32_db"] >= 40.0)]


TASKS: dict[str, Task] = {
    "tmo_log_luminance": {"metric": _tmo_output_psnr, "budget": _tmo_budget},
    "dimming_zone_stats": {"metric": _zone_light_error, "budget": _dimming_budget},
    "norvdpnet_sdr": {"metric": _score_correlation, "budget": _score_budget},
    "merge_bracket": {"metric": _merge_quality, "budget": _merge_budget},
}


def task_for(preprocess: str) -> Task | None:
    return TASKS.get(preprocess)
