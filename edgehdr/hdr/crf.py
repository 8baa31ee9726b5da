"""Camera response functions (CRF): standard curves, Debevec–Malik calibration, response files.

The merge needs the *inverse* response ``f^-1``: code value -> relative linear
exposure. ``CameraResponse`` stores it as a per-channel LUT over all code values
(the ``CameraResponse`` data contract: float32, shape (C, K)). Standard curves
are analytic (``ResponseCurve``) and also drive the synthetic camera; unknown
cameras are calibrated from a bracket with Debevec & Malik (1997), in a time that
does not grow with the frame size; responses calibrated elsewhere (OpenCV arrays,
pfstools files, plain-text LUTs) are read by ``CameraResponse.load``.
"""

from __future__ import annotations

import functools
import io
import json
import logging
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import numba
import numpy as np
from numpy.typing import ArrayLike

from edgehdr import kernelcache  # noqa: F401 - before the kernels below: it names their numba cache files
from edgehdr.bracket import check_code_depth, check_frame_matches
from edgehdr.hdr.weights import weight_lut
from edgehdr.io.atomic import write_bytes_atomic, write_text_atomic
from edgehdr.tomlconfig import unique_json_keys

__all__ = [
    "ResponseCurve",
    "CameraResponse",
    "ResponseLike",
    "standard_response",
    "calibrate_debevec",
    "select_calibration_samples",
    "STANDARD_CURVES",
    "RESPONSE_FILE_SUFFIXES",
]

