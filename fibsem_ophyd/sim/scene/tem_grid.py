"""The TEM grid as a function of position: bars, holes, film, ice and meniscus, rim, holder."""

from __future__ import annotations

import math

import numpy as np

from ..materials import MATERIAL_IDS
from .hashing import uniform
from .parameters import SceneParameters

__all__ = ["TemGrid"]

_AU = MATERIAL_IDS["Au"]
_C = MATERIAL_IDS["C"]
_ICE = MATERIAL_IDS["ice"]
_CU = MATERIAL_IDS["Cu"]
# salts of the per-hole hash streams
_S_ICED, _S_THICK = 11, 12


def _smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


class TemGrid:
    """Height, material and grid-metal coverage of the bare grid (no texture, objects or
    patches) at sample points (m); the per-hole ice is hashed from ``seed``."""

    def __init__(self, params: SceneParameters, seed: int):
        self.params = params
        self.seed = seed
        self._hole_table: tuple[int, np.ndarray] | None = None

    # ------------------------------------------------------------------ holes
    def hole_props(self, m: np.ndarray, n: np.ndarray):
        p = self.params
        iced = uniform(self.seed, _S_ICED, m, n) >= p.bare_fraction
        lo, hi = p.ice_thickness
        thick = np.where(iced, lo + (hi - lo) * uniform(self.seed, _S_THICK, m, n), 0.0)
        return iced, thick

    def hole_index(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Integer (m, n) of the hole whose cell of the bar lattice contains (x, y)."""
        pitch = self.params.pitch
        return (np.round(np.asarray(x) / pitch).astype(np.int64),
                np.round(np.asarray(y) / pitch).astype(np.int64))

    def hole_tables(self, m0: int, m1: int, n0: int, n1: int, dtype):
        """Ice thickness per hole (0 = bare film) for holes m0..m1 x n0..n1, as (n, m)."""
        if self._hole_table is None:        # every hole of the grid, generated once
            r = int(math.ceil(self.params.grid_radius / self.params.pitch)) + 2
            mm, nn = np.meshgrid(np.arange(-r, r + 1), np.arange(-r, r + 1))
            self._hole_table = (r, self.hole_props(mm, nn)[1])
        r, table = self._hole_table
        if -r <= m0 and m1 <= r and -r <= n0 and n1 <= r:
            return table[n0 + r:n1 + r + 1, m0 + r:m1 + r + 1].astype(dtype)
        mm, nn = np.meshgrid(np.arange(m0, m1 + 1), np.arange(n0, n1 + 1))
        _, thick = self.hole_props(mm, nn)
        return thick.astype(dtype)

    def compose(self, w, men, thick, dtype):
        """Height and hole material from the bar weight, meniscus profile and hole ice."""
        p = self.params
        iced = thick > 0
        men *= dtype(p.meniscus_height)
        men *= iced
        men += thick                                  # ice surface in the hole
        h = dtype(p.bar_height) - men
        h *= w
        h += men
        mat = np.where(iced, np.uint8(_ICE), np.uint8(_C))
        return h, mat

    def axis_terms(self, u, dtype, ramp=None):
        """Bar weight, meniscus profile and metal coverage from one coordinate (pitch units).

        ``ramp`` (pitch units) is the footprint of a raster node along this axis: the metal
        coverage then rises linearly across the bar boundary over one node (an anti-aliased
        edge, so the boundary moves continuously with the sample); ``None`` gives a hard edge.
        """
        p = self.params
        r = np.rint(u)
        a = np.abs(u - r)                             # 0 at the hole centre, 0.5 on the bar axis
        a0 = dtype((p.pitch - p.bar_width) / (2 * p.pitch))   # the bar boundary (w = 0.5)
        # bar weight rises from 0 to 1 across the rounded edge at |f| = (pitch - bw)/2
        t = (a - a0) * dtype(p.pitch / p.bar_edge)
        t += dtype(0.5)
        w = _smoothstep(t)
        d_edge = (dtype(0.5) - a) * dtype(p.pitch) - dtype(p.bar_width / 2)   # into the hole
        men = np.exp(-np.maximum(d_edge, 0) / dtype(p.meniscus_length))
        if ramp is None:
            cov = (a >= a0).astype(dtype)
        else:
            cov = np.clip((a - a0) / dtype(ramp) + dtype(0.5), 0, 1)
        return r, w.astype(dtype, copy=False), men.astype(dtype, copy=False), cov.astype(dtype)

    def base(self, lx, ly, ox: float, oy: float, need_radius: bool, dtype=np.float32,
              ramps: tuple[float, float] | None = None):
        """Grid + film + ice height, hole material and grid-metal coverage at local coordinates
        ``(lx, ly)`` relative to an origin ``(ox, oy)`` that is a multiple of the pitch (keeps
        float32 exact). ``lx`` and ``ly`` may be broadcastable (a row and a column vector:
        separable). ``ramps`` = node footprints (m) along x and y for anti-aliased metal
        coverage; ``None`` gives a hard 0/1 coverage. Returns ``(h, material, coverage)``; the
        material is the one under the metal where the coverage is below 1."""
        p = self.params
        inv = dtype(1.0 / p.pitch)
        rmp = (None, None) if ramps is None else (ramps[0] / p.pitch, ramps[1] / p.pitch)
        rx_, wx, mx, cx = self.axis_terms(np.asarray(lx, dtype=dtype) * inv, dtype, rmp[0])
        ry_, wy, my, cy = self.axis_terms(np.asarray(ly, dtype=dtype) * inv, dtype, rmp[1])
        # w and the meniscus are monotonic in max(|fx|, |fy|): combine the axes by max
        w = np.maximum(wx, wy)
        men = np.maximum(mx, my)
        cov = np.maximum(cx, cy)
        mo, no = int(round(ox / p.pitch)), int(round(oy / p.pitch))
        m0, m1 = int(rx_.min()), int(rx_.max())
        n0, n1 = int(ry_.min()), int(ry_.max())
        tab = self.hole_tables(m0 + mo, m1 + mo, n0 + no, n1 + no, dtype)
        ncol = m1 - m0 + 1
        # hole index as float (exact small integers), one gather from the per-hole table
        flat = (ry_ - dtype(n0)) * dtype(ncol) + (rx_ - dtype(m0))
        thick = tab.reshape(-1)[flat.astype(np.intp)]
        shape = np.broadcast_shapes(np.shape(lx), np.shape(ly))
        if thick.shape != shape:
            thick = np.broadcast_to(thick, shape)
        if men.shape != shape:
            men = np.broadcast_to(men, shape).copy()
        h, mat = self.compose(w, men, thick, dtype)
        if need_radius:
            r = np.sqrt((np.asarray(lx, dtype=dtype) + dtype(ox)) ** 2
                        + (np.asarray(ly, dtype=dtype) + dtype(oy)) ** 2)
            w_rim = _smoothstep((r - dtype(p.mesh_radius)) / dtype(p.bar_edge) + dtype(0.5))
            h = h + w_rim * (dtype(p.bar_height) - h)
            ramp = None if ramps is None else math.hypot(*ramps) / math.sqrt(2)
            c_rim = ((r >= dtype(p.mesh_radius)).astype(dtype) if ramp is None else
                     np.clip((r - dtype(p.mesh_radius)) / dtype(ramp) + dtype(0.5), 0, 1))
            cov = np.maximum(cov, c_rim)
            w_out = _smoothstep((r - dtype(p.grid_radius)) / dtype(p.rim_edge) + dtype(0.5))
            h = h + w_out * (dtype(-p.holder_depth) - h)
            out = w_out > 0.5
            mat = np.where(out, np.uint8(_CU), mat)
            cov = np.where(out, dtype(0), cov)
        if cov.shape != shape:
            cov = np.broadcast_to(cov, shape).copy()
        mat[cov >= 1] = _AU
        return h.astype(dtype, copy=False), mat, cov.astype(dtype, copy=False)

    def needs_radius(self, bbox) -> bool:
        xmin, xmax, ymin, ymax = bbox
        # farthest corner beyond the mesh radius or nearest point ... either way check corners
        far = max(math.hypot(x, y) for x in (xmin, xmax) for y in (ymin, ymax))
        return far > self.params.mesh_radius - 2 * self.params.bar_edge

    def origin(self, x: float, y: float) -> tuple[float, float]:
        pitch = self.params.pitch
        return round(x / pitch) * pitch, round(y / pitch) * pitch
