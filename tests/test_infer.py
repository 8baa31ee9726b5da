"""Inference runners: real ONNX Runtime sessions against OpenCV DNN, backend selection, manifests, TensorRT."""

from __future__ import annotations

import importlib.util
import logging

import cv2
import numpy as np
import pytest

from edgehdr.infer import EngineMismatch, Manifest, OnnxRuntimeRunner, best_providers, open_runner, sha256_file
from edgehdr.infer.trt import check_engine_manifest
from export.testnets import image_net, score_net

HAVE_TRT = importlib.util.find_spec("tensorrt") is not None and importlib.util.find_spec("pycuda") is not None


@pytest.fixture(scope="module")
def nets(tmp_path_factory):
    d = tmp_path_factory.mktemp("nets")
    return {"image": image_net(d / "image.onnx", height=48, width=64), "score": score_net(d / "score.onnx")}


@pytest.mark.parametrize("which", ["image", "score"])
def test_onnxruntime_runner_matches_opencv_dnn(nets, which):
    """Two independent inference engines agree on the same graph (ORT vs OpenCV's DNN module)."""
    path = nets[which]
    with OnnxRuntimeRunner(path, intra_op_threads=1) as runner:
        desc = runner.describe()
        (spec,) = desc.inputs
        x = np.random.default_rng(3).random(spec.shape, dtype=np.float32)
        out = runner.run({"image": x})
    net = cv2.dnn.readNetFromONNX(str(path))
    net.setInput(x)
    reference = net.forward()
    (_name, value), = out.items()
    assert value.shape == reference.shape
    np.testing.assert_allclose(value, reference, atol=2e-5)
    assert desc.providers == ("CPUExecutionProvider",) and desc.device == "cpu" and spec.dtype == "float32"
    assert 0.0 < float(value.min()) and float(value.max()) < 1.0  # sigmoid outputs


def test_onnxruntime_runner_rejects_bad_input(nets, tmp_path):
    with OnnxRuntimeRunner(nets["score"]) as runner, pytest.raises(ValueError, match="do not match"):
        runner.run({"picture": np.zeros((1, 3, 64, 64), np.float32)})
    with pytest.raises(FileNotFoundError, match="no such ONNX model"):
        OnnxRuntimeRunner(tmp_path / "missing.onnx").load()
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a protobuf")
    with pytest.raises(ValueError, match="broken.onnx"):
        OnnxRuntimeRunner(bad).load()


