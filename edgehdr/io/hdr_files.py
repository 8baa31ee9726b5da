"""Reading and writing radiance maps: Radiance RGBE (.hdr/.pic), OpenEXR (.exr), PFM.

This is the file boundary of the frame's journey: a merged ``Radiance`` leaves
through here and offline inputs for tone mapping and dimming come in here. Pixels
are linear float32 RGB inside the package; OpenCV's BGR order is converted once,
here. OpenEXR goes through the ASWF ``OpenEXR`` binding (half or float pixels),
.hdr and .pfm through OpenCV. Every write is atomic.
"""

from __future__ import annotations

import errno
import logging
import math
import os
from pathlib import Path

import cv2
import numpy as np

from edgehdr.io.atomic import atomic_output
from edgehdr.io.headers import check_image_header, rgbe_resolution

log = logging.getLogger("edgehdr.io")
HALF_MAX = 65504.0
HALF_MIN_NORMAL = 2.0 ** -14  # 6.1e-5

__all__ = ["read_radiance", "write_radiance", "RADIANCE_SUFFIXES"]

RADIANCE_SUFFIXES = (".hdr", ".pic", ".exr", ".pfm")


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in RADIANCE_SUFFIXES:
        raise ValueError(f"{path}: unknown radiance file type {suffix!r}; use one of {', '.join(RADIANCE_SUFFIXES)}")
    return suffix


