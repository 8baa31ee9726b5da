"""A network that answers NaN or infinity (a broken model, an FP16 engine that overflowed) costs at most that
answer: the tone mapper's smoothed grid, the merge's radiance and the quality average stay finite, and each
stage counts the frames where it happened.

The models are real ONNX graphs run by ONNX Runtime: a constant answer (with the non-finite values placed in it)
plus zero times the mean of the input, so that the graph reads its input as a network does."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgehdr.hdr.crf import standard_response  # noqa: E402
from edgehdr.hdr.neural_merge import (  # noqa: E402
    MERGE_INPUT_SHAPE,
    MERGE_OUTPUT_SHAPE,
    NeuralMerger,
    frame_weights,
    merge_with_weights,
)
from edgehdr.infer import OnnxRuntimeRunner  # noqa: E402
from edgehdr.pipeline.graph import FrameContext  # noqa: E402
from edgehdr.pipeline.stages import ScoreStage  # noqa: E402
from edgehdr.quality.norvdpnet import NoRVDPNetScorer  # noqa: E402
from edgehdr.tonemap.neural import (  # noqa: E402
    PARAM_RANGES,
    TMO_INPUT_SHAPE,
    NeuralToneMapper,
    apply_parameter_grid,
    default_parameter_grid,
    encode_tmo_input,
)


def _answering(path, input_name: str, input_shape, output_name: str, answer: np.ndarray) -> OnnxRuntimeRunner:
    """A loaded runner of a graph whose output is ``answer`` + 0 * mean(input)."""
    nodes = [helper.make_node("ReduceMean", [input_name], ["mean"], keepdims=1),
             helper.make_node("Mul", ["mean", "zero"], ["nothing"]),
             helper.make_node("Add", ["answer", "nothing"], [output_name])]
    inits = [numpy_helper.from_array(np.asarray(answer, np.float32), "answer"),
             numpy_helper.from_array(np.zeros((1,) * len(input_shape), np.float32), "zero")]
    graph = helper.make_graph(nodes, "answer", [helper.make_tensor_value_info(input_name, TensorProto.FLOAT,
                                                                              input_shape)],
                              [helper.make_tensor_value_info(output_name, TensorProto.FLOAT, answer.shape)], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), path)
    return OnnxRuntimeRunner(path).load()


def _radiance(h: int = 96, w: int = 160, seed: int = 3) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.exp(rng.normal(0.0, 2.0, (h // 8, w // 8, 1))).repeat(8, 0).repeat(8, 1)
    return np.ascontiguousarray((base * rng.uniform(0.5, 1.5, (h, w, 3))).astype(np.float32))


def _tmo_grid() -> np.ndarray:
    grid = default_parameter_grid(alpha=0.9, s=1.0, gamma=0.7)
    grid[0] += np.linspace(-0.2, 0.2, grid.shape[2], dtype=np.float32)[None, :]
    return grid


def test_tone_mapper_keeps_the_previous_grid_where_the_network_answers_non_finite(tmp_path, caplog):
    good = _tmo_grid()
    bad = good.copy()
    bad[0, 2, 3], bad[1, 5, 7], bad[2, 0, 0] = np.nan, np.inf, -np.inf
    bad[1, 1, 1] = 40.0  # finite but outside the parameter's range: held to it
    ok_runner = _answering(tmp_path / "ok.onnx", "log_luminance", TMO_INPUT_SHAPE, "params", good[None])
    nan_runner = _answering(tmp_path / "nan.onnx", "log_luminance", TMO_INPUT_SHAPE, "params", bad[None])
    rad = _radiance()
    _, key, blocks = encode_tmo_input(rad)
    lo = np.array([r[0] for r in PARAM_RANGES], np.float32)[:, None, None]
    hi = np.array([r[1] for r in PARAM_RANGES], np.float32)[:, None, None]

    mapper = NeuralToneMapper(ok_runner, time_constant_s=0.4)
    first = mapper(rad)
    np.testing.assert_array_equal(first, apply_parameter_grid(rad, good, key_log2=key, blocks=blocks))
    mapper.runner = nan_runner
    with caplog.at_level(logging.WARNING, logger="edgehdr.tonemap"):
        second = mapper(rad, dt_s=1 / 30)
    k = np.float32(1.0 - math.exp(-(1 / 30) / 0.4))
    answer = np.clip(np.where(np.isfinite(bad), bad, good), lo, hi)
    expected = good + k * (answer - good)
    np.testing.assert_array_equal(second, apply_parameter_grid(rad, expected, key_log2=key, blocks=blocks))
    assert mapper.non_finite_frames == 1
    assert any("3 non-finite parameters of 336" in r.getMessage() for r in caplog.records)
    mapper.runner = ok_runner
    mapper(rad, dt_s=1 / 30)
    assert np.all(np.isfinite(mapper._params)) and mapper.non_finite_frames == 1
    # A frame of radiance near float32's top, with a non-finite frame interval: its luminance counts as 1e30 (the
    # operators' clamp), so its key is finite (log2 1e30) and the state moves one frame interval towards it; the
    # median overflowed before the clamp, and such a frame was kept out of the state and counted.
    key_before = mapper._key
    mapper(np.full_like(rad, 3e38), dt_s=float("nan"))
    k = 1.0 - math.exp(-(1 / 30) / 0.4)
    assert mapper._key == pytest.approx(key_before + k * (math.log2(1e30) - key_before), rel=1e-4)
    assert np.all(np.isfinite(mapper._params)) and mapper.non_finite_key_frames == 0

    # Before any grid was smoothed, the default grid stands in.
    # A finite answer out of its parameter's range alone is held to the range too, and is not a non-finite frame.
    wide = good.copy()
    wide[2, 4, 4] = -3.0
    wide_runner = _answering(tmp_path / "wide.onnx", "log_luminance", TMO_INPUT_SHAPE, "params", wide[None])
    held = NeuralToneMapper(wide_runner, time_constant_s=0.4)
    np.testing.assert_array_equal(held(rad), apply_parameter_grid(rad, np.clip(wide, lo, hi), key_log2=key,
                                                                  blocks=blocks))
    assert held.non_finite_frames == 0

    fresh = NeuralToneMapper(nan_runner, time_constant_s=0.4)
    start = np.clip(np.where(np.isfinite(bad), bad, default_parameter_grid()), lo, hi)
    np.testing.assert_array_equal(fresh(rad), apply_parameter_grid(rad, start, key_log2=key, blocks=blocks))
    assert fresh.non_finite_frames == 1


def _bracket(h: int = 136, w: int = 240):
    response = standard_response("srgb", bits=8)
    rad = _radiance(h, w, seed=5)
    exposures = np.array([0.25, 1.0, 4.0])
    rad = rad / np.float32(np.percentile(rad, 90))
    # codes whose inverse response is nearest below each exposure: clipped above 1, black below the first code
    lut = response.inverse_lut
    frames = np.stack([np.stack([np.clip(np.searchsorted(lut[c], rad[..., c] * t) - 1, 0, 255) for c in range(3)],
                                -1).astype(np.uint8) for t in exposures])
    assert (frames == 255).any() and (frames == 0).any() and ((frames > 20) & (frames < 230)).mean() > 0.3
    return frames, exposures, response


def test_merge_takes_equal_weights_in_cells_where_the_network_answers_non_finite(tmp_path, caplog):
    rng = np.random.default_rng(7)
    # A model taking the bracket at 480 x 272 (the merger reads its input size): weight cells 1:1 with these frames.
    logits = rng.normal(0.0, 2.0, (1, 3, 136, 240)).astype(np.float32)
    bad = logits.copy()
    bad[0, 1, 10:20, 30:40] = np.nan  # 100 cells, one frame each
    bad[0, 2, 50, 60] = np.inf
    bad[0, 0, 70, 80] = -np.inf
    runner = _answering(tmp_path / "merge.onnx", "bracket", (1, 12, 272, 480), "weights", bad)
    frames, exposures, response = _bracket()
    merger = NeuralMerger(runner, response)
    with caplog.at_level(logging.WARNING, logger="edgehdr.hdr"):
        merged = merger(frames, exposures, bits=8)
    cells = ~np.isfinite(bad[0]).all(axis=0)
    repaired = np.where(cells[None], np.float32(0.0), bad[0])
    expected = merge_with_weights(frames, frame_weights(repaired, exposures), exposures, response, bits=8)
    assert np.all(np.isfinite(merged))
    np.testing.assert_array_equal(merged, expected)
    assert merger.non_finite_frames == 1
    assert any("non-finite weights in 102 of 32640 cells" in r.getMessage() for r in caplog.records)
    # The cells that were finite keep the network's weights: the same merge as the finite logits there.
    untouched = merge_with_weights(frames, frame_weights(logits[0], exposures), exposures, response, bits=8)
    keep = np.ones(merged.shape[:2], bool)
    keep[8:22, 28:42] = keep[48:53, 58:63] = keep[68:73, 78:83] = False  # repaired cells, 2 pixels around (1:1)
    np.testing.assert_array_equal(merged[keep], untouched[keep])


def test_a_non_finite_quality_score_is_an_error_and_the_score_stage_counts_it(tmp_path, caplog):
    runner = _answering(tmp_path / "score.onnx", "image", (1, 1, 64, 64), "score",
                        np.full((1, 1, 1, 1), np.nan, np.float32))
    scorer = NoRVDPNetScorer(runner)
    sdr = np.full((48, 64, 3), 128, np.uint8)
    with pytest.raises(ValueError, match="non-finite score"):
        scorer.score(sdr)
    image = tmp_path / "frame.png"
    import cv2

    cv2.imwrite(str(image), sdr)
    with pytest.raises(ValueError, match="frame.png: the quality model returned a non-finite score"):
        scorer.rank([image])
    stage = ScoreStage(runner, every_n=1)
    ctx = FrameContext(frame_id=0, bracket=None, captured_ns=0)
    ctx.sdr = sdr
    with caplog.at_level(logging.WARNING, logger="edgehdr.pipeline"):
        out = stage(ctx)
    assert out is ctx and out.quality_score is None
    snap = stage.snapshot()
    assert snap["non_finite_frames"] == 1 and snap["frames_scored"] == 0 and snap["mean_recent"] is None
    assert any("frame 0 not scored" in r.getMessage() for r in caplog.records)
    # Anything else wrong still fails the frame (the pipeline counts it): here an image that is not 8-bit.
    ctx.sdr = np.zeros((48, 64, 3), np.float32)
    with pytest.raises(ValueError, match="uint8"):
        stage(ctx)
    assert stage.snapshot()["non_finite_frames"] == 1


def test_the_daemon_counts_frames_a_network_answered_non_finite(tmp_path, run_pipeline):
    from prometheus_client import parser

    from edgehdr.pipeline.daemon import status_line
    from edgehdr.pipeline.preview import prometheus_text

    grid = _tmo_grid()
    grid[1, 3, 4] = np.nan
    tmo = tmp_path / "tmo_nan.onnx"
    _answering(tmo, "log_luminance", TMO_INPUT_SHAPE, "params", grid[None])
    logits = np.zeros(MERGE_OUTPUT_SHAPE, np.float32)
    logits[0, 2, 40:50, 100:120] = np.inf
    merge = tmp_path / "merge_inf.onnx"
    _answering(merge, "bracket", MERGE_INPUT_SHAPE, "weights", logits)
    score = tmp_path / "score_nan.onnx"
    _answering(score, "image", (1, 1, 64, 64), "score", np.full((1, 1, 1, 1), np.nan, np.float32))
    seen, final, live = run_pipeline(
        {"source": {"width": 320, "height": 180, "fps": 30}, "merge": {"method": "neural", "model": str(merge)},
         "tonemap": {"operator": "neural", "model": str(tmo)}, "score": {"every_n": 1, "model": str(score)},
         "dimming": {"enabled": False}, "bridge": {"enabled": False}, "preview": {"enabled": False},
         "planner": {"enabled": False}, "infer": {"backend": "cpu"}},
        lambda ctx: (ctx.radiance.copy(), ctx.sdr.copy()), 4, inspect=lambda rt: rt.stats())
    assert len(seen) >= 4 and final["frames_failed"] == 0
    assert all(np.isfinite(r).all() and s.max() > 0 for r, s in seen)
    counted = final["network_non_finite_frames"]
    assert counted["tonemap"] >= len(seen) and counted["merge"] >= len(seen)
    assert live["network_non_finite_frames"]["tonemap"] >= 4 and live["quality"]["non_finite_frames"] >= 1
    unscored = final["quality"]["non_finite_frames"]
    assert unscored >= len(seen) - 1 and final["quality"]["frames_scored"] == 0
    line = status_line(final)
    assert f"non-finite network outputs: merge {counted['merge']}, tonemap {counted['tonemap']}, score {unscored}" \
        in line, line
    families = {f.name: f for f in parser.text_string_to_metric_families(prometheus_text(final))}
    assert families["edgehdr_network_non_finite_frames"].type == "counter"
    assert {s.labels["stage"]: s.value for s in families["edgehdr_network_non_finite_frames"].samples} == {
        "merge": counted["merge"], "tonemap": counted["tonemap"], "score": unscored}
    # The frames' medians were finite: counted as none, and not in the status line.
    assert final["non_finite_key_frames"] == {"tonemap": 0} and "median" not in line
    assert [s.value for s in families["edgehdr_non_finite_key_frames"].samples] == [0]
    keyed = {**final, "non_finite_key_frames": {"tonemap": 3}}
    assert "non-finite frame medians: tonemap 3" in status_line(keyed)
    families = {f.name: f for f in parser.text_string_to_metric_families(prometheus_text(keyed))}
    assert {s.labels["stage"]: s.value for s in families["edgehdr_non_finite_key_frames"].samples} == {"tonemap": 3}
