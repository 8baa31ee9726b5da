"""The recipes' cache key (edgehdr.models.training.cachekey): it changes with the code and the photographs that
made a cached dataset, stays put when they do not, and refuses a source that is not in the package."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgehdr.models.training import cachekey
from edgehdr.synth import realistic


@pytest.fixture
def package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "pkg"
    (root / "edgehdr" / "tonemap").mkdir(parents=True)
    (root / "edgehdr" / "tonemap" / "a.py").write_text("x = 1\n")
    (root / "edgehdr" / "tonemap" / "notes.txt").write_text("not code\n")
    (root / "edgehdr" / "fastmath.py").write_text("y = 2\n")
    photos = tmp_path / "hdr"
    photos.mkdir()
    (photos / "one.exr").write_bytes(b"\0" * 10)
    monkeypatch.setattr(cachekey, "_PACKAGE", root / "edgehdr")
    monkeypatch.setattr(realistic, "real_hdr_dir", lambda root=None: photos)
    return root / "edgehdr"


def test_the_key_follows_the_sources_and_the_photographs(package: Path) -> None:
    sources = ["tonemap", "fastmath.py"]
    key = cachekey.data_key(sources)
    assert len(key) == 12 and int(key, 16) >= 0
    assert cachekey.data_key(sources) == key  # same tree, same key
    (package / "tonemap" / "notes.txt").write_text("edited\n")  # not a .py file in a folder: not part of the key
    assert cachekey.data_key(sources) == key
    (package / "tonemap" / "a.py").write_text("x = 3\n")
    edited = cachekey.data_key(sources)
    assert edited != key
    (package / "tonemap" / "b.py").write_text("")  # a new module in a folder counts, even empty
    added = cachekey.data_key(sources)
    assert added != edited
    photos = realistic.real_hdr_dir()
    (photos / "two.hdr").write_bytes(b"\0" * 3)
    with_photo = cachekey.data_key(sources)
    assert with_photo != added
    assert cachekey.data_key(sources, photos=False) == cachekey.data_key(sources, photos=False)
    (photos / "two.hdr").write_bytes(b"\0" * 4)  # same name, another size
    assert cachekey.data_key(sources) != with_photo
    assert cachekey.data_key(sources, photos=False) == cachekey.data_key(sources, photos=False)


def test_the_key_names_a_source_that_is_not_in_the_package(package: Path) -> None:
    with pytest.raises(ValueError, match="tonemapp is not a file or folder of the edgehdr package"):
        cachekey.data_key(["tonemapp"])


def test_the_recipes_sources_exist() -> None:
    # the recipes' lists name real parts of the package (a rename would otherwise raise only at training time)
    for sources in (cachekey.DIMMING_SOURCES, cachekey.NORVDPNET_SOURCES, cachekey.TMO_SOURCES):
        assert len(cachekey.data_key(sources, photos=False)) == 12
