"""Zone algorithms: per-zone statistics of the target and the LED light level each heuristic picks.

Input is the display-referred target (cd/m^2, limited to the panel's peak); what
matters for a zone is the brightest channel it must reproduce. One fused numba
pass gathers every zone's maximum, mean and (on request) a log-luminance
histogram; the heuristics then work on the small zone grid:

- ``max``: light = zone maximum (no clipping inside the zone, most power, most halo);
- ``mean``: light = zone mean (least power, clips highlights);
- ``sqrt``: light = sqrt(max * mean), the usual compromise;
- ``percentile``: light = the zone's p-quantile of max-RGB (CDF-based; p = 0.95).

These are the standard heuristics of the local-dimming literature (dual-modulation
displays after Seetzen et al., ACM TOG 23(3), 2004, as presented in the tutorial);
``edgehdr.dimming.optimal_zone_light`` is the optimisation-based quality reference.

Non-finite pixels (``edgehdr.tonemap.nonfinite``) count as what the panel will show
for them: a NaN or ``-inf`` pixel as black, a ``+inf`` pixel as the panel peak; one
warning per call on the ``edgehdr.dimming`` logger gives the count, and a frame with
no finite pixel raises ``ValueError`` instead of turning every LED off.
"""

from __future__ import annotations

import logging
import math

import numba
import numpy as np

from edgehdr.dimming.layout import LedLayout
from edgehdr.fastmath import log2_from_bits
from edgehdr.tonemap.nonfinite import SHOWN_BLACK, SHOWN_WHITE, any_nonfinite, pixel_class, report_nonfinite

__all__ = ["zone_statistics", "zone_statistics_with_min", "zone_max_light", "zone_light", "within_budget",
           "HEURISTICS", "ZoneTemporalFilter", "DEFAULT_ALGORITHM", "DEFAULT_POWER_BUDGET"]

HEURISTICS = ("max", "mean", "sqrt", "percentile")
# The runtime's default, chosen on the shared real HDR photographs at 48 x 48 zones under a stated cap of 25 % of
# full-white backlight power per frame (python -m edgehdr.models.training.evaluate_dimming --real): mean PU-PSNR
# max 39.4 dB, percentile 36.5, sqrt 33.4, mean 28.0 within the cap, clipping 18 % / 20 % / 24 % / 39 % of the
# pixels. sqrt, the default before, is worst-case 27 % of full white on the same photographs and 6 dB lower.
DEFAULT_ALGORITHM = "max"
DEFAULT_POWER_BUDGET = 0.25
_HIST_BINS = 64
_HIST_STOPS = 16.0  # histogram spans 2^-16 .. 1 of the peak
log = logging.getLogger("edgehdr.dimming")


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _zone_stats_kernel(target, bits, inv_peak, rows, cols, want_hist, want_min, zmax, zsum, zmin, hist, row_black,
                       row_white):
    # Parallel over zone rows (no two threads touch one zone). Per pixel row: max-RGB /
    # peak into a row buffer, its histogram bins by a vectorised log2 on the float
    # bits, then per-zone max, sum, (on request) min and counts.
    h, w, _ = target.shape
    nbins = hist.shape[2]
    bins_per_stop = np.float32(nbins / 16.0)
    col_edges = np.empty(cols + 1, np.int64)
    for c in range(cols + 1):
        col_edges[c] = (c * w) // cols
    for r in numba.prange(rows):
        y0 = (r * h) // rows
        y1 = ((r + 1) * h) // rows
        for c in range(cols):
            zmax[r, c] = 0.0
            zsum[r, c] = 0.0
            for b in range(nbins):
                hist[r, c, b] = 0
        m_row = np.empty(w, np.float32)
        floored_row = np.empty(w, np.float32)
        bin_row = np.empty(w, np.int32)
        # Column max and sum over the zone row's pixel rows (full-width, vectorised), reduced per zone once at
        # the end: reducing each pixel row per zone (short loops of about 40) took 60 % of the kernel at 1080p.
        col_max = np.zeros(w, np.float32)
        col_sum = np.zeros(w, np.float32)
        col_min = np.ones(w, np.float32)
        black = 0
        white = 0
        for y in range(y0, y1):
            src = target[y].reshape(-1)
            for x in range(w):
                m = max(src[3 * x], max(src[3 * x + 1], src[3 * x + 2])) * inv_peak
                m_row[x] = min(max(m, np.float32(0.0)), np.float32(1.0))
            row_bits = bits[y]
            if any_nonfinite(row_bits):
                for x in range(w):
                    cls = pixel_class(row_bits, 3 * x)
                    if cls == SHOWN_BLACK:
                        m_row[x] = 0.0
                        black += 1
                    elif cls == SHOWN_WHITE:
                        m_row[x] = 1.0
                        white += 1
            if want_hist:
                for x in range(w):
                    floored_row[x] = max(m_row[x], np.float32(1.52587890625e-05))  # 2^-16: bin 0
                m_bits = floored_row.view(np.int32)
                for x in range(w):
                    b = np.int32((log2_from_bits(m_bits[x]) + np.float32(16.0)) * bins_per_stop)
                    bin_row[x] = min(max(b, np.int32(0)), np.int32(nbins - 1))
            for x in range(w):
                col_max[x] = max(col_max[x], m_row[x])
                col_sum[x] += m_row[x]
            if want_min:
                for x in range(w):
                    col_min[x] = min(col_min[x], m_row[x])
            if want_hist:
                for c in range(cols):
                    for x in range(col_edges[c], col_edges[c + 1]):
                        hist[r, c, bin_row[x]] += 1
        for c in range(cols):
            m_max = np.float32(0.0)
            m_sum = np.float32(0.0)
            for x in range(col_edges[c], col_edges[c + 1]):
                m_max = max(m_max, col_max[x])
                m_sum += col_sum[x]
            zmax[r, c] = m_max
            zsum[r, c] = m_sum / ((y1 - y0) * (col_edges[c + 1] - col_edges[c]))
            if want_min:
                m_min = np.float32(1.0)
                for x in range(col_edges[c], col_edges[c + 1]):
                    m_min = min(m_min, col_min[x])
                zmin[r, c] = m_min
        row_black[r] = black
        row_white[r] = white


