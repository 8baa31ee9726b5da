"""Validation of a converted model (FP16, INT8 Q/DQ, TensorRT engine) against its FP32 original on held-out data.

Every output gets generic figures: max and mean absolute error, PSNR (peak: the
FP32 output's range), relative L2 error (||candidate - FP32|| / ||FP32|| over the
whole set) and cosine similarity (the worst sample's, and over the whole set). The
budget is the EdgeHDR task's where the model has one (``export.tasks``); for
EdgeHDR images without one, PSNR for image outputs and max absolute error for scores;
for anyone's model fed user tensors (``export.calibration``: ``.npz``/``.npy``
folders, hooks), whose outputs may be logits, features or anything else, the
scale-free figures: cosine similarity and relative L2 error of every output.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgehdr.quality.correlation import spearman  # re-exported: export.cli names it

if TYPE_CHECKING:
    from typing import TypeAlias

    from edgehdr.infer.base import PathLike, Runner
    from export.shapes import ShapeOverrides

    Outputs: TypeAlias = Mapping[str, np.ndarray]  # one sample's outputs: {output name: array}
    TaskMetric: TypeAlias = Callable[[list[Outputs], list[Outputs]], dict[str, Any]]  # (FP32, candidate) -> figures
    Budget: TypeAlias = Callable[[dict[str, Any]], list[tuple[str, bool]]]  # task figures -> (rule, passed)

__all__ = ["ABS_BUDGET", "COSINE_BUDGET", "PSNR_BUDGET_DB", "REL_L2_BUDGET", "apply_budget", "budget_line",
           "compare_runners", "report_paths", "spearman", "validate", "write_report"]

PSNR_BUDGET_DB = 40.0  # image outputs of a converted model vs FP32
ABS_BUDGET = 0.01  # scalar outputs (scores in [0, 1]) vs FP32
COSINE_BUDGET = 0.99  # user models: cosine similarity with FP32, worst held-out sample (whole set for scores)
REL_L2_BUDGET = 0.1  # user models: ||candidate - FP32|| / ||FP32|| over the held-out set


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two flattened arrays; 1 when both are zero, 0 when only one is."""
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    if na == 0.0 or nb == 0.0:
        return 1.0 if na == nb else 0.0
    return float(np.dot(a, b) / (na * nb))


