"""Scene: the procedural sample, composed of the grid, its relief, objects and patches."""

from __future__ import annotations

import math

import numpy as np

from ..materials import MATERIAL_IDS, material_table
from .objects import ObjectField, SceneObjects, cell_profile, particle_profile
from .parameters import SceneParameters
from .patches import UNIT_RATES, HeightPatch, apply_patch_points, erode_layers
from .raster import RasterPlan
from .raster_grid import RasterGrid
from .tem_grid import TemGrid
from .texture import make_waves, waves_at

__all__ = ["Scene"]

_ORG = MATERIAL_IDS["organic"]


class Scene:
    """The procedural sample (see :mod:`fibsem_ophyd.sim.scene`).

    Parameters
    ----------
    seed : int
        Seed of the texture tables and of the object hashes.
    params : SceneParameters, optional
        Dimensions; the defaults describe a 200-mesh gold grid with vitrified cells.
    """

    def __init__(self, seed: int = 0, params: SceneParameters | None = None):
        self.seed = int(seed) & 0x7FFFFFFFFFFFFFFF
        self.params = params or SceneParameters()
        self.patches: list[HeightPatch] = []
        #: the bare grid: bars, holes, film, ice (:mod:`~fibsem_ophyd.sim.scene.tem_grid`)
        self.tem_grid = TemGrid(self.params, self.seed)
        #: cells and particles (:mod:`~fibsem_ophyd.sim.scene.objects`)
        self.objects = ObjectField(self.params, self.seed, self.tem_grid)
        #: bumped on every modification; renderer caches key on it
        self.version = 0
        p = self.params
        rng = np.random.default_rng([self.seed, 0x5CE7E])
        n_wav = max(1, round(math.log2(p.waviness_wavelengths[1] / p.waviness_wavelengths[0])))
        k_w = n_wav * max(2, p.waves_per_octave // 2)
        self.waviness = make_waves(
            rng, *p.waviness_wavelengths, max(2, p.waves_per_octave // 2),
            lambda lam, n: np.full(n, p.waviness_rms * math.sqrt(2.0 / k_w)),
        )
        # constant rms slope per octave: amplitude proportional to wavelength
        per = p.waves_per_octave
        self.texture = make_waves(
            rng, *p.texture_wavelengths, per,
            lambda lam, n: p.texture_slope * lam / (2 * math.pi) * math.sqrt(2.0 / per),
        )
        self.tex_factor = material_table("texture")
        self.max_tex_factor = float(self.tex_factor.max())

    # ------------------------------------------------------------------ modification
    def add_patch(self, patch: HeightPatch) -> None:
        """Add a local height/material modification (e.g. from milling)."""
        self.patches.append(patch)
        self.version += 1

    def clear_patches(self) -> None:
        self.patches.clear()
        self.version += 1

    # ------------------------------------------------------------------ parts
    def hole_index(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Integer (m, n) of the hole whose cell of the bar lattice contains (x, y)."""
        return self.tem_grid.hole_index(x, y)

    def cells(self, bbox) -> SceneObjects:
        """Cells whose hole intersects ``bbox`` = (xmin, xmax, ymin, ymax) (m)."""
        return self.objects.cells(bbox)

    def particles(self, bbox, spacing: float | None = None,
                  population: str = "particle") -> SceneObjects:
        """Particles of a ``population`` whose lattice cell intersects ``bbox`` (m) (see
        :meth:`~fibsem_ophyd.sim.scene.objects.ObjectField.particles`)."""
        return self.objects.particles(bbox, spacing, population)

    def evaluate(self, x, y, spacing: float | None = None,
                 patch_materials: bool = True) -> tuple[np.ndarray, np.ndarray]:
        """Height (m, above the film plane) and material id at sample points.

        Parameters
        ----------
        x, y : array_like
            Sample-frame coordinates (m), any matching shape.
        spacing : float, optional
            Band limit (m): drop detail finer than ~2 ``spacing`` as the renderer does at that
            node spacing. ``None`` gives the full-detail surface.
        patch_materials : bool
            ``False``: the sample's own material, under any deposited layer (skips the
            materials of deposited layers and of what milling exposed; heights are the same
            either way).
        """
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        shape = np.broadcast_shapes(x.shape, y.shape)
        x, y = np.broadcast_to(x, shape).ravel(), np.broadcast_to(y, shape).ravel()
        if x.size == 0:
            return np.zeros(shape), np.zeros(shape, dtype=np.uint8)
        bbox = (float(x.min()), float(x.max()), float(y.min()), float(y.max()))
        ox, oy = self.tem_grid.origin(0.5 * (bbox[0] + bbox[1]), 0.5 * (bbox[2] + bbox[3]))
        h, mat, _ = self.tem_grid.base(x - ox, y - oy, ox, oy, self.tem_grid.needs_radius(bbox),
                               dtype=np.float64)
        h = h + waves_at(self.waviness, x, y, spacing)
        cells, pops = self.objects.in_region(bbox, spacing)
        kinds = [(cells, cell_profile)] + [(q, particle_profile) for q in pops]
        for objs, prof in kinds:
            acc = np.zeros_like(h)
            if len(objs) and x.size * len(objs) <= 1 << 20:
                # every (point, object) pair at once: the object's square around the point
                dx = x[:, None] - objs.x[None, :]
                dy = y[:, None] - objs.y[None, :]
                r = objs.radius[None, :]
                pt, k = np.nonzero((np.abs(dx) <= r) & (np.abs(dy) <= r))
                if pt.size:
                    np.maximum.at(acc, pt, prof(dx[pt, k], dy[pt, k], objs.params, k))
            else:
                for k in range(len(objs)):
                    r = objs.radius[k]
                    near = np.nonzero((np.abs(x - objs.x[k]) <= r)
                                      & (np.abs(y - objs.y[k]) <= r))[0]
                    if near.size:
                        v = prof(x[near] - objs.x[k], y[near] - objs.y[k], objs.params, k)
                        acc[near] = np.maximum(acc[near], v)
            h = h + acc
            if objs.kind == "cell":
                mat = np.where(acc > 5e-8, np.uint8(_ORG), mat)
            else:
                mid = self.objects.populations[objs.kind]["material"]
                mat = np.where(acc > 0, np.uint8(mid), mat)
        h = h + self.tex_factor[mat] * waves_at(self.texture, x, y, spacing)
        for patch in self.patches:
            h, mat = apply_patch_points(patch, x, y, h, mat, patch_materials)
        return h.reshape(shape), mat.reshape(shape)

    def height(self, x, y, spacing: float | None = None) -> np.ndarray:
        """Surface height (m) above the film plane at sample points (see :meth:`evaluate`)."""
        return self.evaluate(x, y, spacing)[0]

    def layers_at(self, x, y) -> list[tuple[int, np.ndarray]]:
        """Deposited layers left at sample points, bottom first: ``(material id, thickness
        m)`` per deposition, after every later milling took its ``removed`` thickness off the
        top (layers first, top down). Thicknesses are arrays of the points' shape."""
        x = np.asarray(x, dtype=np.float64)
        y = np.asarray(y, dtype=np.float64)
        x, y = np.broadcast_arrays(x, y)
        stack: list[tuple[int, np.ndarray]] = []
        for patch in self.patches:
            if patch.layer is not None:
                stack.append((int(patch.layer), patch.values(patch.dh, x, y)))
            elif patch.removed is not None and stack:
                erode_layers(stack, patch.values(patch.removed, x, y), UNIT_RATES)
        return stack

    def height_bounds(self, bbox) -> tuple[float, float]:
        """Conservative (min, max) of the height (m) over a sample-frame ``bbox``.

        The grid, film, ice and the surface waves are sampled on a coarse lattice (<= 32 x 32,
        a quarter bar width apart where possible); each wave adds the most it can deviate
        between lattice points; cells and particles add their heights.
        """
        p = self.params
        xmin, xmax, ymin, ymax = bbox
        step = p.bar_width / 4
        nx = int(min(32, max(2, math.ceil((xmax - xmin) / step) + 1)))
        ny = int(min(32, max(2, math.ceil((ymax - ymin) / step) + 1)))
        x1, y1 = np.linspace(xmin, xmax, nx), np.linspace(ymin, ymax, ny)
        xs, ys = np.meshgrid(x1, y1)
        xs, ys = xs.ravel(), ys.ravel()
        d = max((xmax - xmin) / (nx - 1), (ymax - ymin) / (ny - 1))
        ox, oy = self.tem_grid.origin(0.5 * (xmin + xmax), 0.5 * (ymin + ymax))
        need_r = self.tem_grid.needs_radius(bbox)
        hb, mat, _ = self.tem_grid.base(xs - ox, ys - oy, ox, oy, need_r, dtype=np.float64)
        slack = 0.0
        for waves, factor in ((self.waviness, None), (self.texture, self.tex_factor)):
            # on the lattice: sin(a_x + b_y) = sin a_x cos b_y + cos a_x sin b_y per wave
            a = np.outer(x1, waves.kx) + waves.phase
            b = np.outer(y1, waves.ky)
            v = ((np.cos(b) * waves.amp) @ np.sin(a).T + (np.sin(b) * waves.amp) @ np.cos(a).T)
            v = v.ravel()
            hb = hb + (v if factor is None else v * factor[mat])
            k = np.hypot(waves.kx, waves.ky)
            dev = float(np.sum(waves.amp * np.minimum(1.0, (k * d / 2) ** 2 / 2)))
            slack += dev * (1.0 if factor is None else self.max_tex_factor)
        lo, hi = float(hb.min()) - slack, float(hb.max()) + slack
        if d > step * 1.01:
            hi = max(hi, p.bar_height + slack)    # the lattice may step over a bar
        if need_r:
            lo = min(lo, -p.holder_depth - slack)
            hi = max(hi, p.bar_height + slack)
        cells = self.cells(bbox)
        if len(cells):
            r = cells.radius
            near = ((cells.x + r >= xmin) & (cells.x - r <= xmax)
                    & (cells.y + r >= ymin) & (cells.y - r <= ymax))
            if near.any():
                hi += float((cells.params["height"] + cells.params["nheight"])[near].max())
        hi += max(q["diameter"][1] for q in self.objects.populations.values()) / 2
        for patch in self.patches:  # those that reach the bbox (they add up where they meet)
            px0, px1, py0, py1 = patch.bbox
            if px1 < xmin or px0 > xmax or py1 < ymin or py0 > ymax:
                continue
            lo += min(0.0, float(patch.dh.min()))
            hi += max(0.0, float(patch.dh.max()))
        return lo, hi

    def rasterize(self, grid: RasterGrid, coverage: bool = False):
        """Height (float32, m) and material (uint8) on an affine grid of sample points.

        Same surface as :meth:`evaluate` with ``spacing`` = the grid's node spacing (up to the
        float32 rounding and the per-wave anti-aliasing taper, which here uses the true phase
        step along each grid axis).

        With ``coverage=True`` returns ``(height, material, layers)``: ``layers`` is a list of
        ``(material_id, (flat_index, coverage))`` (float32 0..1 at the listed nodes: the grid
        metal, then each particle population) with anti-aliased one-node ramps at their
        boundaries, to be blended in order over ``material`` (:func:`blend_layer`); so a bar or
        particle edge moves continuously with the sample instead of in node steps. Nodes fully
        covered by the grid metal already carry its material. The work is done by a
        :class:`RasterPlan`, which can also produce the raster a block of rows at a time.
        """
        h, mat, layers, _ = RasterPlan(self, grid).block(0, grid.nj)
        if coverage:
            return h, mat, layers
        mf = mat.reshape(-1)
        for mid, c in layers:
            mf[c[0][c[1] >= 0.5]] = mid
        return h, mat
