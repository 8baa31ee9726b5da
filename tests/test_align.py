"""Alignment against the synthetic camera's exact motion."""

from __future__ import annotations

import numpy as np
import pytest

from edgehdr.hdr.align import align_bracket, align_homography, align_mtb
from edgehdr.synth import camera_matrix, capture_bracket, make_scene, suggest_exposures


def _mean_corner_error(estimate, pose, width, height):
    truth = np.vstack([camera_matrix(width, height, pose[:2], pose[2]), [0, 0, 1]])
    ys, xs = np.mgrid[0:height:20, 0:width:20]
    pts = np.stack([xs.ravel(), ys.ravel(), np.ones(xs.size)])
    a, b = estimate @ pts, truth @ pts
    return float(np.mean(np.hypot(*(a[:2] / a[2] - b[:2] / b[2]))))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_mtb_recovers_integer_shifts_exactly(seed):
    scene = make_scene(seed, 240, 320)
    poses = [(5.0, -3.0, 0.0), (0.0, 0.0, 0.0), (-7.0, 4.0, 0.0)]
    shot = capture_bracket(scene, suggest_exposures(scene.radiance, 3), seed=seed, camera_poses=poses)
    aligned, motions = align_mtb(shot.bracket.frames, reference_index=1,
                                 exposures=shot.bracket.relative_exposure, response=shot.response)
    assert [(m.dx_px, m.dy_px) for m in motions] == [p[:2] for p in poses]
    # After alignment the short frame agrees with the reference in well-exposed regions.
    before = np.abs(shot.bracket.frames[0].astype(int) - shot.bracket.frames[1]).mean()
    inner = (slice(10, -10), slice(10, -10))
    ref = shot.bracket.frames[1][inner].astype(float)
    corr_before = np.corrcoef(shot.bracket.frames[0][inner].ravel(), ref.ravel())[0, 1]
    corr_after = np.corrcoef(aligned[0][inner].ravel(), ref.ravel())[0, 1]
    assert corr_after > corr_before and before > 0


def test_homography_recovers_handheld_rotation():
    w, h = 640, 360
    poses = [(6.0, -3.0, 1.5), (0.0, 0.0, 0.0), (-7.0, 4.0, -1.0)]
    errors = []
    for seed in range(4):
        scene = make_scene(seed, h, w)
        shot = capture_bracket(scene, suggest_exposures(scene.radiance, 3), seed=seed, camera_poses=poses)
        _, motions = align_homography(shot.bracket.frames, reference_index=1,
                                      exposures=shot.bracket.relative_exposure, response=shot.response)
        assert all(m.ok for m in motions)
        errors += [_mean_corner_error(m.matrix, p, w, h) for m, p in zip(motions, poses) if p != (0.0, 0.0, 0.0)]
        # Reported rotation is the content rotation; OpenCV's angle has the opposite sign (y points down).
        assert motions[0].rotation_deg == pytest.approx(-1.5, abs=0.5)
        assert motions[2].rotation_deg == pytest.approx(1.0, abs=0.5)
    # Sub-pixel on average; the weakly textured indoor scenes are the worst, near one pixel.
    assert np.mean(errors) < 0.8 and max(errors) < 1.5, errors


def test_mtb_without_response_on_a_two_stop_bracket():
    scene = make_scene(4, 240, 320)
    poses = [(-6.0, 2.0, 0.0), (0.0, 0.0, 0.0), (3.0, 5.0, 0.0)]
    shot = capture_bracket(scene, suggest_exposures(scene.radiance, 3, 2.0), seed=4, camera_poses=poses)
    _, motions = align_mtb(shot.bracket.frames, reference_index=1)
    assert [(m.dx_px, m.dy_px) for m in motions] == [p[:2] for p in poses]


def test_homography_without_response_uses_equalisation():
    w, h = 640, 360
    scene = make_scene(1, h, w)
    poses = [(4.0, 2.0, 1.0), (0.0, 0.0, 0.0), (-3.0, -2.0, -0.5)]
    shot = capture_bracket(scene, suggest_exposures(scene.radiance, 3, 2.0), seed=1, camera_poses=poses)
    _, motions = align_homography(shot.bracket.frames, reference_index=1)
    for motion, pose in zip(motions, poses):
        assert _mean_corner_error(motion.matrix, pose, w, h) < 1.5


def test_featureless_frames_are_reported_not_warped():
    flat = np.full((3, 64, 64, 3), 128, np.uint8)
    aligned, motions = align_homography(flat, reference_index=1)
    assert [m.ok for m in motions] == [False, True, False]
    np.testing.assert_array_equal(aligned, flat)


def test_align_bracket_records_motion_and_rejects_unknown_method(shot_factory):
    shot = shot_factory(0, 96, 128)
    out, motions = align_bracket(shot.bracket, "mtb")
    assert len(out.extra["motions"]) == 3 and all(m["method"] == "mtb" for m in out.extra["motions"])
    with pytest.raises(ValueError, match="unknown alignment 'sift'"):
        align_bracket(shot.bracket, "sift")


def test_auto_leaves_tripod_stacks_alone_and_registers_handheld_ones():
    """Issue target: zero motion on >= 95 % of tripod scenes; hand-held residual <= 0.5 px (mean corner error).
    Here 12 scenes (the bench runs 40: 40/40 zero, mean 0.25 px)."""
    from edgehdr.hdr.align import align_auto
    from edgehdr.synth import random_camera_motion

    w, h = 480, 320
    zero, errors = 0, []
    for seed in range(12):
        scene = make_scene(seed, h, w)
        exposures = suggest_exposures(scene.radiance, 3)
        shot = capture_bracket(scene, exposures, seed=seed)
        aligned, motions = align_auto(shot.bracket.frames, reference_index=1,
                                      exposures=shot.bracket.relative_exposure, response=shot.response)
        if all(m.method == "auto" for m in motions):
            zero += 1
            np.testing.assert_array_equal(aligned, shot.bracket.frames)
        poses = random_camera_motion(3, max_shift_px=6, max_rotation_deg=1.0, seed=seed, reference_index=1)
        shot = capture_bracket(scene, exposures, seed=seed, camera_poses=poses)
        _, motions = align_auto(shot.bracket.frames, reference_index=1,
                                exposures=shot.bracket.relative_exposure, response=shot.response)
        for m, pose in zip(motions, poses):
            if pose != (0.0, 0.0, 0.0):
                assert m.method.startswith("auto:") and m.residual_ratio < 0.9 and 0 < m.confidence <= 1
                errors.append(_mean_corner_error(m.matrix, pose, w, h))
    assert zero >= 12 * 0.95
    assert np.mean(errors) <= 0.5 and max(errors) < 1.5, errors


def test_auto_invents_no_motion_on_a_nearly_black_frame():
    from edgehdr.hdr.align import align_auto

    scene = make_scene(3, 240, 320)
    shot = capture_bracket(scene, suggest_exposures(scene.radiance, 3), seed=3)
    frames = shot.bracket.frames.copy()
    frames[0] = np.minimum(frames[0], 4)  # all but black: nothing to register on
    aligned, motions = align_auto(frames, reference_index=1, exposures=shot.bracket.relative_exposure,
                                  response=shot.response)
    assert motions[0].method == "auto" and motions[0].confidence < 0.05
    np.testing.assert_array_equal(aligned[0], frames[0])