def test_best_providers_order():
    assert best_providers(["CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"]) == [
        "TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert best_providers(["CPUExecutionProvider"]) == ["CPUExecutionProvider"]
    assert best_providers(["AzureExecutionProvider"]) == ["CPUExecutionProvider"]


def _engine_manifest(**changes):
    base = {"model_name": "image", "artefact": "image.fp16.engine", "format": "tensorrt", "precision": "fp16",
            "tensorrt_version": "10.3.0", "device_name": "Orin", "compute_capability": "8.7"}
    base.update(changes)
    return Manifest(**base)


def test_engine_manifest_check_says_how_to_rebuild():
    check_engine_manifest(_engine_manifest(), trt_version="10.3.0", device_name="Orin", compute_capability="8.7")
    with pytest.raises(EngineMismatch, match=r"built with TensorRT 10\.3\.0, running 10\.7\.0.*edgehdr-export build"):
        check_engine_manifest(_engine_manifest(), trt_version="10.7.0", device_name="Orin", compute_capability="8.7")
    with pytest.raises(EngineMismatch, match=r"compute capability 8\.7 \(Orin\), this GPU is 9\.0.*--precision fp16"):
        check_engine_manifest(_engine_manifest(), trt_version="10.3.0", device_name="H100", compute_capability="9.0")
    with pytest.raises(EngineMismatch, match="not 'tensorrt'"):
        check_engine_manifest(_engine_manifest(format="onnx"), trt_version="10.3.0", device_name="Orin",
                              compute_capability="8.7")


def test_manifest_round_trip_and_errors(tmp_path, nets):
    m = _engine_manifest(source_onnx_sha256=sha256_file(nets["image"]), build_flags={"dla_core": None})
    path = m.save(tmp_path / "image.fp16.engine.manifest.json")
    assert Manifest.path_for(tmp_path / "image.fp16.engine") == path
    assert Manifest.load(path) == m
    path.write_text('{"model_name": "x", "colour": 1}')
    with pytest.raises(ValueError, match="unknown manifest fields.*colour"):
        Manifest.load(path)
    with pytest.raises(FileNotFoundError, match="no manifest"):
        Manifest.load(tmp_path / "none.json")


def test_open_runner_falls_back_past_an_unusable_engine(nets, tmp_path, caplog):
    """An engine that cannot be used here (no TensorRT, or built elsewhere) is skipped with its reason logged."""
    engine = tmp_path / "image.fp16.engine"
    engine.write_bytes(b"\0" * 64)
    _engine_manifest(compute_capability="0.0", source_onnx_sha256=sha256_file(nets["image"])).save(
        Manifest.path_for(engine))
    with caplog.at_level(logging.INFO, logger="edgehdr.infer"):
        runner = open_runner(nets["image"], engine_dir=tmp_path)
    try:
        assert isinstance(runner, OnnxRuntimeRunner)
        assert "not using engine" in caplog.text and "image.fp16.engine" in caplog.text
        x = np.random.default_rng(0).random((1, 3, 48, 64), dtype=np.float32)
        with OnnxRuntimeRunner(nets["image"]) as cpu:
            np.testing.assert_array_equal(runner.run({"image": x})["output"], cpu.run({"image": x})["output"])
    finally:
        runner.close()
    cpu_runner = open_runner(nets["image"], prefer="cpu")
    try:
        assert cpu_runner.describe().providers == ("CPUExecutionProvider",)
    finally:
        cpu_runner.close()


def test_open_runner_considers_only_this_models_engines_built_from_this_file(nets, tmp_path, caplog):
    """``image`` picked up ``image_large.fp16.engine`` (a glob of ``image*.engine``) and engines built from another
    version of image.onnx. Only ``image.*.engine`` is considered now, and an engine whose manifest names another
    model, another source sha256 or a failed accuracy budget is skipped with a warning naming it and why. The one
    engine that fits goes on to TensorRT (absent here, so ONNX Runtime runs the model, as the log says)."""
    sha = sha256_file(nets["image"])
    passed = {"budget": {"passed": True, "rule": "output: PSNR 50.00 dB >= 40.0"}}
    engines = {
        "image_large.fp16.engine": _engine_manifest(model_name="image_large", source_onnx_sha256=sha,
                                                    accuracy_vs_fp32=passed),
        "image.fp16.engine": _engine_manifest(source_onnx_sha256="0" * 64, accuracy_vs_fp32=passed),
        "image.int8.engine": _engine_manifest(model_name="score", source_onnx_sha256=sha, accuracy_vs_fp32=passed),
        "image.fp32.engine": _engine_manifest(source_onnx_sha256=sha, accuracy_vs_fp32={
            "budget": {"passed": False, "rule": "output: PSNR 12.00 dB >= 40.0"}}),
        "image.dla.engine": None,  # no manifest beside it
        "image.good.engine": _engine_manifest(source_onnx_sha256=sha, accuracy_vs_fp32=passed),
    }
    for name, manifest in engines.items():
        (tmp_path / name).write_bytes(b"\0" * 64)
        if manifest is not None:
            manifest.save(Manifest.path_for(tmp_path / name))
    with caplog.at_level(logging.INFO, logger="edgehdr.infer"):
        runner = open_runner(nets["image"], engine_dir=tmp_path)
    runner.close()
    assert isinstance(runner, OnnxRuntimeRunner)
    warned = {r.getMessage().split(": ", 1)[0].rsplit("/", 1)[-1]: r.getMessage() for r in caplog.records
              if r.levelno == logging.WARNING}
    assert "image_large" not in caplog.text  # another model's engine is not even looked at
    assert set(warned) == {"image.fp16.engine", "image.int8.engine", "image.fp32.engine", "image.dla.engine"}
    assert "built from another ONNX file" in warned["image.fp16.engine"] and sha[:12] in warned["image.fp16.engine"]
    assert "for model 'score', not 'image'" in warned["image.int8.engine"]
    assert "failed the accuracy budget" in warned["image.fp32.engine"] and "12.00 dB" in warned["image.fp32.engine"]
    assert "no manifest" in warned["image.dla.engine"]
    tried = [r.getMessage() for r in caplog.records
             if r.levelno == logging.INFO and "image.good.engine" in r.getMessage()]
    assert tried and "TensorRT is not installed" in tried[0]


def test_a_manifest_with_a_key_given_twice_is_refused(tmp_path):
    path = tmp_path / "image.fp16.engine.manifest.json"
    path.write_text('{"model_name": "image", "model_name": "score"}')
    with pytest.raises(ValueError, match=r"engine\.manifest\.json: not a JSON manifest \(key 'model_name' is given "
                                         r"twice in one object\)"):
        Manifest.load(path)


@pytest.mark.parametrize("text", ["null", "42", '"model_name"', "[1, 2]", "true"])
def test_a_manifest_that_is_json_but_not_an_object_is_refused_naming_it(tmp_path, text):
    path = tmp_path / "image.fp16.engine.manifest.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"image\.fp16\.engine\.manifest\.json: not a manifest: .*JSON object"):
        Manifest.load(path)


def _dynamic_net(path):
    """'x' float32 ('batch', 3, 4) (a named dynamic dimension), 'n' int64 (2,) -> 'y' = x + 1."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["y"]), helper.make_node("Identity", ["n"], ["m"])], "dyn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, 4]),
         helper.make_tensor_value_info("n", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 3, 4]),
         helper.make_tensor_value_info("m", TensorProto.INT64, [2])],
        [numpy_helper.from_array(np.ones((1, 3, 4), np.float32), "one")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


@pytest.mark.parametrize("x, n, needles", [
    (np.zeros((1, 3, 4)), None, ["input 'x'", "given dtype float64", "dtype float32"]),
    (np.zeros((1, 3, 5), np.float32), None, ["input 'x'", "shape [1, 3, 5]", "shape ['batch', 3, 4]"]),
    (np.zeros((3, 4), np.float32), None, ["input 'x'", "shape [3, 4]", "shape ['batch', 3, 4]"]),
    ([[[0.0] * 4] * 3], None, ["input 'x'", "given a list", "a numpy array of dtype float32"]),
    (None, np.zeros(2, np.int32), ["input 'n'", "given dtype int32", "dtype int64, shape [2]"]),
    (None, np.zeros(3, np.int64), ["input 'n'", "shape [3]", "shape [2]"]),
])
def test_onnxruntime_runner_refuses_a_wrong_dtype_or_shape_naming_the_input(tmp_path, x, n, needles):
    """ONNX Runtime's own InvalidArgument came through for a wrong dtype, shape or rank (the TensorRT runner raises
    ValueError): a ValueError naming the input, what the model expects and what was given; nothing is cast. A named
    dynamic dimension takes any size."""
    path = _dynamic_net(tmp_path / "dyn.onnx")
    good_x, good_n = np.zeros((1, 3, 4), np.float32), np.arange(2, dtype=np.int64)
    with OnnxRuntimeRunner(path) as runner:
        for batch in (1, 5):  # the dynamic dimension: any size
            out = runner.run({"x": np.full((batch, 3, 4), 2.0, np.float32), "n": good_n})
            assert out["y"].shape == (batch, 3, 4) and np.all(out["y"] == 3.0) and list(out["m"]) == [0, 1]
        feed = {"x": good_x if x is None else x, "n": good_n if n is None else n}
        with pytest.raises(ValueError) as err:
            runner.run(feed)
    for needle in ("dyn.onnx", *needles):
        assert needle in str(err.value), (needle, str(err.value))


@pytest.mark.skipif(not HAVE_TRT, reason="TensorRT and pycuda are not installed (a Jetson or a CUDA machine with "
                                         "pip install 'edgehdr[trt]' runs this)")
def test_tensorrt_engine_matches_onnxruntime(nets, tmp_path):
    from edgehdr.infer.trt import TensorRTRunner
    from export.trt_build import build_engine

    engine = build_engine(nets["image"], tmp_path, precision="fp32")
    manifest = Manifest.load(Manifest.path_for(engine))
    assert manifest.format == "tensorrt" and manifest.source_onnx_sha256 == sha256_file(nets["image"])
    x = np.random.default_rng(1).random((1, 3, 48, 64), dtype=np.float32)
    with TensorRTRunner(engine) as trt_runner, OnnxRuntimeRunner(nets["image"]) as ort_runner:
        trt_desc, ort_desc = trt_runner.describe(), ort_runner.describe()
        assert (trt_desc.inputs, trt_desc.outputs) == (ort_desc.inputs, ort_desc.outputs)
        assert trt_desc.backend == "tensorrt" and trt_desc.precision == "fp32" and trt_desc.device.startswith("cuda:")
        first = trt_runner.run({"image": x})["output"]
        again = trt_runner.run({"image": x})["output"]  # buffers reused across frames
        np.testing.assert_allclose(first, ort_runner.run({"image": x})["output"], atol=1e-3)
        np.testing.assert_array_equal(first, again)


def test_basic_graph_optimisation_runs_qdq_nodes_as_written(tmp_path):
    """A Q/DQ convolution under ``graph_optimization="basic"`` equals its arithmetic written out in NumPy
    (quantise, dequantise, then a float convolution), the semantics the export's validation judges INT8 models
    by; an unknown level is refused."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    x = rng.normal(0.0, 3.0, (1, 4, 6, 6)).astype(np.float32)
    w = rng.normal(0.0, 0.5, (8, 4, 3, 3)).astype(np.float32)
    sx, sw = np.float32(0.05), np.float32(0.01)  # x saturates at 6.35: the clip is part of the arithmetic
    inits = [numpy_helper.from_array(np.round(w / sw).clip(-127, 127).astype(np.int8), "wq"),
             numpy_helper.from_array(np.array(sx), "sx"), numpy_helper.from_array(np.array(sw), "sw"),
             numpy_helper.from_array(np.array(0, np.int8), "zx"), numpy_helper.from_array(np.array(0, np.int8), "zw")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "sx", "zx"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "sx", "zx"], ["xd"]),
             helper.make_node("DequantizeLinear", ["wq", "sw", "zw"], ["wd"]),
             helper.make_node("Conv", ["xd", "wd"], ["y"], pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "qdq_conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 8, 6, 6))], inits)
    path = tmp_path / "qdq_conv.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)

    xd = np.clip(np.round(x / sx), -128, 127) * sx
    wd = np.clip(np.round(w / sw), -127, 127) * sw
    padded = np.pad(xd, ((0, 0), (0, 0), (1, 1), (1, 1)))
    want = np.zeros((1, 8, 6, 6), np.float64)
    for dy in range(3):
        for dx in range(3):
            want[0] += np.einsum("oc,chw->ohw", wd[:, :, dy, dx], padded[0, :, dy:dy + 6, dx:dx + 6])
    with OnnxRuntimeRunner(path, graph_optimization="basic") as runner:
        got = runner.run({"x": x})["y"]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="graph_optimization"):
        OnnxRuntimeRunner(path, graph_optimization="fast")


