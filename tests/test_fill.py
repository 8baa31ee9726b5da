"""Filling the samples no exposure measures (``edgehdr.hdr.fill``): the normalized convolution against its
definition, a clipped patch recovered against the scene's truth in both merges, bounds respected, measured samples
untouched, and the fused kernel's flags and block sums against the stand-alone path."""

from __future__ import annotations

import numpy as np
import pytest

from edgehdr.bracket import Bracket
from edgehdr.hdr.crf import CameraResponse, ResponseCurve
from edgehdr.hdr.fill import (
    FILL_BLOCK,
    KEPT,
    LOWER_BOUND,
    MEASURED,
    UPPER_BOUND,
    fill_grid,
    fill_unmeasured,
    reference_clip_log2,
)
from edgehdr.hdr.merge import merge_debevec
from edgehdr.hdr.neural_merge import merge_with_weights

EQUAL = np.full((3, 4, 4), 1 / 3, np.float32)


def test_fill_grid_is_a_normalized_convolution():
    """A constant field with holes is filled with the constant, exactly, from the finest scale across a small hole
    and from the coarser ones across a large one; around a hole's centre the measured cells lie symmetrically, so
    a ramp in log2 radiance comes back as the ramp on average there (elsewhere in a hole the estimate leans to the
    nearer side: a zeroth-order fit); a grid with nothing measured has no estimate."""
    rows, cols = 96, 128
    yy, xx = np.mgrid[0:rows, 0:cols].astype(np.float32)
    counts = np.full((rows, cols, 3), float(FILL_BLOCK), np.float32)
    counts[68:76, 96:104] = 0  # a small hole: the finest scale (sigma 1 cell) reaches across it
    counts[32:64, 32:64] = 0  # a large one, on the coarser grids' cells: only the coarser scales reach
    constant = np.broadcast_to(np.array([-3.0, 0.5, 7.25], np.float32), counts.shape)
    np.testing.assert_allclose(fill_grid(constant * counts, counts), constant, atol=1e-5)
    ramp = np.stack([0.05 * xx - 0.02 * yy + k for k in range(3)], axis=-1)
    est = fill_grid(ramp * counts, counts)
    for centre in (np.s_[71:73, 99:101], np.s_[47:49, 47:49]):  # the 2 x 2 cells around each hole's centre
        np.testing.assert_allclose(est[centre].mean(axis=(0, 1)), ramp[centre].mean(axis=(0, 1)), atol=0.01)
    assert np.abs(est[68:76, 96:104] - ramp[68:76, 96:104]).max() < 0.05 * 4  # at most the slope over half the hole
    assert np.isnan(fill_grid(ramp * 0, counts * 0)).all()


def _code(curve: ResponseCurve, x: np.ndarray) -> np.ndarray:
    return np.rint(255 * curve.forward(np.clip(x, 0.0, 1.0))).astype(np.uint8)


def _sky_over_ground(h: int, w: int, horizon: int) -> tuple[ResponseCurve, CameraResponse, np.ndarray]:
    """An sRGB camera and a scene: a bright sky above row ``horizon`` (1-1.6 stops above the reference's clip, a
    smooth gradient, colour 0.8 : 0.9 : 1) over mid-tone ground."""
    curve = ResponseCurve.parse("srgb")
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    sky = 2.0 * 2.0 ** (0.6 * xx / w + 0.2 * yy / h)
    truth = np.where((yy < horizon)[..., None], sky[..., None] * np.array([0.8, 0.9, 1.0]), 0.18)
    return curve, CameraResponse.from_curve(curve, 8), truth


@pytest.fixture(scope="module")
def clipped_sky():
    """A bright sky (1-1.6 stops above the reference's clip, a smooth gradient) over mid-tone ground with a deep
    shadow. The short frame measures the sky except where a dark object passed (the gate rejects it there), the
    long frame clips it: those samples fall back on the reference's clipped bound, a stop or more below the truth.
    The shadow is black in every frame (an upper bound). Returns (bracket, response, truth, patch, shadow)."""
    curve, response, truth = _sky_over_ground(64, 96, 32)
    truth[48:, 72:] = 0.0004
    rel = np.array([0.25, 1.0, 4.0])
    frames = np.stack([_code(curve, truth * r) for r in rel])
    patch = np.zeros(truth.shape[:2], bool)
    patch[8:20, 30:46] = True
    frames[0][patch] = _code(curve, np.full(3, 0.05))  # the object, in the short frame only
    shadow = np.zeros(truth.shape[:2], bool)
    shadow[50:, 74:] = True
    bracket = Bracket(frames=frames, exposure_s=list(rel), gain=[1.0] * 3, bits=8)  # radiance in the truth's units
    return bracket, response, truth.astype(np.float32), patch, shadow


