"""Realistic capture: re-photographs real HDR photographs into exposure brackets with exact ground truth.

Where ``edgehdr.synth.camera`` exposes procedural scenes through an idealised sensor, this module takes a
real radiance map (``real_hdr_scenes`` reads the photographs in ``shared/data/hdr``) and simulates the whole
journey of a hand-held phone or compact camera: hand shake and moving objects on the scene side, lens
vignetting, a sensor with shot noise, a full well, read noise before and after the analogue gain, a black
level and a 10-12-bit ADC, an in-camera tone curve with toe and shoulder (``FilmicResponse``), 8-bit output
and JPEG compression. ``rephotograph`` returns a ``SyntheticBracket``: uint8 frames, exposure metadata, the
reference frame's exact radiance in the units a merge recovers, the true inverse response as a
``CameraResponse`` for ``edgehdr.hdr.merge_debevec``, the motion mask and the camera poses.
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from numpy.typing import ArrayLike

from edgehdr.bracket import Bracket
from edgehdr.hdr.crf import CameraResponse, ResponseCurve
from edgehdr.synth.camera import SyntheticBracket, random_camera_motion, suggest_exposures
from edgehdr.synth.scenes import camera_matrix

__all__ = [
    "FilmicResponse",
    "RealisticCamera",
    "fill_negative_pixels",
    "jpeg_roundtrip",
    "real_hdr_dir",
    "real_hdr_files",
    "real_hdr_scenes",
    "rephotograph",
]

_LUMA = np.array([0.2126, 0.7152, 0.0722], np.float32)
_LN2 = float(np.log(2.0))


def _softplus(z: np.ndarray) -> np.ndarray:
    return np.logaddexp(0.0, z)


@dataclass(frozen=True)
class FilmicResponse:
    """A smooth camera response family with toe and shoulder, ``y = f(x)`` on [0, 1] -> [0, 1].

    The curve is defined by its slope in log-log space (its local "gamma"),
    ``s(p) = d ln f / d ln x`` with ``p = ln x``, which moves smoothly between three values:

    ``s(p) = a + (a_toe - a) S((p_toe - p) / w_toe) - (a - a_sh) S((p - p_sh) / w_sh)``

    with the logistic ``S``, the mid-tone slope ``a = 1 / gamma``, the deep-shadow slope
    ``a_toe = a + toe (1 - a)`` and the highlight slope ``a_sh = a (1 - shoulder)``. The toe is centred
    ``toe_stops`` below clipping (``p_toe = -toe_stops ln 2``, width one stop) and the shoulder
    ``shoulder_stops`` below clipping (width half a stop). Integrating from the white point,

    ``ln f(x) = -integral_p^0 s(q) dq``,

    has a closed form in softplus terms, so ``f(1) = 1`` exactly, ``f(0) = 0`` (``f ~ x^a_toe`` near 0),
    and ``f`` is strictly increasing because ``s > a_sh > 0`` (``gamma >= 1`` makes ``a_toe >= a``). The
    inverse is found by bisection in ``p`` to machine precision (meant for code-value LUTs, not per pixel).

    ``toe = shoulder = 0`` is the pure power law ``x^(1/gamma)``. ``toe`` in [0, 1] darkens the shadows
    (``toe = 1``: linear through the origin, like a film toe); ``shoulder`` in [0, 1) rolls the
    highlights off (slope at white ``~a (1 - 0.88 shoulder)`` with the default ``shoulder_stops``, against
    sRGB's 0.44). Together with
    ``gamma`` in [1.8, 2.6] they span the shapes of measured camera curves -- gamma-like with a dark
    toe and a soft shoulder -- as the EMoR model does with its principal components (Grossberg & Nayar
    2004), whose basis data this offline project does not carry.

    References
    ----------
    M. D. Grossberg and S. K. Nayar, "Modeling the space of camera response functions,"
    IEEE TPAMI 26(10), 2004.
    """

    gamma: float = 2.2
    toe: float = 0.3
    shoulder: float = 0.4
    toe_stops: float = 5.0
    shoulder_stops: float = 1.0

    def __post_init__(self) -> None:
        if not 1.0 <= self.gamma <= 5.0:
            raise ValueError(f"gamma must be in [1, 5] (2.2 is typical), got {self.gamma}")
        if not 0.0 <= self.toe <= 1.0:
            raise ValueError(f"toe must be in [0, 1], got {self.toe}")
        if not 0.0 <= self.shoulder < 1.0:
            raise ValueError(f"shoulder must be in [0, 1), got {self.shoulder}")
        if self.toe_stops <= 0 or self.shoulder_stops < 0:
            raise ValueError("toe_stops must be > 0 and shoulder_stops >= 0 (stops below clipping)")

    @property
    def name(self) -> str:
        return f"filmic:{self.gamma:g}:{self.toe:g}:{self.shoulder:g}"

    def camera_response(self, bits: int = 8) -> CameraResponse:
        """The inverse response as ``edgehdr.hdr`` uses it: ``f^-1(z / (2^bits - 1))`` for every code ``z``."""
        return _inverse_response(self, bits)

    def _log_integral(self, p: np.ndarray) -> np.ndarray:
        """``integral_p^0 s(q) dq`` (>= 0, decreasing in ``p``) for ``p = ln x <= 0``."""
        a = 1.0 / self.gamma
        a_toe = a + self.toe * (1.0 - a)
        a_sh = a * (1.0 - self.shoulder)
        c_toe, w_toe = -self.toe_stops * _LN2, _LN2
        c_sh, w_sh = -self.shoulder_stops * _LN2, 0.5 * _LN2
        out = -a * p
        if a_toe != a:
            out = out + (a_toe - a) * w_toe * (_softplus((c_toe - p) / w_toe) - _softplus(np.asarray(c_toe / w_toe)))
        if a_sh != a:
            out = out - (a - a_sh) * w_sh * (_softplus(np.asarray(-c_sh / w_sh)) - _softplus((p - c_sh) / w_sh))
        return np.asarray(out)

    def forward(self, x: ArrayLike) -> np.ndarray:
        """Relative exposure in [0, 1] -> normalised code value in [0, 1]."""
        x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
        with np.errstate(divide="ignore"):
            p = np.log(x)
        p = np.maximum(p, -745.0)  # log of the smallest double; f there is 0 to double precision
        return np.where(x > 0, np.exp(-self._log_integral(p)), 0.0)

    def inverse(self, y: ArrayLike) -> np.ndarray:
        """Normalised code value in [0, 1] -> relative exposure in [0, 1] (bisection in ``ln x``)."""
        y = np.clip(np.asarray(y, dtype=np.float64), 0.0, 1.0)
        with np.errstate(divide="ignore"):
            target = -np.log(y)
        lo = np.full(y.shape, -200.0)
        hi = np.zeros(y.shape)
        for _ in range(64):  # 200 / 2^64: far below double precision
            mid = 0.5 * (lo + hi)
            above = self._log_integral(mid) > target  # mid too dark
            lo = np.where(above, mid, lo)
            hi = np.where(above, hi, mid)
        return np.where(y > 0, np.exp(0.5 * (lo + hi)), 0.0)


Response = FilmicResponse | ResponseCurve


def _inverse_response(response: Response, bits: int) -> CameraResponse:
    if not 2 <= bits <= 16:
        raise ValueError(f"bits must be in 2..16, got {bits}")
    k = 1 << bits
    lut = np.asarray(response.inverse(np.arange(k) / (k - 1)))
    return CameraResponse(np.repeat(lut[None, :], 3, axis=0), name=response.name,
                          meta={"curve": response.name, "source": "edgehdr.synth.realistic"})


def _standard_normal(rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal float32 samples by the Box-Muller transform of ``rng``'s uniforms.

    Twice as fast as ``Generator.standard_normal`` at a megapixel (the noise is most of a capture's time);
    tails end near 5.8 sigma (float32 uniforms), far beyond what 8-bit codes resolve.
    """
    size = int(np.prod(shape))
    half = (size + 1) // 2
    u = rng.random(2 * half, dtype=np.float32)
    radius, angle = u[:half], u[half:]
    np.subtract(np.float32(1.0), radius, out=radius)  # (0, 1]: finite log
    np.log(radius, out=radius)
    radius *= np.float32(-2.0)
    np.sqrt(radius, out=radius)
    angle *= np.float32(2.0 * np.pi)
    out = np.empty(2 * half, np.float32)
    np.cos(angle, out=out[:half])
    np.sin(angle, out=out[half:])
    out[:half] *= radius
    out[half:] *= radius
    return out[:size].reshape(shape)


@functools.lru_cache(maxsize=16)
def _develop_lut(response: Response, raw_bits: int, black_dn: int) -> np.ndarray:
    """uint8 code for every raw value: black subtracted (clipped at 0), normalised, through the response."""
    white = (1 << raw_bits) - 1
    dn = np.arange(white + 1, dtype=np.float64)
    x = np.clip((dn - black_dn) / (white - black_dn), 0.0, 1.0)
    lut = np.rint(np.asarray(response.forward(x)) * 255.0).astype(np.uint8)
    lut.setflags(write=False)
    return lut


@dataclass(frozen=True)
class RealisticCamera:
    """Lens, sensor and image pipeline of a small hand-held camera.

    Radiance is in units of the sensor's full scale per second at unit gain: ``L t g = 1`` fills the raw
    range. Per pixel and channel, a frame of exposure ``t`` at analogue gain ``g``:

    1. vignetting ``V = (1 + vignetting rho^2)^-2`` (``rho`` = radius / corner radius): the cos^4 law for a
       lens whose corner field angle has ``tan^2 = vignetting``;
    2. photo-electrons ``e = L V t full_well_e`` with shot noise (Poisson; a Gaussian of variance ``e``
       unless ``exact_poisson``), clipped at the full well;
    3. read noise ``read_noise_pre_e`` (electrons, amplified by ``g``) and ``read_noise_post_dn`` (raw DN,
       after the gain), then ``raw = black + g c e`` with ``c = (white - black) / full_well_e`` DN per
       electron, rounded and clipped to [0, white] by a ``raw_bits`` ADC (``white = 2^raw_bits - 1``);
    4. black subtraction clipped at 0 and normalisation, ``x = clip((raw - black) / (white - black), 0, 1)``,
       so a noise-free unclipped pixel has ``x = L V t g``;
    5. the response ``f`` (``FilmicResponse`` or a standard ``ResponseCurve``) and 8-bit codes
       ``rint(255 f(x))``; optionally JPEG (``jpeg_roundtrip``).

    In the Gaussian model all read noise is referred to electrons and drawn with the shot noise in one
    Gaussian before the full-well clip (one draw per sample, for speed); it differs from a sequential
    model only within a few electrons of saturation. Code variance on a flat field is therefore
    ``(255 f'(x))^2 [(g / full_well_e)^2 (e + read_noise_pre_e^2) + (read_noise_post_dn^2 + 1/12) /
    (white - black)^2] + 1/12`` to first order.

    Attributes
    ----------
    response : FilmicResponse or ResponseCurve
        In-camera tone curve applied to the normalised raw signal.
    raw_bits : int
        ADC depth, 10, 12 or 14.
    full_well_e : float
        Electrons at saturation (shot-noise SNR at clipping is ``sqrt(full_well_e)``).
    read_noise_pre_e, read_noise_post_dn : float
        Read noise before (electrons) and after (raw DN) the analogue gain.
    black_level_dn : int, optional
        Black level offset in raw DN; default ``2^(raw_bits - 4)`` (256 at 12 bits).
    vignetting : float
        ``tan^2`` of the corner field angle; the corners receive ``(1 + vignetting)^-2`` of the centre's
        light. 0 turns vignetting off.
    exact_poisson : bool
        Draw shot noise from a Poisson distribution (slower) instead of its Gaussian approximation.
    """

    response: Response = dataclasses.field(default_factory=FilmicResponse)
    raw_bits: int = 12
    full_well_e: float = 10000.0
    read_noise_pre_e: float = 2.5
    read_noise_post_dn: float = 1.5
    black_level_dn: int | None = None
    vignetting: float = 0.2
    exact_poisson: bool = False

    def __post_init__(self) -> None:
        if self.raw_bits not in (10, 12, 14):
            raise ValueError(f"raw_bits must be 10, 12 or 14, got {self.raw_bits}")
        if self.full_well_e <= 0 or self.read_noise_pre_e < 0 or self.read_noise_post_dn < 0:
            raise ValueError("full_well_e must be > 0 and the read noises >= 0")
        if not 0 <= self.black_dn < (1 << self.raw_bits) // 4:
            raise ValueError(f"black_level_dn must be in [0, {(1 << self.raw_bits) // 4}) for "
                             f"{self.raw_bits}-bit raw, got {self.black_level_dn}")
        if self.vignetting < 0:
            raise ValueError(f"vignetting must be >= 0, got {self.vignetting}")

    @property
    def black_dn(self) -> int:
        """Black level in raw DN."""
        return (1 << (self.raw_bits - 4)) if self.black_level_dn is None else int(self.black_level_dn)

    @property
    def white_dn(self) -> int:
        """Largest raw code (ADC saturation)."""
        return (1 << self.raw_bits) - 1

    @property
    def dn_per_electron(self) -> float:
        """Conversion gain ``c`` at unit analogue gain (full well -> white level)."""
        return (self.white_dn - self.black_dn) / self.full_well_e

    @property
    def camera_response(self) -> CameraResponse:
        """The exact inverse response of the 8-bit output: ``f^-1(z / 255)`` for every code ``z``."""
        return _inverse_response(self.response, 8)

    def vignetting_map(self, height: int, width: int) -> np.ndarray:
        """Relative illumination (H, W) float32: 1 at the centre, ``(1 + vignetting)^-2`` at the corner pixels."""
        cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
        y = (np.arange(height, dtype=np.float32) - np.float32(cy)) ** 2
        x = (np.arange(width, dtype=np.float32) - np.float32(cx)) ** 2
        rho2 = (y[:, None] + x[None, :]) / np.float32(max(cx * cx + cy * cy, 1e-12))
        return np.asarray((1.0 + np.float32(self.vignetting) * rho2) ** -2, dtype=np.float32)

    def capture_raw(self, radiance: np.ndarray, exposure_s: float, gain: float = 1.0, *,
                    rng: np.random.Generator | None = None, noise: bool = True, vignette: bool = True) -> np.ndarray:
        """Expose one frame: (H, W, 3) uint16 raw DN with the black level, steps 1-3 of the model.

        ``vignette=False`` takes ``radiance`` as already vignetted (``rephotograph`` applies the map once).
        """
        if exposure_s <= 0 or gain <= 0:
            raise ValueError(f"exposure_s and gain must be positive, got {exposure_s} and {gain}")
        rng = np.random.default_rng(0) if rng is None else rng
        electrons = np.multiply(radiance, np.float32(exposure_s * self.full_well_e), dtype=np.float32)
        np.maximum(electrons, 0.0, out=electrons)
        if vignette and self.vignetting > 0:
            electrons *= self.vignetting_map(*electrons.shape[:2])[..., None]
        full_well = np.float32(self.full_well_e)
        dn_per_e = np.float32(gain * self.dn_per_electron)
        read_dn = np.float32(np.hypot(gain * self.dn_per_electron * self.read_noise_pre_e, self.read_noise_post_dn))
        if noise and self.exact_poisson:
            electrons = rng.poisson(electrons).astype(np.float32)
            np.minimum(electrons, full_well, out=electrons)
            electrons *= dn_per_e
            raw = electrons
            raw += _standard_normal(rng, raw.shape) * read_dn
        else:
            if noise:
                # Shot and read noise in one Gaussian, the read noise referred to electrons at this gain.
                sigma = electrons + np.float32((read_dn / dn_per_e) ** 2)
                np.sqrt(sigma, out=sigma)
                sigma *= _standard_normal(rng, sigma.shape)
                electrons += sigma
            np.minimum(electrons, full_well, out=electrons)
            electrons *= dn_per_e
            raw = electrons
        raw += np.float32(self.black_dn + 0.5)  # + 0.5 and truncation: rounding for the non-negative values kept
        np.clip(raw, 0.0, float(self.white_dn), out=raw)
        return raw.astype(np.uint16)

    def develop(self, raw: np.ndarray) -> np.ndarray:
        """Raw DN -> 8-bit codes (steps 4-5 without JPEG), one table lookup."""
        return np.take(_develop_lut(self.response, self.raw_bits, self.black_dn), raw)

    def capture(self, radiance: np.ndarray, exposure_s: float, gain: float = 1.0, *,
                rng: np.random.Generator | None = None, noise: bool = True,
                jpeg_quality: int | None = None) -> np.ndarray:
        """Expose and develop one frame: (H, W, 3) uint8 RGB, JPEG-compressed when ``jpeg_quality`` is given."""
        frame = self.develop(self.capture_raw(radiance, exposure_s, gain, rng=rng, noise=noise))
        return frame if jpeg_quality is None else jpeg_roundtrip(frame, jpeg_quality)


def jpeg_roundtrip(frame: np.ndarray, quality: int = 90) -> np.ndarray:
    """Encode an (H, W, 3) uint8 RGB frame as JPEG with OpenCV and decode it again.

    OpenCV's defaults apply: baseline JPEG with 4:2:0 chroma subsampling, its standard quantisation
    tables scaled by ``quality`` (0-100).
    """
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"JPEG needs an (H, W, 3) uint8 frame, got {frame.shape} {frame.dtype}")
    if not 0 <= int(quality) <= 100:
        raise ValueError(f"JPEG quality must be in 0..100, got {quality}")
    bgr = cv2.cvtColor(np.ascontiguousarray(frame), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV could not encode the frame as JPEG")
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if decoded is None:
        raise RuntimeError("OpenCV could not decode the JPEG it encoded")
    return np.asarray(cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB))


