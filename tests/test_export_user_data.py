"""Export for anyone's model: calibration and held-out data as .npz/.npy tensor folders or a Python data-loader
hook, checked at the boundary, and validation against FP32 with generic metrics (cosine, relative L2)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from export_cli import cli
from onnx import TensorProto, helper, numpy_helper

from edgehdr.infer import Manifest
from export.calibration import model_feeds
from export.trt_check import check_qdq_for_tensorrt
from export.validate import apply_budget, compare_runners

SHAPE = (1, 3, 32, 32)


def _conv(rng, name, x, out_ch, in_ch, inits, nodes):
    w = (rng.standard_normal((out_ch, in_ch, 3, 3)) * np.sqrt(2.0 / (in_ch * 9))).astype(np.float32)
    b = (rng.standard_normal(out_ch) * 0.05).astype(np.float32)
    inits += [numpy_helper.from_array(w, f"{name}.weight"), numpy_helper.from_array(b, f"{name}.bias")]
    nodes.append(helper.make_node("Conv", [x, f"{name}.weight", f"{name}.bias"], [name], pads=[1, 1, 1, 1],
                                  name=name))
    return name


def user_net(path, *, seed: int = 0, two_inputs: bool = False) -> Path:
    """A small conv net as someone else exports it: input 'pixels' with a dynamic batch ('batch', 3, 32, 32),
    output 'features' (batch, 4, 32, 32); ``two_inputs`` adds a second input 'gain' (batch, 1, 1, 1) multiplied
    into the output."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []
    c1 = _conv(rng, "conv1", "pixels", 8, 3, inits, nodes)
    nodes.append(helper.make_node("Relu", [c1], ["relu1"], name="relu1"))
    c2 = _conv(rng, "conv2", "relu1", 8, 8, inits, nodes)
    nodes.append(helper.make_node("Relu", [c2], ["relu2"], name="relu2"))
    nodes.append(helper.make_node("Add", ["relu2", "relu1"], ["residual"], name="residual_add"))
    c3 = _conv(rng, "conv3", "residual", 4, 8, inits, nodes)
    inputs = [helper.make_tensor_value_info("pixels", TensorProto.FLOAT, ["batch", 3, 32, 32])]
    if two_inputs:
        inputs.append(helper.make_tensor_value_info("gain", TensorProto.FLOAT, ["batch", 1, 1, 1]))
        nodes.append(helper.make_node("Mul", [c3, "gain"], ["features"], name="gain_mul"))
    else:
        nodes.append(helper.make_node("Relu", [c3], ["features"], name="relu3"))
    graph = helper.make_graph(nodes, "user_net", inputs,
                              [helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 4, 32, 32])],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="someone")
    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return Path(path)


def _images(rng, n: int) -> np.ndarray:
    """``n`` smooth-ish images in [0, 1] (a random field plus a gradient), (n, 3, 32, 32) float32."""
    ramp = np.linspace(0.0, 1.0, 32, dtype=np.float32)
    x = 0.5 * rng.random((n, 3, 32, 32), dtype=np.float32) + 0.5 * ramp[None, None, None, :]
    return x.astype(np.float32)


def npz_folder(folder, count: int, *, seed: int) -> Path:
    folder = Path(folder)
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for k, x in enumerate(_images(rng, count)):
        np.savez(folder / f"sample_{k:03d}.npz", pixels=x[None])
    return folder


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    d = tmp_path_factory.mktemp("user")
    return {"dir": d, "net": user_net(d / "user.onnx"), "net2": user_net(d / "two.onnx", two_inputs=True),
            "calib": npz_folder(d / "calib", 16, seed=1), "holdout": npz_folder(d / "holdout", 8, seed=2)}



def assert_refused(rc, err, *needles):
    """Exit 2, no traceback, the last line ``edgehdr-export CMD: error: ...`` naming every needle."""
    assert "Traceback" not in err, err
    assert rc == 2, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("edgehdr-export") and ": error: " in line, err
    for needle in needles:
        assert str(needle) in line, (needle, err)
    return line