log = logging.getLogger("edgehdr.hdr")

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
        for name, value, lo, hi in (("gamma", self.gamma, 0.05, 20.0), ("contrast", self.contrast, 0.05, 20.0),
                                    ("pivot", self.pivot, 1e-3, 1e3)):
            if not (isinstance(value, (int, float)) and math.isfinite(value) and lo <= value <= hi):
                raise ValueError(f"response {name} must be a finite number in {lo:g}..{hi:g}, got {value!r}")

    @classmethod
    def parse(cls, text: str) -> ResponseCurve:
        """Parse ``linear``, ``srgb``, ``gamma2.2`` / ``gamma:2.4``, ``s-curve[:contrast:pivot]``."""
        t = text.strip().lower()
        if t in ("linear", "srgb"):
            return cls(kind=t)
        if t.startswith("gamma"):
            value = t[5:].lstrip(":=") or "2.2"
            try:
                gamma = float(value)
            except ValueError:
                raise ValueError(f"bad gamma in response {text!r}; write e.g. gamma2.2") from None
            try:
                return cls(kind="gamma", gamma=gamma)
            except ValueError as exc:
                raise ValueError(f"bad gamma in response {text!r}: {exc}") from None
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
        channel ``c``; non-decreasing in ``z``. Curves made here (standard curves,
        ``calibrate_debevec``) are normalised to 1 at ``z = K - 1``; responses read
        from other tools keep their own scale, so a merge with them gives radiance
        in that tool's units (``from_opencv``: OpenCV's MergeDebevec radiance).
    name : str
        Where it came from (``srgb``, ``debevec``, a file name).

    Notes
    -----
    A curve that falls somewhere (calibrations of other tools do, in the noisy toe)
    is replaced by the nearest non-decreasing one in least squares (isotonic
    regression by pool-adjacent-violators) and a warning on the ``edgehdr.hdr``
    logger says how far it fell. A curve whose nearest non-decreasing curve is flat
    (a forward or reversed response) is refused.
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
        if k & (k - 1) or k > 1 << 16:
            raise ValueError(f"inverse_lut needs 2^bits entries per channel, got {k} (bits at most 16: uint16 "
                             "frames)")
        if not np.all(np.isfinite(lut)) or np.any(lut < 0):
            raise ValueError("inverse_lut must be finite and non-negative")
        if np.any(np.diff(lut, axis=1) < 0):
            lut = _nearest_non_decreasing(lut, self.name)
        flat = [c for c in range(3) if lut[c, -1] <= lut[c, 0]]
        if flat:  # every code would mean the same radiance: nothing could be merged with it
            raise ValueError(f"inverse_lut channel {'RGB'[flat[0]]} is flat (every code maps to "
                             f"{float(lut[flat[0], 0]):g}); a response must rise from its first code to its last")
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

    @classmethod
    def from_opencv(cls, response: ArrayLike, name: str = "opencv") -> CameraResponse:
        """Take a response calibrated by OpenCV (``cv2.createCalibrateDebevec().process``).

        Parameters
        ----------
        response : array, (K, 1, 3), (K, 3), (K, 1, 1) or (K,)
            OpenCV's layout: code values first, channels last in BGR order (one
            channel: grey). OpenCV's Debevec response is not always monotone (at
            the noisy ends); it is then projected to the nearest non-decreasing
            curve with a warning.
        name : str
            Name of the response.

        Notes
        -----
        OpenCV's scale is kept, so ``merge_debevec(..., weighting="triangle")`` with
        this response gives OpenCV's MergeDebevec radiance wherever the weights
        agree (OpenCV gives each pixel the mean of its channels' weights).
        """
        array = np.asarray(response, dtype=np.float64)
        shape = array.shape
        if array.ndim == 3 and array.shape[1] == 1:
            array = array[:, 0, :]
        elif array.ndim == 1:
            array = array[:, None]
        if array.ndim != 2 or array.shape[1] not in (1, 3):
            raise ValueError(f"an OpenCV response is (K, 1, 3) or (K, 1, 1): code values first, BGR last; got {shape}")
        lut = array.T[::-1] if array.shape[1] == 3 else array.T
        return cls(lut, name=name, meta={"source": "opencv"})

    def to_opencv(self) -> np.ndarray:
        """The response in OpenCV's layout: (K, 1, 3) float32, BGR, as ``cv2.MergeDebevec`` takes it."""
        return np.ascontiguousarray(self.inverse_lut[::-1].T[:, None, :], dtype=np.float32)

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
        """Write the response (atomically) in the format its suffix names; see ``load``. Other suffixes: JSON."""
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix == ".npy":
            buffer = io.BytesIO()
            np.save(buffer, self.to_opencv(), allow_pickle=False)
            return write_bytes_atomic(path, buffer.getvalue())
        if suffix == ".m":
            return write_text_atomic(path, _format_pfstools(self.inverse_lut))
        if suffix in (".txt", ".lut"):
            return write_text_atomic(path, _format_text_lut(self.inverse_lut, self.name))
        data = self.to_dict()
        replaced: list[str] = []
        data["meta"] = _finite_json(data["meta"], "meta", replaced)
        if replaced:  # JSON has no NaN or infinity: json.dumps wrote bare NaN, which strict readers refuse
            log.warning("%s: %s not finite, written as null", path, ", ".join(replaced))
        return write_text_atomic(path, json.dumps(data, indent=1, allow_nan=False))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> CameraResponse:
        """Read a response file; errors name the file and what was wrong.

        Formats, by suffix (``RESPONSE_FILE_SUFFIXES``):

        ``.json``
            Written by ``save`` (any suffix not listed below is read as JSON too).
        ``.npy``
            An OpenCV response array saved with ``np.save`` (``from_opencv``).
        ``.m``
            pfstools' response file (``pfshdrcalibrate --save-response response.m``):
            Octave text matrices, one per channel, each headed ``# name: IR`` (IG,
            IB), ``# rows: K``, ``# columns: 3`` with rows ``log10(I) code I``; the
            weighting block (``W``) is skipped. Luminance HDR's single 7-column
            matrix (``code | log10 R | R | log10 G | G | log10 B | B``) is read too.
        ``.txt``, ``.lut``
            A plain-text LUT: K = 2^bits rows (one per code value) of 1 (grey) or
            3 (R G B) whitespace-separated numbers, ``#`` comments. A text file
            with Octave ``# rows:`` headers is read as pfstools'.
        """
        path = Path(path)
        try:
            return cls._load(path)
        except (OSError, ValueError) as exc:
            if str(path) in str(exc):
                raise
            raise ValueError(f"{path}: not a readable camera response ({exc})") from None
        except Exception as exc:  # noqa: BLE001 - NumPy's and json's parsers raise many kinds on damaged files
            raise ValueError(f"{path}: not a readable camera response ({type(exc).__name__}: {exc})") from None

    @classmethod
    def _load(cls, path: Path) -> CameraResponse:
        suffix = path.suffix.lower()
        try:
            if suffix == ".npy":
                try:  # mapped first: a header declaring 2e9 entries in a 192-byte file is refused, not allocated
                    mapped = np.load(path, allow_pickle=False, mmap_mode="r")
                except (ValueError, EOFError) as exc:  # OSError (missing, unreadable) is reported as such
                    raise ValueError(f"{path}: not a NumPy array file ({exc})") from None
                if not isinstance(mapped, np.ndarray) or mapped.size > 3 * (1 << 16):
                    raise ValueError(f"{path}: a response array has at most 3 x 65536 entries, got shape "
                                     f"{getattr(mapped, 'shape', None)}")
                array = np.array(mapped)
                del mapped
                try:
                    response = cls.from_opencv(array, name=path.name)
                except ValueError as exc:
                    raise ValueError(f"{path}: {exc}") from None
                response.meta["file"] = path.name
                return response
            if suffix in _TEXT_SUFFIXES:
                try:
                    text = path.read_text(encoding="utf-8")
                except UnicodeDecodeError as exc:
                    raise ValueError(f"{path}: not a text response file ({exc})") from None
                lut, source = _parse_text_response(text, path)
                try:
                    return cls(lut, name=path.name, meta={"source": source, "file": path.name})
                except ValueError as exc:
                    raise ValueError(f"{path}: {exc}") from None
            data = json.loads(path.read_text(encoding="utf-8"), object_pairs_hook=unique_json_keys)
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
        except (KeyError, ValueError, TypeError, OverflowError):
            raise ValueError(f"{path}: field 'inverse_lut' must be a 3 x 2^bits list of numbers") from None
        bits = data.get("bits")
        if not isinstance(bits, int) or not 2 <= bits <= 16:
            raise ValueError(f"{path}: field 'bits' must be an integer in 2..16, got {bits!r}")
        if lut.shape != (3, 1 << bits):
            raise ValueError(
                f"{path}: field 'inverse_lut' must be 3 rows of {1 << bits} entries, got shape {lut.shape}")
        meta = data.get("meta") or {}
        if not isinstance(meta, dict):
            raise ValueError(f"{path}: field 'meta' must be an object, got {type(meta).__name__}")
        try:
            return cls(lut, name=str(data.get("name", path.stem)), meta=dict(meta))
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None


