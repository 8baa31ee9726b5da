"""Merging against exact synthetic radiance and against cv2.MergeDebevec."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edgehdr.bracket import Bracket
from edgehdr.hdr import calibrate_debevec, standard_response, weight_lut
from edgehdr.hdr.merge import merge_debevec
from edgehdr.quality import pu21_psnr
from edgehdr.synth import CameraModel, capture_bracket, make_scene, suggest_exposures


def _opencv_merge(frames, exposures, response):
    bgr = [cv2.cvtColor(f, cv2.COLOR_RGB2BGR) for f in frames]
    # The same response EdgeHDR uses, including its floor at code 0: OpenCV takes the log of
    # the LUT, and a zero there would turn every black sample into -inf.
    lut = np.ascontiguousarray(np.exp(response.log_lut())[::-1].T.reshape(256, 1, 3))
    out = cv2.createMergeDebevec().process(bgr, np.asarray(exposures, np.float32), lut)
    return cv2.cvtColor(out, cv2.COLOR_BGR2RGB)


def test_weighting_functions_match_their_formulas():
    x = np.arange(256) / 255.0
    np.testing.assert_allclose(weight_lut("tutorial", 256)[1:-1], (1 - (2 * x - 1) ** 12)[1:-1], rtol=1e-6)
    np.testing.assert_allclose(weight_lut("triangle", 256)[1:-1], (1 - np.abs(2 * x - 1))[1:-1], rtol=1e-6)
    np.testing.assert_allclose(weight_lut("gaussian", 256)[1:-1], np.exp(-16 * (x - 0.5) ** 2)[1:-1], rtol=1e-6)
    for name in ("tutorial", "hat", "triangle", "gaussian", "box"):
        lut = weight_lut(name, 1024)
        assert lut[0] == 0 and lut[-1] == 0 and lut[512] > 0.9


def test_noise_free_merge_recovers_exact_radiance():
    scene = make_scene(3, 96, 128)
    shot = capture_bracket(scene, suggest_exposures(scene.radiance, 3), seed=0, noise=False)
    merged = merge_debevec(shot.bracket, response=shot.response)
    frames = shot.bracket.frames
    covered = np.all((frames.max(axis=0) > 30) & (frames.min(axis=0) < 225), axis=2)
    rel = np.abs(merged[covered] / shot.radiance[covered] - 1)
    assert covered.mean() > 0.5
    assert np.median(rel) < 0.01 and np.percentile(rel, 99) < 0.04


def test_agrees_with_opencv_where_well_exposed():
    scene = make_scene(0, 120, 160)
    shot = capture_bracket(scene, suggest_exposures(scene.radiance, 3), seed=1)
    ours = merge_debevec(shot.bracket, response=shot.response, weighting="triangle")
    theirs = _opencv_merge(shot.bracket.frames, shot.bracket.relative_exposure, shot.response)
    well = np.all((shot.bracket.frames[1] > 20) & (shot.bracket.frames[1] < 235), axis=2)
    ratio = ours[well] / theirs[well]
    # Same estimator; OpenCV's triangle is offset by one code, so agreement is close, not bit-exact.
    assert np.median(np.abs(ratio - 1)) < 0.01


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_pu21_psnr_at_least_opencv_with_known_response(seed):
    scene = make_scene(seed, 120, 160)
    shot = capture_bracket(scene, suggest_exposures(scene.radiance, 3), seed=seed)
    ours = merge_debevec(shot.bracket, response=shot.response)
    theirs = _opencv_merge(shot.bracket.frames, shot.bracket.relative_exposure, shot.response)
    assert pu21_psnr(ours, shot.radiance) >= pu21_psnr(theirs, shot.radiance)


def test_calibrated_response_within_1db_of_known():
    gaps = []
    for seed, curve in enumerate(("srgb", "s-curve", "gamma2.2")):
        from edgehdr.hdr import ResponseCurve

        scene = make_scene(seed, 180, 240)
        shot = capture_bracket(scene, suggest_exposures(scene.radiance, 5, 1.5),
                               camera=CameraModel(response=ResponseCurve.parse(curve)), seed=seed)
        # The calibration's accuracy, isolated under one fixed weighting.
        known = merge_debevec(shot.bracket, response=shot.response, weighting="tutorial")
        calibrated_response = calibrate_debevec(shot.bracket.frames, shot.bracket.relative_exposure)
        calibrated = merge_debevec(shot.bracket, response=calibrated_response, weighting="tutorial")
        # A calibrated response fixes radiance only up to scale: align it once, globally.
        scale = np.exp(np.median(np.log(known / calibrated)))
        gaps.append(pu21_psnr(known, shot.radiance) - pu21_psnr(calibrated * scale, shot.radiance))
        # The default (noise-aware) weighting with the calibrated response does no worse than the seed's.
        default = merge_debevec(shot.bracket, response=calibrated_response)
        default *= np.exp(np.median(np.log(known / default)))
        assert pu21_psnr(default, shot.radiance) >= pu21_psnr(calibrated * scale, shot.radiance) - 0.05, curve
    assert max(gaps) < 1.0, gaps


def test_every_clipped_or_black_pixel_gets_a_finite_bound():
    frames = np.zeros((3, 4, 4, 3), np.uint8)
    frames[:, :2] = 255  # clipped in all three frames
    exposures = np.array([0.01, 0.04, 0.16])
    merged = merge_debevec(frames, exposures, "srgb")
    assert np.all(np.isfinite(merged)) and np.all(merged > 0)
    # Clipped everywhere: at least the shortest frame's clip level (1.0 / 0.01).
    np.testing.assert_allclose(merged[:2], 100.0, rtol=1e-5)
    # Black everywhere: the longest frame's lowest bin.
    assert np.all(merged[2:] < standard_response("srgb").inverse_lut[0, 1] / 0.16)


@pytest.mark.parametrize("bits", [10, 12, 16])
def test_high_bit_depth_merge(bits):
    from edgehdr.hdr import ResponseCurve

    scene = make_scene(2, 64, 96)
    camera = CameraModel(response=ResponseCurve("gamma"), bits=bits)
    shot = capture_bracket(scene, suggest_exposures(scene.radiance, 2, 3.0), camera=camera, seed=0, noise=False)
    merged = merge_debevec(shot.bracket, response=shot.response)
    assert shot.bracket.frames.dtype == np.uint16
    covered = np.all(shot.bracket.frames.max(axis=0) > (1 << bits) // 16, axis=2) & np.all(
        shot.bracket.frames.min(axis=0) < (1 << bits) - 8, axis=2)
    assert np.median(np.abs(merged[covered] / shot.radiance[covered] - 1)) < 0.005


def test_deghosting_gains_3db_in_moving_regions_without_hurting_static():
    gains, static_loss = [], []
    for seed in range(6):
        scene = make_scene(seed, 180, 320, moving_objects=2, object_speed_px=10.0)
        shot = capture_bracket(scene, suggest_exposures(scene.radiance, 3), seed=seed)
        plain = merge_debevec(shot.bracket, response=shot.response)
        clean = merge_debevec(shot.bracket, response=shot.response, deghost=True,
                              reference_index=shot.reference_index)
        moving = shot.motion_mask
        gains.append(pu21_psnr(clean, shot.radiance, mask=moving) - pu21_psnr(plain, shot.radiance, mask=moving))
        static_loss.append(pu21_psnr(plain, shot.radiance, mask=~moving)
                           - pu21_psnr(clean, shot.radiance, mask=~moving))
    assert np.mean(gains) >= 3.0, gains
    assert min(gains) > 0.0, gains
    assert max(static_loss) < 0.5, static_loss


def test_codes_near_clipping_do_not_reject_a_correct_shorter_frame():
    """JPEG and sharpening ring around a clipped highlight: the reference reads 246-254 where the truth is far
    above its range. Those codes count as clipped (``clip_margin_codes``), so the shorter frame's correct samples
    stay and the merge recovers the highlight; read as measurements (the 2-code margin used before), they
    rejected the short frame and the merge kept the reference's too-low values."""
    from edgehdr.hdr.deghost import clip_margin_codes, consistency_masks

    resp = standard_response("gamma2.2")
    exposures = np.array([1.0, 16.0, 256.0])
    rng = np.random.default_rng(0)
    truth = np.full((48, 64, 3), 0.25)  # 4x over the reference's clipping point
    truth[:, :32] = 0.002  # a dark half that all three frames measure
    codes = [np.clip(np.rint(255 * np.minimum(truth * t, 1.0) ** (1 / 2.2)), 0, 255) for t in exposures]
    blocks = np.kron(rng.random((6, 8, 1)) < 0.3, np.ones((8, 8, 3), bool))  # whole 8 x 8 JPEG blocks ring
    ringing = (truth > 0.1) & blocks
    codes[1] = np.where(ringing, rng.integers(246, 255, truth.shape), codes[1])
    frames = np.stack(codes).astype(np.uint8)
    assert clip_margin_codes(256) == 8 and clip_margin_codes(1 << 16) == 512
    masks = consistency_masks(frames, exposures, resp, reference_index=1)
    assert masks[0].all()  # the short frame agrees wherever it was looked at
    merged = merge_debevec(frames, exposures, resp, deghost=True, reference_index=1)
    bright = truth[..., 0] > 0.1
    assert np.median(np.abs(merged[bright] / truth[bright] - 1)) < 0.05
    import edgehdr.hdr.deghost as deghost

    original, upper = deghost.clip_margin_codes, deghost.reference_upper_bounds
    deghost.clip_margin_codes = lambda levels: 2
    deghost.reference_upper_bounds = lambda hi: hi  # the shoulder rule (a later test) would rescue them too
    try:
        before = merge_debevec(frames, exposures, resp, deghost=True, reference_index=1)
    finally:
        deghost.clip_margin_codes, deghost.reference_upper_bounds = original, upper
    assert np.mean(np.abs(np.log(before[bright] / truth[bright])) > 1.0) > 0.05  # the old margin lost samples


