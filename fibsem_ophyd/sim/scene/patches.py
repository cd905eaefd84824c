"""Local changes of the scene (milling, deposition): HeightPatch, applying it, erode_layers."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..materials import MATERIAL_IDS
from .raster_grid import RasterGrid

__all__ = ["HeightPatch", "erode_layers", "apply_patch_points", "apply_patch_grid", "UNIT_RATES"]

#: one metre of thickness per metre: what :func:`erode_layers` takes to remove thicknesses
UNIT_RATES = np.ones(len(MATERIAL_IDS))


@dataclass
class HeightPatch:
    """A local raster modification of the scene (milling, deposition).

    Node ``(a, b)`` sits at sample ``(x0 + a*spacing, y0 + b*spacing)``; ``dh[b, a]`` (m) is
    added to the procedural height (bilinear between nodes); ``material[b, a]`` replaces the
    material where it is not 255 (nearest node).

    Deposited layers and what milling takes off them
    (:meth:`~fibsem_ophyd.sim.scene.Scene.layers_at`): a patch with
    ``layer`` (a material id) is a deposited layer of that material, ``dh`` >= 0 its
    thickness; ``removed`` (m, >= 0, same shape as ``dh``) is the thickness a milling took off
    the top of the surface there, deposited layers first (top down), then the sample.
    """

    x0: float
    y0: float
    spacing: float
    dh: np.ndarray
    material: np.ndarray | None = None
    layer: int | None = None
    removed: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.dh = np.ascontiguousarray(self.dh, dtype=np.float32)
        if self.dh.ndim != 2 or min(self.dh.shape) < 2:
            raise ValueError(
                f"HeightPatch.dh must be 2-D with >= 2 nodes a side, got {self.dh.shape}")
        if not (math.isfinite(self.spacing) and self.spacing > 0):
            raise ValueError(f"HeightPatch.spacing must be > 0, got {self.spacing}")
        if self.material is not None:
            self.material = np.ascontiguousarray(self.material, dtype=np.uint8)
            if self.material.shape != self.dh.shape:
                raise ValueError("HeightPatch.material must have the shape of dh")
        if self.layer is not None and float(self.dh.min()) < 0:
            raise ValueError("a deposited layer's thickness (HeightPatch.dh) must be >= 0")
        if self.removed is not None:
            self.removed = np.ascontiguousarray(self.removed, dtype=np.float32)
            if self.removed.shape != self.dh.shape:
                raise ValueError("HeightPatch.removed must have the shape of dh")
        #: the one material id every node sets (a deposited layer), else None
        self.uniform_material = None
        if self.material is not None:
            first = int(self.material.flat[0])
            if first != 255 and bool((self.material == first).all()):
                self.uniform_material = first

    def values(self, field: np.ndarray, x, y) -> np.ndarray:
        """``field`` (one of this patch's node arrays) at sample points, bilinear; 0 outside."""
        inside, a, b = self._coords(x, y)
        out = np.zeros(np.shape(x), dtype=np.float64)
        if inside.any():
            out[inside] = self._bilinear(field, a, b)
        return out

    def _coords(self, x, y):
        fa = (np.asarray(x, dtype=np.float64) - self.x0) / self.spacing
        fb = (np.asarray(y, dtype=np.float64) - self.y0) / self.spacing
        ny, nx = self.dh.shape
        inside = (fa >= 0) & (fa <= nx - 1) & (fb >= 0) & (fb <= ny - 1)
        return inside, fa[inside], fb[inside]

    def _bilinear(self, d: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        ny, nx = self.dh.shape
        a0 = np.minimum(np.floor(a).astype(np.int64), nx - 2)
        b0 = np.minimum(np.floor(b).astype(np.int64), ny - 2)
        ta, tb = a - a0, b - b0
        return ((d[b0, a0] * (1 - ta) + d[b0, a0 + 1] * ta) * (1 - tb)
                + (d[b0 + 1, a0] * (1 - ta) + d[b0 + 1, a0 + 1] * ta) * tb)

    @property
    def bbox(self) -> tuple[float, float, float, float]:
        ny, nx = self.dh.shape
        return (self.x0, self.x0 + (nx - 1) * self.spacing,
                self.y0, self.y0 + (ny - 1) * self.spacing)


def erode_layers(layers: list, budget: np.ndarray, rate_table: np.ndarray) -> np.ndarray:
    """Take deposited ``layers`` (bottom first; thicknesses reduced in place) off top down
    with ``budget``: a charge per area over the vertical (C/m^2 times the incidence factors)
    that removes ``rate_table[material]`` of thickness per unit, or with unit rates a
    thickness (m). Returns the thickness removed (m); ``budget`` is reduced in place to what
    is left for what lies underneath."""
    total = np.zeros_like(budget)
    for mid, th in reversed(layers):
        rate = float(rate_table[mid])
        take = np.minimum(th, budget * rate)
        th -= take
        budget -= take / rate
        total += take
    return total


def apply_patch_points(patch: HeightPatch, x, y, h, mat, materials: bool = True):
    inside, a, b = patch._coords(x, y)
    if not inside.any():
        return h, mat
    v = patch._bilinear(patch.dh, a, b)
    h = h.copy()
    h[inside] += v
    if patch.material is not None and (materials or (patch.layer is None
                                                     and patch.removed is None)):
        m = patch.material[np.rint(b).astype(np.int64), np.rint(a).astype(np.int64)]
        mat = mat.copy()
        sub = mat[inside]
        mat[inside] = np.where(m != 255, m, sub)
    return h, mat


def apply_patch_separable(patch: HeightPatch, grid: RasterGrid, h: np.ndarray,
                           mat: np.ndarray, ii: np.ndarray, jj: np.ndarray):
    """:func:`apply_patch_points` on an axis-aligned grid, where the patch coordinate
    ``a`` depends on one grid index and ``b`` on the other: the bilinear weights are
    per-row and per-column vectors and the patch covers a rectangle of nodes, so the
    interpolation is two 1-D passes over that rectangle instead of a per-node gather.
    Returns ``((row0, row1, col0, col1), changed)``: the rectangle of nodes the patch
    covers and the mask of those whose material changed (``(None, None)`` if it covers
    none), or ``None`` for a rotated grid (the caller then takes the per-node path)."""
    (dix, diy), (djx, djy) = grid.di, grid.dj
    tol = 1e-9 * (math.hypot(dix, diy) + math.hypot(djx, djy))
    s = patch.spacing
    ox, oy = grid.origin
    if abs(diy) <= tol and abs(djx) <= tol:      # a along columns, b along rows
        fa = (ox + ii * dix - patch.x0) / s
        fb = (oy + jj * djy - patch.y0) / s
        swap = False
    elif abs(dix) <= tol and abs(djy) <= tol:    # a along rows, b along columns
        fa = (ox + jj * djx - patch.x0) / s
        fb = (oy + ii * diy - patch.y0) / s
        swap = True
    else:
        return None
    ny, nx = patch.dh.shape
    in_a = np.flatnonzero((fa >= 0) & (fa <= nx - 1))
    in_b = np.flatnonzero((fb >= 0) & (fb <= ny - 1))
    if in_a.size == 0 or in_b.size == 0:
        return None, None
    # fa, fb are monotonic in the index: the inside nodes are one contiguous run each
    a = fa[in_a[0]:in_a[-1] + 1]
    b = fb[in_b[0]:in_b[-1] + 1]
    a0 = np.minimum(np.floor(a).astype(np.intp), nx - 2)
    b0 = np.minimum(np.floor(b).astype(np.intp), ny - 2)
    ta = (a - a0).astype(np.float32)
    tb = (b - b0).astype(np.float32)[:, None]
    lo, hi = int(b0.min()), int(b0.max()) + 2
    d = patch.dh[lo:hi]
    da = d[:, a0] * (1 - ta) + d[:, a0 + 1] * ta                 # (rows of d, len(a))
    v = da[b0 - lo] * (1 - tb) + da[b0 + 1 - lo] * tb          # (len(b), len(a))
    if swap:      # rows of the block follow a, columns follow b
        rows = slice(jj[0] + in_a[0], jj[0] + in_a[-1] + 1)
        cols = slice(ii[0] + in_b[0], ii[0] + in_b[-1] + 1)
        v = v.T
    else:
        rows = slice(jj[0] + in_b[0], jj[0] + in_b[-1] + 1)
        cols = slice(ii[0] + in_a[0], ii[0] + in_a[-1] + 1)
    h[rows, cols] += v
    rect = (rows.start, rows.stop, cols.start, cols.stop)
    if patch.material is None:
        return rect, np.zeros(v.shape, dtype=bool)
    if patch.uniform_material is not None:   # a layer: one material over the rectangle
        old = mat[rows, cols]
        changed = old != patch.uniform_material
        old[...] = patch.uniform_material
        return rect, changed
    ra = np.rint(a).astype(np.intp)
    rb = np.rint(b).astype(np.intp)
    m = patch.material[rb][:, ra]
    if swap:
        m = m.T
    old = mat[rows, cols]
    new = np.where(m != 255, m, old)
    changed = new != old
    mat[rows, cols] = new
    return rect, changed


def apply_patch_grid(patch: HeightPatch, grid: RasterGrid, h: np.ndarray, mat: np.ndarray,
                      layers: list | None = None, maps: list | None = None):
    """Apply a patch to a raster: height, material (zeroing the layers' coverage where
    the material changes) and any per-material ``maps`` given as ``(array, table)``."""
    px0, px1, py0, py1 = patch.bbox
    jinv = np.linalg.inv(grid.jacobian())
    corners = np.array([[px0, px0, px1, px1], [py0, py1, py0, py1]])
    ij = jinv @ (corners - np.array(grid.origin)[:, None])
    i0 = max(0, int(math.floor(ij[0].min())))
    i1 = min(grid.ni, int(math.ceil(ij[0].max())) + 1)
    j0 = max(0, int(math.floor(ij[1].min())))
    j1 = min(grid.nj, int(math.ceil(ij[1].max())) + 1)
    if i0 >= i1 or j0 >= j1:
        return
    ii = np.arange(i0, i1)
    jj = np.arange(j0, j1)
    sep = apply_patch_separable(patch, grid, h, mat, ii, jj)
    if sep is not None:
        if sep[0] is None:
            return
        (j0, j1, i0, i1), changed = sep
    else:
        x = grid.origin[0] + ii[None, :] * grid.di[0] + jj[:, None] * grid.dj[0]
        y = grid.origin[1] + ii[None, :] * grid.di[1] + jj[:, None] * grid.dj[1]
        hb = h[j0:j1, i0:i1].astype(np.float64)
        mb = mat[j0:j1, i0:i1]
        hn, mn = apply_patch_points(patch, x.ravel(), y.ravel(), hb.ravel(),
                                           mb.ravel())
        h[j0:j1, i0:i1] = hn.reshape(hb.shape)
        changed = mn.reshape(mb.shape) != mb
        mat[j0:j1, i0:i1] = mn.reshape(mb.shape)
    if not changed.any():
        return
    for m, t in maps or ():
        if patch.uniform_material is not None:
            m[j0:j1, i0:i1][changed] = t[patch.uniform_material]
        else:
            m[j0:j1, i0:i1][changed] = t.take(mat[j0:j1, i0:i1][changed])
    for _, c in layers or ():
        if isinstance(c, tuple):
            jj_, ii_ = np.divmod(c[0], grid.ni)
            inside = (jj_ >= j0) & (jj_ < j1) & (ii_ >= i0) & (ii_ < i1)
            hit = inside.copy()
            hit[inside] = changed[jj_[inside] - j0, ii_[inside] - i0]
            c[1][hit] = 0
        else:
            c[j0:j1, i0:i1][changed] = 0
