"""Strict JSON for everything export writes: reports, manifests, benchmark tables.

Some metrics are undefined for some data: the PSNR of two identical outputs is
infinite, a rank correlation of constant scores is NaN. Python's ``json`` writes
those as bare ``Infinity`` / ``NaN``, which is not JSON and breaks other readers;
they are written as ``null`` instead, through ``edgehdr.io``'s strict writers.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING

from edgehdr.io import null_undefined

if TYPE_CHECKING:
    from edgehdr.infer.base import PathLike
    from edgehdr.infer.manifest import Manifest

__all__ = ["null_undefined", "save_manifest"]


def save_manifest(manifest: Manifest, path: PathLike) -> Path:
    """Write ``manifest`` (an ``edgehdr.infer.Manifest``) to ``path`` as strict JSON, atomically."""
    from edgehdr.io import write_json_atomic

    return write_json_atomic(path, null_undefined(dataclasses.asdict(manifest)))
