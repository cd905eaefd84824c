"""Cells and particles: where they are (hashed from the seed) and their height profiles."""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from ..materials import MATERIAL_IDS
from .hashing import uniform
from .parameters import SceneParameters
from .tem_grid import TemGrid

__all__ = ["SceneObjects", "ObjectField", "cell_profile", "particle_profile", "CAP", "CAP_R"]

_ICE = MATERIAL_IDS["ice"]
_PT = MATERIAL_IDS["Pt"]
# salts of the per-object hash streams
_S_NCELL, _S_CELL, _S_PART, _S_FROST = 13, 100, 200, 300

# particle caps: apex height / base radius, and the sphere radius / base radius
CAP = 0.6
CAP_R = (1.0 + CAP**2) / (2 * CAP)


@dataclass
class SceneObjects:
    """Objects of one kind in a region, as parallel arrays (sample frame, metres)."""

    kind: str
    ids: np.ndarray                 # (n, 3) int64 identifiers
    x: np.ndarray
    y: np.ndarray
    radius: np.ndarray              # bounding radius
    params: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.x)


def cell_profile(dx, dy, P: dict, k) -> np.ndarray:
    """Dome height of cell(s) ``k`` at offsets (dx, dy) from the cell centre."""
    c, s = P["cos"][k], P["sin"][k]
    xr = (c * dx + s * dy) / P["a"][k]
    yr = (-s * dx + c * dy) / P["b"][k]
    rho2 = xr * xr + yr * yr
    h = P["height"][k] * np.maximum(1.0 - rho2, 0.0)
    nx = dx - (P["nx"][k] - P["cx"][k])
    ny = dy - (P["ny"][k] - P["cy"][k])
    rn2 = (nx * nx + ny * ny) / P["nradius"][k] ** 2
    h = h + P["nheight"][k] * np.maximum(1.0 - rn2, 0.0) ** 2 * (rho2 < 1)
    return h


def particle_profile(dx, dy, P: dict, k) -> np.ndarray:
    """Spherical cap of base radius ``radius`` and apex ``height``."""
    r = P["radius"][k]
    rho2 = (dx * dx + dy * dy) / (r * r)
    f = (np.sqrt(np.maximum(CAP_R * CAP_R - rho2, 0.0)) - (CAP_R - CAP)) / CAP
    return P["height"][k] * np.maximum(f, 0.0)


