"""Loading LDR exposure stacks from files into a ``Bracket``.

Offline input to the frame's journey (the live equivalent is a camera source).
Exposures come from a list file (OpenCV's ``list.txt`` convention: one line per
frame with the file name and the *inverse* shutter time, e.g. ``img0.png 30``)
or from EXIF (ExposureTime, FNumber, ISO). With EXIF, aperture and ISO are folded
into the bracket's gain so that ``exposure_s * gain`` is the relative exposure
``t * (ISO / 100) * (N_0 / N)^2``, N_0 being the first frame's f-number.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgehdr.bracket import Bracket, check_code_depth, check_frame_matches
from edgehdr.io.atomic import write_bytes_atomic
from edgehdr.io.headers import check_image_header, jpeg_is_complete

__all__ = ["read_ldr_stack", "read_ldr_image", "write_ldr_image", "read_list_file", "read_exif_exposure",
           "exif_gains", "LDR_SUFFIXES"]

LDR_SUFFIXES = (".jpg", ".jpeg", ".png", ".tif", ".tiff", ".ppm", ".pgm", ".bmp", ".webp")
_EXIF_IFD = 0x8769
_TAG_EXPOSURE_TIME = 0x829A
_TAG_FNUMBER = 0x829D
_TAG_ISO = 0x8827


def read_ldr_image(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> np.ndarray:
    """Read an 8- or 16-bit image as an RGB (H, W, 3) uint8/uint16 array.

    The header is checked before decoding (content matches the suffix, positive size
    within ``max_pixels``, see ``edgehdr.io.headers``); a JPEG must reach its end
    marker and decode without libjpeg's warnings (strict, ``simplejpeg``): OpenCV
    decodes a truncated or damaged file with only a warning on stderr and grey fill
    or garbage blocks, which would merge into a wrong HDR image.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        Unreadable, truncated or corrupt file, size above the limit, pixels that are
        not 8/16-bit integers. The message names the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    declared = check_image_header(path, max_pixels=max_pixels)
    raw = path.read_bytes()
    data = np.frombuffer(raw, np.uint8)  # the same bytes for OpenCV, no copy
    if path.suffix.lower() in (".jpg", ".jpeg"):
        rgb = _decode_jpeg_strict(path, raw)
        if rgb is not None:
            if declared is not None and rgb.shape[1::-1] != tuple(declared):
                raise ValueError(f"{path}: decoded {rgb.shape[1]} x {rgb.shape[0]} pixels, header declares "
                                 f"{declared[0]} x {declared[1]}")
            return rgb
    try:
        bgr = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # some malformed headers make OpenCV assert instead of returning None
        raise ValueError(f"{path}: not a readable image ({str(exc).strip().splitlines()[-1]})") from exc
    if bgr is None:
        raise ValueError(f"{path}: not a readable image (corrupt, truncated or unsupported format)")
    if declared is not None and bgr.shape[1::-1] != tuple(declared):
        raise ValueError(f"{path}: decoded {bgr.shape[1]} x {bgr.shape[0]} pixels, header declares "
                         f"{declared[0]} x {declared[1]}")
    if bgr.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"{path}: expected 8- or 16-bit integer pixels, got {bgr.dtype}")
    if bgr.ndim == 2:
        return np.ascontiguousarray(np.repeat(bgr[:, :, None], 3, axis=2))
    if bgr.shape[2] == 4:
        return cv2.cvtColor(bgr, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# libjpeg warnings about a file's metadata or labelling, not its pixels: decoded as OpenCV does. Samsung phones and
# some IP cameras write sequential JPEGs whose SOS header says otherwise; the pixels are sound.
_BENIGN_JPEG_WARNINGS = ("Invalid SOS parameters for sequential JPEG", "Unknown Adobe color transform code",
                         "Warning: unknown JFIF revision number", "Corrupt JPEG data: bad ICC marker")


def _decode_jpeg_strict(path: Path, data: bytes) -> np.ndarray | None:
    """RGB uint8 pixels of a JPEG, decoded by libjpeg-turbo (simplejpeg) with its warnings as errors; None for
    a CMYK/YCCK file once it decoded strictly (libjpeg-turbo does not convert those to RGB: OpenCV does).

    OpenCV's and Pillow's libjpeg decode a file damaged mid-stream (bytes overwritten or zeroed: "Corrupt JPEG
    data: N extraneous bytes before marker", "premature end of data segment") with a warning on stderr and garbage
    blocks, which a merge would take as a frame; strict decoding refuses it. Warnings about metadata only
    (``_BENIGN_JPEG_WARNINGS``) are let through, and ``EDGEHDR_JPEG_LENIENT=1`` lets every warning through (a
    camera whose sound files libjpeg warns about). The pixels are OpenCV's: the same library, its accurate IDCT
    and fancy upsampling (a test compares)."""
    import simplejpeg

    if not jpeg_is_complete(data):
        raise ValueError(f"{path}: truncated or corrupt JPEG (the data ends before the end-of-image marker)")
    lenient = os.environ.get("EDGEHDR_JPEG_LENIENT", "") not in ("", "0")
    try:
        colorspace = simplejpeg.decode_jpeg_header(data)[2]
        cmyk = colorspace in ("CMYK", "YCCK")  # checked here, then converted to RGB by OpenCV
        options = {"colorspace": "CMYK" if cmyk else "RGB", "fastdct": False, "fastupsample": False}
        try:
            rgb = simplejpeg.decode_jpeg(data, strict=not lenient, **options)
        except ValueError as exc:
            if not str(exc).strip().startswith(_BENIGN_JPEG_WARNINGS):
                raise
            rgb = simplejpeg.decode_jpeg(data, strict=False, **options)
    except ValueError as exc:
        raise ValueError(f"{path}: corrupt JPEG ({str(exc).strip()}; EDGEHDR_JPEG_LENIENT=1 decodes it as OpenCV "
                         "would, garbage blocks included)") from None
    return None if cmyk else np.ascontiguousarray(rgb)


def write_ldr_image(path: str | os.PathLike[str], rgb: np.ndarray) -> Path:
    """Write an RGB uint8/uint16 image atomically; PNG, TIFF or JPEG by suffix (16 bits: PNG, TIFF, PPM only)."""
    path = Path(path)
    rgb = np.asarray(rgb)
    if rgb.dtype not in (np.uint8, np.uint16) or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"{path}: expected an HxWx3 uint8/uint16 RGB image, got {rgb.dtype} {rgb.shape}")
    suffix = path.suffix.lower()
    if rgb.dtype == np.uint16 and suffix not in (".png", ".tif", ".tiff", ".ppm", ".pgm"):
        # OpenCV would write 8 bits saturated from the 16-bit values: a white image, without a word
        raise ValueError(f"{path}: a {suffix or '(no extension)'} file holds 8 bits; this image is 16-bit (write "
                         ".png or .tif, or convert to 8 bits first)")
    try:
        ok, encoded = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    except cv2.error as exc:  # an extension OpenCV has no encoder for
        raise ValueError(f"{path}: OpenCV cannot write a {path.suffix or '(no extension)'!r} image "
                         f"({str(exc).strip().splitlines()[-1]})") from None
    if not ok:
        raise ValueError(f"{path}: OpenCV could not encode a {path.suffix!r} image")
    return write_bytes_atomic(path, encoded.tobytes())


