"""Camera response functions (CRF): standard curves, Debevec–Malik calibration, JSON.

The merge needs the *inverse* response ``f^-1``: code value -> relative linear
exposure. ``CameraResponse`` stores it as a per-channel LUT over all code values
(the ``CameraResponse`` data contract: float32, shape (C, K)). Standard curves
are analytic (``ResponseCurve``) and also drive the synthetic camera; unknown
cameras are calibrated from a bracket with Debevec & Malik (1997).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
from numpy.typing import ArrayLike

from edgehdr.bracket import as_frame_stack
from edgehdr.hdr.weights import weight_lut
from edgehdr.io.atomic import write_text_atomic

__all__ = [
    "ResponseCurve",
    "CameraResponse",
    "ResponseLike",
    "standard_response",
    "calibrate_debevec",
    "select_calibration_samples",
    "STANDARD_CURVES",
]

STANDARD_CURVES = ("linear", "gamma2.2", "srgb", "s-curve")


def _srgb_encode(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def _srgb_decode(y: np.ndarray) -> np.ndarray:
    y = np.clip(y, 0.0, 1.0)
    return np.where(y <= 0.04045, y / 12.92, np.power((y + 0.055) / 1.055, 2.4))


@dataclass(frozen=True)
class ResponseCurve:
    """An analytic camera response ``y = f(x)`` on [0, 1] -> [0, 1], with its inverse.

    Kinds
    -----
    linear
        ``y = x``.
    gamma
        ``y = x^(1/gamma)`` (``gamma2.2`` is the usual display-matched encoding).
    srgb
        The IEC 61966-2-1 transfer function.
    s-curve
        A film-like characteristic curve: a display gamma of 2.2 followed by a
        sigmoid in log exposure (Naka–Rushton form) ``u^n (1 + p^n) / (u^n + p^n)``
        with ``u = x^(1/2.2)``, ``n`` = ``contrast`` and ``p`` = ``pivot``. This is
        the shape of in-camera "picture style" tone curves on top of gamma encoding
        (cf. the measured curves of Grossberg & Nayar's DoRF database). ``contrast``
        in [0.6, 2.5] and ``pivot`` in [0.1, 1] span gentle to punchy curves.
    """

    kind: str = "srgb"
    gamma: float = 2.2
    contrast: float = 1.4
    pivot: float = 0.45

    def __post_init__(self) -> None:
        if self.kind not in ("linear", "gamma", "srgb", "s-curve"):
            raise ValueError(f"unknown response kind {self.kind!r}; use linear, gamma, srgb or s-curve")
        if self.gamma <= 0 or self.contrast <= 0 or self.pivot <= 0:
            raise ValueError("gamma, contrast and pivot must be positive")

    @classmethod
    def parse(cls, text: str) -> ResponseCurve:
        """Parse ``linear``, ``srgb``, ``gamma2.2`` / ``gamma:2.4``, ``s-curve[:contrast:pivot]``."""
        t = text.strip().lower()
        if t in ("linear", "srgb"):
            return cls(kind=t)
        if t.startswith("gamma"):
            value = t[5:].lstrip(":=") or "2.2"
            try:
                return cls(kind="gamma", gamma=float(value))
            except ValueError:
                raise ValueError(f"bad gamma in response {text!r}; write e.g. gamma2.2") from None
        if t.startswith("s-curve"):
            parts = [p for p in t[7:].split(":") if p]
            try:
                values = [float(p) for p in parts]
            except ValueError:
                raise ValueError(f"bad s-curve parameters in {text!r}; write s-curve:CONTRAST:PIVOT") from None
            if len(values) > 2:
                raise ValueError(f"s-curve takes at most two parameters (contrast, pivot), got {text!r}")
            return cls(kind="s-curve", **dict(zip(("contrast", "pivot"), values)))
        raise ValueError(f"unknown response {text!r}; use one of {', '.join(STANDARD_CURVES)}")

    @property
    def name(self) -> str:
        if self.kind == "gamma":
            return f"gamma{self.gamma:g}"
        if self.kind == "s-curve":
            return f"s-curve:{self.contrast:g}:{self.pivot:g}"
        return self.kind

    def forward(self, x: ArrayLike) -> np.ndarray:
        """Relative exposure in [0, 1] -> normalised code value in [0, 1]."""
        x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
        if self.kind == "linear":
            return x
        if self.kind == "gamma":
            return np.power(x, 1.0 / self.gamma)
        if self.kind == "srgb":
            return _srgb_encode(x)
        n, p = self.contrast, self.pivot
        u = np.power(x, 1.0 / 2.2) ** n
        return u * (1.0 + p**n) / (u + p**n)

    def inverse(self, y: ArrayLike) -> np.ndarray:
        """Normalised code value in [0, 1] -> relative exposure in [0, 1]."""
        y = np.clip(np.asarray(y, dtype=np.float64), 0.0, 1.0)
        if self.kind == "linear":
            return y
        if self.kind == "gamma":
            return np.power(y, self.gamma)
        if self.kind == "srgb":
            return _srgb_decode(y)
        n, p = self.contrast, self.pivot
        un = y * p**n / np.maximum(1.0 + p**n - y, 1e-300)
        return np.power(np.power(un, 1.0 / n), 2.2)


@dataclass
class CameraResponse:
    """Inverse camera response as a per-channel LUT over code values.

    Attributes
    ----------
    inverse_lut : ndarray, (C, K) float32
        ``inverse_lut[c, z]`` is the relative linear exposure of code ``z`` in
        channel ``c``; non-decreasing in ``z``, largest value 1 at ``z = K - 1``.
    name : str
        Where it came from (``srgb``, ``debevec``, a file name).
    """

    inverse_lut: np.ndarray
    name: str = "custom"
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        lut = np.asarray(self.inverse_lut, dtype=np.float32)
        if lut.ndim == 1:
            lut = np.repeat(lut[None, :], 3, axis=0)
        if lut.ndim != 2 or lut.shape[0] not in (1, 3) or lut.shape[1] < 4:
            raise ValueError(f"inverse_lut must have shape (3, K) or (K,), got {lut.shape}")
        if lut.shape[0] == 1:
            lut = np.repeat(lut, 3, axis=0)
        k = lut.shape[1]
        if k & (k - 1):
            raise ValueError(f"inverse_lut needs 2^bits entries per channel, got {k}")
        if not np.all(np.isfinite(lut)) or np.any(lut < 0):
            raise ValueError("inverse_lut must be finite and non-negative")
        if np.any(np.diff(lut, axis=1) < 0):
            raise ValueError("inverse_lut must be non-decreasing in the code value")
        self.inverse_lut = np.ascontiguousarray(lut)

    @property
    def bits(self) -> int:
        return int(self.inverse_lut.shape[1]).bit_length() - 1

    @property
    def levels(self) -> int:
        return int(self.inverse_lut.shape[1])

    @classmethod
    def from_curve(cls, curve: ResponseCurve | str, bits: int = 8) -> CameraResponse:
        """Sample an analytic curve at every code value of a ``bits``-bit sensor."""
        if isinstance(curve, str):
            curve = ResponseCurve.parse(curve)
        if not 2 <= bits <= 16:
            raise ValueError(f"bits must be in 2..16, got {bits}")
        k = 1 << bits
        lut = curve.inverse(np.arange(k) / (k - 1))
        return cls(np.repeat(lut[None, :], 3, axis=0), name=curve.name, meta={"curve": curve.name})

    def log_lut(self) -> np.ndarray:
        """``ln f^-1(z)`` as float32 (C, K), finite everywhere.

        Code 0 of a curve with ``f^-1(0) = 0`` would give ``-inf``; it is given
        half the value of code 1 instead (the centre of the lowest quantisation bin).
        """
        lut = self.inverse_lut.astype(np.float64)
        floor = np.where(lut[:, 1:2] > 0, lut[:, 1:2] * 0.5, 1e-9)
        return np.log(np.maximum(lut, floor)).astype(np.float32)

    def resampled(self, bits: int) -> CameraResponse:
        """The same response at another bit depth (linear interpolation over code centres)."""
        if bits == self.bits:
            return self
        k_new = 1 << bits
        x_old = np.arange(self.levels) / (self.levels - 1)
        x_new = np.arange(k_new) / (k_new - 1)
        lut = np.stack([np.interp(x_new, x_old, ch) for ch in self.inverse_lut])
        return CameraResponse(lut, name=self.name, meta=dict(self.meta, resampled_from_bits=self.bits))

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "edgehdr-camera-response",
            "version": 1,
            "name": self.name,
            "bits": self.bits,
            "channels": ["R", "G", "B"],
            "inverse_lut": [[float(v) for v in ch] for ch in self.inverse_lut],
            "meta": self.meta,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the response as JSON (atomically)."""
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=1))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CameraResponse:
        """Read a response written by ``save``; errors name the file and field."""
        path = Path(path)
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no such response file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not a JSON camera response ({exc})") from exc
        if not isinstance(data, dict) or data.get("format") != "edgehdr-camera-response":
            raise ValueError(f"{path}: field 'format' must be 'edgehdr-camera-response'")
        if data.get("version") != 1:
            raise ValueError(f"{path}: field 'version' must be 1, got {data.get('version')!r}")
        try:
            lut = np.asarray(data["inverse_lut"], dtype=np.float64)
        except (KeyError, ValueError, TypeError):
            raise ValueError(f"{path}: field 'inverse_lut' must be a 3 x 2^bits list of numbers") from None
        bits = data.get("bits")
        if not isinstance(bits, int) or not 2 <= bits <= 16:
            raise ValueError(f"{path}: field 'bits' must be an integer in 2..16, got {bits!r}")
        if lut.shape != (3, 1 << bits):
            raise ValueError(
                f"{path}: field 'inverse_lut' must be 3 rows of {1 << bits} entries, got shape {lut.shape}")
        try:
            return cls(lut, name=str(data.get("name", path.stem)), meta=dict(data.get("meta") or {}))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None


