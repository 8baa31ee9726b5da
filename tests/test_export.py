"""Export tooling: ONNX checks, FP16, INT8 Q/DQ that TensorRT accepts, calibration data, validation, the CLI."""

from __future__ import annotations

import importlib.util
import json
import math
import random
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from edgehdr.infer import Manifest, OnnxRuntimeRunner, sha256_file
from edgehdr.io import write_radiance
from export.calibration import (
    CalibrationReader,
    bracket_nchw,
    log_encode_nchw,
    model_feeds,
    preprocessing_of,
    synthetic_brackets,
)
from export.checks import check_model, topological_sort
from export.cli import ABS_BUDGET, PSNR_BUDGET_DB, spearman, validate
from export.cli import main as export_main
from export.precision import _activation_ranges, quantize_int8, scalar_heads, to_fp16
from export.testnets import image_net, score_net
from export.trt_check import check_qdq_for_tensorrt
from export.validate import compare_runners

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("export")
    nets = {"image": image_net(d / "image.onnx"), "score": score_net(d / "score.onnx")}
    feeds = {k: model_feeds(p, "synth", 24, role="calibration")[0] for k, p in nets.items()}
    held = {k: model_feeds(p, "synth", 12, role="holdout")[0] for k, p in nets.items()}
    return {"dir": d, "nets": nets, "feeds": feeds, "held": held}


def _report(reference, candidate, feeds):
    with OnnxRuntimeRunner(reference) as ref, OnnxRuntimeRunner(candidate) as cand:
        return compare_runners(ref, cand, feeds)


# ------------------------------------------------------------------------------------------------------- checks
def test_check_model_reports_and_refuses(work, tmp_path):
    info = check_model(work["nets"]["image"], require_static=True)
    assert info["opset"] == 17 and info["static_shapes"] and "Resize" in info["ops"]
    assert info["inputs"] == [{"name": "image", "shape": [1, 3, 64, 64], "dtype": "float32"}]
    old = score_net(tmp_path / "old.onnx", opset=11)
    with pytest.raises(ValueError, match=r"old\.onnx: opset 11 is below 13"):
        check_model(old)
    model = onnx.load(str(work["nets"]["score"]))
    model.graph.input[0].type.tensor_type.shape.dim[0].dim_param = "batch"
    dyn = tmp_path / "dynamic.onnx"
    onnx.save(model, str(dyn))
    assert check_model(dyn)["dynamic"] == ["image"]
    with pytest.raises(ValueError, match="DLA needs static shapes"):
        check_model(dyn, require_static=True)
    broken = tmp_path / "broken.onnx"
    broken.write_bytes(b"\x08\x07garbage")
    with pytest.raises(ValueError, match=r"broken\.onnx: invalid ONNX model"):
        check_model(broken)


def test_topological_sort_restores_a_valid_order(work, tmp_path):
    model = onnx.load(str(work["nets"]["image"]))
    nodes = list(model.graph.node)
    random.Random(4).shuffle(nodes)
    del model.graph.node[:]
    model.graph.node.extend(nodes)
    with pytest.raises(onnx.checker.ValidationError):
        onnx.checker.check_model(model)
    topological_sort(model)
    onnx.checker.check_model(model)
    path = tmp_path / "sorted.onnx"
    onnx.save(model, str(path))
    report = _report(work["nets"]["image"], path, work["held"]["image"][:2])
    assert report["outputs"]["output"]["max_abs_error"] == 0.0


# ------------------------------------------------------------------------------------------------------- FP16
def test_fp16_keeps_sensitive_ops_in_fp32_and_stays_close(work):
    out = work["dir"] / "image.fp16.onnx"
    described = to_fp16(work["nets"]["image"], out)
    assert described["kept_fp32_ops"] == ["Resize"]
    model = onnx.load(str(out))
    onnx.checker.check_model(model)
    assert model.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # FP32 I/O kept
    halves = [i for i in model.graph.initializer if i.data_type == onnx.TensorProto.FLOAT16]
    assert {i.name for i in halves} >= {"conv1.weight", "conv2.weight", "conv3.weight"}
    report = _report(work["nets"]["image"], out, work["held"]["image"])
    assert report["outputs"]["output"]["psnr_db"] > 60.0


