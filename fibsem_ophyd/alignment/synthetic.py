"""Synthetic image pairs with a known sub-pixel shift, for checking a registration.

Two views of one larger, periodic, band-limited "sample-like" texture (fine and coarse
grain, regions with edges, bright particles of three sizes, a 0.7 px probe blur); the moving
view is the texture shifted in Fourier space, which is exact for a periodic band-limited
image, so the true shift is known to machine precision. Both views then get Poisson noise at
a given mean dose. Used by the registration tests and ``benchmarks/bench_registration.py``;
handy for checking a registration method on one's own machine::

    rng = np.random.default_rng(0)
    ref, mov, dx, dy = noisy_pair(rng, (1024, 1536), counts=50)
    res = register(ref, mov)          # res.dx, res.dy ~ dx, dy
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import scipy.fft as sfft

__all__ = ["MARGIN", "periodic_blur", "smooth_noise", "sample_texture", "shifted_views",
           "noisy_pair"]

#: px of texture around each view: larger than the largest shift, FFT-friendly sizes
MARGIN = 64


@lru_cache(maxsize=32)
def _gaussian(shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Transfer function of a periodic Gaussian blur of ``sigma`` px on the rfft2 grid."""
    k2 = sfft.fftfreq(shape[0])[:, None] ** 2 + sfft.rfftfreq(shape[1])[None, :] ** 2
    return np.exp(-2.0 * np.pi**2 * sigma**2 * k2)


def periodic_blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of ``sigma`` px with periodic boundaries (in Fourier space)."""
    return sfft.irfft2(sfft.rfft2(img, workers=-1) * _gaussian(img.shape, sigma), s=img.shape)


def smooth_noise(shape: tuple[int, int], sigma: float, rng: np.random.Generator) -> np.ndarray:
    """Periodic Gaussian-filtered white noise (correlation ``sigma`` px), zero mean, unit
    variance."""
    half = (shape[0], shape[1] // 2 + 1)
    white = rng.standard_normal(half) + 1j * rng.standard_normal(half)
    field = sfft.irfft2(white * _gaussian(shape, sigma), s=shape, workers=-1)
    return (field - field.mean()) / field.std()


def sample_texture(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Periodic, band-limited sample-like image: positive, mean 1 (a relative yield)."""
    grain = 0.25 * smooth_noise(shape, 1.5, rng) + 0.25 * smooth_noise(shape, 8.0, rng)
    regions = periodic_blur((smooth_noise(shape, 30.0, rng) > 0).astype(float), 1.0)
    n = shape[0] * shape[1] // 9000
    particles = np.zeros((shape[0], shape[1] // 2 + 1), dtype=complex)
    for sigma in (2.0, 4.0, 7.0):
        deltas = np.zeros(shape)
        deltas[rng.integers(0, shape[0], n), rng.integers(0, shape[1], n)] = rng.uniform(1, 1.5, n)
        particles += sfft.rfft2(deltas, workers=-1) * _gaussian(shape, sigma) * 2 * np.pi * sigma**2
    img = 1.0 + grain + 0.5 * regions + sfft.irfft2(particles, s=shape, workers=-1)
    img = periodic_blur(np.clip(img, 0.05, None), 0.7)  # keeps the texture band-limited
    return img / img.mean()


def shifted_views(big: np.ndarray, shape: tuple[int, int], rows: float, cols: float,
                  margin: int = MARGIN) -> tuple[np.ndarray, np.ndarray]:
    """(reference, moving) crops of ``shape`` from ``big`` (``margin`` px inside its edge):
    ``moving`` shows the content moved by ``rows`` (down) and ``cols`` (right)."""
    ramp = np.exp(
        -2j * np.pi
        * (sfft.fftfreq(big.shape[0])[:, None] * rows + sfft.rfftfreq(big.shape[1])[None, :] * cols)
    )
    moved = sfft.irfft2(sfft.rfft2(big, workers=-1) * ramp, s=big.shape, workers=-1)
    crop = (slice(margin, margin + shape[0]), slice(margin, margin + shape[1]))
    return big[crop], np.clip(moved[crop], 0.0, None)


def noisy_pair(
    rng: np.random.Generator,
    shape: tuple[int, int],
    counts: float,
    big: np.ndarray | None = None,
    max_shift: float = 30.0,
    margin: int = MARGIN,
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Poisson views at ``counts`` mean counts/px and the true ``(dx, dy)`` of the content
    (px, +x right, +y up), uniform in ``+-max_shift``.

    ``big`` (the texture, ``shape`` plus ``margin`` on every side) is drawn if not given.
    """
    if big is None:
        big = sample_texture((shape[0] + 2 * margin, shape[1] + 2 * margin), rng)
    rows, cols = rng.uniform(-max_shift, max_shift, 2)
    ref, mov = shifted_views(big, shape, rows, cols, margin)
    return rng.poisson(counts * ref), rng.poisson(counts * mov), cols, -rows
