"""``edgehdr.models.training.reproduce``: a model's recorded command run again gives its weights, and a model
whose weights that command does not make is reported as not reproduced (exit 1)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="onnx is the export extra (pip install 'edgehdr[export]')")
from onnx import helper, numpy_helper  # noqa: E402

from edgehdr.models.training.reproduce import (  # noqa: E402
    export_commit,
    main,
    recorded_command,
    recorded_commit,
    source_revision,
    training_source,
    weight_difference,
)

try:
    import torch  # noqa: F401

    HAVE_TORCH = True
except ImportError:
    HAVE_TORCH = False
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch is the training extra (pip install 'edgehdr[train]')")

REPOSITORY = Path(__file__).resolve().parents[1]
TINY_MERGE = "train_merge --brackets 2 --epochs 1 --crops 1 --width 4 --seed 0 --real 0"


def _model(path: Path, initializers: dict[str, np.ndarray], props: dict[str, str]) -> Path:
    """An ONNX file holding ``initializers`` (an Identity graph, enough for the weights and metadata)."""
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
                              [numpy_helper.from_array(a.astype(np.float32), name) for name, a in initializers.items()])
    model = helper.make_model(graph)
    helper.set_model_props(model, props)
    onnx.save(model, str(path))
    return path


def _scratch_repository(path: Path, files: Sequence[str]) -> Callable[..., str]:
    """A git repository at ``path`` holding ``files`` (each ``x = 1``) in one commit; returns its git command
    (words in, stdout out). Skips without git."""
    if shutil.which("git") is None:
        pytest.skip("no git")

    def git(*words: str) -> str:
        return subprocess.run(["git", "-C", str(path), "-c", "user.name=t", "-c", "user.email=t@t", *words],
                              capture_output=True, text=True, check=True).stdout.strip()

    git("init", "-q")
    for name in files:
        (path / name).parent.mkdir(parents=True, exist_ok=True)
        (path / name).write_text("x = 1\n")
    git("add", "-A")
    git("commit", "-q", "-m", "one")
    return git


@pytest.fixture(scope="module")
def tiny_merge_model(tmp_path_factory) -> Path:
    """The tiny merge recipe's model, trained once for the tests that rerun its recorded command."""
    from edgehdr.models.training.train_merge import main as train_main

    work = tmp_path_factory.mktemp("tiny_merge")
    made = work / "made.onnx"
    assert train_main([*TINY_MERGE.split()[1:], "--work", str(work / "w"), "-o", str(made)]) == 0
    return made


def test_weights_are_compared_by_name_or_as_the_values_of_a_split_layer(tmp_path):
    w = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    a = _model(tmp_path / "a.onnx", {"conv.weight": w, "conv.bias": np.ones(3)}, {})
    moved = w.copy()
    moved[1, 2] += 0.25
    b = _model(tmp_path / "b.onnx", {"conv.weight": moved, "conv.bias": np.ones(3)}, {})
    assert weight_difference(a, a) == (0.0, "by name")
    diff, how = weight_difference(a, b)
    assert how == "by name" and diff == pytest.approx(0.25)
    # the same weights, the layer split in two tensors (as train_merge's re-export does): equal as values
    split = _model(tmp_path / "split.onnx", {"low": w[:, :2], "skip": w[:, 2:], "bias": np.ones(3)}, {})
    assert weight_difference(a, split) == (0.0, "as sorted values")
    # one value changed in the split file is seen too
    moved_split = _model(tmp_path / "ms.onnx", {"low": moved[:, :2], "skip": moved[:, 2:], "bias": np.ones(3)}, {})
    assert weight_difference(a, moved_split)[0] > 0
    fewer = _model(tmp_path / "fewer.onnx", {"low": w[:, :2], "bias": np.ones(3)}, {})
    assert weight_difference(a, fewer)[0] == float("inf")


