"""Grid squares in an overview mosaic, as candidate lamella sites (numpy + scipy only).

On an SEM overview of a grid the bars (metal) are brighter than the film in the squares. The
mosaic is smoothed (3 um) and split at Otsu's threshold; each connected dark region is a
square. A square is *complete* when it does not touch the mosaic's edge or its blank border;
its grey level is the median of its interior (eroded by ``margin``); squares much darker
than the typical square (below ``bare_fraction`` of the median of the complete squares) are
taken as bare or broken film (no ice: on a 2 kV SEM image carbon film gives fewer secondary
electrons than vitreous ice). This needs most squares to hold ice, as on a usable grid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import ndimage

__all__ = ["Square", "find_squares", "otsu_threshold"]


@dataclass(frozen=True)
class Square:
    """One grid square of a mosaic: centroid (``col``, ``row``, px), ``size`` (m, the side of
    a square of its area), interior ``grey`` (median) and ``roughness`` (standard deviation),
    ``complete`` (wholly inside the mosaic), ``bare`` (darker than the ice squares)."""

    col: float
    row: float
    size: float
    grey: float
    roughness: float
    complete: bool
    bare: bool


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` (the grey level that best splits them in two)."""
    v = np.asarray(values, dtype=float).ravel()
    if v.size < 2 or v.max() == v.min():
        raise ValueError("Otsu's threshold needs values that are not all equal")
    hist, edges = np.histogram(v, bins)
    centres = 0.5 * (edges[:-1] + edges[1:])
    w = np.cumsum(hist).astype(float)
    mu = np.cumsum(hist * centres)
    total, mean_total = w[-1], mu[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        between = (mean_total * w - mu * total) ** 2 / (w * (total - w))
    between[~np.isfinite(between)] = -1.0
    return float(centres[int(np.argmax(between))])


def find_squares(mosaic, pixel_size: float, min_size: float = 40e-6, margin: float = 10e-6,
                 bare_fraction: float = 0.9, smooth: float = 3e-6) -> list[Square]:
    """The grid squares of an SEM overview ``mosaic`` (module docstring).

    Parameters
    ----------
    mosaic : array
        2-D grey levels; exact zeros are blank (outside the tiles).
    pixel_size : float
        Mosaic pixel, m.
    min_size : float
        Squares smaller than this (m, side of the equal-area square) are ignored.
    margin : float
        How far (m) inside a square its interior statistics start.
    bare_fraction : float
        A complete square darker than this fraction of the complete squares' median grey
        level is bare film.
    smooth : float
        Gaussian smoothing (m) before the bars/squares split.
    """
    img = np.asarray(mosaic, dtype=np.float32)
    if img.ndim != 2 or min(img.shape) < 16:
        raise ValueError(f"mosaic must be a 2-D image of at least 16x16, got {img.shape}")
    if not (math.isfinite(pixel_size) and pixel_size > 0):
        raise ValueError(f"pixel_size must be > 0 m, got {pixel_size!r}")
    if not 0 < bare_fraction <= 1:
        raise ValueError(f"bare_fraction must be in (0, 1], got {bare_fraction!r}")
    valid = img != 0
    if valid.sum() < 16:
        raise ValueError("the mosaic is blank")
    sm = ndimage.gaussian_filter(img, smooth / pixel_size)
    bars = (sm > otsu_threshold(sm[valid])) | ~valid
    labels, _ = ndimage.label(~bars)
    # what touches the mosaic's edge or blank border is cut off by it
    edge = ndimage.binary_dilation(~valid, iterations=2)
    edge[0, :] = edge[-1, :] = edge[:, 0] = edge[:, -1] = True
    cut = set(np.unique(labels[edge & (labels > 0)]).tolist())
    erode = max(1, int(round(margin / pixel_size)))
    found: list[dict[str, Any]] = []
    for k, sl in enumerate(ndimage.find_objects(labels), 1):
        if sl is None:
            continue
        mask = labels[sl] == k
        size = math.sqrt(float(mask.sum())) * pixel_size
        if size < min_size:
            continue
        inner = ndimage.binary_erosion(mask, iterations=erode)
        if not inner.any():
            continue
        rows, cols = np.nonzero(mask)
        values = img[sl][inner]
        found.append({"col": float(cols.mean() + sl[1].start),
                      "row": float(rows.mean() + sl[0].start), "size": size,
                      "grey": float(np.median(values)), "roughness": float(np.std(values)),
                      "complete": k not in cut})
    complete = [f["grey"] for f in found if f["complete"]]
    typical = float(np.median(complete)) if complete else math.nan
    return [Square(**f, bare=bool(f["grey"] < bare_fraction * typical)) for f in found]
