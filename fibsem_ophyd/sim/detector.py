"""Shot noise and the detector transfer (brightness/contrast -> uint8).

Counts per pixel: ``lambda = (I tau / e) * yield * collection_efficiency`` with ``tau`` the dwell
times the line and frame integrations. The detector output is normalised by the expected count
level ``I tau / e * collection`` (an averaging amplifier: the grey level follows the yield, not
the dwell), so doubling the dwell keeps the mean grey level and lowers the noise by sqrt(2):

``grey = 255 * (brightness + gain(contrast) * (yield_estimate / reference - 1))``

with ``gain(c) = 0.25 * 10**(1.5 (c - 0.5))`` (PMT gain is roughly exponential in the control).
Noise: ``lambda + sqrt(F lambda) N(0, 1)`` (F the PMT excess-noise factor) where ``lambda >= 20``,
Poisson below; plus a small Gaussian read noise.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ._workers import for_row_blocks, start_row_blocks

__all__ = ["ELEMENTARY_CHARGE", "contrast_gain", "contrast_from_gain", "Exposure", "expose",
           "draw_frame", "autocontrast_settings"]

ELEMENTARY_CHARGE = 1.602176634e-19
_GAIN0 = 0.25
_GAIN_DECADES = 1.5
_POISSON_BELOW = 20.0


def contrast_gain(contrast: float) -> float:
    """Detector gain for the 0..1 contrast control (grey fraction per relative yield)."""
    return _GAIN0 * 10.0 ** (_GAIN_DECADES * (contrast - 0.5))


def contrast_from_gain(gain: float) -> float:
    """Inverse of :func:`contrast_gain`."""
    return 0.5 + math.log10(max(gain, 1e-12) / _GAIN0) / _GAIN_DECADES


@dataclass
class Exposure:
    """Per-pixel affine noise model of one (clean image, dose, detector) setting.

    ``grey = offset + scale * N(0,1)`` plus, at the ``low`` pixels, ``count_grey * Poisson``.
    """

    offset: np.ndarray
    scale: np.ndarray
    low_index: np.ndarray
    low_lambda: np.ndarray
    count_grey: float
    mean_counts: float


def expose(clean: np.ndarray, primaries: float, collection: float, brightness: float,
           contrast: float, reference: float, excess: float = 1.3,
           read_noise: float = 0.5) -> Exposure:
    """Build the noise model.

    Parameters
    ----------
    clean : ndarray
        Noise-free yield image (signal carriers per primary).
    primaries : float
        Primaries per pixel, ``I tau / e``.
    collection : float
        Detector collection efficiency (0..1].
    reference : float
        Yield that maps to mid-grey at brightness 0.5.
    excess : float
        PMT excess-noise factor F.
    read_noise : float
        Gaussian read noise, in counts.
    """
    f32 = np.float32
    a = contrast_gain(contrast)
    norm = max(primaries * collection, 1e-30)
    grey_per_count = 255.0 * a / (reference * norm)
    base = f32(255.0 * (brightness - a) + 0.5)
    # offset = grey of lambda = clean * norm; scale = grey of sqrt(F lambda + read^2), with
    # the constant factors folded so each map is one or two passes over the image
    offset = np.empty(clean.shape, dtype=f32)
    scale = np.empty(clean.shape, dtype=f32)
    lam_low = f32(_POISSON_BELOW / norm)
    low: dict[int, np.ndarray] = {}
    sums: dict[int, float] = {}

    def rows(r0: int, r1: int) -> None:
        c = clean[r0:r1]
        o = np.multiply(c, f32(norm * grey_per_count), out=offset[r0:r1])
        o += base
        sc = np.multiply(c, f32(excess * norm * grey_per_count**2), out=scale[r0:r1])
        sc += f32((read_noise * grey_per_count) ** 2)
        np.sqrt(sc, out=sc)
        sums[r0] = float(c.sum(dtype=np.float64))
        nz = np.zeros(0, dtype=np.intp)
        if c.size and c.min() < lam_low:           # Poisson pixels: lambda below the limit
            nz = np.flatnonzero((c < lam_low) & (c > 0))
            o.reshape(-1)[nz] = base
            sc.reshape(-1)[nz] = f32(grey_per_count * read_noise)
            nz += r0 * c.shape[1]
        low[r0] = nz

    for_row_blocks(rows, clean.shape[0] if clean.ndim else 0)
    idx = np.concatenate([low[r] for r in sorted(low)]) if low else np.zeros(0, dtype=np.intp)
    lam_idx = clean.reshape(-1)[idx].astype(np.float64) * norm
    return Exposure(offset, scale, idx, lam_idx, float(grey_per_count),
                    sum(sums.values()) / clean.size * norm if clean.size else 0.0)


class NoiseSource:
    """Standard-normal fields for the shot noise, drawn one frame ahead on a worker thread.

    The field of the next frame does not depend on the microscope state, so it is drawn while
    the caller does other work (numpy releases the GIL while it fills the array), as a real
    detector acquires while the control software does its bookkeeping. The sequence of draws
    depends only on the sequence of frame shapes, so frames stay deterministic from the seed:
    a prefetched field of the wrong shape is discarded, never reused.
    """

    def __init__(self, seed_sequence: np.random.SeedSequence):
        self._rng = np.random.default_rng(seed_sequence)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sim-noise")
        self._next = None  # (shape, future)

    def close(self) -> None:
        """End the drawing thread (a later :meth:`take` starts a new one)."""
        self._next = None
        self._pool.shutdown(wait=True)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sim-noise")

    def _draw(self, shape):
        return self._rng.standard_normal(shape, dtype=np.float32)

    def take(self, shape: tuple[int, ...]) -> np.ndarray:
        """A fresh N(0, 1) float32 field of ``shape``; starts drawing the next one."""
        field = None
        if self._next is not None:
            next_shape, fut = self._next
            prefetched = fut.result()
            if next_shape == shape:
                field = prefetched
        if field is None:
            field = self._draw(shape)
        self._next = (shape, self._pool.submit(self._draw, shape))
        return field


def draw_frame(exp: Exposure, rng: np.random.Generator,
               normal: np.ndarray | None = None) -> np.ndarray:
    """One noisy uint8 frame: a standard-normal field, one FMA, the Poisson pixels, clip.

    ``normal`` is a N(0, 1) float32 field of the frame's shape (consumed in place); drawn
    from ``rng`` when not given.
    """
    if normal is None:
        normal = rng.standard_normal(exp.offset.shape, dtype=np.float32)
    out = normal
    grey = np.empty(out.shape, dtype=np.uint8)

    def rows(r0: int, r1: int) -> None:
        o = out[r0:r1]
        o *= exp.scale[r0:r1]
        o += exp.offset[r0:r1]

    def finish(r0: int, r1: int) -> None:
        np.clip(out[r0:r1], 0.0, 255.0, out=out[r0:r1])
        grey[r0:r1] = out[r0:r1]

    n = out.shape[0] if out.ndim else 0
    wait = start_row_blocks(rows, n)
    counts = None
    if exp.low_index.size:                 # drawn here while the workers do the rest
        counts = rng.poisson(exp.low_lambda).astype(np.float32)
        counts *= np.float32(exp.count_grey)
    wait()
    if counts is not None:
        out.reshape(-1)[exp.low_index] += counts
    for_row_blocks(finish, n)
    return grey


def autocontrast_settings(clean: np.ndarray, primaries: float, collection: float,
                          reference: float, excess: float = 1.3) -> tuple[float, float]:
    """Vendor-style auto contrast/brightness: (brightness, contrast) that put the mean of the
    next frame at mid-grey and its 0.5-99.5 % range (noise included) within ~10-90 %."""
    sub = clean[:: max(1, clean.shape[0] // 256), :: max(1, clean.shape[1] // 256)]
    lo, hi = np.percentile(sub, [0.5, 99.5])
    mean = float(sub.mean())
    lam = max(float(np.median(sub)) * primaries * collection, 1e-9)
    noise = 2.5 * mean * math.sqrt(excess / lam) if lam > 0 else 0.0
    spread = max(float(hi - lo) + 2 * noise, 1e-6 * reference)
    gain = 0.8 * reference / spread
    contrast = min(max(contrast_from_gain(gain), 0.0), 1.0)
    gain = contrast_gain(contrast)
    brightness = 0.5 - gain * (mean / reference - 1.0)
    return min(max(brightness, 0.0), 1.0), contrast
