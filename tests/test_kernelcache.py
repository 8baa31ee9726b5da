"""``edgehdr.kernelcache``: the cached kernels that inline another module's numba functions go when that module
changes, and only those; the module lists cover every such import in the package."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "edgehdr"


def _numba_functions(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and any("njit" in ast.unparse(d) or "numba.jit" in ast.unparse(d)
                                                     for d in node.decorator_list):
            names.add(node.name)
    return names


def test_every_numba_function_imported_across_modules_is_declared():
    from edgehdr.kernelcache import DEPENDENTS, PROVIDERS

    modules = {p.relative_to(PACKAGE).as_posix(): ast.parse(p.read_text()) for p in PACKAGE.rglob("*.py")}
    jitted = {name: _numba_functions(tree) for name, tree in modules.items()}
    found = set()
    for importer, tree in modules.items():
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("edgehdr."):
                provider = node.module.removeprefix("edgehdr.").replace(".", "/") + ".py"
                if any(alias.name in jitted.get(provider, ()) for alias in node.names) and importer != "warmup.py":
                    found.add((provider, importer))  # the warm-up calls kernels; it defines none
    assert found, "the scan found no cross-module numba import: it is broken"
    missing = sorted((p, i) for p, i in found if p not in PROVIDERS or i not in DEPENDENTS)
    assert not missing, f"add to edgehdr.kernelcache.PROVIDERS / DEPENDENTS: {missing}"


def _module_constants(tree: ast.Module) -> set[str]:
    names = set()
    for node in tree.body:
        targets = node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(
            node, ast.AnnAssign) else []
        for target in targets:
            for leaf in ast.walk(target):
                if isinstance(leaf, ast.Name):
                    names.add(leaf.id)
    return names


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def test_every_constant_a_kernel_reads_from_another_module_is_declared():
    """numba freezes a global's value into the compiled kernel: a kernel that reads another module's constant,
    directly or through a constant of its own computed from it (the display refinement's PU21 range and its
    log2), kept running the old value from the cache after that module changed (the function scan missed it)."""
    from edgehdr.kernelcache import DEPENDENTS, PROVIDERS

    modules = {p.relative_to(PACKAGE).as_posix(): ast.parse(p.read_text()) for p in PACKAGE.rglob("*.py")}
    constants = {name: _module_constants(tree) for name, tree in modules.items()}
    found = set()
    for importer, tree in modules.items():
        kernels = [node for node in tree.body if isinstance(node, ast.FunctionDef)
                   and node.name in _numba_functions(tree)]
        if not kernels:
            continue
        read = set().union(*(_names(k) for k in kernels))
        imported: dict[str, str] = {}  # a constant's local name -> the module it comes from
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("edgehdr."):
                provider = node.module.removeprefix("edgehdr.").replace(".", "/") + ".py"
                for alias in node.names:
                    if alias.name in constants.get(provider, ()):
                        imported[alias.asname or alias.name] = provider
        sources = {name: {provider} for name, provider in imported.items()}
        changed = True
        while changed:  # module-level values computed from imported constants carry their providers
            changed = False
            for node in tree.body:
                if isinstance(node, (ast.Assign, ast.AnnAssign)) and node.value is not None:
                    providers = set().union(*(sources.get(n, set()) for n in _names(node.value)))
                    for target in _module_constants(ast.Module(body=[node], type_ignores=[])):
                        if providers - sources.get(target, set()):
                            sources[target] = sources.get(target, set()) | providers
                            changed = True
        for name in read:
            for provider in sources.get(name, ()):
                found.add((provider, importer))
    assert ("quality/pu21.py", "dimming/refine.py") in found, "the scan missed the known case: it is broken"
    missing = sorted((p, i) for p, i in found if p not in PROVIDERS or i not in DEPENDENTS)
    assert not missing, f"add to edgehdr.kernelcache.PROVIDERS / DEPENDENTS: {missing}"


def test_a_changed_helper_drops_its_dependents_cached_kernels_and_no_others(tmp_path):
    """In a fresh process with its own numba cache: kernels of a dependent (the LCD pass) and of an unrelated module
    (the synthetic camera) are cached; a changed fingerprint drops the dependent's files only, once."""
    code = """
import json, numpy as np
from pathlib import Path
from edgehdr import kernelcache
from edgehdr.dimming import LedLayout, lcd_compensation
from edgehdr.warmup import _camera_kernel
layout = LedLayout(rows=2, cols=2, width_px=16, height_px=16)
lcd_compensation(np.ones((16, 16, 3), np.float32), np.ones((16, 16), np.float32), layout)
_camera_kernel()
cache = Path(__import__("os").environ["NUMBA_CACHE_DIR"])
names = lambda: sorted(p.name for p in cache.rglob("*.nb[ic]"))
before = names()
marker = next(cache.rglob(kernelcache._MARKER))
unchanged = kernelcache.drop_stale_dependents(force=True)
marker.write_text("an older helper\\n")
dropped = kernelcache.drop_stale_dependents(force=True)
print(json.dumps({"before": before, "after": names(), "unchanged": unchanged, "dropped": dropped,
                  "again": kernelcache.drop_stale_dependents(force=True),
                  "marker": marker.read_text().strip(), "fingerprint": kernelcache._fingerprint()}))
"""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    compensation = [n for n in result["before"] if n.startswith("compensation.")]
    camera = [n for n in result["before"] if n.startswith("synthetic.")]
    assert compensation and camera, result["before"]
    assert result["unchanged"] == 0  # the fingerprint stored at import time still matches
    assert result["dropped"] >= len(compensation)
    assert not any(n.startswith("compensation.") for n in result["after"])
    assert set(camera) <= set(result["after"])  # an unrelated module's kernels stay
    assert result["again"] == 0 and result["marker"] == result["fingerprint"]


