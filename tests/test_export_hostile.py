"""edgehdr-export on hostile input: every bad file, argument or output path ends in one clear line and exit status 2.

Non-ONNX files (text, PNG, empty, truncated), an empty graph, custom-domain ops, dynamic input dimensions
(``--shape``), a build that fails half-way (staged, all-or-nothing outputs), undefined metrics in the JSON it
writes, and the path and number arguments of every sub-command. A Python traceback is a failure everywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from export_cli import cli
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from edgehdr.infer import Manifest
from edgehdr.io.staging import staged_outputs
from export.checks import check_model, custom_ops, load_model
from export.cli import main as export_main
from export.shapes import fix_input_shapes, parse_shape, written_dims
from export.strict_json import null_undefined, save_manifest
from export.testnets import image_net
from export.trt_check import check_qdq_for_tensorrt

REPO = Path(__file__).resolve().parents[1]


def _strict_json(text: str):
    """``json.loads`` that fails on the bare NaN / Infinity Python's json writes."""
    def refuse(name):
        raise AssertionError(f"non-JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("hostile")
    good = image_net(d / "image.onnx", height=32, width=32, channels=4)
    data = good.read_bytes()
    (d / "notes.onnx").write_text("this is not a model\n")
    (d / "picture.onnx").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(64)))  # PNG signature and junk
    (d / "empty.onnx").write_bytes(b"")
    (d / "truncated.onnx").write_bytes(data[:len(data) // 2])
    onnx.save(helper.make_model(helper.make_graph([], "empty", [], []), opset_imports=[helper.make_opsetid("", 17)]),
              str(d / "empty_graph.onnx"))
    dyn = onnx.load(str(good))
    for v in (dyn.graph.input[0], dyn.graph.output[0]):
        v.type.tensor_type.shape.dim[0].dim_param = "N"
    onnx.save(dyn, str(d / "dynamic.onnx"))
    custom = onnx.load(str(good))
    node = next(n for n in custom.graph.node if n.name == "conv1.relu")
    node.op_type, node.domain = "MyRelu", "com.example"
    custom.opset_import.append(helper.make_opsetid("com.example", 1))
    onnx.save(custom, str(d / "custom.onnx"))
    (d / "emptydir").mkdir()
    return d



def assert_clear_error(rc, err, *needles, one_line=True):
    """Exit 2, no traceback, the error in one ``edgehdr-export ...: error: ...`` line naming ``needles``."""
    assert "Traceback" not in err, err
    assert rc == 2, err
    lines = err.strip().splitlines()
    if one_line:
        assert len(lines) == 1, err
    else:  # a build that failed after some steps: its progress lines, then the error
        assert all(line.startswith("[") for line in lines[:-1]), err
    assert lines[-1].startswith("edgehdr-export") and ": error: " in lines[-1], err
    for needle in needles:
        assert str(needle) in lines[-1], (needle, err)
    return lines[-1]


def _nothing_written(folder: Path):
    return not folder.exists() or not any(folder.iterdir())


# ------------------------------------------------------------------------------------------- not ONNX at all
BAD_FILES = ["notes.onnx", "picture.onnx", "empty.onnx", "truncated.onnx"]


@pytest.mark.parametrize("bad", BAD_FILES)
@pytest.mark.parametrize("command", ["inspect", "validate-candidate", "validate-reference", "build", "bench"])
def test_non_onnx_file_is_refused_naming_it(files, tmp_path, capsys, bad, command):
    path, good = files / bad, files / "image.onnx"
    argv = {"inspect": ["inspect", path], "validate-candidate": ["validate", good, path, "--count", "1"],
            "validate-reference": ["validate", path, good, "--count", "1"],
            "build": ["build", path, "-o", tmp_path / "out"], "bench": ["bench", path, "--runs", "1"]}[command]
    rc, _, err = cli(capsys, *argv)
    line = assert_clear_error(rc, err, path)
    assert "ONNX model" in line
    assert _nothing_written(tmp_path / "out")


def test_real_cli_process_reports_a_truncated_model_in_one_line(files):
    """The installed entry point's module run as a process: exit 2, one line, no traceback."""
    for argv in (["inspect", files / "truncated.onnx"], ["bench", files / "image.onnx", "--shape", "image:1x3xx"]):
        proc = subprocess.run([sys.executable, "-m", "export.cli", *map(str, argv)], cwd=REPO, check=False,
                              capture_output=True, text=True, timeout=300)
        assert_clear_error(proc.returncode, proc.stderr, argv[1] if argv[0] == "inspect" else "--shape")


def test_inspect_of_an_empty_model_says_what_is_missing(files, capsys):
    path = files / "empty_graph.onnx"
    rc, out, err = cli(capsys, "inspect", path)
    assert_clear_error(rc, err, path, "no inputs, no outputs and no nodes")
    assert out == ""
    with pytest.raises(ValueError, match="no inputs, no outputs and no nodes"):
        load_model(path)


def test_inspect_of_a_file_named_engine_that_nothing_can_read_fails(tmp_path, capsys):
    """A text file named .engine: TensorRT (where installed) cannot deserialise it, and without TensorRT nothing
    beside it says what it is; either way exit 2 naming it, not a report that exits 0. With a manifest beside it
    and no TensorRT, the manifest is what inspect shows."""
    path = tmp_path / "model.engine"
    path.write_text("not an engine\n")
    rc, out, err = cli(capsys, "inspect", path)
    assert_clear_error(rc, err, path)
    assert out == ""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        manifest = Manifest(model_name="image", artefact=path.name, format="tensorrt", precision="fp16")
        manifest.save(Manifest.path_for(path))
        rc, out, _ = cli(capsys, "inspect", path)
        assert rc == 0
        shown = _strict_json(out)
        assert shown["manifest"]["precision"] == "fp16" and "not installed" in shown["engine_io"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_damaged_model_bytes_never_raise_a_traceback(files, tmp_path_factory, data):
    """Truncations, flipped bytes and insertions of a valid model: inspect prints it or refuses it (exit 2)."""
    original = (files / "image.onnx").read_bytes()
    damaged = bytearray(original[:data.draw(st.integers(1, len(original)), label="keep")])
    for _ in range(data.draw(st.integers(0, 6), label="flips")):
        damaged[data.draw(st.integers(0, len(damaged) - 1))] = data.draw(st.integers(0, 255))
    path = tmp_path_factory.mktemp("damaged") / "model.onnx"
    path.write_bytes(bytes(damaged))
    try:
        rc = export_main(["inspect", str(path)])
    except SystemExit as exc:  # pragma: no cover - argparse is not involved here
        rc = exc.code
    assert rc in (0, 2)


# ---------------------------------------------------------------------------------------------- custom ops
def test_custom_domain_op_is_reported_by_the_checks_and_inspect(files, capsys):
    path = files / "custom.onnx"
    assert check_model(path)["custom_ops"] == ["conv1.relu (com.example:MyRelu)"]
    assert check_model(files / "image.onnx")["custom_ops"] == []
    rc, out, _ = cli(capsys, "inspect", path)
    assert rc == 0 and json.loads(out)["custom_ops"] == ["conv1.relu (com.example:MyRelu)"]


def test_model_local_function_is_not_a_custom_op():
    relu = helper.make_function("com.example", "MyRelu", ["X"], ["Y"], [helper.make_node("Relu", ["X"], ["Y"])],
                                opset_imports=[helper.make_opsetid("", 17)])
    graph = helper.make_graph([helper.make_node("MyRelu", ["x"], ["y"], domain="com.example", name="act")], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 8, 8])])
    model = helper.make_model(graph, functions=[relu], opset_imports=[helper.make_opsetid("", 17),
                                                                       helper.make_opsetid("com.example", 1)])
    assert custom_ops(model) == []