def real_hdr_dir(root: str | os.PathLike[str] | None = None) -> Path:
    """The folder of real HDR photographs: ``root``, else ``$EDGEHDR_DATA``, else ``../shared/data/hdr``.

    ``EDGEHDR_DATA`` may name the ``hdr`` folder itself or the data folder holding it. The default is
    ``shared/data/hdr`` beside the repository (``Path(edgehdr.__file__).resolve().parents[2]``).
    """
    if root is not None:
        return Path(root)
    env = os.environ.get("EDGEHDR_DATA")
    if env:
        folder = Path(env)
        return folder / "hdr" if (folder / "hdr").is_dir() else folder
    import edgehdr

    return Path(edgehdr.__file__).resolve().parents[2] / "shared" / "data" / "hdr"


def real_hdr_files(root: str | os.PathLike[str] | None = None) -> list[Path]:
    """The real HDR photographs' files (.exr, .hdr) in ``real_hdr_dir(root)``, sorted by name; none when the folder
    is absent. What ``real_hdr_scenes`` reads, for callers that need the names or sizes without the pixels."""
    folder = real_hdr_dir(root)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".exr", ".hdr") and p.is_file())


def fill_negative_pixels(radiance: np.ndarray) -> np.ndarray:
    """``radiance`` (H, W, 3) with every pixel that has a channel below zero replaced by the per-channel median
    of its 5 x 5 neighbourhood (``cv2.medianBlur``), the rest clipped at 0 (a no-op there) and kept as they are.

    For lossy files (DWAB OpenEXR) whose ringing beside bright edges drives whole pixels negative: clipped at zero
    such a pixel is a black or strongly coloured speck with no physical meaning, and a merge measured against it
    is scored on the specks (re-photographed, a speck is blurred and noisy like its neighbours, so every merge misses
    a "truth" of 0 by many stops). Where a cluster leaves a channel at zero the median is taken again, from its edge
    inwards, until none is left or a pass changes nothing.
    """
    specks = (radiance < 0).any(axis=2)
    filled = np.maximum(radiance, 0.0).astype(np.float32)
    while specks.any():
        filled[specks] = cv2.medianBlur(filled, 5)[specks]
        left = specks & (filled <= 0).any(axis=2)
        if left.sum() == specks.sum():
            break  # no progress: a channel that is zero over the whole neighbourhood stays zero
        specks = left
    return filled