def test_a_file_without_a_usable_recipe_is_refused_by_name(tmp_path, capsys):
    bare = _model(tmp_path / "bare.onnx", {"w": np.ones(2)}, {})
    with pytest.raises(ValueError, match="bare.onnx: no 'edgehdr.recipe'"):
        recorded_command(bare)
    assert main([str(bare)]) == 2
    assert "bare.onnx" in capsys.readouterr().err
    other = _model(tmp_path / "other.onnx", {"w": np.ones(2)}, {"edgehdr.recipe": "rm -rf /"})
    with pytest.raises(ValueError, match="does not start with one of"):
        recorded_command(other)
    own_out = _model(tmp_path / "own.onnx", {"w": np.ones(2)}, {"edgehdr.recipe": f"{TINY_MERGE} -o x.onnx"})
    with pytest.raises(ValueError, match="names its own --work or -o"):
        recorded_command(own_out)
    recipe, words, _ = recorded_command(_model(tmp_path / "ok.onnx", {"w": np.ones(2)}, {"edgehdr.recipe": TINY_MERGE}))
    assert recipe == "train_merge" and words[:2] == ["--brackets", "2"]
    # the rerun never goes over the file it checks
    before = (tmp_path / "ok.onnx").read_bytes()
    assert main([str(tmp_path / "ok.onnx"), "--work", str(tmp_path)]) == 2
    assert "would write the rerun over" in capsys.readouterr().err
    assert (tmp_path / "ok.onnx").read_bytes() == before


