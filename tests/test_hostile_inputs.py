"""Hostile and careless input to the readers and the CLI: a clear error naming the file, never a traceback.

Each case asserts the exit status (2 for bad input) and that the message names the file,
option or key; a corrupter driven by hypothesis mutates valid files of every format the
readers take and checks that each either decodes to a sane image or raises ``ValueError``
naming the file, nothing else.
"""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

import cv2
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgehdr.cli import main
from edgehdr.io import read_ldr_image, read_ldr_stack, read_list_file, read_radiance, write_radiance
from edgehdr.io.headers import check_image_header, jpeg_is_complete


def _run(argv, capsys):
    rc = main(["-q", *argv])
    return rc, capsys.readouterr().err


@pytest.fixture(scope="module")
def radiance():
    rng = np.random.default_rng(3)
    base = np.exp(rng.uniform(-3, 4, size=(24, 32, 1))).astype(np.float32)
    return base * np.array([1.0, 0.8, 0.6], np.float32)


def _stack(folder: Path, n: int = 3, *, suffix: str = ".png", size=(40, 56)) -> list[Path]:
    rng = np.random.default_rng(0)
    scene = rng.uniform(0.05, 1.0, size=(*size, 3))
    scene = cv2.GaussianBlur(scene, (0, 0), 2.0)
    paths, lines = [], []
    for i in range(n):
        t = 0.25 * 4.0 ** i
        codes = np.clip(255 * (scene * t) ** (1 / 2.2), 0, 255).astype(np.uint8)
        p = folder / f"f{i}{suffix}"
        cv2.imwrite(str(p), codes)
        paths.append(p)
        lines.append(f"{p.name} {1 / t:g}")
    (folder / "list.txt").write_text("\n".join(lines) + "\n")
    return paths


# ------------------------------------------------------------------------------------------------ headers


def _rgbe(path: Path, resolution: bytes) -> Path:
    cv2.imwrite(str(path), np.ones((8, 10, 3), np.float32))
    raw = path.read_bytes().replace(b"-Y 8 +X 10", resolution)
    path.write_bytes(raw)
    return path


def _pfm(path: Path, size: bytes) -> Path:
    cv2.imwrite(str(path), np.ones((8, 10, 3), np.float32))
    path.write_bytes(path.read_bytes().replace(b"10 8", size, 1))
    return path


@pytest.mark.parametrize("make,message", [
    (lambda p: _rgbe(p / "big.hdr", b"-Y 100000 +X 100000"), r"big\.hdr: header declares 100000 x 100000 .* limit"),
    (lambda p: _rgbe(p / "neg.hdr", b"-Y -5 +X -5"), r"neg\.hdr: header declares an image of -5 x -5"),
    (lambda p: _rgbe(p / "bad.hdr", b"-Y x +X 5"), r"bad\.hdr: malformed Radiance resolution line"),
    (lambda p: _pfm(p / "big.pfm", b"100000 100000"), r"big\.pfm: header declares 100000 x 100000"),
    (lambda p: _pfm(p / "neg.pfm", b"-5 -5"), r"neg\.pfm: header declares an image of -5 x -5"),
])
def test_radiance_headers_that_lie_are_refused_before_decoding(tmp_path, make, message):
    path = make(tmp_path)
    with pytest.raises(ValueError, match=message):
        read_radiance(path)


def test_exr_decompression_bomb_is_refused_from_its_header(tmp_path):
    import OpenEXR

    # 16384 x 16384 declared (3.2 GB as float RGB) in a file of a few kB: ZIP of zeros.
    path = tmp_path / "bomb.exr"
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage,
              "dataWindow": ((0, 0), (16383, 16383)), "displayWindow": ((0, 0), (16383, 16383))}
    try:
        with OpenEXR.File(header, {"RGB": np.zeros((8, 8, 3), np.float16)}) as exr:
            exr.write(str(path))
    except Exception:  # noqa: BLE001 - the binding checks the window against the pixels
        # Write a small file and patch its dataWindow attribute (box2i: four int32) to declare 16384^2.
        with OpenEXR.File({"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage},
                          {"RGB": np.zeros((8, 8, 3), np.float16)}) as exr:
            exr.write(str(path))
        raw = bytearray(path.read_bytes())
        at = raw.index(b"dataWindow\0box2i\0") + len(b"dataWindow\0box2i\0") + 4
        raw[at:at + 16] = struct.pack("<4i", 0, 0, 16383, 16383)
        path.write_bytes(bytes(raw))
    assert path.stat().st_size < 100_000
    with pytest.raises(ValueError, match=r"bomb\.exr: header declares 16384 x 16384 = 268\.4 MP"):
        read_radiance(path)
    # The limit is configurable: a low one refuses an ordinary image, naming the variable.
    small = tmp_path / "small.exr"
    write_radiance(small, np.ones((20, 30, 3), np.float32))
    with pytest.raises(ValueError, match="EDGEHDR_MAX_PIXELS"):
        read_radiance(small, max_pixels=100)
    assert read_radiance(small).shape == (20, 30, 3)


def test_content_that_does_not_match_the_suffix_is_refused(tmp_path):
    png_as_hdr = tmp_path / "photo.hdr"
    ok, enc = cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))
    png_as_hdr.write_bytes(enc.tobytes())
    with pytest.raises(ValueError, match=r"photo\.hdr: .*does not match its suffix '\.hdr' \(a PNG file\)"):
        read_radiance(png_as_hdr)
    text_as_jpg = tmp_path / "notes.jpg"
    text_as_jpg.write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.jpg: not a readable image"):
        read_ldr_image(text_as_jpg)


