"""Image sharpness metrics and the peak fit of an autofocus sweep (numpy + scipy only, no I/O).

* :func:`variance`: grey-level variance (falls as blur smooths the texture).
* :func:`tenengrad`: OpenFIBSEM's Tenengrad: the Sobel gradient magnitude, thresholded at its
  mean + one standard deviation; the score is the mean squared magnitude of the pixels above the
  threshold (zero elsewhere), so flat, noisy regions add little.
* :func:`laplacian`: variance of the Laplacian (the high-pass energy).
* :func:`sharpness`: any of these by name, with an optional Gaussian pre-smoothing that takes
  the pixel-scale shot noise out of the score.
* :func:`fit_peak`: the maximum of a score-vs-working-distance sweep, refined by a parabola
  (``"parabola"``) or a Gaussian (``"gaussian"``: a parabola through the logarithms) through the
  best sample and its two neighbours.

Every metric is a float that is largest for the sharpest image of the same scene and setting;
values of different metrics or different scenes are not comparable.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

__all__ = ["METRICS", "PeakFit", "fit_peak", "laplacian", "sharpness", "tenengrad", "variance"]


def _image(image) -> np.ndarray:
    arr = np.asarray(image)
    if arr.ndim != 2 or arr.shape[0] < 3 or arr.shape[1] < 3:
        raise ValueError(f"image must be a 2-D array of at least 3x3, got shape {arr.shape}")
    arr = arr.astype(np.float32)
    if not np.all(np.isfinite(arr)):
        raise ValueError("image contains NaN or inf values")
    return arr


def variance(image) -> float:
    """Grey-level variance of ``image``."""
    return float(np.var(_image(image), dtype=np.float64))


def tenengrad(image) -> float:
    """Tenengrad sharpness: mean of the squared Sobel magnitude above mean + std of it."""
    img = _image(image)
    gx = ndimage.sobel(img, axis=1, mode="reflect")
    gy = ndimage.sobel(img, axis=0, mode="reflect")
    mag = np.hypot(gx, gy)
    inner = mag[1:-1, 1:-1]  # edge rows/columns are reflections
    thr = float(inner.mean()) + float(inner.std())
    return float(np.mean(np.where(inner > thr, inner * inner, 0.0), dtype=np.float64))


def laplacian(image) -> float:
    """Variance of the (3x3) Laplacian of ``image``."""
    lap = ndimage.laplace(_image(image), mode="reflect")
    return float(np.var(lap[1:-1, 1:-1], dtype=np.float64))


#: The metrics by name.
METRICS: dict[str, Callable[[np.ndarray], float]] = {
    "variance": variance,
    "tenengrad": tenengrad,
    "laplacian": laplacian,
}


def sharpness(image, metric: str = "tenengrad", smooth: float = 0.0) -> float:
    """Sharpness of ``image`` by ``metric`` (a name in :data:`METRICS`).

    Parameters
    ----------
    smooth : float
        Sigma (px) of a Gaussian applied first (0: none). About 1 px removes most of the
        shot-noise gradient energy while keeping the detail a focus sweep needs.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown sharpness metric {metric!r}; known: {sorted(METRICS)}")
    if not (math.isfinite(smooth) and smooth >= 0):
        raise ValueError(f"smooth must be a finite sigma >= 0 px, got {smooth!r}")
    img = _image(image)
    if smooth > 0:
        img = ndimage.gaussian_filter(img, smooth, mode="reflect")
    return METRICS[metric](img)


@dataclass(frozen=True)
class PeakFit:
    """Result of :func:`fit_peak`.

    Attributes
    ----------
    x : float
        Position of the fitted maximum (the sampled maximum when no fit applies).
    y : float
        Fitted (or sampled) score at ``x``.
    index : int
        Index of the best sample.
    at_edge : bool
        The best sample is the first or the last: the true maximum may lie outside the sweep.
    method : str
        "parabola", "gaussian", or "sample" (no fit: at the edge or a degenerate curvature).
    """

    x: float
    y: float
    index: int
    at_edge: bool
    method: str


def fit_peak(x: Sequence[float], y: Sequence[float], method: str = "gaussian",
             level: float | None = None) -> PeakFit:
    """Refine the maximum of ``y(x)`` by a fit around the best sample.

    Parameters
    ----------
    x : sequence of float
        Sample positions (e.g. working distances), strictly increasing or decreasing, >= 3.
    y : sequence of float
        Scores (finite; for ``"gaussian"`` they must be > 0, else the parabola is used).
    method : {"gaussian", "parabola"}
        Fit a parabola to ``y`` or to ``log(y)``.
    level : float, optional
        ``None``: the fit goes exactly through the best sample and its two neighbours. A
        fraction in [0, 1): least-squares fit over the contiguous samples around the best
        one whose score is at least ``min + level * (max - min)`` (never fewer than those
        three). A flat-topped curve (focus within the depth of field over several samples)
        is then centred by its flanks rather than by noise at the top.

    The result is kept within the samples used.

    Returns
    -------
    PeakFit
    """
    if method not in ("gaussian", "parabola"):
        raise ValueError(f"method must be 'gaussian' or 'parabola', got {method!r}")
    xs = np.asarray(x, dtype=float)
    ys = np.asarray(y, dtype=float)
    if xs.ndim != 1 or xs.shape != ys.shape or xs.size < 3:
        raise ValueError(f"x and y must be 1-D of the same length >= 3, got {xs.shape}, "
                         f"{ys.shape}")
    if not (np.all(np.isfinite(xs)) and np.all(np.isfinite(ys))):
        raise ValueError("x and y must be finite")
    d = np.diff(xs)
    if not (np.all(d > 0) or np.all(d < 0)):
        raise ValueError("x must be strictly monotonic")
    if level is not None and not (math.isfinite(level) and 0.0 <= level < 1.0):
        raise ValueError(f"level must be in [0, 1), got {level!r}")
    i = int(np.argmax(ys))
    if i == 0 or i == xs.size - 1:
        return PeakFit(float(xs[i]), float(ys[i]), i, True, "sample")
    a0, a1 = i - 1, i + 1
    if level is not None:
        floor = float(ys.min()) + level * float(ys.max() - ys.min())
        while a0 > 0 and ys[a0 - 1] >= floor:
            a0 -= 1
        while a1 < xs.size - 1 and ys[a1 + 1] >= floor:
            a1 += 1
    x3, y3 = xs[a0:a1 + 1], ys[a0:a1 + 1]
    used = method
    if method == "gaussian":
        if np.all(y3 > 0):
            y3 = np.log(y3)
        else:
            used = "parabola"
    x0 = xs[i]
    a, b, c = np.polyfit(x3 - x0, y3, 2)
    if not a < 0:
        return PeakFit(float(xs[i]), float(ys[i]), i, False, "sample")
    t = -b / (2 * a)
    lo, hi = sorted((x3[0] - x0, x3[-1] - x0))
    t = float(np.clip(t, lo, hi))
    val = a * t * t + b * t + c
    if used == "gaussian":
        val = math.exp(val)
    return PeakFit(float(x0 + t), float(val), i, False, used)
