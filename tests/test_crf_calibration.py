"""Calibration internals and external responses: the fast Debevec solver against a dense least-squares reference,
sampling on large frames, OpenCV / text / pfstools response files, and the monotone projection of foreign curves."""

from __future__ import annotations

import itertools
import logging
from fractions import Fraction

import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgehdr.hdr import (
    CameraResponse,
    ResponseCurve,
    calibrate_debevec,
    merge_debevec,
    select_calibration_samples,
    standard_response,
    weight_lut,
)
from edgehdr.hdr.crf import RESPONSE_FILE_SUFFIXES, _pool_adjacent_violators
from edgehdr.synth import CameraModel, capture_bracket, make_scene, suggest_exposures


def _bracket(seed=0, height=48, width=64, n=3, curve="srgb", stops=2.0):
    scene = make_scene(seed, height, width)
    camera = CameraModel(response=ResponseCurve.parse(curve))
    shot = capture_bracket(scene, suggest_exposures(scene.radiance, n, stops), camera=camera, seed=seed)
    return shot.bracket.frames, shot.bracket.relative_exposure, shot.response


def _dense_debevec(z, log_t, weights, lam):
    """Debevec & Malik's gsolve.m as one dense least-squares problem in (g, ln E): eq. 3 plus the row g(128) = 0."""
    samples, n = z.shape
    levels = weights.size
    data = samples * n
    a = np.zeros((data + levels - 2 + 1, levels + samples))
    b = np.zeros(a.shape[0])
    rows = np.arange(data)
    wij = weights[z].reshape(-1)
    a[rows, z.reshape(-1)] = wij
    a[rows, levels + np.repeat(np.arange(samples), n)] = -wij
    b[:data] = wij * np.tile(log_t, samples)
    k = np.arange(1, levels - 1)
    smooth_rows = data + k - 1
    s = np.sqrt(lam) * weights[k]
    a[smooth_rows, k - 1] = s
    a[smooth_rows, k] = -2 * s
    a[smooth_rows, k + 1] = s
    a[-1, levels // 2] = 1.0
    return np.linalg.lstsq(a, b, rcond=None)[0][:levels]


def _as_inverse(g):
    inverse = np.exp(g - g.max(axis=-1, keepdims=True))
    inverse = np.maximum.accumulate(inverse, axis=-1)
    return inverse / inverse[..., -1:]


@pytest.mark.parametrize("channels", ["shared", "separate"])
def test_fast_solver_matches_dense_least_squares(channels):
    frames, times, _ = _bracket(seed=3)
    n_samples, smoothness = 150, 5000.0
    fast = calibrate_debevec(frames, times, n_samples=n_samples, smoothness=smoothness, channels=channels, seed=7)
    positions = select_calibration_samples(frames, n_samples, seed=7)
    flat = frames.reshape(frames.shape[0], -1, 3)
    z = [flat[:, positions[c], c].T.astype(np.int64) for c in range(3)]
    weights = np.maximum(weight_lut("triangle", 256).astype(np.float64), 1e-3)
    log_t = np.log(times)
    if channels == "shared":
        g = np.repeat(_dense_debevec(np.concatenate(z), log_t, weights, smoothness)[None], 3, axis=0)
    else:
        g = np.stack([_dense_debevec(zc, log_t, weights, smoothness) for zc in z])
    np.testing.assert_allclose(fast.inverse_lut, _as_inverse(g), rtol=1e-6, atol=1e-12)


def test_sampling_on_a_large_frame_reads_a_grid_and_keeps_its_quality():
    # 480 x 640 = 307 200 pixels: sampled on the 2^17-point grid.
    frames, times, truth = _bracket(seed=2, height=480, width=640, n=5, curve="gamma2.2", stops=1.5)
    positions = select_calibration_samples(frames, 2000, seed=1)
    assert positions.shape == (3, 2000)
    assert all(np.unique(p).size == 2000 for p in positions)
    assert positions.min() >= 0 and positions.max() < 480 * 640
    again = select_calibration_samples(list(frames), 2000, seed=1)
    np.testing.assert_array_equal(positions, again)  # a list of frames, and the same seed: the same draw
    assert not np.array_equal(positions, select_calibration_samples(frames, 2000, seed=2))
    estimate = calibrate_debevec(frames, times)
    codes = np.arange(10, 245)
    codes = codes[np.bincount(frames.ravel(), minlength=256)[codes] >= 20]
    d = np.log(estimate.inverse_lut[:, codes]) - np.log(truth.inverse_lut[:, codes])
    d -= d.mean(axis=1, keepdims=True)
    assert float(np.sqrt(np.mean(d**2))) < 0.04


def test_calibration_reads_non_contiguous_frames_like_the_stack():
    frames, times, _ = _bracket(seed=1, height=300, width=400)
    padded = np.zeros(frames.shape[:2] + (frames.shape[2] + 5, 3), np.uint8)
    padded[:, :, : frames.shape[2]] = frames
    views = list(padded[:, :, : frames.shape[2]])
    assert not views[0].flags.c_contiguous
    a = calibrate_debevec(frames, times, n_samples=500)
    b = calibrate_debevec(views, times, n_samples=500)
    np.testing.assert_array_equal(a.inverse_lut, b.inverse_lut)


# --- OpenCV ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 2])
def test_opencv_response_merges_to_opencv_radiance(seed, tmp_path):
    frames, times, _ = _bracket(seed=seed, height=120, width=160, n=4, curve="s-curve")
    frames = np.repeat(frames[..., 1:2], 3, axis=-1)  # grey: OpenCV's per-pixel weight (mean over channels) is ours
    times = times.astype(np.float32)
    cv_response = cv2.createCalibrateDebevec().process(list(frames), times)
    cv_radiance = cv2.createMergeDebevec().process(list(frames), times, cv_response)
    response = CameraResponse.from_opencv(cv_response)
    np.save(tmp_path / "response.npy", cv_response)
    loaded = CameraResponse.load(tmp_path / "response.npy")
    np.testing.assert_array_equal(loaded.inverse_lut, response.inverse_lut)
    ours = merge_debevec(frames, times, loaded, weighting="triangle")
    # Where no frame is black or clipped both merges weigh the same samples; OpenCV 4 adds 1 to its hat weights.
    measured = np.all((frames > 0) & (frames < 255), axis=(0, 3))
    d = np.abs(np.log(ours) - np.log(cv_radiance))[measured]
    assert np.median(d) < 1e-3 and np.quantile(d, 0.99) < 0.03, (np.median(d), np.quantile(d, 0.99))


def test_opencv_layout_round_trip_and_channel_order(tmp_path):
    lut = np.stack([np.linspace(0.01, 1, 256) ** p for p in (1.0, 2.0, 3.0)]).astype(np.float32)  # R, G, B
    response = CameraResponse(lut)
    cv_layout = response.to_opencv()
    assert cv_layout.shape == (256, 1, 3) and cv_layout.dtype == np.float32
    np.testing.assert_array_equal(cv_layout[:, 0, 0], lut[2])  # BGR: blue first
    np.testing.assert_array_equal(CameraResponse.from_opencv(cv_layout).inverse_lut, lut)
    np.testing.assert_array_equal(CameraResponse.from_opencv(cv_layout[:, 0, 1]).inverse_lut[0], lut[1])
    back = CameraResponse.load(response.save(tmp_path / "r.npy"))
    np.testing.assert_array_equal(back.inverse_lut, lut)
    with pytest.raises(ValueError, match=r"codes\.npy: an OpenCV response is \(K, 1, 3\)"):
        np.save(tmp_path / "codes.npy", np.zeros((256, 2)))
        CameraResponse.load(tmp_path / "codes.npy")


# --- text LUT and pfstools ------------------------------------------------------------------------------------


def test_text_lut_round_trip(tmp_path):
    response = standard_response("s-curve", bits=10)
    for suffix in (".txt", ".lut"):
        back = CameraResponse.load(response.save(tmp_path / f"r{suffix}"))
        np.testing.assert_array_equal(back.inverse_lut, response.inverse_lut)
        assert back.bits == 10 and back.meta["source"] == "text"


def test_text_lut_written_by_hand(tmp_path):
    codes = np.arange(256) / 255.0
    path = tmp_path / "grey.txt"
    path.write_text("# a grey inverse response\n\n" + "\n".join(f"{v:.9e}  # code {i}" for i, v in
                                                               enumerate(codes**2.2)) + "\n")
    grey = CameraResponse.load(path)
    np.testing.assert_allclose(grey.inverse_lut, np.repeat(codes[None] ** 2.2, 3, axis=0), rtol=1e-6, atol=1e-9)
    (tmp_path / "rgb.lut").write_text("\n".join(f"{v}\t{v * 0.9}  {v * 0.8}" for v in codes))
    rgb = CameraResponse.load(tmp_path / "rgb.lut")
    np.testing.assert_allclose(rgb.inverse_lut[:, 255], [1.0, 0.9, 0.8], rtol=1e-6)
    (tmp_path / "short.txt").write_text("\n".join(str(v) for v in codes[:200]))
    with pytest.raises(ValueError, match=r"short\.txt: inverse_lut needs 2\^bits entries per channel, got 200"):
        CameraResponse.load(tmp_path / "short.txt")
    (tmp_path / "ragged.txt").write_text("0 0 0\n1 1\n")
    with pytest.raises(ValueError, match=r"ragged\.txt: a text LUT has one row per code value of 1 or 3 numbers"):
        CameraResponse.load(tmp_path / "ragged.txt")
    (tmp_path / "words.txt").write_text("zero\none\ntwo\nthree\n")
    with pytest.raises(ValueError, match=r"words\.txt: not a table of numbers"):
        CameraResponse.load(tmp_path / "words.txt")


def _pfstools_block(label, curve):
    # As pfstools' responseSave (src/camera/responses.cpp) writes it: " %e %4d %e" = log10(I), code, I.
    lines = [f"# Camera response curve, channel {label}", "# data layout: log10(response) | camera output | response",
             f"# name: {label}", "# type: matrix", f"# rows: {curve.size}", "# columns: 3"]
    lines += [f" {np.log10(v) if v > 0 else -6.0:e} {m:4d} {v:e}" for m, v in enumerate(curve)]
    return "\n".join(lines) + "\n\n"


def test_pfstools_response_file_written_by_hand(tmp_path):
    codes = np.arange(256)
    # Robertson's normalisation in pfstools: I(mid) = 1; code 0 may hold 0 (pfstools writes log10 as -6 then).
    curves = {"IR": (codes / 128.0) ** 2.2, "IG": (codes / 128.0) ** 2.0, "IB": (codes / 128.0) ** 1.8}
    weights = "# Weighting function\n# data layout: weight | camera output\n# name: W\n# type: matrix\n" \
              "# rows: 256\n# columns: 2\n" + "".join(f" {min(m, 255 - m) / 127.0:e} {m:4d}\n" for m in codes) + "\n"
    path = tmp_path / "response.m"
    # Blocks in G, B, R order: channels go by their names, and the weighting block is skipped.
    path.write_text(_pfstools_block("IG", curves["IG"]) + _pfstools_block("IB", curves["IB"])
                    + _pfstools_block("IR", curves["IR"]) + weights)
    response = CameraResponse.load(path)
    expected = np.stack([curves["IR"], curves["IG"], curves["IB"]])
    np.testing.assert_allclose(response.inverse_lut, expected, rtol=2e-6, atol=1e-12)
    assert response.name == "response.m" and response.meta["source"] == "pfstools"
    # A pfstools file under .txt is recognised by its Octave headers.
    (tmp_path / "response.txt").write_text(path.read_text())
    np.testing.assert_array_equal(CameraResponse.load(tmp_path / "response.txt").inverse_lut, response.inverse_lut)
    # One block only: a grey (luminance) response.
    (tmp_path / "grey.m").write_text(_pfstools_block("IY", curves["IR"]))
    np.testing.assert_allclose(CameraResponse.load(tmp_path / "grey.m").inverse_lut[2], curves["IR"], rtol=2e-6)
    # Luminance HDR's one 7-column matrix: code | log10 R | R | log10 G | G | log10 B | B.
    header = ("# Camera response curve, channels Ir, Ig, Ib \n# data layout: camera output | log10(response Ir) | "
              "response Ir | log10(response Ig) | response Ig | log10(response Ib) | response Ib \n"
              "# type: matrix\n# rows: 256\n# columns: 7\n")
    rows = "".join(f" {m:4d}" + "".join(f" {np.log10(max(v, 1e-6)):15.9f} {v:15.9f}" for v in expected[:, m]) + " \n"
                   for m in codes)
    (tmp_path / "lhdr.m").write_text(header + rows)
    np.testing.assert_allclose(CameraResponse.load(tmp_path / "lhdr.m").inverse_lut, expected, rtol=1e-6, atol=1e-9)


def test_pfstools_round_trip_and_errors(tmp_path):
    response = standard_response("gamma2.2", bits=10)
    path = response.save(tmp_path / "saved.m")
    text = path.read_text()
    assert "# name: IR" in text and "# rows: 1024" in text and "# columns: 3" in text
    np.testing.assert_array_equal(CameraResponse.load(path).inverse_lut, response.inverse_lut)
    lines = text.splitlines()
    (tmp_path / "cut.m").write_text("\n".join(lines[: 2 * (6 + 1024 + 1) - 500]) + "\n")
    with pytest.raises(ValueError, match=r"cut\.m: matrix 'IG' should hold 1024 x 3 numbers"):
        CameraResponse.load(tmp_path / "cut.m")
    (tmp_path / "weights.m").write_text("# name: W\n# data layout: weight | camera output\n# rows: 4\n# columns: 2\n"
                                       "0 0\n1 1\n1 2\n0 3\n")
    with pytest.raises(ValueError, match=r"weights\.m: no response matrix found"):
        CameraResponse.load(tmp_path / "weights.m")
    with pytest.raises(FileNotFoundError, match=r"missing\.m: no such response file"):
        CameraResponse.load(tmp_path / "missing.m")


def test_every_listed_suffix_loads(tmp_path):
    response = standard_response("srgb")
    for suffix in RESPONSE_FILE_SUFFIXES:
        back = CameraResponse.load(response.save(tmp_path / f"r{suffix}"))
        np.testing.assert_allclose(back.inverse_lut, response.inverse_lut, rtol=1e-6, atol=1e-12)


# --- monotone projection --------------------------------------------------------------------------------------


def _brute_force_isotonic(values):
    """Least-squares non-decreasing fit by trying every split into runs of equal value (each run at its mean)."""
    n = len(values)
    best, best_err = None, Fraction(10**9)
    for cuts in itertools.product([False, True], repeat=n - 1):
        bounds = [0] + [i + 1 for i, c in enumerate(cuts) if c] + [n]
        fit = np.concatenate([np.full(e - s, np.mean(values[s:e])) for s, e in zip(bounds[:-1], bounds[1:])])
        if np.all(np.diff(fit) >= -1e-12):
            # Exact arithmetic: near-ties (values 1e-8 apart) differ by less than a float's resolution of the sum.
            err = sum((Fraction(float(f)) - Fraction(float(v))) ** 2 for f, v in zip(fit, values))
            if err < best_err:
                best, best_err = fit, err
    return best


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=8))
def test_pool_adjacent_violators_is_the_least_squares_monotone_fit(values):
    values = np.asarray(values)
    fit = _pool_adjacent_violators(values)
    assert np.all(np.diff(fit) >= 0)
    np.testing.assert_allclose(fit, _brute_force_isotonic(values), atol=1e-9)