def test_declared_size_matches_opencv_for_every_ldr_format(tmp_path):
    img = np.random.default_rng(1).integers(0, 255, size=(37, 53, 3), dtype=np.uint8)
    for suffix in (".png", ".jpg", ".tif", ".bmp", ".ppm"):
        path = tmp_path / f"x{suffix}"
        cv2.imwrite(str(path), img)
        assert check_image_header(path) == (53, 37), suffix
        assert read_ldr_image(path).shape == (37, 53, 3)


# ------------------------------------------------------------------------------------------------ JPEG


@pytest.mark.parametrize("params", [[], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1], [cv2.IMWRITE_JPEG_RST_INTERVAL, 2]])
def test_truncated_jpeg_is_detected_at_every_cut(params):
    img = np.random.default_rng(2).integers(0, 255, size=(48, 64, 3), dtype=np.uint8)
    data = cv2.imencode(".jpg", img, params)[1].tobytes()
    assert jpeg_is_complete(data)
    assert jpeg_is_complete(data + b"trailing maker data")
    for cut in range(2, len(data) - 1, max(1, len(data) // 97)):
        assert not jpeg_is_complete(data[:cut]), cut


def test_truncated_jpeg_in_a_stack_fails_merge_naming_the_file(tmp_path, capsys):
    paths = _stack(tmp_path, suffix=".jpg")
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ValueError, match=r"f1\.jpg: truncated or corrupt JPEG"):
        read_ldr_stack(tmp_path)
    rc, err = _run(["merge", str(tmp_path), "-o", str(tmp_path / "out.exr")], capsys)
    assert rc == 2 and "f1.jpg: truncated or corrupt JPEG" in err
    assert not (tmp_path / "out.exr").exists()


@pytest.mark.parametrize("damage", ["zeroed", "overwritten"])
def test_jpeg_damaged_mid_stream_fails_merge_naming_the_file(tmp_path, capsys, damage):
    """Bytes zeroed or overwritten inside the entropy-coded data, the end marker intact: OpenCV decodes the file
    with a warning on stderr and garbage blocks; the reader refuses it, naming the file and libjpeg's complaint."""
    paths = _stack(tmp_path, suffix=".jpg", size=(240, 320))
    data = bytearray(paths[1].read_bytes())
    start = len(data) * 2 // 3
    if damage == "zeroed":
        data[start:start + 512] = bytes(512)
    else:  # no 0xFF byte: the marker structure stays intact
        data[start:start + 64] = np.random.default_rng(5).integers(0, 255, 64, dtype=np.uint8).tobytes()
    paths[1].write_bytes(bytes(data))
    assert jpeg_is_complete(bytes(data))
    assert cv2.imdecode(np.frombuffer(bytes(data), np.uint8), cv2.IMREAD_UNCHANGED) is not None  # OpenCV takes it
    with pytest.raises(ValueError, match=r"f1\.jpg: (corrupt|truncated or corrupt) JPEG"):
        read_ldr_stack(tmp_path)
    rc, err = _run(["merge", str(tmp_path), "-o", str(tmp_path / "out.exr")], capsys)
    assert rc == 2 and "f1.jpg:" in err and "JPEG" in err
    assert not (tmp_path / "out.exr").exists()


@pytest.mark.parametrize("params", [[], [cv2.IMWRITE_JPEG_PROGRESSIVE, 1], [cv2.IMWRITE_JPEG_RST_INTERVAL, 2],
                                    [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444]])
def test_jpeg_pixels_are_opencvs(tmp_path, params):
    """The strict decoder returns exactly OpenCV's pixels (RGB) for sound files, grey ones as three channels."""
    img = np.random.default_rng(3).integers(0, 255, size=(61, 83, 3), dtype=np.uint8)
    img = cv2.GaussianBlur(img, (5, 5), 0)
    for name, pixels in (("colour.jpg", img), ("grey.jpg", img[:, :, 0])):
        path = tmp_path / name
        path.write_bytes(cv2.imencode(".jpg", pixels, params)[1].tobytes())
        expected = cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1]
        got = read_ldr_image(path)
        assert got.dtype == np.uint8 and got.flags.c_contiguous
        np.testing.assert_array_equal(got, expected)


def test_truncated_exr_names_the_file(tmp_path, radiance):
    path = tmp_path / "r.exr"
    write_radiance(path, radiance)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"r\.exr: not a readable OpenEXR file"):
        read_radiance(path)


# ------------------------------------------------------------------------------------------------ writing


