"""The photograph splits every recipe and evaluation use: held-out, validation, training."""

from __future__ import annotations

import numpy as np
import pytest

from edgehdr.io import write_radiance
from edgehdr.models.training.splits import REAL_HELD_OUT, REAL_VALIDATION, real_photos, real_split, split_of


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