def read_list_file(list_path: str | os.PathLike[str]) -> list[tuple[Path, float]]:
    """Parse an OpenCV-style list file into ``[(image path, exposure_s), ...]``.

    Each non-empty, non-comment line holds a file name (relative to the list
    file's folder) and the inverse shutter time ``1 / exposure_s``.
    """
    list_path = Path(list_path)
    if not list_path.is_file():
        raise FileNotFoundError(f"{list_path}: no such list file")
    try:
        text = list_path.read_text(encoding="utf-8-sig")  # a byte-order mark (Notepad's) is not part of a name
    except UnicodeDecodeError as exc:
        raise ValueError(f"{list_path}: not a text list file (byte {exc.start} is not UTF-8); expected lines of "
                         "'FILENAME INVERSE_SHUTTER_TIME'") from None
    entries = []
    for lineno, raw in enumerate(text.splitlines(), start=1):
        # A comment is a line starting with '#', or '#' after a space: 'shot#1.png 30' names a file
        line = "" if raw.lstrip().startswith("#") else re.split(r"\s#", raw, maxsplit=1)[0].strip()
        if not line:
            continue
        parts = line.rsplit(None, 1)  # the value is the last field; the name may hold spaces
        if len(parts) != 2:
            raise ValueError(f"{list_path}:{lineno}: expected 'FILENAME INVERSE_SHUTTER_TIME', got {raw!r}")
        name, value = parts
        try:
            inverse_s = float(value)
        except ValueError:
            raise ValueError(f"{list_path}:{lineno}: inverse shutter time {value!r} is not a number") from None
        if not np.isfinite(inverse_s) or inverse_s <= 0 or not math.isfinite(1.0 / inverse_s):
            raise ValueError(f"{list_path}:{lineno}: inverse shutter time must be a positive number whose inverse "
                             f"is finite, got {value}")
        entries.append((list_path.parent / name, 1.0 / inverse_s))
    return entries