def test_exr_never_holds_inf_auto_switches_to_float(tmp_path, radiance, caplog):
    bright = radiance * (1e6 / radiance.max())
    path = tmp_path / "bright.exr"
    with caplog.at_level("INFO", logger="edgehdr.io"):
        write_radiance(path, bright)
    back = read_radiance(path)
    assert np.all(np.isfinite(back)) and np.allclose(back, bright, rtol=1e-6)
    assert any("32-bit float" in r.getMessage() for r in caplog.records)
    with pytest.raises(ValueError, match=r"exceeds the half-float maximum 65504"):
        write_radiance(tmp_path / "half.exr", bright, exr_pixel_type="half")
    assert not (tmp_path / "half.exr").exists()
    # In range, 'auto' stays half-float (the compact default).
    write_radiance(tmp_path / "small.exr", radiance)
    assert (tmp_path / "small.exr").stat().st_size < path.stat().st_size
    # RGBE and PFM carry the range natively.
    for suffix in (".hdr", ".pfm"):
        write_radiance(tmp_path / f"b{suffix}", bright)
        assert np.allclose(read_radiance(tmp_path / f"b{suffix}"), bright, rtol=0.02)
    with pytest.raises(ValueError, match="float32 range"):
        write_radiance(tmp_path / "huge.pfm", radiance.astype(np.float64) * 1e300)


def test_atomic_outputs_honour_the_umask_and_keep_a_replaced_files_mode(tmp_path, radiance):
    old = os.umask(0o027)
    try:
        path = tmp_path / "new.exr"
        write_radiance(path, radiance)
        assert stat.S_IMODE(path.stat().st_mode) == 0o640
        os.chmod(path, 0o604)
        write_radiance(path, radiance * 2)
        assert stat.S_IMODE(path.stat().st_mode) == 0o604
    finally:
        os.umask(old)


# ------------------------------------------------------------------------------------------------ CLI


@pytest.mark.parametrize("argv,message", [
    (["tonemap", "{exr}", "-o", "{tmp}/out.xyz"], "-o {tmp}/out.xyz: unsupported output type '.xyz'"),
    (["tonemap", "{exr}", "-o", "{tmp}/out"], "unsupported output type '(no extension)'"),
    (["tonemap", "{exr}", "-o", "{tmp}/missing/out.png"], "folder {tmp}/missing does not exist"),
    (["tonemap", "{tmp}/photo.hdr", "-o", "{tmp}/o.png"], "photo.hdr: not a readable image"),
    # options the operator does not read are refused, not dropped
    (["tonemap", "{exr}", "-o", "{tmp}/o.png", "--bias", "5"], "--bias applies to --operator drago, not reinhard"),
    (["tonemap", "{exr}", "-o", "{tmp}/o.png", "--operator", "drago", "--white", "3"],
     "--white applies to --operator reinhard or reinhard-local, not drago"),
    (["tonemap", "{exr}", "-o", "{tmp}/o.png", "--operator", "neural", "--key", "0.3"], "--key applies to"),
    (["tonemap", "{exr}", "-o", "{tmp}/o.png", "--backend", "cpu"], "--backend applies to --operator neural"),
    (["tonemap", "{exr}", "-o", "{tmp}/o.png", "--operator", "parametric", "--key", "0.2", "--mu", "0.3"],
     "--key and --mu: the parametric operator's mid-point is --mu"),
    (["score", "{exr}"], "{tmp}/in.exr: a radiance map; norvdpnet_tmo scores tone-mapped SDR images"),
    (["dim", "{tmp}/zero.exr", "-o", "{tmp}/d"], "{tmp}/zero.exr: image has no positive luminance to map"),
    (["dim", "{tmp}/tiny.exr", "-o", "{tmp}/d"], "{tmp}/tiny.exr is 1x1: the built-in panel needs at least 16"),
    (["merge", "{tmp}/stack", "-o", "{tmp}/m.hdr", "--exr-pixel-type", "half"],
     "--exr-pixel-type half applies to an .exr output, not -o {tmp}/m.hdr"),
    (["merge", "{tmp}/stack", "-o", "{tmp}/m.exr", "--response", "srgb", "--save-response", "{tmp}/r.json"],
     "--save-response {tmp}/r.json: only with --response auto"),
    (["merge", "{tmp}/stack", "-o", "{tmp}/m.jpg"], "-o {tmp}/m.jpg: unsupported output type '.jpg'"),
    (["merge", "{tmp}/binary.txt", "-o", "{tmp}/m.exr"], "binary.txt: not a text list file"),
    (["merge", "{tmp}/stack/f0.png", "--list", "{tmp}/stack/list.txt", "-o", "{tmp}/m.exr"],
     "--list {tmp}/stack/list.txt and images ({tmp}/stack/f0.png): give one or the other"),
    (["merge", "-o", "{tmp}/m.exr"], "no images: give image files, a folder, a list file, or --list FILE"),
    (["run", "--config", "{tmp}/binary.toml"], "binary.toml: not a text file"),
    (["run", "--config", "{tmp}/nope.toml"], "[source] response = 'nope': unknown response"),
    (["run", "--config", "{tmp}/inf.toml"], "[source] exposures_s = [inf, 0.01]: expected a list of finite"),
    (["run", "--config", "{tmp}/one.toml"], "[source] exposures_s = [0.01]: an HDR bracket needs at least two"),
    (["score", "{tmp}/stack", "--model", "{tmp}/binary.txt"], "binary.txt: not a loadable ONNX model"),
    (["run", "--config", "{tmp}/grid.toml"], "[dimming] 64x48 zones at [bridge] bits = 12 cannot go over the"),
    (["run", "--config", "{tmp}/pattern.toml"], "[outputs] video = 'rec-{{when}}.avi': the only placeholder"),
    # checked before the run (a soak of minutes), not after it
    (["bench", "--runtime", "--seconds", "600", "--json", "{tmp}/missing/b.json"],
     "--json {tmp}/missing/b.json: folder {tmp}/missing does not exist"),
    (["bench", "--runtime", "--seconds", "600", "--json", "{tmp}/stack"], "--json {tmp}/stack: is a folder"),
    (["bridge", "bench", "--seconds", "600", "--json", "{tmp}/missing/b.json"],
     "--json {tmp}/missing/b.json: folder {tmp}/missing does not exist"),
])
def test_cli_bad_input_exits_2_naming_it(tmp_path, capsys, radiance, argv, message):
    write_radiance(tmp_path / "in.exr", radiance)
    write_radiance(tmp_path / "zero.exr", np.zeros((32, 32, 3), np.float32))
    write_radiance(tmp_path / "tiny.exr", np.ones((1, 1, 3), np.float32))
    (tmp_path / "photo.hdr").write_bytes(cv2.imencode(".png", np.zeros((8, 8, 3), np.uint8))[1].tobytes())
    (tmp_path / "stack").mkdir()
    _stack(tmp_path / "stack")
    (tmp_path / "binary.txt").write_bytes(b"f0.png 4\n\xff\xfe\x00\n")
    (tmp_path / "binary.toml").write_bytes(b"\x00\xff\xfe binary")
    (tmp_path / "nope.toml").write_text('[source]\nresponse = "nope"\n')
    (tmp_path / "inf.toml").write_text("[source]\nexposures_s = [inf, 0.01]\n")
    (tmp_path / "one.toml").write_text("[source]\nexposures_s = [0.01]\n")
    (tmp_path / "pattern.toml").write_text('[outputs]\nvideo = "rec-{when}.avi"\n')
    (tmp_path / "grid.toml").write_text("[source]\nwidth = 320\nheight = 200\n[dimming]\nrows = 64\n"
                                        "[preview]\nenabled = false\n")
    fill = {"tmp": str(tmp_path), "exr": str(tmp_path / "in.exr")}
    rc, err = _run([a.format(**fill) for a in argv], capsys)
    assert rc == 2, err
    assert message.format(**fill) in err
    assert "Traceback" not in err