# File suffixes ``CameraResponse.load`` reads (lower case; any other is read as JSON).
RESPONSE_FILE_SUFFIXES = (".json", ".npy", ".m", ".txt", ".lut")
_TEXT_SUFFIXES = (".m", ".txt", ".lut")
_OCTAVE_HEADER = re.compile(r"#\s*([A-Za-z][\w ]*?)\s*:\s*(.*?)\s*$")


def _pool_adjacent_violators(values: np.ndarray) -> np.ndarray:
    """The non-decreasing sequence nearest ``values`` in least squares (Ayer et al. 1955; Barlow et al. 1972).

    Scans left to right keeping blocks (mean, length); a block whose mean falls
    below its left neighbour's is merged into it until the means rise again.
    """
    means: list[float] = []
    lengths: list[int] = []
    for value in values.tolist():
        mean, length = float(value), 1
        while means and means[-1] > mean:
            left_mean, left_length = means.pop(), lengths.pop()
            mean = (left_mean * left_length + mean * length) / (left_length + length)
            length += left_length
        means.append(mean)
        lengths.append(length)
    return np.repeat(np.asarray(means), lengths)


def _finite_json(value: Any, where: str, replaced: list[str]) -> Any:
    """``value`` with every non-finite float (also NumPy's) replaced by None; their places appended to
    ``replaced``."""
    if isinstance(value, dict):
        return {k: _finite_json(v, f"{where}.{k}", replaced) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite_json(v, f"{where}[{i}]", replaced) for i, v in enumerate(value)]
    if isinstance(value, (float, np.floating)) and not math.isfinite(float(value)):
        replaced.append(where)
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value


def _nearest_non_decreasing(lut: np.ndarray, name: str) -> np.ndarray:
    """Project every channel of ``lut`` (C, K) onto the non-decreasing curves, with a warning; refuse flat results."""
    drop = np.maximum.accumulate(lut, axis=1) - lut  # how far each code lies below an earlier code's value
    ch, code = np.unravel_index(int(np.argmax(drop)), drop.shape)
    projected = np.stack([_pool_adjacent_violators(row.astype(np.float64)) for row in lut])
    flat = [c for c in range(lut.shape[0]) if projected[c, -1] <= projected[c, 0]]
    if flat:
        raise ValueError(
            f"inverse_lut must be non-decreasing in the code value; channel {'RGB'[flat[0]]} falls overall (its "
            "nearest non-decreasing curve is flat): is it a forward response, or in reverse code order?")
    span = float(np.ptp(lut[ch]))
    log.warning(
        "%s: inverse response is not non-decreasing (largest drop %.4g, %.2f%% of the channel's range, "
        "channel %s at code %d); using the nearest non-decreasing curve (least squares, pool-adjacent-violators)",
        name, float(drop[ch, code]), 100.0 * float(drop[ch, code]) / max(span, 1e-300), "RGB"[ch], code)
    return projected.astype(np.float32)


def _format_text_lut(lut: np.ndarray, name: str) -> str:
    lines = [f"# edgehdr inverse camera response {name!r}: relative linear exposure of each code value",
             f"# {lut.shape[1]} rows, code 0 first; columns R G B"]
    lines += [" ".join(f"{v:.9g}" for v in row) for row in lut.T.tolist()]
    return "\n".join(lines) + "\n"


def _format_pfstools(lut: np.ndarray) -> str:
    # pfstools' responseSave (src/camera/responses.cpp), one block per channel; pfshdrcalibrate -f reads it back.
    out = []
    for label, row in zip(("IR", "IG", "IB"), lut.astype(np.float64)):
        out += [f"# Camera response curve, channel {label}",
                "# data layout: log10(response) | camera output | response",
                f"# name: {label}", "# type: matrix", f"# rows: {row.size}", "# columns: 3"]
        logs = np.log10(np.maximum(row, 1e-300))
        out += [f" {lg if v > 0 else -6.0:.9e} {code:4d} {v:.9e}" for code, (lg, v) in enumerate(zip(logs, row))]
        out.append("")
    return "\n".join(out) + "\n"