def test_a_reference_on_its_shoulder_does_not_reject_a_brighter_shorter_frame(shoulder_bracket):
    """The reference's codes from ``reference_shoulder_code`` (217 at 8 bits) up bound the radiance from below only:
    the short frame reading brighter stays and the merge comes closer to the highlight; a short frame reading darker
    than a shoulder code is still rejected. With the reference's upper bounds as every frame's, the short frame's
    correct samples were rejected and the merge kept the reference's too-low readings."""
    import edgehdr.hdr.deghost as deghost
    from edgehdr.hdr.deghost import consistency_masks, reference_shoulder_code

    assert reference_shoulder_code(256) == 217
    resp = standard_response("gamma2.2")
    frames, exposures, truth, shoulder, moved = shoulder_bracket
    masks = consistency_masks(frames, exposures, resp, reference_index=1)
    assert masks[0][shoulder].all()
    assert not masks[0][moved].any()
    merged = merge_debevec(frames, exposures, resp, deghost=True, reference_index=1)
    err = np.abs(np.log(merged[shoulder] / truth[shoulder]))
    original = deghost.reference_upper_bounds
    deghost.reference_upper_bounds = lambda hi: hi
    try:
        masks_before = consistency_masks(frames, exposures, resp, reference_index=1)
        before = merge_debevec(frames, exposures, resp, deghost=True, reference_index=1)
    finally:
        deghost.reference_upper_bounds = original
    err_before = np.abs(np.log(before[shoulder] / truth[shoulder]))
    assert masks_before[0][shoulder].mean() < 0.5  # the test rejected them before
    # The merge still weighs the reference's shoulder codes (the noise weights' taper only lowers them): closer,
    # not exact (median |log error| 0.98 against 1.59 here, where the reference reads 3-9x too low).
    assert np.median(err) < 0.7 * np.median(err_before)