def _cosine(a, b) -> float:
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ------------------------------------------------------------------------------------- the target
def test_build_int8_of_a_dynamic_batch_user_model_on_npz_folders(work, tmp_path, capsys):
    out = tmp_path / "out"
    rc, stdout, err = cli(capsys, "build", work["net"], "--precision", "int8", "--shape", "pixels:1x3x32x32",
                          "--calib", work["calib"], "--holdout", work["holdout"], "-o", out)
    assert rc == 0, err
    int8 = out / "user.int8.onnx"
    assert f"onnx: {int8}" in stdout
    ops = [n.op_type for n in onnx.load(str(int8)).graph.node]
    assert ops.count("QuantizeLinear") >= 3 and ops.count("DequantizeLinear") >= 6
    manifest = Manifest.load(Manifest.path_for(int8))
    assert check_qdq_for_tensorrt(int8, float_nodes=manifest.calibration["kept_float"]) == []
    assert manifest.inputs == [{"name": "pixels", "shape": [1, 3, 32, 32], "dtype": "float32"}]
    assert manifest.build_flags["input_shapes"] == {"pixels": [1, 3, 32, 32]}
    data = manifest.calibration["data"]
    assert data["source"] == str(work["calib"]) and data["samples"] == 16 and data["files"] == 16
    assert data["format"] == "npz" and data["split"] == "all samples" and len(data["sha256"]) == 64
    assert data["inputs"] == {"pixels": {"shape": [1, 3, 32, 32], "dtype": "float32"}}
    report = manifest.accuracy_vs_fp32
    assert report["budget"]["passed"] and report["budget"]["kind"] == "generic"
    assert report["data"]["source"] == str(work["holdout"]) and report["samples"] == 8
    # independently: the user's own FP32 model (dynamic batch) against the INT8 one on the held-out files
    fp32 = ort.InferenceSession(str(work["net"]), providers=["CPUExecutionProvider"])
    quant = ort.InferenceSession(str(int8), providers=["CPUExecutionProvider"])
    cosines, diff_sq, ref_sq = [], 0.0, 0.0
    for path in sorted(work["holdout"].glob("*.npz")):
        x = np.load(path)["pixels"]
        ref, = fp32.run(["features"], {"pixels": x})
        got, = quant.run(["features"], {"pixels": x})
        cosines.append(_cosine(ref, got))
        diff_sq += float(np.sum((got.astype(np.float64) - ref) ** 2))
        ref_sq += float(np.sum(ref.astype(np.float64) ** 2))
    assert min(cosines) >= 0.99
    assert math.sqrt(diff_sq / ref_sq) <= 0.1
    figures = report["outputs"]["features"]
    assert figures["cosine_similarity_min"] == pytest.approx(min(cosines), abs=1e-9)
    assert figures["relative_l2_error"] == pytest.approx(math.sqrt(diff_sq / ref_sq), rel=1e-6)
    assert "cosine (worst sample)" in (out / "user.int8.validation.md").read_text()


def test_build_without_holdout_splits_the_folder_every_fifth_sample(work, tmp_path, capsys):
    out = tmp_path / "out"
    rc, _, err = cli(capsys, "build", work["net"], "--precision", "fp16", "--shape", "pixels:1x3x32x32",
                     "--calib", work["calib"], "-o", out)
    assert rc == 0, err
    report = Manifest.load(Manifest.path_for(out / "user.fp16.onnx")).accuracy_vs_fp32
    assert report["data"]["split"] == "every 5th sample held out" and report["samples"] == 3  # samples 4, 9, 14
    cal, _ = model_feeds(out / "user.fp32.onnx", work["calib"], 100, role="calibration", split=True)
    held, _ = model_feeds(out / "user.fp32.onnx", work["calib"], 100, role="holdout", split=True)
    assert len(cal) == 13 and len(held) == 3
    assert not any(np.array_equal(c["pixels"], h["pixels"]) for c in cal for h in held)


# --------------------------------------------------------------------------------------------- layouts
def test_npy_files_one_sample_each_or_a_stack_along_axis_0(work, tmp_path):
    folder = tmp_path / "npy"
    folder.mkdir()
    x = _images(np.random.default_rng(3), 12)
    np.save(folder / "a_single.npy", x[:1])
    np.save(folder / "b_stack.npy", x[1:])  # 11 samples of batch 1
    feeds, described = model_feeds(work["net"], folder, 64, role="calibration", shapes={"pixels": SHAPE})
    assert len(feeds) == 12 and described["files"] == 2 and described["format"] == "npy"
    assert all(f["pixels"].shape == SHAPE for f in feeds)
    np.testing.assert_array_equal(np.concatenate([f["pixels"] for f in feeds]), x)
    feeds, _ = model_feeds(work["net"], folder, 5, role="calibration", shapes={"pixels": SHAPE})
    assert len(feeds) == 5  # the count caps what is drawn
    # batch 2 fixed by --shape: a stack of 11 (or a single sample) is not a multiple of 2
    (folder / "a_single.npy").unlink()
    with pytest.raises(ValueError, match=r"b_stack.npy: array 'pixels' has shape \[11, 3, 32, 32\]; model input "
                                         r"'pixels' takes \[2, 3, 32, 32\] \(one sample, or K samples stacked "
                                         r"along axis 0: \[K\*2, 3, 32, 32\]\)"):
        model_feeds(work["net"], folder, 64, shapes={"pixels": (2, 3, 32, 32)})
    # without --shape the dynamic batch takes any size: each array is one sample
    np.save(folder / "a_single.npy", x[:1])
    feeds, _ = model_feeds(work["net"], folder, 64, role="holdout")
    assert [f["pixels"].shape[0] for f in feeds] == [1, 11]


