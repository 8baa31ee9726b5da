"""Strict JSON for everything export writes: reports, manifests, benchmark tables.

Some metrics are undefined for some data: the PSNR of two identical outputs is
infinite, a rank correlation of constant scores is NaN. Python's ``json`` writes
those as bare ``Infinity`` / ``NaN``, which is not JSON and breaks other readers;
they are written as ``null`` instead, through ``edgehdr.io``'s strict writers.
"""

from __future__ import annotations

import dataclasses

from edgehdr.io import null_undefined

__all__ = ["null_undefined", "save_manifest"]


def save_manifest(manifest, path):
    """Write ``manifest`` (an ``edgehdr.infer.Manifest``) to ``path`` as strict JSON, atomically."""
    from edgehdr.io import write_json_atomic

    return write_json_atomic(path, null_undefined(dataclasses.asdict(manifest)))