def test_preallocated_output_and_validation():
    frames = np.full((2, 8, 8, 3), 100, np.uint8)
    out = np.empty((8, 8, 3), np.float32)
    result = merge_debevec(frames, [0.1, 0.2], "gamma2.2", out=out)
    assert result is out
    with pytest.raises(ValueError, match="at least two exposures"):
        merge_debevec(frames[:1], [0.1], "srgb")
    with pytest.raises(ValueError, match="positive, finite exposures"):
        merge_debevec(frames, [0.1, -1.0], "srgb")
    with pytest.raises(ValueError, match="unknown weighting"):
        merge_debevec(frames, [0.1, 0.2], "srgb", weighting="cosine")
    with pytest.raises(ValueError, match="differs from frames"):
        merge_debevec([frames[0], frames[1, :4]], [0.1, 0.2], "srgb")
    with pytest.raises(ValueError, match="bits=10 allows at most 1023"):
        merge_debevec(np.full((2, 4, 4, 3), 4000, np.uint16), [0.1, 0.2], "srgb", bits=10)


def test_bracket_input_uses_its_exposure_and_gain():
    scene = make_scene(1, 64, 64)
    shot = capture_bracket(scene, [0.02, 0.02], gains=[1.0, 4.0], seed=0, noise=False)
    merged = merge_debevec(shot.bracket, response=shot.response)
    assert isinstance(shot.bracket, Bracket)
    ok = np.all(shot.bracket.frames[0] > 40, axis=2) & np.all(shot.bracket.frames[1] < 220, axis=2)
    assert np.median(np.abs(merged[ok] / shot.radiance[ok] - 1)) < 0.01


