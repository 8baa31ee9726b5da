"""Pictures for people: false-colour radiance and labelled contact sheets (RGB uint8)."""

from __future__ import annotations

from collections.abc import Iterable

import cv2
import numpy as np

from edgehdr.tonemap.color import luminance

__all__ = ["false_colour", "contact_sheet"]


def false_colour(radiance: np.ndarray, *, low_percentile: float = 0.5,
                 high_percentile: float = 99.95) -> tuple[np.ndarray, tuple[float, float]]:
    """log2 luminance through the Turbo colour map; returns (image, (low, high) in log2 units)."""
    log_l = np.log2(np.maximum(luminance(radiance), 1e-9))
    low, high = np.percentile(log_l, [low_percentile, high_percentile])
    high = max(high, low + 1e-3)
    codes = np.clip((log_l - low) / (high - low) * 255.0, 0, 255).astype(np.uint8)
    bgr = cv2.applyColorMap(codes, cv2.COLORMAP_TURBO)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), (float(low), float(high))


def contact_sheet(tiles: Iterable[tuple[str, np.ndarray]], *, columns: int = 3, tile_width: int = 480,
                  label_px: int = 28) -> np.ndarray:
    """Grid of ``(label, rgb_uint8)`` tiles, each scaled to ``tile_width`` with a caption bar."""
    tiles = list(tiles)
    if not tiles:
        raise ValueError("contact_sheet needs at least one tile")
    first = tiles[0][1]
    tile_h = int(round(first.shape[0] * tile_width / first.shape[1]))
    rows = -(-len(tiles) // columns)
    sheet = np.full((rows * (tile_h + label_px), columns * tile_width, 3), 24, np.uint8)
    for k, (label, img) in enumerate(tiles):
        r, c = divmod(k, columns)
        y0, x0 = r * (tile_h + label_px), c * tile_width
        img = np.asarray(img)
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=2)
        if img.dtype != np.uint8:
            img = np.clip(img, 0, 255).astype(np.uint8)
        sheet[y0 + label_px : y0 + label_px + tile_h, x0 : x0 + tile_width] = cv2.resize(
            img, (tile_width, tile_h), interpolation=cv2.INTER_AREA)
        cv2.putText(sheet, str(label), (x0 + 8, y0 + label_px - 8), cv2.FONT_HERSHEY_SIMPLEX, 0.55,
                    (235, 235, 235), 1, cv2.LINE_AA)
    return sheet