@pytest.mark.parametrize("argv,option", [
    (["synth", "-o", "{tmp}/s", "--shake-px", "nan"], "--shake-px: nan is not allowed; give a finite number 0..64"),
    (["synth", "-o", "{tmp}/s", "--width", "100000"], "--width: 100000 is out of range; allowed 16..16384"),
    (["synth", "-o", "{tmp}/s", "--exposures", "1"], "--exposures: 1 is out of range"),
    (["merge", "{tmp}", "-o", "{tmp}/m.exr", "--smoothness", "-1"], "--smoothness: -1 is not allowed"),
    (["run", "--seconds", "nan"], "--seconds: nan is not allowed"),
    (["run", "--seconds", "-5"], "--seconds: -5 is not allowed"),
    (["tonemap", "{tmp}/x.exr", "-o", "{tmp}/x.png", "--key", "0"], "--key: 0 is not allowed"),
    (["bridge", "send", "/dev/null", "--fps", "inf"], "--fps: inf is not allowed"),
])
def test_cli_bad_numbers_are_argparse_errors(tmp_path, capsys, argv, option):
    with pytest.raises(SystemExit) as exc:
        main([a.format(tmp=tmp_path) for a in argv])
    assert exc.value.code == 2
    assert option in capsys.readouterr().err
    assert not (tmp_path / "s").exists(), "a refused synth leaves no folder"


def test_cli_help_shows_every_default(capsys):
    import argparse

    from edgehdr.cli import build_parser

    with pytest.raises(SystemExit):
        main(["merge", "--help"])
    assert "(default: 30000.0)" in " ".join(capsys.readouterr().out.split())

    def actions(parser):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    yield from actions(sub)
            elif action.option_strings and action.default not in (None, argparse.SUPPRESS, False):
                yield action

    missing = [a.option_strings for a in actions(build_parser()) if not a.help or "%(default)" not in
               argparse.ArgumentDefaultsHelpFormatter("x")._get_help_string(a)]
    assert not missing


# ------------------------------------------------------------------------------------------------ corrupter

_FORMATS = (".png", ".jpg", ".tif", ".bmp", ".hdr", ".pfm", ".exr")


def _valid_bytes(suffix: str) -> bytes:
    rng = np.random.default_rng(len(suffix))
    if suffix in (".hdr", ".pfm", ".exr"):
        img = np.exp(rng.uniform(-2, 3, size=(12, 16, 3))).astype(np.float32)
        if suffix == ".exr":
            import tempfile

            with tempfile.TemporaryDirectory() as d:
                write_radiance(Path(d) / "v.exr", img)
                return (Path(d) / "v.exr").read_bytes()
        return cv2.imencode(suffix, img)[1].tobytes()
    img = rng.integers(0, 255, size=(12, 16, 3), dtype=np.uint8)
    return cv2.imencode(suffix, img)[1].tobytes()


