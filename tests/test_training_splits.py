"""The photograph splits every recipe and evaluation use: held-out, validation, training."""

from __future__ import annotations

import hashlib
import re
import shutil

import cv2
import numpy as np
import pytest

from edgehdr.io import write_radiance
from edgehdr.models.training.splits import (
    EXTRA_PHOTOS_DIR,
    REAL_HELD_OUT,
    REAL_VALIDATION,
    UNSEEN_PHOTOS_DIR,
    evaluation_photos,
    extra_photos,
    real_photo_names,
    real_photos,
    real_split,
    split_of,
    unseen_photos,
)
from edgehdr.synth.realistic import real_hdr_scenes


def _folder(tmp_path):
    names = [*REAL_HELD_OUT, *REAL_VALIDATION, "fit_a", "fit_b"]
    for k, name in enumerate(names):  # each photograph a different constant, so that the lists can be traced back
        write_radiance(tmp_path / f"{name}.hdr", np.full((8, 12, 3), float(k + 1), np.float32))
    return names


def test_splits_partition_the_folder_and_fit_never_sees_validation_or_held_out(tmp_path):
    names = _folder(tmp_path)
    got = {s: [n for n, _ in real_photos(s, tmp_path)] for s in ("train", "fit", "validation", "held-out")}
    assert sorted(got["held-out"]) == sorted(REAL_HELD_OUT)
    assert sorted(got["validation"]) == sorted(REAL_VALIDATION)
    assert sorted(got["fit"]) == ["fit_a", "fit_b"]
    assert sorted(got["train"]) == sorted(got["fit"] + got["validation"])
    assert sorted(got["train"] + got["held-out"]) == sorted(names)
    train, held_out = real_split(tmp_path)
    assert [n for n, _ in train] == got["train"] and [n for n, _ in held_out] == got["held-out"]
    for name, radiance in real_photos("validation", tmp_path):  # the photograph's own pixels, not another's
        assert float(radiance[0, 0, 0]) == pytest.approx(names.index(name) + 1, rel=1e-2)
    assert {split_of(n) for n in names} == {"held-out", "validation", "training"}
    assert not set(REAL_VALIDATION) & set(REAL_HELD_OUT)


def test_unknown_split_is_refused_with_the_choices(tmp_path):
    with pytest.raises(ValueError, match="fit, validation, held-out"):
        real_photos("test", tmp_path)


def _assert_the_pinned_files(folder, count):
    """The folder's .exr files are exactly the ``count`` its LICENSE.txt lists, each with the SHA-256 pinned there."""
    note = (folder / "LICENSE.txt").read_text()
    pinned = dict((name, digest) for digest, name in re.findall(r"^([0-9a-f]{64})  (\S+)$", note, re.M))
    files = sorted(p.name for p in folder.glob("*.exr"))
    assert files == sorted(pinned) and len(files) == count
    for name in files:
        assert hashlib.sha256((folder / name).read_bytes()).hexdigest() == pinned[name], name


def test_extra_photographs_are_the_licensed_files_and_real_hdr():
    """The files are the ones the licence note lists (SHA-256 pinned there), and each is a high-dynamic-range
    photograph (not an 8-bit image saved as EXR, at most 8 stops): more than 12 stops between its 1st percentile
    and its peak."""
    _assert_the_pinned_files(EXTRA_PHOTOS_DIR, 8)
    for name, radiance in extra_photos():
        assert name.startswith("blender_") and split_of(name) == "training"
        luminance = radiance.mean(axis=2)
        assert np.log2(luminance.max() / np.percentile(luminance[luminance > 0], 1)) > 12, name