# ------------------------------------------------------------------------------------------------------- INT8
# Entropy calibration clips the activations that a global average pool sums, which biases the score network's
# output past its budget (max abs error ~0.011 > 0.01); 'auto' avoids it by scoring each method on calibration data.
@pytest.mark.slow
@pytest.mark.parametrize("which, method", [("image", "minmax"), ("image", "entropy"), ("image", "percentile"),
                                           ("score", "minmax"), ("score", "percentile"), ("score", "auto")])
def test_int8_qdq_is_fit_for_tensorrt_and_within_budget(work, which, method):
    src = work["nets"][which]
    out = work["dir"] / f"{which}.{method}.int8.onnx"
    described = quantize_int8(src, out, CalibrationReader(work["feeds"][which]), method=method)
    assert check_qdq_for_tensorrt(out, float_nodes=described["kept_float"]) == []
    report = _report(src, out, work["held"][which])
    (name, r), = report["outputs"].items()
    if which == "image":
        assert described["kept_float"] == []
        assert r["psnr_db"] >= PSNR_BUDGET_DB, r
    else:
        assert described["kept_float"] == ["fc"]  # the score head stays float
        assert r["max_abs_error"] <= ABS_BUDGET, r
    # Q/DQ only on inputs of quantised ops: no Resize, Relu or Sigmoid reads a DequantizeLinear.
    model = onnx.load(str(out))
    dq_outputs = {n.output[0] for n in model.graph.node if n.op_type == "DequantizeLinear"}
    for n in model.graph.node:
        if n.op_type in ("Resize", "Relu", "Sigmoid", "GlobalAveragePool"):
            assert not set(n.input) & dq_outputs, n.name


def test_entropy_calibration_clips_where_minmax_does_not(work):
    """TensorRT-style entropy (2048-bin KL search) picks thresholds inside the observed range."""
    ranges = {}
    for method in ("minmax", "entropy"):
        out = work["dir"] / f"ranges.{method}.onnx"
        quantize_int8(work["nets"]["image"], out, CalibrationReader(work["feeds"]["image"]), method=method)
        ranges[method] = _activation_ranges(out)
    assert ranges["minmax"].keys() == ranges["entropy"].keys()
    assert all(ranges["entropy"][k] <= ranges["minmax"][k] * 1.001 for k in ranges["minmax"])
    assert any(ranges["entropy"][k] < 0.95 * ranges["minmax"][k] for k in ranges["minmax"])
    # minmax ranges are the data's absolute maxima (the image input is a [0, 1] encoding that reaches 1).
    assert ranges["minmax"]["image"] == pytest.approx(max(float(f["image"].max()) for f in work["feeds"]["image"]),
                                                      rel=1e-4)


def test_auto_calibration_keeps_the_best_on_calibration_data(work):
    out = work["dir"] / "auto.int8.onnx"
    described = quantize_int8(work["nets"]["image"], out, CalibrationReader(work["feeds"]["image"]), method="auto")
    scores = described["selection_error"]
    assert set(scores) == {"minmax", "entropy", "percentile"}
    assert described["method"] == min(scores, key=scores.get)
    assert described["selection_samples"] == 24 and described["samples"] == 24
    assert check_qdq_for_tensorrt(out) == [] and not list(work["dir"].glob(".auto*trial*"))


