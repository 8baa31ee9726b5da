"""Train / held-out split of the shared real HDR photographs, used by every recipe and evaluation.

The held-out photographs are never seen by a recipe (not as crops, not as teacher
targets); evaluations report them separately. The split is fixed by name so that a
figure in a closing note can be reproduced: one photograph from each source
(OpenEXR samples, pfstools, Poly Haven), chosen for being hard — a backlit tree, an
atrium with sunlit walls, and a church interior with bright stained glass.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["REAL_HELD_OUT", "real_split", "is_held_out", "photo_seed", "random_crops"]

REAL_HELD_OUT = ("openexr_Tree", "pfstools_mpi_atrium_3", "polyhaven_st_fagans_interior_1k")


def is_held_out(name: str) -> bool:
    """Whether the photograph ``name`` (file stem) belongs to the held-out split."""
    return name in REAL_HELD_OUT


def photo_seed(name: str, base: int) -> int:
    """A random seed for the photograph ``name`` (file stem): ``base`` plus its CRC-32 modulo 10^6. From the name,
    not the photograph's place in the folder, so that adding a photograph leaves the others' draws (and the
    figures of an evaluation that renders or re-photographs them) as they were."""
    return int(base) + zlib.crc32(name.encode("utf-8")) % 1_000_000


def real_split(root: str | os.PathLike[str] | None = None, *, max_side: int | None = None
               ) -> tuple[list[tuple[str, np.ndarray]], list[tuple[str, np.ndarray]]]:
    """``(train, held_out)`` lists of ``(name, radiance)`` from ``edgehdr.synth.real_hdr_scenes``.

    Photographs added to the folder later go to the training side unless named in ``REAL_HELD_OUT``.
    """
    from edgehdr.synth.realistic import real_hdr_scenes

    scenes = real_hdr_scenes(root, max_side=max_side)
    return ([s for s in scenes if not is_held_out(s[0])], [s for s in scenes if is_held_out(s[0])])


def random_crops(photos: Sequence[tuple[str, np.ndarray]], per_photo: int, *, seed: int = 0, height: int = 192,
                 width: int = 288) -> list[tuple[str, np.ndarray]]:
    """Random ``height x width`` crops of each photograph, as ``(name, radiance)``.

    Scale 35..100 % of the largest crop of that aspect that fits, area-resampled,
    mirrored with probability 1/2; the first crop of each photograph is the largest,
    centred (the whole composition). Seeded.
    """
    rng = np.random.default_rng(seed)
    out = []
    for name, radiance in photos:
        h, w = radiance.shape[:2]
        full = min(h / height, w / width)
        for k in range(per_photo):
            scale = 1.0 if k == 0 else float(rng.uniform(0.35, 1.0))
            ch, cw = max(height, int(height * full * scale)), max(width, int(width * full * scale))
            ch, cw = min(ch, h), min(cw, w)
            y0 = (h - ch) // 2 if k == 0 else int(rng.integers(0, h - ch + 1))
            x0 = (w - cw) // 2 if k == 0 else int(rng.integers(0, w - cw + 1))
            crop = cv2.resize(radiance[y0:y0 + ch, x0:x0 + cw], (width, height), interpolation=cv2.INTER_AREA)
            if k and rng.random() < 0.5:
                crop = crop[:, ::-1]
            out.append((f"{name}#{k}", np.ascontiguousarray(np.maximum(crop, 0.0), np.float32)))
    return out