def test_non_monotone_curve_is_projected_with_a_warning(caplog):
    lut = np.linspace(0.0, 1.0, 256) ** 2.2
    lut[40:44] = lut[40:44][::-1].copy()  # a local reversal in the toe
    lut[200] = lut[198] - 0.05  # and one deep dip: the largest drop
    with caplog.at_level(logging.WARNING, logger="edgehdr.hdr"):
        response = CameraResponse(np.stack([lut, lut, np.sort(lut)]), name="foreign")
    assert np.all(np.diff(response.inverse_lut, axis=1) >= 0)
    np.testing.assert_allclose(response.inverse_lut[0], _pool_adjacent_violators(lut.astype(np.float32)), rtol=1e-6)
    np.testing.assert_array_equal(response.inverse_lut[2], np.sort(lut).astype(np.float32))
    [record] = [r for r in caplog.records if r.name == "edgehdr.hdr"]
    message = record.getMessage()
    drop = float(np.max(np.maximum.accumulate(lut.astype(np.float32)) - lut.astype(np.float32)))
    assert "foreign" in message and f"largest drop {drop:.4g}" in message and "channel R at code 200" in message
    # A falling curve has a flat nearest non-decreasing curve: refused.
    with pytest.raises(ValueError, match="non-decreasing.*falls overall"):
        CameraResponse(np.linspace(1, 0, 256))