def _parse_text_response(text: str, path: Path) -> tuple[np.ndarray, str]:
    """``(lut (C, K), source)`` from a pfstools/Octave file or a plain-text LUT."""
    if any(re.match(r"\s*#\s*(rows|columns)\s*:", line) for line in text.splitlines()):
        return _parse_octave_response(text, path), "pfstools"
    rows = [line.split("#", 1)[0].split() for line in text.splitlines()]
    rows = [row for row in rows if row]
    widths = sorted({len(row) for row in rows})
    if not rows or len(widths) != 1 or widths[0] not in (1, 3):
        raise ValueError(f"{path}: a text LUT has one row per code value of 1 or 3 numbers; found row widths "
                         f"{widths or 'none'}")
    try:
        table = np.array(rows, dtype=np.float64)
    except ValueError as exc:
        raise ValueError(f"{path}: not a table of numbers ({exc})") from None
    return table.T, "text"


def _parse_octave_response(text: str, path: Path) -> np.ndarray:
    blocks: list[tuple[dict[str, str], list[str], list[str]]] = []
    header: dict[str, str] = {}
    comments: list[str] = []
    rows: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if line.startswith("#"):
            if rows:  # a header after data starts the next matrix
                blocks.append((header, comments, rows))
                header, comments, rows = {}, [], []
            match = _OCTAVE_HEADER.match(line)
            if match:
                header[match.group(1).lower()] = match.group(2)
            comments.append(line)
        else:
            rows.append(line)
    if rows:
        blocks.append((header, comments, rows))
    curves: list[tuple[str, np.ndarray]] = []  # (channel letter or "", curve)
    for header, comments, rows in blocks:
        label = header.get("name", "")
        try:
            n_rows, n_cols = int(header["rows"]), int(header["columns"])
        except (KeyError, ValueError):
            raise ValueError(f"{path}: matrix {label!r} lacks '# rows:' and '# columns:' lines") from None
        try:
            values = np.array(" ".join(rows).split(), dtype=np.float64)
        except ValueError as exc:
            raise ValueError(f"{path}: matrix {label!r} holds a non-number ({exc})") from None
        if values.size != n_rows * n_cols:
            raise ValueError(f"{path}: matrix {label!r} should hold {n_rows} x {n_cols} numbers, found {values.size}")
        table = values.reshape(n_rows, n_cols)
        layout = [part.strip().lower() for part in header.get("data layout", "").split("|")]
        if len(layout) == n_cols and "camera output" in layout:
            code_col = layout.index("camera output")
            value_cols = [i for i, part in enumerate(layout) if part.startswith("response")]
            names = [layout[i][len("response"):].strip() for i in value_cols]
        elif n_cols == 3:  # pfstools: log10(response) | camera output | response
            code_col, value_cols, names = 1, [2], [label]
        elif n_cols == 7:  # Luminance HDR: camera output | log10 R | R | log10 G | G | log10 B | B
            code_col, value_cols, names = 0, [2, 4, 6], ["ir", "ig", "ib"]
        else:
            continue  # another matrix (pfstools also saves its weighting function, 2 columns)
        if not value_cols:
            continue
        codes = table[:, code_col]
        if not np.array_equal(np.sort(codes), np.arange(n_rows)):
            raise ValueError(f"{path}: matrix {label!r} must list every camera output 0..{n_rows - 1} once")
        order = codes.astype(np.intp)
        for col, name in zip(value_cols, names):
            curve = np.empty(n_rows)
            curve[order] = table[:, col]
            channel = name.strip().upper()[-1:] if name.strip() else ""
            if not channel:
                found = re.search(r"channel\s+(\w+)", " ".join(comments), re.IGNORECASE)
                channel = found.group(1).upper()[-1:] if found else ""
            curves.append((channel if channel in ("R", "G", "B") else "", curve))
    if not curves:
        raise ValueError(f"{path}: no response matrix found (expected pfstools' '# name: IR', '# rows:', "
                         "'# columns: 3' blocks)")
    by_channel = {c: curve for c, curve in curves if c}
    if set(by_channel) == {"R", "G", "B"}:
        stacked = [by_channel[c] for c in "RGB"]
    elif len(curves) in (1, 3):  # one grey curve, or three unnamed ones in R, G, B order
        stacked = [curve for _, curve in curves]
    else:
        raise ValueError(f"{path}: found {len(curves)} response matrices; need one (grey) or R, G and B")
    if len({curve.size for curve in stacked}) != 1:
        raise ValueError(f"{path}: the channels' matrices differ in length")
    return np.stack(stacked)


# What ``edgehdr.hdr.merge.resolve_response`` turns into a ``CameraResponse``: the response itself, a standard
# curve name, a response file ``CameraResponse.load`` reads (``RESPONSE_FILE_SUFFIXES``), or None (sRGB).
ResponseLike: TypeAlias = CameraResponse | str | os.PathLike[str] | None


def standard_response(name: str, bits: int = 8) -> CameraResponse:
    """A standard inverse response (``linear``, ``gamma2.2``, ``srgb``, ``s-curve``) at ``bits``."""
    return CameraResponse.from_curve(ResponseCurve.parse(name), bits=bits)


