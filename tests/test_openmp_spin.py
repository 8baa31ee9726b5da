"""``import edgehdr`` bounds GNU OpenMP's spin-wait before numba can load libgomp, unless the user chose one.

What libgomp itself read comes from its ``OMP_DISPLAY_ENV=verbose`` report, printed when numba's OpenMP layer loads
it; where numba runs on another threading layer, the environment is all there is to check."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest


def _run(**env: str) -> tuple[str, str, str]:
    """A fresh interpreter that imports edgehdr and launches a parallel kernel: (the environment's GOMP_SPINCOUNT,
    numba's threading layer, the spin count libgomp reports or '')."""
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY", "OMP_DISPLAY_ENV")}
    code = ("import os, edgehdr, numba, numpy as np\n"
            "f = numba.njit(parallel=True)(lambda a: a + 1)\n"
            "f(np.zeros(4))\n"
            "print(os.environ.get('GOMP_SPINCOUNT', 'unset'), numba.threading_layer())\n")
    done = subprocess.run([sys.executable, "-c", code], env={**clean, **env, "OMP_DISPLAY_ENV": "verbose"},
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    seen, layer = done.stdout.strip().splitlines()[-1].split()
    read = re.search(r"GOMP_SPINCOUNT = '(\d+)'", done.stderr)
    return seen, layer, read.group(1) if read else ""


@pytest.mark.parametrize(("env", "expected", "libgomp_reads"),
                         [({}, "10000", "10000"), ({"GOMP_SPINCOUNT": "5"}, "5", "5"),
                          ({"OMP_WAIT_POLICY": "PASSIVE"}, "unset", "0"),
                          ({"OMP_WAIT_POLICY": "active"}, "unset", "30000000000")])
def test_the_spin_count_is_bounded_unless_the_user_chose(env, expected, libgomp_reads):
    seen, layer, read = _run(**env)
    assert seen == expected
    if layer == "omp":  # libgomp's own view: the value took effect (a wait policy keeps libgomp's default for it)
        assert read == libgomp_reads
