"""Sub-pixel translation registration of two images (numpy + scipy only, no I/O).

Method
------
1. Each image is converted to float32, its (window-weighted) mean is subtracted and it is
   multiplied by a 2-D Hann window, so that non-periodic content does not correlate through the
   wrap-around edges of the FFT.
2. Both ``rfft2`` spectra are multiplied by a difference-of-Gaussians band-pass
   ``H(k) = exp(-2 pi^2 s_lo^2 k^2) - exp(-2 pi^2 s_hi^2 k^2)`` (``k`` in cycles/px). The
   cross-power spectrum is **not** phase-whitened: whitening amplifies shot noise (measured for
   the project on 768x512 Poisson images at 50 counts/px: 0.5 px RMS for skimage's phase
   correlation, 0.03 px for a band-passed cross-correlation with a parabolic peak fit).
3. Only the frequencies ``|k| < 1/(2 d)`` cycles/px, above which the low-pass makes the spectra
   negligible, are kept (``d = 2`` for the default ``s_lo = 2`` px): the column FFT is computed
   for the kept columns only and all spectral arithmetic runs on a quarter of the spectrum.
   The coarse peak is the maximum of the correlation on a grid ``d`` times coarser than the
   image, inverse-transformed from the kept frequencies.
4. Refinement by local DFTs (Guizar-Sicairos, Thurman & Fienup, *Opt. Lett.* 33:156, 2008):
   the exact correlation is evaluated on a 5x5 grid of integer lags around the coarse peak (the
   integer peak), then on a 5x5 grid of ``1/upsample`` px around the parabolic estimate; a
   3-point parabola through the finest grid gives the result. With ``upsample <= 1`` the
   parabola through the integer lags is the result.
5. Before each fit the correlation is divided by the autocorrelation of the window (the
   "overlap envelope"): without it the falling envelope pulls large shifts towards zero by a
   few hundredths of a pixel.

Windows, band-pass filters and frequency grids are cached per image shape.

Sign conventions: ``dx`` is positive when the content of ``moving`` is displaced towards larger
column indices (right); ``dy`` is positive when it is displaced towards *smaller* row indices
(up), the "+y up" image convention. If ``moving`` is ``reference`` with its content moved by +3
columns and -2 rows, ``register(reference, moving)`` returns ``dx=+3, dy=+2``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import scipy.fft as sfft

__all__ = ["DEFAULT_BANDPASS", "Registration", "RegistrationError", "register"]

#: Default difference-of-Gaussians band-pass ``(sigma_lo, sigma_hi)``, in pixels. ``sigma_lo``
#: suppresses pixel-scale shot noise; ``sigma_hi`` suppresses illumination gradients and makes
#: the chance correlation of unrelated images small.
DEFAULT_BANDPASS: tuple[float, float] = (2.0, 32.0)

#: Chance level of the score, as a t-statistic (~ units of the RMS of the normalised correlation
#: surface). The maximum over all shifts of unrelated textures reached 3.5-7.5 RMS in tests
#: (768x512 to 1536x1024), so 8 puts unrelated images at a score of ~0.
_CHANCE_SIGMAS = 8.0

#: The coarse grid may drop frequencies where the squared low-pass is below ``exp(-6.9)``
#: ~ 1e-3, i.e. ``k > 0.418 / sigma_lo`` cycles/px.
_LOWPASS_CUT = 0.418

#: Complex multiply-adds per BLAS call in the local DFT: OpenBLAS ran products of 6.5e4 on one
#: thread, of 1.3e5 sometimes on two (measured, numpy's bundled OpenBLAS 0.3).
_GEMM_CHUNK = 32768

_Envelope = Callable[[np.ndarray, np.ndarray], np.ndarray]


class RegistrationError(ValueError):
    """Raised when two images cannot be registered.

    The message names the problem: non-2-D input, different shapes, NaN/inf values, a constant
    image, an invalid mask or band-pass.
    """


@dataclass(frozen=True)
class Registration:
    """Result of :func:`register`.

    Attributes
    ----------
    dx : float
        Shift of ``moving`` relative to ``reference`` along the columns, in pixels; positive
        when the content moved towards larger column indices (right).
    dy : float
        Shift along the rows, in pixels; positive when the content moved towards *smaller* row
        indices (up), the "+y up" image convention.
    score : float
        Match quality in [0, 1]: the chance-corrected normalised cross-correlation
        ``(ncc - c0) / (1 - c0)``, clipped to [0, 1]. ``c0`` is the correlation that unrelated
        images reach by chance: ``rms``, the RMS of the normalised correlation surface over all
        shifts (computed from the two spectra by Parseval), is the standard deviation of the
        correlation of unrelated images with the same power spectra, i.e. they have
        ``n = 1 / rms**2`` effective independent samples; ``c0`` is the correlation whose
        t-statistic ``r sqrt(n - 2) / sqrt(1 - r**2)`` is 8, which is ``~8 rms`` for large
        images (the maximum over all shifts of unrelated textures reached 3.5-7.5 rms in
        tests). About 1 for a match (0.99 at 50 counts/px, 0.9 at 5 counts/px on sample-like
        768x512 textures) and about 0 for unrelated images. Small images with only coarse
        structure have few effective samples, a higher ``c0`` and honestly score lower for the
        same ``ncc``.
    ncc : float
        The normalised cross-correlation at the peak, in [-1, 1]: the correlation of the
        band-passed, windowed images at the measured shift divided by the product of their
        norms. Noise lowers it as ``S / (S + N)`` of the band-passed energies, and so does the
        loss of overlap at large shifts (by ~3 % at 30 px in 768x512). For unrelated images it
        is the largest chance correlation over all shifts (0.1-0.25 at 768x512 with the default
        band-pass), so prefer ``score`` to gate on.
    """

    dx: float
    dy: float
    score: float
    ncc: float = float("nan")

    def shift_m(self, pixel_size: float) -> tuple[float, float]:
        """Return the shift in metres.

        Parameters
        ----------
        pixel_size : float
            Pixel size in metres per pixel (square pixels).

        Returns
        -------
        tuple of float
            ``(dx * pixel_size, dy * pixel_size)`` in metres, with the same signs as ``dx`` and
            ``dy`` (+x right, +y up).
        """
        return (self.dx * pixel_size, self.dy * pixel_size)


# ---------------------------------------------------------------------------------------------
# cached per-shape helpers


@lru_cache(maxsize=8)
def _window_2d(shape: tuple[int, int]) -> np.ndarray:
    """Separable periodic 2-D Hann window ``sin^2(pi i / n)``, float32, read-only."""
    wy, wx = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n) / n) for n in shape)
    w = np.outer(wy, wx).astype(np.float32)
    w.flags.writeable = False
    return w


@dataclass(frozen=True, eq=False)  # hashed by identity: one cached instance per shape
class _Grid:
    """The kept part of the ``rfft2`` grid of an image of ``shape``: ``|k| < 1/(2 d)``.

    Rows are the row frequencies ``ky`` (integers, cycles per image: ``0 .. npos-1`` then
    ``-nneg .. -1``), columns the column frequencies ``0 .. ncol-1``. ``wts`` are the Parseval
    multiplicities of the kept columns in the full spectrum. ``coarse`` is the shape of the
    correlation sampled every ``d`` px; the kept frequencies are exactly its ``rfft2`` grid.
    """

    shape: tuple[int, int]
    coarse: tuple[int, int]
    npos: int
    nneg: int
    ncol: int
    ky: np.ndarray
    wts: np.ndarray

    def crop(self, spec: np.ndarray) -> np.ndarray:
        """Kept rows and columns of a full ``rfft2``-layout array (copy)."""
        ny = self.shape[0]
        if self.coarse == self.shape:
            return np.array(spec)
        return np.concatenate((spec[: self.npos, : self.ncol], spec[ny - self.nneg :, : self.ncol]))

    def rfft2(self, a: np.ndarray) -> np.ndarray:
        """``rfft2`` of the real image ``a`` on the kept frequencies only (complex64).

        The column transform runs over the kept columns only.
        """
        rows = sfft.rfft(a, axis=1, workers=-1)
        if self.coarse != self.shape:
            rows = np.ascontiguousarray(rows[:, : self.ncol])
        spec = sfft.fft(rows, axis=0, workers=-1, overwrite_x=True)
        if self.coarse == self.shape:
            return spec
        ny = self.shape[0]
        return np.concatenate((spec[: self.npos], spec[ny - self.nneg :]))

    def energy(self, spec: np.ndarray) -> float:
        """``sum_x a(x)**2`` of the real image whose kept spectrum is ``spec`` (Parseval)."""
        # einsum, not BLAS (vdot): BLAS threads wake up slowly right after the FFTs
        v: np.ndarray = spec.view(np.float32 if spec.dtype == np.complex64 else np.float64)
        total = 2.0 * float(np.einsum("ij,ij->", v, v))
        for col in np.flatnonzero(self.wts == 1.0):  # DC (and Nyquist) columns count once
            c = v[:, 2 * col : 2 * col + 2]
            total -= float(np.einsum("ij,ij->", c, c))
        return total / (self.shape[0] * self.shape[1])


@lru_cache(maxsize=8)
def _grid(shape: tuple[int, int], d: int) -> _Grid:
    ny, nx = shape
    my, mx = (ny // d, nx // d) if d > 1 else shape
    npos, nneg = (my + 1) // 2, my // 2
    ncol = mx // 2 + 1
    ky = np.concatenate((np.arange(npos), np.arange(-nneg, 0))).astype(np.float64)
    wts = np.full(ncol, 2.0)
    wts[0] = 1.0
    if d == 1 and nx % 2 == 0:
        wts[-1] = 1.0  # the Nyquist column is only kept without decimation
    ky.flags.writeable = False
    wts.flags.writeable = False
    return _Grid(shape, (my, mx), npos, nneg, ncol, ky, wts)


def _decimation(bandpass: tuple[float, float] | None, shape: tuple[int, int]) -> int:
    """Coarse-grid factor ``d`` allowed by the low-pass (the spectra are ~0 above 1/(2d))."""
    if bandpass is None or bandpass[0] <= 0:
        return 1
    d = int(bandpass[0] / (2.0 * _LOWPASS_CUT))
    return max(1, min(d, 4, min(shape) // 32))


@lru_cache(maxsize=8)
def _bandpass_filter(grid: _Grid, sigma_lo: float, sigma_hi: float) -> np.ndarray:
    """Difference-of-Gaussians transfer function on the kept grid, float32, read-only.

    ``sigma_lo = 0`` means no low-pass; ``sigma_hi = 0`` or ``inf`` means no high-pass (only
    the mean is removed).
    """
    ky = grid.ky[:, None] / grid.shape[0]
    kx = np.arange(grid.ncol)[None, :] / grid.shape[1]
    k2 = ky * ky + kx * kx
    h = np.exp(-2.0 * np.pi**2 * sigma_lo**2 * k2) if sigma_lo > 0 else np.ones_like(k2)
    if 0 < sigma_hi < math.inf:
        h = h - np.exp(-2.0 * np.pi**2 * sigma_hi**2 * k2)
    h[0, 0] = 0.0
    h = h.astype(np.float32)
    h.flags.writeable = False
    return h


@lru_cache(maxsize=8)
def _weight_spectrum(grid: _Grid, window: bool) -> tuple[tuple, np.ndarray, float]:
    """Non-zero kept ``rfft2`` coefficients of the weighting (Hann window or ones).

    Returns ``(index, values, sum)``. The Hann window has 6 non-zero coefficients in the half
    spectrum (DC and +-1 cycle per image), ones only the DC; the weighted mean is removed
    through them in Fourier space instead of by an extra pass over the image.
    """
    n = grid.shape[0] * grid.shape[1]
    if not window:
        return (np.array([0]), np.array([0])), np.array([n], np.complex64), float(n)
    spec = grid.crop(sfft.rfft2(_window_2d(grid.shape).astype(np.float64)))
    index = np.nonzero(np.abs(spec) > 1e-9 * np.abs(spec[0, 0]))
    return index, spec[index].astype(np.complex64), float(spec[0, 0].real)


# ---------------------------------------------------------------------------------------------
# window overlap envelope


def _hann_envelope_1d(tau: np.ndarray, n: int) -> np.ndarray:
    """Linear autocorrelation of the 1-D Hann window at (fractional) lags ``tau`` (pixels).

    For ``w(x) = sin^2(pi x / n)`` the overlap integral is
    ``(L (1 + cos(phi) / 2) + 3 n sin(phi) / (4 pi)) / 4`` with ``L = n - |tau|`` and
    ``phi = 2 pi |tau| / n``; it equals the discrete sum to 1e-10.
    """
    t = np.abs(np.asarray(tau, dtype=np.float64))
    length = np.maximum(n - t, 0.0)
    phi = 2.0 * np.pi * t / n
    return 0.25 * (length * (1.0 + 0.5 * np.cos(phi)) + 0.75 * n / np.pi * np.sin(phi))


def _separable_envelope(shape: tuple[int, int], window: bool) -> _Envelope:
    """Envelope without a mask: the Hann overlap, or a constant for ``window=False``.

    Unwindowed registration is meant for periodic content, whose circular overlap does not
    depend on the lag.
    """

    def envelope(ty: np.ndarray, tx: np.ndarray) -> np.ndarray:
        if not window:
            return np.full((len(ty), len(tx)), float(shape[0] * shape[1]))
        return np.outer(_hann_envelope_1d(ty, shape[0]), _hann_envelope_1d(tx, shape[1]))

    return envelope


def _weight_envelope(g: np.ndarray, centre: tuple[int, int]) -> _Envelope:
    """Overlap envelope of an arbitrary weight image ``g`` near the integer lag ``centre``.

    The envelope varies on the scale of the image size, so it is evaluated exactly at the lag
    ``centre`` and its 4 neighbours and extended by a separable log-quadratic.
    """
    ny, nx = g.shape

    def overlap(dy: int, dx: int) -> float:
        a = g[max(0, -dy) : ny - max(0, dy), max(0, -dx) : nx - max(0, dx)]
        b = g[max(0, dy) : ny - max(0, -dy), max(0, dx) : nx - max(0, -dx)]
        return float(np.sum(a * b, dtype=np.float64))

    cy, cx = centre
    floor = 1e-12 * overlap(0, 0)
    lc = math.log(max(overlap(cy, cx), floor))
    ym, yp = (math.log(max(overlap(cy + d, cx), floor)) for d in (-1, 1))
    xm, xp = (math.log(max(overlap(cy, cx + d), floor)) for d in (-1, 1))

    def envelope(ty: np.ndarray, tx: np.ndarray) -> np.ndarray:
        uy = np.asarray(ty, dtype=np.float64) - cy
        ux = np.asarray(tx, dtype=np.float64) - cx
        log_y = 0.5 * (yp - ym) * uy + 0.5 * (yp + ym - 2.0 * lc) * uy**2
        log_x = 0.5 * (xp - xm) * ux + 0.5 * (xp + xm - 2.0 * lc) * ux**2
        return np.exp(lc + log_y[:, None] + log_x[None, :])

    return envelope


# ---------------------------------------------------------------------------------------------
# validation and spectra


def _as_image(img: np.ndarray, name: str) -> np.ndarray:
    arr = np.asarray(img)
    if arr.ndim != 2:
        raise RegistrationError(f"{name} must be a 2-D image, got {arr.ndim}-D shape {arr.shape}")
    if arr.shape[0] < 8 or arr.shape[1] < 8:
        raise RegistrationError(f"{name} is too small to register: shape {arr.shape}")
    if np.iscomplexobj(arr) or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise RegistrationError(f"{name} must be a real numeric image, got dtype {arr.dtype}")
    return arr


def _weighted_spectrum(
    img: np.ndarray, name: str, grid: _Grid, window: bool, weight: np.ndarray | None
) -> np.ndarray:
    """Kept ``rfft2`` coefficients (complex64) of ``(img - weighted mean) * weight``.

    ``weight`` is the mask times the Hann window (if ``window``), or ``None`` without a mask:
    then the weight is the window (or ones) and the mean is removed in Fourier space, so the
    image is read only by the min/max check and the conversion-and-multiply pass. NaN/inf are
    not checked here: they make the spectral energy non-finite, which :func:`register` then
    diagnoses.
    """
    lo, hi = img.min(), img.max()
    if lo == hi:
        raise RegistrationError(f"{name} is constant (all values {float(lo):g}): no structure")
    if weight is None:
        if window:
            a = np.multiply(img, _window_2d(grid.shape), dtype=np.float32)
        else:
            a = np.asarray(img, dtype=np.float32)
        spec = grid.rfft2(a)
        index, values, total = _weight_spectrum(grid, window)
        spec[index] -= np.complex64(spec[0, 0].real / total) * values
        return spec
    a = np.asarray(img, dtype=np.float32)
    mean = float(np.einsum("ij,ij->", a, weight)) / float(np.sum(weight, dtype=np.float64))
    return grid.rfft2((a - np.float32(mean)) * weight)


def _diagnose_non_finite(img: np.ndarray, name: str) -> None:
    """Raise the RegistrationError naming NaN or inf in ``img``."""
    if np.issubdtype(img.dtype, np.floating):
        if np.isnan(img).any():
            raise RegistrationError(f"{name} contains NaN values")
        if np.isinf(img).any():
            raise RegistrationError(f"{name} contains inf values")
    raise RegistrationError(f"{name} has values too large to register (overflow in float32)")


# ---------------------------------------------------------------------------------------------
# correlation peak


def _coarse_peak(xspec: np.ndarray, grid: _Grid) -> tuple[float, float]:
    """Lag (rows, cols) in pixels of the correlation maximum on the coarse grid.

    A 3-point parabola per axis on the coarse samples refines the lag.
    """
    (ny, nx), (my, mx) = grid.shape, grid.coarse
    corr = sfft.irfft2(xspec, s=(my, mx), workers=-1)
    j, i = np.unravel_index(int(np.argmax(corr)), corr.shape)
    oy = _parabolic_offset(corr[(j - 1) % my, i], corr[j, i], corr[(j + 1) % my, i])
    ox = _parabolic_offset(corr[j, (i - 1) % mx], corr[j, i], corr[j, (i + 1) % mx])
    jy = j - my if j > my // 2 else j
    ix = i - mx if i > mx // 2 else i
    return ((jy + oy) * ny / my, (ix + ox) * nx / mx)


def _correlation_at(xspec: np.ndarray, grid: _Grid, ty: np.ndarray, tx: np.ndarray) -> np.ndarray:
    """Full-resolution circular correlation at fractional lags ``ty`` x ``tx`` (pixels).

    Matrix-multiply DFT (Guizar-Sicairos et al. 2008) over the kept frequencies: real part of
    the half spectrum with each column weighted by its Parseval multiplicity.
    """
    ny, nx = grid.shape
    kx = np.arange(grid.ncol, dtype=np.float64)
    ey = np.exp(2j * np.pi * np.outer(ty, grid.ky) / ny).astype(np.complex64)
    ex = (np.exp(2j * np.pi * np.outer(kx, tx) / nx) * grid.wts[:, None]).astype(np.complex64)
    out = _single_thread_matmul(ey, xspec) @ ex
    return out.real.astype(np.float64) / (ny * nx)


def _single_thread_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` as a sum of products small enough for BLAS to run them on one thread.

    OpenBLAS splits larger GEMMs over threads. Right after the multi-threaded FFTs, waiting
    for those threads cost 15 ms (median, 2 busy cores) for a product that takes 0.5 ms on
    one thread.
    """
    step = max(1, _GEMM_CHUNK // (a.shape[0] * b.shape[1]))
    out = a[:, :step] @ b[:step]
    for k in range(step, b.shape[0], step):
        out += a[:, k : k + step] @ b[k : k + step]
    return out


def _parabolic_offset(cm: float, c0: float, cp: float) -> float:
    """Vertex of the parabola through (-1, cm), (0, c0), (1, cp), clipped to [-0.5, 0.5]."""
    den = cm - 2.0 * c0 + cp
    if not den < 0.0:  # flat or not a maximum: keep the sample
        return 0.0
    return float(np.clip(0.5 * (cm - cp) / den, -0.5, 0.5))


def _refine(
    xspec: np.ndarray,
    grid: _Grid,
    centre: tuple[float, float],
    step: float,
    envelope: _Envelope,
    half: int = 2,
) -> tuple[float, float, float]:
    """Local maximum of the envelope-corrected correlation on a grid of spacing ``step``.

    The ``(2 half + 1)``-square grid is re-centred while its maximum lies on the border (at
    most 4 times), then a 3-point parabola per axis gives the sub-step position. Returns
    ``(ty, tx, peak)``: lags in pixels and the corrected correlation at the grid maximum.
    """
    offs = np.arange(-half, half + 1, dtype=np.float64) * step
    cy, cx = centre
    for _ in range(5):
        ty, tx = cy + offs, cx + offs
        values = _correlation_at(xspec, grid, ty, tx) / envelope(ty, tx)
        gy, gx = (int(i) for i in np.unravel_index(int(np.argmax(values)), values.shape))
        if 0 < gy < 2 * half and 0 < gx < 2 * half:
            break
        cy, cx = float(ty[gy]), float(tx[gx])
    gy = min(max(gy, 1), 2 * half - 1)
    gx = min(max(gx, 1), 2 * half - 1)
    oy = _parabolic_offset(values[gy - 1, gx], values[gy, gx], values[gy + 1, gx])
    ox = _parabolic_offset(values[gy, gx - 1], values[gy, gx], values[gy, gx + 1])
    return float(ty[gy]) + oy * step, float(tx[gx]) + ox * step, float(values[gy, gx])


# ---------------------------------------------------------------------------------------------
# public API


def register(
    reference: np.ndarray,
    moving: np.ndarray,
    *,
    bandpass: tuple[float, float] | None = DEFAULT_BANDPASS,
    window: bool = True,
    mask: np.ndarray | None = None,
    upsample: int = 20,
) -> Registration:
    """Measure the translation of ``moving`` relative to ``reference`` to sub-pixel precision.

    Parameters
    ----------
    reference, moving : numpy.ndarray
        2-D images of the same shape, at least 8x8, any real dtype. Must be finite and not
        constant.
    bandpass : (float, float) or None, optional
        ``(sigma_lo, sigma_hi)`` of the difference-of-Gaussians band-pass, in pixels (default
        ``(2.0, 32.0)``). Structure finer than ``sigma_lo`` (mostly shot noise) and coarser
        than ``sigma_hi`` (illumination gradients, charging) is suppressed. ``sigma_lo = 0``
        disables the low-pass; ``sigma_hi = 0`` or ``inf`` disables the high-pass. ``None``
        disables both (only the mean is removed; much worse at low dose).
    window : bool, optional
        Multiply both images by a 2-D Hann window before the FFT (default ``True``). Keep it on
        for real, non-periodic images; switch it off only for periodic content.
    mask : numpy.ndarray, optional
        Weights (bool or float >= 0) of the image shape, multiplied into the window of *both*
        images, like OpenFIBSEM's rectangular mask: pixels of weight 0 are ignored. The shift is
        still that of the whole frame. Because the mask stays fixed in both frames, hard mask
        edges pull the result slightly towards zero shift (~0.01 px); smooth edges (e.g. a
        Gaussian-blurred mask) avoid that.
    upsample : int, optional
        Sub-pixel refinement factor (default 20): the correlation is evaluated exactly on a grid
        of ``1 / upsample`` px spanning at least +-0.1 px around the peak and a parabola is
        fitted through it. ``upsample <= 1`` fits the parabola through the integer lags only
        (about 1 ms faster; bias up to ~0.03 px at high dose).

    Returns
    -------
    Registration
        ``dx``, ``dy`` in pixels (+x right, +y up), ``score`` in [0, 1] (chance-corrected
        normalised cross-correlation, ~1 for a match and ~0 for unrelated images) and ``ncc``.

    Raises
    ------
    RegistrationError
        If an image is not 2-D, the shapes differ, an image contains NaN or inf, an image is
        constant, or the mask or band-pass is invalid.

    Notes
    -----
    Shifts are found modulo the image size: a shift over half the image in one axis is
    reported as its wrapped (opposite-sign) equivalent. The overlap of the windowed images, and
    with it the precision, falls with the shift; keep shifts below ~1/4 of the image.

    Measured on sample-like textures with Poisson noise, shifts within +-30 px: median error
    0.044 px at 5 counts/px and 0.016 px at 50 counts/px (768x512); 0.023 and 0.007 px at
    1536x1024, in ~20-30 ms per call on 2 cores (``benchmarks/bench_registration.py``). Small
    images are less precise even without noise (~0.1 px median at 100x64 with the default
    band-pass, as the window leaves few independent texture samples).

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> scene = rng.random((300, 400))
    >>> ref = scene[50:250, 50:350]
    >>> mov = scene[52:252, 47:347]  # content moved 3 px right and 2 px up
    >>> r = register(ref, mov, bandpass=(1.0, 16.0))
    >>> round(r.dx, 2), round(r.dy, 2)
    (3.0, 2.0)
    """
    ref = _as_image(reference, "reference")
    mov = _as_image(moving, "moving")
    if ref.shape != mov.shape:
        raise RegistrationError(
            f"reference and moving must have the same shape, got {ref.shape} and {mov.shape}"
        )
    shape = (int(ref.shape[0]), int(ref.shape[1]))
    if bandpass is not None:
        try:
            sigma_lo, sigma_hi = (float(v) for v in bandpass)
        except (TypeError, ValueError) as exc:
            raise RegistrationError(
                f"bandpass must be (sigma_lo, sigma_hi), got {bandpass!r}"
            ) from exc
        if not (0 <= sigma_lo < math.inf and (sigma_hi == 0 or sigma_hi > sigma_lo)):
            raise RegistrationError(
                "bandpass must satisfy 0 <= sigma_lo < sigma_hi (or sigma_hi == 0), "
                f"got {bandpass!r}"
            )
        bandpass = (sigma_lo, sigma_hi)

    weight: np.ndarray | None = None  # full weight image; only built when there is a mask
    if mask is not None:
        m = np.asarray(mask)
        if m.shape != shape:
            raise RegistrationError(f"mask shape {m.shape} does not match the image shape {shape}")
        m = m.astype(np.float32)
        if not np.all(np.isfinite(m)) or m.min() < 0:
            raise RegistrationError("mask must contain finite, non-negative weights")
        if not m.max() > 0:
            raise RegistrationError("mask is empty (all weights are zero)")
        weight = m * _window_2d(shape) if window else m

    grid = _grid(shape, _decimation(bandpass, shape))
    # NaN/inf propagate silently here and are diagnosed from the spectral energy below
    with np.errstate(invalid="ignore", over="ignore"):
        fa = _weighted_spectrum(ref, "reference", grid, window, weight)
        fb = _weighted_spectrum(mov, "moving", grid, window, weight)
        if bandpass is not None:
            h = _bandpass_filter(grid, *bandpass)
            fa *= h
            fb *= h
        energy_a = grid.energy(fa)
        energy_b = grid.energy(fb)
    for img, name, energy in ((ref, "reference", energy_a), (mov, "moving", energy_b)):
        if not math.isfinite(energy):
            _diagnose_non_finite(img, name)
        if not energy > 0:
            raise RegistrationError(
                f"{name} has no structure in the band-pass {bandpass!r} (energy {energy:g})"
            )
    norm = math.sqrt(energy_a * energy_b)

    # c(t) = sum_x a(x) b(x + t) peaks at t = displacement of the content of `moving`
    xspec = np.conjugate(fa, out=fa)
    xspec *= fb
    # RMS of the normalised correlation over all lags (Parseval); DC is 0 so RMS = std
    rms = math.sqrt(grid.energy(xspec) / (shape[0] * shape[1])) / norm

    coarse = _coarse_peak(xspec, grid)
    centre = (round(coarse[0]), round(coarse[1]))
    if weight is not None:
        envelope = _weight_envelope(weight, centre)
    else:
        envelope = _separable_envelope(shape, window)

    ty, tx, peak = _refine(xspec, grid, centre, 1.0, envelope)
    if upsample is not None and int(upsample) > 1:
        # the integer-grid parabola is within ~0.1 px: cover +-0.1 px at the fine spacing
        step = 1.0 / int(upsample)
        start = (round(ty / step) * step, round(tx / step) * step)
        ty, tx, peak = _refine(
            xspec, grid, start, step, envelope, half=max(2, math.ceil(0.1 / step))
        )

    # Pearson correlation at the peak, without the envelope correction: dividing by the small
    # overlap at large lags would inflate chance peaks of unrelated images
    ncc = min(max(peak * float(envelope(np.array([ty]), np.array([tx]))[0, 0]) / norm, -1.0), 1.0)
    # correlation whose t-statistic r sqrt(n - 2) / sqrt(1 - r^2), with n = 1 / rms^2 effective
    # samples, is _CHANCE_SIGMAS; ~_CHANCE_SIGMAS * rms for large images, < 1 for small ones
    k = _CHANCE_SIGMAS
    chance = k * rms / math.sqrt(1.0 + (k * k - 2.0) * rms * rms)
    score = (ncc - chance) / (1.0 - chance)
    return Registration(dx=tx, dy=-ty, score=float(min(max(score, 0.0), 1.0)), ncc=float(ncc))
