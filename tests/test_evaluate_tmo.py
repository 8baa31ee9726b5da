"""``evaluate_tmo``'s command line: ``--json`` writes the figures it printed, with ``--real-only`` too."""

from __future__ import annotations

import json

import numpy as np

from edgehdr.io import write_radiance
from edgehdr.models.training.evaluate_tmo import main


def test_real_only_writes_the_json_it_was_asked_for(tmp_path, monkeypatch, capsys):
    """``--real-only --json`` once printed the table and exited 0 without writing the file."""
    rng = np.random.default_rng(0)
    sky = np.exp(rng.normal(0.0, 2.0, (48, 64, 1))).astype(np.float32) * np.array([1.0, 0.8, 0.6], np.float32)
    write_radiance(tmp_path / "openexr_Tree.hdr", sky)  # a held-out name, a photograph of our own
    monkeypatch.setenv("EDGEHDR_DATA", str(tmp_path))
    out = tmp_path / "real.json"
    assert main(["--real-only", "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = json.loads(out.read_text())["real"]
    assert [r["photo"] for r in rows] == ["openexr_Tree"] and rows[0]["split"] == "held-out"
    for label in ("neural", "reinhard_local", "opencv_mantiuk"):
        assert f"{label:<16} {rows[0][label]['tmqi']:>6.3f}" in printed, label