def test_npz_with_two_inputs_and_stacked_samples(work, tmp_path):
    folder = tmp_path / "two"
    folder.mkdir()
    x = _images(np.random.default_rng(4), 6)
    gain = np.linspace(0.5, 1.5, 6, dtype=np.float32).reshape(6, 1, 1, 1)
    np.savez(folder / "batch.npz", pixels=x, gain=gain, label=np.arange(6))  # 'label' is not an input: ignored
    shapes = {"pixels": SHAPE, "gain": (1, 1, 1, 1)}
    feeds, described = model_feeds(work["net2"], folder, 64, role="calibration", shapes=shapes)
    assert len(feeds) == 6 and set(feeds[3]) == {"pixels", "gain"} and feeds[3]["gain"].item() == gain[3].item()
    assert described["inputs"]["gain"] == {"shape": [1, 1, 1, 1], "dtype": "float32"}
    np.savez(folder / "uneven.npz", pixels=x, gain=gain[:3])
    with pytest.raises(ValueError, match=r"uneven.npz: the arrays stack different numbers of samples"):
        model_feeds(work["net2"], folder, 64, shapes=shapes)


HOOK = '''
import numpy as np

def calibration():
    rng = np.random.default_rng(7)
    for _ in range(12):
        yield {"pixels": rng.random((1, 3, 32, 32), dtype=np.float32)}

def endless():
    k = 0
    while True:
        yield {"pixels": np.full((1, 3, 32, 32), k % 7 / 7, np.float32)}
        k += 1

def load_data():
    return [{"pixels": np.zeros((2, 3, 32, 32), np.float32)}]
'''


def test_python_hook_by_file_or_module_feeds_build_and_validate(work, tmp_path, capsys, monkeypatch):
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "my_data.py").write_text(HOOK)
    out = tmp_path / "out"
    rc, _, err = cli(capsys, "build", work["net"], "--precision", "int8", "--method", "minmax", "--shape",
                     "pixels:1x3x32x32", "--calib", f"{hooks / 'my_data.py'}:calibration", "--holdout",
                     work["holdout"], "-o", out)
    assert rc == 0, err
    data = Manifest.load(Manifest.path_for(out / "user.int8.onnx")).calibration["data"]
    assert data["source"] == f"{hooks / 'my_data.py'}:calibration" and data["format"] == "python hook"
    assert data["samples"] == 12 and "files" not in data
    monkeypatch.syspath_prepend(str(hooks))
    rc, stdout, err = cli(capsys, "validate", out / "user.fp32.onnx", out / "user.int8.onnx", "--data",
                          "my_data:endless", "--count", "9")
    assert rc == 0 and "within budget" in stdout, err
    feeds, described = model_feeds(work["net"], hooks / "my_data.py", 64, shapes={"pixels": SHAPE})
    assert len(feeds) == 2 and described["source"].endswith("my_data.py")  # load_data(), a stack of 2


# ------------------------------------------------------------------------------------------- refusals
def _bad_folder(tmp_path, name, write):
    folder = tmp_path / name
    folder.mkdir()
    x = _images(np.random.default_rng(5), 3)
    np.savez(folder / "a_good.npz", pixels=x[:1])
    write(folder, x)
    return folder


