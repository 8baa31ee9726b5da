"""The edgehdr command end to end on real files: synth -> merge -> tonemap, demo, errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edgehdr.cli import main
from edgehdr.io import read_ldr_image, read_radiance
from edgehdr.quality import pu21_psnr


@pytest.fixture
def synth_dir(tmp_path):
    out = tmp_path / "stack"
    assert main(["-q", "synth", "-o", str(out), "--seed", "3", "--width", "320", "--height", "200",
                 "--shake-px", "4"]) == 0
    return out


def test_synth_merge_tonemap_round_trip(synth_dir, tmp_path):
    truth = read_radiance(synth_dir / "ground_truth.exr")
    merged_path = tmp_path / "merged.exr"
    assert main(["-q", "merge", str(synth_dir), "-o", str(merged_path),
                 "--response", str(synth_dir / "response.json"), "--align", "mtb"]) == 0
    merged = read_radiance(merged_path)
    assert merged.shape == truth.shape
    unaligned_path = tmp_path / "unaligned.exr"
    assert main(["-q", "merge", str(synth_dir), "-o", str(unaligned_path),
                 "--response", str(synth_dir / "response.json"), "--align", "none"]) == 0
    inner = (slice(8, -8), slice(8, -8))
    aligned_db = pu21_psnr(merged[inner], truth[inner])
    # Sub-pixel shake remains after whole-pixel MTB alignment, but alignment must pay off.
    assert aligned_db > 25.0
    assert aligned_db > pu21_psnr(read_radiance(unaligned_path)[inner], truth[inner]) + 2.0
    png = tmp_path / "out.png"
    assert main(["-q", "tonemap", str(merged_path), "-o", str(png), "--operator", "reinhard-local"]) == 0
    sdr = read_ldr_image(png)
    assert sdr.shape == truth.shape and sdr.dtype == np.uint8 and 60 < sdr.mean() < 200


def test_merge_fill_is_the_library_fill_and_changes_only_what_fell_back(tmp_path):
    """``--deghost --fill`` writes ``merge_debevec(..., deghost=True, fill=True)`` of the frames it read; against
    ``--deghost`` alone it changes only samples that no frame measured (clipped or black, or a rejected object's)."""
    from edgehdr.hdr.merge import merge_debevec
    from edgehdr.io import read_ldr_stack

    stack = tmp_path / "moving"
    assert main(["-q", "synth", "-o", str(stack), "--seed", "5", "--width", "320", "--height", "200", "--moving", "3",
                 "--spacing", "4"]) == 0
    args = ["-q", "merge", str(stack), "--response", str(stack / "response.json"), "--align", "none", "--deghost"]
    assert main(args + ["-o", str(tmp_path / "filled.pfm"), "--fill"]) == 0
    assert main(args + ["-o", str(tmp_path / "bound.pfm")]) == 0
    filled, bound = read_radiance(tmp_path / "filled.pfm"), read_radiance(tmp_path / "bound.pfm")
    bracket = read_ldr_stack([str(stack)])
    expected = merge_debevec(bracket, response=str(stack / "response.json"), deghost=True, fill=True)
    np.testing.assert_allclose(filled, expected, rtol=1e-6)
    changed = filled != bound
    frames = bracket.frames
    outside = ((frames >= 8) & (frames <= 247)).all(axis=0)  # every frame reads this sample inside its range
    assert changed.any() and not (changed & outside).any()


def test_synth_over_an_earlier_longer_bracket_leaves_one_bracket(tmp_path):
    """A 5-frame 8-bit bracket, then a 3-frame 16-bit one into the same folder: the folder holds exactly the new
    bracket (its list, frames, truth), the old frames are gone and a file synth never wrote stays."""
    from edgehdr.io import read_ldr_stack

    out = tmp_path / "stack"
    common = ["--width", "64", "--height", "48", "--seed", "1"]
    assert main(["-q", "synth", "-o", str(out), "--exposures", "5", *common]) == 0
    (out / "notes.txt").write_text("mine\n")
    (out / "frame_9.png").write_bytes(b"not listed by synth's list")
    assert sorted(p.name for p in out.glob("frame_*")) == [f"frame_{i}.png" for i in range(5)] + ["frame_9.png"]
    assert main(["-q", "synth", "-o", str(out), "--exposures", "3", "--bits", "16", *common]) == 0
    assert sorted(p.name for p in out.glob("frame_*")) == ["frame_0.tif", "frame_1.tif", "frame_2.tif",
                                                           "frame_9.png"]
    assert (out / "notes.txt").read_text() == "mine\n"
    bracket = read_ldr_stack([str(out)])
    assert len(bracket.frames) == 3 and bracket.frames.dtype == np.uint16


def test_synth_refuses_to_overwrite_a_bracket_it_did_not_write(tmp_path, capsys):
    """A folder holding the user's own bracket (a list naming their photographs, their response) is refused, named,
    and left byte for byte as it was; it used to be overwritten with exit 0."""
    common = ["--width", "64", "--height", "48"]
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "list.txt").write_text("photo.jpg 100\nphoto2.jpg 50\n")
    (mine / "response.json").write_text('{"mine": 1}')
    assert main(["-q", "synth", "-o", str(mine), *common]) == 2
    err = capsys.readouterr().err
    assert "list.txt" in err and "photo.jpg" in err and "did not write" in err
    assert (mine / "list.txt").read_text() == "photo.jpg 100\nphoto2.jpg 50\n"
    assert (mine / "response.json").read_text() == '{"mine": 1}' and sorted(p.name for p in mine.iterdir()) == [
        "list.txt", "response.json"]
    (mine / "list.txt").unlink()  # a response of one's own without a list: refused too
    assert main(["-q", "synth", "-o", str(mine), *common]) == 2
    assert "response.json" in capsys.readouterr().err and (mine / "response.json").read_text() == '{"mine": 1}'