# What ``edgehdr.hdr.merge.resolve_response`` turns into a ``CameraResponse``: the response itself, a standard
# curve name, a JSON file written by ``CameraResponse.save``, or None (sRGB).
ResponseLike: TypeAlias = CameraResponse | str | os.PathLike[str] | None


def standard_response(name: str, bits: int = 8) -> CameraResponse:
    """A standard inverse response (``linear``, ``gamma2.2``, ``srgb``, ``s-curve``) at ``bits``."""
    return CameraResponse.from_curve(ResponseCurve.parse(name), bits=bits)


def select_calibration_samples(frames: np.ndarray | Sequence[np.ndarray], n_samples: int, *, seed: int = 0,
                               max_levels: int = 256) -> np.ndarray:
    """Choose pixel positions for CRF calibration, per channel.

    Samples are stratified over the code values of every exposure (so every part of
    the curve is constrained, the shoulder by the long frames and the toe by the
    short ones), drawn from smooth regions (low gradient in every frame, robust to
    small misalignment) whose codes increase with exposure (rejecting moving or
    noisy pixels), as Debevec & Malik (1997, sec. 2.1) advise.

    Returns
    -------
    ndarray, (C, n_samples) int64
        Flat pixel indices into an HxW frame.
    """
    import cv2

    stack = as_frame_stack(frames)
    n, h, w, c = stack.shape
    order = np.argsort(stack.reshape(n, -1).mean(axis=1))
    stack = stack[order]
    scale = max(1, (int(stack.max()) + 1) // max_levels) if stack.dtype == np.uint16 else 1
    rng = np.random.default_rng(seed)
    grad = np.zeros((h, w), np.float32)
    for frame in stack:
        gray = cv2.cvtColor(frame.astype(np.float32), cv2.COLOR_RGB2GRAY)
        gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3)
        grad = np.maximum(grad, cv2.magnitude(gx, gy) / (gray + gray.mean() * 0.05 + 1))
    smooth = grad <= np.quantile(grad, 0.6)
    monotone = np.all(np.diff(stack.astype(np.int32), axis=0) >= -2 * scale, axis=(0,))
    out = np.empty((c, n_samples), np.int64)
    top = (int(stack.max()) // scale) if stack.dtype == np.uint16 else 255
    for ch in range(c):
        ok = (smooth & monotone[..., ch]).reshape(-1)
        candidates = np.flatnonzero(ok)
        if candidates.size < n_samples:
            candidates = np.arange(h * w)
        # Stratify over (frame, code level): the shoulder of the curve is seen mostly in
        # the long exposures and the toe in the short ones, so every frame gets a share
        # spread evenly over the code levels it holds (clipped and black codes excluded).
        per_frame = []
        share = max(1, n_samples // n)
        for j in range(n):
            codes = (stack[j, ..., ch].reshape(-1)[candidates] // scale).astype(np.int64)
            usable = (codes > 0) & (codes < top)
            per_frame.append(_stratified(candidates[usable], codes[usable], share, rng))
        picks = np.unique(np.concatenate(per_frame))
        if picks.size > n_samples:
            picks = rng.choice(picks, size=n_samples, replace=False)
        elif picks.size < n_samples:
            rest = np.setdiff1d(candidates, picks)
            extra = rng.choice(rest, size=min(rest.size, n_samples - picks.size), replace=False)
            picks = np.concatenate([picks, extra])
        out[ch, : picks.size] = picks
        # A frame with fewer pixels than n_samples: the picks repeat cyclically to fill the row (a plain slice
        # of them would be too short when the frame has fewer than n_samples / 2 pixels).
        out[ch, picks.size :] = np.resize(picks, n_samples - picks.size) if picks.size else 0
    return out


def _stratified(candidates: np.ndarray, codes: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """About ``count`` of ``candidates``, an equal share per occupied code level."""
    if candidates.size == 0:
        return candidates
    occupied, inverse = np.unique(codes, return_inverse=True)
    per_level = max(1, count // occupied.size)
    order = np.argsort(inverse, kind="stable")
    starts = np.searchsorted(inverse[order], np.arange(occupied.size))
    ends = np.append(starts[1:], order.size)
    picks = [candidates[order[s + rng.choice(e - s, size=min(per_level, e - s), replace=False)]]
             for s, e in zip(starts, ends)]
    return np.concatenate(picks)


def calibrate_debevec(
    frames: np.ndarray | Sequence[np.ndarray],
    exposures: ArrayLike,
    *,
    smoothness: float = 10000.0,
    n_samples: int | None = None,
    weighting: str = "triangle",
    bits: int | None = None,
    channels: str = "shared",
    seed: int = 0,
) -> CameraResponse:
    """Recover the inverse camera response from a bracket (Debevec & Malik 1997).

    Solves, per channel, the linear least-squares problem of eq. 3

    ``O = sum_ij [w(Z_ij) (g(Z_ij) - ln E_i - ln dt_j)]^2 + lambda sum_z [w(z) g''(z)]^2``

    for the log inverse response ``g`` and the sample log radiances ``ln E_i``,
    fixing ``g(Z_mid) = 0``, through its normal equations with the sample radiances
    eliminated (same minimiser, a levels x levels system). For sensors above 8 bits
    the codes are binned to at most 1024 levels and ``g`` is interpolated back to
    every code.

    Parameters
    ----------
    frames : (N, H, W, 3) uint8/uint16 array or sequence of frames
    exposures : sequence of float
        Relative exposure of each frame (exposure time times gain).
    smoothness : float
        ``lambda`` of eq. 3 (weights in [0, 1]), against 2000 samples per channel.
        The default 10000 measured best on noisy synthetic brackets of every
        standard curve (tests/test_crf.py); lower it for clean, many-frame stacks of
        an unusually shaped curve.
    n_samples : int, optional
        Pixels per channel; default 2000. The paper's minimum is
        ``N (P - 1) > Z_max - Z_min``; more samples cost almost nothing here because
        the sample radiances are eliminated from the normal equations.
    weighting : str
        Weighting function (``edgehdr.hdr.weights``); the paper's is ``triangle``.
    bits : int, optional
        Significant bits of uint16 frames (default 16).
    channels : {'shared', 'separate'}
        ``shared`` (default) fits one curve to the samples of all three channels, as
        camera pipelines apply one tone curve after white balance. ``separate`` fits
        each channel on its own; each is then known only up to its own scale (the
        white-balance ambiguity Debevec & Malik note), fixed here by making every
        channel clip at 1, which rests on the extrapolated top of each curve.

    Returns
    -------
    CameraResponse
        Monotonic, normalised so that ``f^-1(K - 1) = 1``.

    References
    ----------
    P. E. Debevec and J. Malik, "Recovering high dynamic range radiance maps from
    photographs," SIGGRAPH 1997.
    """
    stack = as_frame_stack(frames)
    exposures = np.asarray(exposures, dtype=np.float64).reshape(-1)
    n_frames = stack.shape[0]
    if n_frames < 2:
        raise ValueError(f"calibration needs at least two exposures, got {n_frames}")
    if exposures.shape != (n_frames,) or np.any(exposures <= 0):
        raise ValueError(f"need {n_frames} positive exposures, got {exposures.tolist()}")
    if np.unique(exposures).size != n_frames:
        raise ValueError("calibration needs distinct exposures")
    if bits is None:
        bits = 8 if stack.dtype == np.uint8 else 16
    levels_out = 1 << bits
    # Solve on at most 1024 levels (codes binned); g is interpolated back to every code.
    shift = max(0, bits - 10)
    levels = levels_out >> shift
    if n_samples is None:
        n_samples = 2000
    if n_samples * (n_frames - 1) <= levels - 1:
        raise ValueError(
            f"n_samples={n_samples} too few for {n_frames} exposures: "
            f"need more than {(levels - 1) / (n_frames - 1):.0f}"
        )
    positions = select_calibration_samples(stack, n_samples, seed=seed, max_levels=levels)
    weights = weight_lut(weighting, levels).astype(np.float64)
    # Debevec's hat gives zero weight at the ends; keep a tiny floor so the
    # smoothness rows still pin the end codes.
    weights = np.maximum(weights, 1e-3)
    log_t = np.log(exposures)
    flat = stack.reshape(n_frames, -1, 3)
    k = np.arange(1, levels - 1)
    second = np.zeros((levels - 2, levels))
    second[np.arange(levels - 2), k - 1] = 1.0
    second[np.arange(levels - 2), k] = -2.0
    second[np.arange(levels - 2), k + 1] = 1.0
    # lambda is stated for 256 levels; a finer grid has smaller second differences.
    lam = smoothness * (levels / 256.0) ** 3
    smooth = second.T @ (second * (lam * weights[k] ** 2)[:, None])
    def solve(z: np.ndarray) -> np.ndarray:
        a = weights[z] ** 2
        total = a.sum(axis=1, keepdims=True)
        # Eliminate each sample's ln E_i (its optimum is the weighted mean of
        # g(Z_ij) - ln t_j): the data term becomes (S g - l)^T (A - a a^T / W) (S g - l)
        # per sample, so the normal equations are levels x levels whatever the sample count.
        coupling = -(a[:, :, None] * a[:, None, :]) / total[:, :, None]
        coupling[:, np.arange(n_frames), np.arange(n_frames)] += a
        normal = np.zeros((levels, levels))
        np.add.at(normal, (z[:, :, None], z[:, None, :]), coupling)
        rhs = np.zeros(levels)
        np.add.at(rhs, z, coupling @ log_t)
        normal += smooth
        # Fix the scale: g(Z_mid) = 0 (eq. 3's extra row), by a stiff penalty.
        normal[levels // 2, levels // 2] += 1e6 * max(1.0, float(np.abs(normal).max()))
        return np.linalg.solve(normal, rhs)

    samples = [flat[:, positions[ch], ch].astype(np.int64).T >> shift for ch in range(3)]  # (samples, frames)
    if channels == "shared":
        g_all = np.repeat(solve(np.concatenate(samples))[None, :], 3, axis=0)
    elif channels == "separate":
        g_all = np.stack([solve(z) for z in samples])
    else:
        raise ValueError(f"channels must be 'shared' or 'separate', got {channels!r}")
    if shift:
        centres = (np.arange(levels) + 0.5) * (1 << shift) - 0.5
        codes = np.arange(levels_out)
        g_all = np.stack([np.interp(codes, centres, g) for g in g_all])
    inverse = np.exp(g_all - g_all.max(axis=1, keepdims=True))
    inverse = np.maximum.accumulate(inverse, axis=1)
    inverse /= inverse[:, -1:]
    return CameraResponse(
        inverse, name="debevec",
        meta={"method": "debevec-malik-1997", "smoothness": smoothness, "samples": n_samples, "weighting": weighting,
              "channels": channels},
    )
