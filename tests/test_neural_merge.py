"""The compact merge network: the fused weighted merge against the classical one and OpenCV, its training
twin, the shipped model against classical deghosting on held-out dynamic scenes, the pipeline stage, INT8."""

from __future__ import annotations

import importlib.util
import json

import cv2
import numpy as np
import pytest

from edgehdr.hdr.align import shifted_stack
from edgehdr.hdr.crf import standard_response
from edgehdr.hdr.merge import merge_debevec
from edgehdr.hdr.neural_merge import (
    MERGE_INPUT_SHAPE,
    MERGE_OUTPUT_SHAPE,
    NeuralMerger,
    bilinear_taps,
    encode_merge_input,
    merge_with_weights,
    softmax_weights,
    working_size,
)
from edgehdr.infer import Manifest, OnnxRuntimeRunner, sha256_file
from edgehdr.models import model_path

HAVE_TORCH = importlib.util.find_spec("torch") is not None
needs_torch = pytest.mark.skipif(not HAVE_TORCH, reason="PyTorch is the training extra (pip install 'edgehdr[train]')")


@pytest.fixture(scope="module")
def bracket():
    from edgehdr.synth import capture_bracket, make_scene, suggest_exposures

    scene = make_scene(5, 272, 480, moving_objects=2, object_speed_px=10)
    return capture_bracket(scene, suggest_exposures(scene.radiance, 3), seed=5)


@pytest.fixture(scope="module")
def merger():
    runner = OnnxRuntimeRunner(model_path("merge_net")).load()
    yield NeuralMerger(runner)
    runner.close()


def test_equal_weights_are_the_classical_debevec_merge(bracket):
    """Against merge_debevec (packed fixed-point tables, its own kernel): the same log-domain formula, on the
    samples no frame reads within the clip margin (there the fused merge's weights are zero, the tutorial's not)."""
    from edgehdr.hdr.deghost import clip_margin_codes

    b = bracket.bracket
    ours = merge_with_weights(b, np.full((3, 17, 30), 1 / 3, np.float32), response=bracket.response,
                              consistency_gate=False)
    ref = merge_debevec(b, response=bracket.response, weighting="tutorial")  # the network's code weighting
    margin = clip_margin_codes(256)
    inside = ((b.frames >= margin) & (b.frames <= 255 - margin)).all(axis=0)
    assert inside.mean() > 0.2  # the scene's sky and shadows are clipped or black in some frame
    assert np.max(np.abs(np.log(ours[inside] / ref[inside]))) < 1e-3


def test_codes_within_the_clip_margin_carry_no_weight():
    """A reference channel read at 250 where the highlight clips (JPEG ringing beside it) is not a measurement:
    the short frame's reading is the merge's, where the tutorial's weight (0.39 at 250) pulled it down."""
    from edgehdr.bracket import Bracket
    from edgehdr.hdr.crf import CameraResponse, ResponseCurve
    from edgehdr.hdr.neural_merge import merge_weight_table
    from edgehdr.hdr.weights import weight_lut

    response = CameraResponse.from_curve(ResponseCurve.parse("srgb"), 8)
    frames = np.empty((3, 8, 8, 3), np.uint8)
    frames[0], frames[1], frames[2] = (150, 60, 40), (250, 120, 85), (255, 225, 160)  # 2 stops apart
    b = Bracket(frames=frames, exposure_s=[1 / 400, 1 / 100, 1 / 25], gain=[1.0] * 3, bits=8)
    ours = merge_with_weights(b, np.full((3, 2, 2), 1 / 3, np.float32), response=response)
    short_red = np.exp(response.log_lut()[0, 150]) / b.relative_exposure[0]
    np.testing.assert_allclose(ours[..., 0], short_red, rtol=1e-4)
    assert merge_weight_table(256)[250] == 0 and weight_lut("tutorial", 256)[250] > 0.3


@pytest.mark.parametrize("bits", [8, 16])
def test_consistency_gate_drops_the_samples_grosch_rejects(bracket, bits):
    """Against NumPy with the classical per-pixel test (edgehdr.hdr.deghost's kernel, before morphology):
    equal weights over the samples that are usable and consistent with the reference. At 16 bits the
    kernel is compiled for 65536 codes (the tables' stride is a compile-time constant)."""
    from edgehdr.bracket import Bracket
    from edgehdr.hdr.deghost import (
        _inconsistent_kernel,
        clip_margin_codes,
        radiance_intervals,
        reference_upper_bounds,
    )

    b, resp = bracket.bracket, bracket.response
    if bits == 16:
        b = Bracket(frames=b.frames.astype(np.uint16) * 257, exposure_s=b.exposure_s, gain=b.gain, bits=16)
        resp = resp.resampled(16)
    ours = merge_with_weights(b, np.full((3, 4, 4), 1 / 3, np.float32), response=resp)
    n, h, w, _ = b.frames.shape
    lo, hi = radiance_intervals(resp)
    bad = np.empty((n, h, w), np.uint8)
    _inconsistent_kernel(b.frames, lo, hi, reference_upper_bounds(hi), b.relative_exposure.astype(np.float32), 1, 2,
                         bad, np.empty((h, w), np.uint8))
    assert bad[[0, 2]].any()  # the moving objects make some
    z = b.frames.astype(np.int64)
    x = z / float((1 << bits) - 1)
    margin = clip_margin_codes(1 << bits)  # codes the gate counts as clipped or black weigh nothing either
    v = (1 - (2 * x - 1) ** 12) * (1 - bad[..., None]) * ((z >= margin) & (z <= (1 << bits) - 1 - margin))
    logs = np.stack([np.stack([resp.log_lut()[c][z[i][..., c]] for c in range(3)], -1) - np.log(b.relative_exposure[i])
                     for i in range(3)])
    den = v.sum(axis=0)
    ok = den > 1e-6
    expected = np.exp((v * logs).sum(axis=0) / np.maximum(den, 1e-30))
    np.testing.assert_allclose(ours[ok], expected[ok], rtol=2e-3)



