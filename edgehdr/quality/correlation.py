"""Correlation coefficients for judging quality metrics against references: PLCC and SROCC.

One implementation for the package (NoR-VDPNet training and hold-out figures, export's
validation of converted scorers). A correlation of a constant sequence is undefined:
both return NaN there (written as ``null`` in JSON reports), never a made-up 0 or 1.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["pearson", "spearman", "tie_averaged_ranks", "scene_correlations"]


def tie_averaged_ranks(x: ArrayLike) -> np.ndarray:
    """Ranks 0..n-1 of ``x`` (flattened), ties given the mean of the ranks they span."""
    x = np.asarray(x, np.float64).ravel()
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    first = np.concatenate(([0], np.cumsum(counts)[:-1]))
    return (first + 0.5 * (counts - 1))[inverse].astype(np.float64)


def pearson(a: ArrayLike, b: ArrayLike) -> float:
    """Pearson linear correlation coefficient (PLCC); NaN when either input is constant."""
    x, y = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    if x.shape != y.shape:
        raise ValueError(f"correlation needs equally long inputs, got {x.size} and {y.size}")
    x, y = x - x.mean(), y - y.mean()
    den = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum() / den) if den > 0 else float("nan")


def spearman(a: ArrayLike, b: ArrayLike) -> float:
    """Spearman rank-order correlation (SROCC): Pearson of the tie-averaged ranks; NaN for constant input."""
    return pearson(tie_averaged_ranks(a), tie_averaged_ranks(b))


def scene_correlations(pred: ArrayLike, label: ArrayLike, scene: ArrayLike) -> dict[str, float]:
    """How a quality model's scores ``pred`` follow ``label`` across and within scenes.

    ``srocc`` / ``plcc`` pooled over every rendering, ``rmse``, and the mean and minimum
    Spearman within each ``scene`` (a scene with fewer than 3 renderings has no ranking to
    judge and is left out; NaN when none is left), with the counts.
    """
    p, y, s = (np.asarray(a).ravel() for a in (pred, label, scene))
    within = [spearman(p[s == k], y[s == k]) for k in np.unique(s) if np.count_nonzero(s == k) >= 3]
    return {"srocc": spearman(p, y), "plcc": pearson(p, y),
            "rmse": float(np.sqrt(np.mean((p.astype(np.float64) - y) ** 2))),
            "within_srocc_mean": float(np.mean(within)) if within else float("nan"),
            "within_srocc_min": float(np.min(within)) if within else float("nan"),
            "renderings": int(p.size), "scenes": int(np.unique(s).size)}