@pytest.mark.parametrize("precision", ["int8", "fp16"])
def test_build_of_a_custom_op_model_fails_naming_node_and_domain(files, tmp_path, capsys, precision):
    out = tmp_path / "out"
    rc, _, err = cli(capsys, "build", files / "custom.onnx", "--precision", precision, "--calib-count", "2",
                     "--holdout-count", "2", "-o", out)
    assert_clear_error(rc, err, "custom.onnx", "conv1.relu", "com.example", one_line=False)
    assert _nothing_written(out)


def test_validate_of_a_custom_op_model_names_node_and_domain(files, capsys):
    rc, _, err = cli(capsys, "validate", files / "image.onnx", files / "custom.onnx", "--count", "1")
    assert_clear_error(rc, err, "custom.onnx", "conv1.relu", "com.example")


# ---------------------------------------------------------------------------------------- dynamic dimensions
@pytest.mark.parametrize("argv", [["build", "{m}", "--precision", "int8", "-o", "{out}"],
                                  ["build", "{m}", "--precision", "fp16", "-o", "{out}"],
                                  ["bench", "{m}", "--runs", "1"],
                                  ["validate", "{m}", "{m}", "--count", "1"]])
def test_dynamic_batch_without_shape_names_input_shape_and_the_fix(files, tmp_path, capsys, argv):
    argv = [a.format(m=files / "dynamic.onnx", out=tmp_path / "out") for a in argv]
    rc, _, err = cli(capsys, *argv)
    line = assert_clear_error(rc, err, "dynamic.onnx", "'image'", "['N', 3, 32, 32]", "--shape image:1x3x32x32",
                              one_line=False)
    assert "invalid literal" not in line and "[0, 3" not in line
    assert _nothing_written(tmp_path / "out")