def test_extra_photographs_join_the_training_splits_only(tmp_path):
    names = _folder(tmp_path)
    extras = [n for n, _ in extra_photos(max_side=16)]
    for split in ("train", "fit"):
        got = [n for n, _ in real_photos(split, tmp_path, max_side=16, extra=True)]
        assert got == sorted([n for n, _ in real_photos(split, tmp_path)] + extras)
    for split in ("validation", "held-out"):
        assert [n for n, _ in real_photos(split, tmp_path, extra=True)] == [n for n, _ in real_photos(split, tmp_path)]
    assert not set(extras) & set(names)
    # a photograph folder that holds a file of the same name as an extra one: refused, both places named
    shutil.copy(EXTRA_PHOTOS_DIR / "blender_city.exr", tmp_path / "blender_city.exr")
    with pytest.raises(ValueError, match="blender_city are both in the photograph folder and in"):
        real_photos("train", tmp_path, extra=True)


def test_photo_names_are_real_photos_names_without_decoding(tmp_path):
    _folder(tmp_path)
    for split in ("train", "fit", "validation", "held-out"):
        for extra in (False, True):
            assert real_photo_names(split, tmp_path, extra=extra) == \
                [n for n, _ in real_photos(split, tmp_path, max_side=16, extra=extra)], (split, extra)
    with pytest.raises(ValueError, match="fit, validation, held-out"):
        real_photo_names("test", tmp_path)
    whole = dict(real_hdr_scenes(tmp_path))
    # names only: a file that does not decode is still listed (real_photos, which reads it, fails on it)
    (tmp_path / "fit_c.hdr").write_bytes(b"not a radiance file")
    assert "fit_c" in real_photo_names("fit", tmp_path)
    with pytest.raises(ValueError):
        real_photos("fit", tmp_path)
    # a split decodes its own photographs only: the broken file fails the splits that hold it, not the others,
    # and the others' values are what the whole folder's read gives them
    for split in ("validation", "held-out"):
        photos = real_photos(split, tmp_path)
        assert [n for n, _ in photos] == real_photo_names(split, tmp_path)
        assert all(np.array_equal(r, whole[n]) for n, r in photos), split
    with pytest.raises(ValueError):
        real_photos("train", tmp_path)


def _thumbnail(radiance: np.ndarray) -> np.ndarray:
    """Normalised log luminance at 128 x 64 (the extra photographs' and the Poly Haven ones' 2:1 panoramas)."""
    small = cv2.resize(radiance.mean(axis=2), (128, 64), interpolation=cv2.INTER_AREA)
    log = np.log(small + 1e-4)
    return (log - log.mean()) / log.std()


def _likeness(a: np.ndarray, b: np.ndarray) -> float:
    """Highest correlation of two thumbnails over horizontal turns (a panorama's seam can be anywhere) and a
    mirror image."""
    return max(float((np.roll(x, k, axis=1) * b).mean()) for x in (a, a[:, ::-1]) for k in range(128))