BAD_DATA = {
    "missing input": (lambda d, x: np.savez(d / "b_bad.npz", image=x[:1]),
                      ["b_bad.npz", "no array named 'pixels'", "['image']"]),
    "float64": (lambda d, x: np.savez(d / "b_bad.npz", pixels=x[:1].astype(np.float64)),
                ["b_bad.npz", "'pixels'", "is float64", "takes float32"]),
    "float16": (lambda d, x: np.save(d / "b_bad.npy", x[:1].astype(np.float16)),
                ["b_bad.npy", "'pixels'", "is float16", "takes float32"]),
    "no batch dim": (lambda d, x: np.savez(d / "b_bad.npz", pixels=x[0]),
                     ["b_bad.npz", "'pixels'", "[3, 32, 32]", "[1, 3, 32, 32]", "[K, 3, 32, 32]",
                      "batch dimension is missing"]),
    "wrong size": (lambda d, x: np.save(d / "b_bad.npy", x[:1, :, :16, :16]),
                   ["b_bad.npy", "'pixels'", "[1, 3, 16, 16]", "[1, 3, 32, 32]"]),
    "NaN": (lambda d, x: np.savez(d / "b_bad.npz", pixels=np.where(x[:1] > 0.9, np.nan, x[:1])),
            ["b_bad.npz", "'pixels'", "NaN", "finite"]),
    "inf": (lambda d, x: np.save(d / "b_bad.npy", np.where(x[:1] > 0.9, np.inf, x[:1]).astype(np.float32)),
            ["b_bad.npy", "'pixels'", "infinite"]),
    "damaged": (lambda d, x: (d / "b_bad.npz").write_bytes(b"PK\x03\x04 not really a zip"),
                ["b_bad.npz", "not a readable .npz file"]),
    "pickled": (lambda d, x: np.save(d / "b_bad.npy", np.array([{"pixels": 1}], dtype=object)),
                ["b_bad.npy", "pickled"]),
}


@pytest.mark.parametrize("case", list(BAD_DATA))
def test_bad_tensor_files_are_refused_naming_file_and_array(work, tmp_path, capsys, case):
    write, needles = BAD_DATA[case]
    folder = _bad_folder(tmp_path, "data", write)
    for argv in (["build", work["net"], "--precision", "int8", "--method", "minmax", "--shape", "pixels:1x3x32x32",
                  "--calib", folder, "--holdout", work["holdout"], "-o", tmp_path / "out"],
                 ["validate", work["net"], work["net"], "--shape", "pixels:1x3x32x32", "--data", folder]):
        rc, _stdout, err = cli(capsys, *argv)
        assert_refused(rc, err, str(folder / needles[0]), *needles[1:])
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_npy_for_a_model_with_two_inputs_is_refused(work, tmp_path, capsys):
    folder = tmp_path / "npy"
    folder.mkdir()
    np.save(folder / "x.npy", _images(np.random.default_rng(6), 1))
    rc, _, err = cli(capsys, "validate", work["net2"], work["net2"], "--data", folder)
    assert_refused(rc, err, folder / "x.npy", ".npz", "['pixels', 'gain']")


BAD_HOOKS = {
    "raises": ("def fn():\n    raise RuntimeError('disk not mounted')\n", "fn",
               ["calling it raised RuntimeError: disk not mounted", "bad_hook.py:2"]),
    "raises midway": (("def fn():\n    yield {'pixels': __import__('numpy').zeros((1, 3, 32, 32), 'float32')}\n"
                      "    raise KeyError('shard 2')\n"), "fn", ["KeyError", "while producing dict 1"]),
    "not iterable": ("def fn():\n    return 42\n", "fn", ["returned int 42", "iterable"]),
    "not a dict": ("def fn():\n    return [[1, 2]]\n", "fn", ["dict 0", "a list", "one dict"]),
    "wrong name": ("import numpy as np\ndef fn():\n    return [{'image': np.zeros((1, 3, 32, 32), np.float32)}]\n",
                   "fn", ["dict 0", "no array named 'pixels'", "['image']"]),
    "wrong dtype": ("import numpy as np\ndef fn():\n    return [{'pixels': np.zeros((1, 3, 32, 32))}]\n", "fn",
                    ["dict 0", "'pixels'", "is float64", "takes float32"]),
    "not an array": ("def fn():\n    return [{'pixels': [[0.0]]}]\n", "fn", ["dict 0", "'pixels' is a list",
                                                                           "numpy array"]),
    "non-finite": (("import numpy as np\ndef fn():\n    return [{'pixels': np.full((1, 3, 32, 32), np.nan, "
                   "np.float32)}]\n"), "fn", ["dict 0", "'pixels'", "3072 NaN"]),
    "no such function": ("def fn():\n    return []\n", "other", ["has no function 'other'"]),
    "empty": ("def fn():\n    return []\n", "fn", ["no holdout samples"]),
    "syntax error": ("x = 1\ndef fn(:\n", "fn", ["running", "SyntaxError", "line 2"]),
}


