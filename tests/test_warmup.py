"""``warm_up`` compiles every numba kernel the pipeline runs, so no frame waits for the compiler."""

from __future__ import annotations

import importlib
import pkgutil

import edgehdr


def _dispatchers() -> dict:
    from numba.core.registry import CPUDispatcher

    found = {}
    for info in pkgutil.walk_packages(edgehdr.__path__, "edgehdr."):
        if ".training" in info.name or info.name.endswith("__main__"):
            continue
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if isinstance(value, CPUDispatcher):
                found[f"{info.name}.{name}"] = value
    return found


def test_no_kernel_compiles_after_warm_up(tmp_path):
    from edgehdr.demo import run_demo
    from edgehdr.warmup import warm_up

    warm_up()
    before = {name: len(d.signatures) for name, d in _dispatchers().items()}
    run_demo(tmp_path / "demo", seconds=2.0, quiet=True, width=640, height=360)
    after = {name: len(d.signatures) for name, d in _dispatchers().items()}
    late = sorted(name for name in after if after[name] > before.get(name, 0))
    assert not late, f"compiled during frames (add them to edgehdr.warmup.warm_up): {late}"
