"""Keys of the recipes' work-folder caches (datasets, teacher targets) that change with what made them.

A cache named by counts and seeds alone outlived the code that filled it: after a change to the
renderers (the TMO's highlight roll-off changed NoR-VDPNet's training renderings) or to the
display model (the backlight's panel edges changed the dimming teacher's light), a rerun in the
same work folder trained on, and reported held-out figures of, the old data without a word.
``data_key`` hashes the package sources the data comes from and the real photographs' names and
sizes, so such a cache is simply not found and the data is made again.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

__all__ = ["DIMMING_SOURCES", "NORVDPNET_SOURCES", "TMO_SOURCES", "data_key"]

_PACKAGE = Path(__file__).resolve().parents[2]

# What each recipe's cached data is made of (paths inside ``edgehdr``).
DIMMING_SOURCES = ("dimming", "synth", "tonemap", "quality/pu21.py", "fastmath.py", "io",
                   "models/training/splits.py", "models/training/train_dimming.py")
"""Teacher targets: the display model, the scenes and photographs' crops, the PU21 objective."""
NORVDPNET_SOURCES = ("synth", "tonemap", "quality", "fastmath.py", "io", "models/training/splits.py",
                     "models/training/train_norvdpnet.py")
"""Renderings and TMQI labels: the scenes, the operators that render them, the metric."""
TMO_SOURCES = ("tonemap", "synth", "quality", "fastmath.py", "io", "models/training/splits.py",
               "models/training/train_tmo.py")
"""Teacher grids: the operators' application, the scenes, the objective's metrics."""


def data_key(sources: Sequence[str], *, photos: bool = True) -> str:
    """12 hex digits of SHA-256 over the package ``sources`` (paths inside ``edgehdr``: files, or folders whose
    ``.py`` files all count) and, with ``photos``, the names and byte sizes of the real HDR photographs
    (``edgehdr.synth.realistic.real_hdr_files``; none when the folder is absent) and of the extra training
    photographs (``splits.EXTRA_PHOTOS_DIR``)."""
    digest = hashlib.sha256()
    for source in sources:
        path = _PACKAGE / source
        if not path.exists():
            raise ValueError(f"data_key: {source} is not a file or folder of the edgehdr package")
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(file.relative_to(_PACKAGE).as_posix().encode())
            digest.update(file.read_bytes())
    if photos:
        from edgehdr.models.training.splits import EXTRA_PHOTOS_DIR
        from edgehdr.synth.realistic import real_hdr_files

        for file in real_hdr_files() + real_hdr_files(EXTRA_PHOTOS_DIR):
            digest.update(f"{file.name}:{file.stat().st_size}".encode())
    return digest.hexdigest()[:12]