_VALID = {s: _valid_bytes(s) for s in _FORMATS}


@st.composite
def _mutation(draw):
    suffix = draw(st.sampled_from(_FORMATS))
    data = bytearray(_VALID[suffix])
    kind = draw(st.sampled_from(("truncate", "flip", "insert", "header", "number")))
    if kind == "truncate":
        data = data[: draw(st.integers(0, len(data) - 1))]
    elif kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            i = draw(st.integers(0, len(data) - 1))
            data[i] ^= 1 << draw(st.integers(0, 7))
    elif kind == "insert":
        i = draw(st.integers(0, len(data)))
        data[i:i] = draw(st.binary(min_size=1, max_size=64))
    elif kind == "header":
        i = draw(st.integers(0, min(len(data), 64) - 1))
        data[i] = draw(st.integers(0, 255))
    else:  # replace a decimal size in a text header, or a 32-bit field in a binary one
        text = bytes(data[:128])
        digits = [i for i in range(len(text)) if chr(text[i]).isdigit()]
        if digits:
            i = draw(st.sampled_from(digits))
            data[i:i + 1] = draw(st.sampled_from([b"9999999", b"-", b"0", b"nan", b"1e9"]))
        else:
            i = draw(st.integers(0, max(0, min(len(data), 64) - 4)))
            data[i:i + 4] = struct.pack("<i", draw(st.sampled_from([-5, 0, 1 << 30, 65535 * 65535 & 0x7FFFFFFF])))
    return suffix, bytes(data), kind


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=_mutation())
def test_corrupted_files_decode_sanely_or_fail_naming_the_file(tmp_path, case):
    suffix, data, kind = case
    path = tmp_path / f"corrupt{suffix}"
    path.write_bytes(data)
    reader = read_radiance if suffix in (".hdr", ".pfm", ".exr") else read_ldr_image
    try:
        img = reader(path, max_pixels=4_000_000)
    except ValueError as exc:
        assert str(exc).startswith(str(path)), str(exc)
        return
    assert img.ndim == 3 and img.shape[2] == 3 and 0 < img.shape[0] * img.shape[1] <= 4_000_000
    if img.dtype == np.float32:
        assert np.all(np.isfinite(img))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.binary(max_size=200))
def test_corrupted_list_files_fail_naming_the_file_and_line(tmp_path, text):
    path = tmp_path / "list.txt"
    path.write_bytes(text)
    try:
        entries = read_list_file(path)
    except ValueError as exc:
        assert str(path) in str(exc)
        return
    assert all(t > 0 and np.isfinite(t) for _, t in entries)


# ------------------------------------------------------------------------------------------------ all or nothing


@pytest.mark.parametrize("command", ["synth", "dim"])
def test_multi_file_outputs_are_all_or_nothing(tmp_path, radiance, command):
    # A file-size limit fails the writes part-way, as a full disk does.
    import subprocess
    import sys
    import textwrap

    write_radiance(tmp_path / "in.exr", np.tile(radiance, (20, 20, 1)))
    out = tmp_path / "result"
    argv = (["synth", "-o", str(out), "--width", "640", "--height", "480"] if command == "synth"
            else ["dim", str(tmp_path / "in.exr"), "-o", str(out)])
    script = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (150_000, 150_000))
        from edgehdr.cli import main
        sys.exit(main(["-q", *{argv!r}]))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "cannot write" in proc.stderr
    assert not out.exists(), f"a failed {command} leaves nothing: {list(out.iterdir()) if out.exists() else ''}"
    # Into an existing folder with an earlier result: that result stays as it was.
    out.mkdir()
    earlier = "frame_0.png 100\n" if command == "synth" else "earlier result\n"  # synth replaces only its own list
    (out / "list.txt").write_text(earlier)
    (out / "metrics.json").write_text("{}\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert sorted(p.name for p in out.iterdir()) == ["list.txt", "metrics.json"]
    assert (out / "list.txt").read_text() == earlier
    # Without the limit the same command writes the whole result.
    assert main(["-q", *argv]) == 0
    expected = {"synth": {"frame_0.png", "list.txt", "ground_truth.exr", "response.json"},
                "dim": {"zones.csv", "lcd.png", "display.exr", "metrics.json"}}[command]
    assert expected <= {p.name for p in out.iterdir()}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize("suffix", [".exr", ".hdr", ".pfm"])
def test_radiance_write_on_a_full_disk_is_a_clear_error(tmp_path, suffix):
    import subprocess
    import sys
    import textwrap

    (tmp_path / "stack").mkdir()
    _stack(tmp_path / "stack", size=(240, 320))
    out = tmp_path / f"m{suffix}"
    script = textwrap.dedent(f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))
        from edgehdr.cli import main
        sys.exit(main(["-q", "merge", {str(tmp_path / 'stack')!r}, "-o", {str(out)!r}, "--response", "srgb"]))
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and f"{out}: cannot write" in proc.stderr, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not list(tmp_path.glob(f"*{suffix}*")) and not list(tmp_path.glob(".*")), "nothing partial left"