def test_every_response_file_type_resolves_for_merge(tmp_path):
    from edgehdr.hdr.crf import RESPONSE_FILE_SUFFIXES, standard_response
    from edgehdr.hdr.merge import resolve_response

    original = standard_response("gamma2.2")
    for suffix in RESPONSE_FILE_SUFFIXES:
        path = tmp_path / f"r{suffix}"
        original.save(path)
        loaded = resolve_response(path, 10)
        assert loaded.bits == 10, suffix
        np.testing.assert_allclose(loaded.inverse_lut, original.resampled(10).inverse_lut, rtol=1e-3, atol=1e-7,
                                   err_msg=suffix)


def test_calibration_names_a_bracket_that_cannot_fix_a_curve():
    """NaN or infinite exposures, and brackets whose samples never change or fall with exposure, were refused
    with a message about a flat curve (``inverse_lut channel R is flat``) instead of about the bracket."""
    rng = np.random.default_rng(0)
    base = rng.integers(20, 200, (32, 32, 3))
    rising = np.stack([np.clip(base * k, 0, 255) for k in (0.5, 1.0, 1.25)]).astype(np.uint8)
    for exposures in ([0.1, np.nan, 1.0], [0.1, 1.0, np.inf]):
        with pytest.raises(ValueError, match="need 3 positive, finite exposures"):
            calibrate_debevec(rising, exposures)
    for frames in (np.full((3, 32, 32, 3), 255, np.uint8), np.zeros((3, 32, 32, 3), np.uint8),
                   np.full((3, 32, 32, 3), 128, np.uint8)):
        with pytest.raises(ValueError, match="no calibration sample changes code across the exposures"):
            calibrate_debevec(frames, [0.1, 0.4, 1.6])
    with pytest.raises(ValueError, match="get darker with longer exposure .* in the frames' order"):
        calibrate_debevec(rising, [1.6, 0.4, 0.1])
    assert calibrate_debevec(rising, [0.1, 0.2, 0.25]).inverse_lut.shape == (3, 256)  # the right order calibrates