@pytest.mark.parametrize("size", [(40, 56), (96, 160)])  # the serial kernel and the parallel one
def test_rows_mostly_clipped_or_black_take_the_same_bound_as_rows_with_a_few(size):
    """A row where most samples are clipped or black in every frame takes the bound in vectorised passes, a row
    with a few in the per-sample loop: the same samples get bit-identical values either way, and both follow the
    rule (the shortest frame that reads bright, else the longest) against a float64 reference."""
    from edgehdr.hdr.merge import resolve_response

    h, w = size
    rng = np.random.default_rng(3)
    exposures = np.array([1.0, 0.25, 4.0])  # frame 1 is the shortest: the kernel orders by exposure
    # codes 0 and 255 only: no frame measures them (zero weight at both ends)
    pattern = np.where(rng.random((3, w, 3)) < 0.5, 0, 255).astype(np.uint8)
    frames = rng.integers(30, 220, (3, h, w, 3), dtype=np.uint8)
    mostly = np.arange(0, h, 2)  # every even row: all of it unmeasured
    frames[:, mostly] = pattern[:, None]
    few = np.arange(1, h, 2)  # odd rows: the first 5 pixels only
    frames[:, few, :5] = pattern[:, None, :5]
    for shifts in (None, np.array([[2, 0], [0, 0], [-3, 0]])):
        kw = {} if shifts is None else {"shifts": shifts}
        merged = merge_debevec(frames, exposures, "srgb", **kw)
        if shifts is None:
            np.testing.assert_array_equal(merged[mostly][:, :5].view(np.int32),
                                          np.broadcast_to(merged[few][:1, :5], (len(mostly), 5, 3)).view(np.int32))
            np.testing.assert_array_equal(merged[few][:, :5].view(np.int32),
                                          np.broadcast_to(merged[1, :5], (len(few), 5, 3)).view(np.int32))
        else:  # read through the shifts: bit-identical to merging the shifted copy
            from edgehdr.hdr.align import shifted_stack

            reference = merge_debevec(shifted_stack(frames, shifts), exposures, "srgb")
            np.testing.assert_array_equal(merged.view(np.int32), reference.view(np.int32))
    merged = merge_debevec(frames, exposures, "srgb")
    log_lut = resolve_response("srgb", 8).log_lut().astype(np.float64)
    order = np.argsort(exposures)
    bright = 2 * pattern.astype(np.int32) >= 255  # (3 frames, w, 3)
    pick = np.full((w, 3), order[-1])
    for i in order[::-1]:  # the longest first; each shorter bright frame takes over
        pick = np.where(bright[i], i, pick)
    z = np.take_along_axis(pattern, pick[None], axis=0)[0]
    expected = np.exp(log_lut[np.arange(3)[None, :], z] - np.log(exposures[pick]))
    np.testing.assert_allclose(merged[0], expected, rtol=2e-5)
    assert (pick == 1).any() and (pick == 2).any() and (pick == 0).any()  # shortest bright, middle, longest


