"""Shared fixtures: small synthetic scenes with exact ground truth (cached per session)."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from edgehdr.synth import CameraModel, capture_bracket, make_scene, suggest_exposures


@functools.cache
def _scene(seed: int, height: int, width: int, moving: int = 0):
    return make_scene(seed, height, width, moving_objects=moving, object_speed_px=12.0)


@functools.cache
def _shot(seed: int, height: int, width: int, n: int = 3, moving: int = 0, noise: bool = True, curve: str = "srgb"):
    from edgehdr.hdr.crf import ResponseCurve

    scene = _scene(seed, height, width, moving)
    camera = CameraModel(response=ResponseCurve.parse(curve))
    return capture_bracket(scene, suggest_exposures(scene.radiance, n), camera=camera, seed=seed, noise=noise)


@pytest.fixture
def scene_factory():
    return _scene


@pytest.fixture
def shot_factory():
    return _shot


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def _run_pipeline(overrides: dict, record, frames: int, *, timeout_s: float = 60.0, inspect=None):
    """Run the daemon's pipeline built from ``overrides`` until ``record`` (a sink callable) saw ``frames``
    frames; returns ``(final stats, inspect(runtime) taken before closing)``."""
    import time

    from edgehdr.pipeline.config import validate
    from edgehdr.pipeline.daemon import build_runtime

    seen = []

    class Recorder:
        def write(self, ctx):
            seen.append(record(ctx))

    rt = build_runtime(validate(overrides), extra_sinks=[Recorder()])
    try:
        rt.pipeline.start()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(seen) < frames:
            time.sleep(0.05)
        inspected = inspect(rt) if inspect else None
    finally:
        final = rt.close()
    return seen, final, inspected


@pytest.fixture
def run_pipeline():
    return _run_pipeline


@pytest.fixture
def shoulder_bracket():
    """The reference reads the tone curve's shoulder (218-245) in whole 8 x 8 blocks where the truth is 4x over its
    clipping point (a JPEG pipeline's colour processing after the clip); the short frame measures the truth. A
    dark half all frames measure, and a block where the short frame reads 3 stops below the reference (an object
    that moved: a darker thing where the reference saw a bright one)."""
    exposures = np.array([1.0, 16.0, 256.0])
    rng = np.random.default_rng(0)
    truth = np.full((48, 64, 3), 0.25)
    truth[:, :32] = 0.002
    codes = [np.clip(np.rint(255 * np.minimum(truth * t, 1.0) ** (1 / 2.2)), 0, 255) for t in exposures]
    blocks = np.kron(rng.random((6, 8, 1)) < 0.4, np.ones((8, 8, 3), bool))
    shoulder = (truth > 0.1) & blocks
    codes[1] = np.where(shoulder, rng.integers(218, 246, truth.shape), codes[1])
    moved = np.zeros(truth.shape, bool)
    moved[:16, 48:] = True  # reference 230 (0.66 of its clip), short frame 3 stops below that radiance
    codes[1] = np.where(moved, 230, codes[1])
    codes[0] = np.where(moved, np.rint(255 * ((230 / 255) ** 2.2 / 16 / 8) ** (1 / 2.2)), codes[0])
    near_moved = np.zeros(truth.shape[:2], bool)
    near_moved[:24, 40:] = True  # the deghosting's dilation grows the moved block's rejection by a few pixels
    return np.stack(codes).astype(np.uint8), exposures, truth, shoulder[..., 0] & ~near_moved, moved[..., 0]
