"""The runner contract: every backend is a ``Runner`` and describes itself with one ``RunnerDescription``.

The ONNX Runtime side runs for real on the shipped models and is checked against what
an independent ONNX Runtime session reports. The TensorRT side cannot run without a
GPU; its conversions (``DataType`` names -> numpy names, dimensions -> shape, the
assembly of the record) are plain functions, tested here with the values TensorRT 10
reports, and the end-to-end check lives in ``test_infer.py`` (skipped without TensorRT).
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from edgehdr.infer import Manifest, OnnxRuntimeRunner, Runner, RunnerDescription, TensorDescription
from edgehdr.infer.ort import ort_device, ort_dtype_name, ort_shape
from edgehdr.infer.trt import TRT_DTYPE_NAMES, TensorRTRunner, TrtTensor, trt_description, trt_dtype_name, trt_shape
from edgehdr.io import dumps_json
from edgehdr.models import model_path

SHIPPED = ["tmo_net", "merge_net", "dimming_net", "norvdpnet_tmo"]


def test_both_runner_kinds_are_runners(tmp_path):
    ort_runner = OnnxRuntimeRunner(model_path("tmo_net"))
    assert isinstance(ort_runner, Runner)
    with ort_runner as loaded:
        assert loaded is ort_runner and isinstance(loaded, Runner)
        assert isinstance(loaded.describe(), RunnerDescription)
    # constructing a TensorRT runner touches neither TensorRT nor the GPU, so the structural check runs anywhere
    assert isinstance(TensorRTRunner(tmp_path / "model.engine"), Runner)
    assert {OnnxRuntimeRunner.name, TensorRTRunner.name} == {"onnxruntime", "tensorrt"}


def test_something_without_describe_is_not_a_runner():
    class Incomplete:
        name = "half"

        def load(self):
            return self

        def run(self, feed):
            return feed

    assert not isinstance(Incomplete(), Runner)


@pytest.mark.parametrize("model", SHIPPED)
def test_onnxruntime_description_matches_an_independent_session(model):
    path = model_path(model)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    with OnnxRuntimeRunner(path) as runner:
        desc = runner.describe()
    assert desc.backend == "onnxruntime" and desc.model == str(path)
    assert desc.providers == ("CPUExecutionProvider",) and desc.device == "cpu"
    for described, reported in ((desc.inputs, session.get_inputs()), (desc.outputs, session.get_outputs())):
        assert [t.name for t in described] == [a.name for a in reported]
        assert [t.shape for t in described] == [tuple(a.shape) for a in reported]  # shipped models are static
        assert all(a.type == "tensor(float)" for a in reported)
        assert all(t.dtype == "float32" and t.is_static for t in described)
    manifest = json.loads(Manifest.path_for(path).read_text(encoding="utf-8"))
    assert desc.precision == manifest["precision"] == "fp32"
    assert [t.name for t in desc.inputs] == [spec["name"] for spec in manifest["inputs"]]


def test_onnxruntime_description_of_other_dtypes_and_dynamic_dims(tmp_path):
    """A real model with a float16 input of batch 'N' and an unnamed dimension, and an int64 output."""
    x = helper.make_tensor_value_info("pixels", TensorProto.FLOAT16, ["N", 3, None, 8])
    y = helper.make_tensor_value_info("twice", TensorProto.FLOAT16, ["N", 3, None, 8])
    dims = helper.make_tensor_value_info("dims", TensorProto.INT64, [4])
    graph = helper.make_graph([helper.make_node("Add", ["pixels", "pixels"], ["twice"]),
                               helper.make_node("Shape", ["pixels"], ["dims"])], "g", [x], [y, dims])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    model.ir_version = 8
    path = tmp_path / "mixed.onnx"
    onnx.save(model, str(path))
    with OnnxRuntimeRunner(path) as runner:
        desc = runner.describe()
        out = runner.run({"pixels": np.ones((2, 3, 5, 8), np.float16)})
    (pixels,) = desc.inputs
    assert pixels == TensorDescription("pixels", ("N", 3, "?", 8), "float16") and not pixels.is_static
    assert [(t.name, t.dtype) for t in desc.outputs] == [("twice", "float16"), ("dims", "int64")]
    for t in desc.outputs:  # the names are the dtypes ONNX Runtime really returns
        assert out[t.name].dtype == np.dtype(t.dtype)
    assert desc.precision == "unknown"  # no manifest beside the model, and an ONNX graph states none


def test_description_round_trips_through_strict_json():
    with OnnxRuntimeRunner(model_path("merge_net")) as runner:
        desc = runner.describe()
    text = dumps_json(desc.as_dict())
    data = json.loads(text)
    assert data["inputs"][0]["name"] == desc.inputs[0].name and data["inputs"][0]["dtype"] == "float32"
    assert data["inputs"][0]["shape"] == list(desc.inputs[0].shape)
    assert RunnerDescription.from_dict(data) == desc
    dynamic = RunnerDescription("tensorrt", "m.engine", (), "int8", "cuda:0 (Orin)",
                                (TensorDescription("x", ("N", 3, "?", 4), "float16"),), ())
    assert RunnerDescription.from_dict(json.loads(dumps_json(dynamic.as_dict()))) == dynamic


def test_description_is_frozen_and_checks_its_precision():
    desc = RunnerDescription("onnxruntime", "m.onnx", ["CPUExecutionProvider"], "fp32", "cpu")
    assert desc.providers == ("CPUExecutionProvider",) and desc.inputs == ()
    with pytest.raises(AttributeError):
        desc.precision = "fp16"  # type: ignore[misc]
    with pytest.raises(ValueError, match="precision must be one of"):
        RunnerDescription("onnxruntime", "m.onnx", (), "float32", "cpu")  # type: ignore[arg-type]


def test_describe_before_load_says_what_to_do():
    with pytest.raises(RuntimeError, match="not loaded.*with block"):
        OnnxRuntimeRunner(model_path("tmo_net")).describe()


def test_ort_conversions():
    assert ort_dtype_name("tensor(float)") == "float32"
    assert ort_dtype_name("tensor(double)") == "float64"
    for element in ("float16", "int8", "uint8", "int16", "uint16", "int32", "uint32", "int64", "uint64", "bool"):
        assert ort_dtype_name(f"tensor({element})") == np.dtype(element).name == element
    assert ort_dtype_name("tensor(string)") == "object"
    assert ort_dtype_name("seq(tensor(float))") == "seq(tensor(float))"
    assert ort_shape([1, "N", None, -1, 0]) == (1, "N", "?", "?", 0)
    assert ort_shape(None) == ()
    assert ort_device(["CPUExecutionProvider"]) == "cpu"
    assert ort_device(["CUDAExecutionProvider", "CPUExecutionProvider"],
                      {"CUDAExecutionProvider": {"device_id": "1"}}) == "cuda:1"
    assert ort_device(["TensorrtExecutionProvider", "CUDAExecutionProvider"]) == "cuda:0"


# TensorRT 10 DataType members with their itemsize (tensorrt.DataType.X.itemsize) where numpy has the type
TRT_ITEMSIZE = {"FLOAT": 4, "HALF": 2, "INT8": 1, "INT32": 4, "INT64": 8, "BOOL": 1, "UINT8": 1}


def test_tensorrt_dtype_names_are_numpy_names_of_the_same_size():
    for member, itemsize in TRT_ITEMSIZE.items():
        assert np.dtype(trt_dtype_name(member)).itemsize == itemsize
    assert trt_dtype_name("FLOAT") == "float32" and trt_dtype_name("HALF") == "float16"
    assert trt_dtype_name("DataType.INT64") == "int64"  # str() of the pybind11 enum
    assert {"BF16", "FP8", "INT4", "FP4"} <= set(TRT_DTYPE_NAMES)
    assert trt_dtype_name("BF16") == "bfloat16" and trt_dtype_name("FP8") == "float8_e4m3fn"
    assert trt_dtype_name("FP6") == "fp6"  # a type newer than the table is reported by its name


def test_tensorrt_shapes():
    assert trt_shape([1, 3, 64, 64]) == (1, 3, 64, 64)
    assert trt_shape((-1, 3, -1, 8)) == ("?", 3, "?", 8)
    assert trt_shape([]) == ()


def test_tensorrt_description_is_the_same_record_as_onnxruntime():
    """What TensorRT reports for an engine built from a shipped model assembles into the ORT record's tensors."""
    with OnnxRuntimeRunner(model_path("tmo_net")) as runner:
        ort_desc = runner.describe()
    table = [TrtTensor(t.name, "INPUT", tuple(int(d) for d in t.shape), "FLOAT") for t in ort_desc.inputs]
    table += [TrtTensor(t.name, "OUTPUT", tuple(int(d) for d in t.shape), "FLOAT") for t in ort_desc.outputs]
    desc = trt_description("tmo_net.fp16.engine", table[::-1], precision="fp16", device="cuda:0 (Orin)")
    assert (desc.inputs, desc.outputs) == (ort_desc.inputs, ort_desc.outputs)
    assert (desc.backend, desc.model, desc.providers, desc.precision, desc.device) == (
        "tensorrt", "tmo_net.fp16.engine", (), "fp16", "cuda:0 (Orin)")


def test_tensorrt_description_keeps_engine_order_and_refuses_odd_modes():
    table = [TrtTensor("b", "INPUT", (1, 4), "HALF"), TrtTensor("out", "OUTPUT", (1,), "INT32"),
             TrtTensor("a", "INPUT", (-1, 4), "FLOAT")]
    desc = trt_description("x.engine", table, precision=None, device="cuda:0")
    assert [t.name for t in desc.inputs] == ["b", "a"] and desc.inputs[1].shape == ("?", 4)
    assert desc.outputs == (TensorDescription("out", (1,), "int32"),) and desc.precision == "unknown"
    with pytest.raises(ValueError, match=r"x\.engine: tensor I/O modes \['NONE'\]"):
        trt_description("x.engine", [TrtTensor("w", "NONE", (1,), "FLOAT")], precision="fp32", device="cuda:0")
