"""LED backlight simulation: zone light levels -> backlight luminance through the point-spread function.

``B(p) = L_peak / n * sum_z l_z PSF_z(p)``, the backlight of a dual-modulation
display (Seetzen et al. 2004), normalised so that every LED at full light gives
``L_peak`` at the panel centre. ``BacklightModel`` precomputes the linear
operator for one layout at a working resolution (1/4 of the panel by default):
a separable Gaussian PSF becomes two small matrices (``B = A_r L A_c^T``), a
measured PSF image a splat-and-filter; the result is interpolated to full
resolution bilinearly (``upsample_backlight``: OpenCV inside, the end samples'
line extrapolated over the outermost pixels). The adjoint is provided for the optimisation-based zone
algorithm.
"""

from __future__ import annotations

import functools

import cv2
import numba
import numpy as np

from edgehdr import kernelcache  # noqa: F401 - before the kernels below: it names their numba cache files
from edgehdr.dimming.layout import LedLayout
from edgehdr.tonemap.guided import bilinear_taps

__all__ = ["BacklightModel", "psf_support", "upsample_backlight"]


@numba.njit(parallel=True, fastmath=True, cache=True, nogil=True)
def _separable_spread(a_rows, light, a_cols_t, col_start, col_stop, out):
    # out = a_rows @ light @ a_cols_t, rows in parallel, the wide inner loop contiguous
    # (vectorised) and limited to each zone column's support [col_start, col_stop) (the
    # PSF is zero beyond it: 6x less work at 48 columns). Done here rather than with
    # numpy's BLAS: OpenBLAS worker threads keep spinning after a call and starve the
    # next numba kernel of both cores (8 ms vs 1 ms measured for zone statistics right
    # after a BLAS product).
    h = a_rows.shape[0]
    rows, cols = light.shape
    w = a_cols_t.shape[1]
    for y in numba.prange(h):
        mixed = np.zeros(cols, np.float32)
        for r in range(rows):
            a = a_rows[y, r]
            if a == np.float32(0.0):
                continue
            for c in range(cols):
                mixed[c] += a * light[r, c]
        row = out[y]
        for x in range(w):
            row[x] = 0.0
        for c in range(cols):
            m = mixed[c]
            band = a_cols_t[c]
            for x in range(col_start[c], col_stop[c]):
                row[x] += m * band[x]
    return out


def psf_support(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each row's support in a PSF matrix: the first and one past the last non-zero column (int64; 0, 0 for a row
    of zeros), so that a loop over ``range(start, stop)`` skips the zeros ``_psf_matrix`` wrote."""
    nonzero = matrix != 0
    start = np.argmax(nonzero, axis=1).astype(np.int64)
    stop = (matrix.shape[1] - np.argmax(nonzero[:, ::-1], axis=1)).astype(np.int64)
    stop[~nonzero.any(axis=1)] = 0
    return start, stop


def _psf_matrix(distance_sigmas: np.ndarray) -> np.ndarray:
    """Gaussian PSF weights ``exp(-d^2 / 2)`` as float32, exactly 0 below 1e-7 (beyond 5.7 sigma).

    The spread skips the zeros; forward and adjoint share the same matrices, so they stay exact adjoints.
    """
    a = np.exp(-0.5 * distance_sigmas ** 2).astype(np.float32)
    a[a < np.float32(1e-7)] = 0.0
    return a


@functools.lru_cache(maxsize=16)
def _edge_taps(n_src: int, n_dst: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``bilinear_taps(n_src, n_dst, extrapolate=True)`` and the destinations OpenCV clamps, read-only, per size
    (computing them took longer than the edges they serve)."""
    taps = bilinear_taps(n_src, n_dst, extrapolate=True)
    edge = np.flatnonzero((taps[2] < 0) | (taps[2] > 1))
    for a in (*taps, edge):
        a.flags.writeable = False
    return (*taps, edge)


