"""Synthetic dynamic brackets with exact ground truth, for the merge recipe and its evaluation (no PyTorch)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from edgehdr.hdr.crf import CameraResponse

__all__ = ["dynamic_bracket", "real_dynamic_bracket"]


def dynamic_bracket(seed: int, *, height: int = 544, width: int = 960, moving_objects: int | None = None,
                    speed_fraction: float | None = None, shake_px: float = 3.0
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, CameraResponse]:
    """A captured, MTB-aligned 3-exposure bracket of a synthetic scene: ``(frames, exposures, truth, mask,
    response)`` with the exact radiance of the reference frame as ``truth``."""
    from edgehdr.hdr.align import align_mtb
    from edgehdr.synth import capture_bracket, make_scene, random_camera_motion, suggest_exposures

    rng = np.random.default_rng(seed + 7_000_000)
    if moving_objects is None:
        moving_objects = int(rng.choice([0, 1, 2, 3], p=[0.25, 0.25, 0.3, 0.2]))
    if speed_fraction is None:
        speed_fraction = float(rng.uniform(0.01, 0.04))
    scene = make_scene(seed, height, width, moving_objects=moving_objects, object_speed_px=speed_fraction * width)
    poses = random_camera_motion(3, max_shift_px=shake_px, seed=seed) if shake_px > 0 else None
    sb = capture_bracket(scene, suggest_exposures(scene.radiance, 3), seed=seed, camera_poses=poses)
    b = sb.bracket
    frames, _ = align_mtb(b.frames, reference_index=sb.reference_index, exposures=b.relative_exposure,
                          response=sb.response, bits=b.bits, work_scale=2)
    return np.ascontiguousarray(frames), b.relative_exposure, sb.radiance, sb.motion_mask, sb.response


def real_dynamic_bracket(radiance: np.ndarray, seed: int, *, moving_objects: int = 2, shake_px: float = 3.0,
                         spacing_stops: float = 4.0
                         ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, CameraResponse]:
    """A real HDR photograph re-photographed (``edgehdr.synth.rephotograph``: realistic camera, noise, JPEG, hand
    shake, moving discs) into an MTB-aligned 3-exposure bracket; the same tuple as ``dynamic_bracket``."""
    from edgehdr.hdr.align import align_mtb
    from edgehdr.synth.realistic import rephotograph

    h, w = radiance.shape[:2]
    radiance = np.ascontiguousarray(radiance[: h // 4 * 4, : w // 4 * 4])
    sb = rephotograph(radiance, n=3, spacing_stops=spacing_stops, shake_px=shake_px, moving_objects=moving_objects,
                      seed=seed)
    b = sb.bracket
    frames, _ = align_mtb(b.frames, reference_index=sb.reference_index, exposures=b.relative_exposure,
                          response=sb.response, bits=b.bits, work_scale=2)
    return np.ascontiguousarray(frames), b.relative_exposure, sb.radiance, sb.motion_mask, sb.response
