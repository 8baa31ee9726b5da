"""The package imports without optional extras and exposes its console script."""

import subprocess
import sys


def test_imports_without_optional_extras():
    code = (
        "import sys, edgehdr, export, firmware_bridge, edgehdr.io, edgehdr.hdr, edgehdr.synth, "
        "edgehdr.tonemap, edgehdr.quality, edgehdr.cli, firmware_bridge.link, firmware_bridge.simulator\n"
        "heavy = [m for m in ('tensorrt', 'pycuda', 'torch', 'picamera2', 'serial', 'spidev') if m in sys.modules]\n"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", f"optional modules imported eagerly: {out.stdout}"


def test_console_script_reports_version():
    from edgehdr import __version__

    out = subprocess.run([sys.executable, "-m", "edgehdr.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0
    assert out.stdout.strip() == f"edgehdr {__version__}"
