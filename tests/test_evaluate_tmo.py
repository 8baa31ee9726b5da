"""``evaluate_tmo``'s command line: ``--json`` writes the figures it printed, with ``--real-only`` too."""

from __future__ import annotations

import json

import numpy as np

from edgehdr.io import write_radiance
from edgehdr.models.training.evaluate_tmo import main


def test_real_only_writes_the_json_it_was_asked_for(tmp_path, monkeypatch, capsys):
    """``--real-only --json`` once printed the table and exited 0 without writing the file."""
    rng = np.random.default_rng(0)
    sky = np.exp(rng.normal(0.0, 2.0, (48, 64, 1))).astype(np.float32) * np.array([1.0, 0.8, 0.6], np.float32)
    write_radiance(tmp_path / "openexr_Tree.hdr", sky)  # a held-out name, a photograph of our own
    monkeypatch.setenv("EDGEHDR_DATA", str(tmp_path))
    out = tmp_path / "real.json"
    assert main(["--real-only", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = json.loads(out.read_text())["real"]
    assert [r["photo"] for r in rows] == ["openexr_Tree"] and rows[0]["split"] == "held-out"
    for label in ("neural", "reinhard_local", "opencv_mantiuk"):
        assert f"{label:<16} {rows[0][label]['tmqi']:>6.3f}" in printed, label


def test_unseen_photographs_are_scored_as_their_own_split_and_counted_per_split(tmp_path, monkeypatch, capsys):
    """``--unseen`` adds the ten evaluation-only photographs after the shared ones, as split "unseen"; each split's
    line counts the photographs meeting each target, as the rows' own flags say."""
    from edgehdr.models.training.splits import UNSEEN_PHOTOS_DIR

    rng = np.random.default_rng(1)
    sky = np.exp(rng.normal(0.0, 2.0, (48, 64, 1))).astype(np.float32) * np.array([1.0, 0.8, 0.6], np.float32)
    write_radiance(tmp_path / "openexr_Tree.hdr", sky)
    monkeypatch.setenv("EDGEHDR_DATA", str(tmp_path))
    out = tmp_path / "real.json"
    assert main(["--real-only", "--unseen", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = json.loads(out.read_text())["real"]
    unseen = sorted(p.stem for p in UNSEEN_PHOTOS_DIR.glob("*.exr"))
    assert [(r["photo"], r["split"]) for r in rows] == [("openexr_Tree", "held-out")] + [(n, "unseen") for n in unseen]
    for split in ("held-out", "unseen"):
        sel = [r for r in rows if r["split"] == split]
        tmqi_met = sum(r["targets_met"]["tmqi_ge_reinhard_local"] for r in sel)
        every = sum(all(r["targets_met"].values()) for r in sel)
        assert (f"{split}: photographs meeting each target (of {len(sel)}): tmqi_ge_reinhard_local {tmqi_met}, "
                in printed and f"all_three {every}\n" in printed + "\n"), split


def test_synthetic_table_names_the_scenes_that_miss_a_target(tmp_path):
    """``targets_met_scenes["missed_seeds"]``: the seeds of the scenes that miss any target, so that a rule's failure
    can be looked at. The shipped model misses none of the first three; a model whose grid is the same constant
    for every frame (a picture far too dark or bright) misses all three."""
    import onnx
    from onnx import TensorProto, helper

    from edgehdr.models.training.evaluate_tmo import evaluate
    from edgehdr.tonemap.neural import TMO_GRID_SHAPE, TMO_INPUT_SHAPE

    shipped = evaluate(3, teacher_steps=1)["targets_met_scenes"]
    assert shipped["missed_seeds"] == [] and shipped["all_three"] == 3
    cells = int(np.prod(TMO_GRID_SHAPE))
    constant = helper.make_tensor("grid", TensorProto.FLOAT, list(TMO_GRID_SHAPE), [0.97] * cells)
    graph = helper.make_graph(
        [helper.make_node("GlobalAveragePool", ["log_luminance"], ["pooled"]),
         helper.make_node("Mul", ["pooled", "zero"], ["nothing"]),
         helper.make_node("Add", ["nothing", "grid"], ["params"])],
        "constant_grid", [helper.make_tensor_value_info("log_luminance", TensorProto.FLOAT, list(TMO_INPUT_SHAPE))],
        [helper.make_tensor_value_info("params", TensorProto.FLOAT, list(TMO_GRID_SHAPE))],
        [constant, helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, tmp_path / "constant.onnx")
    broken = evaluate(3, model=tmp_path / "constant.onnx", teacher_steps=1)["targets_met_scenes"]
    assert broken["missed_seeds"] == [100_000, 100_001, 100_002] and broken["all_three"] == 0
