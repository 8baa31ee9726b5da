"""Export tooling: ONNX checks, FP16, INT8 Q/DQ that TensorRT accepts, calibration data, validation, the CLI."""

from __future__ import annotations

import importlib.util
import json
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
