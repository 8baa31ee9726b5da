"""The C99 controller library builds warning-free for a 32-bit MCU (Cortex-M0) and a 16-bit-int MCU (AVR).

``make portability`` compiles ``firmware_bridge/c/ehlink.c`` with ``-std=c99 -pedantic -Werror -Wall -Wextra
-Wconversion`` for both cross toolchains and the host; ``make avr-test`` runs the on-target tests on a simulated
ATmega2560, where ``int`` and ``size_t`` are 16 bits. The host tests (``make test``: shared vectors, fuzzing, the
negotiation and untouched-output cases, under ASan/UBSan) run in ``tests/test_bridge_protocol.py``.
"""

import shutil
import subprocess
from pathlib import Path

import pytest

C_DIR = Path(__file__).resolve().parents[1] / "firmware_bridge" / "c"


def _require(*tools):
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not on PATH: install gcc-arm-none-eabi, libnewlib-arm-none-eabi, "
                    f"gcc-avr, avr-libc (and simavr for the on-target run) to check the cross builds")


def _make(target, build, timeout=300):
    return subprocess.run(["make", "-s", target, f"BUILD={build}"], check=False, cwd=C_DIR, capture_output=True,
                          text=True, timeout=timeout)


def test_library_compiles_clean_for_cortex_m0_avr_and_host(tmp_path):
    _require("make", "arm-none-eabi-gcc", "arm-none-eabi-size", "avr-gcc", "avr-size")
    result = _make("portability", tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # One `size` table per target object, each with a non-empty text segment.
    for target in ("m0", "avr"):
        line = next(line for line in result.stdout.splitlines() if line.rstrip().endswith(f"{target}/ehlink.o"))
        assert int(line.split()[0]) > 0, line
    assert not list(C_DIR.glob("build")), "the build must go to BUILD, not into the source tree"


def test_on_target_tests_pass_where_int_is_16_bits(tmp_path):
    _require("make", "avr-gcc", "simavr")
    result = _make("avr-test", tmp_path, timeout=200)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "int of 16 bits" in result.stdout and "checks, 0 failures" in result.stdout, result.stdout[-2000:]
