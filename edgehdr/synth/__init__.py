"""Synthetic ground truth: procedural HDR scenes with exact radiance and a camera model."""

from edgehdr.synth.camera import (
    CameraModel,
    SyntheticBracket,
    capture_bracket,
    random_camera_motion,
    suggest_exposures,
)
from edgehdr.synth.scenes import SCENE_KINDS, Sprite, SyntheticScene, camera_matrix, fractal_noise, make_scene

__all__ = [
    "CameraModel",
    "SyntheticBracket",
    "capture_bracket",
    "random_camera_motion",
    "suggest_exposures",
    "SCENE_KINDS",
    "SyntheticScene",
    "Sprite",
    "camera_matrix",
    "fractal_noise",
    "make_scene",
]
