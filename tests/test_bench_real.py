"""``edgehdr bench --real``: the reprojection error it reports, checked against known truth."""

from __future__ import annotations

import numpy as np

from edgehdr.bench.real import real_stack_report, reprojection_error
from edgehdr.hdr import standard_response
from edgehdr.hdr.merge import merge_debevec
from edgehdr.io import write_ldr_image, write_text_atomic
from edgehdr.synth import CameraModel, capture_bracket, make_scene, suggest_exposures


def test_reprojection_error_is_small_with_the_true_response_and_grows_with_a_wrong_one():
    scene = make_scene(5, 180, 240)
    shot = capture_bracket(scene, suggest_exposures(scene.radiance, 3), camera=CameraModel(), seed=5, noise=False)
    t = shot.bracket.relative_exposure
    true = shot.response
    radiance = merge_debevec(shot.bracket, response=true)
    right = reprojection_error(shot.bracket.frames, t, radiance, true)
    assert right < 1.0  # quantisation only: half a code on average
    wrong = standard_response("gamma2.2")
    radiance_wrong = merge_debevec(shot.bracket, response=wrong)
    assert reprojection_error(shot.bracket.frames, t, radiance_wrong, wrong) > right + 0.5
    # The fitted scale makes it independent of the radiance's units.
    assert abs(reprojection_error(shot.bracket.frames, t, radiance * 37.0, true) - right) < 1e-6


def test_real_stack_report_compares_both_tools_on_a_stack_folder(tmp_path):
    scene = make_scene(2, 160, 224)
    shot = capture_bracket(scene, suggest_exposures(scene.radiance, 3), seed=2)
    lines = []
    for i, (frame, exposure) in enumerate(zip(shot.bracket.frames, shot.bracket.exposure_s)):
        write_ldr_image(tmp_path / f"f{i}.png", frame)
        lines.append(f"f{i}.png {1 / exposure:.9g}")
    write_text_atomic(tmp_path / "list.txt", "\n".join(lines) + "\n")
    row = real_stack_report(tmp_path)
    assert row["frames"] == 3 and row["size"] == [224, 160]
    for tool in ("edgehdr", "opencv"):
        assert 0 < row[tool]["reprojection_codes"] < 5 and row[tool]["calibrate_ms"] > 0
    assert all(m["dx_px"] == 0 for m in row["edgehdr"]["motions"]), "a tripod stack stays put"
    assert np.isfinite(row["edgehdr"]["merge_ms"])


def test_an_all_black_stack_is_refused_by_name_without_numpy_warnings(tmp_path, capsys):
    import warnings

    import cv2

    from edgehdr.cli import main

    for i in range(3):
        cv2.imwrite(str(tmp_path / f"f{i}.png"), np.zeros((32, 32, 3), np.uint8))
    (tmp_path / "list.txt").write_text("f0.png 0.01\nf1.png 0.04\nf2.png 0.16\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # NumPy's "mean of empty slice" came before the error
        assert main(["bench", "--real", str(tmp_path)]) == 2
    assert capsys.readouterr().err.strip() == (
        f"edgehdr bench: error: {tmp_path}: no calibration sample changes code across the exposures: every frame is "
        "clipped, black, or of a uniform scene there; nothing fixes a response")