@pytest.mark.parametrize("code", [0, 255])
def test_merge_refuses_a_bracket_that_measures_nothing(tmp_path, capsys, code):
    """Every frame black (or clipped) everywhere: the merge used to write a flat image of the exposure bound with
    exit 0 (black) or fail calibrating with a message about an internal table (clipped)."""
    stack = tmp_path / "flat"
    stack.mkdir()
    for i in range(3):
        cv2.imwrite(str(stack / f"f{i}.png"), np.full((48, 64, 3), code, np.uint8))
    (stack / "list.txt").write_text("f0.png 100\nf1.png 25\nf2.png 6\n")
    for response in ("auto", "srgb"):
        assert main(["-q", "merge", str(stack), "-o", str(tmp_path / "m.exr"), "--response", response]) == 2
        err = capsys.readouterr().err
        assert f"{stack}: every frame is black (code 0) or clipped (code 255) everywhere" in err
    assert not (tmp_path / "m.exr").exists()
    if code == 255:  # one grey pixel, the same in every frame: nothing changes with exposure to calibrate from
        frame = np.full((48, 64, 3), 255, np.uint8)
        frame[0, 0] = 100
        for i in range(3):
            cv2.imwrite(str(stack / f"f{i}.png"), frame)
        assert main(["-q", "merge", str(stack), "-o", str(tmp_path / "m.exr")]) == 2
        assert f"{stack}: calibrating the camera response failed" in capsys.readouterr().err


def test_merge_with_calibrated_response_saves_it(synth_dir, tmp_path):
    out, resp = tmp_path / "m.pfm", tmp_path / "resp.json"
    assert main(["-q", "merge", str(synth_dir / "list.txt"), "-o", str(out), "--response", "auto",
                 "--save-response", str(resp)]) == 0
    saved = json.loads(resp.read_text())
    assert saved["format"] == "edgehdr-camera-response" and saved["meta"]["method"] == "debevec-malik-1997"
    assert np.all(np.isfinite(read_radiance(out)))


def test_merge_never_writes_over_its_inputs_and_saves_the_response_only_with_the_radiance(synth_dir, tmp_path,
                                                                                          capsys):
    """A response saved as .txt is a valid format, and the folder's list.txt is a .txt: refused, not overwritten.
    A merge whose radiance cannot be written leaves no response behind (both files or neither)."""
    listing = (synth_dir / "list.txt").read_bytes()
    frame = (synth_dir / "frame_0.png").read_bytes()
    for args in ([str(synth_dir)], [str(synth_dir / "list.txt")], ["--list", str(synth_dir / "list.txt")]):
        target = synth_dir / "list.txt"
        assert main(["merge", *args, "-o", str(tmp_path / "m.exr"), "--save-response", str(target)]) == 2
        err = capsys.readouterr().err
        assert f"--save-response {target}: is one of the inputs being merged" in err, err
    assert (synth_dir / "list.txt").read_bytes() == listing and (synth_dir / "frame_0.png").read_bytes() == frame
    assert not (tmp_path / "m.exr").exists()
    # The radiance's write fails (its name is taken by a folder, found only when writing): no response either.
    resp = tmp_path / "resp.json"
    blocker = tmp_path / "late.exr"
    real_write = __import__("edgehdr.io", fromlist=["write_radiance"]).write_radiance

    def failing_write(path, *a, **k):
        blocker.mkdir()
        return real_write(path, *a, **k)

    import edgehdr.io

    edgehdr.io.write_radiance, saved = failing_write, edgehdr.io.write_radiance
    try:
        assert main(["merge", str(synth_dir), "-o", str(blocker), "--save-response", str(resp)]) != 0
    finally:
        edgehdr.io.write_radiance = saved
    err = capsys.readouterr().err
    assert "late.exr" in err and "resp.json" not in err, err  # the error names the file that failed
    assert not list(tmp_path.glob(".resp.json.*")), list(tmp_path.iterdir())
    assert blocker.is_dir() and not list(blocker.iterdir())