@pytest.mark.parametrize("merge", ["network", "deghost"])
def test_fill_recovers_a_clipped_patch_and_keeps_what_was_measured(clipped_sky, merge):
    bracket, response, truth, patch, shadow = clipped_sky
    if merge == "network":
        def run(fill: bool) -> np.ndarray:
            return merge_with_weights(bracket, EQUAL, response=response, fill=fill)
    else:
        def run(fill: bool) -> np.ndarray:
            return merge_debevec(bracket, response=response, weighting="tutorial", deghost=True, fill=fill)
    bound, filled = run(False), run(True)
    def log_error(rad: np.ndarray) -> np.ndarray:
        return np.log2(rad[patch] / truth[patch])

    assert np.median(np.abs(log_error(bound))) > 1.0  # the clipped reference's bound
    # The fill brings the brightness (the mean over channels in log2) to the sky's; the pixel keeps the bound's
    # hue (white), so each channel stays within the sky's own spread of colour (0.8 : 0.9 : 1).
    assert np.median(np.abs(log_error(filled).mean(axis=-1))) < 0.05
    assert np.abs(log_error(filled)).max() < 0.3
    assert np.all(filled[patch] >= bound[patch])  # a lower bound is only ever raised
    hue = filled[patch] / filled[patch].mean(axis=-1, keepdims=True)
    np.testing.assert_allclose(hue, bound[patch] / bound[patch].mean(axis=-1, keepdims=True), rtol=1e-4)
    # The shadow's neighbours are brighter than its upper bound: kept. Away from the patch and the shadow nothing
    # falls back, and the fill leaves every measured sample bit-identical.
    np.testing.assert_array_equal(filled[shadow].view(np.int32), bound[shadow].view(np.int32))
    elsewhere = ~patch & ~shadow
    np.testing.assert_array_equal(filled[elsewhere].view(np.int32), bound[elsewhere].view(np.int32))


def test_the_fused_kernels_flags_and_sums_are_the_stand_alone_fill(clipped_sky):
    """The network's kernel gathers its flags and block sums as it merges; the stand-alone ``fill_unmeasured`` takes
    flags given here from the scene's construction (the patch a lower bound, the shadow an upper bound) and the
    reference's clip level, and sums the merged radiance itself: the same result."""
    bracket, response, _, patch, shadow = clipped_sky
    bound = merge_with_weights(bracket, EQUAL, response=response)
    flags = np.full(bound.shape, MEASURED, np.uint8)
    flags[patch] = LOWER_BOUND
    flags[48:, 72:] = np.where(bracket.frames[2][48:, 72:] < 8, UPPER_BOUND, MEASURED)  # black in the long frame
    clip = reference_clip_log2(response.log_lut() / np.log(2), bracket.relative_exposure[1])
    expected = fill_unmeasured(bound.copy(), flags, bright_log2=clip)
    fused = merge_with_weights(bracket, EQUAL, response=response, fill=True)
    np.testing.assert_allclose(fused, expected, rtol=1e-5)
    assert not np.array_equal(fused[patch], bound[patch])


def test_only_lower_bounds_move_and_only_towards_neighbours_as_bright_as_the_reference_clip():
    """Radiance given with its flags directly: a clipped block (bound 2.0) among neighbours at 4.0, above the
    reference's clip level 3.0, takes their value; among neighbours at 2.5, brighter than the bound but below the
    clip level, it keeps its bound (such a neighbour was measured by the reference, so the clipped sample is not
    like it), unless no level is given; a black block (an upper bound) keeps its bound whatever its neighbours."""
    h, w = 40, 512  # the two halves beyond the coarsest scale's reach (sigma 64 px) of each other's blocks
    radiance = np.full((h, w, 3), 2.5, np.float32)
    radiance[:, 256:] = 4.0
    flags = np.full((h, w, 3), MEASURED, np.uint8)
    flags[8:14, 4:10] = LOWER_BOUND  # among 2.5
    flags[8:14, 496:502] = LOWER_BOUND  # among 4.0
    flags[26:32, 4:10] = UPPER_BOUND  # among 2.5
    flags[26:32, 496:502] = UPPER_BOUND  # among 4.0
    radiance[flags != MEASURED] = 2.0
    clip = np.full(3, np.log2(3.0), np.float32)
    out = fill_unmeasured(radiance.copy(), flags, bright_log2=clip)
    np.testing.assert_array_equal(out[8:14, 4:10], 2.0)
    np.testing.assert_allclose(out[8:14, 496:502], 4.0, rtol=1e-3)
    np.testing.assert_array_equal(out[26:32], radiance[26:32])
    untouched = flags == MEASURED
    np.testing.assert_array_equal(out[untouched], radiance[untouched])
    anything = fill_unmeasured(radiance.copy(), flags)  # every measured pixel supports
    np.testing.assert_allclose(anything[8:14, 4:10], 2.5, rtol=1e-3)
    np.testing.assert_array_equal(anything[26:32], radiance[26:32])