def test_codes_past_the_stated_depth_are_refused_naming_the_file(tmp_path, capsys):
    """16-bit files whose codes use the high bits (as most 12-bit sensors' PNGs do), merged with --bits 12: a clear
    error naming the file, before calibration (whose response table the codes would index past)."""
    from edgehdr.hdr.crf import calibrate_debevec

    folder = tmp_path / "b16"
    folder.mkdir()
    frames = []
    for i in range(3):
        frame = np.random.default_rng(i).integers(0, 4096, (24, 32, 3)).astype(np.uint16) << 4  # high-bit aligned
        frame[0, 0] = 4095 << 4 if i == 1 else frame[0, 0]
        cv2.imwrite(str(folder / f"f{i}.png"), frame)
        frames.append(frame)
    (folder / "list.txt").write_text("f0.png 1000\nf1.png 250\nf2.png 62.5\n")
    assert main(["merge", str(folder), "-o", str(tmp_path / "m.exr"), "--bits", "12"]) == 2
    assert f"{folder / 'f1.png'}: holds code 65520 but bits=12 allows at most 4095" in capsys.readouterr().err
    assert not (tmp_path / "m.exr").exists()
    with pytest.raises(ValueError, match="frames hold code 65520 but bits=12 allows at most 4095"):
        calibrate_debevec(np.stack(frames), [1.0, 4.0, 16.0], bits=12)
    with pytest.raises(ValueError, match="uint8 frames carry 8 bits, not 12"):
        calibrate_debevec(np.zeros((3, 8, 8, 3), np.uint8), [1.0, 4.0, 16.0], bits=12)
    # the same codes shifted down to 12 bits merge
    for i, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"f{i}.png"), frame >> 4)
    assert main(["-q", "merge", str(folder), "-o", str(tmp_path / "m.exr"), "--bits", "12"]) == 0


def test_very_short_distinct_exposures_are_not_taken_for_the_same(tmp_path):
    """Inverse shutter times of 1e9 and 2.5e8 (1 and 4 ns) are two stops apart, not the same exposure."""
    folder = tmp_path / "s"
    folder.mkdir()
    _stack(folder)
    (folder / "list.txt").write_text("f0.png 1e9\nf1.png 2.5e8\nf2.png 6.25e7\n")
    bracket = read_ldr_stack(folder)
    np.testing.assert_allclose(bracket.relative_exposure / bracket.relative_exposure[0], [1, 4, 16])


# ------------------------------------------------------------------------- headers that declare too much (fuzzing)


def test_tiff_whose_directory_lies_beyond_the_file_is_refused_without_reading_there(tmp_path):
    """A 16-byte TIFF whose first-directory offset is 2e9: refused by the offset (the reader padded 2 GB of zeros
    to reach it before)."""
    path = tmp_path / "far.tif"
    path.write_bytes(b"II*\x00" + struct.pack("<I", 2_000_000_000) + bytes(8))
    with pytest.raises(ValueError, match=r"far\.tif: .*first directory offset 2000000000 lies beyond the file's end"):
        check_image_header(path)
    img = np.random.default_rng(0).integers(0, 255, (19, 23, 3), dtype=np.uint8)
    cv2.imwrite(str(tmp_path / "ok.tif"), img)
    assert check_image_header(tmp_path / "ok.tif") == (23, 19)


def test_png_chunk_longer_than_the_file_is_refused_before_decoding(tmp_path):
    """IEND declaring 2 GiB and the data chunk renamed: libpng allocated for it (2 GB for 84 bytes) before failing;
    the header walk refuses the chunk, naming it and where it starts."""
    data = bytearray(cv2.imencode(".png", np.zeros((6, 7, 3), np.uint8))[1].tobytes())
    end = data.rfind(b"IEND")
    struct.pack_into(">I", data, end - 4, 0x7FFFFFFF)
    idat = data.find(b"IDAT")
    data[idat:idat + 4] = b"IDA\xfc"
    path = tmp_path / "chunk.png"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=rf"chunk\.png: .*PNG chunk b'IEND' at byte {end - 4} declares 2147483647 "):
        read_ldr_image(path)


def _webp(img, **options):
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(img).save(buf, "WEBP", **options)
    return bytearray(buf.getvalue())


def test_webp_size_is_read_from_each_header_kind_and_the_pixel_limit_applies(tmp_path):
    """Lossy (VP8), lossless (VP8L) and extended (VP8X, here with EXIF) WebP headers give the decoded size; a
    38-byte lossless file patched to declare 12000 x 12000 is refused by the pixel limit (it decoded to 144 MP)."""
    from PIL import Image

    img = np.random.default_rng(1).integers(0, 255, (37, 53, 3), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x010F] = "camera"
    for name, data in (("lossy", _webp(img, quality=80)), ("lossless", _webp(img, lossless=True)),
                       ("extended", _webp(img, quality=80, exif=exif.tobytes()))):
        path = tmp_path / f"{name}.webp"
        path.write_bytes(bytes(data))
        assert check_image_header(path) == (53, 37), name
        assert read_ldr_image(path).shape == (37, 53, 3)
    data = _webp(np.full((16, 16, 3), 77, np.uint8), lossless=True, method=0)
    bits = struct.unpack_from("<I", data, 21)[0]
    struct.pack_into("<I", data, 21, (bits & ~((1 << 28) - 1)) | (12000 - 1) | ((12000 - 1) << 14))
    path = tmp_path / "huge.webp"
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"huge\.webp: header declares 12000 x 12000 = 144.0 MP, above the limit of "
                                         r"0.001 MP"):
        read_ldr_image(path, max_pixels=1000)