def test_shape_override_fixes_the_model_and_is_recorded(files, tmp_path, capsys):
    out = tmp_path / "out"
    rc, stdout, err = cli(capsys, "build", files / "dynamic.onnx", "--precision", "int8", "--method", "minmax",
                          "--calib-count", "4", "--holdout-count", "3", "--shape", "image:1x3x32x32", "-o", out)
    assert rc == 0, err
    assert f"onnx: {out / 'dynamic.int8.onnx'}" in stdout
    assert sorted(p.name for p in out.iterdir()) == [
        "dynamic.fp32.onnx", "dynamic.fp32.onnx.manifest.json", "dynamic.int8.onnx", "dynamic.int8.onnx.manifest.json",
        "dynamic.int8.validation.json", "dynamic.int8.validation.md"]  # no staging folder left
    for name in ("dynamic.fp32.onnx", "dynamic.int8.onnx"):
        manifest = Manifest.load(Manifest.path_for(out / name))
        assert manifest.inputs == [{"name": "image", "shape": [1, 3, 32, 32], "dtype": "float32"}]
        assert manifest.outputs[0]["shape"] == [1, 3, 32, 32]
        assert manifest.build_flags["input_shapes"] == {"image": [1, 3, 32, 32]}
    manifest = Manifest.load(Manifest.path_for(out / "dynamic.int8.onnx"))
    assert manifest.accuracy_vs_fp32["files"] == [str(out / "dynamic.int8.validation.json"),
                                                  str(out / "dynamic.int8.validation.md")]
    assert check_qdq_for_tensorrt(out / "dynamic.int8.onnx", float_nodes=manifest.calibration["kept_float"]) == []
    rc, stdout, err = cli(capsys, "bench", files / "dynamic.onnx", "--runs", "2", "--warmup", "0",
                          "--shape", "image:1x3x32x32", "--json", tmp_path / "bench.json")
    assert rc == 0 and "ort-cpu" in stdout, err
    assert _strict_json((tmp_path / "bench.json").read_text())[0]["artefact"] == "dynamic.onnx"


def test_fix_input_shapes_carries_the_value_to_the_outputs(files):
    model = onnx.load(str(files / "dynamic.onnx"))
    fixed = fix_input_shapes(model, {"image": (2, 3, 32, 32)}, label="dynamic.onnx")
    assert written_dims(fixed.graph.input[0]) == [2, 3, 32, 32]
    assert written_dims(fixed.graph.output[0]) == [2, 3, 32, 32]
    assert written_dims(model.graph.input[0]) == ["N", 3, 32, 32]  # the original is left alone
    assert parse_shape("input:0:1x3x8x8") == ("input:0", (1, 3, 8, 8))  # a TF-style name keeps its colon