def real_hdr_scenes(root: str | os.PathLike[str] | None = None, *, max_side: int | None = None,
                    names: Collection[str] | None = None, fill_negative: bool = False
                    ) -> list[tuple[str, np.ndarray]]:
    """Read the real HDR photographs (.exr, .hdr) as ``(name, radiance)`` pairs, sorted by name.

    Radiance is linear float32 (H, W, 3) in the file's arbitrary units, negative pixels (EXR ringing)
    clipped to 0, or with ``fill_negative`` given their neighbourhood's median (``fill_negative_pixels``, for
    lossy files); ``max_side`` downscales larger images with ``cv2.INTER_AREA``. The folder is found by
    ``real_hdr_dir``. ``names``: only the photographs of these file stems are read (the others are not
    decoded); names the folder does not hold are ignored, and a bare string is refused (TypeError), since
    it would be read as a collection of its characters.

    Raises
    ------
    FileNotFoundError
        When the folder does not exist or holds no .exr/.hdr file; the message names where it looked.
    TypeError
        When ``names`` is a string rather than a collection of strings.
    """
    from edgehdr.io import read_radiance

    folder = real_hdr_dir(root)
    files = real_hdr_files(root)
    if not files:
        raise FileNotFoundError(
            f"no real HDR photographs (.exr, .hdr) in {folder}; put them there or set EDGEHDR_DATA to their folder")
    if max_side is not None and max_side < 1:
        raise ValueError(f"max_side must be >= 1, got {max_side}")
    if isinstance(names, str):  # a bare name would be read as its characters (substring matches)
        raise TypeError(f"names must be a collection of file stems, got the string {names!r}; pass [{names!r}]")
    wanted = None if names is None else frozenset(names)
    scenes = []
    for path in files:
        if wanted is not None and path.stem not in wanted:
            continue
        raw = read_radiance(path)
        radiance = fill_negative_pixels(raw) if fill_negative else np.maximum(raw, 0.0)
        h, w = radiance.shape[:2]
        if max_side is not None and max(h, w) > max_side:
            scale = max_side / max(h, w)
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            radiance = cv2.resize(radiance, size, interpolation=cv2.INTER_AREA)
        scenes.append((path.stem, np.ascontiguousarray(radiance, dtype=np.float32)))
    return scenes