def test_ppm_header_with_words_for_its_size_names_the_file(tmp_path):
    path = tmp_path / "bad.ppm"
    path.write_bytes(b"P6\nxx 5\n255\n")
    with pytest.raises(ValueError, match=r"bad\.ppm: .*malformed \.ppm header"):
        check_image_header(path)


# ------------------------------------------------------------------------------------------------ EXIF (fuzzing)


def _exif_jpeg(path: Path, tags: dict, value: int = 100) -> Path:
    import io

    from PIL import Image

    exif = Image.Exif()
    sub = exif.get_ifd(0x8769)
    sub.update(tags)
    buf = io.BytesIO()
    Image.fromarray(np.full((8, 8, 3), value, np.uint8)).save(buf, "JPEG", exif=exif.tobytes())
    path.write_bytes(buf.getvalue())
    return path


def test_exif_values_that_are_not_one_positive_number_are_refused_naming_file_and_tag(tmp_path):
    """ISO 0/0 or infinity went into the bracket's gain as NaN/inf (and let two frames of the same exposure past the
    duplicate check); an ExposureTime of two rationals was divided into 0.5 s; text raised without the file name.
    A manual lens's FNumber 0/0 means an unknown aperture, as before."""
    from PIL.TiffImagePlugin import IFDRational

    from edgehdr.io.ldr_stack import read_exif_exposure

    exposure = {0x829A: IFDRational(1, 100)}
    for name, tags, message in (
            ("iso_nan", {**exposure, 0x8827: IFDRational(0, 0)}, "EXIF ISOSpeedRatings nan is not a positive number"),
            ("iso_inf", {**exposure, 0x8827: float("inf")}, "EXIF ISOSpeedRatings inf is not a positive number"),
            ("two", {0x829A: (IFDRational(1, 100), IFDRational(1, 50))}, "EXIF ExposureTime holds 2 values"),
            ("text", {0x829A: "abc"}, "EXIF ExposureTime 'abc' is not a number")):
        path = _exif_jpeg(tmp_path / f"{name}.jpg", tags)
        with pytest.raises(ValueError, match=rf"{name}\.jpg: {message}"):
            read_exif_exposure(path)
    assert read_exif_exposure(_exif_jpeg(tmp_path / "manual.jpg", {**exposure, 0x829D: IFDRational(0, 0),
                                                                   0x8827: 0})) == (0.01, None, None)
    folder = tmp_path / "stack"
    folder.mkdir()
    _exif_jpeg(folder / "a.jpg", {**exposure, 0x8827: 100}, 60)
    _exif_jpeg(folder / "b.jpg", {**exposure, 0x8827: IFDRational(0, 0)}, 120)
    with pytest.raises(ValueError, match=r"b\.jpg: EXIF ISOSpeedRatings nan"):
        read_ldr_stack(folder)


def test_exif_reader_turns_every_pillow_failure_into_an_error_naming_the_file(tmp_path):
    """A JPEG whose frame header declares 65000 x 65000 (Pillow's DecompressionBombError) and a PNG with a
    truncated IHDR (Pillow's own ValueError without the name): one ValueError naming the file each."""
    from edgehdr.io.ldr_stack import read_exif_exposure

    data = bytearray(_exif_jpeg(tmp_path / "x.jpg", {0x829A: 0.01}).read_bytes())
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, 65000, 65000)
    (tmp_path / "bomb.jpg").write_bytes(bytes(data))
    (tmp_path / "ihdr.png").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\x05IHDR\x00\x00\x00\x01\x00\x00\x00\x00")
    for name in ("bomb.jpg", "ihdr.png"):
        with pytest.raises(ValueError, match=rf"{name.replace('.', chr(92) + '.')}: cannot read EXIF"):
            read_exif_exposure(tmp_path / name)


def test_list_file_inverse_time_whose_inverse_overflows_names_the_line(tmp_path):
    for i in range(2):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((4, 4, 3), 50 * i + 10, np.uint8))
    (tmp_path / "list.txt").write_text("0.png 30\n1.png 1e-320\n")
    with pytest.raises(ValueError, match=r"list\.txt:2: inverse shutter time must be a positive number whose "
                                         r"inverse is finite, got 1e-320"):
        read_ldr_stack(tmp_path)


