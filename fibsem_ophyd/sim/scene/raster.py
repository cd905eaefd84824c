"""Rasterising the scene on a RasterGrid, a block of rows at a time, with anti-aliased layers."""

from __future__ import annotations

import math

import numpy as np

from ..materials import MATERIAL_IDS
from .objects import CAP, CAP_R, SceneObjects, cell_profile
from .parameters import SceneParameters
from .patches import apply_patch_grid
from .raster_grid import RasterGrid
from .texture import wave_factors

__all__ = ["RasterPlan", "blend_layer", "stamp", "particle_stamps"]

_AU = MATERIAL_IDS["Au"]
_C = MATERIAL_IDS["C"]
_ICE = MATERIAL_IDS["ice"]
_ORG = MATERIAL_IDS["organic"]


def blend_layer(a: np.ndarray, cov, value) -> None:
    """In place ``a += cov (value - a)`` for a coverage layer: a dense array, or a sparse
    ``(flat_index, coverage)`` pair."""
    v = np.float32(value)
    if isinstance(cov, tuple):
        idx, c = cov
        if idx.size:
            af = a.reshape(-1)
            sub = af[idx]
            af[idx] = sub + c * (v - sub)
    else:
        a += cov * (v - a)


def _runs(values: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` of the runs of equal values of a 1-D array."""
    if values.size == 0:
        return []
    cut = np.flatnonzero(values[1:] != values[:-1]) + 1
    edges = [0, *cut.tolist(), int(values.size)]
    return list(zip(edges[:-1], edges[1:], strict=True))


def stamp(grid: RasterGrid, objs: SceneObjects, *profiles,
           extent: list | None = None) -> list | None:
    """Max-composite each profile of the objects onto the grid.

    Returns one float32 (nj, ni) array per profile, or ``None`` if no object is visible.
    Stamps reach one node beyond the objects' radii (room for anti-aliased coverage).
    ``extent``, when given, receives ``[i0, i1, j0, j1]``: a node range outside which
    every profile is zero.
    """
    ni, nj = grid.ni, grid.nj
    visible = visible_objects(grid, objs)
    if visible is None:
        return None
    ic, jc, ext_i, ext_j, idx = visible
    outs = [np.zeros((nj, ni), dtype=np.float32) for _ in profiles]
    if extent is not None:
        extent[:] = [max(0, int(math.floor((ic[idx] - ext_i[idx]).min())) - 1),
                     min(ni, int(math.ceil((ic[idx] + ext_i[idx]).max())) + 2),
                     max(0, int(math.floor((jc[idx] - ext_j[idx]).min())) - 1),
                     min(nj, int(math.ceil((jc[idx] + ext_j[idx]).max())) + 2)]
    ei = np.ceil(ext_i[idx]).astype(np.int64)
    ej = np.ceil(ext_j[idx]).astype(np.int64)
    big = (2 * ei + 1) * (2 * ej + 1) > 4096
    di, dj = grid.di, grid.dj
    for k in idx[big]:
        i0 = max(0, int(math.floor(ic[k] - ext_i[k])))
        i1 = min(ni, int(math.ceil(ic[k] + ext_i[k])) + 1)
        j0 = max(0, int(math.floor(jc[k] - ext_j[k])))
        j1 = min(nj, int(math.ceil(jc[k] + ext_j[k])) + 1)
        ci = (np.arange(i0, i1) - ic[k])
        cj = (np.arange(j0, j1) - jc[k])
        dx = (cj * dj[0])[:, None].astype(np.float32) + (ci * di[0])[None, :].astype(np.float32)
        dy = (cj * dj[1])[:, None].astype(np.float32) + (ci * di[1])[None, :].astype(np.float32)
        for out, profile in zip(outs, profiles, strict=True):
            v = profile(dx, dy, objs.params, k).astype(np.float32, copy=False)
            blk = out[j0:j1, i0:i1]
            np.maximum(blk, v, out=blk)
    small = idx[~big]
    if small.size == 0:
        return outs
    # bucket by stamp size (powers of two) to bound the padding
    bi = np.ceil(np.log2(np.maximum(ei[~big], 1))).astype(np.int64)
    bj = np.ceil(np.log2(np.maximum(ej[~big], 1))).astype(np.int64)
    for key in sorted(set(zip(bi.tolist(), bj.tolist(), strict=True))):
        sel = small[(bi == key[0]) & (bj == key[1])]
        hi_ = 2 ** key[0]
        hj_ = 2 ** key[1]
        ri = np.rint(ic[sel]).astype(np.int64)
        rj = np.rint(jc[sel]).astype(np.int64)
        oi = np.arange(-hi_, hi_ + 1)
        oj = np.arange(-hj_, hj_ + 1)
        col = ri[:, None, None] + oi[None, None, :]
        row = rj[:, None, None] + oj[None, :, None]
        ci = col - ic[sel][:, None, None]
        cj = row - jc[sel][:, None, None]
        dx = ci * di[0] + cj * dj[0]
        dy = ci * di[1] + cj * dj[1]
        ks = sel[:, None, None]
        inside = (col >= 0) & (col < ni) & (row >= 0) & (row < nj)
        for out, profile in zip(outs, profiles, strict=True):
            v = profile(dx, dy, objs.params, ks)
            ok = (v > 0) & inside
            flat = (row * ni + col)[ok]
            np.maximum.at(out.reshape(-1), flat, v[ok].astype(np.float32))
    return outs


def visible_objects(grid: RasterGrid, objs: SceneObjects):
    """Round objects in grid nodes: centres ``(ic, jc)`` (fractional node indices), half
    extents ``(ext_i, ext_j)`` (radius plus one node, per axis) and the indices of those
    whose extent meets the grid; ``None`` if none does."""
    jinv = np.linalg.inv(grid.jacobian())
    rel = np.stack([objs.x - grid.origin[0], objs.y - grid.origin[1]])
    ic, jc = jinv @ rel
    ext_i = objs.radius * math.hypot(*jinv[0]) + 1.0
    ext_j = objs.radius * math.hypot(*jinv[1]) + 1.0
    vis = ((ic + ext_i >= 0) & (ic - ext_i <= grid.ni - 1)
           & (jc + ext_j >= 0) & (jc - ext_j <= grid.nj - 1))
    idx = np.nonzero(vis)[0]
    return None if idx.size == 0 else (ic, jc, ext_i, ext_j, idx)


def particle_stamps(grid: RasterGrid, objs: SceneObjects, node: float):
    """Height (spherical caps, :func:`~fibsem_ophyd.sim.scene.objects.particle_profile`) and
    anti-aliased coverage (a
    one-node linear ramp centred on the rim, ``node`` = node size, m) of a particle
    population on the grid, max-composited where particles overlap.

    Returns ``(flat_index, height, coverage)`` over the nodes a particle covers, indices
    sorted and unique (the height's support lies inside the coverage's), or ``None``.
    """
    ni, nj = grid.ni, grid.nj
    f32 = np.float32
    visible = visible_objects(grid, objs)
    if visible is None:
        return None
    ic, jc, ext_i, ext_j, idx = visible
    ei = np.ceil(ext_i[idx]).astype(np.int64)
    ej = np.ceil(ext_j[idx]).astype(np.int64)
    di, dj = np.array(grid.di), np.array(grid.dj)
    radius = objs.params["radius"]
    height = objs.params["height"]
    flats, hs, cs = [], [], []
    # windows of (2 ei + 1) x (2 ej + 1) nodes around the nearest node, grouped by size
    bi = np.ceil(np.log2(np.maximum(ei, 1))).astype(np.int64)
    bj = np.ceil(np.log2(np.maximum(ej, 1))).astype(np.int64)
    for key in sorted(set(zip(bi.tolist(), bj.tolist(), strict=True))):
        grp = (bi == key[0]) & (bj == key[1])
        sel = idx[grp]
        hi_ = int(ei[grp].max())
        hj_ = int(ej[grp].max())
        n_win = (2 * hi_ + 1) * (2 * hj_ + 1)
        for part in range(0, sel.size, max(1, (1 << 18) // n_win)):
            k = sel[part:part + max(1, (1 << 18) // n_win)]
            ri = np.rint(ic[k]).astype(np.int64)
            rj = np.rint(jc[k]).astype(np.int64)
            oi = np.arange(-hi_, hi_ + 1)
            oj = np.arange(-hj_, hj_ + 1)
            col = ri[:, None, None] + oi[None, None, :]
            row = rj[:, None, None] + oj[None, :, None]
            ci = (ri - ic[k]).astype(f32)[:, None, None] + oi.astype(f32)[None, None, :]
            cj = (rj - jc[k]).astype(f32)[:, None, None] + oj.astype(f32)[None, :, None]
            dx = ci * f32(di[0]) + cj * f32(dj[0])
            dy = ci * f32(di[1]) + cj * f32(dj[1])
            d2 = dx * dx
            d2 += dy * dy
            r = radius[k].astype(f32)[:, None, None]
            dist = np.sqrt(d2)
            cov = r - dist                          # > 0 inside the rim
            cov *= f32(1.0 / node)
            cov += f32(0.5)
            np.clip(cov, 0.0, 1.0, out=cov)
            ok = (cov > 0) & (col >= 0) & (col < ni) & (row >= 0) & (row < nj)
            # spherical cap: (sqrt(R^2 - rho^2) - (R - H)) / H of the base radius
            rho2 = d2[ok] / np.broadcast_to(r * r, d2.shape)[ok]
            f = np.sqrt(np.maximum(f32(CAP_R * CAP_R) - rho2, 0.0))
            f -= f32(CAP_R - CAP)
            f *= f32(1.0 / CAP)
            np.maximum(f, 0.0, out=f)
            f *= np.broadcast_to(height[k].astype(f32)[:, None, None], d2.shape)[ok]
            flats.append((row * ni + col)[ok])
            hs.append(f)
            cs.append(cov[ok])
    flat = np.concatenate(flats)
    if flat.size == 0:
        return None
    # max over the particles sharing a node: sort the node indices, reduce each run
    order = np.argsort(flat, kind="stable")
    flat = flat[order]
    first = np.flatnonzero(np.concatenate(([True], flat[1:] != flat[:-1])))
    return (flat[first], np.maximum.reduceat(np.concatenate(hs)[order], first),
            np.maximum.reduceat(np.concatenate(cs)[order], first))


class RasterPlan:
    """Rasterising a :class:`RasterGrid` a block of rows at a time.

    The plan holds everything that does not depend on the block: the local origin, the
    per-axis bar/meniscus/metal terms (when the grid is axis-aligned in the sample frame, the
    common case, the base surface is a function of one coordinate per axis and a block is
    assembled from those vectors), the per-hole ice table, both wave fields as low-rank
    factors, the cells (stamped once) and the particles (sparse). :meth:`block` then produces
    any range of rows with every node exactly as in a whole-grid raster, so blocks can run on
    worker threads with their temporaries resident in cache.
    """

    def __init__(self, scene, grid: RasterGrid, executor=None):
        """``executor`` (a :class:`concurrent.futures.Executor`), when given, builds the wave
        fields and the particle stamps on its workers while this thread builds the rest."""
        self.scene, self.grid = scene, grid
        p = scene.params
        f32 = np.float32
        ni, nj = grid.ni, grid.nj
        bbox = grid.bbox()
        self.ox, self.oy = scene.tem_grid.origin(0.5 * (bbox[0] + bbox[1]),
                                                 0.5 * (bbox[2] + bbox[3]))
        self.need_radius = scene.tem_grid.needs_radius(bbox)
        lx0, ly0 = grid.origin[0] - self.ox, grid.origin[1] - self.oy
        ii = np.arange(ni, dtype=np.float64)
        jj = np.arange(nj, dtype=np.float64)
        (dix, diy), (djx, djy) = grid.di, grid.dj
        tol = 1e-9 * math.hypot(*grid.di) + 1e-9 * math.hypot(*grid.dj)
        self.ramps = (abs(dix) + abs(djx), abs(diy) + abs(djy))   # node footprint along x, y
        if abs(diy) <= tol and abs(djx) <= tol:        # x along columns, y along rows
            self.mode = "xy"
            self.lx = (lx0 + ii * dix).astype(f32)[None, :]
            self.ly = (ly0 + jj * djy).astype(f32)[:, None]
        elif abs(dix) <= tol and abs(djy) <= tol:      # x along rows, y along columns
            self.mode = "yx"
            self.lx = (lx0 + jj * djx).astype(f32)[:, None]
            self.ly = (ly0 + ii * diy).astype(f32)[None, :]
        else:
            self.mode = ""
            self.lx = ((lx0 + jj * djx).astype(f32), (ii * dix).astype(f32))
            self.ly = ((ly0 + jj * djy).astype(f32), (ii * diy).astype(f32))
        self.separable = bool(self.mode) and not self.need_radius
        if self.separable:
            self._plan_separable(p)
        spacing = grid.spacing()

        def waves(w):
            # a wave field as two low-rank factors; each block takes its rows' product (BLAS)
            return wave_factors(w, grid)

        def particles(name):
            objs = scene.particles(bbox, spacing, name)
            if not len(objs):
                return None
            objs.params.update(radius=objs.radius)
            st = particle_stamps(grid, objs, spacing)
            return None if st is None else (scene.objects.populations[name]["material"], *st)

        jobs = [(waves, scene.waviness), (waves, scene.texture)]
        jobs += [(particles, name) for name in scene.objects.populations]
        if executor is not None:
            futures = [executor.submit(f, a) for f, a in jobs]
        cells = scene.cells(bbox)
        cells.params.update(cx=cells.x, cy=cells.y)
        self.cells = None
        if len(cells):
            ext: list = []
            st = stamp(grid, cells, cell_profile, extent=ext)
            if st is not None:
                self.cells = (st[0], ext)
        if executor is not None:
            results = [f.result() for f in futures]
        else:
            results = [f(a) for f, a in jobs]
        self.waviness, self.texture = results[:2]
        self.particles = [r for r in results[2:] if r is not None]

    def _plan_separable(self, p: SceneParameters) -> None:
        f32 = np.float32
        inv = f32(1.0 / p.pitch)
        tx = self.scene.tem_grid.axis_terms(self.lx.ravel() * inv, f32, self.ramps[0] / p.pitch)
        ty = self.scene.tem_grid.axis_terms(self.ly.ravel() * inv, f32, self.ramps[1] / p.pitch)
        col, row = (tx, ty) if self.mode == "xy" else (ty, tx)
        mh = f32(p.meniscus_height)
        self.col_w, self.row_w = col[1], row[1]
        self.col_men, self.row_men = col[2] * mh, row[2] * mh
        self.col_cov, self.row_cov = col[3], row[3]
        mo, no = int(round(self.ox / p.pitch)), int(round(self.oy / p.pitch))
        m0, m1 = int(tx[0].min()), int(tx[0].max())
        n0, n1 = int(ty[0].min()), int(ty[0].max())
        tab = self.scene.tem_grid.hole_tables(m0 + mo, m1 + mo, n0 + no, n1 + no, f32)   # (n, m)
        hx = (tx[0] - f32(m0)).astype(np.intp)
        hy = (ty[0] - f32(n0)).astype(np.intp)
        if self.mode == "xy":
            self.row_hole = hy
            per_row = {int(v): tab[v, hx] for v in np.unique(hy)}
        else:
            self.row_hole = hx
            per_row = {int(v): tab[hy, v] for v in np.unique(hx)}
        # per hole row: ice thickness, iced flag and hole material along the columns
        self.hole_rows = {}
        for v, thick in per_row.items():
            iced = thick > 0
            self.hole_rows[v] = (np.ascontiguousarray(thick), iced.astype(f32), bool(iced.all()),
                                 np.where(iced, np.uint8(_ICE), np.uint8(_C)))
        cc = self.col_cov
        self.full_cols = [(a, b) for a, b in _runs(cc >= 1) if cc[a] >= 1]
        self.partial_cols = np.flatnonzero((cc > 0) & (cc < 1))
        self.bare_cols = np.flatnonzero(cc <= 0)

    # ------------------------------------------------------------------ blocks
    def block(self, j0: int, j1: int, tables: tuple = ()):
        """Rows ``j0 .. j1-1`` of the raster: ``(height, material, layers, maps)``.

        ``height``, ``material`` and ``layers`` are as
        :meth:`~fibsem_ophyd.sim.scene.Scene.rasterize` with
        ``coverage=True`` (flat indices relative to the block). ``maps`` holds, for each
        per-material float32 table in ``tables``, its value at every node with the layers
        blended in: built from the same per-axis pieces as the material map, so no per-node
        table lookup is needed.
        """
        scene, grid = self.scene, self.grid
        ni = grid.ni
        tabs = (scene.tex_factor, *tables)
        if self.separable:
            h, mat, au, maps = self._base_separable(j0, j1, tabs)
        else:
            h, mat, au = self._base_general(j0, j1)
            maps = [t.take(mat) for t in tabs]
        if self.waviness is not None:
            h += self.waviness[0][j0:j1] @ self.waviness[1]
        if self.cells is not None:
            hc, (ci0, ci1, cj0, cj1) = self.cells
            a, b = max(j0, cj0), min(j1, cj1)
            if a < b:
                sl = hc[a:b, ci0:ci1]
                h[a - j0:b - j0, ci0:ci1] += sl
                on = sl > 5e-8
                if on.any():
                    mat[a - j0:b - j0, ci0:ci1][on] = _ORG
                    for m, t in zip(maps, tabs, strict=True):
                        m[a - j0:b - j0, ci0:ci1][on] = t[_ORG]
                    jj, ii = np.divmod(au[0], ni)
                    sel = (jj >= a - j0) & (jj < b - j0) & (ii >= ci0) & (ii < ci1)
                    sel[sel] = on[jj[sel] - (a - j0), ii[sel] - ci0]
                    au[1][sel] = 0
        layers = [(_AU, au)]
        hf = h.reshape(-1)
        for mid, nz, hv, cv in self.particles:
            s, e = np.searchsorted(nz, [j0 * ni, j1 * ni])
            idx = nz[s:e] - j0 * ni
            hf[idx] += hv[s:e]
            layers.append((mid, (idx, cv[s:e].copy())))
        for m, t in zip(maps, tabs, strict=True):
            for mid, c in layers:
                blend_layer(m, c, t[mid])
        if self.texture is not None:
            tex = np.matmul(self.texture[0][j0:j1], self.texture[1])
            h += np.multiply(tex, maps[0], out=tex)
        if scene.patches:
            o = np.array(grid.origin) + j0 * np.array(grid.dj)
            sub = RasterGrid((float(o[0]), float(o[1])), grid.di, grid.dj, ni, j1 - j0)
            for patch in scene.patches:
                apply_patch_grid(patch, sub, h, mat, layers,
                                        list(zip(maps[1:], tabs[1:], strict=True)))
        return h, mat, layers, maps[1:]

    def _base_separable(self, j0: int, j1: int, tables: tuple):
        """Grid + film + ice from the per-axis vectors, one hole row at a time."""
        f32 = np.float32
        ni = self.grid.ni
        nb = j1 - j0
        bar = f32(self.scene.params.bar_height)
        h = np.empty((nb, ni), dtype=f32)
        mat = np.empty((nb, ni), dtype=np.uint8)
        maps = [np.empty((nb, ni), dtype=f32) for _ in tables]
        col_w, col_men = self.col_w[None, :], self.col_men[None, :]
        rh = self.row_hole[j0:j1]
        for a, b in _runs(rh):
            thick, iced, all_iced, hole_mat = self.hole_rows[int(rh[a])]
            men = np.maximum(self.row_men[j0 + a:j0 + b, None], col_men)
            if not all_iced:
                men *= iced
            men += thick
            hb = h[a:b]
            np.subtract(bar, men, out=hb)
            hb *= np.maximum(self.row_w[j0 + a:j0 + b, None], col_w)
            hb += men
            mat[a:b] = hole_mat
            for m, t in zip(maps, tables, strict=True):
                m[a:b] = t.take(hole_mat)
        # grid metal: rows or columns fully covered carry it; partial nodes form a layer
        cr = self.row_cov[j0:j1]
        cc = self.col_cov
        full = cr >= 1
        if full.any():
            mat[full] = _AU
            for m, t in zip(maps, tables, strict=True):
                m[full] = t[_AU]
        for a, b in self.full_cols:
            mat[:, a:b] = _AU
            for m, t in zip(maps, tables, strict=True):
                m[:, a:b] = t[_AU]
        idx, val = [], []
        below = np.flatnonzero(~full)
        if self.partial_cols.size and below.size:
            idx.append((below[:, None] * ni + self.partial_cols[None, :]).ravel())
            val.append(np.maximum(cr[below][:, None], cc[self.partial_cols][None, :]).ravel())
        part_rows = np.flatnonzero((cr > 0) & ~full)
        if part_rows.size and self.bare_cols.size:
            idx.append((part_rows[:, None] * ni + self.bare_cols[None, :]).ravel())
            val.append(np.repeat(cr[part_rows], self.bare_cols.size))
        if idx:
            au = (np.concatenate(idx), np.concatenate(val).astype(f32))
        else:
            au = (np.zeros(0, dtype=np.intp), np.zeros(0, dtype=f32))
        return h, mat, au, maps

    def _base_general(self, j0: int, j1: int):
        """Grid + film + ice at the block's nodes (rotated grids, or near the grid's rim)."""
        if self.mode == "xy":
            lx, ly = self.lx, self.ly[j0:j1]
        elif self.mode == "yx":
            lx, ly = self.lx[j0:j1], self.ly
        else:
            lx = self.lx[0][j0:j1, None] + self.lx[1][None, :]
            ly = self.ly[0][j0:j1, None] + self.ly[1][None, :]
        h, mat, cov = self.scene.tem_grid.base(lx, ly, self.ox, self.oy, self.need_radius,
                                       ramps=self.ramps)
        nz = np.flatnonzero((cov > 0) & (cov < 1))
        return h, mat, (nz, cov.reshape(-1)[nz])