def test_static_tensorrt_check_catches_bad_qdq(work):
    out = work["dir"] / "check.int8.onnx"
    quantize_int8(work["nets"]["image"], out, CalibrationReader(work["feeds"]["image"]), method="minmax")
    good = onnx.load(str(out))
    assert check_qdq_for_tensorrt(good) == []

    asym = onnx.ModelProto()
    asym.CopyFrom(good)
    zp = next(i for i in asym.graph.initializer if i.name.endswith("_zero_point") and "weight" not in i.name)
    zp.CopyFrom(numpy_helper.from_array(np.array(5, np.int8), zp.name))
    assert any("zero point not 0" in p for p in check_qdq_for_tensorrt(asym))

    axis = onnx.ModelProto()
    axis.CopyFrom(good)
    dq = next(n for n in axis.graph.node if n.op_type == "DequantizeLinear" and n.input[0] == "conv1.weight_quantized")
    del dq.attribute[:]
    dq.attribute.append(helper.make_attribute("axis", 1))
    assert any("conv1: weight quantised on axis 1" in p for p in check_qdq_for_tensorrt(axis))

    resize = onnx.ModelProto()
    resize.CopyFrom(good)
    down = next(n for n in resize.graph.node if n.name == "down")
    add_dq = next(n for n in resize.graph.node if n.op_type == "DequantizeLinear" and n.input[0].startswith("residual"))
    down.input[0] = add_dq.output[0]
    problems = check_qdq_for_tensorrt(resize)
    assert any("down: Resize input comes from DequantizeLinear" in p for p in problems)

    unquantised = onnx.load(str(work["nets"]["image"]))
    assert any("not an explicitly quantised model" in p for p in check_qdq_for_tensorrt(unquantised))


def test_scalar_heads(work):
    assert scalar_heads(work["nets"]["score"]) == ["fc"]
    assert scalar_heads(work["nets"]["image"]) == []


# ------------------------------------------------------------------------------------------------- calibration
def test_log_encoding_is_scale_invariant(scene_factory):
    radiance = scene_factory(3, 96, 128).radiance
    a = log_encode_nchw(radiance, 48, 64)
    b = log_encode_nchw(radiance * 37.0, 48, 64)
    assert a.shape == (1, 3, 48, 64) and a.dtype == np.float32
    np.testing.assert_allclose(a, b, atol=1e-5)
    # The median luminance maps to the middle of the code range (0 stops -> 0.5).
    lum = np.median(np.tensordot(a[0] * 32.0 - 16.0, [0.2126, 0.7152, 0.0722], axes=(0, 0)))
    assert abs(lum) < 1.0


def test_bracket_feed_orders_exposures():
    bracket = next(synthetic_brackets(1, 3, seed=5, height=96, width=128))
    x = bracket_nchw(bracket, 48, 64)
    assert x.shape == (1, 9, 48, 64) and 0.0 <= x.min() and x.max() <= 1.0
    means = [x[0, 3 * i:3 * i + 3].mean() for i in range(3)]
    assert means[0] < means[1] < means[2]  # shortest exposure first


def test_calibration_and_holdout_never_overlap(work, tmp_path):
    cal, cal_desc = model_feeds(work["nets"]["image"], "synth", 6, role="calibration")
    held, held_desc = model_feeds(work["nets"]["image"], "synth", 6, role="holdout")
    assert cal_desc["seeds"][1] < held_desc["seeds"][0]
    assert not any(np.array_equal(c["image"], h["image"]) for c in cal for h in held)
    folder = tmp_path / "hdr"
    folder.mkdir()
    for i in range(10):
        write_radiance(folder / f"img{i:02d}.pfm", np.full((16, 16, 3), 2.0 ** (i - 5), np.float32)
                       * np.linspace(0.5, 2.0, 16, dtype=np.float32)[None, :, None])
    cal, _ = model_feeds(work["nets"]["image"], folder, 100, role="calibration")
    held, desc = model_feeds(work["nets"]["image"], folder, 100, role="holdout")
    assert len(cal) == 8 and len(held) == 2 and desc["split"] == "every 5th item held out"
    with pytest.raises(ValueError, match="neither 'synth' nor a folder"):
        model_feeds(work["nets"]["image"], tmp_path / "nope", 4)