@pytest.mark.parametrize("value", ["image", "image:", ":1x3x32x32", "image:1x3xx32", "image:1,3,32,32",
                                   "image:0x3x32x32", "image:1x3x-32x32", "image:1x3x32xq"])
def test_malformed_shape_is_refused_with_the_expected_format(files, capsys, value):
    rc, _, err = cli(capsys, "bench", files / "dynamic.onnx", "--runs", "1", "--shape", value)
    assert_clear_error(rc, err, "--shape", "NAME:DIMS", repr(value))


@pytest.mark.parametrize("value, needles", [("image:1x3x32", ["has 3 dims", "['N', 3, 32, 32]"]),
                                            ("image:1x4x32x32", ["changes dim 1", "fixes at 3"]),
                                            ("picture:1x3x32x32", ["'picture'", "['image']"])])
def test_shape_that_does_not_fit_the_model_is_refused(files, tmp_path, capsys, value, needles):
    for argv in (["bench", files / "dynamic.onnx", "--runs", "1"],
                 ["build", files / "dynamic.onnx", "--precision", "fp16", "-o", tmp_path / "out"],
                 ["validate", files / "dynamic.onnx", files / "dynamic.onnx", "--count", "1"]):
        rc, _, err = cli(capsys, *argv, "--shape", value)
        assert_clear_error(rc, err, "--shape", *needles, one_line=False)
    assert _nothing_written(tmp_path / "out")