def _exif_number(path: Path, name: str, value: Any) -> float:
    """One EXIF number (an int, a float or Pillow's rational) as a float; ``ValueError`` naming the file and the
    tag for anything else (several values, text, 0/0, infinity)."""
    if isinstance(value, (tuple, list)):
        if len(value) == 1:
            value = value[0]
        else:
            raise ValueError(f"{path}: EXIF {name} holds {len(value)} values {value!r}; expected one number")
    try:
        number = float(value)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        raise ValueError(f"{path}: EXIF {name} {value!r} is not a number") from None
    if not math.isfinite(number) or number <= 0:
        raise ValueError(f"{path}: EXIF {name} {value!r} is not a positive number")
    return number


def read_exif_exposure(path: str | os.PathLike[str]) -> tuple[float, float | None, float | None]:
    """Return ``(exposure_s, f_number, iso)`` from a file's EXIF.

    ``f_number`` and ``iso`` are None when absent or 0 (unknown); an FNumber that is
    not one positive number (a manual lens's 0/0) is taken as unknown too. Raises
    ``ValueError`` naming the file when ExposureTime is missing or not one positive
    number, when ISO is present but not a positive number (0/0, infinity, text; of
    several values the first counts), or when the file's EXIF cannot be read at all.
    """
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as img:
            exif = img.getexif()
            tags = dict(exif)
            tags.update(exif.get_ifd(_EXIF_IFD))
    except Exception as exc:  # noqa: BLE001 - Pillow raises many kinds on damaged files (OSError, SyntaxError,
        # KeyError, DecompressionBombError, ...): all mean "cannot read this file's EXIF"
        raise ValueError(f"{path}: cannot read EXIF ({type(exc).__name__}: {exc})") from None
    if _TAG_EXPOSURE_TIME not in tags:
        raise ValueError(
            f"{path}: no EXIF ExposureTime; give the exposures in a list file "
            "('FILENAME INVERSE_SHUTTER_TIME' per line)"
        )
    exposure_s = _exif_number(path, "ExposureTime", tags[_TAG_EXPOSURE_TIME])
    try:  # a manual lens reports FNumber 0 or 0/0: the aperture is unknown, taken as the same in every frame
        f_number = _exif_number(path, "FNumber", tags[_TAG_FNUMBER]) if tags.get(_TAG_FNUMBER) else None
    except ValueError:
        f_number = None
    iso_tag = tags.get(_TAG_ISO)
    if isinstance(iso_tag, (tuple, list)):  # several SHORTs: the first is the one in use
        iso_tag = iso_tag[0] if iso_tag else None
    iso = _exif_number(path, "ISOSpeedRatings", iso_tag) if iso_tag else None  # 0: unknown
    return exposure_s, f_number, iso


def _collect_paths(
    inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
) -> tuple[list[Path], Path | None]:
    if isinstance(inputs, (str, os.PathLike)):  # one path (any os.PathLike, not only Path)
        inputs = [inputs]
    paths = [Path(p) for p in inputs]
    if len(paths) == 1 and paths[0].is_dir():
        folder = paths[0]
        list_file = folder / "list.txt"
        if list_file.is_file():
            return [], list_file
        paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in LDR_SUFFIXES)
        if not paths:
            raise ValueError(f"{folder}: no images ({', '.join(LDR_SUFFIXES)}) and no list.txt")
        return paths, None
    if len(paths) == 1 and paths[0].suffix.lower() == ".txt":
        return [], paths[0]
    return paths, None


