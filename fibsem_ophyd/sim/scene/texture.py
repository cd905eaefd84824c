"""Band-limited relief (waviness, texture): plane-wave sums at points or as raster factors."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .raster_grid import RasterGrid

__all__ = ["Waves", "make_waves", "wave_factors", "waves_at"]


def wrap_phase(p: np.ndarray) -> np.ndarray:
    """Phases (rad, float64) reduced to [0, 2 pi) and rounded to float32."""
    two_pi = 2 * math.pi
    k = np.multiply(p, 1.0 / two_pi)
    np.floor(k, out=k)
    k *= two_pi
    return np.subtract(p, k, out=k).astype(np.float32)


@dataclass(frozen=True)
class Waves:
    """Plane waves ``amp sin(kx x + ky y + phase)`` (wave numbers rad/m, amplitudes m)."""

    kx: np.ndarray
    ky: np.ndarray
    phase: np.ndarray
    amp: np.ndarray

    @property
    def bound(self) -> float:
        """Practical bound of the field: 4.5 rms (or the hard sum of amplitudes if lower)."""
        rms = math.sqrt(float(np.sum(self.amp**2)) / 2)
        return min(float(np.abs(self.amp).sum()), 4.5 * rms)


def make_waves(rng: np.random.Generator, lo: float, hi: float, per_octave: int, amp_fn) -> Waves:
    n_oct = max(1, int(round(math.log2(hi / lo))))
    n = n_oct * per_octave
    # stratified log-spaced wavelengths so every octave is represented evenly
    strata = (np.arange(n) + rng.random(n)) / n
    lam = lo * (hi / lo) ** strata
    # orientations evenly spread within each octave (a random permutation of strata), so
    # every band is isotropic instead of a few dominant ripples
    q = np.arange(n) % per_octave
    theta = np.empty(n)
    for o in range(n_oct):
        sl = slice(o * per_octave, (o + 1) * per_octave)
        theta[sl] = (rng.permutation(q[sl]) + rng.random(per_octave)) * (math.pi / per_octave)
    k = 2 * math.pi / lam
    return Waves(k * np.cos(theta), k * np.sin(theta), rng.random(n) * 2 * math.pi, amp_fn(lam, n))


def taper(waves: Waves, steps: list[np.ndarray]) -> np.ndarray:
    """Anti-aliasing weight per wave: 1 below pi/2 phase per node, 0 at Nyquist."""
    worst = np.zeros_like(waves.amp)
    for st in steps:
        worst = np.maximum(worst, np.abs(st))
    return np.clip(2.0 - worst / (math.pi / 2), 0.0, 1.0)


def wave_factors(waves: Waves, grid: RasterGrid):
    """The waves on an affine grid as two float32 factors ``(left (nj, 2K), right (2K, ni))``
    whose product is the field (``sin(a + b) = sin a cos b + cos a sin b``); ``None`` when
    every wave is finer than the grid resolves."""
    ox, oy = grid.origin
    b = waves.kx * grid.di[0] + waves.ky * grid.di[1]      # phase step per column
    g = waves.kx * grid.dj[0] + waves.ky * grid.dj[1]      # phase step per row
    amp = waves.amp * taper(waves, [b, g])
    keep = amp != 0
    if not keep.any():
        return None
    amp, b, g = amp[keep], b[keep], g[keep]
    alpha = np.mod(waves.kx[keep] * ox + waves.ky[keep] * oy + waves.phase[keep], 2 * math.pi)
    ii = np.arange(grid.ni)
    jj = np.arange(grid.nj)
    # phases reduced to [0, 2 pi) in float64, their sines and cosines in float32
    pc = wrap_phase(alpha[:, None] + b[:, None] * ii[None, :])          # (K, ni)
    pr = wrap_phase(g[None, :] * jj[:, None])                          # (nj, K)
    # sin(pc + pr) = sin(pc) cos(pr) + cos(pc) sin(pr)
    k = len(amp)
    a32 = amp.astype(np.float32)
    left = np.empty((grid.nj, 2 * k), dtype=np.float32)
    np.multiply(np.cos(pr), a32, out=left[:, :k])
    np.multiply(np.sin(pr), a32, out=left[:, k:])
    right = np.empty((2 * k, grid.ni), dtype=np.float32)
    np.sin(pc, out=right[:k])
    np.cos(pc, out=right[k:])
    return left, right


def waves_at(waves: Waves, x: np.ndarray, y: np.ndarray, spacing: float | None):
    amp = waves.amp
    if spacing is not None:
        k = np.hypot(waves.kx, waves.ky)
        amp = amp * np.clip(2.0 - k * spacing / (math.pi / 2), 0.0, 1.0)
    out = np.zeros(x.shape, dtype=np.float64)
    xf, yf, of = x.ravel(), y.ravel(), out.reshape(-1)
    for s in range(0, xf.size, 4096):
        ph = np.outer(xf[s:s + 4096], waves.kx) + np.outer(yf[s:s + 4096], waves.ky)
        of[s:s + 4096] = np.sin(ph + waves.phase) @ amp
    return out