def compare_runners(reference: Runner, candidate: Runner, feeds: Iterable[dict[str, np.ndarray]], *,
                    task_metric: TaskMetric | None = None) -> dict[str, Any]:
    """Generic figures of every output (module notes; PSNR's peak = FP32 output range); optional task metric.

    ``reference`` and ``candidate`` are loaded runners (``edgehdr.infer``); ``task_metric(ref_outputs,
    cand_outputs)`` may add the model's own figure (e.g. TMQI, SROCC) under ``"task"``.
    """
    ref_desc, cand_desc = reference.describe(), candidate.describe()
    _check_same_outputs(ref_desc.model, {t.name: t.shape for t in ref_desc.outputs},
                        cand_desc.model, {t.name: t.shape for t in cand_desc.outputs})
    per_output: dict[str, dict] = {}
    ref_all: list[Outputs] = []
    cand_all: list[Outputs] = []
    for feed in feeds:
        ref = reference.run(feed)
        out = candidate.run(feed)
        # what the runners returned, not only what they declared (a dynamic dimension is declared as '?')
        _check_same_outputs(ref_desc.model, {k: np.shape(v) for k, v in ref.items()},
                            cand_desc.model, {k: np.shape(v) for k, v in out.items()})
        ref_all.append(ref)
        cand_all.append(out)
        for name, value in ref.items():
            acc = per_output.setdefault(name, {"max_abs": 0.0, "sum_abs": 0.0, "sum_sq": 0.0, "n": 0,
                                              "lo": math.inf, "hi": -math.inf, "ref_sq": 0.0, "cos_min": math.inf,
                                              "dot": 0.0, "cand_sq": 0.0, "nonfinite": 0,
                                              "elements": int(np.asarray(value).size)})
            r = np.asarray(value, np.float64).ravel()
            c = np.asarray(out[name], np.float64).ravel()
            acc["nonfinite"] += int(np.count_nonzero(~np.isfinite(c) & np.isfinite(r)))
            with np.errstate(invalid="ignore"):  # inf - inf: NaN, replaced where the values are equal
                diff = np.where(c == r, 0.0, c - r)  # equal infinities are no error; NaN stays NaN
            # np.max, not max(): Python's max(0.0, nan) is 0.0, which would let a NaN output pass
            acc["max_abs"] = float(np.max([acc["max_abs"], float(np.abs(diff).max(initial=0.0))]))
            acc["sum_abs"] += float(np.abs(diff).sum())
            acc["sum_sq"] += float((diff * diff).sum())
            acc["n"] += diff.size
            acc["lo"] = min(acc["lo"], float(np.min(value)))
            acc["hi"] = max(acc["hi"], float(np.max(value)))
            acc["ref_sq"] += float(r @ r)
            acc["cand_sq"] += float(c @ c)
            acc["dot"] += float(r @ c)
            cos = _cosine(r, c)
            acc["cos_min"] = cos if math.isnan(cos) else min(acc["cos_min"], cos)
    report: dict[str, Any] = {"samples": len(ref_all), "outputs": {}}
    for name, acc in per_output.items():
        mse = acc["sum_sq"] / max(acc["n"], 1)
        peak = max(acc["hi"] - acc["lo"], 1e-12)
        ref_norm, cand_norm = math.sqrt(acc["ref_sq"]), math.sqrt(acc["cand_sq"])
        if ref_norm == 0.0:
            rel_l2 = 0.0 if acc["sum_sq"] == 0.0 else math.inf
        else:
            rel_l2 = math.sqrt(acc["sum_sq"]) / ref_norm
        if ref_norm == 0.0 or cand_norm == 0.0:
            cos_all = 1.0 if ref_norm == cand_norm else 0.0
        else:
            cos_all = acc["dot"] / (ref_norm * cand_norm)
        report["outputs"][name] = {"max_abs_error": acc["max_abs"], "mean_abs_error": acc["sum_abs"] / max(acc["n"], 1),
                                   "psnr_db": float("inf") if mse == 0 else 10 * math.log10(peak * peak / mse),
                                   "relative_l2_error": rel_l2, "cosine_similarity_min": acc["cos_min"],
                                   "cosine_similarity": cos_all,
                                   "fp32_range": [acc["lo"], acc["hi"]], "elements": acc["elements"],
                                   "nonfinite_values": acc["nonfinite"]}
    if task_metric is not None:
        report["task"] = task_metric(ref_all, cand_all)
    return report


def _check_same_outputs(ref_name: str, ref_shapes: Mapping[str, Sequence[int | str]], cand_name: str,
                        cand_shapes: Mapping[str, Sequence[int | str]]) -> None:
    """Refuse (``ValueError`` naming both models) a candidate whose outputs differ from the reference's in name or
    shape; a dimension either side leaves dynamic (a string) matches any size."""
    problems = []
    missing, extra = sorted(set(ref_shapes) - set(cand_shapes)), sorted(set(cand_shapes) - set(ref_shapes))
    if missing:
        problems.append(f"outputs {missing} missing from the candidate")
    if extra:
        problems.append(f"outputs {extra} not in the reference")
    for name in sorted(set(ref_shapes) & set(cand_shapes)):
        a, b = tuple(ref_shapes[name]), tuple(cand_shapes[name])
        if len(a) != len(b) or any(isinstance(x, int) and isinstance(y, int) and x != y for x, y in zip(a, b)):
            problems.append(f"output {name!r} has shape {list(b)} in the candidate, {list(a)} in the reference")
    if problems:
        raise ValueError(f"candidate {cand_name} does not have the outputs of reference {ref_name}: "
                         + "; ".join(problems) + " (compare a converted model with the FP32 model it came from)")


