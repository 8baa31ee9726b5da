"""The ``LedLayout`` data contract: zone grid, panel, LED point-spread function, drive response.

Describes the HDR local-dimming display of the frame's journey: an LCD in front of
a grid of individually driven LED zones (the dual-modulation display of Seetzen et
al. 2004). Layouts load from TOML or JSON; every key is validated and errors name
the file, the key and what is allowed. Numbers must be finite (TOML ``nan``/``inf``
and JSON ``NaN``/``Infinity`` are refused, each LUT entry by its index), and a zone
grid or panel size is given whole: ``rows`` with ``cols``, ``width_px`` with ``height_px``.

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

import math
import os
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


_REAL = (int, float, np.integer, np.floating)


def _isfinite(value) -> bool:
    """``math.isfinite`` that answers False for integers beyond a float's range (TOML and JSON allow them)."""
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _num(value: float) -> str:
    return f"{value:g}".replace("e+0", "e").replace("e+", "e")


def require_finite_light(light: np.ndarray) -> np.ndarray:
    """``light`` as an array; ``ValueError`` on a non-finite light fraction: it has no drive code (a cast
    would turn it into 0, a dark LED)."""
    light = np.asarray(light)
    if not np.isfinite(light).all():
        raise ValueError(f"zone light has {int(np.count_nonzero(~np.isfinite(light)))} non-finite values of "
                         f"{light.size}: no drive code for them")
    return light


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

    def _integer(self, key: str, value, lo: int, hi: int) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
            self._fail(key, value, f"an integer {lo}..{hi}")

    def _number(self, key: str, value, lo: float, hi: float) -> None:
        # NaN fails every comparison, so it is named here rather than slipping through a range test.
        if (isinstance(value, bool) or not isinstance(value, _REAL) or not _isfinite(value)
                or not lo <= value <= hi):
            self._fail(key, value, f"a finite number {_num(lo)}..{_num(hi)}")

    def validate(self) -> LedLayout:
        self._integer("[zones] rows", self.rows, 1, 255)
        self._integer("[zones] cols", self.cols, 1, 255)
        self._integer("[zones] bits", self.zone_bits, 8, 16)
        self._integer("[panel] width_px", self.width_px, 16, 16384)
        self._integer("[panel] height_px", self.height_px, 16, 16384)
        if self.rows > self.height_px or self.cols > self.width_px:
            self._fail("[zones] rows/cols", (self.rows, self.cols), "at most one zone per panel pixel")
        self._number("[panel] peak_luminance_cd_m2", self.peak_luminance_cd_m2, 1.0, 100000.0)
        self._number("[panel] native_contrast", self.native_contrast, 10.0, 1e7)
        self._number("[panel] lcd_gamma", self.lcd_gamma, 1.0, 3.0)
        if isinstance(self.lcd_bits, bool) or self.lcd_bits not in (8, 10):
            self._fail("[panel] lcd_bits", self.lcd_bits, "8 or 10")
        if self.psf_model not in ("gaussian", "image"):
            self._fail("[psf] model", self.psf_model, "'gaussian' or 'image'")
        self._number("[psf] sigma_pitch", self.psf_sigma_pitch, 0.1, 10.0)
        if self.psf_model == "image":
            if self.psf_image is None:
                self._fail("[psf] file", None, "a PSF image when model = 'image'")
            img = np.asarray(self.psf_image, np.float64)
            if img.ndim != 2 or min(img.shape) < 3 or not np.all(np.isfinite(img)) or img.min() < 0 or img.max() <= 0:
                self._fail("[psf] file", getattr(img, "shape", None), "a finite, non-negative 2-D image with a peak")
            self._number("[psf] extent_pitch", self.psf_extent_pitch, 0.5, 64.0)
        if self.drive_lut is not None:
            self.drive_lut = self._checked_lut(self.drive_lut)
        return self

    def _checked_lut(self, raw) -> np.ndarray:
        """The drive LUT as float64, each entry checked by its index."""
        what = "a list of at least 2 light fractions in [0, 1], non-decreasing, ending at 1"
        if isinstance(raw, (str, bytes, dict)) or not hasattr(raw, "__len__"):
            self._fail("[drive] lut", raw, what)
        items = raw.tolist() if isinstance(raw, np.ndarray) else list(raw)
        for i, v in enumerate(items):
            if isinstance(v, bool) or not isinstance(v, _REAL) or not _isfinite(v) or not 0 <= v <= 1:
                self._fail(f"[drive] lut[{i}]", v, "a finite number in [0, 1]")
            if i and v < items[i - 1]:
                self._fail(f"[drive] lut[{i}]", v, f"a value >= lut[{i - 1}] = {items[i - 1]!r} (the LUT never "
                                                   f"decreases)")
        if len(items) < 2:
            self._fail("[drive] lut", items, what)
        if abs(items[-1] - 1) > 1e-6:
            self._fail(f"[drive] lut[{len(items) - 1}]", items[-1], "1.0 (full drive gives full light)")
        return np.asarray(items, np.float64)

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

    def light_from_drive(self, drive: np.ndarray | float) -> np.ndarray:
        """LED light fraction for a normalised drive value in [0, 1] (the LED drive response)."""
        drive = np.clip(np.asarray(drive, np.float64), 0.0, 1.0)
        if self.drive_lut is None:
            return drive
        return np.interp(drive, np.linspace(0.0, 1.0, self.drive_lut.size), self.drive_lut)

    def drive_from_light(self, light: np.ndarray | float) -> np.ndarray:
        """Inverse drive response: the drive value that gives a light fraction."""
        light = np.clip(np.asarray(light, np.float64), 0.0, 1.0)
        if self.drive_lut is None:
            return light
        # The LUT may repeat a value (a dead zone at the bottom, a plateau). Between two levels the inverse runs
        # along the rising segment (np.interp over the repeated x does that); a light equal to a repeated level
        # takes its lowest drive (np.interp took the highest: no light was sent a third of full drive).
        drive_levels = np.linspace(0.0, 1.0, self.drive_lut.size)
        drive = np.interp(light, self.drive_lut, drive_levels)
        levels, first = np.unique(self.drive_lut, return_index=True)
        at = np.minimum(np.searchsorted(levels, light), levels.size - 1)
        exact = levels[at] == light
        return np.where(exact, drive_levels[first[at]], drive)

    def to_zone_values(self, light: np.ndarray) -> np.ndarray:
        """Light fractions (rows, cols) -> uint16 drive codes ``0 .. 2^zone_bits - 1`` (the ZoneFrame).

        ``ValueError`` on a non-finite light fraction: it has no drive code (a cast would turn it into 0, a dark LED).
        """
        top = (1 << self.zone_bits) - 1
        return np.rint(self.drive_from_light(require_finite_light(light)) * top).astype(np.uint16)

    def light_from_zone_values(self, values: np.ndarray) -> np.ndarray:
        top = (1 << self.zone_bits) - 1
        return self.light_from_drive(np.asarray(values, np.float64) / top)

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("psf_image")
        d["drive_lut"] = None if self.drive_lut is None else [float(v) for v in self.drive_lut]
        return d

    @classmethod
    def for_panel(cls, height_px: int, width_px: int, rows: int, cols: int, **kwargs) -> LedLayout:
        return cls(rows=rows, cols=cols, width_px=width_px, height_px=height_px, **kwargs)