def test_extra_photographs_are_other_scenes_than_every_shared_one():
    """No extra photograph is a shared one (held-out or validation content in training would make their figures
    meaningless) nor another extra one under a second name (pmndrs/assets' venice_sunset, for one, is Blender's
    sunset): their thumbnails correlate below 0.95 over every turn (0.88 at most on these files: outdoor panoramas
    share a bright-sky-over-ground layout), while the check finds a photograph in a turned, mirrored and re-exposed
    copy of itself (above 0.99)."""
    extras = [(n, _thumbnail(r)) for n, r in extra_photos()]
    for i, (name, thumb) in enumerate(extras):
        for extra, other in extras[i + 1:]:
            assert _likeness(other, thumb) < 0.95, (extra, name)
    try:
        shared = real_hdr_scenes()
    except FileNotFoundError as exc:
        pytest.skip(f"the shared photographs are not here: {exc}")
    for name, radiance in shared:
        thumb = _thumbnail(radiance)
        for extra, other in extras:
            assert _likeness(other, thumb) < 0.95, (extra, name)
        copy = _thumbnail(np.roll(radiance[:, ::-1], radiance.shape[1] // 4, axis=1) * 7.0)
        assert _likeness(copy, thumb) > 0.99, name


def test_unseen_photographs_are_the_licensed_files_real_hdr_and_other_scenes():
    """The evaluation-only photographs: the files the licence note pins, each high-dynamic-range (more than 7 stops
    between its 1st percentile and a peak above 1: the apartment, a room with a sunlit window, spans 7.6 at
    512 x 256, the others 10.4-21.8), and another scene than every shared photograph, every extra training
    photograph and each other (the check above; the left-out duplicates reach 1.00 on it)."""
    _assert_the_pinned_files(UNSEEN_PHOTOS_DIR, 10)
    unseen = unseen_photos()
    for name, radiance in unseen:
        assert name.startswith("pmndrs_") and radiance.shape == (256, 512, 3), name
        luminance = radiance.mean(axis=2)
        assert luminance.max() > 1 and np.log2(luminance.max() / np.percentile(luminance[luminance > 0], 1)) > 7, name
    thumbs = [(n, _thumbnail(r)) for n, r in unseen]
    others = [(n, _thumbnail(r)) for n, r in extra_photos()]
    try:
        others += [(n, _thumbnail(r)) for n, r in real_hdr_scenes()]
    except FileNotFoundError:
        pass  # the shared photographs are checked where they are present
    for i, (name, thumb) in enumerate(thumbs):
        for other, other_thumb in thumbs[i + 1:] + others:
            assert _likeness(other_thumb, thumb) < 0.95, (name, other)


def test_unseen_photographs_are_in_no_recipe_split_and_evaluations_label_them(tmp_path, monkeypatch):
    """No split a recipe reads (with or without the extra photographs) returns an unseen photograph;
    evaluation_photos adds them after the shared ones as "unseen" and refuses a name in both folders."""
    names = _folder(tmp_path)
    unseen = [n for n, _ in unseen_photos(max_side=16)]
    for split in ("train", "fit", "validation", "held-out"):
        for extra in (False, True):
            assert not set(real_photo_names(split, tmp_path, extra=extra)) & set(unseen), (split, extra)
    monkeypatch.setenv("EDGEHDR_DATA", str(tmp_path))
    photos = evaluation_photos(max_side=16, unseen=True)
    assert [(n, s) for n, s, _ in photos] == [(n, split_of(n)) for n in sorted(names)] + \
        [(n, "unseen") for n in unseen]
    assert [n for n, _, _ in evaluation_photos(max_side=16)] == sorted(names)
    shutil.copy(UNSEEN_PHOTOS_DIR / "pmndrs_hall.exr", tmp_path / "pmndrs_hall.exr")
    with pytest.raises(ValueError, match="pmndrs_hall are both in the photograph folder and in"):
        evaluation_photos(unseen=True)


def test_unseen_photographs_replace_the_lossy_specks_and_keep_every_other_pixel():
    """A pixel the lossy compression drove below zero in a channel takes values within its 5 x 5 neighbourhood's
    range (a speck at 0 among pixels at 3 was scored as truth before); every other pixel is the file's own."""
    from edgehdr.io import read_radiance

    repaired = dict(unseen_photos())
    checked = 0
    for path in sorted(UNSEEN_PHOTOS_DIR.glob("*.exr")):
        raw = read_radiance(path)
        got = repaired[path.stem]
        specks = (raw < 0).any(axis=2)
        np.testing.assert_array_equal(got[~specks], raw[~specks], err_msg=path.stem)
        padded = np.pad(np.maximum(raw, 0), ((2, 2), (2, 2), (0, 0)), mode="reflect")
        for y, x in zip(*np.nonzero(specks)):
            window = padded[y:y + 5, x:x + 5].reshape(-1, 3)
            low, high = window.min(axis=0), window.max(axis=0)
            assert np.all(got[y, x] >= low) and np.all(got[y, x] <= high), (path.stem, y, x)
            checked += 1
        assert not (got @ np.array([0.2126, 0.7152, 0.0722], np.float32) <= 0)[specks].any(), path.stem
    assert checked > 1000  # the files do have such pixels (0.01-2.8 % of each)
