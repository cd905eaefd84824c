"""Feature localisation helpers for alignment and coincidence (numpy + scipy only, no I/O).

* :func:`foreshorten` resamples an image about its centre row so that a (flat) sample seen in
  one beam looks as it would in another beam whose view compresses the sample's y by ``scale``
  (the electron -> ion cross-beam prediction).
* :func:`select_feature` finds the most textured spot of an image (a distinct feature to
  centre on).
* :func:`match_template` finds, by band-passed normalised cross-correlation, where a weighted
  template cut from one image lies in another, with the search restricted to a window of
  shifts (e.g. along the ion image's y only, where a height error displaces a feature).

Conventions as :func:`fibsem_ophyd.alignment.register`: shifts in pixels, ``dx`` positive to
the right (larger columns), ``dy`` positive **up** (smaller rows).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft
from scipy import ndimage

from .registration import RegistrationError

__all__ = ["Match", "foreshorten", "select_feature", "gaussian_weight", "match_template"]


@dataclass(frozen=True)
class Match:
    """Result of :func:`match_template`: shift (px, +x right, +y up) and the NCC ``score``."""

    dx: float
    dy: float
    score: float


def _check(img, name: str) -> np.ndarray:
    arr = np.asarray(img)
    if arr.ndim != 2 or arr.shape[0] < 8 or arr.shape[1] < 8:
        raise RegistrationError(f"{name} must be a 2-D image of at least 8x8, got {arr.shape}")
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise RegistrationError(f"{name} contains NaN or inf values")
    if arr.max() == arr.min():
        raise RegistrationError(f"{name} is constant (all values {float(arr.min()):g})")
    return arr


def foreshorten(image, scale: float) -> tuple[np.ndarray, np.ndarray]:
    """Resample ``image`` so its y axis is compressed by ``scale`` about the centre row.

    Returns ``(resampled, valid)``: float32 image and a 0/1 weight of the rows that come
    from inside the original frame. ``scale`` in (0, 1] compresses, > 1 stretches.
    """
    img = _check(image, "image")
    if not (math.isfinite(scale) and scale > 0.05):
        raise ValueError(f"foreshortening scale must be > 0.05, got {scale!r}")
    h, w = img.shape
    cy = (h - 1) / 2.0
    src = cy + (np.arange(h, dtype=np.float64) - cy) / scale
    valid = (src >= 0) & (src <= h - 1)
    rows = np.clip(src, 0, h - 1)
    r0 = np.floor(rows).astype(int)
    r1 = np.minimum(r0 + 1, h - 1)
    f = (rows - r0).astype(np.float32)[:, None]
    out = img[r0] * (1 - f) + img[r1] * f
    weight = np.zeros((h, w), np.float32)
    weight[valid] = 1.0
    return out.astype(np.float32), weight


def _bandpass(img: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return ndimage.gaussian_filter(img, lo) - ndimage.gaussian_filter(img, hi)


def select_feature(image, sigma: float = 6.0, region: float = 0.7,
                   bandpass: tuple[float, float] = (1.5, 8.0)) -> tuple[float, float, float]:
    """Most textured spot of ``image`` within the central ``region`` fraction of the frame.

    Returns ``(dx, dy, contrast)``: offset from the image centre in pixels (+x right, +y up)
    and the local band-passed energy relative to the image median (>> 1 for a distinct
    feature, ~1 for featureless texture).
    """
    img = _check(image, "image")
    bp = _bandpass(img, *bandpass)
    energy = ndimage.gaussian_filter(bp * bp, sigma)
    h, w = img.shape
    my, mx = int(h * (1 - region) / 2), int(w * (1 - region) / 2)
    inner = energy[my:h - my, mx:w - mx]
    r, c = np.unravel_index(int(np.argmax(inner)), inner.shape)
    r, c = r + my, c + mx
    med = float(np.median(energy)) or 1e-12
    return float(c - (w - 1) / 2), float((h - 1) / 2 - r), float(energy[r, c] / med)


def gaussian_weight(shape: tuple[int, int], sigma: tuple[float, float]) -> np.ndarray:
    """Gaussian weight centred on the image centre, ``sigma = (sx, sy)`` in pixels."""
    h, w = shape
    y = (np.arange(h) - (h - 1) / 2) / max(sigma[1], 1e-6)
    x = (np.arange(w) - (w - 1) / 2) / max(sigma[0], 1e-6)
    return np.outer(np.exp(-0.5 * y * y), np.exp(-0.5 * x * x)).astype(np.float32)


def _parabola(cm: float, c0: float, cp: float) -> float:
    den = cm - 2.0 * c0 + cp
    if not den < 0:
        return 0.0
    return float(np.clip(0.5 * (cm - cp) / den, -0.5, 0.5))


def match_template(reference, image, weight, *, max_dx: float, max_dy: float,
                   bandpass: tuple[float, float] = (1.0, 12.0)) -> Match:
    """Where the ``weight``-ed part of ``reference`` lies in ``image``.

    Both images are band-passed (difference of Gaussians ``bandpass`` px); the template is
    ``(reference - weighted mean) * weight``; the normalised cross-correlation with every
    template-sized neighbourhood of ``image`` is computed by FFT (zero-padded, no wrap) and
    its maximum is searched within ``|dx| <= max_dx``, ``|dy| <= max_dy`` pixels; a parabola
    through the neighbours gives the sub-pixel shift.

    Parameters
    ----------
    reference, image : array
        2-D images of the same shape (the reference already in ``image``'s geometry, e.g.
        through :func:`foreshorten`).
    weight : array
        Non-negative weights of the template (same shape), e.g. a :func:`gaussian_weight`
        times the valid mask of :func:`foreshorten`.
    max_dx, max_dy : float
        Search window, pixels.

    Returns
    -------
    Match
        ``dx``, ``dy`` (px, +y up) of the template content in ``image``; ``score`` the NCC
        at the peak (1 = identical up to brightness/contrast, ~0 unrelated).
    """
    ref = _check(reference, "reference")
    img = _check(image, "image")
    wgt = np.asarray(weight, dtype=np.float32)
    if ref.shape != img.shape or wgt.shape != img.shape:
        raise RegistrationError(
            f"reference, image and weight must have the same shape, got {ref.shape}, "
            f"{img.shape} and {wgt.shape}")
    if not np.all(np.isfinite(wgt)) or wgt.min() < 0 or not wgt.max() > 0:
        raise RegistrationError("weight must be finite, non-negative and not all zero")
    h, w = img.shape
    a = _bandpass(ref, *bandpass)
    b = _bandpass(img, *bandpass)
    wsum = float(wgt.sum())
    t = (a - float((a * wgt).sum()) / wsum) * wgt
    tnorm = math.sqrt(float((t * t / np.maximum(wgt, 1e-12)).sum()))
    if not tnorm > 0:
        raise RegistrationError("the template has no structure in the band-pass")
    shape = (2 * h, 2 * w)
    fft = sfft.rfft2
    ft = np.conj(fft(t, shape))
    fw = np.conj(fft(wgt, shape))
    fb, fb2 = fft(b, shape), fft(b * b, shape)
    irf = sfft.irfft2
    # c(s) = sum_x t(x) b(x + s): circular lags, negative ones at the end
    num = irf(ft * fb, shape)
    s1 = irf(fw * fb, shape)
    s2 = irf(fw * fb2, shape)
    var = np.maximum(s2 - s1 * s1 / wsum, 1e-12 * max(float(s2.max()), 1e-30))
    ncc = num / (tnorm * np.sqrt(var))
    mx, my = int(math.floor(max_dx)), int(math.floor(max_dy))
    mx, my = max(0, min(mx, w // 2)), max(0, min(my, h // 2))
    rows = np.r_[0:my + 1, shape[0] - my:shape[0]] if my > 0 else np.array([0])
    cols = np.r_[0:mx + 1, shape[1] - mx:shape[1]] if mx > 0 else np.array([0])
    sub = ncc[np.ix_(rows, cols)]
    i, j = np.unravel_index(int(np.argmax(sub)), sub.shape)
    r, c = int(rows[i]), int(cols[j])
    peak = float(ncc[r, c])
    oy = _parabola(ncc[(r - 1) % shape[0], c], peak, ncc[(r + 1) % shape[0], c])
    ox = _parabola(ncc[r, (c - 1) % shape[1]], peak, ncc[r, (c + 1) % shape[1]])
    lag_r = (r - shape[0] if r > shape[0] // 2 else r) + oy
    lag_c = (c - shape[1] if c > shape[1] // 2 else c) + ox
    return Match(dx=float(lag_c), dy=float(-lag_r), score=float(np.clip(peak, -1.0, 1.0)))