# Calibration reads the bracket on a regular grid of about this many pixels (every frame, every channel): enough
# candidates to fill the rare (frame, code) strata nearly as well as the full frame (log-RMS error on JPEG
# brackets 6 % above the full frame's; 2^16 points: 25 %), at a cost that no longer grows with the frame size
# (OpenCV's CalibrateDebevec, which reads only its samples, is the yardstick).
_GRID_PIXELS = 1 << 17


@functools.cache
def _blas_controller() -> Any:
    """The process's BLAS thread pools (found once: a fresh ``threadpool_limits`` rescans the libraries, 0.3 ms)."""
    from threadpoolctl import ThreadpoolController

    return ThreadpoolController()


def _frame_views(frames: np.ndarray | Sequence[np.ndarray]) -> list[np.ndarray]:
    """The frames as a list of (H, W, 3) arrays, validated like ``as_frame_stack`` but never stacked or copied."""
    if isinstance(frames, np.ndarray):
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"frames: expected an (N, H, W, 3) array, got shape {frames.shape}")
        views = list(frames)
    else:
        views = [np.asarray(frame) for frame in frames]
        if not views:
            raise ValueError("frames: no frames given")
        for i, frame in enumerate(views):
            if frame.ndim != 3 or frame.shape[-1] != 3:
                raise ValueError(f"frames[{i}]: expected an HxWx3 RGB frame, got shape {frame.shape}")
            check_frame_matches(frame, views[0], f"frames[{i}]", "frames[0]")
    if not views:
        raise ValueError("frames: no frames given")
    if views[0].dtype not in (np.uint8, np.uint16):
        raise ValueError(f"frames: frames must be uint8 or uint16 code values, got {views[0].dtype}")
    return views


def select_calibration_samples(frames: np.ndarray | Sequence[np.ndarray], n_samples: int, *, seed: int = 0,
                               max_levels: int = 256, bits: int | None = None) -> np.ndarray:
    """Choose pixel positions for CRF calibration, per channel.

    Samples are stratified over the code values of every exposure (so every part of
    the curve is constrained, the shoulder by the long frames and the toe by the
    short ones), drawn from smooth regions (low gradient in every frame, robust to
    small misalignment) whose codes increase with exposure (rejecting moving or
    noisy pixels), as Debevec & Malik (1997, sec. 2.1) advise.

    Parameters
    ----------
    frames : (N, H, W, 3) uint8/uint16 array or sequence of frames
    n_samples : int
        Pixels per channel.
    seed : int
        Seed of the random choice within each (frame, code) stratum.
    max_levels : int
        Code levels the calibration solves for (uint16 codes are binned to it).
    bits : int, optional
        Significant bits of uint16 frames; default from the largest code present.

    Returns
    -------
    ndarray, (C, n_samples) int64
        Flat pixel indices into an HxW frame.

    Notes
    -----
    Frames above 131072 (2^17) pixels are read on a grid of that many evenly
    spaced points only (every sample is still a real pixel of the frame), so the
    cost does not grow with the frame size. Smoothness is the Sobel gradient across
    that grid: a point passes only if its neighbours one grid step away agree, which
    also keeps it clear of edges by about a grid step, more than a small misalignment.
    """
    return _calibration_samples(_frame_views(frames), n_samples, seed=seed, max_levels=max_levels, bits=bits)[0]


