"""Shipped ONNX models and their manifests (small, versioned), and where to find them.

``tmo_net``
    Real-time TMO: parametric-operator parameters on an 8 x 14 grid.
    Stage ``[tonemap] operator = "neural"``; recipe ``python -m edgehdr.models.training.train_tmo``.
``dimming_net``
    Local dimming: zone light from a downsampled frame (18 x 32 zones).
    Stage ``[dimming] algorithm = "neural"``; recipe ``python -m edgehdr.models.training.train_dimming``.
``merge_net``
    3-exposure merge: per-pixel blending weights of a weighted Debevec merge.
    Stage ``[merge] method = "neural"``; recipe ``python -m edgehdr.models.training.train_merge``.
``norvdpnet_tmo``
    NoR-VDPNet (width / 4): TMQI estimate of an SDR image, no reference.
    Stage ``[score] every_n``, ``edgehdr score``; recipe ``python -m edgehdr.models.training.train_norvdpnet``.

The runtime loads them through ``edgehdr.infer`` (ONNX Runtime, or a TensorRT engine
built on the device with ``edgehdr-export``); PyTorch is needed only by the recipes
in ``edgehdr/models/training``.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["MODELS_DIR", "model_path", "RECIPES"]

MODELS_DIR = Path(__file__).resolve().parent
RECIPES = {"tmo_net": "python -m edgehdr.models.training.train_tmo",
           "dimming_net": "python -m edgehdr.models.training.train_dimming",
           "norvdpnet_tmo": "python -m edgehdr.models.training.train_norvdpnet",
           "merge_net": "python -m edgehdr.models.training.train_merge"}


def model_path(name_or_path: str | os.PathLike[str]) -> Path:
    """A shipped model by name (``tmo_net``) or an ONNX file by path; ``FileNotFoundError`` says how to make it."""
    text = str(name_or_path)
    if text.endswith(".onnx") or "/" in text:
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX model")
        return path
    path = MODELS_DIR / f"{text}.onnx"
    if not path.is_file():
        known = ", ".join(RECIPES)
        how = RECIPES.get(text)
        raise FileNotFoundError(f"model {text!r} is not shipped in {MODELS_DIR}"
                                + (f"; rebuild it with: {how}" if how else f"; known models: {known}"))
    return path
