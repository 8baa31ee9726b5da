"""Synthetic camera: turns exact scene radiance into realistic code values.

Model (per pixel and channel): photo-electrons ``e = L * t * full_well`` with
Poisson shot noise (Gaussian approximation, variance ``e``) and Gaussian read
noise, amplified by the analogue gain, normalised by the full well, clipped to
[0, 1], passed through the camera response ``f`` and quantised to ``bits``. A
noise-free, unclipped pixel therefore has ``f^-1(z) / (t * gain) = L``: a merge
with the true response recovers the scene radiance in the scene's own units.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from edgehdr.bracket import Bracket
from edgehdr.hdr.crf import CameraResponse, ResponseCurve
from edgehdr.synth.scenes import SyntheticScene

__all__ = ["CameraModel", "SyntheticBracket", "capture_bracket", "suggest_exposures", "random_camera_motion"]


@dataclass(frozen=True)
class CameraModel:
    """Sensor + response model of a synthetic camera.

    Attributes
    ----------
    response : ResponseCurve
        Analytic camera response applied after clipping.
    bits : int
        Output bit depth (8, 10, 12 or 16); uint8 frames for 8 bits, uint16 above.
    full_well_e : float
        Electrons at clipping (sets shot noise: SNR at clip = sqrt(full_well_e)).
    read_noise_e : float
        Read noise standard deviation in electrons (at unit gain).
    """

    response: ResponseCurve = field(default_factory=lambda: ResponseCurve("srgb"))
    bits: int = 8
    full_well_e: float = 20000.0
    read_noise_e: float = 4.0

    def __post_init__(self) -> None:
        if self.bits not in (8, 10, 12, 14, 16):
            raise ValueError(f"bits must be 8, 10, 12, 14 or 16, got {self.bits}")
        if self.full_well_e <= 0 or self.read_noise_e < 0:
            raise ValueError("full_well_e must be > 0 and read_noise_e >= 0")

    @property
    def camera_response(self) -> CameraResponse:
        """The exact inverse response LUT of this camera."""
        return CameraResponse.from_curve(self.response, self.bits)

    def capture(self, radiance: np.ndarray, exposure_s: float, gain: float = 1.0, *,
                rng: np.random.Generator | None = None, noise: bool = True) -> np.ndarray:
        """Expose one frame; returns (H, W, 3) uint8 or uint16 code values."""
        rng = np.random.default_rng(0) if rng is None else rng
        scale = np.float32(exposure_s * self.full_well_e)
        electrons = radiance.astype(np.float32) * scale
        if noise:
            shot = rng.standard_normal(electrons.shape, dtype=np.float32)
            shot *= np.sqrt(np.maximum(electrons, 0.0))
            electrons += shot
            read = rng.standard_normal(electrons.shape, dtype=np.float32)
            electrons += read * np.float32(self.read_noise_e)
        x = electrons * np.float32(gain / self.full_well_e)
        np.clip(x, 0.0, 1.0, out=x)
        levels = (1 << self.bits) - 1
        y = self.response.forward(x)  # float64 for an exact curve
        codes = np.rint(y * levels)
        return codes.astype(np.uint8 if self.bits == 8 else np.uint16)


@dataclass
class SyntheticBracket:
    """A captured bracket with its ground truth."""

    bracket: Bracket
    radiance: np.ndarray  # exact radiance of the reference frame, (H, W, 3) float32
    reference_index: int
    motion_mask: np.ndarray  # (H, W) bool: pixels touched by moving objects
    camera_poses: list[tuple[float, float, float]]  # per frame (dx, dy, rotation_deg) applied to the content
    response: CameraResponse


def suggest_exposures(radiance: np.ndarray, n: int = 3, spacing_stops: float | None = None, *,
                      peak_percentile: float = 99.5, dark_percentile: float = 5.0,
                      max_spacing_stops: float = 4.0) -> np.ndarray:
    """Exposure times (s), shortest first, for an ``n``-frame bracket covering ``radiance``.

    The shortest exposure puts the ``peak_percentile`` luminance at 85% of full
    scale (highlights just unclipped); the longest aims to lift the
    ``dark_percentile`` luminance to 20% of full scale. With ``spacing_stops``
    given, the frames are that far apart instead; otherwise the spacing spreads
    the range over ``n`` frames, between 1 and ``max_spacing_stops`` stops.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    lum = radiance @ np.array([0.2126, 0.7152, 0.0722], np.float32)
    peak, dark = np.percentile(lum, [peak_percentile, dark_percentile])
    shortest = 0.85 / max(float(peak), 1e-12)
    if spacing_stops is None:
        longest = 0.2 / max(float(dark), 1e-12)
        span = np.log2(max(longest / shortest, 1.0))
        spacing_stops = float(np.clip(span / max(n - 1, 1), 1.0, max_spacing_stops))
    return shortest * np.power(2.0, np.arange(n) * spacing_stops)