def _calibration_samples(views: list[np.ndarray], n_samples: int, *, seed: int, max_levels: int,
                         bits: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``select_calibration_samples`` plus the codes found there: (C, S) positions, (C, S, N) codes."""
    import cv2

    n = len(views)
    h, w = views[0].shape[:2]
    if h * w > _GRID_PIXELS:
        # Evenly spaced rows and columns, _GRID_PIXELS points in all: one gather per frame.
        shrink = np.sqrt(_GRID_PIXELS / (h * w))
        grid_rows = np.linspace(0, h - 1, max(2, int(h * shrink))).round().astype(np.intp)
        grid_cols = np.linspace(0, w - 1, max(2, int(w * shrink))).round().astype(np.intp)
        index = (grid_rows[:, None] * w + grid_cols[None, :]).reshape(-1)
        grid = np.stack([np.take(v.reshape(h * w, 3), index, axis=0).reshape(grid_rows.size, grid_cols.size, 3)
                         if v.flags.c_contiguous else v[grid_rows][:, grid_cols] for v in views])
    else:
        grid_rows, grid_cols = np.arange(h), np.arange(w)
        grid = np.stack(views)
    gh, gw = grid.shape[1:3]
    step = float(np.sqrt(h * w / (gh * gw)))
    grad = np.zeros((gh, gw), np.float32)
    for j in range(n):
        gray = cv2.cvtColor(grid[j].astype(np.float32), cv2.COLOR_RGB2GRAY)
        gx = cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3)
        magnitude = cv2.magnitude(gx, cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3))
        if step > 1:  # across the grid the Sobel spans 2 * step pixels: / step gives a ramp its pixel gradient
            magnitude /= step
        np.maximum(grad, magnitude / (gray + gray.mean() * 0.05 + 1), out=grad)
    # The smoothest 60 %; the quantile of a 32768-point subsample is as good a threshold and 4 x cheaper.
    flat_grad = grad.reshape(-1)
    smooth_pixels = np.flatnonzero(flat_grad <= np.quantile(flat_grad[:: max(1, flat_grad.size >> 15)], 0.6))
    if grid.dtype == np.uint8:
        shift, top = 0, 255
    else:
        grid_max = int(grid.max())
        level_bits = max_levels.bit_length() - 1
        bits = max(grid_max.bit_length(), level_bits) if bits is None else bits
        shift = max(0, bits - level_bits)
        top = grid_max >> shift
    order = np.argsort(grid.reshape(n, -1).mean(axis=1))
    planes = np.ascontiguousarray(np.moveaxis(grid.reshape(n, -1, 3), -1, 0))  # (3, N, grid pixels)
    rng = np.random.default_rng(seed)
    positions = np.empty((3, n_samples), np.int64)
    codes = np.empty((3, n_samples, n), np.int64)
    for ch, picks in enumerate(_stratified(planes, smooth_pixels, order, n_samples, shift, top, max_levels, seed, rng)):
        # A frame with fewer usable pixels than n_samples: the picks repeat cyclically to fill the row.
        picks = np.resize(picks, n_samples)
        positions[ch] = grid_rows[picks // gw] * w + grid_cols[picks % gw]
        codes[ch] = planes[ch][:, picks].T
    return positions, codes


def _stratified(planes: np.ndarray, candidates: np.ndarray, order: np.ndarray, count: int, shift: int, top: int,
                levels: int, seed: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Per channel of ``planes`` (C, N, P): up to ``count`` distinct ``candidates``, stratified by (frame, code).

    Candidates whose codes fall by more than 2 levels from a frame to the next
    brighter one (``order``) are passed over (moving or noisy pixels); if fewer than
    ``count`` remain, every pixel is a candidate instead. Every frame gets an equal
    share of ``count``, spread evenly over the usable levels ``code >> shift``
    (above 0, below ``top``) it holds: ``k`` per level, drawn at random within the
    level (``_draw_channel``: selection sampling, no sort). The distinct pixels
    drawn are then cut to ``count`` at random, or topped up with candidates drawn
    uniformly (the image's own distribution of codes), those usable in at least two
    frames first.
    """
    channels, _, pixels = planes.shape
    top = min(top, levels - 1)
    order = order.astype(np.intp)
    seeds = (np.arange(channels, dtype=np.uint64) + np.uint64(seed & 0xFFFFFFFFFFFFFFFF)).astype(np.uint64)
    masks = np.zeros((3, channels, candidates.size), np.bool_)  # eligible, informative, drawn
    _draw_strata(planes, candidates, order, 2 << shift, count, shift, top, levels, seeds, masks[0], masks[1], masks[2])
    out = []
    for c in range(channels):
        pool, (eligible, informative, drawn) = candidates, masks[:, c]
        if np.count_nonzero(eligible) < count and candidates.size < pixels:
            # Too few smooth pixels whose codes rise with exposure: every pixel is a candidate, unchecked.
            pool = np.arange(pixels)
            every = np.zeros((3, 1, pixels), np.bool_)
            _draw_strata(planes[c : c + 1], pool, order, 1 << 30, count, shift, top, levels, seeds[c : c + 1],
                         every[0], every[1], every[2])
            eligible, informative, drawn = every[:, 0]
        picks = pool[drawn]
        if picks.size > count:
            picks = picks[rng.choice(picks.size, size=count, replace=False)]
        for fill in (pool[informative], pool[eligible]):
            if picks.size >= count:
                break
            free = np.ones(pixels, bool)
            free[picks] = False
            rest = fill[free[fill]]
            extra = rest[rng.choice(rest.size, size=min(rest.size, count - picks.size), replace=False)]
            picks = np.concatenate([picks, extra])
        out.append(picks)
    return out


_GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)


@numba.njit(cache=True, inline="always")
def _mix64(x: np.uint64) -> np.uint64:
    # SplitMix64's finaliser (Steele, Lea & Flood 2014): a bijection of the 64-bit integers that scrambles every bit.
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


@numba.njit(parallel=True, cache=True, nogil=True)
def _draw_strata(planes, candidates, order, tolerance, count, shift, top, levels, seeds, eligible, informative,
                 drawn):  # pragma: no cover - compiled
    # One channel per thread (_draw_channel); the masks (C, M) are written in place.
    for c in numba.prange(planes.shape[0]):
        _draw_channel(planes[c], candidates, order, tolerance, count, shift, top, levels, seeds[c], eligible[c],
                      informative[c], drawn[c])