# ----------------------------------------------------------------------------------- all-or-nothing outputs
@pytest.mark.parametrize("precision, data_option", [("int8", "--calib"), ("fp16", "--holdout")])
def test_failed_build_leaves_earlier_outputs_untouched_and_nothing_new(files, tmp_path, capsys, precision,
                                                                       data_option):
    """Calibration (INT8) or validation (FP16) data that turns out empty fails after the FP32 model and its
    manifest, or the FP16 model, were written: none of it may appear."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "image.fp32.onnx").write_bytes(b"earlier build")
    (out / "image.fp32.onnx.manifest.json").write_text("{}")
    rc, stdout, err = cli(capsys, "build", files / "image.onnx", "--precision", precision, data_option,
                          files / "emptydir", "--calib-count", "2", "--holdout-count", "2", "-o", out)
    assert_clear_error(rc, err, "emptydir", ".exr", one_line=False)
    assert stdout == ""
    assert sorted(p.name for p in out.iterdir()) == ["image.fp32.onnx", "image.fp32.onnx.manifest.json"]
    assert (out / "image.fp32.onnx").read_bytes() == b"earlier build"
    assert (out / "image.fp32.onnx.manifest.json").read_text() == "{}"
    fresh = tmp_path / "fresh"
    rc, _, err = cli(capsys, "build", files / "image.onnx", "--precision", precision, data_option,
                     files / "emptydir", "--calib-count", "2", "--holdout-count", "2", "-o", fresh)
    assert rc == 2 and not fresh.exists()  # a folder the failed build created goes too


@pytest.mark.parametrize("failure", [RuntimeError("step failed"), KeyboardInterrupt()])
def test_staged_outputs_publish_on_success_and_vanish_on_failure(tmp_path, failure):
    with staged_outputs(tmp_path / "ok", "model") as stage:
        (stage / "model.fp32.onnx").write_bytes(b"a")
        (stage / "model.fp32.onnx.manifest.json").write_text("{}")
        (stage / ".model.intermediate.onnx").write_bytes(b"b")
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == ["model.fp32.onnx", "model.fp32.onnx.manifest.json"]
    with pytest.raises(type(failure)), staged_outputs(tmp_path / "ok", "model") as stage:
        (stage / "model.fp32.onnx").write_bytes(b"new")
        raise failure
    assert (tmp_path / "ok" / "model.fp32.onnx").read_bytes() == b"a"
    assert sorted(p.name for p in (tmp_path / "ok").iterdir()) == ["model.fp32.onnx", "model.fp32.onnx.manifest.json"]


def test_validate_report_is_both_files_or_neither(files, tmp_path, capsys):
    """``validate -o BASE`` wrote BASE.json, then failed on BASE.md (a folder there), leaving the .json alone (and an
    older pair mismatched). Both paths are checked before any work, and a pair written earlier stays as it was."""
    (tmp_path / "report.md").mkdir()
    (tmp_path / "older.json").write_text("earlier json")
    (tmp_path / "older.md").mkdir()
    for base in ("report", "older"):
        rc, _, err = cli(capsys, "validate", files / "image.onnx", files / "image.onnx", "--count", "2",
                         "-o", tmp_path / base)
        assert_clear_error(rc, err, "-o", tmp_path / f"{base}.md", "is a folder")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["older.json", "older.md", "report.md"]
    assert (tmp_path / "older.json").read_text() == "earlier json"
    rc, _, err = cli(capsys, "validate", files / "image.onnx", files / "image.onnx", "--count", "2",
                     "-o", tmp_path / "new.json")
    assert rc == 0, err
    assert {"new.json", "new.md"} <= {p.name for p in tmp_path.iterdir()}
    assert not any(p.name.startswith(".") for p in tmp_path.iterdir())  # no staging folder left behind


def _renamed_output(source: Path, path: Path) -> Path:
    model = onnx.load(str(source))
    model.graph.node[-1].output[0] = "renamed"
    model.graph.output[0].name = "renamed"
    onnx.save(model, str(path))
    return path


def _nhwc_output(source: Path, path: Path) -> Path:
    """The same network with its (1, C, H, W) output transposed to (1, H, W, C): as many elements, another layout."""
    model = onnx.load(str(source))
    model.graph.node[-1].output[0] = "nchw"
    model.graph.node.append(helper.make_node("Transpose", ["nchw"], ["output"], perm=[0, 2, 3, 1]))
    dims = model.graph.output[0].type.tensor_type.shape.dim
    channels = dims[1].dim_value
    dims[1].dim_value, dims[3].dim_value = dims[2].dim_value, channels
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


@pytest.mark.parametrize("make, needles", [(_renamed_output, ["outputs ['output'] missing", "['renamed']"]),
                                           (_nhwc_output, ["output 'output' has shape [1, 32, 32, 3]",
                                                           "[1, 3, 32, 32] in the reference"])])
def test_validate_of_a_candidate_with_other_outputs_is_refused(files, tmp_path, capsys, make, needles):
    """A renamed output ended in a KeyError traceback (exit 1, the 'outside budget' status); an NHWC output of the
    same size was compared element by element. Both are a bad input: exit 2 naming both models."""
    cand = make(files / "image.onnx", tmp_path / "candidate.onnx")
    rc, stdout, err = cli(capsys, "validate", files / "image.onnx", cand, "--count", "2", "-o", tmp_path / "report")
    assert_clear_error(rc, err, cand, files / "image.onnx", *needles)
    assert stdout == "" and not (tmp_path / "report.json").exists()


def test_the_same_data_for_calibration_and_holdout_is_refused(files, tmp_path, capsys):
    """``--calib D --holdout D`` validated on the calibration samples themselves (the two fingerprints equal), though
    the sets are meant never to overlap. Refused before any work, however the folder is spelt."""
    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        np.savez(data / f"s{i}.npz", image=rng.random((1, 3, 32, 32), dtype=np.float32))
    out = tmp_path / "out"
    for holdout in (data, tmp_path / "data" / ".." / "data"):
        rc, stdout, err = cli(capsys, "build", files / "image.onnx", "--precision", "int8", "--method", "minmax",
                              "--calib", data, "--holdout", holdout, "-o", out)
        assert_clear_error(rc, err, "--calib", "--holdout", "the same data")
        assert stdout == "" and _nothing_written(out)


def test_an_explicit_holdout_image_folder_is_used_whole(files, tmp_path, capsys):
    """An HDR image folder given as --holdout was split like a calibration source (every fifth file held out), so
    three files were 'too few to hold one out'. As user tensors always were, it is held-out data as a whole."""
    from edgehdr.io import write_radiance

    held = tmp_path / "held"
    held.mkdir()
    for i in range(3):
        write_radiance(held / f"s{i}.pfm", np.random.default_rng(i).random((32, 32, 3), dtype=np.float32) + 0.1)
    out = tmp_path / "out"
    rc, _, err = cli(capsys, "build", files / "image.onnx", "--precision", "fp16", "--holdout", held,
                     "--holdout-count", "8", "-o", out)
    assert rc == 0, err
    data = json.loads((out / "image.fp16.validation.json").read_text())["data"]
    assert data["samples"] == 3 and data["split"] == "all items" and data["source"] == str(held)


# ------------------------------------------------------------------------------------------------ strict JSON
def test_validate_report_of_identical_models_is_strict_json(files, tmp_path, capsys):
    """Identical outputs have an infinite PSNR: written as null, not as the bare Infinity json.dumps writes."""
    rc, _, err = cli(capsys, "validate", files / "image.onnx", files / "image.onnx", "--count", "2",
                     "-o", tmp_path / "report")
    assert rc == 0, err
    report = _strict_json((tmp_path / "report.json").read_text())
    assert report["outputs"]["output"]["psnr_db"] is None and report["budget"]["passed"]


def test_manifests_and_inspect_output_are_strict_json(files, tmp_path, capsys):
    artefact = tmp_path / "image.fp16.onnx"
    artefact.write_bytes((files / "image.onnx").read_bytes())
    manifest = Manifest(model_name="image", artefact=artefact.name,
                        accuracy_vs_fp32={"outputs": {"output": {"psnr_db": float("inf")}},
                                          "task": {"srocc": float("nan"), "n": np.int64(3), "ok": np.bool_(True)}})
    save_manifest(manifest, Manifest.path_for(artefact))
    saved = _strict_json(Manifest.path_for(artefact).read_text())
    assert saved["accuracy_vs_fp32"] == {"outputs": {"output": {"psnr_db": None}},
                                         "task": {"srocc": None, "n": 3, "ok": True}}
    rc, out, _ = cli(capsys, "inspect", artefact)
    assert rc == 0 and _strict_json(out)["manifest"]["accuracy_vs_fp32"]["task"]["srocc"] is None
    assert null_undefined({"a": [np.float32(1.5), -np.inf], b"k": b"\xff"}) == {"a": [1.5, None], "k": "\ufffd"}


# ------------------------------------------------------------------------------- paths and numbers, every command
def test_missing_files_are_named(files, tmp_path, capsys):
    missing, engine = tmp_path / "missing.onnx", tmp_path / "missing.engine"
    for argv, named in ((["inspect", missing], missing), (["build", missing, "-o", tmp_path / "out"], missing),
                        (["validate", missing, files / "image.onnx"], missing),
                        (["validate", files / "image.onnx", missing], missing),
                        (["validate", files / "image.onnx", engine], engine), (["bench", missing], missing),
                        (["device-suite", "--models", missing, "-o", tmp_path / "dev"], missing)):
        rc, _, err = cli(capsys, *argv)
        assert_clear_error(rc, err, named, "no such")
    assert _nothing_written(tmp_path / "out") and not (tmp_path / "dev").exists()


def test_a_folder_where_a_file_belongs_is_named(files, tmp_path, capsys):
    folder = files / "emptydir"
    for argv, needle in ((["inspect", folder], "is a folder"), (["build", folder, "-o", tmp_path / "o"], "is a folder"),
                         (["validate", files / "image.onnx", folder], "is a folder"),
                         (["validate", files / "image.onnx", files / "image.onnx", "-o", folder], "-o"),
                         (["bench", files / "image.onnx", "--json", folder], "--json"),
                         (["build", files / "image.onnx", "--target", "trt", "--timing-cache", folder,
                           "-o", tmp_path / "o"], "--timing-cache"),
                         (["bench", folder], "no .onnx or .engine files")):
        rc, _, err = cli(capsys, *argv)
        assert_clear_error(rc, err, folder, needle)
    rc, _, err = cli(capsys, "build", files / "image.onnx", "-o", files / "image.onnx")
    assert_clear_error(rc, err, "-o", files / "image.onnx", "not a folder")


def test_output_folder_that_does_not_exist_is_named(files, tmp_path, capsys):
    gone = tmp_path / "no" / "such"
    for argv, option in ((["build", files / "image.onnx", "-o", gone], "-o"),
                         (["validate", files / "image.onnx", files / "image.onnx", "-o", gone / "report"], "-o"),
                         (["bench", files / "image.onnx", "--json", gone / "bench.json"], "--json"),
                         (["device-suite", "-o", gone], "-o")):
        rc, _, err = cli(capsys, *argv)
        assert_clear_error(rc, err, option, "does not exist")
    assert not (tmp_path / "no").exists()


def test_unwritable_output_folder_is_named(files, tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    if os.access(locked, os.W_OK):
        locked.chmod(0o755)
        pytest.skip("this user writes into read-only folders (root with CAP_DAC_OVERRIDE)")
    try:
        for argv, option in ((["build", files / "image.onnx", "-o", locked], "-o"),
                             (["build", files / "image.onnx", "-o", locked / "sub"], "-o"),
                             (["validate", files / "image.onnx", files / "image.onnx", "-o", locked / "r"], "-o"),
                             (["bench", files / "image.onnx", "--json", locked / "b.json"], "--json")):
            rc, _, err = cli(capsys, *argv)
            assert_clear_error(rc, err, option, locked, "not writable")
        assert not any(locked.iterdir())
    finally:
        locked.chmod(0o755)


@pytest.mark.parametrize("argv", [
    ["build", "{m}", "-o", "{out}", "--calib-count", "many"], ["build", "{m}", "-o", "{out}", "--calib-count", "0"],
    ["build", "{m}", "-o", "{out}", "--holdout-count", "1.5"], ["build", "{m}", "-o", "{out}", "--workspace-mb", "x"],
    ["build", "{m}", "-o", "{out}", "--dla", "-1"], ["validate", "{m}", "{m}", "--count", "ten"],
    ["validate", "{m}", "{m}", "--psnr-budget", "nan"], ["validate", "{m}", "{m}", "--abs-budget", "lots"],
    ["bench", "{m}", "--runs", "0"], ["bench", "{m}", "--warmup", "-1"], ["bench", "{m}", "--threads", "two"],
    ["device-suite", "-o", "{out}", "--runs", "fast"], ["device-suite", "-o", "{out}", "--dla", "x"]])
def test_bad_numeric_option_is_named(files, tmp_path, capsys, argv):
    argv = [a.format(m=files / "image.onnx", out=tmp_path / "out") for a in argv]
    option = next(a for a in reversed(argv) if a.startswith("--"))
    rc, _, err = cli(capsys, *argv)
    assert_clear_error(rc, err, f"argument {option}", "expected")
    assert not (tmp_path / "out").exists()


def test_other_bad_arguments_are_named(files, tmp_path, capsys):
    for argv, needles in ((["build", files / "image.onnx", "-o", tmp_path, "--calib", tmp_path / "nope"],
                           ["--calib", "neither 'synth' nor a folder"]),
                          (["build", files / "image.onnx", "-o", tmp_path, "--name", "../escape"], ["--name"]),
                          (["validate", files / "image.onnx", files / "image.onnx", "--data", "webcam"], ["--data"]),
                          (["device-suite", "-o", tmp_path / "dev", "--precisions", "fp8"], ["--precisions", "fp8"])):
        rc, _, err = cli(capsys, *argv)
        assert_clear_error(rc, err, *needles)
    assert not any(tmp_path.iterdir())