def zone_statistics(target_cd_m2: np.ndarray, layout: LedLayout, *, histogram: bool = False,
                    scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Per-zone max and mean of max-RGB / peak, and optionally a log2 histogram.

    ``scale`` multiplies the input first (the runtime passes radiance and its display
    scale instead of materialising the cd/m^2 target); it must be finite and positive.
    Non-finite pixels count as black (NaN, -inf) or as the peak (+inf), with one warning
    (module docstring); ``ValueError`` if no pixel is finite.

    Returns
    -------
    zmax, zmean : ndarray (rows, cols) float32 in [0, 1]
    hist : ndarray (rows, cols, 64) int32 or None
        Counts over log2(value) from -16 to 0 (bin 0 also holds everything darker).
    """
    zmax, zmean, _, hist = zone_statistics_with_min(target_cd_m2, layout, histogram=histogram, scale=scale,
                                                    minimum=False)
    return zmax, zmean, hist


def zone_statistics_with_min(target_cd_m2: np.ndarray, layout: LedLayout, *, histogram: bool = False,
                             scale: float = 1.0, minimum: bool = True
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """``zone_statistics`` and, with ``minimum``, each zone's minimum of max-RGB / peak, in the same pass.

    Returns ``(zmax, zmean, zmin, hist)``; ``zmin`` (rows, cols) float32 in [0, 1] is ``None``
    without ``minimum``. The minimum is the darkest pixel's brightest channel: where the LCD's
    leakage lifts the black level, that pixel is the first to show it.
    """
    target = np.ascontiguousarray(target_cd_m2, dtype=np.float32)
    if target.ndim != 3 or target.shape[2] != 3:
        raise ValueError(f"target must be an HxWx3 image in cd/m^2, got shape {target.shape}")
    if target.shape[:2] != (layout.height_px, layout.width_px):
        raise ValueError(f"target is {target.shape[1]}x{target.shape[0]} but the layout's panel is "
                         f"{layout.width_px}x{layout.height_px}")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0, got {scale}")
    zmax = np.empty((layout.rows, layout.cols), np.float32)
    zsum = np.empty((layout.rows, layout.cols), np.float32)
    zmin = np.empty((layout.rows, layout.cols) if minimum else (1, 1), np.float32)
    hist = np.empty((layout.rows, layout.cols, _HIST_BINS if histogram else 1), np.int32)
    row_black = np.empty(layout.rows, np.int64)
    row_white = np.empty(layout.rows, np.int64)
    h, w = target.shape[:2]
    _zone_stats_kernel(target, target.reshape(h, -1).view(np.int32), np.float32(scale / layout.peak_luminance_cd_m2),
                       layout.rows, layout.cols, histogram, minimum, zmax, zsum, zmin, hist, row_black, row_white)
    report_nonfinite(log, "zone statistics", row_black.sum(), row_white.sum(), h * w)
    return zmax, zsum, (zmin if minimum else None), (hist if histogram else None)


def zone_max_light(zone_max: np.ndarray, layout: LedLayout, *, scale: float = 1.0) -> np.ndarray:
    """The ``max`` heuristic's light (rows, cols) from per-zone maxima of ``max(R, G, B)`` measured elsewhere.

    ``zone_max`` is in the units of the image ``zone_statistics`` would have read (the runtime's
    merge gathers it as it writes the radiance: ``edgehdr.hdr.MergeStatistics``); the result is
    ``clip(zone_max * scale / peak, 0, 1)``, identical to ``zone_light(image, layout, 'max')`` with
    that ``scale``: scaling and clipping are monotonic, so they commute with the maximum.
    """
    zmax = np.asarray(zone_max)
    if zmax.shape != (layout.rows, layout.cols):
        raise ValueError(f"zone maxima are {zmax.shape[0]} x {zmax.shape[1]} but the layout has "
                         f"{layout.rows} x {layout.cols} zones")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a finite number > 0, got {scale}")
    if not np.isfinite(zmax).all():
        raise ValueError("zone maxima must be finite")
    light = zmax.astype(np.float32) * np.float32(scale / layout.peak_luminance_cd_m2)
    return np.clip(light, np.float32(0.0), np.float32(1.0))


def _percentile_from_hist(hist: np.ndarray, zmax: np.ndarray, p: float) -> np.ndarray:
    cdf = np.cumsum(hist, axis=2)
    total = cdf[..., -1:]
    idx = np.argmax(cdf >= p * total, axis=2)
    # Upper edge of the bin where the CDF crosses p, never above the zone maximum.
    value = np.power(2.0, (idx + 1) * (_HIST_STOPS / hist.shape[2]) - _HIST_STOPS)
    return np.minimum(value, zmax).astype(np.float32)


def zone_light(target_cd_m2: np.ndarray, layout: LedLayout, algorithm: str = DEFAULT_ALGORITHM, *,
               percentile: float = 0.95,
               stats: tuple[np.ndarray, np.ndarray, np.ndarray | None] | None = None) -> np.ndarray:
    """LED light fraction (rows, cols) in [0, 1] chosen by a heuristic (see the module docstring).

    ``stats`` may pass precomputed ``zone_statistics`` (with a histogram for ``percentile``).
    The optimisation-based reference is ``edgehdr.dimming.optimal_zone_light``.
    """
    if algorithm not in HEURISTICS:
        raise ValueError(f"unknown zone algorithm {algorithm!r}; use one of {', '.join(HEURISTICS)} "
                         "(or optimal_zone_light for the optimisation-based reference)")
    if not 0.0 < percentile <= 1.0:
        raise ValueError(f"percentile must be in (0, 1], got {percentile}")
    if stats is None:
        stats = zone_statistics(target_cd_m2, layout, histogram=algorithm == "percentile")
    zmax, zmean, hist = stats
    if algorithm == "max":
        return zmax.copy()
    if algorithm == "mean":
        return zmean.copy()
    if algorithm == "sqrt":
        return np.sqrt(zmax * zmean).astype(np.float32)
    if hist is None:
        raise ValueError("the percentile algorithm needs zone_statistics(..., histogram=True)")
    return _percentile_from_hist(hist, zmax, percentile)


def within_budget(light: np.ndarray, power_budget: float) -> np.ndarray:
    """``light`` scaled down uniformly when its mean exceeds ``power_budget`` (mean light fraction).

    The budget of every algorithm, the heuristics' and the network's alike: the zones keep their
    ratios and the LCD compensation opens up to make up the difference where it can.
    """
    mean = float(np.mean(light))
    return light * np.float32(power_budget / mean) if mean > power_budget > 0 else light


class ZoneTemporalFilter:
    """Rate limiter for zone light over video: bounded rise and fall per second.

    Rising fast keeps highlights from clipping when they appear; falling slowly keeps
    a zone from pumping when content flickers. ``update`` returns the filtered light.

    Parameters
    ----------
    max_rise_per_s, max_fall_per_s : float
        Largest change of a zone's light fraction per second upwards / downwards.
    frame_interval_s : float
        Default time step when ``update`` gets no ``dt_s``.
    """

    def __init__(self, max_rise_per_s: float = 8.0, max_fall_per_s: float = 2.0, frame_interval_s: float = 1 / 60):
        if max_rise_per_s <= 0 or max_fall_per_s <= 0 or frame_interval_s <= 0:
            raise ValueError("rise and fall limits and the frame interval must be positive")
        self.max_rise_per_s = float(max_rise_per_s)
        self.max_fall_per_s = float(max_fall_per_s)
        self.frame_interval_s = float(frame_interval_s)
        self.state: np.ndarray | None = None

    def reset(self) -> None:
        self.state = None

    def update(self, light: np.ndarray, dt_s: float | None = None) -> np.ndarray:
        """Filtered light; a non-finite ``light`` raises ``ValueError`` and leaves the state as it was."""
        light = np.asarray(light, np.float32)
        if not np.isfinite(light).all():
            raise ValueError(f"zone light has {int(np.count_nonzero(~np.isfinite(light)))} non-finite values of "
                             f"{light.size}; the temporal filter state is unchanged")
        if self.state is None or self.state.shape != light.shape:
            self.state = light.copy()
            return self.state.copy()
        dt = self.frame_interval_s if dt_s is None else max(float(dt_s), 0.0)
        step = light - self.state
        np.clip(step, -self.max_fall_per_s * dt, self.max_rise_per_s * dt, out=step)
        self.state += step
        return self.state.copy()
