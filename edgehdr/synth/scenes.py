"""Procedural HDR scenes with exact radiance: the ground truth of every test and benchmark.

A ``SyntheticScene`` is a static background plus moving sprites, all in linear
Rec.709 RGB radiance (relative units: 1.0 fills the sensor in one second at unit
gain). ``render`` gives the exact radiance a camera sees at a time and pose, so
merges, alignment and deghosting can be scored against the truth. Layouts are
drawn from a seed: same seed, same scene, on every machine.

The dynamic range spans far more than 20 stops: a sun disc near 1e5, lamps in the
thousands, sky around 5, sunlit ground around 0.3, deep shadow around 1e-4.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np
from numpy.typing import ArrayLike

__all__ = ["SyntheticScene", "Sprite", "make_scene", "camera_matrix", "SCENE_KINDS", "fractal_noise", "brick_texture"]

SCENE_KINDS = ("outdoor", "indoor", "night")


def fractal_noise(rng: np.random.Generator, height: int, width: int, *, octaves: int = 5,
                  base_cells: int = 4) -> np.ndarray:
    """Multi-octave value noise in [0, 1], float32 (H, W): procedural texture."""
    out = np.zeros((height, width), np.float32)
    amplitude, total = 1.0, 0.0
    for octave in range(octaves):
        cells = base_cells * (2**octave)
        grid = rng.random((max(2, cells * height // max(height, width) + 1), cells + 1)).astype(np.float32)
        out += amplitude * cv2.resize(grid, (width, height), interpolation=cv2.INTER_CUBIC)
        total += amplitude
        amplitude *= 0.55
    out /= total
    lo, hi = float(out.min()), float(out.max())
    return (out - lo) / max(hi - lo, 1e-6)


def brick_texture(rng: np.random.Generator, height: int, width: int, *, brick_px: float = 24.0) -> np.ndarray:
    """Running-bond brick pattern in [0, 1] (H, W) float32: per-brick albedo, dark mortar lines.

    Gives scenes the sharp horizontal and vertical edges that feature matching and
    bitmap alignment rely on in real photographs.
    """
    bh = max(3, int(round(brick_px / 2))) | 1  # odd course height: no period-2 row pattern
    bw = max(6, int(round(brick_px)))
    rows = height // bh + 2
    cols = width // bw + 2
    shade = rng.uniform(0.55, 1.0, size=(rows, cols)).astype(np.float32)
    # A column and a row of int32 coordinates that broadcast (a full int64 grid peaked at 179 MB at 1080p).
    yy = np.arange(height, dtype=np.int32)[:, None]
    xx = np.arange(width, dtype=np.int32)[None, :]
    row = yy // bh
    offset = (row % 2) * (bw // 2)
    shifted = xx + offset
    out = shade[row, shifted // bw]
    out[((yy % bh) == 0) | ((shifted % bw) == 0)] = 0.25
    return out


def _disc(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, radius: float) -> np.ndarray:
    """Anti-aliased disc coverage in [0, 1]."""
    d = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
    return np.clip(radius + 0.5 - d, 0.0, 1.0).astype(np.float32)


@dataclass
class Sprite:
    """A moving object: radiance patch + coverage, position in pixels at t = 0, velocity in px per frame."""

    radiance: np.ndarray  # (h, w, 3) float32
    alpha: np.ndarray  # (h, w) float32 in [0, 1]
    x: float
    y: float
    vx: float
    vy: float

    def position(self, t: float) -> tuple[int, int]:
        return int(round(self.x + self.vx * t)), int(round(self.y + self.vy * t))


@dataclass
class SyntheticScene:
    """A procedural HDR scene.

    Attributes
    ----------
    background : ndarray, (H + 2m, W + 2m, 3) float32
        Static radiance with a margin ``m`` so camera motion never reveals an edge.
    sprites : list of Sprite
        Moving objects, composited over the background in scene coordinates.
    margin : int
        Border around the visible frame in pixels.
    seed, kind : provenance.
    illumination : float
        Global illumination multiplier (for light changes in video).
    """

    background: np.ndarray
    sprites: list[Sprite] = field(default_factory=list)
    margin: int = 0
    seed: int = 0
    kind: str = "outdoor"
    illumination: float = 1.0

    @property
    def height(self) -> int:
        return self.background.shape[0] - 2 * self.margin

    @property
    def width(self) -> int:
        return self.background.shape[1] - 2 * self.margin

    @property
    def radiance(self) -> np.ndarray:
        """Exact radiance at t = 0 with the camera at rest."""
        return self.render(0.0)

    def _composite(self, t: float) -> np.ndarray:
        canvas = self.background.copy() if self.sprites else self.background
        for sprite in self.sprites:
            sx, sy = sprite.position(t)
            x0, y0 = sx + self.margin, sy + self.margin
            h, w = sprite.alpha.shape
            cx0, cy0 = max(x0, 0), max(y0, 0)
            cx1, cy1 = min(x0 + w, canvas.shape[1]), min(y0 + h, canvas.shape[0])
            if cx0 >= cx1 or cy0 >= cy1:
                continue
            a = sprite.alpha[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0, None]
            r = sprite.radiance[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
            region = canvas[cy0:cy1, cx0:cx1]
            region *= 1.0 - a
            region += a * r
        return canvas

    def render(self, t: float = 0.0, *, shift_px: Sequence[float] = (0.0, 0.0),
               rotation_deg: float = 0.0) -> np.ndarray:
        """Exact radiance (H, W, 3) float32 seen at time ``t`` (in frames) and camera pose.

        The camera pose moves the image content by ``shift_px`` (dx, dy) and rotates it
        by ``rotation_deg`` counter-clockwise about the frame centre.
        """
        canvas = self._composite(t)
        m = self.margin
        if not any(shift_px) and not rotation_deg:
            out = canvas[m : m + self.height, m : m + self.width]
        else:
            full = matrix_with_margin(camera_matrix(self.width, self.height, shift_px, rotation_deg), m)
            out = cv2.warpAffine(
                canvas, full, (self.width, self.height), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT
            )
        out = np.ascontiguousarray(out, dtype=np.float32)
        if self.illumination != 1.0:
            out = out * np.float32(self.illumination)
        return out

    def motion_mask(self, times: Iterable[float]) -> np.ndarray:
        """Pixels (H, W) bool covered by any sprite at any of ``times`` (camera at rest)."""
        mask = np.zeros((self.height, self.width), bool)
        for t in times:
            for sprite in self.sprites:
                sx, sy = sprite.position(t)
                h, w = sprite.alpha.shape
                x0, y0 = max(sx, 0), max(sy, 0)
                x1, y1 = min(sx + w, self.width), min(sy + h, self.height)
                if x0 < x1 and y0 < y1:
                    mask[y0:y1, x0:x1] |= sprite.alpha[y0 - sy : y1 - sy, x0 - sx : x1 - sx] > 0.01
        return mask


def camera_matrix(width: int, height: int, shift_px: Sequence[float] = (0.0, 0.0),
                  rotation_deg: float = 0.0) -> np.ndarray:
    """2x3 affine matrix moving image content: rotation about the centre, then shift."""
    matrix = cv2.getRotationMatrix2D((width / 2.0 - 0.5, height / 2.0 - 0.5), rotation_deg, 1.0)
    matrix[:, 2] += np.asarray(shift_px, dtype=np.float64)
    return matrix


def matrix_with_margin(matrix: np.ndarray, margin: int) -> np.ndarray:
    """Express a frame-coordinate affine map on a canvas padded by ``margin``, cropping on output."""
    # Frame pixel p shows scene point s with p = M s, and s sits at canvas point s + m,
    # so the canvas -> frame map is M T(-m).
    unpad = np.array([[1, 0, -margin], [0, 1, -margin], [0, 0, 1]], np.float64)
    return (np.vstack([matrix, [0, 0, 1]]) @ unpad)[:2]


def _sphere(rng: np.random.Generator, radius: int, albedo_rgb: ArrayLike, light_level: float,
            highlight: float) -> tuple[np.ndarray, np.ndarray]:
    """Shaded sphere patch: Lambert + Phong highlight, with its coverage."""
    size = 2 * radius + 3
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    c = size / 2.0 - 0.5
    alpha = _disc(yy, xx, c, c, radius)
    nx = (xx - c) / radius
    ny = (yy - c) / radius
    nz = np.sqrt(np.clip(1.0 - nx**2 - ny**2, 0.0, 1.0))
    light = np.array([-0.45, -0.55, 0.70], np.float32)
    light /= np.linalg.norm(light)
    ndotl = np.clip(nx * light[0] + ny * light[1] + nz * light[2], 0.0, 1.0)
    half = light + np.array([0, 0, 1], np.float32)
    half /= np.linalg.norm(half)
    ndoth = np.clip(nx * half[0] + ny * half[1] + nz * half[2], 0.0, 1.0)
    shininess = float(rng.uniform(40, 160))
    radiance = (light_level * (0.08 + ndotl))[..., None] * np.asarray(albedo_rgb, np.float32)
    radiance += (highlight * ndoth**shininess)[..., None]
    return radiance.astype(np.float32), alpha


_ROW_STRIP = 64  # rows per strip of make_scene's full-size expressions


def _row_strips(height: int) -> list[slice]:
    return [slice(y, min(y + _ROW_STRIP, height)) for y in range(0, height, _ROW_STRIP)]


def make_scene(
    seed: int = 0,
    height: int = 480,
    width: int = 640,
    *,
    kind: str | None = None,
    moving_objects: int = 0,
    object_speed_px: float = 12.0,
) -> SyntheticScene:
    """Draw a procedural HDR scene.

    Parameters
    ----------
    seed : int
        Layout, colours and textures all follow from it.
    height, width : int
        Visible frame size in pixels.
    kind : {'outdoor', 'indoor', 'night'}, optional
        Scene type; default chosen by the seed. Outdoor: sky, sun and a deep shadow
        with lamps; indoor: dim room with lamps and a sunlit window; night: street
        with lamps and dark sky. All contain textures and specular spheres.
    moving_objects : int
        Number of moving sprites (for deghosting and video tests).
    object_speed_px : float
        Sprite speed in pixels per frame.
    """
    if height < 32 or width < 32:
        raise ValueError(f"scene must be at least 32x32 pixels, got {width}x{height}")
    rng = np.random.default_rng(seed)
    kind = kind or SCENE_KINDS[seed % len(SCENE_KINDS)]
    if kind not in SCENE_KINDS:
        raise ValueError(f"unknown scene kind {kind!r}; use one of {', '.join(SCENE_KINDS)}")
    m = max(8, int(0.08 * max(height, width)))
    hh, ww = height + 2 * m, width + 2 * m
    # Pixel coordinates as a column and a row that broadcast, and the full-size colour layers built in strips of
    # rows (``_ROW_STRIP``): the same values element by element as whole-image expressions, without their
    # temporaries (a 1080p scene peaked at 353 MB of numpy arrays built whole, the daemon's start-up high-water mark).
    yy = np.arange(hh, dtype=np.float32)[:, None]
    xx = np.arange(ww, dtype=np.float32)[None, :]
    short = min(height, width)

    texture = fractal_noise(rng, hh, ww, octaves=6, base_cells=6)
    fine = fractal_noise(rng, hh, ww, octaves=3, base_cells=48)
    albedo = (0.04 + 0.5 * texture * (0.6 + 0.4 * fine))[..., None]
    tint = rng.uniform(0.6, 1.0, size=3).astype(np.float32)
    horizon = m + height * rng.uniform(0.35, 0.55)
    sky_mask = (yy < horizon).astype(np.float32)[..., None]
    radiance = np.empty((hh, ww, 3), np.float32)

    if kind == "outdoor":
        sky_level, ground_light = rng.uniform(3.0, 8.0), 1.0
        sky_colour = np.array([0.45, 0.65, 1.0], np.float32)
    elif kind == "indoor":
        sky_level, ground_light = rng.uniform(0.02, 0.05), 0.02
        sky_colour = np.array([0.9, 0.8, 0.7], np.float32)
    else:
        sky_level, ground_light = rng.uniform(0.002, 0.006), 0.004
        sky_colour = np.array([0.15, 0.2, 0.45], np.float32)

    # Sky (or ceiling/wall): gradient towards the horizon + cloud texture.
    clouds = np.clip((fractal_noise(rng, hh, ww, octaves=5, base_cells=3) - 0.55) * 3.0, 0.0, 1.0)[..., None]
    # Paved ground and walls: bricks of ~2.5% of the frame, modulating the albedo.
    bricks = brick_texture(rng, hh, ww, brick_px=max(8.0, 0.025 * max(height, width)))[..., None]
    albedo = albedo * (0.45 + 0.55 * bricks)
    for rows in _row_strips(hh):
        grad = (0.6 + 0.4 * np.clip(yy[rows] / max(horizon, 1.0), 0, 1))[..., None]
        sky = sky_level * grad * (sky_colour * (1 - clouds[rows]) + 1.6 * clouds[rows])
        ground = ground_light * albedo[rows] * tint
        radiance[rows] = sky_mask[rows] * sky + (1 - sky_mask[rows]) * ground
    # Vertical structures (poles, door frames) crossing the horizon.
    for _ in range(int(rng.integers(2, 5))):
        px0 = int(rng.uniform(m, ww - m))
        pw = max(2, int(width * rng.uniform(0.006, 0.015)))
        py0 = int(max(0, horizon - height * rng.uniform(0.1, 0.3)))
        py1 = int(min(hh, horizon + height * rng.uniform(0.05, 0.3)))
        level = ground_light * rng.uniform(0.02, 0.3)
        radiance[py0:py1, px0 : px0 + pw] = level * np.array([0.8, 0.8, 0.85], np.float32)

    def add_light(cy, cx, radius, level, colour, glow, where, spill):
        # ``glow`` scatters in the air (only where ``where`` is 1: the sky for the sun);
        # lamps also light the surfaces around them (``spill``, through the albedo).
        for rows in _row_strips(hh):
            d2 = (yy[rows] - cy) ** 2 + (xx - cx) ** 2
            halo = (glow * level / (1.0 + d2 / (radius * 4.0) ** 2) ** 1.5)[..., None] * (
                where[rows] if np.ndim(where) else where)
            radiance[rows] += halo * (0.02 * colour + (albedo[rows] * colour * 3.0 if spill else 0.0))
            cover = _disc(yy[rows], xx, cy, cx, radius)[..., None]
            radiance[rows] = radiance[rows] * (1 - cover) + cover * level * colour

    # Deep shadow: an unlit structure (building, alcove) whose interior is ~1e-4.
    sx0 = m + int(width * rng.uniform(0.05, 0.45))
    sx1 = sx0 + int(width * rng.uniform(0.25, 0.4))
    sy0 = m + int(height * rng.uniform(0.25, 0.45))
    sy1 = min(hh - m, sy0 + int(height * rng.uniform(0.35, 0.55)))
    shadow_light = rng.uniform(0.0005, 0.002) * (1.0 if kind == "outdoor" else 0.5)
    footprint = np.zeros((hh, ww), np.float32)
    footprint[sy0:sy1, sx0:sx1] = 1.0
    shadow = cv2.GaussianBlur(footprint, (0, 0), 1.0)[..., None]
    for rows in _row_strips(hh):
        radiance[rows] = (radiance[rows] * (1 - shadow[rows])
                          + shadow[rows] * shadow_light * albedo[rows] * np.array([0.9, 0.95, 1.0], np.float32))

    if kind == "outdoor":
        sun_y = m + horizon * rng.uniform(0.15, 0.6) - m
        sun_x = m + width * rng.uniform(0.55, 0.95)
        add_light(sun_y, sun_x, max(2.0, 0.012 * short), rng.uniform(2e4, 1e5), np.array([1.0, 0.95, 0.85], np.float32),
                  2e-3, sky_mask, False)
    elif kind == "indoor":
        # A sunlit window: the bright outside seen from a dim room.
        wx0 = m + int(width * rng.uniform(0.55, 0.7))
        wy0 = m + int(height * rng.uniform(0.1, 0.2))
        wx1, wy1 = wx0 + int(width * 0.22), wy0 + int(height * 0.3)
        outside = (rng.uniform(4.0, 10.0) * (0.5 + texture[wy0:wy1, wx0:wx1, None])
                   * np.array([0.7, 0.85, 1.0], np.float32))
        radiance[wy0:wy1, wx0:wx1] = outside
    n_lamps = int(rng.integers(1, 4))
    for _ in range(n_lamps):
        ly = rng.uniform(sy0 + 4, max(sy0 + 5, sy1 - 4))
        lx = rng.uniform(sx0 + 4, max(sx0 + 5, sx1 - 4))
        colour = np.array([1.0, rng.uniform(0.7, 0.9), rng.uniform(0.4, 0.7)], np.float32)
        add_light(ly, lx, max(1.5, 0.008 * short), rng.uniform(300, 3000), colour, 1e-4, np.float32(1.0), True)

    # Specular spheres standing on the ground.
    for _ in range(int(rng.integers(2, 5))):
        r = max(4, int(short * rng.uniform(0.04, 0.08)))
        level = ground_light if kind == "outdoor" else rng.uniform(0.05, 0.3)
        patch, alpha = _sphere(rng, r, rng.uniform(0.1, 0.8, 3), level, level * rng.uniform(100, 1000))
        py = int(np.clip(horizon + rng.uniform(0.05, 0.4) * height, 0, hh - patch.shape[0]))
        px = int(rng.uniform(m, ww - m - patch.shape[1]))
        region = radiance[py : py + patch.shape[0], px : px + patch.shape[1]]
        region[...] = region * (1 - alpha[..., None]) + alpha[..., None] * patch

    np.maximum(radiance, 1e-5, out=radiance)

    sprites = []
    for _ in range(moving_objects):
        r = max(5, int(short * rng.uniform(0.06, 0.1)))
        if rng.random() < 0.5:
            level = float(rng.uniform(0.2, 1.5))
            patch, alpha = _sphere(rng, r, rng.uniform(0.2, 0.9, 3), level, level * 50)
        else:
            hgt, wid = r * 2, int(r * rng.uniform(2.0, 3.0))
            alpha = np.zeros((hgt + 2, wid + 2), np.float32)
            alpha[1:-1, 1:-1] = 1.0
            tex = fractal_noise(rng, hgt + 2, wid + 2, octaves=3, base_cells=4)[..., None]
            patch = (rng.uniform(0.05, 1.0) * (0.3 + tex) * rng.uniform(0.2, 1.0, 3)).astype(np.float32)
        angle = rng.uniform(0, 2 * np.pi)
        sprites.append(
            Sprite(
                radiance=patch,
                alpha=alpha,
                x=float(rng.uniform(0.15, 0.75) * width),
                y=float(rng.uniform(0.2, 0.7) * height),
                vx=float(object_speed_px * np.cos(angle)),
                vy=float(object_speed_px * np.sin(angle)),
            )
        )
    return SyntheticScene(background=radiance, sprites=sprites, margin=m, seed=seed, kind=kind)