@dataclass(frozen=True)
class _Disc:
    centre_xy: tuple[float, float]  # at the reference frame
    velocity_xy: tuple[float, float]  # pixels per frame
    radius_px: float
    rgb: tuple[float, float, float]

    def alpha(self, frame_offset: int, height: int, width: int) -> tuple[tuple[slice, slice], np.ndarray] | None:
        """Anti-aliased coverage inside the disc's bounding box at ``frame_offset`` frames from the reference."""
        cx = self.centre_xy[0] + self.velocity_xy[0] * frame_offset
        cy = self.centre_xy[1] + self.velocity_xy[1] * frame_offset
        r = self.radius_px + 1.0
        x0, x1 = max(int(np.floor(cx - r)), 0), min(int(np.ceil(cx + r)) + 1, width)
        y0, y1 = max(int(np.floor(cy - r)), 0), min(int(np.ceil(cy + r)) + 1, height)
        if x0 >= x1 or y0 >= y1:
            return None
        yy = np.arange(y0, y1, dtype=np.float32)[:, None] - np.float32(cy)
        xx = np.arange(x0, x1, dtype=np.float32)[None, :] - np.float32(cx)
        alpha = np.clip(np.float32(self.radius_px + 0.5) - np.sqrt(xx * xx + yy * yy), 0.0, 1.0)
        return (slice(y0, y1), slice(x0, x1)), alpha