def test_cmyk_jpeg_is_checked_strictly_too(tmp_path):
    """libjpeg-turbo does not convert CMYK to RGB, so OpenCV decodes such files; they are decoded strictly first
    (a CMYK file with 200 bytes zeroed mid-scan was taken with garbage pixels, where an RGB one was refused)."""
    import io

    from PIL import Image

    buf = io.BytesIO()
    smooth = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 255, (64, 64, 4), dtype=np.uint8), (7, 7), 0)
    Image.fromarray(smooth, "CMYK").save(buf, "JPEG", quality=90)
    good = tmp_path / "cmyk.jpg"
    good.write_bytes(buf.getvalue())
    np.testing.assert_array_equal(read_ldr_image(good), cv2.imread(str(good), cv2.IMREAD_COLOR)[:, :, ::-1])
    data = bytearray(buf.getvalue())
    middle = (data.find(b"\xff\xda") + len(data)) // 2
    data[middle:middle + 200] = bytes(200)
    bad = tmp_path / "cmyk_damaged.jpg"
    bad.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"cmyk_damaged\.jpg: corrupt JPEG"):
        read_ldr_image(bad)


def test_jpeg_warnings_about_metadata_only_decode_and_lenient_mode_takes_the_rest(tmp_path, monkeypatch):
    """Samsung phones write sequential JPEGs whose SOS header has Se = 0 ("Invalid SOS parameters for sequential
    JPEG"): sound pixels, decoded as OpenCV does. EDGEHDR_JPEG_LENIENT=1 takes a damaged file as OpenCV would."""
    img = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8), (5, 5), 0)
    data = bytearray(cv2.imencode(".jpg", img)[1].tobytes())
    sos = data.find(b"\xff\xda")
    se = sos + 5 + 2 * data[sos + 4] + 1
    assert data[se] == 63
    data[se] = 0
    path = tmp_path / "samsung.jpg"
    path.write_bytes(bytes(data))
    np.testing.assert_array_equal(read_ldr_image(path), cv2.imread(str(path), cv2.IMREAD_COLOR)[:, :, ::-1])
    damaged = bytearray(cv2.imencode(".jpg", img)[1].tobytes())
    damaged[len(damaged) * 2 // 3:len(damaged) * 2 // 3 + 512] = bytes(512)
    bad = tmp_path / "damaged.jpg"
    bad.write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match=r"damaged\.jpg: corrupt JPEG \(Corrupt JPEG data: .*EDGEHDR_JPEG_LENIENT"):
        read_ldr_image(bad)
    monkeypatch.setenv("EDGEHDR_JPEG_LENIENT", "1")
    np.testing.assert_array_equal(read_ldr_image(bad), cv2.imread(str(bad), cv2.IMREAD_COLOR)[:, :, ::-1])


def test_exif_iso_with_several_values_takes_the_first_and_absurd_gains_name_what_gave_them(tmp_path):
    """ISOSpeedRatings may hold several SHORTs: (400, 400) is ISO 400 (it was read as the fraction 400/400 = 1);
    an ISO of 1e15 without an FNumber is refused with a message (formatting the absent FNumber raised TypeError)."""
    from PIL.TiffImagePlugin import IFDRational

    from edgehdr.io.ldr_stack import read_exif_exposure

    exposure = {0x829A: IFDRational(1, 100)}
    assert read_exif_exposure(_exif_jpeg(tmp_path / "pair.jpg", {**exposure, 0x8827: (400, 400)}))[2] == 400.0
    assert read_exif_exposure(_exif_jpeg(tmp_path / "three.jpg", {**exposure, 0x8827: (100, 200, 300)}))[2] == 100.0
    assert read_exif_exposure(_exif_jpeg(tmp_path / "zero.jpg", {**exposure, 0x8827: (0,)}))[2] is None
    folder = tmp_path / "stack"
    folder.mkdir()
    _exif_jpeg(folder / "a.jpg", {0x829A: IFDRational(1, 50)}, 60)
    _exif_jpeg(folder / "b.jpg", {**exposure, 0x8827: 1e15}, 120)
    with pytest.raises(ValueError, match=r"b\.jpg: EXIF ISO 1e\+15 give a relative gain of 1e\+13; not a usable"):
        read_ldr_stack(folder)


def test_an_unwritable_output_is_refused_before_the_work_naming_it(tmp_path, capsys, radiance):
    """A folder this user cannot write is refused before the work (it failed after it, naming a hidden temporary
    file); where the check cannot tell (root writes anywhere its permissions allow, but no file can be made in
    /proc), the failed write names the output, not the temporary file."""
    from edgehdr.cli import main

    write_radiance(tmp_path / "in.exr", radiance)
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        if not os.access(locked, os.W_OK):
            for argv in (["tonemap", str(tmp_path / "in.exr"), "-o", str(locked / "x.png")],
                         ["merge", str(tmp_path / "in.exr"), str(tmp_path / "in.exr"), "-o", str(locked / "m.exr")]):
                assert main(argv) == 2
                assert f"{locked}/" in capsys.readouterr().err and not any(locked.iterdir())
    finally:
        locked.chmod(0o755)
    if Path("/proc").is_dir():
        assert main(["tonemap", str(tmp_path / "in.exr"), "-o", "/proc/edgehdr-out.png"]) == 2
        err = capsys.readouterr().err
        assert "/proc/edgehdr-out.png: cannot write in /proc" in err and ".tmp" not in err