def report_paths(out_base: PathLike) -> tuple[Path, Path]:
    """``(OUT_BASE.json, OUT_BASE.md)``; a .json/.md suffix on ``out_base`` is dropped."""
    out_base = Path(out_base)
    if out_base.suffix in (".json", ".md"):
        out_base = out_base.with_suffix("")
    return Path(f"{out_base}.json"), Path(f"{out_base}.md")


def write_report(report: Mapping[str, Any], out_base: PathLike, *, title: str) -> list[Path]:
    """``OUT_BASE.json`` and ``OUT_BASE.md`` (``report_paths``), published together: both are written into a
    hidden staging folder beside them and moved into place once both are written (``edgehdr.io.staging``), so
    a failure leaves neither new file (and no half-replaced pair).

    The JSON is strict: undefined figures (the PSNR of identical outputs, a correlation of
    constant scores) are ``null``."""
    from edgehdr.io.atomic import dumps_json, write_json_atomic, write_text_atomic
    from edgehdr.io.staging import output_file, staged_outputs
    from export.strict_json import null_undefined

    json_path, md_path = report_paths(out_base)
    for path in (json_path, md_path):
        output_file(path, option="-o")
    lines = [f"# {title}", "", f"{report['samples']} held-out samples.", "",
             "| output | max abs error | mean abs error | PSNR dB | relative L2 | cosine (worst sample) | FP32 range |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for name, r in report["outputs"].items():
        psnr = "n/a (score)" if r.get("scalar") else f"{r['psnr_db']:.2f}"
        rel_l2, cos = r.get("relative_l2_error", math.nan), r.get("cosine_similarity_min", math.nan)
        lines.append(f"| {name} | {r['max_abs_error']:.3g} | {r['mean_abs_error']:.3g} | {psnr} | {rel_l2:.3g} | "
                     f"{cos:.5f} | {r['fp32_range'][0]:.3g} .. {r['fp32_range'][1]:.3g} |")
    if report.get("data"):
        lines += ["", f"Data: {dumps_json(null_undefined(report['data']))}"]
    if report.get("task"):
        lines += ["", f"Task metric: {dumps_json(null_undefined(report['task']))}"]
    if "budget" in report:
        lines += ["", f"Budget: {report['budget']['rule']} -> {'PASS' if report['budget']['passed'] else 'FAIL'}"]
    with staged_outputs(json_path.parent, json_path.stem) as stage:
        write_json_atomic(stage / json_path.name, null_undefined(report))
        write_text_atomic(stage / md_path.name, "\n".join(lines) + "\n")
    return [json_path, md_path]


def budget_line(report: Mapping[str, Any]) -> str:
    parts = []
    generic = report.get("budget", {}).get("kind") == "generic"
    for out, r in report["outputs"].items():
        if generic:
            parts.append(f"{out} cosine {_budget_cosine(r):.5f}, relative L2 {r['relative_l2_error']:.3g}, "
                         f"max abs {r['max_abs_error']:.3g}")
            continue
        psnr = "" if r.get("scalar") else f" PSNR {r['psnr_db']:.1f} dB,"
        parts.append(f"{out}{psnr} max abs {r['max_abs_error']:.3g}")
    if report["budget"].get("kind") == "task":
        parts.append(report["budget"]["rule"])
    return "; ".join(parts) + f" -> {'within' if report['budget']['passed'] else 'OUTSIDE'} budget"


def _open(path: PathLike, providers: str | Sequence[str] = "cpu", graph_optimization: str = "all") -> Runner:
    path = Path(path)
    if path.suffix == ".engine":
        from edgehdr.infer.trt import TensorRTRunner

        return TensorRTRunner(path).load()
    from edgehdr.infer.ort import OnnxRuntimeRunner

    return OnnxRuntimeRunner(path, providers=providers, graph_optimization=graph_optimization).load()


def _has_qdq(model: Any) -> bool:
    """Whether an ONNX model holds QuantizeLinear / DequantizeLinear nodes (a Q/DQ quantised model)."""
    return any(n.op_type in ("QuantizeLinear", "DequantizeLinear") for n in model.graph.node)


def _task_metric(ref_outputs: Sequence[Outputs], cand_outputs: Sequence[Outputs]) -> dict[str, Any]:
    """Scores (outputs of <= 4 values per sample): does the converted model rank samples like FP32 (SROCC)?"""
    import numpy as np

    task: dict[str, Any] = {}
    for name in ref_outputs[0]:
        if np.asarray(ref_outputs[0][name]).size <= 4 and len(ref_outputs) >= 3:
            ref = [float(np.asarray(r[name]).ravel()[0]) for r in ref_outputs]
            cand = [float(np.asarray(c[name]).ravel()[0]) for c in cand_outputs]
            # a rank correlation ranks NaN like a number: undefined instead (apply_budget fails the NaN itself)
            finite = bool(np.isfinite(ref).all() and np.isfinite(cand).all())
            task[f"{name}_srocc_vs_fp32"] = spearman(ref, cand) if finite else math.nan
    return task


def _budget_cosine(r: Mapping[str, Any]) -> float:
    """The cosine a budget holds an output to: the worst sample's, or the whole set's for a score (<= 4 values
    per sample, whose per-sample cosine is only a sign)."""
    return r["cosine_similarity"] if r.get("scalar") else r["cosine_similarity_min"]


def _raw_output_checks(report: Mapping[str, Any], psnr_db: float | None,
                       max_abs: float | None) -> list[tuple[str, bool]]:
    """PSNR >= ``psnr_db`` for each image output, max |error| <= ``max_abs`` for each scalar one (None: no check)."""
    checks = []
    for name, r in report["outputs"].items():
        if r.get("scalar") and max_abs is not None:
            checks.append((f"{name}: max abs error {r['max_abs_error']:.3g} <= {max_abs}",
                           r["max_abs_error"] <= max_abs))
        elif not r.get("scalar") and psnr_db is not None:
            checks.append((f"{name}: PSNR {r['psnr_db']:.2f} dB >= {psnr_db}", r["psnr_db"] >= psnr_db))
    return checks


def _nonfinite_checks(report: Mapping[str, Any]) -> list[tuple[str, bool]]:
    """A failed check for each output with NaN or infinite values where FP32's are finite, whatever the budget: a
    NaN compares false with every threshold and ranks like a number, so no figure can be trusted to catch it."""
    return [(f"{name}: {r['nonfinite_values']} non-finite values where FP32 is finite", False)
            for name, r in report["outputs"].items() if r.get("nonfinite_values", 0)]


def apply_budget(report: dict[str, Any], *, psnr_db: float | None = None, max_abs: float | None = None,
                 task_budget: Budget | None = None, cosine: float | None = None,
                 rel_l2: float | None = None) -> dict[str, Any]:
    """Image outputs need PSNR >= ``psnr_db`` against FP32; scalar outputs max |error| <= ``max_abs``
    (None: ``PSNR_BUDGET_DB``, ``ABS_BUDGET``).

    A model with a task (``export.tasks``) is held to its task's budget instead: what the
    stage produces from the outputs (e.g. the tone-mapped frame), not the raw outputs; a
    ``psnr_db`` or ``max_abs`` given as well holds its raw outputs to that too (both must pass).
    Given ``cosine`` and ``rel_l2`` (anyone's model on user tensors), every output needs
    cosine similarity >= ``cosine`` (``_budget_cosine``) and relative L2 error <= ``rel_l2``.
    Under every budget, an output with non-finite values where FP32's are finite fails
    (``nonfinite_values`` from ``compare_runners``).
    """
    if task_budget is not None:
        # and the caller's own raw-output budget, where one was given
        checks = task_budget(report["task"]) + _raw_output_checks(report, psnr_db, max_abs) + _nonfinite_checks(report)
        report["budget"] = {"rule": "; ".join(c[0] for c in checks), "passed": all(c[1] for c in checks),
                            "kind": "task"}
        return report
    checks = []
    if cosine is not None or rel_l2 is not None:
        if psnr_db is not None or max_abs is not None:  # not applied here: say so instead of dropping it
            raise ValueError("--psnr-budget and --abs-budget apply to the shipped data encodings; a model run on "
                             "your own tensors is held to --cosine-budget and --rel-l2-budget")
        cosine = COSINE_BUDGET if cosine is None else cosine
        rel_l2 = REL_L2_BUDGET if rel_l2 is None else rel_l2
        for name, r in report["outputs"].items():
            which = "cosine (whole set)" if r.get("scalar") else "cosine (worst sample)"
            checks.append((f"{name}: {which} {_budget_cosine(r):.5f} >= {cosine}", _budget_cosine(r) >= cosine))
            checks.append((f"{name}: relative L2 {r['relative_l2_error']:.3g} <= {rel_l2}",
                           r["relative_l2_error"] <= rel_l2))
        checks += _nonfinite_checks(report)
        report["budget"] = {"rule": "; ".join(c[0] for c in checks), "passed": all(c[1] for c in checks),
                            "kind": "generic", "cosine_min": cosine, "relative_l2_max": rel_l2}
        return report
    psnr_db = PSNR_BUDGET_DB if psnr_db is None else psnr_db
    max_abs = ABS_BUDGET if max_abs is None else max_abs
    checks = _raw_output_checks(report, psnr_db, max_abs) + _nonfinite_checks(report)
    report["budget"] = {"rule": "; ".join(c[0] for c in checks), "passed": all(c[1] for c in checks),
                        "psnr_db_min": psnr_db, "max_abs_error_max": max_abs}
    return report


def refuse_unused_user_budget(cosine: float | None, rel_l2: float | None, *, user_data: bool, option: str,
                              data: object) -> None:
    """``cosine`` and ``rel_l2`` hold user tensors only: given with the shipped encodings' data they would be dropped
    without a word, so they are refused (``build`` asks before any work, ``validate`` once it has the data)."""
    if not user_data and (cosine is not None or rel_l2 is not None):
        raise ValueError(f"--cosine-budget and --rel-l2-budget apply to your own tensors (a folder of .npz/.npy or "
                         f"a loader hook); {option} {data} uses a shipped encoding, held to its stage's budget "
                         "(or --psnr-budget / --abs-budget with edgehdr-export validate)")


def validate(reference: PathLike, candidate: PathLike, *, data: PathLike = "synth", count: int = 16,
             out_base: PathLike | None = None, psnr_db: float | None = None, max_abs: float | None = None,
             quiet: bool = False, shapes: ShapeOverrides | None = None, cosine: float | None = None,
             rel_l2: float | None = None, split: bool | None = None, option: str = "--data") -> dict[str, Any]:
    """FP32 ``reference`` vs ``candidate`` on held-out data; report (and ``out_base``.json/.md) with the budget.

    ``data``: 'synth', a folder or a data-loader hook (``export.calibration``). ``shapes``
    (``{input: dims}``, ``export.shapes``) fixes the dynamic input dimensions of the held-out
    feeds. User tensors are held to ``cosine`` and ``rel_l2`` (``apply_budget``; None: ``COSINE_BUDGET``,
    ``REL_L2_BUDGET``), and giving either with the shipped encodings' data is an error. ``split``
    True: the data also served as calibration data, so only every fifth sample is held out;
    False: all of it is held-out data; None: a folder of HDR images or brackets is split, user
    tensors are used whole (``export.calibration.model_feeds``). ``option`` names the data
    source in errors.
    """
    from edgehdr.io.staging import output_file
    from export.calibration import check_source, model_feeds
    from export.checks import load_model, refuse_custom_ops, require_engine
    from export.tasks import task_for

    why = "validation runs it in ONNX Runtime"
    refuse_custom_ops(load_model(reference, what="FP32 ONNX model", check=True), reference, why)
    qdq = False
    if Path(candidate).suffix == ".engine":
        require_engine(candidate)
    else:
        candidate_model = load_model(candidate, check=True)
        refuse_custom_ops(candidate_model, candidate, why)
        qdq = _has_qdq(candidate_model)
    check_source(data, option)
    if out_base is not None:  # the base (a folder there is a mistake) and both report files, before any work
        for path in (Path(out_base), *report_paths(out_base)):
            output_file(path, option="-o")
    feeds, described, items = model_feeds(reference, data, count, role="holdout", with_items=True, shapes=shapes,
                                          split=split, option=option)
    task = task_for(described["preprocess"])
    user_data = described.get("preprocess") == "none"
    refuse_unused_user_budget(cosine, rel_l2, user_data=user_data, option=option, data=data)

    def metric(ref_outputs: list[Outputs], cand_outputs: list[Outputs]) -> dict[str, Any]:
        result = _task_metric(ref_outputs, cand_outputs)
        if task is not None:
            result.update(task["metric"](items, ref_outputs, cand_outputs))
        return result

    # A Q/DQ model is judged by its own arithmetic (ONNX Runtime's "basic" level runs the Q/DQ nodes as written), which
    # TensorRT computes on the device; what this host's fused int8 kernels make of it is reported beside it
    # ("host_int8_kernels"): on x86 CPUs without VNNI they saturate, which says nothing of the engine.
    ref, cand = _open(reference), _open(candidate, graph_optimization="basic" if qdq else "all")
    try:
        report = compare_runners(ref, cand, feeds, task_metric=metric)
        if qdq:
            fused = _open(candidate)
            try:
                host = compare_runners(ref, fused, feeds)
            finally:
                fused.close()
    finally:
        ref.close()
        cand.close()
    if qdq:
        report["semantics"] = "Q/DQ nodes as written (ONNX Runtime graph optimisation 'basic'), as TensorRT computes"
        report["host_int8_kernels"] = {name: {k: r[k] for k in ("psnr_db", "max_abs_error") if k in r}
                                       for name, r in host["outputs"].items()}
    for r in report["outputs"].values():
        r["scalar"] = bool(int(r.get("elements", 0)) <= 4)
    report["data"] = described
    report["reference"], report["candidate"] = Path(reference).name, Path(candidate).name
    apply_budget(report, psnr_db=psnr_db, max_abs=max_abs, task_budget=task["budget"] if task else None,
                 cosine=(COSINE_BUDGET if cosine is None else cosine) if user_data else None,
                 rel_l2=(REL_L2_BUDGET if rel_l2 is None else rel_l2) if user_data else None)
    if out_base is not None:
        report["files"] = [str(p) for p in write_report(report, out_base, title=f"{Path(candidate).name} vs "
                                                                              f"{Path(reference).name}")]
    if not quiet:
        print(budget_line(report))
        for name, figures in report.get("host_int8_kernels", {}).items():
            ours = report["outputs"][name]
            if "psnr_db" in figures and figures["psnr_db"] < ours["psnr_db"] - 3.0:
                print(f"note: this CPU's ONNX Runtime int8 kernels give {name} PSNR {figures['psnr_db']:.1f} dB "
                      f"against {ours['psnr_db']:.1f} dB for the Q/DQ arithmetic (x86 without VNNI saturates): "
                      "run the INT8 model with TensorRT or on a CPU with VNNI / Arm dot products, or FP16 / FP32 here",
                      file=sys.stderr)
    return report