def random_camera_motion(n: int, *, max_shift_px: float = 8.0, max_rotation_deg: float = 0.0, seed: int = 0,
                         reference_index: int | None = None) -> list[tuple[float, float, float]]:
    """Per-frame hand-shake poses ``(dx, dy, rotation_deg)``; the reference frame is at rest."""
    rng = np.random.default_rng(seed)
    ref = n // 2 if reference_index is None else reference_index
    poses: list[tuple[float, float, float]] = []
    for i in range(n):
        if i == ref:
            poses.append((0.0, 0.0, 0.0))
        else:
            poses.append((
                float(rng.uniform(-max_shift_px, max_shift_px)),
                float(rng.uniform(-max_shift_px, max_shift_px)),
                float(rng.uniform(-max_rotation_deg, max_rotation_deg)),
            ))
    return poses


def capture_bracket(
    scene: SyntheticScene,
    exposures_s: ArrayLike,
    *,
    camera: CameraModel | None = None,
    gains: ArrayLike | None = None,
    seed: int = 0,
    reference_index: int | None = None,
    camera_poses: Iterable[tuple[float, float, float]] | None = None,
    noise: bool = True,
    start_time: float = 0.0,
) -> SyntheticBracket:
    """Capture a bracket of ``scene``: frame ``i`` is taken at time ``start_time + i`` (frames).

    Parameters
    ----------
    exposures_s : sequence of float
        Exposure time per frame.
    gains : sequence of float, optional
        Analogue gain per frame (default 1).
    reference_index : int, optional
        Frame whose radiance is the ground truth (default: the middle one).
    camera_poses : sequence of (dx, dy, rotation_deg), optional
        Content motion per frame (hand shake); see ``random_camera_motion``.
    noise : bool
        Shot and read noise on (default) or off.
    """
    camera = camera or CameraModel()
    exposures_s = np.asarray(exposures_s, dtype=np.float64)
    n = exposures_s.size
    gains = np.ones(n) if gains is None else np.asarray(gains, dtype=np.float64)
    ref = n // 2 if reference_index is None else int(reference_index)
    if not 0 <= ref < n:
        raise ValueError(f"reference_index {ref} out of range for {n} frames")
    poses = list(camera_poses) if camera_poses is not None else [(0.0, 0.0, 0.0)] * n
    if len(poses) != n:
        raise ValueError(f"{n} frames but {len(poses)} camera poses")
    rng = np.random.default_rng(seed)
    frames = []
    times = [start_time + i for i in range(n)]
    for i in range(n):
        dx, dy, rot = poses[i]
        radiance = scene.render(times[i], shift_px=(dx, dy), rotation_deg=rot)
        frames.append(camera.capture(radiance, exposures_s[i], gains[i], rng=rng, noise=noise))
    dx, dy, rot = poses[ref]
    truth = scene.render(times[ref], shift_px=(dx, dy), rotation_deg=rot)
    bracket = Bracket(
        frames=np.stack(frames),
        exposure_s=exposures_s,
        gain=gains,
        bits=camera.bits,
        timestamp_ns=np.asarray([int(t * 1e9 / 30) for t in times], dtype=np.int64),
        source=f"synth:{scene.kind}:{scene.seed}",
    )
    return SyntheticBracket(
        bracket=bracket,
        radiance=truth,
        reference_index=ref,
        motion_mask=scene.motion_mask(times),
        camera_poses=poses,
        response=camera.camera_response,
    )