def test_source_revision_names_this_checkouts_commit():
    if shutil.which("git") is None or not (REPOSITORY / ".git").exists():
        pytest.skip("not a git checkout (or no git): source_revision answers 'unknown'")
    head = subprocess.run(["git", "-C", str(REPOSITORY), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    assert source_revision().startswith(f"git {head}")


def test_source_revision_marks_uncommitted_sources_only(tmp_path):
    """In a repository of its own: clean after the commit; a changed or new .py file under edgehdr/ or export/
    marks it; a changed README or a .py file elsewhere does not; a folder that is not the top of a checkout is
    'unknown'."""
    git = _scratch_repository(tmp_path, ("edgehdr/a.py", "edgehdr/sub/b.py", "export/c.py", "tools/d.py", "README.md"))
    clean = f"git {git('rev-parse', 'HEAD')}"
    assert source_revision(tmp_path) == clean
    dirty = clean + " + uncommitted changes to the sources"
    for change in ("edgehdr/a.py", "edgehdr/sub/b.py", "export/c.py", "edgehdr/new.py"):
        (tmp_path / change).write_text("x = 2\n")
        assert source_revision(tmp_path) == dirty, change
        git("checkout", "-q", "--", ".")
        git("clean", "-q", "-f")
        assert source_revision(tmp_path) == clean, change
    for change in ("README.md", "tools/d.py"):
        (tmp_path / change).write_text("x = 2\n")
        assert source_revision(tmp_path) == clean, change
    assert source_revision(tmp_path / "edgehdr") == "unknown (not a git checkout)"
    assert source_revision(tmp_path.parent) == "unknown (not a git checkout)"


def test_training_source_is_the_start_revision_or_marked_when_the_checkout_moved(tmp_path):
    """The revision a recipe started from is recorded as it is while the checkout stays there; a commit or an edit
    of the sources during the training marks it, and such a record names no usable commit for --at-source."""
    git = _scratch_repository(tmp_path, ("edgehdr/a.py",))
    started = source_revision(tmp_path)
    assert training_source(started, tmp_path) == started
    (tmp_path / "edgehdr" / "a.py").write_text("x = 2\n")  # an edit while it trains
    edited = training_source(started, tmp_path)
    assert edited == f"{started} + the checkout changed during the training (now {started} + uncommitted " \
                     "changes to the sources)"
    git("commit", "-q", "-am", "two")  # then a commit
    moved = training_source(started, tmp_path)
    assert moved == f"{started} + the checkout changed during the training (now git {git('rev-parse', 'HEAD')})"
    for record in (edited, moved):
        with pytest.raises(ValueError, match="moved while it trained"):
            recorded_commit(record, "m.onnx")


def test_recorded_commit_is_read_and_unusable_sources_are_refused(tmp_path, capsys):
    sha = "0123456789abcdef0123456789abcdef01234567"
    assert recorded_commit(f"git {sha}", "m.onnx") == sha
    assert recorded_commit(f"git {sha} (recorded later: its command makes these bytes there)", "m.onnx") == sha
    for bad, why in ((f"git {sha} + uncommitted changes to the sources", "uncommitted"),
                     ("unknown (not a git checkout)", "names no git commit"), (f"git {sha[:12]}", "names no git")):
        with pytest.raises(ValueError, match=why):
            recorded_commit(bad, "m.onnx")
        model = _model(tmp_path / "m.onnx", {"w": np.ones(2)}, {"edgehdr.recipe": TINY_MERGE, "edgehdr.source": bad})
        assert main([str(model), "--at-source"]) == 2
        assert "m.onnx: edgehdr.source" in capsys.readouterr().err
    # a file that records no source at all
    model = _model(tmp_path / "m.onnx", {"w": np.ones(2)}, {"edgehdr.recipe": TINY_MERGE})
    assert main([str(model), "--at-source"]) == 2


def test_export_commit_writes_that_commits_tree(tmp_path):
    """Two commits that differ in a file: each commit's tree holds its own version; an unknown commit is refused."""
    repo = tmp_path / "repo"
    repo.mkdir()
    git = _scratch_repository(repo, ("edgehdr/a.py",))  # x = 1
    commits = [git("rev-parse", "HEAD")]
    (repo / "edgehdr" / "a.py").write_text("x = 2\n")
    git("commit", "-q", "-am", "two")
    commits.append(git("rev-parse", "HEAD"))
    (repo / "edgehdr" / "a.py").write_text("x = 3\n")  # uncommitted: in neither tree
    for value, commit in zip(("1", "2"), commits):
        tree = export_commit(commit, tmp_path / f"out{value}", repo)
        assert (tree / "edgehdr" / "a.py").read_text() == f"x = {value}\n"
    with pytest.raises(ValueError, match="git archive"):
        export_commit("f" * 40, tmp_path / "out3", repo)


@needs_torch
def test_at_source_runs_the_command_in_the_recorded_commits_sources(tiny_merge_model, tmp_path, capsys):
    """The tiny merge recipe's model, recorded at this checkout's commit, is reproduced from that commit's own
    sources (written out by git archive and imported from there)."""
    if shutil.which("git") is None or not (REPOSITORY / ".git").exists():
        pytest.skip("not a git checkout (or no git)")
    revision = source_revision()
    if "uncommitted" in revision:
        pytest.skip("the sources differ from their commit, so no commit holds the code that makes today's model")
    assert main([str(tiny_merge_model), "--at-source", "--work", str(tmp_path / "rerun")]) == 0
    out = capsys.readouterr().out
    assert f"running in the sources of {revision.split()[1]}" in out
    assert "largest weight difference 0 (by name) -> reproduced" in out


@needs_torch
def test_a_recipes_model_is_reproduced_and_a_changed_one_is_not(tiny_merge_model, tmp_path, capsys):
    """The tiny merge recipe run twice gives the same weights (exit 0); the same file with one weight moved by
    1e-3, or with a recorded seed the weights were not made with, is reported as not reproduced (exit 1)."""
    made = tiny_merge_model
    props = {p.key: p.value for p in onnx.load(str(made)).metadata_props}
    assert props["edgehdr.recipe"] == TINY_MERGE and props["edgehdr.source"]
    assert main([str(made)]) == 0
    assert "largest weight difference 0 (by name) -> reproduced" in capsys.readouterr().out

    model = onnx.load(str(made))
    first = next(t for t in model.graph.initializer if numpy_helper.to_array(t).size > 1)
    moved = numpy_helper.to_array(first).copy()
    moved.flat[0] += 1e-3
    first.CopyFrom(numpy_helper.from_array(moved, first.name))
    onnx.save(model, str(tmp_path / "moved.onnx"))
    assert main([str(tmp_path / "moved.onnx")]) == 1
    assert "NOT reproduced" in capsys.readouterr().out
    assert main([str(tmp_path / "moved.onnx"), "--tolerance", "2e-3"]) == 0

    model = onnx.load(str(made))
    helper.set_model_props(model, {**props, "edgehdr.recipe": TINY_MERGE.replace("--seed 0", "--seed 1")})
    onnx.save(model, str(tmp_path / "seed1.onnx"))
    assert main([str(tmp_path / "seed1.onnx")]) == 1