@pytest.mark.parametrize("width", [2600, 700, 37])
def test_merge_equals_a_float64_reference_across_the_kernels_column_spans(width):
    """The kernel works on a row wider than 2048 columns 256 at a time: such rows and narrower ones, shifted reads
    that cross the spans' edges, spans mostly unmeasured beside spans with a few such samples, against a float64
    Debevec merge of NumPy's shifted copy with the same weights and the fallback rule."""
    from edgehdr.hdr.align import shifted_stack
    from edgehdr.hdr.merge import resolve_response

    h = 20
    rng = np.random.default_rng(width)
    frames = rng.integers(0, 256, (3, h, width, 3), dtype=np.uint8)
    frames[:, :6, width // 7:width // 2] = 255  # clipped in every frame
    frames[:, -5:, -width // 3:] = 0  # black in every frame
    scattered = rng.random((h, width, 3)) < 0.02
    frames[:, scattered] = np.where(rng.random((3, int(scattered.sum()))) < 0.5, 0, 255).astype(np.uint8)
    exposures = np.array([1.0, 0.25, 4.0])
    shifts = np.array([[3, -2], [0, 0], [-5, 4]])
    ours = merge_debevec(frames, exposures, "srgb", weighting="triangle", shifts=shifts)
    z = shifted_stack(frames, shifts).astype(np.int64)
    weights = weight_lut("triangle", 256).astype(np.float64)[z]
    log_lut = resolve_response("srgb", 8).log_lut().astype(np.float64)
    values = log_lut[np.arange(3)[None, None, None, :], z] - np.log(exposures)[:, None, None, None]
    den = weights.sum(axis=0)
    log_e = (weights * values).sum(axis=0) / np.maximum(den, 1e-300)
    order = np.argsort(exposures)
    pick = np.full(den.shape, order[-1])
    for i in order[::-1]:  # unmeasured: the shortest frame reading bright, else the longest
        pick = np.where(2 * z[i] >= 255, i, pick)
    log_e = np.where(den == 0, np.take_along_axis(values, pick[None], axis=0)[0], log_e)
    assert (den == 0).mean() > 0.04
    # The kernel's sums are 12.20 fixed point: where the whole weight is one edge code's (1 / 127), the rounding
    # of the weighted value moves ln E by up to about 2e-4; elsewhere float32 and the exp2 polynomial, a few 1e-6.
    error = np.abs(np.log(ours) - log_e)
    assert error.max() < 3e-4 and np.median(error) < 1e-5, (error.max(), np.median(error))
    assert error[den == 0].max() < 1e-5


@pytest.mark.parametrize(("n", "bits"), [(2, 8), (4, 12), (5, 16)])
def test_unmeasured_samples_follow_the_fallback_rule_for_any_frame_count_and_depth(n, bits):
    """Samples no frame measures (codes 0 and the top code, zero weight) take the shortest frame that reads bright,
    else the longest: in rows with a few of them (found a word at a time) and rows mostly of them (one pass per
    frame), for 2 to 5 frames in any exposure order (two equal exposures included: the earlier frame counts as the
    shorter) and 8 to 16 bits, against a float64 reference of the rule."""
    from edgehdr.hdr.merge import resolve_response

    h, w = 48, 64
    top = (1 << bits) - 1
    rng = np.random.default_rng(n + bits)
    exposures = rng.permutation(np.geomspace(0.01, 0.01 * 4 ** (n - 1), n))
    exposures[-1] = exposures[0]  # a tie
    dtype = np.uint8 if bits == 8 else np.uint16
    frames = rng.integers(top // 8, top - top // 8, (n, h, w, 3)).astype(dtype)
    ends = np.where(rng.random((n, h, w, 3)) < 0.5, 0, top).astype(dtype)
    unmeasured = np.zeros((h, w, 3), bool)
    unmeasured[::2] = True  # every even row: all of it
    unmeasured[1::2] = rng.random((h // 2, w, 3)) < 0.05  # odd rows: a few scattered samples
    frames = np.where(unmeasured[None], ends, frames)
    merged = merge_debevec(frames, exposures, "srgb", bits=bits)
    order = np.argsort(exposures, kind="stable")
    pick = np.full((h, w, 3), order[-1])
    for i in order[::-1]:  # the longest first; each shorter bright frame takes over
        pick = np.where(2 * ends[i].astype(np.int64) >= top, i, pick)
    z = np.take_along_axis(ends, pick[None], axis=0)[0]
    log_lut = resolve_response("srgb", bits).log_lut().astype(np.float64)
    expected = np.exp(log_lut[np.arange(3)[None, None, :], z] - np.log(exposures[pick]))
    np.testing.assert_allclose(merged[unmeasured], expected[unmeasured], rtol=2e-5)
    assert len(np.unique(pick[unmeasured])) == n  # every frame is some sample's pick


@pytest.mark.parametrize("size", [(40, 56), (96, 160), (12, 2600)])  # serial, parallel, 11 column spans
@pytest.mark.parametrize("deghost", [False, True])
def test_shifts_read_in_the_kernel_equal_merging_the_shifted_copy(size, deghost):
    """merge_debevec(shifts=...) reads frame i at (y + dy, x + dx), edges replicated: bit-identical to merging
    align_mtb's shifted copy (edgehdr.hdr.align.shifted_stack), clipped and black samples (the fix-up path) and
    shifts larger than the frame included."""
    from edgehdr.hdr.align import shifted_stack

    h, w = size
    rng = np.random.default_rng(7)
    frames = rng.integers(0, 256, (3, h, w, 3), dtype=np.uint8)
    frames[:, : h // 4, : w // 3] = 255  # clipped in every frame
    frames[:, -h // 5:, -w // 4:] = 0  # black in every frame
    for shifts in ([[3, -2], [0, 0], [-5, 4]], [[1, 1], [-1, -1], [0, 7]], [[w + 3, 0], [0, -h - 2], [-w - 1, h]]):
        shifts = np.array(shifts)
        copied = shifted_stack(frames, shifts)
        assert not np.array_equal(copied, frames)
        ours = merge_debevec(frames, [0.25, 1.0, 4.0], "srgb", shifts=shifts, deghost=deghost)
        reference = merge_debevec(copied, [0.25, 1.0, 4.0], "srgb", deghost=deghost)
        np.testing.assert_array_equal(ours.view(np.int32), reference.view(np.int32))
    with pytest.raises(ValueError, match="integer"):
        merge_debevec(frames, [0.25, 1.0, 4.0], "srgb", shifts=np.zeros((3, 2), np.float32))
    with pytest.raises(ValueError, match="one per frame"):
        merge_debevec(frames, [0.25, 1.0, 4.0], "srgb", shifts=np.zeros((2, 2), np.int64))


def test_consistency_masks_refuse_what_their_kernel_cannot_index():
    """The public mask function passed anything to its kernel, which read past its arrays: a reference index past
    the frames, fewer exposures than frames, codes deeper than the response all came back as masks."""
    from edgehdr.hdr.deghost import consistency_masks

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    exposures = [0.25, 1.0, 4.0]
    resp = standard_response("srgb", 8)
    good = consistency_masks(frames, exposures, resp, reference_index=1)
    assert good.shape == (3, 8, 8) and good[1].all()
    for kwargs, message in (
        ({"reference_index": 3}, r"reference_index 3 is outside the bracket's frames 0..2"),
        ({"reference_index": -1}, r"reference_index -1 is outside"),
        ({"exposures": [0.25, 1.0]}, r"need 3 positive, finite exposures, one per frame"),
        ({"exposures": [0.25, np.nan, 4.0]}, r"need 3 positive, finite exposures"),
        ({"frames": frames.astype(np.uint16) * 16, "response": standard_response("srgb", 10)},
         r"frames hold code 4080 but bits=10 allows at most 1023"),
    ):
        args = {"frames": frames, "exposures": exposures, "response": resp, "reference_index": 1, **kwargs}
        with pytest.raises(ValueError, match=message):
            consistency_masks(args.pop("frames"), args.pop("exposures"), args.pop("response"), **args)


def test_a_bracket_refuses_metadata_the_merge_cannot_use():
    from edgehdr.bracket import Bracket

    frames = np.zeros((3, 4, 4, 3), np.uint8)
    for kwargs, message in (({"gain": [1.0, np.nan, 1.0]}, "gain must hold 3 positive, finite values"),
                            ({"gain": [1.0, np.inf, 1.0]}, "gain must hold 3 positive, finite values"),
                            ({"bits": 4}, r"bits=4 does not fit dtype uint8 \(uint8 frames carry 8 bits"),
                            ({"timestamp_ns": [1, 2]}, "3 frames but 2 timestamps")):
        with pytest.raises(ValueError, match=message):
            Bracket(frames, [0.25, 1.0, 4.0], **kwargs)