def upsample_backlight(backlight_work: np.ndarray, height: int, width: int,
                       out: np.ndarray | None = None) -> np.ndarray:
    """A working-resolution backlight (h, w) float32 -> (``height``, ``width``), bilinear with half-pixel centres.

    OpenCV (``cv2.resize`` INTER_LINEAR) fills the panel between the working grid's first and last sample
    centres. The outermost ``scale / 2`` pixels at each border lie beyond them, where OpenCV repeats the end
    sample. The backlight falls off steeply there (no LEDs beyond the panel), so at a scale of 4 the repeat
    made the corner pixels up to 11 % (random zones 18 %) brighter than the direct PSF sum; the end samples'
    line, extrapolated over those pixels and floored at 0, is within 0.3 % of the peak (``tests/test_dimming.py``).
    The LCD compensation's fused pass interpolates the same way (``bilinear_taps`` and ``widen_maps`` with
    ``extrapolate``).
    """
    work = np.ascontiguousarray(backlight_work, np.float32)
    out = cv2.resize(work, (width, height), dst=out, interpolation=cv2.INTER_LINEAR)
    (y0, y1, fy, edge_rows), (x0, x1, fx, edge_cols) = _edge_taps(work.shape[0], height), _edge_taps(work.shape[1],
                                                                                                      width)
    if edge_cols.size:  # whole columns: the horizontal extrapolation, then the vertical interpolation
        cols = np.maximum(work[:, x0[edge_cols]] + fx[edge_cols] * (work[:, x1[edge_cols]] - work[:, x0[edge_cols]]),
                          0.0)
        out[:, edge_cols] = np.maximum(cols[y0] + fy[:, None] * (cols[y1] - cols[y0]), 0.0)
    if edge_rows.size:  # whole rows, from the working rows they need only (corners again, the same values)
        pairs = work[np.concatenate([y0[edge_rows], y1[edge_rows]])]
        wide = np.maximum(pairs[:, x0] + fx * (pairs[:, x1] - pairs[:, x0]), 0.0)
        top, bottom = wide[:edge_rows.size], wide[edge_rows.size:]
        out[edge_rows] = np.maximum(top + fy[edge_rows, None] * (bottom - top), 0.0)
    return out


