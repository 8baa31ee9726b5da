"""``import edgehdr`` bounds GNU OpenMP's spin-wait before numba can load libgomp, unless the user chose one."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _spin_seen_by_a_fresh_interpreter(**env: str) -> str:
    clean = {k: v for k, v in os.environ.items() if k not in ("GOMP_SPINCOUNT", "OMP_WAIT_POLICY")}
    code = ("import os, edgehdr, numba, numpy as np\n"
            "f = numba.njit(parallel=True)(lambda a: a + 1)\n"
            "f(np.zeros(4))\n"  # a parallel launch: libgomp (where numba's layer is OpenMP) has read its settings
            "print(os.environ.get('GOMP_SPINCOUNT', 'unset'))\n")
    done = subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.mark.parametrize(("env", "expected"), [({}, "10000"), ({"GOMP_SPINCOUNT": "5"}, "5"),
                                               ({"OMP_WAIT_POLICY": "PASSIVE"}, "unset"),
                                               ({"OMP_WAIT_POLICY": "active"}, "unset")])
def test_the_spin_count_is_bounded_unless_the_user_chose(env, expected):
    assert _spin_seen_by_a_fresh_interpreter(**env) == expected