def _make_discs(rng: np.random.Generator, count: int, lum: np.ndarray, height: int, width: int) -> list[_Disc]:
    """``count`` discs, alternately bright (around the scene's highlights) and dark (around its shadows)."""
    side = min(height, width)
    bright, dark = np.percentile(lum, [99.5, 5.0])
    discs = []
    for k in range(count):
        level = float(bright) * rng.uniform(0.5, 2.0) if k % 2 == 0 else float(dark) * rng.uniform(0.2, 1.0)
        tint = rng.uniform(0.5, 1.5, 3)
        tint /= float(tint @ _LUMA)
        angle = rng.uniform(0.0, 2.0 * np.pi)
        speed = rng.uniform(0.02, 0.06) * side
        rgb = max(level, 1e-12) * tint
        discs.append(_Disc(
            centre_xy=(float(rng.uniform(0.15, 0.85) * width), float(rng.uniform(0.15, 0.85) * height)),
            velocity_xy=(float(speed * np.cos(angle)), float(speed * np.sin(angle))),
            radius_px=float(rng.uniform(0.03, 0.08) * side),
            rgb=(float(rgb[0]), float(rgb[1]), float(rgb[2])),
        ))
    return discs


def _metered_scale(radiance: np.ndarray) -> float:
    """Scale that meters the highlights like an HDR bracketing camera: the 99.5th-percentile luminance
    reaches 85 % of full scale in 1/1000 s at unit gain (so ``suggest_exposures`` starts at 1/1000 s)."""
    peak = float(np.percentile(radiance @ _LUMA, 99.5))
    return 0.85 * 1000.0 / peak if peak > 0 else 1.0