def test_fill_rejects_mismatched_flags():
    with pytest.raises(ValueError, match="flags must be"):
        fill_unmeasured(np.ones((4, 4, 3), np.float32), np.zeros((4, 5, 3), np.uint8))
    with pytest.raises(ValueError, match="statistics"):
        from edgehdr.hdr.merge import MergeStatistics

        merge_debevec(np.zeros((2, 4, 4, 3), np.uint8), [1.0, 4.0], fill=True, statistics=MergeStatistics())


def test_a_pixels_bounds_move_together_keeping_their_hue_or_not_at_all():
    """Three clipped channels at 2.0: among neighbours (4, 0.5, 4) the green estimate lies below its bound, so the
    pixel keeps all three bounds (channel by channel it would turn magenta); among (4, 3, 4) all three exceed theirs
    and the pixel rises by the mean excess, log2(4 * 3 * 4 / 8) / 3, in every channel: grey stays grey."""
    h, w = 40, 80
    radiance = np.empty((h, w, 3), np.float32)
    radiance[:, :40] = (4.0, 0.5, 4.0)
    radiance[:, 40:] = (4.0, 3.0, 4.0)
    flags = np.full((h, w, 3), MEASURED, np.uint8)
    for block in (np.s_[16:24, 8:16], np.s_[16:24, 64:72]):
        radiance[block] = 2.0
        flags[block] = LOWER_BOUND
    out = fill_unmeasured(radiance.copy(), flags)
    np.testing.assert_array_equal(out[16:24, 8:16], 2.0)
    np.testing.assert_allclose(out[16:24, 64:72], 2.0 * (4.0 * 3.0 * 4.0 / 8.0) ** (1 / 3), rtol=1e-3)


@pytest.fixture(scope="module")
def mixed_sky():
    """An odd-sized frame (61 x 93: the fill's 16-pixel scan has a tail) with a wide clipped patch (most of its rows
    fall back: the kernel's whole-row path), a dark bar the reference measures right beside it (measured, but below
    the reference's clip: not support), a strip whose red is clipped in every frame (a partly clipped pixel: its
    other channels are measured, but it is not support) and a black corner. Returns (bracket, response, patch,
    strip)."""
    curve, response, truth = _sky_over_ground(61, 93, 34)
    truth[6:20, 70:76] = 0.3  # the dark bar
    truth[22:26, 10:60, 0] = 20.0  # red beyond every frame's range
    truth[50:, 75:] = 2e-5  # code 0 in every frame: no weight in any weighting
    rel = np.array([0.25, 1.0, 4.0])
    frames = np.stack([_code(curve, truth * r) for r in rel])
    patch = np.zeros(truth.shape[:2], bool)
    patch[6:20, 5:70] = True
    patch[6:20, 84:] = True  # and in the scan's tail (its last 13 pixels)
    frames[0][patch] = _code(curve, np.full(3, 0.05))
    strip = np.zeros(truth.shape[:2], bool)
    strip[22:26, 10:60] = True
    frames[2][54, 80:90] = 255  # hot pixels: the long frame reads clipped where the others read black
    bracket = Bracket(frames=frames, exposure_s=list(rel), gain=[1.0] * 3, bits=8)
    return bracket, response, patch, strip


def _classical_flags(bracket: Bracket, response: CameraResponse) -> np.ndarray:
    """The classical merge's fallback, written out independently: a sample is measured when a frame the deghosting
    keeps reads a code the tutorial weighting gives weight; else it falls back on the shortest kept frame reading
    bright (a lower bound), else on the longest kept frame (a lower bound if it reads bright, an upper one if dark);
    a bright reading in a frame longer than the reference is no bound to trust (``KEPT``)."""
    from edgehdr.hdr.deghost import consistency_masks
    from edgehdr.hdr.weights import weight_lut

    frames = bracket.frames.astype(np.int64)
    order = np.argsort(bracket.relative_exposure)
    masks = consistency_masks(bracket.frames, bracket.relative_exposure, response, reference_index=int(order[1]))
    kept = masks[..., None].astype(bool) & np.ones(3, bool)
    measured = (kept & (weight_lut("tutorial", 256)[frames] > 0)).any(axis=0)
    bright = 2 * frames >= 255
    flags = np.full(frames.shape[1:], MEASURED, np.uint8)
    pick = np.full(frames.shape[1:], -1)
    for i in order[::-1]:  # the shortest kept bright frame wins: visit it last
        pick = np.where(kept[i] & bright[i], i, pick)
    longest = np.full(frames.shape[1:], -1)
    for i in order:  # the longest kept frame: visit it last
        longest = np.where(kept[i], i, longest)
    pick = np.where(pick >= 0, pick, longest)
    picked_bright = np.take_along_axis(bright, pick[None], axis=0)[0]
    longer_than_reference = np.argsort(order)[pick] > 1
    fell_back = np.where(picked_bright, np.where(longer_than_reference, KEPT, LOWER_BOUND), UPPER_BOUND)
    flags[~measured] = fell_back[~measured]
    return flags