class BacklightModel:
    """The light-spread operator of a layout, at ``1 / work_scale`` of the panel resolution.

    References
    ----------
    H. Seetzen et al., "High dynamic range display systems," ACM TOG 23(3), 2004.
    """

    def __init__(self, layout: LedLayout, *, work_scale: int = 4):
        if work_scale < 1:
            raise ValueError(f"work_scale must be >= 1, got {work_scale}")
        self.layout = layout
        # The working grid samples the PSF and is interpolated back to the panel: a Gaussian narrower than a few
        # working pixels (zones a few pixels wide) lost light between the samples (a 1-pixel pitch kept 36 % of
        # it), so the scale comes down until sigma spans two working pixels; ordinary panels (a pitch of 8 pixels or
        # more) keep ``work_scale``.
        narrowest = min(layout.pitch_px)
        finest = layout.psf_sigma_pitch * narrowest / 2 if layout.psf_model == "gaussian" else narrowest / 4
        work_scale = max(1, min(int(work_scale), int(finest)))
        self.work_scale = int(work_scale)
        self.work_shape = (max(1, -(-layout.height_px // work_scale)), max(1, -(-layout.width_px // work_scale)))
        h, w = self.work_shape
        pitch_y, pitch_x = layout.pitch_px
        # Zone centres in working-grid pixel coordinates (pixel centres at integers).
        sy, sx = layout.height_px / h, layout.width_px / w
        self.centre_y = ((np.arange(layout.rows) + 0.5) * pitch_y) / sy - 0.5
        self.centre_x = ((np.arange(layout.cols) + 0.5) * pitch_x) / sx - 0.5
        if layout.psf_model == "gaussian":
            sig_y = layout.psf_sigma_pitch * pitch_y / sy
            sig_x = layout.psf_sigma_pitch * pitch_x / sx
            self._a_rows = _psf_matrix((np.arange(h)[:, None] - self.centre_y[None, :]) / sig_y)
            self._a_cols = _psf_matrix((np.arange(w)[:, None] - self.centre_x[None, :]) / sig_x)
            self._a_cols_t = np.ascontiguousarray(self._a_cols.T)
            self._col_start, self._col_stop = psf_support(self._a_cols_t)  # each zone column's pixels
            self._kernel = None
        else:
            kh = max(3, int(round(layout.psf_extent_pitch * pitch_y / sy)) | 1)
            kw = max(3, int(round(layout.psf_extent_pitch * pitch_x / sx)) | 1)
            kernel = cv2.resize(np.asarray(layout.psf_image, np.float32), (kw, kh), interpolation=cv2.INTER_AREA)
            self._kernel = (kernel / kernel.max()).astype(np.float32)
            self._splat = self._bilinear_weights(h, w)
        full_on = self._spread(np.ones((layout.rows, layout.cols), np.float32))
        centre = full_on[h // 2, w // 2]
        self.gain = np.float32(layout.peak_luminance_cd_m2 / max(float(centre), 1e-12))

    def _bilinear_weights(self, h, w):
        yy, xx = np.meshgrid(self.centre_y, self.centre_x, indexing="ij")
        y0 = np.clip(np.floor(yy).astype(int), 0, h - 1)
        x0 = np.clip(np.floor(xx).astype(int), 0, w - 1)
        y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
        ty, tx = np.clip(yy - y0, 0, 1), np.clip(xx - x0, 0, 1)
        idx = [y0 * w + x0, y0 * w + x1, y1 * w + x0, y1 * w + x1]
        wts = [(1 - ty) * (1 - tx), (1 - ty) * tx, ty * (1 - tx), ty * tx]
        return [(i.ravel(), wt.ravel().astype(np.float32)) for i, wt in zip(idx, wts)]

    def _spread(self, light: np.ndarray) -> np.ndarray:
        light = np.ascontiguousarray(light, np.float32)
        if self._kernel is None:
            return _separable_spread(self._a_rows, light, self._a_cols_t, self._col_start, self._col_stop,
                                     np.empty(self.work_shape, np.float32))
        h, w = self.work_shape
        impulses = np.zeros(h * w, np.float32)
        for idx, wt in self._splat:
            np.add.at(impulses, idx, wt * light.ravel())
        return cv2.filter2D(impulses.reshape(h, w), -1, cv2.flip(self._kernel, -1), borderType=cv2.BORDER_CONSTANT)

    def forward(self, light: np.ndarray) -> np.ndarray:
        """Zone light fractions (rows, cols) in [0, 1] -> backlight (work_shape) in cd/m^2."""
        light = np.asarray(light, np.float32)
        if light.shape != (self.layout.rows, self.layout.cols):
            raise ValueError(f"zone light of shape {light.shape} does not match the layout "
                             f"{(self.layout.rows, self.layout.cols)}")
        if not np.isfinite(light).all():
            raise ValueError(f"zone light has {int(np.count_nonzero(~np.isfinite(light)))} non-finite values of "
                             f"{light.size}: no backlight to simulate")
        return self._spread(light) * self.gain

    def adjoint(self, grad_backlight: np.ndarray) -> np.ndarray:
        """Adjoint of ``forward``: d(objective)/d(light) from d(objective)/d(backlight) at work resolution."""
        g = np.asarray(grad_backlight, np.float32) * self.gain
        if self._kernel is None:
            return self._a_rows.T @ g @ self._a_cols
        corr = cv2.filter2D(g, -1, self._kernel, borderType=cv2.BORDER_CONSTANT).ravel()
        out = np.zeros(self.layout.zones, np.float32)
        for idx, wt in self._splat:
            out += wt * corr[idx]
        return out.reshape(self.layout.rows, self.layout.cols)

    def full_resolution(self, backlight_work: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Interpolate a working-resolution backlight to the panel (``upsample_backlight``)."""
        return upsample_backlight(backlight_work, self.layout.height_px, self.layout.width_px, out=out)

    def simulate(self, light: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Zone light -> full-resolution backlight (H, W) float32 in cd/m^2."""
        return self.full_resolution(self.forward(light), out=out)

    def reference_backlight(self, light: np.ndarray) -> np.ndarray:
        """Full-resolution backlight by direct summation of every LED's Gaussian PSF (slow; for tests)."""
        lay = self.layout
        if lay.psf_model != "gaussian":
            raise ValueError("the direct reference exists for the Gaussian PSF only")
        pitch_y, pitch_x = lay.pitch_px
        cy = (np.arange(lay.rows) + 0.5) * pitch_y - 0.5
        cx = (np.arange(lay.cols) + 0.5) * pitch_x - 0.5
        a_r = np.exp(-0.5 * ((np.arange(lay.height_px)[:, None] - cy) / (lay.psf_sigma_pitch * pitch_y)) ** 2)
        a_c = np.exp(-0.5 * ((np.arange(lay.width_px)[:, None] - cx) / (lay.psf_sigma_pitch * pitch_x)) ** 2)
        b = a_r @ np.asarray(light, np.float64) @ a_c.T
        full_on = a_r @ np.ones((lay.rows, lay.cols)) @ a_c.T
        return (b * lay.peak_luminance_cd_m2 / full_on[lay.height_px // 2, lay.width_px // 2]).astype(np.float32)