def test_the_gate_takes_a_reference_shoulder_code_as_a_lower_bound(shoulder_bracket, monkeypatch):
    """As the classical deghosting (``reference_upper_bounds``): where the reference reads its shoulder (here 3-9x
    too low, colour processing after the clip) the brighter short frame passes the gate and pulls the merge towards
    the truth; a short frame darker than a shoulder reading is still dropped (the merge there is the reference's
    reading alone, as without the rule)."""
    import edgehdr.hdr.neural_merge as nm

    frames, exposures, truth, shoulder, moved = shoulder_bracket
    resp = standard_response("gamma2.2")
    uniform = np.full((3, 6, 8), 1 / 3, np.float32)
    nm._gate_and_fallback_spans.cache_clear()
    merged = merge_with_weights(frames, uniform, exposures, resp)
    plain = nm.gate_tables
    monkeypatch.setattr(nm, "gate_tables", lambda *a, **k: plain(*a, **{**k, "reference_shoulder": False}))
    nm._gate_and_fallback_spans.cache_clear()
    before = merge_with_weights(frames, uniform, exposures, resp)
    nm._gate_and_fallback_spans.cache_clear()
    err = np.median(np.abs(np.log(merged[shoulder] / truth[shoulder])))
    err_before = np.median(np.abs(np.log(before[shoulder] / truth[shoulder])))
    assert err < 0.7 * err_before, (err, err_before)
    ref_alone = np.exp(resp.log_lut()[0][frames[1][moved][:, 0]]) / exposures[1]
    np.testing.assert_allclose(merged[moved][:, 0], ref_alone, rtol=1e-5)
    np.testing.assert_array_equal(merged[moved], before[moved])


@pytest.mark.parametrize("bits", [8, 16])
def test_gate_spans_are_the_interval_test(bracket, bits):
    """The span table the fused kernel reads says "consistent" exactly where the two log2 radiance intervals
    meet: every code pair at 8 bits, 200 000 random pairs plus the ends (black, clipped) at 16."""
    from edgehdr.hdr.neural_merge import gate_spans, gate_tables

    resp = bracket.response if bits == 8 else bracket.response.resampled(16)
    levels = 1 << bits
    lo2, hi2 = gate_tables(resp, np.sort(bracket.bracket.relative_exposure))
    spans = gate_spans(lo2, hi2)
    rng = np.random.default_rng(3)
    if bits == 8:
        z1, zk = (a.ravel() for a in np.meshgrid(np.arange(levels), np.arange(levels), indexing="ij"))
    else:
        ends = np.array([0, 1, 2, 3, levels - 4, levels - 3, levels - 2, levels - 1])
        z1 = np.concatenate([rng.integers(0, levels, 200_000), np.repeat(ends, ends.size)])
        zk = np.concatenate([rng.integers(0, levels, 200_000), np.tile(ends, ends.size)])
    for j, k in enumerate((0, 2)):
        for c in range(3):
            meets = (lo2[k, c, zk] <= hi2[1, c, z1]) & (lo2[1, c, z1] <= hi2[k, c, zk])
            s = spans[j, c * levels + z1]
            start, width = s & 0xFFFFFFFF, s >> 32
            in_span = (zk >= start) & (zk <= start + width)
            assert 0.05 < meets.mean() < 0.95  # both verdicts occur
            np.testing.assert_array_equal(in_span, meets)

def test_one_hot_weights_take_that_frame_where_it_is_usable(bracket):
    from edgehdr.hdr.deghost import clip_margin_codes

    b, resp = bracket.bracket, bracket.response
    prob = np.zeros((3, 8, 8), np.float32)
    prob[1] = 1.0  # the reference only
    out = merge_with_weights(b, prob, response=resp)
    z = b.frames[1].astype(np.int64)
    margin = clip_margin_codes(256)  # codes the merge counts as clipped or black fall back
    usable = (z >= margin) & (z <= 255 - margin)
    expected = np.exp(np.stack([resp.log_lut()[c][z[..., c]] for c in range(3)], -1)) / b.relative_exposure[1]
    np.testing.assert_allclose(out[usable], expected[usable], rtol=1e-4)
    assert np.isfinite(out).all() and (out > 0).all()