def rephotograph(
    radiance: np.ndarray,
    exposures_s: ArrayLike | None = None,
    *,
    n: int = 3,
    spacing_stops: float = 2.0,
    camera: RealisticCamera | None = None,
    gains: ArrayLike | None = None,
    jpeg_quality: int | None = 90,
    shake_px: float = 0.0,
    rotation_deg: float = 0.0,
    moving_objects: int = 0,
    seed: int = 0,
    noise: bool = True,
    radiance_scale: float | None = None,
    reference_index: int | None = None,
) -> SyntheticBracket:
    """Re-photograph a radiance map into an exposure bracket with exact ground truth.

    Parameters
    ----------
    radiance : ndarray, (H, W, 3)
        Linear scene radiance in any units (a real HDR photograph); negative values are taken as 0.
    exposures_s : sequence of float, optional
        Exposure times. Default: ``suggest_exposures(scene, n, spacing_stops)`` on the scaled scene (the
        shortest frame keeps the 99.5th-percentile luminance at 85 % of full scale).
    n, spacing_stops : int, float
        Frame count and spacing of the default exposures.
    camera : RealisticCamera, optional
        Lens, sensor and tone curve; default ``RealisticCamera()``.
    gains : sequence of float, optional
        Analogue gain per frame (default 1).
    jpeg_quality : int or None
        OpenCV JPEG quality of the output frames; None leaves them uncompressed.
    shake_px, rotation_deg : float
        Hand shake: each non-reference frame's content moves by up to ``shake_px`` pixels in x and y and
        rotates by up to ``rotation_deg`` about the centre (``random_camera_motion``), resampled with
        ``cv2.warpAffine`` (bilinear, reflected borders). The reference frame is at rest.
    moving_objects : int
        Discs (alternately bright and dark) moving between frames; ``motion_mask`` marks every pixel
        they cover in any frame, in reference-frame coordinates.
    seed : int
        Seeds the shake, the objects and the noise.
    noise : bool
        Sensor noise on (default) or off.
    radiance_scale : float, optional
        Factor from the input's units to the camera's (full scale per second at unit gain). Default: the
        scene is metered on its highlights, the 99.5th-percentile luminance reaching 85 % of full scale in
        1/1000 s, so real photographs of any units land at a daylight bracket (1/1000, 1/250, 1/60 s with
        the default three frames two stops apart).
    reference_index : int, optional
        Ground-truth frame, default the middle one.

    Returns
    -------
    SyntheticBracket
        ``bracket``: uint8 RGB frames, ``exposure_s``, ``gain``, ``bits = 8``; ``extra`` records
        ``radiance_scale``, ``jpeg_quality`` and the camera's parameters. ``radiance``: the reference
        frame's radiance at the sensor, ``radiance * radiance_scale * vignetting map`` (with its moving
        objects), float32 -- exactly what ``merge_debevec(bracket, response=response)`` recovers from
        noise-free, uncompressed frames up to 8-bit quantisation, since a code ``z`` of frame ``i``
        linearises to ``f^-1(z / 255) / (t_i g_i)``. ``response``: the true inverse response at 8 bits.
        ``motion_mask``, ``camera_poses`` (dx, dy, rotation_deg per frame) as in ``capture_bracket``.
    """
    camera = camera or RealisticCamera()
    radiance = np.asarray(radiance)
    if radiance.ndim != 3 or radiance.shape[2] != 3:
        raise ValueError(f"radiance must be an (H, W, 3) array, got shape {radiance.shape}")
    if not np.all(np.isfinite(radiance)):
        raise ValueError("radiance contains NaN or infinite values; clean it before re-photographing")
    if moving_objects < 0:
        raise ValueError(f"moving_objects must be >= 0, got {moving_objects}")
    scene = np.maximum(radiance, np.float32(0.0), dtype=np.float32)  # our own copy, scaled in place below
    scale = _metered_scale(scene) if radiance_scale is None else float(radiance_scale)
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"radiance_scale must be positive and finite, got {scale}")
    scene *= np.float32(scale)
    h, w = scene.shape[:2]

    if exposures_s is None:
        exposures = suggest_exposures(scene, n, spacing_stops)
    else:
        exposures = np.asarray(exposures_s, dtype=np.float64).reshape(-1)
    n = exposures.size
    gain_arr = np.ones(n) if gains is None else np.asarray(gains, dtype=np.float64).reshape(-1)
    if gain_arr.shape != (n,):
        raise ValueError(f"{n} exposures but {gain_arr.size} gains")
    ref = n // 2 if reference_index is None else int(reference_index)
    if not 0 <= ref < n:
        raise ValueError(f"reference_index {ref} out of range for {n} frames")

    seeds = np.random.SeedSequence(seed).spawn(2)
    poses = random_camera_motion(n, max_shift_px=shake_px, max_rotation_deg=rotation_deg, seed=seed,
                                 reference_index=ref)
    discs = _make_discs(np.random.default_rng(seeds[0]), moving_objects, scene @ _LUMA, h, w)
    noise_rng = np.random.default_rng(seeds[1])
    vignetting = camera.vignetting_map(h, w)[..., None] if camera.vignetting > 0 else None

    frames = []
    truth = scene
    mask = np.zeros((h, w), bool)
    for i in range(n):
        content = scene
        if discs:
            content = scene.copy()
            for disc in discs:
                drawn = disc.alpha(i - ref, h, w)
                if drawn is None:
                    continue
                region, alpha = drawn
                a = alpha[..., None]
                content[region] = content[region] * (1.0 - a) + a * np.asarray(disc.rgb, np.float32)
                mask[region] |= alpha > 0.0
        dx, dy, rot = poses[i]
        if dx or dy or rot:
            content = cv2.warpAffine(content, camera_matrix(w, h, (dx, dy), rot), (w, h), flags=cv2.INTER_LINEAR,
                                     borderMode=cv2.BORDER_REFLECT)
        if vignetting is not None:
            content = content * vignetting
        if i == ref:
            truth = np.ascontiguousarray(content, dtype=np.float32)
        raw = camera.capture_raw(content, float(exposures[i]), float(gain_arr[i]), rng=noise_rng, noise=noise,
                                 vignette=False)
        frame = camera.develop(raw)
        frames.append(frame if jpeg_quality is None else jpeg_roundtrip(frame, jpeg_quality))

    bracket = Bracket(
        frames=np.stack(frames),
        exposure_s=exposures,
        gain=gain_arr,
        bits=8,
        timestamp_ns=np.asarray([round(i * 1e9 / 30) for i in range(n)], dtype=np.int64),
        source=f"realistic:{camera.response.name}:{seed}",
        extra={"radiance_scale": scale, "jpeg_quality": jpeg_quality, "camera": dataclasses.asdict(camera)},
    )
    return SyntheticBracket(
        bracket=bracket,
        radiance=truth,
        reference_index=ref,
        motion_mask=mask,
        camera_poses=poses,
        response=camera.camera_response,
    )