def test_qdq_model_on_the_cpu_provider_is_named_in_the_log(tmp_path, nets, caplog):
    """An INT8 Q/DQ model loaded on ONNX Runtime's CPU provider at the runtime's optimisation level gets a warning
    naming the file (it runs slower than FP32 there; Q/DQ is for TensorRT), found from the graph's DequantizeLinear
    nodes whatever a manifest beside it says (a model copied over another keeps the other's manifest). An FP32
    model, and the "basic" level the export's validation uses, get none."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    from edgehdr.infer.ort import is_qdq_model

    inits = [numpy_helper.from_array(np.array(np.float32(0.05)), "s"),
             numpy_helper.from_array(np.array(0, np.int8), "z")]
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["y"])]
    graph = helper.make_graph(nodes, "qdq", [helper.make_tensor_value_info("x", TensorProto.FLOAT, (1, 4))],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, (1, 4))], inits)
    qdq = tmp_path / "qdq.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), qdq)
    fp32 = nets["image"]
    assert is_qdq_model(qdq) and not is_qdq_model(fp32)

    def warned(path, **kw) -> bool:
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="edgehdr.infer"), OnnxRuntimeRunner(path, **kw):
            pass
        return any(path.name in r.getMessage() and "TensorRT" in r.getMessage() for r in caplog.records)

    assert warned(qdq)
    assert not warned(qdq, graph_optimization="basic")
    assert not warned(fp32)
    Manifest(model_name="qdq", artefact=qdq.name, precision="fp32").save(Manifest.path_for(qdq))
    assert is_qdq_model(qdq) and warned(qdq)
    copied = tmp_path / "image.onnx"
    copied.write_bytes(fp32.read_bytes())
    Manifest(model_name="image", artefact=copied.name, precision="int8").save(Manifest.path_for(copied))
    assert not is_qdq_model(copied) and not warned(copied)