@pytest.mark.parametrize("case", list(BAD_HOOKS))
def test_bad_hooks_are_refused_in_one_line(work, tmp_path, capsys, case):
    code, function, needles = BAD_HOOKS[case]
    script = tmp_path / "bad_hook.py"
    script.write_text(code)
    rc, _, err = cli(capsys, "validate", work["net"], work["net"], "--shape", "pixels:1x3x32x32",
                     "--data", f"{script}:{function}")
    line = assert_refused(rc, err, f"--data {script}:{function}", *needles)
    assert len(err.strip().splitlines()) == 1, err
    assert line


def test_unknown_module_and_missing_script_are_named(work, tmp_path, capsys):
    rc, _, err = cli(capsys, "build", work["net"], "--precision", "int8", "--shape", "pixels:1x3x32x32",
                     "--calib", "no_such_package.loader:calib", "-o", tmp_path)
    assert_refused(rc, err, "--calib no_such_package.loader:calib", "no module named 'no_such_package'",
                   "FILE.py:FUNCTION")
    rc, _, err = cli(capsys, "validate", work["net"], work["net"], "--data", tmp_path / "gone.py")
    assert_refused(rc, err, "gone.py", "no such file")
    rc, _, err = cli(capsys, "validate", work["net"], work["net"], "--data", "webcam")
    assert_refused(rc, err, "--data webcam", "neither 'synth' nor a folder", "MODULE:FUNCTION")
    assert not any(tmp_path.iterdir())


# ------------------------------------------------------------------------------------- generic metrics
class _Fixed:
    """A runner returning given outputs in turn; it describes them as the first sample has them."""

    def __init__(self, outputs):
        self.first = outputs[0]
        self.outputs = iter(outputs)

    def run(self, feed):
        return next(self.outputs)

    def describe(self):
        from edgehdr.infer import RunnerDescription, TensorDescription

        return RunnerDescription(backend="fixed", model="fixed", providers=(), precision="unknown", device="cpu",
                                 outputs=tuple(TensorDescription(k, np.shape(v), str(np.asarray(v).dtype))
                                               for k, v in self.first.items()))


def test_generic_metrics_and_budget_match_numpy():
    rng = np.random.default_rng(8)
    ref = [{"y": rng.standard_normal((1, 4, 8, 8)).astype(np.float32), "s": np.array([[0.3 + k]], np.float32)}
           for k in range(4)]
    cand = [{"y": r["y"] + np.float32(0.05) * rng.standard_normal(r["y"].shape).astype(np.float32),
             "s": r["s"] * np.float32(1.02)} for r in ref]
    report = compare_runners(_Fixed(ref), _Fixed(cand), [{}] * 4)
    y = report["outputs"]["y"]
    assert y["cosine_similarity_min"] == pytest.approx(min(_cosine(r["y"], c["y"]) for r, c in zip(ref, cand)))
    num = sum(float(np.sum((c["y"].astype(np.float64) - r["y"]) ** 2)) for r, c in zip(ref, cand))
    den = sum(float(np.sum(r["y"].astype(np.float64) ** 2)) for r in ref)
    assert y["relative_l2_error"] == pytest.approx(math.sqrt(num / den))
    s = report["outputs"]["s"]
    assert s["cosine_similarity"] == pytest.approx(1.0) and s["relative_l2_error"] == pytest.approx(0.02, rel=1e-3)
    for r in report["outputs"].values():
        r["scalar"] = r["elements"] <= 4
    assert apply_budget(report, cosine=0.99, rel_l2=0.1)["budget"]["passed"]
    with pytest.raises(ValueError, match="--psnr-budget and --abs-budget apply to the shipped data encodings"):
        apply_budget(report, cosine=0.99, rel_l2=0.1, psnr_db=30.0)  # refused, not dropped without a word
    failed = apply_budget(report, cosine=0.99, rel_l2=0.01)["budget"]
    assert not failed["passed"] and failed["kind"] == "generic" and "s: relative L2 0.02 <= 0.01" in failed["rule"]
    zeros = compare_runners(_Fixed([{"z": np.zeros(8)}]), _Fixed([{"z": np.zeros(8)}]), [{}])
    assert zeros["outputs"]["z"]["cosine_similarity_min"] == 1.0 and zeros["outputs"]["z"]["relative_l2_error"] == 0