def test_errors_exit_2_and_name_the_file(tmp_path, capsys):
    bad = tmp_path / "bad.exr"
    bad.write_bytes(b"nope")
    assert main(["tonemap", str(bad), "-o", str(tmp_path / "x.png")]) == 2
    assert "bad.exr" in capsys.readouterr().err
    assert main(["merge", str(tmp_path / "missing.png"), str(tmp_path / "m2.png"), "-o", str(tmp_path / "o.exr")]) == 2
    assert "missing.png" in capsys.readouterr().err
    assert not (tmp_path / "x.png").exists() and not (tmp_path / "o.exr").exists()


def test_demo_runs_the_pipeline_to_the_controller_and_writes_results(tmp_path):
    out = tmp_path / "demo"
    result = subprocess.run([sys.executable, "-m", "edgehdr.cli", "demo", "-o", str(out), "--width", "480",
                             "--height", "270", "--seconds", "3"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert "[3/3]" in result.stderr and " fps, " in result.stderr  # live progress lines
    for name in ("contact_sheet.png", "merged.exr", "stats.json", "tonemapped.png", "lcd.png", "zones.csv"):
        assert (out / name).stat().st_size > 0, name
    stats = json.loads((out / "stats.json").read_text())
    # frames flowed (90 offered in 3 s; a loaded machine completes fewer) and none failed
    assert stats["frames_completed"] >= 10 and stats["frames_failed"] == 0
    assert stats["controller"]["frames_applied"] > 0 and stats["controller"]["crc_errors"] == 0
    assert stats["link"]["config_acked"] >= 1
    assert stats["quality"]["frames_scored"] >= 1 and 0.0 < stats["quality"]["last"] < 1.0  # NoR-VDPNet, every 15th
    zones = np.loadtxt(out / "zones.csv", delimiter=",")
    assert zones.shape == (18, 32) and zones.max() <= 4095
    sheet = read_ldr_image(out / "contact_sheet.png")
    assert sheet.shape[1] == 3 * 480
    # The scene's darkest 5 % (the room, 7 stops below the wall) is shown, not black: Reinhard's eq. 9 alone puts
    # it at code 1 here; the demo's base-layer compression at about 18.
    from edgehdr.tonemap import luminance, reinhard_local

    radiance, sdr = read_radiance(out / "merged.exr"), read_ldr_image(out / "tonemapped.png")
    lum = luminance(radiance)
    darkest = lum <= np.quantile(lum, 0.05)
    assert np.median(sdr[darkest]) >= 10 > np.median(reinhard_local(radiance)[darkest])
    assert not list(out.glob(".*tmp*")), "no temporary files left behind"


def test_tonemap_neural_operator_matches_the_runtime_network(tmp_path, capsys):
    """``tonemap --operator neural`` writes what the real-time TMO network gives for the same radiance."""
    from edgehdr.infer import open_runner
    from edgehdr.io import write_radiance
    from edgehdr.models import model_path
    from edgehdr.synth import make_scene
    from edgehdr.tonemap.neural import NeuralToneMapper

    radiance = make_scene(4, 180, 320).radiance
    hdr = tmp_path / "scene.exr"
    write_radiance(hdr, radiance)
    radiance = read_radiance(hdr)  # what the command reads (half floats)
    png = tmp_path / "neural.png"
    assert main(["-q", "tonemap", str(hdr), "-o", str(png), "--operator", "neural", "--backend", "cpu"]) == 0
    runner = open_runner(model_path("tmo_net"), prefer="cpu")
    try:
        expected = NeuralToneMapper(runner, time_constant_s=0.0)(radiance)
    finally:
        runner.close()
    np.testing.assert_array_equal(read_ldr_image(png), expected)
    # A different operator's output differs: the option really selects the network.
    other = tmp_path / "reinhard.png"
    assert main(["-q", "tonemap", str(hdr), "-o", str(other)]) == 0
    assert np.abs(read_ldr_image(other).astype(int) - expected).mean() > 1.0
    # --model belongs to the network; a model that does not exist is named.
    assert main(["tonemap", str(hdr), "-o", str(tmp_path / "x.png"), "--model", "tmo_net"]) == 2
    assert "--model applies to --operator neural" in capsys.readouterr().err
    assert main(["tonemap", str(hdr), "-o", str(tmp_path / "y.png"), "--operator", "neural",
                 "--model", str(tmp_path / "none.onnx")]) == 2
    assert "none.onnx" in capsys.readouterr().err


def test_tonemap_base_compression_is_the_operators_and_only_reinhard_locals(tmp_path, capsys):
    """``--base-compression`` gives what ``reinhard_local(..., base_compression=...)`` gives; with any other
    operator it is refused, naming the option, rather than ignored."""
    from edgehdr.io import write_radiance
    from edgehdr.synth import make_scene
    from edgehdr.tonemap import reinhard_local

    hdr = tmp_path / "scene.exr"
    write_radiance(hdr, make_scene(4, 180, 320).radiance)
    png = tmp_path / "lifted.png"
    assert main(["-q", "tonemap", str(hdr), "-o", str(png), "--operator", "reinhard-local",
                 "--base-compression", "0.5"]) == 0
    np.testing.assert_array_equal(read_ldr_image(png), reinhard_local(read_radiance(hdr), base_compression=0.5))
    for operator in ("reinhard", "drago", "parametric", "neural"):
        assert main(["tonemap", str(hdr), "-o", str(tmp_path / f"{operator}.png"), "--operator", operator,
                     "--base-compression", "0.5"]) == 2, operator
        assert f"--base-compression applies to --operator reinhard-local, not {operator}" in capsys.readouterr().err
        assert not (tmp_path / f"{operator}.png").exists()


def test_runtime_bench_with_hand_shake(capsys):
    """`edgehdr bench --runtime --shake-px N`: the daemon's pipeline on a shaking camera, whose shifts the
    alignment hands to the merge (AlignStage.defer_shifts): frames complete and none fails; a shake out of
    the configuration's range is refused with exit 2, naming the option."""
    assert main(["-q", "bench", "--runtime", "--seconds", "1", "--size", "320x180", "--shake-px", "6"]) == 0
    header = capsys.readouterr().out.splitlines()[0]
    assert "hand shake 6 px" in header and ", 0 failed" in header
    frames = int(header.split(" frames,")[0].rsplit(" ", 1)[1].split("/")[0])
    assert frames >= 20
    with pytest.raises(SystemExit) as exc:
        main(["bench", "--runtime", "--shake-px", "65"])
    assert exc.value.code == 2
    assert "--shake-px" in capsys.readouterr().err


def test_demo_writes_all_its_results_or_none(tmp_path, monkeypatch):
    """A failure while the results are written (a full disk at stats.json) leaves an earlier run's files as they were
    and none of the new ones: the six files are staged and moved in together."""
    import edgehdr.io
    from edgehdr.demo import run_demo

    out = tmp_path / "demo"
    out.mkdir()
    (out / "stats.json").write_text("an earlier run\n")
    real = edgehdr.io.write_text_atomic

    def full_disk(path, text):
        if Path(path).name == "stats.json":
            raise OSError(28, f"{path}: cannot write (No space left on device)")
        return real(path, text)

    monkeypatch.setattr(edgehdr.io, "write_text_atomic", full_disk)
    with pytest.raises(OSError, match="No space left"):
        run_demo(out, seconds=1.0, quiet=True, width=160, height=96)
    assert sorted(p.name for p in out.iterdir()) == ["stats.json"]
    assert (out / "stats.json").read_text() == "an earlier run\n"
    monkeypatch.setattr(edgehdr.io, "write_text_atomic", real)
    run_demo(out, seconds=1.0, quiet=True, width=160, height=96)
    assert sorted(p.name for p in out.iterdir()) == ["contact_sheet.png", "lcd.png", "merged.exr", "stats.json",
                                                     "tonemapped.png", "zones.csv"]
    assert json.loads((out / "stats.json").read_text())["frames_completed"] > 0


def test_dim_prints_strict_json_where_a_metric_is_undefined(tmp_path, capsys):
    """An all-black frame is shown exactly, so its PU-PSNR is infinite: stdout carries null, as metrics.json does,
    not the 'Infinity' that strict JSON readers refuse."""
    from edgehdr.io import write_radiance

    write_radiance(tmp_path / "black.exr", np.zeros((48, 64, 3), np.float32))
    assert main(["-q", "dim", str(tmp_path / "black.exr"), "--input-referred", "display", "-o",
                 str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    strict = json.loads(printed, parse_constant=lambda name: pytest.fail(f"non-JSON constant {name}"))
    assert strict["pu_psnr_db"] is None
    assert json.loads((tmp_path / "out" / "metrics.json").read_text())["metrics"]["pu_psnr_db"] is None