def test_kernels_dropped_on_import_compile_in_the_warm_up_workers(tmp_path):
    """A process that finds the helpers changed (a stale fingerprint) drops the dependents' kernels as it imports;
    its warm-up then counts the cache as cold although the camera probe is cached, so the workers compile the
    dropped kernels and this process loads them (no compiler in it)."""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}
    fill = """
from pathlib import Path
from edgehdr import kernelcache
from edgehdr.warmup import warm_up
warm_up(jobs=["camera", "dimming"], workers=0)
cache = Path(__import__("os").environ["NUMBA_CACHE_DIR"])
next(cache.rglob(kernelcache._MARKER)).write_text("an older helper\\n")
"""
    out = subprocess.run([sys.executable, "-c", fill], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    check = """
import json
from edgehdr import kernelcache
from edgehdr.warmup import _camera_cache_cold, warm_up
import edgehdr.dimming.compensation as cm
dropped = kernelcache.dropped_files
probe_cold = _camera_cache_cold()
warm_up(jobs=["camera", "dimming"], workers=2)
s = cm._compensation_kernel.stats
print(json.dumps({"dropped": dropped, "probe_cold": probe_cold, "misses": sum(s.cache_misses.values()),
                  "hits": sum(s.cache_hits.values())}))
"""
    out = subprocess.run([sys.executable, "-c", check], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["dropped"] > 0 and result["probe_cold"] is False, result
    assert result["misses"] == 0 and result["hits"] >= 1, result


def test_a_process_with_other_helpers_or_numpy_neither_reads_nor_replaces_this_ones_kernels(tmp_path):
    """The race dropping alone left: a process that imported other helper sources (a tree changed under a running
    daemon) writes its dependent kernels under its own tag, so a process with today's helpers compiles its own
    instead of loading those, and the older process finds its own again. The same for numpy's version, which
    numba's own cache key lacks, and for every kernel of the package (the synthetic camera's too)."""
    code = """
import json, sys
import numpy as np
from edgehdr import kernelcache
helpers, numpy_tag = sys.argv[1:3]
if helpers != "today":
    kernelcache._process_tag = helpers  # as if its helpers' sources had been others when it imported them
if numpy_tag != "today":
    kernelcache._numpy_tag = numpy_tag  # as if another numpy ran it
from edgehdr.dimming import LedLayout, lcd_compensation
import edgehdr.dimming.compensation as cm
from edgehdr.warmup import _camera_kernel
layout = LedLayout(rows=2, cols=2, width_px=16, height_px=16)
lcd_compensation(np.ones((16, 16, 3), np.float32), np.ones((16, 16), np.float32), layout)
stats = [cm._compensation_kernel.stats, _camera_kernel().stats]
print(json.dumps({"tag": kernelcache.process_tag(), "np": kernelcache.numpy_tag(),
                  "installed": kernelcache.tagging_installed,
                  "misses": [sum(s.cache_misses.values()) for s in stats],
                  "hits": [sum(s.cache_hits.values()) for s in stats]}))
"""
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path)}

    def run(helpers="today", numpy_tag="today"):
        out = subprocess.run([sys.executable, "-c", code, helpers, numpy_tag], env=env, capture_output=True,
                             text=True, timeout=600)
        assert out.returncode == 0, out.stderr
        return json.loads(out.stdout.strip().splitlines()[-1])

    older = run("0123456789")
    assert older["installed"] and older["misses"][0] >= 1 and older["hits"][0] == 0
    today = run()
    assert len(today["tag"]) == 10 and today["tag"] != "0123456789" and today["np"].startswith("np")
    assert today["misses"][0] >= 1 and today["hits"][0] == 0, today  # the older process's kernel is not loaded
    assert today["hits"][1] >= 1  # the camera inlines no helper: the older process's file serves
    again = run("0123456789")
    assert again["misses"][0] == 0 and again["hits"][0] >= 1, again  # nor replaced: the older process finds its own
    other_numpy = run(numpy_tag="np19")
    assert min(other_numpy["misses"]) >= 1 and other_numpy["hits"] == [0, 0], other_numpy  # neither is loaded
    assert run()["hits"][0] >= 1 and run(numpy_tag="np19")["misses"] == [0, 0]
    names = sorted(p.name for p in tmp_path.rglob("compensation.*.nbi"))
    assert len(names) == 3, names
    assert {n.split("-", 2)[2].split(".py")[0] for n in names} == {
        f"{today['np']}-h0123456789", f"{today['np']}-h{today['tag']}", f"np19-h{today['tag']}"}, names
    camera = sorted(p.name for p in tmp_path.rglob("synthetic._expose-*.nbi"))
    assert [n.split("-")[2].split(".py")[0] for n in camera] == sorted([today["np"], "np19"]), camera
    from edgehdr.kernelcache import DEPENDENTS

    assert "dimming/compensation.py" in DEPENDENTS and "camera/synthetic.py" not in DEPENDENTS