def load_layout(path: str | os.PathLike[str]) -> LedLayout:
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
        kwargs["drive_lut"] = drive["lut"]  # checked entry by entry in LedLayout.validate
    elif "lut" in drive:  # given but not read: refused, so a forgotten response = "lut" does not go unnoticed
        raise LayoutError(f"{path}: [drive] lut is read only with response = 'lut', not {response!r}")
    psf_file = data.get("psf", {}).get("file")
    psf_model = data.get("psf", {}).get("model", "gaussian")
    if psf_file is not None and psf_model != "image":
        raise LayoutError(f"{path}: [psf] file = {psf_file!r} is read only with model = 'image', not {psf_model!r}")
    if psf_file is not None:
        from edgehdr.io import read_ldr_image, read_radiance
        from edgehdr.io.hdr_files import RADIANCE_SUFFIXES

        if "\0" in psf_file:
            raise LayoutError(f"{path}: [psf] file = {psf_file!r}: a file name cannot hold a NUL character")
        psf_path = (path.parent / psf_file).resolve()
        if not psf_path.is_file():
            raise LayoutError(f"{path}: [psf] file = {psf_file!r}: no such file ({psf_path})")
        try:
            img = read_radiance(psf_path) if psf_path.suffix.lower() in RADIANCE_SUFFIXES else read_ldr_image(psf_path)
        except ValueError as exc:
            raise LayoutError(f"{path}: [psf] file = {psf_file!r}: {exc}") from None
        kwargs["psf_image"] = np.asarray(img, np.float64).mean(axis=2)
    layout = LedLayout(source=str(path), **kwargs)
    # A half-given grid would silently take the default for the other half (48 zones, 1920 px ...).
    for section, first, second in (("zones", "rows", "cols"), ("panel", "width_px", "height_px")):
        given = [key for key in (first, second) if key in data.get(section, {})]
        if len(given) == 1:
            missing = second if given[0] == first else first
            raise LayoutError(f"{path}: [{section}] {given[0]} is given without {missing}: give both "
                              f"(the default {missing} = {getattr(layout, missing)} would be used silently)")
    return layout