def test_weight_upsampling_is_opencv_bilinear():
    """bilinear_taps (used by the kernel) against cv2.resize INTER_LINEAR on a random map."""
    small = np.random.default_rng(0).random((13, 21)).astype(np.float32)
    ys, xs = bilinear_taps(13, 100), bilinear_taps(21, 170)
    top = small[ys[0]][:, xs[0]] * (1 - xs[2]) + small[ys[0]][:, xs[1]] * xs[2]
    bot = small[ys[1]][:, xs[0]] * (1 - xs[2]) + small[ys[1]][:, xs[1]] * xs[2]
    ours = top * (1 - ys[2][:, None]) + bot * ys[2][:, None]
    np.testing.assert_allclose(ours, cv2.resize(small, (170, 100), interpolation=cv2.INTER_LINEAR), atol=1e-3)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("k", [2, 3, 4, 8, 15, 16, 17, 32])
def test_working_size_block_means_are_rounded_means(k, dtype):
    """The encoder's block means of the three frames (one kernel call, exposure order) against NumPy's
    exact integer means, rounded half up, on a size that leaves rows and columns over; with deferred shifts, the
    means of ``shifted_stack``'s moved frames. Blocks of the top code: the row sums' type (``_accumulator``)
    must hold k of them."""
    from edgehdr.hdr.neural_merge import _accumulator, _block_means

    rng = np.random.default_rng(k)
    top = np.iinfo(dtype).max
    stack = rng.integers(0, top + 1, (3, 7 * k + k - 1, 11 * k + 1, 3)).astype(dtype)
    stack[1, :k, :k] = top  # the largest sums
    order = np.array([2, 0, 1], np.int64)
    for shifts in (np.zeros((3, 2), np.int64), np.array([[3, -2], [0, 0], [-k - 1, 5]], np.int64)):
        out = np.empty((3, 7, 11, 3), dtype)
        _block_means(stack, order, shifts, k, out, _accumulator(stack.dtype, k))
        moved = shifted_stack(stack, shifts)
        for f, i in enumerate(order):
            sums = moved[i, :7 * k, :11 * k].astype(np.int64).reshape(7, k, 11, k, 3).sum(axis=(1, 3))
            np.testing.assert_array_equal(out[f], (2 * sums + k * k) // (2 * k * k))


def test_deferred_shifts_give_the_merge_of_the_moved_frames(bracket, merger):
    """The merger reading the frames through the alignment's deferred shifts (the daemon's path) gives exactly the
    merge of ``shifted_stack``'s moved copy: the encoder's input and the fused merge, shifts along both axes, both
    signs, and one frame not moved."""
    b = bracket.bracket
    shifts = np.array([[2, -1], [0, 0], [-3, 4]], np.int64)
    moved = shifted_stack(b.frames, shifts)
    np.testing.assert_array_equal(encode_merge_input(b.frames, b.relative_exposure, bracket.response, shifts=shifts),
                                  encode_merge_input(moved, b.relative_exposure, bracket.response))
    merger.response = bracket.response
    ours = merger(b.frames, b.relative_exposure, bits=8, shifts=shifts)
    np.testing.assert_array_equal(ours, merger(moved, b.relative_exposure, bits=8))
    assert not np.array_equal(ours, merger(b.frames, b.relative_exposure, bits=8))  # the shifts did something
    with pytest.raises(ValueError, match="shifts must be 3"):
        merger(b.frames, b.relative_exposure, bits=8, shifts=[[1, 0]])


def test_encoding_sorts_by_exposure_and_centres_on_the_reference(bracket):
    b = bracket.bracket
    shuffled = b.frames[[2, 0, 1]]
    exposures = b.relative_exposure[[2, 0, 1]]
    x = encode_merge_input(shuffled, exposures, bracket.response)
    assert x.shape == MERGE_INPUT_SHAPE and x.dtype == np.float32
    full = encode_merge_input(shuffled, exposures, bracket.response, size=(272, 480))  # the bracket's own size
    assert full.shape == (1, 12, 272, 480)
    h, w = MERGE_INPUT_SHAPE[2:]
    for k in range(3):  # short, reference, long
        area = cv2.resize(b.frames[k], (w, h), interpolation=cv2.INTER_AREA)  # the 2 x 2 means, rounded
        np.testing.assert_allclose(x[0, 3 * k:3 * k + 3], area.transpose(2, 0, 1).astype(np.float32) / 255, atol=1e-6)
        np.testing.assert_allclose(full[0, 3 * k:3 * k + 3], b.frames[k].transpose(2, 0, 1) / np.float32(255),
                                   atol=1e-6)
    assert np.median(x[0, 10, ::2, ::2]) == pytest.approx(0.5, abs=1e-6)
    # one more stop of exposure is 1/32 of the encoding range: the long frame sits 4 stops above the reference
    assert np.median(x[0, 11] - x[0, 10]) == pytest.approx(0.0, abs=0.05)


def test_fallback_skips_the_frames_the_gate_rejected():
    """A moving red object in the short frame over a background the reference and the long frame clip: the gate
    rejects the short frame's pixel (its green and blue fall below the clipped reference's bound), every channel
    then falls back, and it must fall back on the reference's clipped bound in all three, as the classical
    merge with deghosting does (its own kernel and masks): the short frame's red beside the reference's green
    and blue painted magenta and yellow patches."""
    from edgehdr.bracket import Bracket
    from edgehdr.hdr.crf import CameraResponse, ResponseCurve

    response = CameraResponse.from_curve(ResponseCurve.parse("srgb"), 8)
    frames = np.full((3, 32, 32, 3), 255, np.uint8)
    frames[0] = 120  # the short frame sees the background grey below clipping
    frames[0, 8:24, 8:24] = (200, 10, 10)  # and the object where the others clip the background
    b = Bracket(frames=frames, exposure_s=[1 / 400, 1 / 100, 1 / 25], gain=[1.0] * 3, bits=8)
    ours = merge_with_weights(b, np.full((3, 4, 4), 1 / 3, np.float32), response=response)
    classical = merge_debevec(b, response=response, weighting="tutorial", deghost=True)
    bound = np.exp(response.log_lut()[:, 255]) / b.relative_exposure[1]  # the reference's clipped bound
    inside = ours[12:20, 12:20].reshape(-1, 3)
    np.testing.assert_allclose(inside, np.broadcast_to(bound, inside.shape), rtol=1e-4)
    np.testing.assert_allclose(ours[12:20, 12:20], classical[12:20, 12:20], rtol=1e-3)
    assert np.ptp(inside, axis=1).max() <= 1e-3 * inside.max()  # no colour cast from mixed frames


def test_fallback_keeps_a_frame_that_differs_a_little_in_another_channel():
    """The reference clips red only; the short frame measures it but the gate rejects the short frame for its green
    and blue, so red falls back. Green a few codes outside the gate's span (JPEG noise): the fallback still takes
    the short frame's red measurement (the classical rule would take the reference's clipped bound). Green far
    outside (a moving object): the short frame does not serve, red takes the reference's bound (the kernel
    before ``fallback_gate_tables`` took the object's red)."""
    from edgehdr.bracket import Bracket
    from edgehdr.hdr.crf import CameraResponse, ResponseCurve
    from edgehdr.hdr.neural_merge import fallback_gate_tables, gate_spans, gate_tables

    curve = ResponseCurve.parse("srgb")
    response = CameraResponse.from_curve(curve, 8)
    b = Bracket(frames=np.zeros((3, 16, 16, 3), np.uint8), exposure_s=[1 / 400, 1 / 100, 1 / 25], gain=[1.0] * 3,
                bits=8)
    rel = b.relative_exposure / b.relative_exposure[1]
    zr = 60  # the reference's green and blue
    strict = gate_spans(*gate_tables(response, rel))[0, 256 + zr]
    loose = gate_spans(*fallback_gate_tables(response, rel))[0, 256 + zr]
    strict_end, loose_end = ((s & 0xFFFFFFFF) + (s >> 32) for s in (strict, loose))
    near, far = int(strict_end) + 6, int(loose_end) + 30
    assert near < loose_end and far < 248  # outside the gate's span; inside / outside the fallback's, not clipped

    def code(x: float) -> int:
        return int(np.rint(255 * curve.forward(np.minimum(np.float64(x), 1.0))))

    green = float(np.exp(response.log_lut()[1, zr]))  # the scene, in units of the reference's exposure
    frames = b.frames
    frames[1] = (255, zr, zr)
    frames[2] = (255, code(green * rel[2]), code(green * rel[2]))
    frames[0] = (code(1.5 * rel[0]), near, near)
    frames[0, :, 8:] = (code(1.5 * rel[0]), far, far)
    out = merge_with_weights(b, np.full((3, 4, 4), 1 / 3, np.float32), response=response)
    lut = response.log_lut()
    short_red = np.exp(lut[0, frames[0, 0, 0, 0]]) / b.relative_exposure[0]
    bound = np.exp(lut[0, 255]) / b.relative_exposure[1]
    np.testing.assert_allclose(out[:, :8, 0], short_red, rtol=1e-4)
    np.testing.assert_allclose(out[:, 8:, 0], bound, rtol=1e-4)
    assert short_red > 1.2 * bound  # the two answers are far apart


@needs_torch
def test_training_twin_matches_the_fused_kernel(bracket):
    import torch

    from edgehdr.hdr.neural_merge import fallback_gate_tables, gate_tables, merge_weight_table
    from edgehdr.models.training.train_merge import CROP, _crop_tensors, merge_twin

    b = bracket.bracket
    lo2, hi2 = gate_tables(bracket.response, b.relative_exposure)  # frames are shortest first
    loose_lo2, loose_hi2 = fallback_gate_tables(bracket.response, b.relative_exposure)
    sample = {"codes": b.frames, "lo2": lo2, "hi2": hi2, "loose_lo2": loose_lo2, "loose_hi2": loose_hi2,
              "log_t": np.log(b.relative_exposure).astype(np.float32),
              "log_lut": bracket.response.log_lut(), "truth": bracket.radiance, "norm": 1.0,
              "x": encode_merge_input(b, response=bracket.response)[0]}
    x, log_rad, valid, fallback, _, _ = _crop_tensors(sample, 0, 0, merge_weight_table(256))
    logits = torch.randn(1, 3, CROP // 4, CROP // 4, generator=torch.Generator().manual_seed(0))
    twin = merge_twin(logits, *(torch.from_numpy(a[None]) for a in (log_rad, valid, fallback)), (CROP, CROP))
    kernel = merge_with_weights(np.ascontiguousarray(b.frames[:, :CROP, :CROP]), softmax_weights(logits.numpy()),
                                b.relative_exposure, bracket.response)
    np.testing.assert_allclose(twin[0].numpy().transpose(1, 2, 0), kernel, rtol=1e-4)



@needs_torch
def test_real_training_brackets_come_from_the_training_photographs_only(tmp_path):
    """train_merge --real: re-photographed crops of the training photographs, never of a held-out one (here a
    flat photograph, where the training one is noise), at the asked size, with their exact radiance."""
    from edgehdr.io import write_radiance
    from edgehdr.models.training.splits import REAL_HELD_OUT
    from edgehdr.models.training.train_merge import real_merge_samples

    rng = np.random.default_rng(4)
    write_radiance(tmp_path / "train_photo.hdr", rng.uniform(0.5, 2.0, (200, 320, 3)).astype(np.float32))
    write_radiance(tmp_path / f"{REAL_HELD_OUT[0]}.hdr", np.full((200, 320, 3), 500.0, np.float32))
    samples, names = real_merge_samples(3, seed=2, height=96, width=160, root=tmp_path)
    assert names == ["train_photo"] and len(samples) == 3
    for s in samples:
        assert s["codes"].shape == (3, 96, 160, 3) and s["truth"].shape == (96, 160, 3)
        truth = s["truth"]
        assert np.isfinite(truth).all() and truth.min() > 0
        # the noisy photograph (neighbours differ by 0.16 in log measured), not the flat one (0.004)
        assert np.median(np.abs(np.diff(np.log(truth), axis=1))) > 0.05
        assert s["x"].shape == (12, 48, 80)  # trained at half the bracket's size (``training_encoding``)
    # --extra-photos: the extra training photographs join, still never the held-out one
    from edgehdr.models.training.splits import extra_photos

    extras = [n for n, _ in extra_photos(max_side=8)]
    samples, names = real_merge_samples(1, seed=2, height=48, width=80, root=tmp_path, extra=True)
    assert names == sorted(["train_photo", *extras]) and len(samples) == len(names)


@needs_torch
def test_merge_net_split_fusion_is_the_concatenation_and_the_reexport_keeps_the_function(tmp_path):
    """MergeNet's decoder fuses ``up(W_low * low) + W_skip * skip + b`` (no concatenation in the exported graph):
    the same function as the 1 x 1 convolution of ``concat(up(low), skip)`` written out here with the same
    parameters; and ``train_merge --reexport`` gives the shipped weights again (ONNX Runtime on both files)."""
    import torch
    import torch.nn.functional as F

    from edgehdr.models.training.train_merge import load_merge_onnx
    from edgehdr.models.training.train_merge import main as train_main

    model, props = load_merge_onnx(model_path("merge_net"))
    x = torch.rand(1, *MERGE_INPUT_SHAPE[1:], generator=torch.Generator().manual_seed(3))

    def concatenated(step, low, skip):
        return step(torch.cat([F.interpolate(low, scale_factor=2, mode="bilinear", align_corners=False), skip], 1))

    with torch.no_grad():
        e1 = model.enc1(x)
        e2 = model.enc2(e1)
        e3 = model.mid(model.enc3(e2))
        d1 = concatenated(model.dec1, concatenated(model.dec2, e3, e2), e1)
        reference = model.head(d1)
        split = model(x)
    assert float(reference.abs().max()) > 0.1  # trained weights: not the zero head
    torch.testing.assert_close(split, reference, rtol=0, atol=1e-5)

    out = tmp_path / "merge_net.onnx"
    assert train_main(["--reexport", str(model_path("merge_net")), "-o", str(out)]) == 0
    import onnx

    again = onnx.load(str(out))
    assert "Concat" not in {n.op_type for n in again.graph.node}
    again_props = {p.key: p.value for p in again.metadata_props}
    assert again_props["edgehdr.recipe"] == props["edgehdr.recipe"]
    # the training's source revision is kept; a file that never recorded one is not credited to today's commit
    if "edgehdr.source" in props:
        assert again_props["edgehdr.source"] == props["edgehdr.source"]
    else:
        assert again_props["edgehdr.source"].startswith("unrecorded (weights re-exported at ")
    feed = {"bracket": x.numpy()}
    with OnnxRuntimeRunner(model_path("merge_net")) as shipped, OnnxRuntimeRunner(out) as reexported:
        np.testing.assert_allclose(reexported.run(feed)["weights"], shipped.run(feed)["weights"], rtol=0, atol=1e-5)
    with pytest.raises(ValueError, match="not an exported MergeNet"):
        load_merge_onnx(model_path("dimming_net"))
    # An edited graph whose upsampled half reads its weights through a node: named, not a KeyError.
    producers = {o: n for n in again.graph.node for o in n.output}
    resize = next(n for n in again.graph.node if n.op_type == "Resize")
    low = producers[resize.input[0]]
    again.graph.node.insert(0, onnx.helper.make_node("Identity", [low.input[1]], ["edited_weight"]))
    low.input[1] = "edited_weight"
    onnx.save(again, tmp_path / "edited.onnx")
    with pytest.raises(ValueError, match="are not initializers"):
        load_merge_onnx(tmp_path / "edited.onnx")


def test_the_working_size_is_the_model_files_input_shape(tmp_path, bracket, merger):
    """The network is fully convolutional: the merger takes the bracket at its model's input size. The shipped
    weights with their input set to 480 x 272 (the size they were exported at before) run there; on the same
    weights both sizes merge this moving bracket within 0.3 dB PU21 of each other against the truth."""
    import onnx

    from edgehdr.quality import pu21_psnr

    assert merger.size == MERGE_INPUT_SHAPE[2:]
    model = onnx.load(str(model_path("merge_net")))
    for value, dims in ((model.graph.input[0], (1, 12, 272, 480)), (model.graph.output[0], (1, 3, 136, 240))):
        for d, n in zip(value.type.tensor_type.shape.dim, dims, strict=True):
            d.dim_value = n
    onnx.save(model, tmp_path / "merge_net_480.onnx")
    b = bracket.bracket
    with OnnxRuntimeRunner(tmp_path / "merge_net_480.onnx") as runner:
        wide = NeuralMerger(runner, bracket.response)
        assert wide.size == (272, 480)
        prob = wide.weights(b.frames, b.relative_exposure, bits=8)
        assert prob.shape == (3, 136, 240)
        x = encode_merge_input(b.frames, b.relative_exposure, bracket.response, size=(272, 480))
        logits = runner.run({"bracket": x})["weights"]
        np.testing.assert_array_equal(prob, softmax_weights(logits)[np.argsort(np.argsort(b.relative_exposure))])
        merged_wide = wide(b.frames, b.relative_exposure, bits=8)
    shipped = NeuralMerger(merger.runner, bracket.response)
    merged = shipped(b.frames, b.relative_exposure, bits=8)
    assert shipped.weights(b.frames, b.relative_exposure, bits=8).shape == (3, *MERGE_OUTPUT_SHAPE[2:])
    assert abs(pu21_psnr(merged, bracket.radiance) - pu21_psnr(merged_wide, bracket.radiance)) < 0.3
    assert not np.array_equal(merged, merged_wide)  # the two sizes did give different weights
    assert working_size((1, 12, "h", "w")) == MERGE_INPUT_SHAPE[2:]  # dynamic: the default
    assert working_size(("N", 12, 64, 96)) == (64, 96)
    for bad in ((1, 9, 136, 240), (2, 12, 136, 240), (1, 12, 130, 240), (12, 136, 240)):
        with pytest.raises(ValueError, match="merge model input"):
            working_size(bad)


@needs_torch
def test_reexport_at_another_working_size(tmp_path, bracket, capsys):
    """``train_merge --reexport --size WxH`` writes the same weights for another working size, which the merger then
    takes (the shipped file's logits at 120 x 68 against the new file's on the same input: the same network); a
    size that is not a multiple of 8 is refused by name."""
    from edgehdr.models.training.train_merge import main as train_main

    out = tmp_path / "merge_net_128.onnx"
    assert train_main(["--reexport", str(model_path("merge_net")), "--size", "128x72", "-o", str(out)]) == 0
    assert json.loads(out.with_name(out.name + ".manifest.json").read_text())["inputs"][0]["shape"] == [1, 12, 72, 128]
    b = bracket.bracket
    with OnnxRuntimeRunner(out) as runner:
        merger = NeuralMerger(runner, bracket.response)
        assert merger.size == (72, 128)
        assert merger.weights(b.frames, b.relative_exposure, bits=8).shape == (3, 36, 64)
        x = np.random.default_rng(0).random(MERGE_INPUT_SHAPE, np.float32)
        with OnnxRuntimeRunner(model_path("merge_net")) as shipped:
            # fully convolutional: the 72 x 128 file on the top-left 72 x 128 of an input agrees with the shipped
            # file away from the crop's edges (zero padding differs there; the receptive field is about 40 px)
            small = runner.run({"bracket": np.ascontiguousarray(x[..., :72, :128])})["weights"]
            full = shipped.run({"bracket": x})["weights"]
            np.testing.assert_allclose(small[..., :12, :40], full[..., :12, :40], atol=1e-4)
    with pytest.raises(SystemExit):
        train_main(["--reexport", str(model_path("merge_net")), "--size", "130x72", "-o", str(out)])
    assert "multiples of 8" in capsys.readouterr().err


def test_shipped_model_matches_its_manifest_and_budget():
    path = model_path("merge_net")
    manifest = Manifest.load(Manifest.path_for(path))
    assert manifest.source_onnx_sha256 == sha256_file(path)
    assert manifest.inputs[0]["shape"] == list(MERGE_INPUT_SHAPE)
    assert manifest.outputs[0]["shape"] == list(MERGE_OUTPUT_SHAPE)
    import onnx

    params = sum(int(np.prod(t.dims)) for t in onnx.load(str(path)).graph.initializer)
    assert params <= 100_000


def test_shipped_model_against_the_classical_merge_on_held_out_scenes(merger):
    """Held-out scenes (seeds never trained on), measured against the exact radiance: on the static versions
    >= 1 dB over the classical merge in PSNR-mu and PU21-PSNR (noise-aware weights); on the moving versions
    above deghosting (measured on these three: +1.0 dB PSNR-mu, +0.6 dB PU21-PSNR) and far above none."""
    from edgehdr.models.training.evaluate_merge import evaluate

    report = evaluate(merger, range(100_000, 100_003))
    m = report["mean"]
    for metric in ("psnr_mu", "pu_psnr"):
        assert m[f"static_network_{metric}"] >= max(m[f"static_plain_{metric}"], m[f"static_deghost_{metric}"]) + 1.0
        assert m[f"dynamic_network_{metric}"] >= m[f"dynamic_deghost_{metric}"] + 0.3, m
        assert m[f"dynamic_network_{metric}"] >= m[f"dynamic_plain_{metric}"] + 2.0, m


def test_shipped_model_against_deghosting_on_the_unseen_photographs(merger):
    """The ten evaluation-only photographs (in the repository, so this always runs), re-photographed into moving
    brackets as evaluate_merge --real --unseen does: the target, +1 dB PU21-PSNR over classical deghosting, on their
    mean (measured +2.33), and above deghosting on every one (+0.31 to +3.93)."""
    from edgehdr.hdr.merge import merge_debevec
    from edgehdr.models.training.evaluate_merge import HOLDOUT_SEED
    from edgehdr.models.training.merge_data import real_dynamic_bracket
    from edgehdr.models.training.splits import photo_seed, unseen_photos
    from edgehdr.quality import pu21_psnr

    gains, before = {}, merger.response
    try:
        for name, radiance in unseen_photos():
            frames, exposures, truth, _, response = real_dynamic_bracket(radiance, photo_seed(name, HOLDOUT_SEED))
            merger.response = response
            gains[name] = (pu21_psnr(merger(frames, exposures, bits=8), truth)
                           - pu21_psnr(merge_debevec(frames, exposures, response, deghost=True), truth))
    finally:
        merger.response = before  # the module's other tests share the merger
    assert len(gains) == 10 and np.mean(list(gains.values())) >= 1.0, gains
    assert min(gains.values()) > 0.0, gains


def test_neural_merge_runs_in_the_pipeline(run_pipeline):
    seen, final, merge_stage = run_pipeline(
        {"source": {"width": 320, "height": 180, "fps": 30, "shake_px": 4}, "merge": {"method": "neural"},
         "dimming": {"enabled": False}, "bridge": {"enabled": False}, "preview": {"enabled": False},
         "planner": {"enabled": False}, "infer": {"backend": "cpu"}},
        lambda ctx: (ctx.aligned or ctx.bracket, ctx.shifts, ctx.radiance.copy()), 6,
        inspect=lambda rt: rt.pipeline.stages[1].fn)
    assert len(seen) >= 6 and final["frames_failed"] == 0 and merge_stage.fallbacks == 0
    # the alignment's shifts (AlignStage.defer_shifts; None where there were none), applied by the merge stage as it
    # reads: the merge of the moved frames. Whether the slow shake moves a frame within a run depends on when it
    # runs (the exact shifted read is test_deferred_shifts_give_the_merge_of_the_moved_frames's).
    for bracket, shifts, radiance in seen:
        frames = bracket.frames if shifts is None else shifted_stack(bracket.frames, shifts)
        np.testing.assert_array_equal(radiance, merge_stage.merger(frames, bracket.relative_exposure,
                                                                    bits=bracket.bits))


def test_int8_export_of_the_merge_net_stays_within_its_budget(tmp_path):
    from export.cli import main as export_main
    from export.trt_check import check_qdq_for_tensorrt

    rc = export_main(["build", str(model_path("merge_net")), "--precision", "int8", "--calib-count", "12",
                      "--holdout-count", "6", "-o", str(tmp_path)])
    report = json.loads((tmp_path / "merge_net.int8.validation.json").read_text())
    assert rc == 0 and report["budget"]["passed"] and report["budget"]["kind"] == "task"
    assert report["task"]["merge_psnr_mu_fp32_db"] - report["task"]["merge_psnr_mu_converted_db"] <= 0.5
    manifest = json.loads((tmp_path / "merge_net.int8.onnx.manifest.json").read_text())
    assert check_qdq_for_tensorrt(tmp_path / "merge_net.int8.onnx",
                                  float_nodes=manifest["calibration"]["kept_float"]) == []


def test_rows_mostly_falling_back_take_the_same_bound_as_rows_with_a_few():
    """A row where most samples have no usable frame takes the fallback in one branch-free pass over the row, a row
    with a few in the per-sample loop: the same pixels get bit-identical values either way, and the fallback's
    choices among the three frames all occur (shortest bright, reference, longest), with and without the gate."""
    from edgehdr.hdr.crf import CameraResponse, ResponseCurve

    response = CameraResponse.from_curve(ResponseCurve.parse("srgb"), 8)
    rng = np.random.default_rng(11)
    h, w, n = 8, 256, 64
    exposures = np.array([1.0, 0.25, 4.0])  # frame 1 the shortest: the kernel sorts by exposure
    # The first n pixels: codes at the ends, inside the clip margins and mid-tones, mixed per channel and frame, so
    # that some samples fall back, with the gate's and the looser test's verdicts differing across channels.
    codes = np.array([0, 3, 9, 60, 120, 200, 246, 252, 255], np.uint8)
    pattern = codes[rng.integers(0, len(codes), (3, n, 3))]
    frames = np.full((3, h, w, 3), 120, np.uint8)  # the rest of the few rows: the reference measures every sample
    frames[:, :, :n] = pattern[:, None]
    mostly = np.arange(0, h, 2)
    frames[:, mostly, n:] = np.where(rng.random((3, w - n, 3)) < 0.5, 0, 255).astype(np.uint8)[:, None]
    lut = response.log_lut().astype(np.float64)
    candidates = np.exp(lut[np.arange(3)[None, :], pattern] - np.log(exposures)[:, None, None])  # (frame, n, 3)
    for gate in (True, False):
        out = merge_with_weights(frames, np.full((3, 4, 4), 1 / 3, np.float32), exposures, response,
                                 consistency_gate=gate)
        few = np.arange(1, h, 2)
        np.testing.assert_array_equal(out[mostly, :n].view(np.int32),
                                      np.broadcast_to(out[1, :n], (len(mostly), n, 3)).view(np.int32))
        np.testing.assert_array_equal(out[few, :n].view(np.int32),
                                      np.broadcast_to(out[1, :n], (len(few), n, 3)).view(np.int32))
        took = np.isclose(out[0, :n][None], candidates, rtol=1e-5)  # which frame's bound a sample equals
        only = took & (took.sum(axis=0) == 1)[None]
        assert all(only[i].sum() >= 2 for i in range(3)), only.sum(axis=(1, 2))


def test_the_network_merge_refuses_what_its_kernels_cannot_index(bracket):
    """Codes above ``bits`` read past the kernels' tables (no error, radiance up to 8.5e37); a fractional shift was
    truncated and a NaN weight gave radiance 1.0, both without a word. merge_debevec refuses all three."""
    frames, exposures = bracket.bracket.frames, bracket.bracket.relative_exposure
    deep = frames.astype(np.uint16) * 257  # 16-bit codes
    prob = np.full((3, 17, 30), 1 / 3, np.float32)
    for call in (lambda: merge_with_weights(deep, prob, exposures, "srgb", bits=12),
                 lambda: encode_merge_input(deep, exposures, "srgb", bits=12),
                 lambda: merge_debevec(deep, exposures, "srgb", bits=12)):
        with pytest.raises(ValueError, match="hold code 65535 but bits=12 allows at most 4095"):
            call()
    with pytest.raises(ValueError, match="uint8 frames carry 8 bits, not 16"):
        merge_with_weights(frames, prob, exposures, "srgb", bits=16)
    with pytest.raises(ValueError, match=r"shifts must be 3 integer \(dx, dy\) pairs"):
        merge_with_weights(frames, prob, exposures, "srgb", shifts=[[1.7, 0], [0, 0], [0, -0.5]])
    bad = prob.copy()
    bad[:, 0, 0] = np.nan
    with pytest.raises(ValueError, match="weights hold 3 non-finite values"):
        merge_with_weights(frames, bad, exposures, "srgb")
    np.testing.assert_array_equal(merge_with_weights(frames, prob, exposures, "srgb", shifts=[[1, 0], [0, 0], [0, 0]]),
                                  merge_with_weights(frames, prob, exposures, "srgb",
                                                     shifts=np.array([[1, 0], [0, 0], [0, 0]], np.int32)))