def test_every_module_with_cached_kernels_loads_the_cache_naming_first():
    """numba picks a kernel's cache file name when the kernel is defined; ``edgehdr.kernelcache`` adds numpy's version
    (and the dependents' helper fingerprint) only once it is imported. A module whose kernels could be defined before
    it (imported first in some process) got names without the tag there and with it elsewhere: the warm-up's workers
    then compiled kernels the daemon did not find (6 of the aligner's kernels compiled again in a cold demo). Every
    module with cached kernels imports it, or a helper module that does, above its first kernel."""
    from edgehdr.kernelcache import PROVIDERS

    loaders = {"edgehdr.kernelcache"} | {"edgehdr." + p[:-3].replace("/", ".") for p in PROVIDERS}
    missing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text()
        if "cache=True" not in source:
            continue
        tree = ast.parse(source)
        module = "edgehdr." + path.relative_to(PACKAGE).with_suffix("").as_posix().replace("/", ".")
        imported: set[str] = set()
        for node in tree.body:
            if isinstance(node, ast.ImportFrom) and node.module:
                imported |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                imported |= {a.name for a in node.names}
            elif isinstance(node, ast.FunctionDef) and any("cache=True" in ast.unparse(d) for d in node.decorator_list):
                break
        if module != "edgehdr.kernelcache" and not imported & loaders:
            missing.append(module)
    assert not missing, f"import edgehdr.kernelcache above the first cached kernel in: {missing}"