def read_radiance(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> np.ndarray:
    """Read a radiance map as linear float32 RGB, shape (H, W, 3).

    The header is checked before decoding: the content must match the suffix and the
    declared size must be positive and within ``max_pixels`` (default: the package's
    pixel limit, see ``edgehdr.io.headers``).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    ValueError
        If the file cannot be decoded, names the file and the reason.
    """
    path = Path(path)
    suffix = _suffix(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    declared = check_image_header(path, max_pixels=max_pixels)
    if suffix == ".exr":
        rgb = _read_exr(path)
    elif suffix == ".pfm":
        rgb = _decode(path, suffix)
    else:
        rgb = _read_rgbe(path)
    rgb = np.ascontiguousarray(rgb, dtype=np.float32)
    if declared is not None and rgb.shape[1::-1] != declared:
        raise ValueError(f"{path}: decoded {rgb.shape[1]} x {rgb.shape[0]} pixels, header declares "
                         f"{declared[0]} x {declared[1]} (truncated or corrupt?)")
    if not np.all(np.isfinite(rgb)):
        raise ValueError(f"{path}: contains NaN or infinite pixels")
    return rgb


def _decode(path: Path, suffix: str, data: bytes | None = None) -> np.ndarray:
    """OpenCV's decoder (of the file, or of ``data``: the file's bytes with a rewritten header), as float32 RGB."""
    try:
        bgr = (cv2.imread(str(path), cv2.IMREAD_UNCHANGED) if data is None
               else cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED))
    except cv2.error as exc:  # OpenCV asserts on some headers ours accepts (a tab before a PFM's width)
        raise ValueError(f"{path}: OpenCV cannot decode this {suffix} file ({str(exc).strip().splitlines()[-1]})"
                         ) from exc
    if bgr is None:
        raise ValueError(f"{path}: not a readable {suffix} file (corrupt or truncated?)")
    if bgr.ndim == 2:
        bgr = np.repeat(bgr[:, :, None], 3, axis=2)
    return cv2.cvtColor(bgr[:, :, :3].astype(np.float32, copy=False), cv2.COLOR_BGR2RGB)


def _read_rgbe(path: Path) -> np.ndarray:
    """A Radiance RGBE file as Radiance reads it.

    OpenCV decodes only the standard orientation (``-Y H +X W``, rows top to bottom); the seven others (rows bottom
    to top, columns right to left, or column-major) are decoded under a rewritten resolution line and then flipped
    or transposed into place. Each mantissa reads as its bin's centre, ``(m + 0.5) 2^(e - 136)`` (Radiance's
    ``colr_color``; OpenCV decodes ``m 2^(e - 136)``, the bin's bottom, which put every value half a step low on
    average), and ``EXPOSURE=`` lines (multipliers already applied to the pixels) are divided out.
    """
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    end, line_end, (sign1, axis1, n1), (sign2, axis2, n2) = rgbe_resolution(path, head)
    header = head[:end]
    if (sign1, axis1, sign2, axis2) == ("-", "Y", "+", "X"):
        rgb = _decode(path, ".hdr")
    else:  # the whole file read here only: OpenCV reads a standard one itself
        data = path.read_bytes()
        rewritten = data[:end + 2] + f"-Y {n1} +X {n2}".encode() + data[line_end:]
        rgb = _decode(path, ".hdr", rewritten)  # rows: the first axis, columns: the second
        if axis1 == "X":  # column-major: the first axis runs along x
            rgb = rgb.transpose(1, 0, 2)
            (sign1, sign2) = (sign2, sign1)  # now rows follow Y's sign, columns X's
        if sign1 == "+":  # +Y: the first scanline is the bottom row
            rgb = rgb[::-1]
        if sign2 == "-":  # -X: right to left
            rgb = rgb[:, ::-1]
        rgb = np.ascontiguousarray(rgb)
    peak = rgb.max(axis=2)
    _, exponent = np.frexp(peak)
    half_step = np.where(peak > 0, np.ldexp(np.float32(0.5), exponent - 8), 0).astype(np.float32)
    rgb = rgb + half_step[:, :, None]
    exposure = 1.0
    for raw in header.split(b"\n"):
        text = raw.decode("ascii", "replace").strip()
        if text.upper().startswith("EXPOSURE="):
            try:
                value = float(text.split("=", 1)[1])
            except ValueError:
                raise ValueError(f"{path}: Radiance header line {text!r}: not a number") from None
            if not (math.isfinite(value) and value > 0):
                raise ValueError(f"{path}: Radiance header line {text!r}: an exposure is a positive number")
            exposure *= value
    if exposure != 1.0:
        rgb /= np.float32(exposure)
    return rgb


def _exr_rgb(path: Path, channels: dict) -> np.ndarray | None:
    """RGB of an open OpenEXR file's channels (read while the file is open: the binding frees them on close)."""
    if "RGB" in channels:
        return np.array(channels["RGB"].pixels, dtype=np.float32)
    if "RGBA" in channels:
        return np.array(channels["RGBA"].pixels[..., :3], dtype=np.float32)
    if all(c in channels for c in "RGB"):  # channels read one by one (of different pixel types)
        return np.stack([np.asarray(channels[c].pixels, np.float32) for c in "RGB"], axis=2)
    if "Y" in channels and ("RY" in channels or "BY" in channels):
        raise ValueError(f"{path}: a luminance/chroma OpenEXR file (Y, RY, BY); read as grey it would lose its "
                         "colour: convert it to RGB first (e.g. with OpenImageIO's oiiotool)")
    if "Y" in channels:
        return np.repeat(np.asarray(channels["Y"].pixels, dtype=np.float32)[..., None], 3, axis=2)
    return None


def _read_exr(path: Path) -> np.ndarray:
    import OpenEXR

    try:
        # R, G and B of different pixel types (float and half, say) cannot be read as one RGB array: such a valid
        # file is read again channel by channel
        for separate in (False, True):
            try:
                with OpenEXR.File(str(path), separate_channels=separate) as exr:
                    channels = exr.channels()
                    names = sorted(channels)
                    rgb = _exr_rgb(path, channels)
                break
            except (RuntimeError, ValueError) as exc:
                if separate or "coalesce" not in str(exc):
                    raise
    except ValueError as exc:
        if str(path) in str(exc):
            raise
        raise ValueError(f"{path}: not a readable OpenEXR file, truncated or corrupt ({exc})") from exc
    except (RuntimeError, OSError, IndexError, TypeError) as exc:  # the binding's errors on damaged files
        raise ValueError(f"{path}: not a readable OpenEXR file, truncated or corrupt ({exc})") from exc
    if rgb is None:
        raise ValueError(f"{path}: no R,G,B or Y channels in the OpenEXR file (found {names})")
    return rgb


def write_radiance(path: str | os.PathLike[str], radiance: np.ndarray, *, exr_pixel_type: str = "auto") -> Path:
    """Write linear RGB radiance atomically; the format follows the suffix.

    Parameters
    ----------
    path : str or Path
        Target file, ``.hdr``/``.pic`` (RGBE, 8-bit mantissas), ``.exr`` or ``.pfm`` (float32).
    radiance : ndarray, (H, W, 3) float
        Finite linear RGB. Negative values are kept in .exr and .pfm; RGBE cannot hold them (written as 0,
        with a logged warning).
    exr_pixel_type : {'auto', 'half', 'float'}
        Pixel type of OpenEXR output. Half covers 6.1e-5 .. 65504 with 11-bit precision.
        'auto' (default) writes half when every value's magnitude fits that range and float
        (with a logged notice) otherwise, so no pixel is ever written as infinity or
        flushed towards 0; 'half' refuses radiance beyond 65504 instead of overflowing
        (and keeps smaller values as half's subnormals or 0, as asked).

    Raises
    ------
    ValueError
        Non-finite radiance (also values beyond float32), a shape that is not HxWx3,
        or radiance beyond 65504 with ``exr_pixel_type='half'``.
    """
    path = Path(path)
    suffix = _suffix(path)
    rgb = np.asarray(radiance)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"{path}: radiance must be an HxWx3 array, got shape {rgb.shape}")
    if not np.all(np.isfinite(rgb)):
        raise ValueError(f"{path}: refusing to write NaN or infinite radiance")
    with np.errstate(over="ignore"):  # overflow is checked right below
        rgb = rgb.astype(np.float32, copy=False)
    if not np.all(np.isfinite(rgb)):
        raise ValueError(f"{path}: radiance exceeds the float32 range (3.4e38); rescale before writing")
    if suffix == ".exr":
        if exr_pixel_type not in ("auto", "half", "float"):
            raise ValueError(f"{path}: exr_pixel_type must be 'auto', 'half' or 'float', got {exr_pixel_type!r}")
        import OpenEXR

        magnitude = np.abs(rgb)  # a negative value beyond -65504 overflows half as surely as a positive one
        peak = float(magnitude.max()) if rgb.size else 0.0
        if peak > HALF_MAX:
            if exr_pixel_type == "half":
                raise ValueError(f"{path}: radiance up to {peak:.6g} exceeds the half-float maximum {HALF_MAX:g}; "
                                 "write float pixels (exr_pixel_type='float' or 'auto') or rescale")
            if exr_pixel_type == "auto":
                log.info("%s: radiance up to %.6g exceeds the half-float range; writing 32-bit float pixels",
                         path, peak)
                exr_pixel_type = "float"
        if exr_pixel_type == "auto" and peak > 0:
            # below half's smallest normal number precision falls away (1e-6 kept to 2 %), below 6e-8 to 0
            smallest = float(np.min(magnitude, initial=np.inf, where=magnitude > 0))
            if smallest < HALF_MIN_NORMAL:
                log.info("%s: radiance down to %.3g is below the half-float's normal range; writing 32-bit float "
                         "pixels", path, smallest)
                exr_pixel_type = "float"

        pixels = np.ascontiguousarray(rgb if exr_pixel_type == "float" else rgb.astype(np.float16))
        header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
        with atomic_output(path) as tmp, OpenEXR.File(header, {"RGB": pixels}) as exr:
            try:
                exr.write(str(tmp))
            except RuntimeError as exc:  # the binding reports I/O failures (a full disk) as RuntimeError
                reason = "no space left on device" if "No space left" in str(exc) else str(exc)
                raise OSError(errno.ENOSPC if "No space left" in str(exc) else errno.EIO,
                              f"{path}: cannot write ({reason})") from exc
    else:
        if suffix in (".hdr", ".pic") and rgb.size and float(rgb.min()) < 0:  # RGBE holds no sign
            log.warning("%s: %d negative values written as 0 (RGBE cannot hold them; .exr and .pfm can)", path,
                        int(np.count_nonzero(rgb < 0)))
        bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
        # imwrite straight into the temporary file: OpenCV's in-memory .hdr encoder goes through a file in
        # the system's temporary folder anyway, which would make a full /tmp fail a write elsewhere.
        with atomic_output(path) as tmp:
            try:
                ok = cv2.imwrite(str(tmp), bgr)
            except cv2.error as exc:
                raise OSError(errno.EIO, f"{path}: cannot write ({exc.err})") from None
            if not ok:
                raise OSError(errno.EIO, f"{path}: cannot write (OpenCV's {suffix} writer failed; disk full?)")
    return path
