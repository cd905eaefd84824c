"""Probe optics: spot size, defocus and astigmatism as an image-space blur, and the blur itself."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft

from ..geometry import ELECTRON

__all__ = ["Optics", "beam_optics", "spot_size", "gaussian_blur", "ALPHA", "STIGMATION_DEFOCUS"]

_WORKERS = 2
#: probe semi-angle (rad) per beam
ALPHA = {"electron": 5e-3, "ion": 1e-3}
#: m of astigmatic focal difference per unit of stigmator
STIGMATION_DEFOCUS = 10e-6


def spot_size(beam: str, current: float, voltage: float) -> float:
    """Probe diameter (m): SEM a few nm; Ga ~ I^0.45 (3 nm @ 1 pA, 60 nm @ 1 nA)."""
    if beam == ELECTRON:
        return 2e-9 * (current / 5e-11) ** 0.4 * math.sqrt(2000.0 / voltage)
    return 8e-9 * (current / 1e-11) ** 0.45 * math.sqrt(30000.0 / voltage)


@dataclass(frozen=True)
class Optics:
    """Image-space blur of one frame: Gaussian sigma (px) plus an astigmatic extra sigma (px)
    along ``astig_angle`` (rad, image frame)."""

    sigma: float = 0.0
    astig_sigma: float = 0.0
    astig_angle: float = 0.0

    def covariance(self) -> np.ndarray:
        """2x2 covariance (px^2) in image (col, row) axes."""
        c, s = math.cos(self.astig_angle), -math.sin(self.astig_angle)   # row axis points down
        n = np.array([c, s])
        return self.sigma**2 * np.eye(2) + self.astig_sigma**2 * np.outer(n, n)

    @property
    def max_sigma(self) -> float:
        return math.hypot(self.sigma, self.astig_sigma)


def beam_optics(settings, view, focus_wd: float) -> Optics:
    """Blur of a frame of ``view`` for the beam ``settings`` (``working_distance`` m,
    ``current`` A, ``voltage`` V, ``stigmation``) when ``focus_wd`` (m) is in focus: the spot
    widened by the defocus cone (semi-angle :data:`ALPHA`) and the stigmators' astigmatism."""
    beam = view.beam
    defocus = settings["working_distance"] - focus_wd
    alpha = ALPHA[beam]
    d0 = spot_size(beam, settings["current"], settings["voltage"])
    d = math.hypot(d0, 2 * alpha * defocus)
    sigma = d / (2.355 * view.pixel)
    sx, sy = settings["stigmation"]
    mag = math.hypot(sx, sy)
    astig = 2 * alpha * STIGMATION_DEFOCUS * mag / (2.355 * view.pixel)
    return Optics(sigma, astig, 0.5 * math.atan2(sy, sx) if mag else 0.0)


def _kernel(sigma: float) -> np.ndarray:
    r = max(1, int(math.ceil(3.0 * sigma)))
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).astype(np.float32)


def _blur_axis(a: np.ndarray, sigma: float, axis: int) -> np.ndarray:
    """Direct separable Gaussian along one axis with edge replication (small sigma)."""
    k = _kernel(sigma)
    r = len(k) // 2
    pad = [(0, 0), (0, 0)]
    pad[axis] = (r, r)
    p = np.pad(a, pad, mode="edge")
    n = a.shape[axis]
    out = np.empty_like(a)
    sl = [slice(None), slice(None)]
    sl[axis] = slice(0, n)
    np.multiply(p[tuple(sl)], k[0], out=out)
    for t in range(1, len(k)):
        sl[axis] = slice(t, t + n)
        out += k[t] * p[tuple(sl)]
    return out


def gaussian_blur(a: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """Gaussian blur of a float32 image with covariance ``cov`` (px^2, (col, row) axes).

    Separable direct convolution for small axis-aligned kernels; otherwise a periodic FFT
    (callers keep a margin of >= 3 sigma so the wrap-around stays outside the frame).
    """
    sc = math.sqrt(max(cov[0, 0], 0.0))
    sr = math.sqrt(max(cov[1, 1], 0.0))
    if abs(cov[0, 1]) < 1e-6 * (cov[0, 0] + cov[1, 1] + 1e-12) and max(sc, sr) <= 2.0:
        out = a
        if sc >= 0.3:
            out = _blur_axis(out, sc, 1)
        if sr >= 0.3:
            out = _blur_axis(out, sr, 0)
        return out if out is not a else a.copy()
    ny, nx = a.shape
    fy = sfft.fftfreq(ny).astype(np.float32)[:, None]
    fx = sfft.rfftfreq(nx).astype(np.float32)[None, :]
    c = np.float32(-2 * math.pi**2)
    tf = np.exp(c * (np.float32(cov[1, 1]) * fy * fy + np.float32(cov[0, 0]) * fx * fx
                     + np.float32(2 * cov[0, 1]) * fx * fy))
    spec = sfft.rfft2(a, workers=_WORKERS)
    spec *= tf
    return sfft.irfft2(spec, s=a.shape, workers=_WORKERS).astype(np.float32, copy=False)
