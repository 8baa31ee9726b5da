"""Strict JSON for everything export writes: reports, manifests, benchmark tables.

Some metrics are undefined for some data: the PSNR of two identical outputs is
infinite, a rank correlation of constant scores is NaN. Python's ``json`` writes
those as bare ``Infinity`` / ``NaN``, which is not JSON and breaks other readers;
they are written as ``null`` instead, through ``edgehdr.io``'s strict writers.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

__all__ = ["null_undefined", "save_manifest"]


def null_undefined(obj):
    """A copy of ``obj`` (dicts, lists, numbers) with NaN and infinities as ``None``, numpy scalars and arrays
    as Python numbers and lists, and bytes as text."""
    if isinstance(obj, dict):
        return {null_undefined(k) if isinstance(k, bytes) else k: null_undefined(v) for k, v in obj.items()}
    if isinstance(obj, bytes):  # a string field of a damaged model that is not UTF-8
        return obj.decode("utf-8", errors="replace")
    if isinstance(obj, (list, tuple)):
        return [null_undefined(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return null_undefined(obj.tolist())
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj) if math.isfinite(obj) else None
    return obj


def save_manifest(manifest, path):
    """Write ``manifest`` (an ``edgehdr.infer.Manifest``) to ``path`` as strict JSON, atomically."""
    from edgehdr.io import write_json_atomic

    return write_json_atomic(path, null_undefined(dataclasses.asdict(manifest)))
