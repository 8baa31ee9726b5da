"""Small real ONNX networks built with onnx.helper, to exercise the export tooling before the model zoo.

``image_net``: an image-to-image CNN (Conv/Relu, a residual Add, a Resize pair,
sigmoid output) shaped like the tone-mapping and merge networks; ``score_net``: a
strided CNN with global pooling and a Gemm head, shaped like NoR-VDPNet. Weights
are seeded He-initialised: deterministic, and activations stay in range.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

if TYPE_CHECKING:
    from edgehdr.infer.base import PathLike

__all__ = ["image_net", "score_net"]


def _conv_weights(rng: np.random.Generator, out_ch: int, in_ch: int, k: int = 3) -> tuple[np.ndarray, np.ndarray]:
    w = (rng.standard_normal((out_ch, in_ch, k, k)) * np.sqrt(2.0 / (in_ch * k * k))).astype(np.float32)
    b = (rng.standard_normal(out_ch) * 0.05).astype(np.float32)
    return w, b


def _save(graph: onnx.GraphProto, path: PathLike, opset: int) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="edgehdr-testnets")
    model.ir_version = 8
    onnx.checker.check_model(model)
    path = Path(path)
    from edgehdr.io.atomic import write_bytes_atomic

    write_bytes_atomic(path, model.SerializeToString())
    return path


def image_net(path: PathLike, *, height: int = 64, width: int = 64, channels: int = 8, seed: int = 0,
              opset: int = 17) -> Path:
    """(1, 3, H, W) 'image' in [0, 1] -> (1, 3, H, W) 'output' in (0, 1)."""
    rng = np.random.default_rng(seed)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []

    def conv(name: str, x: str, out_ch: int, in_ch: int, stride: int = 1) -> str:
        w, b = _conv_weights(rng, out_ch, in_ch)
        inits.extend([numpy_helper.from_array(w, f"{name}.weight"), numpy_helper.from_array(b, f"{name}.bias")])
        nodes.append(helper.make_node("Conv", [x, f"{name}.weight", f"{name}.bias"], [name], kernel_shape=[3, 3],
                                      pads=[1, 1, 1, 1], strides=[stride, stride], name=name))
        return name

    def relu(x: str) -> str:
        nodes.append(helper.make_node("Relu", [x], [x + ".relu"], name=x + ".relu"))
        return x + ".relu"

    c1 = relu(conv("conv1", "image", channels, 3))
    c2 = relu(conv("conv2", c1, channels, channels))
    nodes.append(helper.make_node("Add", [c2, c1], ["residual"], name="residual_add"))
    inits.append(numpy_helper.from_array(np.array([1, 1, 0.5, 0.5], np.float32), "down_scales"))
    inits.append(numpy_helper.from_array(np.array([1, 1, 2.0, 2.0], np.float32), "up_scales"))
    # kernel_shape and coordinate_transformation_mode are ONNX's defaults written out: OpenCV 4.11's importer (the
    # JetPack 6 pin, the benches' baseline) refuses a Conv without the one and a linear Resize without the other.
    nodes.append(helper.make_node("Resize", ["residual", "", "down_scales"], ["down"], mode="linear",
                                  coordinate_transformation_mode="half_pixel", name="down"))
    nodes.append(helper.make_node("Resize", ["down", "", "up_scales"], ["up"], mode="linear",
                                  coordinate_transformation_mode="half_pixel", name="up"))
    nodes.append(helper.make_node("Add", ["up", "residual"], ["context"], name="context_add"))
    c3 = conv("conv3", "context", 3, channels)
    nodes.append(helper.make_node("Sigmoid", [c3], ["output"], name="sigmoid"))
    graph = helper.make_graph(nodes, "image_net",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, height, width])],
                              [helper.make_tensor_value_info("output", TensorProto.FLOAT, [1, 3, height, width])],
                              initializer=inits)
    return _save(graph, path, opset)


def score_net(path: PathLike, *, height: int = 64, width: int = 64, seed: int = 1, opset: int = 17) -> Path:
    """(1, 3, H, W) 'image' -> (1, 1) 'score' in (0, 1)."""
    rng = np.random.default_rng(seed)
    inits: list[onnx.TensorProto] = []
    nodes: list[onnx.NodeProto] = []
    x, in_ch = "image", 3
    for i, out_ch in enumerate((8, 16, 32)):
        w, b = _conv_weights(rng, out_ch, in_ch)
        inits += [numpy_helper.from_array(w, f"conv{i}.weight"), numpy_helper.from_array(b, f"conv{i}.bias")]
        nodes.append(helper.make_node("Conv", [x, f"conv{i}.weight", f"conv{i}.bias"], [f"conv{i}"],
                                      kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[2, 2], name=f"conv{i}"))
        nodes.append(helper.make_node("Relu", [f"conv{i}"], [f"relu{i}"], name=f"relu{i}"))
        x, in_ch = f"relu{i}", out_ch
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["pooled"], name="pool"))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"], axis=1, name="flatten"))
    # head gain: the logit spans a few units over natural images, so scores spread over (0, 1) like a metric's
    wg = (rng.standard_normal((1, in_ch)) * 12.0 / np.sqrt(in_ch)).astype(np.float32)
    inits += [numpy_helper.from_array(wg, "fc.weight"), numpy_helper.from_array(np.zeros(1, np.float32), "fc.bias")]
    nodes.append(helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logit"], transB=1, name="fc"))
    nodes.append(helper.make_node("Sigmoid", ["logit"], ["score"], name="sigmoid"))
    graph = helper.make_graph(nodes, "score_net",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, height, width])],
                              [helper.make_tensor_value_info("score", TensorProto.FLOAT, [1, 1])],
                              initializer=inits)
    return _save(graph, path, opset)
