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
import os
from pathlib import Path

import cv2
import numpy as np

from edgehdr.io.atomic import atomic_output
from edgehdr.io.headers import check_image_header

log = logging.getLogger("edgehdr.io")
HALF_MAX = 65504.0

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
    else:
        try:
            bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        except cv2.error as exc:  # OpenCV asserts on some headers ours accepts (a tab before a PFM's width)
            raise ValueError(f"{path}: OpenCV cannot decode this {suffix} file ({str(exc).strip().splitlines()[-1]})"
                             ) from exc
        if bgr is None:
            raise ValueError(f"{path}: not a readable {suffix} file (corrupt or truncated?)")
        if bgr.ndim == 2:
            bgr = np.repeat(bgr[:, :, None], 3, axis=2)
        rgb = cv2.cvtColor(bgr[:, :, :3].astype(np.float32, copy=False), cv2.COLOR_BGR2RGB)
    rgb = np.ascontiguousarray(rgb, dtype=np.float32)
    if declared is not None and rgb.shape[1::-1] != declared:
        raise ValueError(f"{path}: decoded {rgb.shape[1]} x {rgb.shape[0]} pixels, header declares "
                         f"{declared[0]} x {declared[1]} (truncated or corrupt?)")
    if not np.all(np.isfinite(rgb)):
        raise ValueError(f"{path}: contains NaN or infinite pixels")
    return rgb


def _read_exr(path: Path) -> np.ndarray:
    import OpenEXR

    try:
        with OpenEXR.File(str(path)) as exr:
            channels = exr.channels()
            names = sorted(channels)
            if "RGB" in channels:
                return np.asarray(channels["RGB"].pixels, dtype=np.float32)
            if "RGBA" in channels:
                return np.asarray(channels["RGBA"].pixels[..., :3], dtype=np.float32)
            if "Y" in channels:
                return np.repeat(np.asarray(channels["Y"].pixels, dtype=np.float32)[..., None], 3, axis=2)
    except (RuntimeError, OSError, IndexError, TypeError, ValueError) as exc:  # the binding's errors on damaged files
        raise ValueError(f"{path}: not a readable OpenEXR file, truncated or corrupt ({exc})") from exc
    raise ValueError(f"{path}: no R,G,B or Y channels in the OpenEXR file (found {names})")


def write_radiance(path: str | os.PathLike[str], radiance: np.ndarray, *, exr_pixel_type: str = "auto") -> Path:
    """Write linear RGB radiance atomically; the format follows the suffix.

    Parameters
    ----------
    path : str or Path
        Target file, ``.hdr``/``.pic`` (RGBE, 8-bit mantissas), ``.exr`` or ``.pfm`` (float32).
    radiance : ndarray, (H, W, 3) float
        Non-negative, finite linear RGB.
    exr_pixel_type : {'auto', 'half', 'float'}
        Pixel type of OpenEXR output. Half covers 6.1e-5 .. 65504 with 11-bit precision.
        'auto' (default) writes half when every value fits and float (with a logged
        notice) when one exceeds 65504, so no pixel is ever written as +inf; 'half'
        refuses radiance beyond the half range instead of overflowing.

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

        peak = float(rgb.max()) if rgb.size else 0.0
        if peak > HALF_MAX:
            if exr_pixel_type == "half":
                raise ValueError(f"{path}: radiance up to {peak:.6g} exceeds the half-float maximum {HALF_MAX:g}; "
                                 "write float pixels (exr_pixel_type='float' or 'auto') or rescale")
            if exr_pixel_type == "auto":
                log.info("%s: radiance up to %.6g exceeds the half-float range; writing 32-bit float pixels",
                         path, peak)
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