def test_both_merges_fill_as_the_stand_alone_path_with_flags_written_out(mixed_sky):
    """The network's kernel (flags, block sums and support gathered while it merges, the whole-row path included)
    and the classical merge's own pass, each against ``fill_unmeasured`` on their unfilled result with flags written
    out independently (the scene's construction; the classical rule above) and the reference's clip level: the same
    radiance. The dark bar beside the patch and the partly clipped strip are measured but not support: counting them
    (or any measured pixel) moves the patch's estimate, which this compares."""
    bracket, response, patch, strip = mixed_sky
    clip = reference_clip_log2(response.log_lut() / np.log(2), bracket.relative_exposure[1])
    bound = merge_with_weights(bracket, EQUAL, response=response)
    flags = np.full(bound.shape, MEASURED, np.uint8)
    flags[patch] = LOWER_BOUND
    flags[strip, 0] = LOWER_BOUND
    flags[50:, 75:] = np.where(bracket.frames[2][50:, 75:] < 8, UPPER_BOUND, MEASURED)
    flags[54, 80:90] = UPPER_BOUND  # the gate rejects the hot pixels: the black reference's bound
    expected = fill_unmeasured(bound.copy(), flags, bright_log2=clip)
    np.testing.assert_allclose(merge_with_weights(bracket, EQUAL, response=response, fill=True), expected, rtol=1e-5)
    assert np.all(expected[patch] > bound[patch])  # (the strip's red bound, 4, lies above its neighbours: kept)
    everything = fill_unmeasured(bound.copy(), flags)  # every measured pixel as support: a different answer
    assert np.abs(np.log2(everything[patch] / expected[patch])).max() > 0.1

    classical = merge_debevec(bracket, response=response, weighting="tutorial", deghost=True)
    classical_flags = _classical_flags(bracket, response)
    assert (classical_flags[patch] == LOWER_BOUND).all() and (classical_flags == UPPER_BOUND).any()
    assert (classical_flags[54, 80:90] == KEPT).all()  # the deghosting keeps every frame where the reference is black
    expected = fill_unmeasured(classical.copy(), classical_flags, bright_log2=clip)
    filled = merge_debevec(bracket, response=response, weighting="tutorial", deghost=True, fill=True)
    np.testing.assert_allclose(filled, expected, rtol=1e-5)
    assert not np.array_equal(filled, classical)
    np.testing.assert_array_equal(filled[54, 80:90], classical[54, 80:90])  # raised as a lower bound, 15 stops off
    as_lower = np.where(classical_flags == KEPT, LOWER_BOUND, classical_flags).astype(np.uint8)
    assert (fill_unmeasured(classical.copy(), as_lower, bright_log2=clip)[54, 80:90] > classical[54, 80:90]).all()


def test_a_fill_never_lands_below_its_bound():
    """Neighbours a hair above the bound: the raise goes through log2 and exp2 polynomials, whose round trip could
    land under the bound for a tiny excess; the result is never below it."""
    rng = np.random.default_rng(3)
    h, w = 48, 80
    radiance = np.full((h, w, 3), 2.0, np.float32) * (1 + rng.uniform(1e-7, 1e-4, (h, w, 3))).astype(np.float32)
    flags = np.full((h, w, 3), MEASURED, np.uint8)
    flags[8:40, 8:72] = LOWER_BOUND
    radiance[flags == LOWER_BOUND] = 2.0
    out = fill_unmeasured(radiance.copy(), flags)
    assert np.all(out[flags == LOWER_BOUND] >= 2.0)


def test_fill_grid_needs_its_minimum_support():
    """One supporting cell among empty ones has an estimate in its own cell; a grid whose only support is a sliver
    (a count far below ``FILL_MIN_SUPPORT``) has none."""
    from edgehdr.hdr.fill import FILL_MIN_SUPPORT

    sums = np.zeros((64, 64, 3), np.float32)
    counts = np.zeros((64, 64, 3), np.float32)
    counts[32, 32] = FILL_BLOCK
    sums[32, 32] = 5.0 * FILL_BLOCK
    est = fill_grid(sums, counts)
    np.testing.assert_allclose(est[32, 32], 5.0, rtol=1e-5)
    counts[32, 32] = 0.04  # a sliver: 1 % of a cell's samples, blurred to about a sixth of that
    sums[32, 32] = 5.0 * counts[32, 32]
    assert 0.04 < FILL_MIN_SUPPORT * FILL_BLOCK  # below the minimum before the blur already
    assert np.isnan(fill_grid(sums, counts)).all()
