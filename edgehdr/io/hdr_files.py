"""Reading and writing radiance maps: Radiance RGBE (.hdr/.pic), OpenEXR (.exr), PFM.

This is the file boundary of the frame's journey: a merged ``Radiance`` leaves
through here and offline inputs for tone mapping and dimming come in here. Pixels
are linear float32 RGB inside the package; OpenCV's BGR order is converted once,
here. OpenEXR goes through the ASWF ``OpenEXR`` binding (half or float pixels),
.hdr and .pfm through OpenCV. Every write is atomic.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from edgehdr.io.atomic import atomic_output

__all__ = ["read_radiance", "write_radiance", "RADIANCE_SUFFIXES"]

RADIANCE_SUFFIXES = (".hdr", ".pic", ".exr", ".pfm")


def _suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in RADIANCE_SUFFIXES:
        raise ValueError(f"{path}: unknown radiance file type {suffix!r}; use one of {', '.join(RADIANCE_SUFFIXES)}")
    return suffix


def read_radiance(path) -> np.ndarray:
    """Read a radiance map as linear float32 RGB, shape (H, W, 3).

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
    if suffix == ".exr":
        rgb = _read_exr(path)
    else:
        bgr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
        if bgr is None:
            raise ValueError(f"{path}: not a readable {suffix} file (corrupt or truncated?)")
        if bgr.ndim == 2:
            bgr = np.repeat(bgr[:, :, None], 3, axis=2)
        rgb = cv2.cvtColor(bgr[:, :, :3].astype(np.float32, copy=False), cv2.COLOR_BGR2RGB)
    rgb = np.ascontiguousarray(rgb, dtype=np.float32)
    if not np.all(np.isfinite(rgb)):
        raise ValueError(f"{path}: contains NaN or infinite pixels")
    return rgb


def _read_exr(path: Path) -> np.ndarray:
    import OpenEXR

    try:
        with OpenEXR.File(str(path)) as exr:
            channels = exr.channels()
            if "RGB" in channels:
                rgb = channels["RGB"].pixels
            elif "RGBA" in channels:
                rgb = channels["RGBA"].pixels[..., :3]
            elif "Y" in channels:
                rgb = np.repeat(channels["Y"].pixels[..., None], 3, axis=2)
            else:
                raise ValueError(f"{path}: no R,G,B or Y channels (found {sorted(channels)})")
            return np.asarray(rgb, dtype=np.float32)
    except (RuntimeError, OSError) as exc:
        raise ValueError(f"{path}: not a readable OpenEXR file ({exc})") from exc


def write_radiance(path, radiance: np.ndarray, *, exr_pixel_type: str = "half") -> Path:
    """Write linear RGB radiance atomically; the format follows the suffix.

    Parameters
    ----------
    path : str or Path
        Target file, ``.hdr``/``.pic`` (RGBE, 8-bit mantissas), ``.exr`` or ``.pfm`` (float32).
    radiance : ndarray, (H, W, 3) float
        Non-negative, finite linear RGB.
    exr_pixel_type : {'half', 'float'}
        Pixel type of OpenEXR output. Half covers 6.1e-5 .. 65504 with 11-bit precision;
        use 'float' for calibrated values beyond that range.
    """
    path = Path(path)
    suffix = _suffix(path)
    rgb = np.asarray(radiance)
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"{path}: radiance must be an HxWx3 array, got shape {rgb.shape}")
    rgb = rgb.astype(np.float32, copy=False)
    if not np.all(np.isfinite(rgb)):
        raise ValueError(f"{path}: refusing to write NaN or infinite radiance")
    if suffix == ".exr":
        if exr_pixel_type not in ("half", "float"):
            raise ValueError(f"{path}: exr_pixel_type must be 'half' or 'float', got {exr_pixel_type!r}")
        import OpenEXR

        pixels = np.ascontiguousarray(rgb if exr_pixel_type == "float" else rgb.astype(np.float16))
        header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
        with atomic_output(path) as tmp, OpenEXR.File(header, {"RGB": pixels}) as exr:
            exr.write(str(tmp))
    else:
        bgr = cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGR)
        ok, encoded = cv2.imencode(suffix, bgr)
        if not ok:
            raise ValueError(f"{path}: OpenCV could not encode a {suffix} image")
        with atomic_output(path) as tmp:
            tmp.write_bytes(encoded.tobytes())
    return path