def test_a_shipped_models_task_budget_and_the_callers_own_both_hold():
    """A model with a task is judged on its stage's output; a --psnr-budget or --abs-budget the caller gives is
    applied to its raw outputs as well (it was silently dropped), and neither replaces the other."""
    from export.tasks import TASKS
    from export.validate import apply_budget

    def report(psnr_db: float, task_psnr_db: float) -> dict:
        return {"task": {"tmo_output_psnr_db_mean": task_psnr_db},
                "outputs": {"params": {"psnr_db": psnr_db, "scalar": False}}}

    tmo = TASKS["tmo_log_luminance"]["budget"]
    plain = apply_budget(report(65.7, 52.0), task_budget=tmo)["budget"]
    assert plain["passed"] and plain["kind"] == "task" and "params: PSNR" not in plain["rule"]
    strict = apply_budget(report(65.7, 52.0), psnr_db=1000.0, task_budget=tmo)["budget"]
    assert not strict["passed"] and "params: PSNR 65.70 dB >= 1000.0" in strict["rule"]
    assert "tone-mapped output PSNR 52.00 dB >= 40" in strict["rule"]
    assert apply_budget(report(65.7, 52.0), psnr_db=60.0, task_budget=tmo)["budget"]["passed"]
    assert not apply_budget(report(65.7, 30.0), psnr_db=60.0, task_budget=tmo)["budget"]["passed"]


def test_validate_of_a_different_network_on_user_data_fails_its_budget(work, capsys, tmp_path):
    other = user_net(tmp_path / "other.onnx", seed=9)
    rc, stdout, _ = cli(capsys, "validate", work["net"], other, "--data", work["holdout"])
    assert rc == 1 and "OUTSIDE budget" in stdout and "cosine" in stdout
    rc, stdout, _ = cli(capsys, "validate", work["net"], other, "--data", work["holdout"], "--cosine-budget", "-1",
                        "--rel-l2-budget", "100")
    assert rc == 0 and "within budget" in stdout


def test_impossible_or_inapplicable_user_budgets_are_refused(work, capsys, tmp_path):
    """A cosine outside -1..1 or a negative relative L2 error is refused by the parser; either budget with the shipped
    encodings' data (--data synth) is refused naming it. Both used to be accepted and then ignored (exit 0, "within
    budget" by the PSNR rule alone)."""
    rc, _, err = cli(capsys, "validate", work["net"], work["net"], "--data", work["holdout"], "--cosine-budget", "2")
    assert rc == 2 and "--cosine-budget" in err and "-1..1" in err
    rc, _, err = cli(capsys, "validate", work["net"], work["net"], "--data", work["holdout"], "--rel-l2-budget", "-1")
    assert rc == 2 and "--rel-l2-budget" in err and ">= 0" in err
    from edgehdr.models import model_path

    rc, _, err = cli(capsys, "validate", model_path("tmo_net"), model_path("tmo_net"), "--count", "2",
                     "--rel-l2-budget", "0.5")
    assert_refused(rc, err, "--cosine-budget and --rel-l2-budget apply to your own tensors", "--data synth")
    out = tmp_path / "engine"
    rc, _, err = cli(capsys, "build", model_path("tmo_net"), "-o", out, "--cosine-budget", "0.9")
    assert_refused(rc, err, "--cosine-budget and --rel-l2-budget apply to your own tensors", "--calib synth")
    assert "calibration data" not in err and not out.exists()  # refused before any work
    report = tmp_path / "same"
    rc, stdout, _ = cli(capsys, "validate", work["net"], work["net"], "--data", work["holdout"], "--cosine-budget",
                        "0.999", "-o", report)
    assert rc == 0 and "within budget" in stdout
    assert ">= 0.999" in json.loads(report.with_suffix(".json").read_text())["budget"]["rule"]


def test_a_dla_build_in_fp32_is_refused_before_any_work(capsys, tmp_path):
    """The DLA runs FP16 and INT8 only: an FP32 DLA engine would be a GPU engine under a DLA name (every layer falls
    back), so it is refused, before TensorRT is even looked for."""
    from edgehdr.models import model_path

    rc, _, err = cli(capsys, "build", model_path("tmo_net"), "-o", tmp_path, "--target", "trt", "--dla", "0")
    assert_refused(rc, err, "--dla 0 with --precision fp32", "FP16 and INT8 only")