def test_preprocessing_comes_from_model_metadata(work, tmp_path):
    assert preprocessing_of(work["nets"]["image"]) == "log_radiance"
    model = onnx.load(str(work["nets"]["image"]))
    onnx.helper.set_model_props(model, {"edgehdr.preprocess": "bracket_ldr"})
    assert preprocessing_of(model) == "bracket_ldr"
    onnx.helper.set_model_props(model, {"edgehdr.preprocess": "sepia"})
    with pytest.raises(ValueError, match="edgehdr.preprocess='sepia'"):
        preprocessing_of(model)


def test_spearman_matches_closed_form():
    rng = np.random.default_rng(2)
    a = rng.random(20)
    b = a + rng.normal(0, 0.2, 20)
    d = np.argsort(np.argsort(a)) - np.argsort(np.argsort(b))
    assert spearman(a, b) == pytest.approx(1 - 6 * np.sum(d ** 2) / (20 * (20 ** 2 - 1)))
    assert spearman([1, 2, 2, 3], [1, 2, 2, 3]) == pytest.approx(1.0)


# ---------------------------------------------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_cli_build_int8_writes_models_manifests_and_report(work, tmp_path, capsys):
    out = tmp_path / "out"
    rc = export_main(["build", str(work["nets"]["image"]), "--precision", "int8", "--calib-count", "16",
                      "--holdout-count", "8", "--method", "minmax", "-o", str(out)])
    assert rc == 0
    assert "onnx:" in capsys.readouterr().out
    int8 = out / "image.int8.onnx"
    manifest = Manifest.load(Manifest.path_for(int8))
    assert manifest.precision == "int8" and manifest.source_onnx_sha256 == sha256_file(work["nets"]["image"])
    assert manifest.calibration["data"]["samples"] == 16 and manifest.calibration["method"] == "minmax"
    assert manifest.accuracy_vs_fp32["budget"]["passed"]
    assert manifest.inputs == [{"name": "image", "shape": [1, 3, 64, 64], "dtype": "float32"}]
    assert check_qdq_for_tensorrt(int8) == []
    report = json.loads((out / "image.int8.validation.json").read_text())
    assert report["outputs"]["output"]["psnr_db"] >= 40.0 and report["data"]["role"] == "holdout"
    assert "PASS" in (out / "image.int8.validation.md").read_text()
    # validate on its own reproduces the build's figure (same held-out data, deterministic runners)
    again = validate(out / "image.fp32.onnx", int8, count=8, quiet=True)
    assert again["outputs"]["output"]["psnr_db"] == pytest.approx(report["outputs"]["output"]["psnr_db"])
    # inspect shows the I/O and the manifest
    assert export_main(["inspect", str(int8)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["ops"]["QuantizeLinear"] >= 4 and info["tensorrt_qdq_check"] == "passed"
    assert info["manifest"]["precision"] == "int8"


def test_cli_validate_fails_outside_budget(work, tmp_path, capsys):
    other = score_net(tmp_path / "other.onnx", seed=9)  # a different network is far outside any budget
    rc = export_main(["validate", str(work["nets"]["score"]), str(other), "--count", "4", "-o",
                      str(tmp_path / "report")])
    assert rc == 1
    assert "OUTSIDE budget" in capsys.readouterr().out
    assert "FAIL" in (tmp_path / "report.md").read_text()


def test_cli_bench_measures_every_backend_present(work, capsys):
    assert export_main(["bench", str(work["nets"]["score"]), "--runs", "5", "--warmup", "1"]) == 0
    text = capsys.readouterr().out
    assert "ort-cpu" in text and "opencv-dnn" in text


def test_bench_of_every_shipped_model_times_onnx_runtime_and_reports_what_opencv_cannot_run(tmp_path):
    """OpenCV's DNN importer accepts graphs its layers then refuse at the first forward (tmo_net's residuals in
    OpenCV 5): that is a row saying so, beside ONNX Runtime's timing, not a traceback."""
    from export.bench import bench

    models = Path(__file__).resolve().parents[1] / "edgehdr" / "models"
    rows = bench(models, runs=2, warmup=0)
    for path in sorted(models.glob("*.onnx")):
        ours = {r["backend"]: r for r in rows if r["artefact"] == path.name}
        assert ours["ort-cpu"]["median_ms"] > 0, ours
        dnn = ours["opencv-dnn"]
        assert dnn.get("median_ms", 0) > 0 or dnn["error"].startswith("cannot run it: "), dnn
        assert "\n" not in dnn.get("error", "") and "/opencv/modules/" not in dnn.get("error", "")


@pytest.mark.skipif(HAVE_TRT, reason="checks the message on machines without TensorRT")
def test_cli_trt_target_without_tensorrt_says_what_to_install(work, tmp_path, capsys):
    rc = export_main(["build", str(work["nets"]["score"]), "--target", "trt", "-o", str(tmp_path)])
    assert rc == 2
    assert "TensorRT is not installed" in capsys.readouterr().err
    assert export_main(["device-suite", "-o", str(tmp_path / "dev")]) == 2


# ------------------------------------------------------------------------------------ review regressions
def _poisoned(reference: Path, path: Path, value: float) -> Path:
    """``reference`` with its last node's output (the graph output) plus a constant: NaN or inf poison it."""
    model = onnx.load(str(reference))
    out = model.graph.node[-1].output[0]
    model.graph.node[-1].output[0] = f"{out}_clean"
    model.graph.initializer.append(numpy_helper.from_array(np.array([value], np.float32), "poison_value"))
    model.graph.node.append(helper.make_node("Add", [f"{out}_clean", "poison_value"], [out], name="poison"))
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def test_nan_scores_fail_validation(work, tmp_path, capsys):
    """A candidate whose score is NaN on every sample used to pass: max(0.0, nan) is 0.0, so its max abs error read
    0 <= 0.01. The NaN values are counted per output and fail the budget; the error figure is undefined (null)."""
    broken = _poisoned(work["nets"]["score"], tmp_path / "broken.onnx", math.nan)
    rc = export_main(["validate", str(work["nets"]["score"]), str(broken), "--count", "4", "-o",
                      str(tmp_path / "report")])
    assert rc == 1 and "OUTSIDE budget" in capsys.readouterr().out
    report = json.loads((tmp_path / "report.json").read_text())
    score = report["outputs"]["score"]
    assert score["nonfinite_values"] == 4 and score["max_abs_error"] is None
    assert not report["budget"]["passed"]
    assert "score: 4 non-finite values where FP32 is finite" in report["budget"]["rule"]
    fine = export_main(["validate", str(work["nets"]["score"]), str(work["nets"]["score"]), "--count", "4"])
    assert fine == 0 and "within budget" in capsys.readouterr().out  # finite and identical: no such failure


def test_a_nan_score_fails_the_scorer_task_budget(tmp_path):
    """The shipped scorer judged by its task (SROCC with TMQI): a NaN score on the held-out sample FP32 rates highest
    took the top rank in the correlation, which stayed 0.90 like FP32's, so the budget passed. The correlation is
    undefined now and the NaN fails the budget whatever the task."""
    import onnxruntime as ort

    from edgehdr.models import model_path

    ref = model_path("norvdpnet_tmo")
    feeds, _ = model_feeds(ref, "synth", 8, role="holdout")
    session = ort.InferenceSession(str(ref), providers=["CPUExecutionProvider"])
    scores = sorted(float(session.run(None, f)[0].ravel()[0]) for f in feeds)
    threshold = (scores[-1] + scores[-2]) / 2  # sqrt(threshold - score) * 0 is NaN for the top sample only
    model = onnx.load(str(ref))
    graph, out = model.graph, model.graph.output[0].name
    for node in graph.node:
        for k, name in enumerate(node.output):
            if name == out:
                node.output[k] = "clean"
    graph.initializer.extend([numpy_helper.from_array(np.array(threshold, np.float32), "t"),
                              numpy_helper.from_array(np.array(0, np.float32), "zero")])
    graph.node.extend([helper.make_node("Sub", ["t", "clean"], ["d"]), helper.make_node("Sqrt", ["d"], ["s"]),
                       helper.make_node("Mul", ["s", "zero"], ["z"]), helper.make_node("Add", ["clean", "z"], [out])])
    cand = tmp_path / "norvdpnet_nan.onnx"
    onnx.save(model, str(cand))
    report = validate(ref, cand, data="synth", count=8, quiet=True)
    assert report["budget"]["kind"] == "task" and not report["budget"]["passed"]
    assert math.isnan(report["task"]["srocc_converted"]) and math.isfinite(report["task"]["srocc_fp32"])
    assert report["outputs"][out]["nonfinite_values"] == 1


def test_auto_calibration_ranks_a_nan_candidate_last():
    """``_quantize_auto``'s selection error: a NaN score compared as no error (max(0.0, nan) is 0.0), so a method
    producing NaN would have been kept; it is infinitely far now. Finite outputs keep the documented figure."""
    from export.precision import _selection_error

    rng = np.random.default_rng(0)
    ref = [[rng.random((1, 3, 8, 8)), np.array([[0.5]])] for _ in range(3)]
    close = [[r[0] + 0.01, r[1] + 0.002] for r in ref]
    nan = [[r[0], np.array([[math.nan]])] for r in ref]
    want = np.mean([np.mean(0.01 ** 2) / np.var(r[0]) for r in ref]) + 0.002
    assert _selection_error(ref, close) == pytest.approx(want, rel=1e-6)
    assert _selection_error(ref, nan) == math.inf
    assert _selection_error(ref, [[r[0] + np.inf, r[1]] for r in ref]) == math.inf


def _linear_head(path: Path) -> Path:
    """A conv net with a linear head exported as MatMul + Add(bias) (torch.onnx's nn.Linear without Gemm) and a
    (1, 2) score output: ONNX Runtime's pre-processing fuses the pair into a Gemm named 'fc_matmul/MatMulAddFusion'."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "c.w"),
             numpy_helper.from_array(np.zeros(8, np.float32), "c.b"),
             numpy_helper.from_array((rng.standard_normal((8, 2)) * 0.5).astype(np.float32), "fc.w"),
             numpy_helper.from_array(np.array([0.1, -0.2], np.float32), "fc.b")]
    nodes = [helper.make_node("Conv", ["image", "c.w", "c.b"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                              name="conv"),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["p"], name="pool"),
             helper.make_node("Flatten", ["p"], ["f"], axis=1, name="flatten"),
             helper.make_node("MatMul", ["f", "fc.w"], ["mm"], name="fc_matmul"),
             helper.make_node("Add", ["mm", "fc.b"], ["logit"], name="fc_bias"),
             helper.make_node("Sigmoid", ["logit"], ["score"], name="sigmoid")]
    graph = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("image", onnx.TensorProto.FLOAT,
                                                                            [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("score", onnx.TensorProto.FLOAT, [1, 2])],
                              initializer=inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


def test_auto_keep_float_names_the_nodes_of_the_preprocessed_graph(tmp_path):
    """keep_float='auto' named the MatMul and Add on the FP32 model; the pre-processing fused them into a Gemm of
    another name, so nothing was excluded: the head was quantised and the manifest listed nodes the model lacks.
    The head is found on the pre-processed graph now and stays float; a name to keep that the quantised graph lacks
    is an error, not a silent no-op."""
    model = _linear_head(tmp_path / "head.onnx")
    rng = np.random.default_rng(1)
    reader = CalibrationReader([{"image": rng.random((1, 3, 16, 16), dtype=np.float32)} for _ in range(4)])
    out = tmp_path / "head.int8.onnx"
    info = quantize_int8(model, out, reader, method="minmax")
    q = onnx.load(str(out))
    nodes = {n.name: n for n in q.graph.node}
    producer = {o: n for n in q.graph.node for o in n.output}
    assert info["kept_float"] and all(name in nodes for name in info["kept_float"]), info["kept_float"]
    (head,) = [n for n in q.graph.node if n.op_type in ("Gemm", "MatMul")]
    assert head.name in info["kept_float"]
    assert not any(i in producer and producer[i].op_type == "DequantizeLinear" for i in head.input)
    assert producer[nodes["conv"].input[0]].op_type == "DequantizeLinear"  # the rest is still quantised
    assert check_qdq_for_tensorrt(out, float_nodes=info["kept_float"]) == []
    with pytest.raises(ValueError, match=r"\['fc_matmul'\] to keep in float are not in the quantised graph"):
        quantize_int8(model, tmp_path / "named.int8.onnx", reader, method="minmax", keep_float=["fc_matmul"])
    assert not (tmp_path / "named.int8.onnx").exists()


def test_a_graph_output_that_feeds_a_quantised_op_stays_float(tmp_path):
    """A tensor that is a graph output and the input of a Conv came out of the DequantizeLinear, rounded to int8
    steps though no quantised op produces it. The output is the float tensor again; the Conv still reads Q/DQ."""
    import onnxruntime as ort

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal((8, 3, 3, 3)) * 0.3).astype(np.float32), "c1.w"),
             numpy_helper.from_array((rng.standard_normal((3, 8, 3, 3)) * 0.3).astype(np.float32), "c2.w")]
    nodes = [helper.make_node("Conv", ["image", "c1.w"], ["c1"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node("Sigmoid", ["c1"], ["feat"], name="sig"),
             helper.make_node("Conv", ["feat", "c2.w"], ["out"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], name="conv2")]
    f32 = onnx.TensorProto.FLOAT
    graph = helper.make_graph(nodes, "two_outputs", [helper.make_tensor_value_info("image", f32, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("feat", f32, [1, 8, 16, 16]),
                               helper.make_tensor_value_info("out", f32, [1, 3, 16, 16])], initializer=inits)
    model = tmp_path / "two_outputs.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(model))
    feeds = [{"image": rng.random((1, 3, 16, 16), dtype=np.float32)} for _ in range(4)]
    out = tmp_path / "two_outputs.int8.onnx"
    quantize_int8(model, out, CalibrationReader(feeds), method="minmax", keep_float=())
    q = onnx.load(str(out))
    producer = {o: n for n in q.graph.node for o in n.output}
    assert producer["feat"].op_type == "Sigmoid"
    conv2 = next(n for n in q.graph.node if n.name == "conv2")
    assert producer[conv2.input[0]].op_type == "DequantizeLinear"
    assert [o.name for o in q.graph.output] == ["feat", "out"] and check_qdq_for_tensorrt(q) == []
    basic = ort.SessionOptions()
    basic.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    feat = ort.InferenceSession(str(out), basic, providers=["CPUExecutionProvider"]).run(["feat"], feeds[0])[0]
    fp32 = ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(["feat"], feeds[0])[0]
    assert np.unique(feat).size > 256  # off the int8 grid (at most 256 levels)
    assert float(np.abs(feat - fp32).max()) < 0.02  # only the quantised conv1 before it differs


def test_inspect_checks_qdq_with_the_nodes_build_kept_in_float(work, tmp_path, capsys):
    """``inspect`` ran the TensorRT Q/DQ check without the manifest's kept-float nodes and flagged the score head
    that ``build`` had left in float on purpose (and checked: 'passed')."""
    out = tmp_path / "out"
    assert export_main(["build", str(work["nets"]["score"]), "--precision", "int8", "--method", "minmax",
                        "--calib-count", "8", "--holdout-count", "4", "-o", str(out)]) == 0
    capsys.readouterr()
    assert export_main(["inspect", str(out / "score.int8.onnx")]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["manifest"]["calibration"]["kept_float"] == ["fc"]
    assert info["tensorrt_qdq_check"] == "passed"
    # without the manifest the head is reported, as check_qdq_for_tensorrt does for a bare model
    Manifest.path_for(out / "score.int8.onnx").unlink()
    assert export_main(["inspect", str(out / "score.int8.onnx")]) == 0
    assert any("fc" in p for p in json.loads(capsys.readouterr().out)["tensorrt_qdq_check"])


def test_tmo_task_psnr_counts_the_samples_identical_to_fp32():
    """The TMO task's PSNR averaged the per-sample PSNRs of the samples that differ, dropping identical ones (an
    infinite PSNR), so one differing sample of three was judged alone. It is the PSNR of the mean squared error now:
    one sample of N differing gives that sample's PSNR plus 10 log10(N)."""
    from edgehdr.models import model_path
    from export.tasks import TASKS

    ref_model = model_path("tmo_net")
    feeds, _, items = model_feeds(ref_model, "synth", 3, role="holdout", with_items=True)
    with OnnxRuntimeRunner(ref_model) as runner:
        ref = [runner.run(f) for f in feeds]
    cand = [dict(r) for r in ref]
    name = next(iter(ref[0]))
    cand[1] = {name: ref[1][name] + np.float32(0.05)}  # one sample of three differs
    metric = TASKS["tmo_log_luminance"]["metric"]
    task = metric(items, ref, cand)
    assert math.isfinite(task["tmo_output_psnr_db_min"])
    assert task["tmo_output_psnr_db_mean"] == pytest.approx(task["tmo_output_psnr_db_min"] + 10 * math.log10(3))
    assert metric(items, ref, ref)["tmo_output_psnr_db_mean"] == math.inf
    (rule, _), = TASKS["tmo_log_luminance"]["budget"](task)
    assert "mean squared error over the samples" in rule


def test_task_metrics_of_a_candidate_with_a_nan_fail_instead_of_stopping():
    """A merge network whose converted logits hold a NaN stopped the validation (merge_with_weights refuses
    non-finite weights) instead of failing its budget; the dimming task's max error hid a NaN (Python's max)."""
    from edgehdr.bracket import Bracket
    from export.tasks import TASKS

    rng = np.random.default_rng(0)
    bracket = Bracket(rng.integers(0, 256, (3, 32, 48, 3), dtype=np.uint8), [0.25, 1.0, 4.0], bits=8)
    ref = {"logits": rng.normal(size=(1, 3, 8, 12)).astype(np.float32)}
    bad = {"logits": ref["logits"].copy()}
    bad["logits"][0, 1, 2, 3] = np.nan
    merge = TASKS["merge_bracket"]
    figures = merge["metric"]([(bracket, None), (bracket, None)], [ref, ref], [ref, bad])
    assert math.isnan(figures["merge_psnr_mu_vs_fp32_db"])
    assert not any(passed for _, passed in merge["budget"](figures))
    assert merge["metric"]([(bracket, None)], [ref], [ref])["merge_psnr_mu_vs_fp32_db"] > 40  # itself: no change
    light = rng.random((1, 1, 6, 8)).astype(np.float32)
    broken = light.copy()
    broken[0, 0, 0, 0] = np.nan
    zones = TASKS["dimming_zone_stats"]["metric"]([None], [{"light": light}], [{"light": broken}])
    assert math.isnan(zones["zone_light_max_abs"])
