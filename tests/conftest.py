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
