"""The ``LedLayout`` data contract: zone grid, panel, LED point-spread function, drive response.

Describes the HDR local-dimming display of the frame's journey: an LCD in front of
a grid of individually driven LED zones (the dual-modulation display of Seetzen et
al. 2004). Layouts load from TOML or JSON; every key is validated and errors name
the file, the key and what is allowed.

Example ``layout.toml``::

    [panel]
    width_px = 1920
    height_px = 1080
    peak_luminance_cd_m2 = 1000.0
    native_contrast = 1000.0      # LCD leakage = 1 / native_contrast
    lcd_gamma = 2.2
    lcd_bits = 8

    [zones]
    rows = 48
    cols = 48
    bits = 12

    [psf]
    model = "gaussian"            # or "image"
    sigma_pitch = 0.8             # Gaussian sigma in zone pitches
    # file = "psf.png"            # model = "image": measured PSF, centred, grey
    # extent_pitch = 4.0          # the image spans this many zone pitches

    [drive]
    response = "linear"           # linear PWM, or "lut"
    # lut = [0.0, 0.02, ...]      # light fraction at evenly spaced drive levels 0..1
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from edgehdr.tomlconfig import read_table, typed_entries

__all__ = ["LedLayout", "load_layout", "LayoutError"]


class LayoutError(ValueError):
    """A layout file or value that does not follow the schema; the message names the key."""


_SCHEMA = {
    "panel": {"width_px": int, "height_px": int, "peak_luminance_cd_m2": float, "native_contrast": float,
              "lcd_gamma": float, "lcd_bits": int},
    "zones": {"rows": int, "cols": int, "bits": int},
    "psf": {"model": str, "sigma_pitch": float, "file": str, "extent_pitch": float},
    "drive": {"response": str, "lut": list},
}


@dataclass
class LedLayout:
    """A local-dimming display.

    Attributes
    ----------
    rows, cols : int
        Zone grid (1..255 each; up to 48 x 48 in practice).
    width_px, height_px : int
        LCD panel resolution.
    peak_luminance_cd_m2 : float
        Full-white luminance with every LED at full drive (panel centre).
    native_contrast : float
        LCD contrast; leakage = 1 / native_contrast of the backlight passes a black pixel.
    lcd_gamma, lcd_bits : float, int
        LCD transmittance ``T = (code / (2^bits - 1))^gamma``; 8 or 10 bits.
    zone_bits : int
        Bit depth of the zone drive values sent to the controller (8..16).
    psf_model : {'gaussian', 'image'}
    psf_sigma_pitch : float
        Gaussian sigma in zone pitches (per axis).
    psf_image : ndarray or None
        Measured PSF, centred, covering ``psf_extent_pitch`` pitches per side.
    drive_lut : ndarray or None
        Light fraction at evenly spaced drive levels (monotonic, 0 -> 0, 1 -> 1);
        None for linear PWM.
    """

    rows: int = 48
    cols: int = 48
    width_px: int = 1920
    height_px: int = 1080
    peak_luminance_cd_m2: float = 1000.0
    native_contrast: float = 1000.0
    lcd_gamma: float = 2.2
    lcd_bits: int = 8
    zone_bits: int = 12
    psf_model: str = "gaussian"
    psf_sigma_pitch: float = 0.8
    psf_extent_pitch: float = 4.0
    psf_image: np.ndarray | None = field(default=None, repr=False)
    drive_lut: np.ndarray | None = field(default=None, repr=False)
    source: str = "<defaults>"

    def __post_init__(self):
        self.validate()

    # -------------------------------------------------------------------------------------- checks

    def _fail(self, key: str, value, allowed: str):
        raise LayoutError(f"{self.source}: {key} = {value!r}: expected {allowed}")

    def validate(self) -> "LedLayout":
        if not (1 <= self.rows <= 255):
            self._fail("[zones] rows", self.rows, "an integer 1..255")
        if not (1 <= self.cols <= 255):
            self._fail("[zones] cols", self.cols, "an integer 1..255")
        if not (8 <= self.zone_bits <= 16):
            self._fail("[zones] bits", self.zone_bits, "an integer 8..16")
        if not (16 <= self.width_px <= 16384):
            self._fail("[panel] width_px", self.width_px, "an integer 16..16384")
        if not (16 <= self.height_px <= 16384):
            self._fail("[panel] height_px", self.height_px, "an integer 16..16384")
        if self.rows > self.height_px or self.cols > self.width_px:
            self._fail("[zones] rows/cols", (self.rows, self.cols), "at most one zone per panel pixel")
        if not (1.0 <= self.peak_luminance_cd_m2 <= 100000.0):
            self._fail("[panel] peak_luminance_cd_m2", self.peak_luminance_cd_m2, "a number 1..100000")
        if not (10.0 <= self.native_contrast <= 1e7):
            self._fail("[panel] native_contrast", self.native_contrast, "a number 10..1e7")
        if not (1.0 <= self.lcd_gamma <= 3.0):
            self._fail("[panel] lcd_gamma", self.lcd_gamma, "a number 1..3")
        if self.lcd_bits not in (8, 10):
            self._fail("[panel] lcd_bits", self.lcd_bits, "8 or 10")
        if self.psf_model not in ("gaussian", "image"):
            self._fail("[psf] model", self.psf_model, "'gaussian' or 'image'")
        if not (0.1 <= self.psf_sigma_pitch <= 10.0):
            self._fail("[psf] sigma_pitch", self.psf_sigma_pitch, "a number 0.1..10")
        if self.psf_model == "image":
            if self.psf_image is None:
                self._fail("[psf] file", None, "a PSF image when model = 'image'")
            img = np.asarray(self.psf_image, np.float64)
            if img.ndim != 2 or min(img.shape) < 3 or not np.all(np.isfinite(img)) or img.min() < 0 or img.max() <= 0:
                self._fail("[psf] file", getattr(img, "shape", None), "a finite, non-negative 2-D image with a peak")
            if not (0.5 <= self.psf_extent_pitch <= 64.0):
                self._fail("[psf] extent_pitch", self.psf_extent_pitch, "a number 0.5..64")
        if self.drive_lut is not None:
            lut = np.asarray(self.drive_lut, np.float64)
            if lut.ndim != 1 or lut.size < 2 or np.any(np.diff(lut) < 0) or lut[0] < 0 or abs(lut[-1] - 1) > 1e-6:
                self._fail("[drive] lut", "...", "a non-decreasing list of light fractions from >= 0 to 1")
            self.drive_lut = lut
        return self

    # -------------------------------------------------------------------------------------- derived

    @property
    def zones(self) -> int:
        return self.rows * self.cols

    @property
    def leakage(self) -> float:
        return 1.0 / self.native_contrast

    @property
    def pitch_px(self) -> tuple[float, float]:
        """Zone pitch (rows, cols) in panel pixels."""
        return self.height_px / self.rows, self.width_px / self.cols

    def light_from_drive(self, drive):
        """LED light fraction for a normalised drive value in [0, 1] (the LED drive response)."""
        drive = np.clip(np.asarray(drive, np.float64), 0.0, 1.0)
        if self.drive_lut is None:
            return drive
        return np.interp(drive, np.linspace(0.0, 1.0, self.drive_lut.size), self.drive_lut)

    def drive_from_light(self, light):
        """Inverse drive response: the drive value that gives a light fraction."""
        light = np.clip(np.asarray(light, np.float64), 0.0, 1.0)
        if self.drive_lut is None:
            return light
        return np.interp(light, self.drive_lut, np.linspace(0.0, 1.0, self.drive_lut.size))

    def to_zone_values(self, light) -> np.ndarray:
        """Light fractions (rows, cols) -> uint16 drive codes ``0 .. 2^zone_bits - 1`` (the ZoneFrame)."""
        top = (1 << self.zone_bits) - 1
        return np.rint(self.drive_from_light(light) * top).astype(np.uint16)

    def light_from_zone_values(self, values) -> np.ndarray:
        top = (1 << self.zone_bits) - 1
        return self.light_from_drive(np.asarray(values, np.float64) / top)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("psf_image")
        d["drive_lut"] = None if self.drive_lut is None else [float(v) for v in self.drive_lut]
        return d

    @classmethod
    def for_panel(cls, height_px: int, width_px: int, rows: int, cols: int, **kwargs) -> "LedLayout":
        return cls(rows=rows, cols=cols, width_px=width_px, height_px=height_px, **kwargs)


def load_layout(path) -> LedLayout:
    """Read a layout from TOML (``.toml``) or JSON (``.json``); see the module docstring."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such layout file")
    data = read_table(path, LayoutError)
    kwargs = {}
    names = {("panel", "width_px"): "width_px", ("panel", "height_px"): "height_px",
             ("panel", "peak_luminance_cd_m2"): "peak_luminance_cd_m2", ("panel", "native_contrast"): "native_contrast",
             ("panel", "lcd_gamma"): "lcd_gamma", ("panel", "lcd_bits"): "lcd_bits", ("zones", "rows"): "rows",
             ("zones", "cols"): "cols", ("zones", "bits"): "zone_bits", ("psf", "model"): "psf_model",
             ("psf", "sigma_pitch"): "psf_sigma_pitch", ("psf", "extent_pitch"): "psf_extent_pitch"}
    for section, key, value in typed_entries(data, _SCHEMA, str(path), LayoutError):
        if (section, key) in names:
            kwargs[names[(section, key)]] = value
    drive = data.get("drive", {})
    response = drive.get("response", "linear")
    if response not in ("linear", "lut"):
        raise LayoutError(f"{path}: [drive] response = {response!r}: expected 'linear' or 'lut'")
    if response == "lut":
        if "lut" not in drive:
            raise LayoutError(f"{path}: [drive] lut is required when response = 'lut'")
        kwargs["drive_lut"] = np.asarray(drive["lut"], np.float64)
    psf_file = data.get("psf", {}).get("file")
    if psf_file is not None:
        from edgehdr.io import read_ldr_image, read_radiance
        from edgehdr.io.hdr_files import RADIANCE_SUFFIXES

        psf_path = (path.parent / psf_file).resolve()
        if not psf_path.is_file():
            raise LayoutError(f"{path}: [psf] file = {psf_file!r}: no such file ({psf_path})")
        img = read_radiance(psf_path) if psf_path.suffix.lower() in RADIANCE_SUFFIXES else read_ldr_image(psf_path)
        kwargs["psf_image"] = np.asarray(img, np.float64).mean(axis=2)
    return LedLayout(source=str(path), **kwargs)