def exif_gains(paths: Sequence[str | os.PathLike[str]], f_numbers: Sequence[float | None],
               isos: Sequence[float | None]) -> list[float]:
    """Relative gains from EXIF: ISO / 100, times the square of the aperture ratio to the first frame with a known
    FNumber (a frame at f/4 gathers four times the light of one at f/8). Unknown values count as unchanged.
    ``ValueError`` naming the file for a gain no camera has."""
    gains = []
    n0 = next((n for n in f_numbers if n), None)
    for p, n, iso in zip(paths, f_numbers, isos):
        g = (iso / 100.0) if iso else 1.0
        if n0 and n:
            g *= math.pow(min(n0 / n, 1e150), 2)  # capped: a float's pow overflows with an exception
        if not math.isfinite(g) or g <= 0 or g > 1e12:  # FNumbers of 1e-300 and 1: a gain no camera has
            settings = " and ".join(part for part in (f"FNumber {n:g}" if n else "", f"ISO {iso:g}" if iso else "")
                                    if part)
            against = f" against the first frame's f/{n0:g}" if n and n0 else ""
            raise ValueError(f"{p}: EXIF {settings} give a relative gain of {g:g}{against}; not a usable exposure")
        gains.append(g)
    return gains


def read_ldr_stack(inputs: str | os.PathLike[str] | Iterable[str | os.PathLike[str]], *,
                   list_file: str | os.PathLike[str] | None = None, bits: int | None = None) -> Bracket:
    """Load an exposure stack as a ``Bracket``.

    Parameters
    ----------
    inputs : path, folder or sequence of paths
        Image files; or a folder (its ``list.txt`` wins over EXIF); or a list file.
    list_file : path, optional
        Explicit list file; its entries replace ``inputs``.
    bits : int, optional
        Significant bits of 16-bit files (e.g. 12 for 12-bit raw data in a 16-bit
        container). Default: 8 for 8-bit files, 16 for 16-bit files.

    Returns
    -------
    Bracket
        Its ``extra["paths"]`` lists the image files read, in order, and
        ``extra["list_file"]`` the list file, where one was used.

    Raises
    ------
    ValueError
        Fewer than two frames, unreadable files, frames of different size or bit
        depth, missing or duplicated exposures. The message names the file(s).
    """
    paths, found_list = _collect_paths(inputs)
    list_file = list_file or found_list
    gains = None
    if list_file is not None:
        entries = read_list_file(list_file)
        paths = [p for p, _ in entries]
        exposures = [t for _, t in entries]
        where = str(list_file)
    else:
        where = "EXIF"
        exposures, f_numbers, isos = [], [], []
        for p in paths:
            if not p.is_file():
                raise FileNotFoundError(f"{p}: no such file")
            t, n, iso = read_exif_exposure(p)
            exposures.append(t)
            f_numbers.append(n)
            isos.append(iso)
        gains = exif_gains(paths, f_numbers, isos)
    if len(paths) < 2:
        raise ValueError(f"{where}: an exposure stack needs at least two frames, got {len(paths)}")
    seen = {}
    for p in paths:
        key = p.resolve()
        if key in seen:
            raise ValueError(f"{where}: file {p} is listed twice")
        seen[key] = p
    relative = np.asarray(exposures) * (np.asarray(gains) if gains else 1.0)
    for i in range(len(paths)):
        for j in range(i):
            if np.isclose(relative[i], relative[j], rtol=1e-6, atol=0.0):  # relative only: 1 ns and 4 ns differ
                raise ValueError(
                    f"{where}: {paths[j]} and {paths[i]} have the same exposure "
                    f"({relative[i]:.6g} s relative); each frame of a stack needs its own exposure"
                )
    frames: list[np.ndarray] = []
    for p in paths:
        frame = read_ldr_image(p)
        if frames:
            check_frame_matches(frame, frames[0], str(p), str(paths[0]))
        frames.append(frame)
    if bits is None:
        bits = 8 if frames[0].dtype == np.uint8 else 16
    else:
        check_code_depth(frames, bits, names=paths)
    return Bracket(
        frames=np.stack(frames),
        exposure_s=np.asarray(exposures, dtype=np.float64),
        gain=None if gains is None else np.asarray(gains),
        bits=bits,
        source=str(list_file or paths[0].parent),
        extra={"paths": [str(p) for p in paths], **({"list_file": str(list_file)} if list_file is not None else {})},
    )