class ObjectField:
    """The cells (ellipsoidal domes with a nucleus, per hole) and particle populations
    (Pt blobs, frost) of a scene, deterministic from ``seed``."""

    def __init__(self, params: SceneParameters, seed: int, tem_grid: TemGrid):
        self.params = params
        self.seed = seed
        self.tem_grid = tem_grid
        self._cell_table: SceneObjects | None = None
        self._particle_cache: OrderedDict = OrderedDict()
        self._particle_lock = threading.Lock()
        p = params
        #: population name -> lattice spacing, probability, diameters, hash salt, material
        self.populations = {
            "particle": {"spacing": p.particle_spacing, "probability": p.particle_probability,
                         "diameter": p.particle_diameter, "salt": _S_PART, "material": _PT},
            "frost": {"spacing": p.frost_spacing, "probability": p.frost_probability,
                      "diameter": p.frost_diameter, "salt": _S_FROST, "material": _ICE},
        }

    def cells(self, bbox) -> SceneObjects:
        """Cells whose hole intersects ``bbox`` = (xmin, xmax, ymin, ymax) (m)."""
        p = self.params
        m0, n0 = (math.floor(bbox[0] / p.pitch + 0.5) - 1, math.floor(bbox[2] / p.pitch + 0.5) - 1)
        m1, n1 = (math.floor(bbox[1] / p.pitch + 0.5) + 1, math.floor(bbox[3] / p.pitch + 0.5) + 1)
        # every cell of the grid, generated once (only holes inside the mesh carry cells), in
        # the order the holes of any sub-range would give
        if self._cell_table is None:
            r = int(math.ceil(p.mesh_radius / p.pitch)) + 1
            self._cell_table = self._cells_of_holes(-r, r, -r, r)
        t = self._cell_table
        m, n = t.ids[:, 0], t.ids[:, 1]
        sel = np.flatnonzero((m >= m0) & (m <= m1) & (n >= n0) & (n <= n1))
        return SceneObjects("cell", t.ids[sel], t.x[sel], t.y[sel], t.radius[sel],
                            {k: v[sel] for k, v in t.params.items()})

    def _cells_of_holes(self, m0: int, m1: int, n0: int, n1: int) -> SceneObjects:
        """The cells of holes ``m0..m1`` x ``n0..n1``, hole by hole (row-major), each hole's
        k-th cell after every hole's (k-1)-th."""
        p = self.params
        mm, nn = np.meshgrid(np.arange(m0, m1 + 1), np.arange(n0, n1 + 1))
        mm, nn = mm.ravel(), nn.ravel()
        iced, _ = self.tem_grid.hole_props(mm, nn)
        inside = np.hypot(mm * p.pitch, nn * p.pitch) < p.mesh_radius - p.pitch
        ncell = np.floor(uniform(self.seed, _S_NCELL, mm, nn) * (p.max_cells_per_hole + 1))
        ncell = np.where(iced & inside, ncell, 0).astype(np.int64)
        sel = [np.nonzero(ncell > k)[0] for k in range(p.max_cells_per_hole)]
        ks = np.concatenate([np.full(len(s), k) for k, s in enumerate(sel)]).astype(np.int64)
        idx = np.concatenate(sel)
        m, n = mm[idx], nn[idx]

        def u(q):
            return uniform(self.seed, _S_CELL + 16 * ks + q, m, n)

        dlo, dhi = p.cell_diameter
        a = 0.5 * (dlo + (dhi - dlo) * u(0))
        b = a * (0.6 + 0.4 * u(1))
        theta = 2 * math.pi * u(2)
        # "several um" high, but never steeper than ~50 deg at the rim (H <= 0.6 b)
        height = np.minimum(p.cell_height[0] + (p.cell_height[1] - p.cell_height[0]) * u(3),
                            0.6 * b)
        room = (p.pitch - p.bar_width) / 2 - a - 2e-6
        room = np.maximum(room, 0.0)
        cx = m * p.pitch + (2 * u(4) - 1) * room
        cy = n * p.pitch + (2 * u(5) - 1) * room
        nr = 0.3 * b * u(6)
        nphi = 2 * math.pi * u(7)
        ids = np.stack([m, n, ks], axis=1)
        return SceneObjects(
            "cell", ids, cx, cy, a.copy(),
            {"a": a, "b": b, "cos": np.cos(theta), "sin": np.sin(theta), "height": height,
             "nx": cx + nr * np.cos(nphi), "ny": cy + nr * np.sin(nphi), "nradius": 0.35 * b,
             "nheight": 0.25 * height},
        )

    def particles(self, bbox, spacing: float | None = None,
                  population: str = "particle") -> SceneObjects:
        """Particles of a ``population`` whose lattice cell intersects ``bbox`` (m).

        Populations: ``"particle"`` (bright Pt blobs, 0.3-1.5 um, one lattice cell per 10 um)
        and ``"frost"`` (ice-crystal contamination, 60-300 nm, per 2 um). ``spacing`` (m, node
        spacing of a raster) widens particles smaller than ~0.75 node keeping their volume, so
        they neither alias nor vanish; a population far below the node spacing is skipped.
        """
        p = self.params
        pop = self.populations[population]
        L, prob, (dlo, dhi), salt = pop["spacing"], pop["probability"], pop["diameter"], pop["salt"]
        empty = SceneObjects(population, np.zeros((0, 3), dtype=np.int64), np.zeros(0),
                             np.zeros(0), np.zeros(0), {"r_true": np.zeros(0),
                                                        "height": np.zeros(0)})
        if spacing is not None and dhi < spacing / 1.5:
            return empty
        i0, i1 = math.floor(bbox[0] / L) - 1, math.floor(bbox[1] / L) + 1
        j0, j1 = math.floor(bbox[2] / L) - 1, math.floor(bbox[3] / L) + 1
        if (i1 - i0 + 1) * (j1 - j0 + 1) > 4_000_000:
            raise ValueError(f"{population} query region too large: {bbox}")
        # the lattice cells' particles, recently generated ones reused (nearby queries, such
        # as the steps of one ray march, ask for the same cells)
        key = (population, i0, i1, j0, j1)
        with self._particle_lock:
            hit = self._particle_cache.get(key)
            if hit is not None:
                self._particle_cache.move_to_end(key)
        if hit is None:
            ii, jj = np.meshgrid(np.arange(i0, i1 + 1), np.arange(j0, j1 + 1))
            ii, jj = ii.ravel(), jj.ravel()
            exists = uniform(self.seed, salt, ii, jj) < prob
            ii, jj = ii[exists], jj[exists]
            r = 0.5 * dlo * (dhi / dlo) ** uniform(self.seed, salt + 1, ii, jj)
            margin = r + 0.05 * L
            cx = ii * L + margin + (L - 2 * margin) * uniform(self.seed, salt + 2, ii, jj)
            cy = jj * L + margin + (L - 2 * margin) * uniform(self.seed, salt + 3, ii, jj)
            keep = np.hypot(cx, cy) < p.grid_radius - 5e-6
            hit = (ii[keep], jj[keep], r[keep], cx[keep], cy[keep])
            with self._particle_lock:
                self._particle_cache[key] = hit
                while len(self._particle_cache) > 32:
                    self._particle_cache.popitem(last=False)
        ii, jj, r, cx, cy = (a.copy() for a in hit)
        r_eff = r if spacing is None else np.maximum(r, 0.75 * spacing)
        # spherical caps 0.6 r high (rim ~62 deg); a widened cap keeps its volume: its
        # height scales with (r / r_eff)^2
        height = CAP * r * (r / r_eff) ** 2
        ids = np.stack([ii, jj, np.zeros_like(ii)], axis=1)
        return SceneObjects(population, ids, cx, cy, r_eff.copy(),
                            {"r_true": r, "height": height})

    def in_region(self, bbox, spacing):
        """Cells and every particle population in ``bbox``, ready for the profile functions."""
        cells = self.cells(bbox)
        cells.params.update(cx=cells.x, cy=cells.y)
        pops = []
        for name in self.populations:
            objs = self.particles(bbox, spacing, name)
            objs.params.update(radius=objs.radius)
            pops.append(objs)
        return cells, pops
