"""Does a shipped model still come out of the command in its metadata? Run the command, compare the weights.

Every recipe records its command line in the ONNX model's ``edgehdr.recipe`` property (and, since this
module, the commit of the sources it ran from in ``edgehdr.source``). The recipes are seeded and
deterministic on one machine, so running that command again must give the same weights — unless the
code the recipe depends on (scene generator, operators, metrics, application kernels) changed since.
That had happened silently twice: a retrain then makes a different model, and figures quoted for the
shipped file no longer describe what its recorded command makes. This tool makes the check one command::

    python -m edgehdr.models.training.reproduce edgehdr/models/tmo_net.onnx

It runs the recorded recipe in a fresh work folder (``--work``; the output goes there, never over the
shipped file), compares the float initialisers and exits 0 when the largest difference is at most
``--tolerance`` (default 0: the same values), 1 when not, 2 when the command cannot be run. Weights are
compared by name where both graphs name the same tensors, otherwise as the sorted multiset of values (a
re-export may fuse or split a layer's tensors: ``train_merge --reexport``), which equal weights satisfy.

``--at-source`` runs the command in the sources of the commit the model records in ``edgehdr.source``
(``git archive`` of that commit into a temporary folder, which the recipe then imports from; the
photographs are the ones this checkout finds, passed as ``EDGEHDR_DATA``): whether the file is what its
command made from the code of its day, where the plain check asks whether today's code still makes it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["RECIPES", "recorded_command", "source_revision", "training_source", "weight_difference"]

RECIPES = ("train_dimming", "train_merge", "train_norvdpnet", "train_tmo")
"""The recipes whose recorded commands this tool runs (modules of ``edgehdr.models.training``)."""

_REPOSITORY = Path(__file__).resolve().parents[3]


def source_revision(repository: str | Path = _REPOSITORY) -> str:
    """The git commit the package's sources are at, for the model's ``edgehdr.source`` property.

    ``"git <40 hex digits>"``, with ``" + uncommitted changes to the sources"`` when a ``.py`` file of
    ``edgehdr/`` or ``export/`` differs from that commit or is not in it (the weights then came from code no commit
    holds); ``"unknown (not a git checkout)"`` for an installed package or when git is absent. ``repository``:
    the checkout to ask (default: the one holding this package), which must be the top of its own git tree.
    """
    repository = Path(repository).resolve()

    def git(*words: str) -> str:
        return subprocess.run(["git", "-C", str(repository), *words], capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()

    try:
        if Path(git("rev-parse", "--show-toplevel")).resolve() != repository:  # e.g. site-packages in a project
            return "unknown (not a git checkout)"
        commit = git("rev-parse", "HEAD")
        changed = git("status", "--porcelain", "--", "edgehdr/*.py", "export/*.py")
    except (OSError, subprocess.SubprocessError):
        return "unknown (not a git checkout)"
    return f"git {commit}" + (" + uncommitted changes to the sources" if changed else "")


CHANGED_DURING_TRAINING = "the checkout changed during the training"
"""Marks an ``edgehdr.source`` whose sources moved between a recipe's start and its export (``training_source``)."""


def training_source(started: str, repository: str | Path = _REPOSITORY) -> str:
    """``edgehdr.source`` for weights a recipe trained from the sources at ``started``.

    ``started`` is ``source_revision(repository)`` taken when the recipe began. A training runs for minutes to
    hours; if the checkout moved meanwhile (a commit, a checkout, an edit), the revision at export would name
    code the weights did not come from, and modules imported later in the run may have come from either, so
    the value is then ``started`` with ``"+ <CHANGED_DURING_TRAINING> (now ...)"`` after it, which
    ``recorded_commit`` refuses like uncommitted changes.
    """
    now = source_revision(repository)
    if now == started:
        return started
    return f"{started} + {CHANGED_DURING_TRAINING} (now {now})"


def recorded_command(model_path: str | Path) -> tuple[str, list[str], dict[str, str]]:
    """The recipe module, its arguments and all metadata properties recorded in ``model_path``.

    Raises ``ValueError`` naming the file when it has no ``edgehdr.recipe`` property or the recipe is not
    one of ``RECIPES``, or when the arguments already name ``--work`` or ``-o`` (this tool sets both).
    """
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    props = {p.key: p.value for p in model.metadata_props}
    recipe = props.get("edgehdr.recipe")
    if not recipe:
        raise ValueError(f"{model_path}: no 'edgehdr.recipe' metadata property (not made by a recipe of this "
                         "package, or made before recipes recorded their command)")
    words = shlex.split(recipe)
    if not words or words[0] not in RECIPES:
        raise ValueError(f"{model_path}: edgehdr.recipe {recipe!r} does not start with one of {', '.join(RECIPES)}")
    if any(w in ("--work", "-o", "--out") or w.startswith(("--work=", "--out=")) for w in words[1:]):
        raise ValueError(f"{model_path}: edgehdr.recipe {recipe!r} names its own --work or -o; this tool sets both")
    return words[0], words[1:], props


def _float_initializers(path: str | Path) -> dict[str, np.ndarray]:
    import onnx
    from onnx import numpy_helper

    arrays = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    return {name: a.astype(np.float64) for name, a in arrays.items() if a.dtype.kind == "f"}


