"""Synthetic ground truth: procedural HDR scenes with exact radiance, a camera model, and realistic
re-photographs of real HDR photographs."""

from edgehdr.synth.camera import (
    CameraModel,
    SyntheticBracket,
    capture_bracket,
    random_camera_motion,
    suggest_exposures,
)
from edgehdr.synth.realistic import (
    FilmicResponse,
    RealisticCamera,
    jpeg_roundtrip,
    real_hdr_dir,
    real_hdr_scenes,
    rephotograph,
)
from edgehdr.synth.scenes import SCENE_KINDS, Sprite, SyntheticScene, camera_matrix, fractal_noise, make_scene

__all__ = [
    "CameraModel",
    "SyntheticBracket",
    "capture_bracket",
    "random_camera_motion",
    "suggest_exposures",
    "FilmicResponse",
    "RealisticCamera",
    "jpeg_roundtrip",
    "real_hdr_dir",
    "real_hdr_scenes",
    "rephotograph",
    "SCENE_KINDS",
    "SyntheticScene",
    "Sprite",
    "camera_matrix",
    "fractal_noise",
    "make_scene",
]
