"""Stitch a grid of overlapping tiles into one mosaic (numpy + scipy only, no I/O).

1. Nominal tile positions (the top-left corner of each tile in mosaic pixels, from the stage
   moves) are refined by registering every pair of neighbours on their overlap
   (:func:`fibsem_ophyd.alignment.register`); a pair is used only if its score reaches
   ``min_score`` and its correction is within ``max_correction`` px.
2. The positions are solved by weighted least squares over all accepted pair offsets plus a
   weak prior that ties each tile to its nominal position (weight ``prior_weight``), so a grid
   with rejected pairs stays well defined and the mosaic as a whole keeps the stage frame (the
   mean correction is ~0).
3. The tiles are blended with feathered weights (linear ramps over the overlap width from
   each tile edge), after a sub-pixel (bilinear) shift to their refined positions.

Conventions: positions are (col, row) in pixels, +col right, +row down (array order).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .registration import RegistrationError, register

__all__ = ["Mosaic", "PairOffset", "blend", "grid_pairs", "refine_positions", "stitch_tiles"]


@dataclass(frozen=True)
class PairOffset:
    """A registered neighbour pair: tile indices, measured correction (px) and score."""

    a: int
    b: int
    dcol: float
    drow: float
    score: float
    used: bool


@dataclass(frozen=True)
class Mosaic:
    """Result of :func:`stitch_tiles`.

    Attributes
    ----------
    image : numpy.ndarray
        The blended mosaic (float32; pixels no tile covers are NaN-free zeros).
    positions : numpy.ndarray
        (n, 2) refined top-left (col, row) of every tile in mosaic pixels.
    nominal : numpy.ndarray
        (n, 2) nominal positions in the same mosaic frame.
    shift : tuple of float
        (col, row) added to the input positions to make the mosaic frame (its pixel (0, 0)
        is the top-left of the covered area).
    pairs : list of PairOffset
    """

    image: np.ndarray
    positions: np.ndarray
    nominal: np.ndarray
    shift: tuple[float, float]
    pairs: list[PairOffset] = field(default_factory=list)


def _overlap(shape, pa, pb):
    """Overlap of two tiles at integer positions ``pa``, ``pb``: slices in a and in b."""
    h, w = shape
    c0, c1 = max(pa[0], pb[0]), min(pa[0], pb[0]) + w
    r0, r1 = max(pa[1], pb[1]), min(pa[1], pb[1]) + h
    if c1 - c0 < 8 or r1 - r0 < 8:
        return None
    sa = (slice(r0 - pa[1], r1 - pa[1]), slice(c0 - pa[0], c1 - pa[0]))
    sb = (slice(r0 - pb[1], r1 - pb[1]), slice(c0 - pb[0], c1 - pb[0]))
    return sa, sb


def refine_positions(tiles: Sequence[np.ndarray], nominal, pairs: Sequence[tuple[int, int]],
                     min_score: float = 0.3, max_correction: float = 8.0,
                     prior_weight: float = 0.05) -> tuple[np.ndarray, list[PairOffset]]:
    """Refine tile positions by registering neighbour overlaps (see the module docstring).

    Parameters
    ----------
    tiles : sequence of 2-D arrays
        All of one shape.
    nominal : array-like
        (n, 2) nominal top-left (col, row) of each tile, px.
    pairs : sequence of (int, int)
        Neighbour pairs to register.
    min_score, max_correction : float
        A pair is used if its registration score >= ``min_score`` and its correction is at
        most ``max_correction`` px.
    prior_weight : float
        Weight of each tile's tie to its nominal position (pairs weigh 1).

    Returns
    -------
    positions : numpy.ndarray
        (n, 2) refined positions.
    pairs : list of PairOffset
    """
    nom = np.asarray(nominal, dtype=float)
    n = len(tiles)
    if nom.shape != (n, 2):
        raise ValueError(f"nominal must be ({n}, 2), got {nom.shape}")
    shape = tiles[0].shape
    out: list[PairOffset] = []
    rows, rhs, weights = [], [], []
    for a, b in pairs:
        reg, dcol, drow = None, 0.0, 0.0
        for _ in range(2):  # second pass: strips re-cut at the corrected offset
            target = nom[b] - nom[a] + np.array([dcol, drow])
            ia = np.round(nom[a]).astype(int)
            ib = ia + np.round(target).astype(int)
            ov = _overlap(shape, ia, ib)
            if ov is None:
                reg = None
                break
            sa, sb = ov
            ra = np.asarray(tiles[a], dtype=np.float32)[sa]
            rb = np.asarray(tiles[b], dtype=np.float32)[sb]
            try:
                reg = register(ra, rb, bandpass=(1.5, max(4.0, min(ra.shape) / 2.0)),
                               window=False, mask=_taper(ra.shape))
            except RegistrationError:
                reg = None
                break
            # the content displacement on top of the integer offset of the strips
            # (register: +dx = content right, +dy = content up, i.e. to smaller rows)
            step = (ib - ia) - (nom[b] - nom[a])
            dcol, drow = float(step[0] - reg.dx), float(step[1] + reg.dy)
            if math.hypot(dcol, drow) > 2 * max_correction:
                break
        if reg is None:
            continue
        used = reg.score >= min_score and math.hypot(dcol, drow) <= max_correction
        out.append(PairOffset(a, b, float(dcol), float(drow), float(reg.score), bool(used)))
        if used:
            for axis, d in ((0, dcol), (1, drow)):
                row = np.zeros(2 * n)
                row[2 * b + axis], row[2 * a + axis] = 1.0, -1.0
                rows.append(row)
                rhs.append(nom[b, axis] - nom[a, axis] + d)
                weights.append(math.sqrt(max(reg.score, 1e-3)))
    for k in range(n):
        for axis in (0, 1):
            row = np.zeros(2 * n)
            row[2 * k + axis] = 1.0
            rows.append(row)
            rhs.append(nom[k, axis])
            weights.append(math.sqrt(prior_weight))
    a_mat = np.array(rows) * np.array(weights)[:, None]
    sol, *_ = np.linalg.lstsq(a_mat, np.array(rhs) * np.array(weights), rcond=None)
    return sol.reshape(n, 2), out


def _taper(shape) -> np.ndarray:
    """Separable weight: Tukey (flat middle, cosine ends over 25 % each) along each axis."""
    def tukey(n):
        x = (np.arange(n) + 0.5) / n
        edge = 0.25
        w = np.ones(n)
        lo, hi = x < edge, x > 1 - edge
        w[lo] = 0.5 * (1 - np.cos(np.pi * x[lo] / edge))
        w[hi] = 0.5 * (1 - np.cos(np.pi * (1 - x[hi]) / edge))
        return w
    return np.outer(tukey(shape[0]), tukey(shape[1])).astype(np.float32)


def _feather(shape, ramp: tuple[float, float]) -> np.ndarray:
    h, w = shape
    c = np.arange(w, dtype=np.float32)
    r = np.arange(h, dtype=np.float32)
    wc = np.clip((np.minimum(c, w - 1 - c) + 1.0) / max(ramp[0], 1.0), 1e-3, 1.0)
    wr = np.clip((np.minimum(r, h - 1 - r) + 1.0) / max(ramp[1], 1.0), 1e-3, 1.0)
    return (wr[:, None] * wc[None, :]).astype(np.float32)


def blend(tiles: Sequence[np.ndarray], positions, ramp: tuple[float, float]) -> np.ndarray:
    """Feather-blend tiles at (col, row) ``positions`` (>= 0) into one float32 image.

    ``ramp`` (col, row) px: width of the linear weight ramps at the tile edges (use the
    overlap widths).
    """
    pos = np.asarray(positions, dtype=float)
    h, w = tiles[0].shape
    width = int(math.ceil(pos[:, 0].max())) + w + 1
    height = int(math.ceil(pos[:, 1].max())) + h + 1
    acc = np.zeros((height, width), np.float32)
    wsum = np.zeros((height, width), np.float32)
    base_w = _feather((h, w), ramp)
    for tile, (pc, pr) in zip(tiles, pos, strict=True):
        c0, r0 = int(math.floor(pc)), int(math.floor(pr))
        fc, fr = pc - c0, pr - r0
        t = np.zeros((h + 1, w + 1), np.float32)
        wt = np.zeros((h + 1, w + 1), np.float32)
        t[:h, :w] = np.asarray(tile, dtype=np.float32) * base_w
        wt[:h, :w] = base_w
        if fc > 1e-6 or fr > 1e-6:
            t = ndimage.shift(t, (fr, fc), order=1, mode="constant", cval=0.0)
            wt = ndimage.shift(wt, (fr, fc), order=1, mode="constant", cval=0.0)
        acc[r0:r0 + h + 1, c0:c0 + w + 1] += t
        wsum[r0:r0 + h + 1, c0:c0 + w + 1] += wt
    out = np.zeros_like(acc)
    np.divide(acc, wsum, out=out, where=wsum > 1e-6)
    return out


def grid_pairs(rows: int, cols: int) -> list[tuple[int, int]]:
    """Right and down neighbour pairs of a row-major ``rows x cols`` grid."""
    out = []
    for i in range(rows):
        for j in range(cols):
            k = i * cols + j
            if j + 1 < cols:
                out.append((k, k + 1))
            if i + 1 < rows:
                out.append((k, k + cols))
    return out


def stitch_tiles(tiles: Sequence[np.ndarray], nominal, rows: int, cols: int,
                 refine: bool = True, min_score: float = 0.3,
                 max_correction: float = 8.0) -> Mosaic:
    """Stitch a row-major ``rows x cols`` grid of tiles at nominal (col, row) positions.

    Parameters
    ----------
    tiles : sequence of 2-D arrays
        ``rows * cols`` tiles of one shape, row-major (tile ``i * cols + j`` is row ``i``
        from the top, column ``j`` from the left).
    nominal : array-like
        (n, 2) nominal top-left (col, row) of each tile, px, any origin.
    refine : bool
        Refine the positions by registering neighbour overlaps.
    min_score, max_correction : float
        See :func:`refine_positions`.

    Returns
    -------
    Mosaic
    """
    if rows < 1 or cols < 1 or len(tiles) != rows * cols:
        raise ValueError(f"need rows * cols = {rows} * {cols} tiles, got {len(tiles)}")
    shape = np.shape(tiles[0])
    if len(shape) != 2 or any(np.shape(t) != shape for t in tiles):
        raise ValueError("tiles must be 2-D arrays of one shape")
    nom = np.asarray(nominal, dtype=float)
    if nom.shape != (len(tiles), 2) or not np.all(np.isfinite(nom)):
        raise ValueError(f"nominal must be ({len(tiles)}, 2) finite, got {nom.shape}")
    pairs: list[PairOffset] = []
    pos = nom.copy()
    if refine and len(tiles) > 1:
        pos, pairs = refine_positions(tiles, nom, grid_pairs(rows, cols), min_score,
                                      max_correction)
    shift = (-float(pos[:, 0].min()), -float(pos[:, 1].min()))
    pos = pos + np.array(shift)
    nom = nom + np.array(shift)
    # ramps over the nominal overlaps (at least a few px)
    h, w = shape
    steps_c = np.diff(np.unique(np.round(nom[:, 0], 6)))
    steps_r = np.diff(np.unique(np.round(nom[:, 1], 6)))
    ramp = (max(4.0, w - float(steps_c.min())) if steps_c.size else 4.0,
            max(4.0, h - float(steps_r.min())) if steps_r.size else 4.0)
    image = blend(tiles, pos, ramp)
    return Mosaic(image, pos, nom, shift, pairs)
