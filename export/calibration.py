"""Calibration and held-out data: HDR images (files or synthetic scenes) through the runtime's pre-processing.

PTQ ranges are only as good as the data they are measured on, so calibration
feeds the network what the runtime stage will feed it: HDR radiance through the
same pre-processing. Until a model brings its own, the default pre-processing is
the log encoding the HDR stages use (log2 radiance mapped from [-20, 12] stops
to [0, 1]) at the network's input size.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

__all__ = ["log_encode_nchw", "synthetic_hdr", "hdr_files", "CalibrationReader", "batches"]


def log_encode_nchw(radiance: np.ndarray, height: int, width: int, *, stops=(-20.0, 12.0)) -> np.ndarray:
    """HDR radiance (H, W, 3) -> (1, 3, height, width) float32 in [0, 1], log2-encoded."""
    small = cv2.resize(np.asarray(radiance, np.float32), (width, height), interpolation=cv2.INTER_AREA)
    lo, hi = stops
    enc = (np.log2(np.maximum(small, 2.0**lo)) - lo) / (hi - lo)
    return np.ascontiguousarray(np.clip(enc, 0.0, 1.0).transpose(2, 0, 1)[None], dtype=np.float32)


def synthetic_hdr(count: int, *, seed: int = 0, height: int = 256, width: int = 384):
    """``count`` synthetic scenes (radiance arrays); seeds from ``seed`` up (disjoint sets for calibration vs held-out)."""
    from edgehdr.synth import make_scene

    for i in range(count):
        yield make_scene(seed + i, height, width).radiance


def hdr_files(folder):
    """Radiance maps (.exr/.hdr/.pfm) in a folder, sorted by name."""
    from edgehdr.io import read_radiance
    from edgehdr.io.hdr_files import RADIANCE_SUFFIXES

    paths = sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in RADIANCE_SUFFIXES)
    if not paths:
        raise ValueError(f"{folder}: no .exr, .hdr or .pfm files for calibration")
    for p in paths:
        yield read_radiance(p)


def batches(images, input_name: str, shape, preprocess=None):
    """Model feeds ``{input_name: array}`` from radiance images through ``preprocess``."""
    _, _, h, w = shape
    preprocess = preprocess or (lambda rad: log_encode_nchw(rad, h, w))
    for rad in images:
        yield {input_name: preprocess(rad)}


class CalibrationReader:
    """ONNX Runtime ``CalibrationDataReader`` over a list of feeds (re-iterable via ``rewind``)."""

    def __init__(self, feeds):
        self.feeds = list(feeds)
        self.description = {"samples": len(self.feeds)}
        self._it = iter(self.feeds)

    def get_next(self):
        return next(self._it, None)

    def rewind(self):
        self._it = iter(self.feeds)

    def __len__(self):
        return len(self.feeds)