@numba.njit(cache=True, nogil=True)
def _draw_channel(codes, candidates, order, tolerance, count, shift, top, levels, seed, eligible, informative,
                  drawn):  # pragma: no cover - compiled
    # Masks over the candidates: eligible (codes rise with exposure, within tolerance), informative (eligible and
    # usable in two or more frames: one usable frame only adds an equation its own ln E absorbs), drawn.
    # Pass 1 finds them and the (frame, level) stratum sizes; pass 2 draws with selection sampling (Knuth's
    # Algorithm S): exactly min(size, per_level) of a stratum's samples, every such subset equally likely. The
    # uniform of sample (pixel, frame) is a hash of (seed, pixel, frame): no generator state to carry.
    n = codes.shape[0]
    m = candidates.size
    level = np.empty((m, n), np.int32)
    sizes = np.zeros((n, levels), np.int64)
    for i in range(m):
        p = candidates[i]
        rising = True
        for k in range(1, n):
            if np.int64(codes[order[k], p]) - np.int64(codes[order[k - 1], p]) < -tolerance:
                rising = False
                break
        if not rising:
            continue
        eligible[i] = True
        usable = 0
        for j in range(n):
            z = np.int32(codes[j, p] >> shift)
            if 0 < z < top:
                usable += 1
            else:
                z = -1
            level[i, j] = z
        if usable >= 2:
            informative[i] = True
            for j in range(n):
                if level[i, j] >= 0:
                    sizes[j, level[i, j]] += 1
    wanted = np.empty((n, levels), np.int64)
    for j in range(n):
        occupied = 0
        for z in range(levels):
            if sizes[j, z] > 0:
                occupied += 1
        wanted[j, :] = max(1, (count // n) // max(occupied, 1))
    state = _mix64(seed)
    for i in range(m):
        if not informative[i]:
            continue
        p = candidates[i]
        for j in range(n):
            z = level[i, j]
            if z >= 0 and wanted[j, z] > 0:
                key = np.uint64(p) * np.uint64(n) + np.uint64(j) + np.uint64(1)
                u = np.float64(_mix64(state + key * _GOLDEN_GAMMA) >> np.uint64(11)) * (1.0 / 9007199254740992.0)
                if u * sizes[j, z] < wanted[j, z]:
                    drawn[i] = True
                    wanted[j, z] -= 1
                sizes[j, z] -= 1


def calibrate_debevec(
    frames: np.ndarray | Sequence[np.ndarray],
    exposures: ArrayLike,
    *,
    smoothness: float = 30000.0,
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
    eliminated (same minimiser, a levels x levels system: ``_solve_debevec``). For
    sensors above 8 bits the codes are binned to at most 1024 levels and ``g`` is
    interpolated back to every code. Samples come from ``select_calibration_samples``,
    which reads frames above 2^17 pixels on a grid of that size: the cost does not
    grow with the frame size (5 frames of 0.3 to 12 MP: about a fifth of the time of
    OpenCV's CalibrateDebevec on the same frames, on a 2-core x86 host).

    Parameters
    ----------
    frames : (N, H, W, 3) uint8/uint16 array or sequence of frames
    exposures : sequence of float
        Relative exposure of each frame (exposure time times gain).
    smoothness : float
        ``lambda`` of eq. 3 (weights in [0, 1]), against 2000 samples per channel.
        The default 30000 was chosen by merge quality (PU21-PSNR of the noise-weighted
        merge through the calibrated response against the truth): on 24 real HDR
        photographs re-taken through three JPEG cameras 10000 / 30000 / 50000 / 100000
        gave 31.87 / 32.16 / 32.20 / 32.03 dB (100000 lost 5 dB on one bracket), on 30
        noisy synthetic brackets (srgb, gamma 2.2, s-curve) 29.83 / 30.27 / - / 30.44 dB.
        Lower it for clean, many-frame stacks of an unusually shaped curve.
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
    views = _frame_views(frames)
    exposures = np.asarray(exposures, dtype=np.float64).reshape(-1)
    n_frames = len(views)
    if n_frames < 2:
        raise ValueError(f"calibration needs at least two exposures, got {n_frames}")
    if exposures.shape != (n_frames,) or not np.all(np.isfinite(exposures)) or np.any(exposures <= 0):
        raise ValueError(f"need {n_frames} positive, finite exposures, got {exposures.tolist()}")
    if np.unique(exposures).size != n_frames:
        raise ValueError("calibration needs distinct exposures")
    if channels not in ("shared", "separate"):
        raise ValueError(f"channels must be 'shared' or 'separate', got {channels!r}")
    is_u8 = views[0].dtype == np.uint8
    if bits is None:
        bits = 8 if is_u8 else 16
    check_code_depth(views, bits)
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
    weights = weight_lut(weighting, levels).astype(np.float64)
    # Debevec's hat gives zero weight at the ends; keep a tiny floor so the
    # smoothness rows still pin the end codes.
    weights = np.maximum(weights, 1e-3)
    # lambda is stated for 256 levels; a finer grid has smaller second differences.
    lam = smoothness * (levels / 256.0) ** 3
    log_t = np.log(exposures)
    # Small BLAS calls only: threaded BLAS workers cost more in wake-ups than they save (5x on a busy 2-core host).
    with _blas_controller().limit(limits=1, user_api="blas"):
        _, codes = _calibration_samples(views, n_samples, seed=seed, max_levels=levels, bits=None if is_u8 else bits)
        samples = codes >> shift  # (C, samples, frames)
        _check_samples_informative(samples, exposures)
        if channels == "shared":
            g = _solve_debevec(samples.reshape(-1, n_frames), log_t, weights, lam)
            g_all = np.repeat(g[None, :], 3, axis=0)
        else:
            g_all = np.stack([_solve_debevec(z, log_t, weights, lam) for z in samples])
    if shift:
        centres = (np.arange(levels) + 0.5) * (1 << shift) - 0.5
        all_codes = np.arange(levels_out)
        g_all = np.stack([np.interp(all_codes, centres, g) for g in g_all])
    inverse = np.exp(g_all - g_all.max(axis=1, keepdims=True))
    inverse = np.maximum.accumulate(inverse, axis=1)
    inverse /= inverse[:, -1:]
    return CameraResponse(
        inverse, name="debevec",
        meta={"method": "debevec-malik-1997", "smoothness": smoothness, "samples": n_samples, "weighting": weighting,
              "channels": channels},
    )


def _check_samples_informative(samples: np.ndarray, exposures: np.ndarray) -> None:
    """``ValueError`` when the calibration samples (C, S, N) cannot fix a curve: no sample's code changes across the
    frames (every frame clipped, black, or a uniform scene), or more samples fall than rise with exposure (the
    exposures given in another order than the frames). Either left the solver a flat curve, refused with a message
    about the curve instead of the bracket."""
    steps = np.diff(samples[:, :, np.argsort(exposures, kind="stable")].astype(np.int64), axis=2)
    rising = int(np.count_nonzero((steps >= 0).all(axis=2) & (steps > 0).any(axis=2)))
    falling = int(np.count_nonzero((steps <= 0).all(axis=2) & (steps < 0).any(axis=2)))
    if not (steps != 0).any():
        raise ValueError("no calibration sample changes code across the exposures: every frame is clipped, black, "
                         "or of a uniform scene there; nothing fixes a response")
    if falling > rising:
        raise ValueError(f"{falling} calibration samples get darker with longer exposure against {rising} that get "
                         "brighter: are the exposures listed in the frames' order?")


def _solve_debevec(z: np.ndarray, log_t: np.ndarray, weights: np.ndarray, lam: float) -> np.ndarray:
    """The log inverse response ``g`` minimising Debevec & Malik's eq. 3 for the samples ``z`` (S, N), ``g(mid) = 0``.

    Notes
    -----
    The optimal ``ln E_i`` of a sample is the weighted mean of ``g(Z_ij) - ln t_j``
    (weights ``a_ij = w(Z_ij)^2``); substituting it (the Schur complement of the
    sample block of the normal equations) leaves, per sample, the quadratic form
    ``(g_i - l)^T (A_i - a_i a_i^T / W_i) (g_i - l)`` in its ``N`` values ``g_i = g(Z_i.)``.
    Its ``N x N`` coefficients are scattered into the ``levels x levels`` normal matrix
    with one ``bincount``, together with the pentadiagonal ``lambda sum w(z)^2 g''(z)^2``
    term. Both vanish on a constant ``g`` (the scale ambiguity, eq. 3's extra row
    ``g(Z_mid) = 0``), so adding any positive ``p g(Z_mid)^2`` selects exactly the
    constrained minimiser; ``p`` is taken at the matrix's own scale for conditioning.
    """
    levels = weights.size
    n = z.shape[1]
    a = weights[z] ** 2
    total = a.sum(axis=1, keepdims=True)
    coupling = -(a[:, :, None] * a[:, None, :]) / total[:, :, None]
    coupling[:, np.arange(n), np.arange(n)] += a
    k = np.arange(1, levels - 1)
    stencil = np.array([1.0, -2.0, 1.0])
    # Smoothness: lambda w(k)^2 (g[k-1] - 2 g[k] + g[k+1])^2 contributes lambda w(k)^2 s s^T at rows/cols k-1..k+1.
    band_rows = (k[:, None, None] + np.arange(-1, 2)[None, :, None]) * levels
    band_cols = k[:, None, None] + np.arange(-1, 2)[None, None, :]
    band = (lam * weights[k] ** 2)[:, None, None] * np.multiply.outer(stencil, stencil)[None]
    index = np.concatenate([(z[:, :, None] * levels + z[:, None, :]).ravel(), (band_rows + band_cols).ravel()])
    normal = np.bincount(index, np.concatenate([coupling.ravel(), band.ravel()]), minlength=levels * levels)
    normal = normal.reshape(levels, levels)
    rhs = np.bincount(z.ravel(), np.einsum("sjk,k->sj", coupling, log_t).ravel(), minlength=levels)
    mid = levels // 2
    normal[mid, mid] += float(np.abs(np.diagonal(normal)).max())
    return np.linalg.solve(normal, rhs)