def weight_difference(a_path: str | Path, b_path: str | Path) -> tuple[float, str]:
    """Largest absolute difference between the float weights of two ONNX files, and how they were matched.

    By name when both files hold the same names at the same shapes ("by name"); otherwise the sorted
    values of all float initialisers ("as sorted values": equal for weights that a re-export only split
    or fused differently). Returns ``inf`` when even the number of weights differs.
    """
    a, b = _float_initializers(a_path), _float_initializers(b_path)
    if a.keys() == b.keys() and all(a[k].shape == b[k].shape for k in a):
        diff = max((float(np.max(np.abs(a[k] - b[k]), initial=0.0)) for k in a), default=0.0)
        return diff, "by name"
    va = np.sort(np.concatenate([v.ravel() for v in a.values()])) if a else np.zeros(0)
    vb = np.sort(np.concatenate([v.ravel() for v in b.values()])) if b else np.zeros(0)
    if va.shape != vb.shape:
        return float("inf"), f"different numbers of weights ({va.size} against {vb.size})"
    return float(np.max(np.abs(va - vb), initial=0.0)), "as sorted values"


def recorded_commit(revision: str, model_path: str | Path) -> str:
    """The commit of an ``edgehdr.source`` value (``"git <40 hex digits>..."``).

    Raises ``ValueError`` naming the file when the value names no commit, records uncommitted changes, or records
    that the checkout changed during the training (``training_source``): no commit holds the code the weights came
    from.
    """
    match = re.match(r"git ([0-9a-f]{40})\b(.*)$", revision)
    if match is None:
        raise ValueError(f"{model_path}: edgehdr.source {revision!r} names no git commit")
    if CHANGED_DURING_TRAINING in match.group(2):
        raise ValueError(f"{model_path}: edgehdr.source {revision!r}: the sources moved while it trained, so no "
                         "one commit is known to hold the code the weights came from")
    if "uncommitted" in match.group(2):
        raise ValueError(f"{model_path}: edgehdr.source {revision!r}: made from uncommitted changes, which no "
                         "commit holds")
    return match.group(1)


def export_commit(commit: str, into: Path, repository: str | Path = _REPOSITORY) -> Path:
    """The tree of ``commit`` of the checkout at ``repository``, written below ``into`` (``git archive``).

    Raises ``ValueError`` when git cannot (not a checkout, no such commit)."""
    tree = Path(into) / f"source-{commit[:12]}"
    tree.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(repository), "archive", "--format=tar", commit], capture_output=True,
                             timeout=300)
    if archive.returncode != 0:
        raise ValueError(f"git archive {commit} in {repository}: {archive.stderr.decode(errors='replace').strip()}")
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        if hasattr(tarfile, "data_filter"):  # Python 3.10.12+ / 3.11.4+: refuse links and paths out of the tree
            tar.extractall(tree, filter="data")
        else:  # pragma: no cover - an older 3.10 patch release; the archive is this repository's own commit
            tar.extractall(tree)
    return tree


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m edgehdr.models.training.reproduce",
                                description=__doc__.split("\n")[0])
    p.add_argument("model", type=Path,
                   help="an ONNX file made by one of the recipes (e.g. edgehdr/models/tmo_net.onnx)")
    p.add_argument("--work", type=Path, default=None,
                   help="work folder for the rerun (default: a new temporary folder, removed afterwards)")
    p.add_argument("--tolerance", type=float, default=0.0,
                   help="largest weight difference still counted as reproduced (default 0: the same values)")
    p.add_argument("--at-source", action="store_true",
                   help="run the command in the sources of the commit recorded in edgehdr.source instead of "
                        "today's (git archive of it in a temporary folder)")
    args = p.parse_args(argv)
    try:
        recipe, recipe_args, props = recorded_command(args.model)
        commit = recorded_commit(props.get("edgehdr.source", "(none)"), args.model) if args.at_source else None
    except (ValueError, OSError) as exc:
        print(f"reproduce: {exc}", file=sys.stderr)
        return 2
    with contextlib.ExitStack() as stack:  # a temporary folder only when no --work is given
        work = args.work if args.work is not None else Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="edgehdr-reproduce-")))
        work.mkdir(parents=True, exist_ok=True)
        out = work / args.model.name
        if out.resolve() == args.model.resolve():
            print(f"reproduce: --work {work} would write the rerun over {args.model}; give another folder",
                  file=sys.stderr)
            return 2
        command = [sys.executable, "-m", f"edgehdr.models.training.{recipe}", *recipe_args, "--work",
                   str(work.resolve()), "-o", str(out.resolve())]
        print(f"{args.model}: recorded {recipe} {' '.join(recipe_args)}", flush=True)
        print(f"  made from {props.get('edgehdr.source', 'an unrecorded source revision')}", flush=True)
        cwd, env = None, None
        if commit is not None:
            from edgehdr.synth.realistic import real_hdr_dir

            try:
                cwd = export_commit(commit, Path(stack.enter_context(
                    tempfile.TemporaryDirectory(prefix="edgehdr-source-"))))
            except (ValueError, OSError, subprocess.SubprocessError, tarfile.TarError) as exc:
                print(f"reproduce: the recorded sources cannot be written out: {exc}", file=sys.stderr)
                return 2
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(cwd), os.environ.get("PYTHONPATH")])),
                   "EDGEHDR_DATA": str(real_hdr_dir().resolve())}
            print(f"  running in the sources of {commit} ({cwd})", flush=True)
        run = subprocess.run(command, cwd=cwd, env=env)
        if run.returncode != 0 or not out.is_file():
            print(f"reproduce: the recorded command failed (exit {run.returncode}): {shlex.join(command)}",
                  file=sys.stderr)
            return 2
        diff, how = weight_difference(out, args.model)
    same = diff <= args.tolerance
    print(f"{args.model}: largest weight difference {diff:.3g} ({how}) -> "
          f"{'reproduced' if same else 'NOT reproduced'} (tolerance {args.tolerance:g})")
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
