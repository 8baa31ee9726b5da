"""Train / held-out split of the shared real HDR photographs, used by every recipe and evaluation.

The held-out photographs are never seen by a recipe (not as crops, not as teacher
targets); evaluations report them separately. The split is fixed by name so that a
figure in a closing note can be reproduced: one photograph from each source
(OpenEXR samples, pfstools, Poly Haven), chosen for being hard — a backlit tree, an
atrium with sunlit walls, and a church interior with bright stained glass.

Choices between recipe variants (a loss weight, an input size, a schedule) are made on
the **validation** photographs instead: two of the training photographs, fixed by a rule
set before any figure was seen (the last by name of each source that has two or more
training photographs). A recipe run with its validation option trains on the other
training photographs only and reports these; the shipped weights then train on all of
them. Choosing on the held-out photographs would make their figures a test of the
choice, not of the model.

**Extra training photographs** (``EXTRA_PHOTOS_DIR``, in this repository beside the recipes, not in the
installed package): Blender's eight CC0 world HDRIs (``blender_*.exr``, ``photos/LICENSE.txt``). They are
different scenes from every shared photograph and only ever training photographs; a recipe takes them with
``real_photos(..., extra=True)`` (NoR-VDPNet's does by default: with three fit photographs its result on
real content depended on its seed more than on any variant).

**Unseen photographs** (``UNSEEN_PHOTOS_DIR``, beside the recipes too): ten Poly Haven panoramas as carried by
the npm package @pmndrs/assets (``pmndrs_*.exr``, 512 x 256, lossy DWAB; ``photos_unseen/LICENSE.txt`` says which
of the package's eighteen were left out and why). A second held-out set, for evaluations only: no recipe, validation
or calibration reads them (``real_photos`` never returns them), so every figure on them is a test figure, on more
scenes than the three held-out photographs. Evaluations take them with ``--unseen`` and report them as the split
``"unseen"``.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

__all__ = ["EXTRA_PHOTOS_DIR", "REAL_HELD_OUT", "REAL_VALIDATION", "UNSEEN_PHOTOS_DIR", "extra_photos", "real_split",
           "real_photo_names", "real_photos", "is_held_out", "split_of", "photo_seed", "random_crops",
           "unseen_photos", "evaluation_photos"]

REAL_HELD_OUT = ("openexr_Tree", "pfstools_mpi_atrium_3", "polyhaven_st_fagans_interior_1k")
REAL_VALIDATION = ("openexr_StillLife", "polyhaven_potsdamer_platz_1k")
EXTRA_PHOTOS_DIR = Path(__file__).resolve().parent / "photos"
"""Blender's world HDRIs (CC0): training-only photographs that ship with the recipes' sources."""
UNSEEN_PHOTOS_DIR = Path(__file__).resolve().parent / "photos_unseen"
"""Poly Haven panoramas via @pmndrs/assets (CC0): evaluation-only photographs that no recipe reads."""


def is_held_out(name: str) -> bool:
    """Whether the photograph ``name`` (file stem) belongs to the held-out split."""
    return name in REAL_HELD_OUT


def split_of(name: str) -> str:
    """``"held-out"``, ``"validation"`` (a training photograph set aside for choosing between recipe variants)
    or ``"training"``."""
    return "held-out" if name in REAL_HELD_OUT else "validation" if name in REAL_VALIDATION else "training"


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


def extra_photos(*, max_side: int | None = None) -> list[tuple[str, np.ndarray]]:
    """``(name, radiance)`` of the extra training photographs in ``EXTRA_PHOTOS_DIR``, sorted by name."""
    from edgehdr.synth.realistic import real_hdr_scenes

    return real_hdr_scenes(EXTRA_PHOTOS_DIR, max_side=max_side)


def _refuse_name_clash(names: Sequence[str], more: Sequence[str], folder: Path) -> None:
    """A ValueError naming the photographs that are both in the photograph folder and in ``folder``."""
    clash = set(names) & set(more)
    if clash:
        raise ValueError(f"photographs named {', '.join(sorted(clash))} are both in the photograph folder and "
                         f"in {folder}; rename one of them")


def unseen_photos(*, max_side: int | None = None) -> list[tuple[str, np.ndarray]]:
    """``(name, radiance)`` of the unseen photographs in ``UNSEEN_PHOTOS_DIR``, sorted by name: evaluation only.

    Their lossy (DWAB) compression leaves ringing beside bright edges, 0.01-2.8 % of a file's pixels with a channel
    below zero: those pixels take their neighbourhood's median (``fill_negative_pixels``) instead of being clipped
    into black specks; every other pixel is the file's.
    """
    from edgehdr.synth.realistic import real_hdr_scenes

    return real_hdr_scenes(UNSEEN_PHOTOS_DIR, max_side=max_side, fill_negative=True)


def evaluation_photos(*, max_side: int | None = None, unseen: bool = False) -> list[tuple[str, str, np.ndarray]]:
    """``(name, split, radiance)`` of every shared photograph (its ``split_of``) and, with ``unseen``, the unseen
    ones after them (split ``"unseen"``): what the evaluation scripts score. A name in both folders is refused."""
    from edgehdr.synth.realistic import real_hdr_scenes

    photos = [(name, split_of(name), radiance) for name, radiance in real_hdr_scenes(max_side=max_side)]
    if unseen:
        more = unseen_photos(max_side=max_side)
        _refuse_name_clash([n for n, _, _ in photos], [n for n, _ in more], UNSEEN_PHOTOS_DIR)
        photos += [(name, "unseen", radiance) for name, radiance in more]
    return photos


def real_photo_names(split: str, root: str | os.PathLike[str] | None = None, *, extra: bool = False) -> list[str]:
    """The names (file stems) ``real_photos`` returns, in its order, from the folder's file names alone (no
    photograph is decoded): for a recipe's metadata. Unknown splits and name clashes are refused as there."""
    from edgehdr.synth.realistic import real_hdr_files

    keep = {"train": lambda n: not is_held_out(n), "fit": lambda n: split_of(n) == "training",
            "validation": lambda n: split_of(n) == "validation", "held-out": is_held_out}
    if split not in keep:
        raise ValueError(f"split: one of {', '.join(keep)}, got {split!r}")
    names = [p.stem for p in real_hdr_files(root) if keep[split](p.stem)]
    if extra and split in ("train", "fit"):
        more = [p.stem for p in real_hdr_files(EXTRA_PHOTOS_DIR)]
        _refuse_name_clash(names, more, EXTRA_PHOTOS_DIR)
        names = sorted(names + more)
    return names


def real_photos(split: str, root: str | os.PathLike[str] | None = None, *, max_side: int | None = None,
                extra: bool = False) -> list[tuple[str, np.ndarray]]:
    """``(name, radiance)`` of one split: ``"train"`` (every photograph outside the held-out split, validation
    ones included: what shipped weights train on), ``"fit"`` (``"train"`` without the validation photographs:
    what a validation run trains on), ``"validation"`` or ``"held-out"``.

    ``extra``: the training splits (``"train"``, ``"fit"``) take the extra photographs too (``extra_photos``),
    all sorted by name; the validation and held-out splits never do. A name in both folders is refused.
    The selection is ``real_photo_names``'."""
    from edgehdr.synth.realistic import real_hdr_scenes

    names = real_photo_names(split, root, extra=extra)
    photos = real_hdr_scenes(root, max_side=max_side, names=set(names))  # the other splits' are not decoded
    if extra and split in ("train", "fit"):
        photos += extra_photos(max_side=max_side)
    by_name = dict(photos)
    return [(name, by_name[name]) for name in names]


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
