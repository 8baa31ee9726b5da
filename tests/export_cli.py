"""``edgehdr-export`` run in-process for the export tests (a helper module, not a test module)."""

from __future__ import annotations

from typing import Any

from export.cli import main as export_main


def cli(capsys: Any, *argv: object) -> tuple[int | str | None, str, str]:
    """``edgehdr-export ARGV`` in-process: (exit status, stdout, stderr); argparse's exit becomes the status."""
    try:
        rc: int | str | None = export_main([str(a) for a in argv])
    except SystemExit as exc:
        rc = exc.code
    out, err = capsys.readouterr()
    return rc, out, err
