"""Radiance files, LDR stacks and atomic writes: round trips, independent parsing, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgehdr.io import (
    atomic_output,
    read_exif_exposure,
    read_ldr_stack,
    read_list_file,
    read_radiance,
    write_ldr_image,
    write_radiance,
)


@pytest.fixture
def radiance(rng):
    # Spans 1e-3 .. 1e3 with distinct channels so colour order errors show.
    base = np.exp(rng.uniform(np.log(1e-3), np.log(1e3), size=(24, 32, 3))).astype(np.float32)
    base[..., 0] *= 1.0
    base[..., 1] *= 0.5
    base[..., 2] *= 0.25
    return base


def test_pfm_round_trip_is_exact_and_stores_rgb(tmp_path, radiance):
    path = write_radiance(tmp_path / "x.pfm", radiance)
    np.testing.assert_array_equal(read_radiance(path), radiance)
    # Independent parse of the PFM container: header, scale < 0 = little endian, rows bottom-up, RGB.
    raw = path.read_bytes()
    parts = raw.split(b"\n", 3)
    assert parts[0] == b"PF"
    w, h = map(int, parts[1].split())
    scale = float(parts[2])
    assert (w, h) == (32, 24)
    data = np.frombuffer(parts[3], dtype="<f4" if scale < 0 else ">f4").reshape(h, w, 3)[::-1]
    np.testing.assert_array_equal(data, radiance)


def test_exr_float_is_exact_and_half_within_half_precision(tmp_path, radiance):
    np.testing.assert_array_equal(read_radiance(write_radiance(tmp_path / "f.exr", radiance, exr_pixel_type="float")),
                                  radiance)
    half = read_radiance(write_radiance(tmp_path / "h.exr", radiance))
    np.testing.assert_allclose(half, radiance, rtol=2**-10, atol=6e-8)


def test_exr_channel_order_matches_an_independent_reader(tmp_path, radiance):
    import OpenEXR

    write_radiance(tmp_path / "c.exr", radiance, exr_pixel_type="float")
    with OpenEXR.File(str(tmp_path / "c.exr"), separate_channels=True) as exr:
        channels = exr.channels()
        np.testing.assert_array_equal(channels["R"].pixels, radiance[..., 0])
        np.testing.assert_array_equal(channels["B"].pixels, radiance[..., 2])


def test_radiance_hdr_round_trip_within_rgbe_precision(tmp_path, radiance):
    back = read_radiance(write_radiance(tmp_path / "x.hdr", radiance))
    # RGBE keeps 8 mantissa bits against the largest channel: relative error < 2^-7 of the max channel.
    tol = radiance.max(axis=2, keepdims=True) * 2**-7
    assert np.all(np.abs(back - radiance) <= tol)
    assert np.argmax(back.mean(axis=(0, 1))) == 0  # red stays the brightest channel


@pytest.mark.parametrize("suffix", [".exr", ".hdr", ".pfm"])
def test_corrupt_radiance_file_names_the_file(tmp_path, suffix):
    bad = tmp_path / f"broken{suffix}"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match="broken"):
        read_radiance(bad)


def test_unknown_suffix_and_missing_file(tmp_path, radiance):
    with pytest.raises(ValueError, match="unknown radiance file type"):
        write_radiance(tmp_path / "x.png", radiance)
    with pytest.raises(FileNotFoundError, match="nope.exr"):
        read_radiance(tmp_path / "nope.exr")


def test_write_refuses_nan(tmp_path, radiance):
    radiance[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        write_radiance(tmp_path / "x.exr", radiance)
    assert not list(tmp_path.iterdir())


def test_atomic_output_keeps_old_file_on_failure(tmp_path):
    target = tmp_path / "result.txt"
    target.write_text("old")
    with pytest.raises(RuntimeError):
        with atomic_output(target) as tmp:
            tmp.write_text("half-writ")
            raise RuntimeError("crash mid-write")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["result.txt"]


def test_atomic_output_replaces_in_one_step(tmp_path):
    target = tmp_path / "result.txt"
    target.write_text("old")
    inode_before = target.stat().st_ino
    with atomic_output(target) as tmp:
        tmp.write_text("new")
        assert target.read_text() == "old"  # readers see the old file until the rename
    assert target.read_text() == "new"
    assert target.stat().st_ino != inode_before


def _write_stack(folder: Path, frames, exposures_s, *, suffix=".png", list_file=True):
    names = []
    for i, frame in enumerate(frames):
        name = f"f{i}{suffix}"
        write_ldr_image(folder / name, frame)
        names.append(name)
    if list_file:
        (folder / "list.txt").write_text("".join(f"{n} {1 / t}\n" for n, t in zip(names, exposures_s)))
    return names


def test_list_file_stack_round_trip(tmp_path, shot_factory):
    shot = shot_factory(0, 64, 96)
    _write_stack(tmp_path, shot.bracket.frames, shot.bracket.exposure_s)
    bracket = read_ldr_stack(tmp_path)
    np.testing.assert_array_equal(bracket.frames, shot.bracket.frames)
    np.testing.assert_allclose(bracket.exposure_s, shot.bracket.exposure_s, rtol=1e-12)
    assert bracket.bits == 8
    # the files read, as `edgehdr merge` checks its outputs against them: the list's images in its order, the list
    names = [line.split()[0] for line in (tmp_path / "list.txt").read_text().splitlines()]
    assert bracket.extra["paths"] == [str(tmp_path / n) for n in names]
    assert bracket.extra["list_file"] == str(tmp_path / "list.txt")


def test_sixteen_bit_stack(tmp_path, rng):
    frames = [rng.integers(0, 4096, size=(20, 30, 3), dtype=np.uint16) for _ in range(2)]
    _write_stack(tmp_path, frames, [0.01, 0.04], suffix=".tif")
    bracket = read_ldr_stack(tmp_path, bits=12)
    assert bracket.frames.dtype == np.uint16 and bracket.bits == 12
    np.testing.assert_array_equal(bracket.frames[1], frames[1])


def _jpeg_with_exif(path: Path, rgb, exposure, f_number, iso):
    img = Image.fromarray(rgb)
    exif = Image.Exif()
    exif_ifd = exif.get_ifd(0x8769)
    exif_ifd[0x829A] = exposure
    exif_ifd[0x829D] = f_number
    exif_ifd[0x8827] = iso
    img.save(path, exif=exif, quality=95)


def test_exif_exposure_folds_aperture_and_iso_into_gain(tmp_path, rng):
    from PIL.TiffImagePlugin import IFDRational as Fraction

    rgb = rng.integers(0, 255, size=(16, 16, 3), dtype=np.uint8)
    _jpeg_with_exif(tmp_path / "a.jpg", rgb, Fraction(1, 100), Fraction(4, 1), 100)
    _jpeg_with_exif(tmp_path / "b.jpg", rgb, Fraction(1, 25), Fraction(8, 1), 400)
    assert read_exif_exposure(tmp_path / "a.jpg") == pytest.approx((0.01, 4.0, 100.0))
    bracket = read_ldr_stack(tmp_path)
    np.testing.assert_allclose(bracket.exposure_s, [0.01, 0.04])
    # b: ISO 400 (x4) at f/8 vs f/4 (x1/4): same light per second, 4x the time.
    np.testing.assert_allclose(bracket.gain, [1.0, 1.0])
    np.testing.assert_allclose(bracket.relative_exposure, [0.01, 0.04])
    assert bracket.extra["paths"] == [str(tmp_path / "a.jpg"), str(tmp_path / "b.jpg")]
    assert "list_file" not in bracket.extra  # read by EXIF: no list file among the inputs


def test_missing_exif_exposure_names_the_file(tmp_path, rng):
    for name in ("a.png", "b.png"):
        write_ldr_image(tmp_path / name, rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"a\.png: no EXIF ExposureTime"):
        read_ldr_stack(tmp_path)


def test_stack_errors_name_the_files(tmp_path, rng):
    small = rng.integers(0, 255, size=(8, 8, 3), dtype=np.uint8)
    big = rng.integers(0, 255, size=(8, 10, 3), dtype=np.uint8)
    write_ldr_image(tmp_path / "a.png", small)
    write_ldr_image(tmp_path / "b.png", big)
    (tmp_path / "list.txt").write_text("a.png 100\nb.png 25\n")
    with pytest.raises(ValueError, match=r"b\.png: size 10x8 differs from .*a\.png"):
        read_ldr_stack(tmp_path)
    (tmp_path / "list.txt").write_text("a.png 100\na.png 25\n")
    with pytest.raises(ValueError, match="listed twice"):
        read_ldr_stack(tmp_path)
    write_ldr_image(tmp_path / "c.png", small)
    (tmp_path / "list.txt").write_text("a.png 100\nc.png 100\n")
    with pytest.raises(ValueError, match="same exposure"):
        read_ldr_stack(tmp_path)
    (tmp_path / "list.txt").write_text("a.png 100\n")
    with pytest.raises(ValueError, match="at least two frames"):
        read_ldr_stack(tmp_path)
    (tmp_path / "list.txt").write_text("a.png fast\nc.png 100\n")
    with pytest.raises(ValueError, match=r"list\.txt:1: inverse shutter time 'fast'"):
        read_ldr_stack(tmp_path)
    (tmp_path / "d.png").write_bytes(b"\x89PNG broken")
    (tmp_path / "list.txt").write_text("a.png 100\nd.png 25\n")
    with pytest.raises(ValueError, match=r"d\.png: not a readable image"):
        read_ldr_stack(tmp_path)
    (tmp_path / "list.txt").write_text("a.png 100\nmissing.png 25\n")
    with pytest.raises(FileNotFoundError, match=r"missing\.png"):
        read_ldr_stack(tmp_path)


# --- after a review of the readers and writers -------------------------------------------------------------------


def _rewrite_rgbe_resolution(src: Path, dst: Path, resolution: str, extra_header: bytes = b"") -> Path:
    data = src.read_bytes()
    end = data.find(b"\n\n")
    line_end = data.find(b"\n", end + 2)
    dst.write_bytes(data[:end] + extra_header + b"\n\n" + resolution.encode() + data[line_end:])
    return dst


def test_rgbe_reads_each_mantissa_at_its_bins_centre_as_radiance_does(tmp_path):
    """OpenCV decodes m 2^(e-136), the bottom of the mantissa's bin: every value read back was up to one step low,
    half a step on average. Read as Radiance's colr_color does, (m + 0.5) 2^(e-136), the round trip is unbiased and
    within half a step of the pixel's largest channel."""
    import cv2

    rng = np.random.default_rng(1)
    radiance = np.exp(rng.normal(0, 2, (60, 80, 3))).astype(np.float32)
    write_radiance(tmp_path / "r.hdr", radiance)
    ours = read_radiance(tmp_path / "r.hdr")
    opencv = cv2.cvtColor(cv2.imread(str(tmp_path / "r.hdr"), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGR2RGB)
    _, exponent = np.frexp(radiance.max(axis=2))
    step = np.ldexp(1.0, exponent - 8)[:, :, None]
    np.testing.assert_allclose(ours - opencv, 0.5 * np.broadcast_to(step, ours.shape), rtol=1e-5)
    error = (ours - radiance) / step
    assert np.abs(error).max() <= 0.5 + 1e-4 and abs(float(error.mean())) < 0.02
    assert float(((opencv - radiance) / step).mean()) < -0.4  # the bias this removes


@pytest.mark.parametrize("resolution, stored", [
    ("+Y {h} +X {w}", lambda a: a[::-1]), ("-Y {h} -X {w}", lambda a: a[:, ::-1]),
    ("+Y {h} -X {w}", lambda a: a[::-1, ::-1]), ("+X {w} -Y {h}", lambda a: a.transpose(1, 0, 2)),
    ("-X {w} +Y {h}", lambda a: a[::-1, ::-1].transpose(1, 0, 2)),
    ("+X {w} +Y {h}", lambda a: a[::-1].transpose(1, 0, 2)),
])
def test_rgbe_files_in_every_orientation_read_as_the_standard_one(tmp_path, resolution, stored):
    """Radiance allows eight scanline orders; OpenCV reads only '-Y H +X W' and refused the others as corrupt."""
    rng = np.random.default_rng(2)
    radiance = (rng.random((4, 6, 3)) * 10 + 0.1).astype(np.float32)
    write_radiance(tmp_path / "std.hdr", radiance)
    write_radiance(tmp_path / "t.hdr", np.ascontiguousarray(stored(radiance)))
    other = _rewrite_rgbe_resolution(tmp_path / "t.hdr", tmp_path / "o.hdr", resolution.format(h=4, w=6))
    np.testing.assert_array_equal(read_radiance(other), read_radiance(tmp_path / "std.hdr"))


def test_rgbe_resolution_lines_without_signed_axes_are_refused(tmp_path):
    """The header check took any character for a sign ('*Y 2 ?X 3' passed it, and the reader then guessed)."""
    write_radiance(tmp_path / "a.hdr", np.ones((2, 3, 3), np.float32))
    for line in ("*Y 2 ?X 3", "Y 2 X 3", "-Y 2 +Y 3"):
        bad = _rewrite_rgbe_resolution(tmp_path / "a.hdr", tmp_path / "b.hdr", line)
        with pytest.raises(ValueError, match=r"b\.hdr: malformed Radiance resolution line"):
            read_radiance(bad)


def test_rgbe_exposure_lines_are_divided_out(tmp_path):
    radiance = np.full((2, 3, 3), 3.0, np.float32)
    write_radiance(tmp_path / "a.hdr", radiance)
    data = (tmp_path / "a.hdr").read_bytes()
    (tmp_path / "b.hdr").write_bytes(data.replace(b"FORMAT=", b"EXPOSURE=2.0\nEXPOSURE=1.5\nFORMAT=", 1))
    np.testing.assert_allclose(read_radiance(tmp_path / "b.hdr") * 3.0, read_radiance(tmp_path / "a.hdr"), rtol=1e-6)


def test_exr_auto_keeps_what_half_would_lose_and_negative_values_round_trip(tmp_path):
    """'auto' wrote half whenever the maximum fitted: 1e-8 became 0 and -1e5 became -infinity (a file the reader
    then refused). Both now go to float pixels and come back as written."""
    tiny = (np.linspace(1, 2, 12, dtype=np.float32) * 1e-8).reshape(2, 2, 3)
    write_radiance(tmp_path / "tiny.exr", tiny)
    np.testing.assert_array_equal(read_radiance(tmp_path / "tiny.exr"), tiny)
    negative = np.ones((2, 3, 3), np.float32)
    negative[0, 0, 0] = -1e5
    write_radiance(tmp_path / "neg.exr", negative)
    np.testing.assert_array_equal(read_radiance(tmp_path / "neg.exr"), negative)
    with pytest.raises(ValueError, match="exceeds the half-float maximum"):
        write_radiance(tmp_path / "h.exr", negative, exr_pixel_type="half")
    ordinary = np.full((2, 2, 3), 0.5, np.float32)  # still half where half holds it
    write_radiance(tmp_path / "o.exr", ordinary)
    import OpenEXR

    with OpenEXR.File(str(tmp_path / "o.exr")) as exr:
        assert exr.channels()["RGB"].pixels.dtype == np.float16


def test_exr_channel_layouts_other_than_rgb(tmp_path):
    """R, G and B of different pixel types are read (they were refused as corrupt); a luminance/chroma file is
    refused naming what it is (it was read as grey, its colour dropped)."""
    import OpenEXR

    ones = np.ones((2, 2), np.float32)
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    with OpenEXR.File(header, {"R": ones, "G": (ones * 2).astype(np.float16), "B": ones * 3}) as exr:
        exr.write(str(tmp_path / "mixed.exr"))
    np.testing.assert_array_equal(read_radiance(tmp_path / "mixed.exr")[1, 1], [1, 2, 3])
    with OpenEXR.File(header, {"Y": ones, "RY": ones * 0.1, "BY": ones * 0.2}) as exr:
        exr.write(str(tmp_path / "yc.exr"))
    with pytest.raises(ValueError, match=r"yc\.exr: a luminance/chroma OpenEXR file"):
        read_radiance(tmp_path / "yc.exr")


def test_pfm_whose_header_does_not_match_its_data_is_refused(tmp_path):
    """A header of 3 x 1 over two rows of data returned the bottom stored row as the image, without a word."""
    (tmp_path / "x.pfm").write_bytes(b"PF\n3 1\n-1.0\n" + np.arange(18, dtype="<f4").tobytes())
    with pytest.raises(ValueError, match=r"x\.pfm: 72 bytes of pixels, the header's 3 x 1 x 3 floats need 36"):
        read_radiance(tmp_path / "x.pfm")


def test_sixteen_bit_images_are_not_written_to_eight_bit_formats(tmp_path):
    """OpenCV saturated them into 8 bits: a white JPEG, exit 0."""
    image = np.full((4, 4, 3), 30000, np.uint16)
    for suffix in (".jpg", ".bmp", ".webp"):
        with pytest.raises(ValueError, match="holds 8 bits; this image is 16-bit"):
            write_ldr_image(tmp_path / f"x{suffix}", image)
    with pytest.raises(ValueError, match=r"x\.xyz: OpenCV cannot write a '\.xyz' image"):
        write_ldr_image(tmp_path / "x.xyz", image.astype(np.uint8))
    assert not any(tmp_path.iterdir())


def test_list_files_with_a_byte_order_mark_spaces_and_hashes_in_names(tmp_path):
    (tmp_path / "list.txt").write_text("\ufeffmy img0.png 30\nshot#1.png 60  # the short one\n# a comment\n",
                                       encoding="utf-8")
    assert read_list_file(tmp_path / "list.txt") == [(tmp_path / "my img0.png", pytest.approx(1 / 30)),
                                                     (tmp_path / "shot#1.png", pytest.approx(1 / 60))]
