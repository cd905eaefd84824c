"""Procedural sample: a cryo-EM grid with ice, cells and particles, in the SAMPLE frame.

Everything is a function of the sample-frame position (metres), so the scene can be evaluated
at any point, at any stage position and magnification:

* a 3 mm TEM grid centred at sample (0, 0): square holes on a ``pitch`` lattice (a hole centre
  at the origin), metal bars raised ``bar_height`` above the support film, a solid rim outside
  ``mesh_radius``, the holder below the film outside ``grid_radius``;
* a carbon film in every hole; most holes carry an ice layer of per-hole thickness with a
  meniscus rising towards the bars;
* a band-limited random surface (sum of plane waves with random direction and phase,
  log-spaced wavelengths): a large-scale waviness of the whole grid plus a fine texture whose
  amplitude depends on the material;
* cells (ellipsoidal domes with a nucleus) placed by hashing the hole index, particles (bright
  spherical caps) placed by hashing a 10 um lattice: deterministic from the seed, no storage.

:meth:`Scene.evaluate` works at arbitrary points (used by the ground truth). :meth:`Scene.rasterize`
is the fast path of the renderer: it evaluates the same functions on an affine grid of sample
points (the plane intersections of an image's pixels), where the plane-wave texture becomes a
low-rank matrix product and the objects are stamped only over their footprints. Both paths are
anti-aliased for the node spacing they are given (waves shorter than ~2 nodes are dropped,
sub-node particles are widened with their volume kept).

Local modifications (milling, deposition) are :class:`HeightPatch` objects added on top of the
procedural height with :meth:`Scene.add_patch`; every change bumps :attr:`Scene.version`, which
the renderer's caches key on.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from .materials import MATERIAL_IDS, material_table

__all__ = ["SceneParameters", "HeightPatch", "RasterGrid", "RasterPlan", "Scene", "SceneObjects",
           "blend_layer", "erode_layers"]

_AU = MATERIAL_IDS["Au"]
_C = MATERIAL_IDS["C"]
_ICE = MATERIAL_IDS["ice"]
_ORG = MATERIAL_IDS["organic"]
_PT = MATERIAL_IDS["Pt"]
_CU = MATERIAL_IDS["Cu"]
#: one metre of thickness per metre: what :func:`erode_layers` takes to remove thicknesses
_UNIT_RATES = np.ones(len(MATERIAL_IDS))

# salts of the per-object hash streams
_S_ICED, _S_THICK, _S_NCELL, _S_CELL, _S_PART, _S_FROST = 11, 12, 13, 100, 200, 300

# particle caps: apex height / base radius, and the sphere radius / base radius
_CAP = 0.6
_CAP_R = (1.0 + _CAP**2) / (2 * _CAP)

_G = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


_MASK = (1 << 64) - 1


def _splitmix(x: np.ndarray) -> np.ndarray:
    x = x + _G
    t = x >> np.uint64(30)
    x ^= t
    x *= _M1
    np.right_shift(x, np.uint64(27), out=t)
    x ^= t
    x *= _M2
    np.right_shift(x, np.uint64(31), out=t)
    x ^= t
    return x


def _splitmix_int(x: int) -> int:
    """:func:`_splitmix` of one unsigned 64-bit integer (Python ints, wrapped to 64 bits)."""
    x = (x + int(_G)) & _MASK
    x = ((x ^ (x >> 30)) * int(_M1)) & _MASK
    x = ((x ^ (x >> 27)) * int(_M2)) & _MASK
    return x ^ (x >> 31)


def _uniform(seed: int, salt, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Deterministic uniform [0, 1) per integer pair (i, j) for a stream ``salt``."""
    i, j = np.broadcast_arrays(np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64))
    shape = i.shape
    i = i.reshape(-1).view(np.uint64)
    j = j.reshape(-1).view(np.uint64)
    if np.ndim(salt) == 0:
        h = i ^ np.uint64(_splitmix_int((seed * int(_M2) + int(salt)) & _MASK))
    else:
        salt = np.broadcast_to(np.asarray(salt, dtype=np.int64), shape).reshape(-1)
        h = _splitmix(np.full(i.shape, seed, dtype=np.uint64) * _M2
                      + salt.view(np.uint64)) ^ i
    h = _splitmix(h)
    h ^= j * _M1
    h = _splitmix(h)
    h >>= np.uint64(11)
    return (h.astype(np.float64) * (1.0 / 9007199254740992.0)).reshape(shape)


def _wrap_phase(p: np.ndarray) -> np.ndarray:
    """Phases (rad, float64) reduced to [0, 2 pi) and rounded to float32."""
    two_pi = 2 * math.pi
    k = np.multiply(p, 1.0 / two_pi)
    np.floor(k, out=k)
    k *= two_pi
    return np.subtract(p, k, out=k).astype(np.float32)


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


def _smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


@dataclass(frozen=True)
class SceneParameters:
    """Dimensions of the procedural grid (metres unless noted)."""

    grid_radius: float = 1.5e-3
    mesh_radius: float = 1.05e-3
    pitch: float = 125e-6               # 200 mesh
    bar_width: float = 35e-6
    bar_height: float = 10e-6           # bar top above the support film
    bar_edge: float = 8e-6              # width of the rounded bar edge (walls ~60 deg)
    rim_edge: float = 20e-6             # width of the grid's outer edge down to the holder
    holder_depth: float = 20e-6         # holder surface below the film, outside the grid
    ice_thickness: tuple[float, float] = (1e-6, 3e-6)
    meniscus_height: float = 1.5e-6
    meniscus_length: float = 8e-6
    bare_fraction: float = 0.15         # holes with bare carbon film (no ice)
    max_cells_per_hole: int = 4
    cell_diameter: tuple[float, float] = (5e-6, 20e-6)
    cell_height: tuple[float, float] = (2e-6, 6e-6)
    particle_spacing: float = 10e-6     # hash lattice of the particles
    particle_probability: float = 0.6
    particle_diameter: tuple[float, float] = (0.3e-6, 1.5e-6)
    frost_spacing: float = 2e-6         # ice-crystal contamination
    frost_probability: float = 0.5
    frost_diameter: tuple[float, float] = (0.06e-6, 0.3e-6)
    waviness_rms: float = 0.5e-6        # large-scale undulation of the whole grid
    waviness_wavelengths: tuple[float, float] = (20e-6, 1.28e-3)
    texture_slope: float = 0.05         # rms slope contributed by each octave of texture
    texture_wavelengths: tuple[float, float] = (20e-9, 20e-6)
    waves_per_octave: int = 8


@dataclass
class HeightPatch:
    """A local raster modification of the scene (milling, deposition).

    Node ``(a, b)`` sits at sample ``(x0 + a*spacing, y0 + b*spacing)``; ``dh[b, a]`` (m) is
    added to the procedural height (bilinear between nodes); ``material[b, a]`` replaces the
    material where it is not 255 (nearest node).

    Deposited layers and what milling takes off them (:meth:`Scene.layers_at`): a patch with
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


@dataclass(frozen=True)
class RasterGrid:
    """Affine grid of sample points: node ``(i, j)`` (column i, row j) is at
    ``origin + i*di + j*dj`` (sample frame, metres); the array shape is ``(nj, ni)``."""

    origin: tuple[float, float]
    di: tuple[float, float]
    dj: tuple[float, float]
    ni: int
    nj: int

    def jacobian(self) -> np.ndarray:
        """2x2 matrix whose columns are ``di`` and ``dj``."""
        return np.array([[self.di[0], self.dj[0]], [self.di[1], self.dj[1]]])

    def bbox(self) -> tuple[float, float, float, float]:
        o = np.array(self.origin)
        corners = [o, o + (self.ni - 1) * np.array(self.di), o + (self.nj - 1) * np.array(self.dj),
                   o + (self.ni - 1) * np.array(self.di) + (self.nj - 1) * np.array(self.dj)]
        c = np.array(corners)
        return (float(c[:, 0].min()), float(c[:, 0].max()),
                float(c[:, 1].min()), float(c[:, 1].max()))

    def spacing(self) -> float:
        """Geometric-mean node spacing (m)."""
        return math.sqrt(math.hypot(*self.di) * math.hypot(*self.dj))


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


@dataclass(frozen=True)
class _Waves:
    kx: np.ndarray
    ky: np.ndarray
    phase: np.ndarray
    amp: np.ndarray

    @property
    def bound(self) -> float:
        """Practical bound of the field: 4.5 rms (or the hard sum of amplitudes if lower)."""
        rms = math.sqrt(float(np.sum(self.amp**2)) / 2)
        return min(float(np.abs(self.amp).sum()), 4.5 * rms)


def _make_waves(rng: np.random.Generator, lo: float, hi: float, per_octave: int, amp_fn) -> _Waves:
    n_oct = max(1, int(round(math.log2(hi / lo))))
    n = n_oct * per_octave
    # stratified log-spaced wavelengths so every octave is represented evenly
    strata = (np.arange(n) + rng.random(n)) / n
    lam = lo * (hi / lo) ** strata
    # orientations evenly spread within each octave (a random permutation of strata), so
    # every band is isotropic instead of a few dominant ripples
    q = np.arange(n) % per_octave
    theta = np.empty(n)
    for o in range(n_oct):
        sl = slice(o * per_octave, (o + 1) * per_octave)
        theta[sl] = (rng.permutation(q[sl]) + rng.random(per_octave)) * (math.pi / per_octave)
    k = 2 * math.pi / lam
    return _Waves(k * np.cos(theta), k * np.sin(theta), rng.random(n) * 2 * math.pi, amp_fn(lam, n))


class Scene:
    """The procedural sample (see the module docstring).

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
        self._cell_table: SceneObjects | None = None
        self._hole_table: tuple[int, np.ndarray] | None = None
        self._particle_cache: OrderedDict = OrderedDict()
        self._particle_lock = threading.Lock()
        #: bumped on every modification; renderer caches key on it
        self.version = 0
        p = self.params
        rng = np.random.default_rng([self.seed, 0x5CE7E])
        n_wav = max(1, round(math.log2(p.waviness_wavelengths[1] / p.waviness_wavelengths[0])))
        k_w = n_wav * max(2, p.waves_per_octave // 2)
        self._waviness = _make_waves(
            rng, *p.waviness_wavelengths, max(2, p.waves_per_octave // 2),
            lambda lam, n: np.full(n, p.waviness_rms * math.sqrt(2.0 / k_w)),
        )
        # constant rms slope per octave: amplitude proportional to wavelength
        per = p.waves_per_octave
        self._texture = _make_waves(
            rng, *p.texture_wavelengths, per,
            lambda lam, n: p.texture_slope * lam / (2 * math.pi) * math.sqrt(2.0 / per),
        )
        self._tex_factor = material_table("texture")
        self._max_tex_factor = float(self._tex_factor.max())
        self._populations = {
            "particle": {"spacing": p.particle_spacing, "probability": p.particle_probability,
                         "diameter": p.particle_diameter, "salt": _S_PART, "material": _PT},
            "frost": {"spacing": p.frost_spacing, "probability": p.frost_probability,
                      "diameter": p.frost_diameter, "salt": _S_FROST, "material": _ICE},
        }

    # ------------------------------------------------------------------ modification
    def add_patch(self, patch: HeightPatch) -> None:
        """Add a local height/material modification (e.g. from milling)."""
        self.patches.append(patch)
        self.version += 1

    def clear_patches(self) -> None:
        self.patches.clear()
        self.version += 1

    # ------------------------------------------------------------------ hole properties
    def _hole_props(self, m: np.ndarray, n: np.ndarray):
        p = self.params
        iced = _uniform(self.seed, _S_ICED, m, n) >= p.bare_fraction
        lo, hi = p.ice_thickness
        thick = np.where(iced, lo + (hi - lo) * _uniform(self.seed, _S_THICK, m, n), 0.0)
        return iced, thick

    def hole_index(self, x, y) -> tuple[np.ndarray, np.ndarray]:
        """Integer (m, n) of the hole whose cell of the bar lattice contains (x, y)."""
        pitch = self.params.pitch
        return (np.round(np.asarray(x) / pitch).astype(np.int64),
                np.round(np.asarray(y) / pitch).astype(np.int64))

    # ------------------------------------------------------------------ base surface
    def _hole_tables(self, m0: int, m1: int, n0: int, n1: int, dtype):
        """Ice thickness per hole (0 = bare film) for holes m0..m1 x n0..n1, as (n, m)."""
        if self._hole_table is None:        # every hole of the grid, generated once
            r = int(math.ceil(self.params.grid_radius / self.params.pitch)) + 2
            mm, nn = np.meshgrid(np.arange(-r, r + 1), np.arange(-r, r + 1))
            self._hole_table = (r, self._hole_props(mm, nn)[1])
        r, table = self._hole_table
        if -r <= m0 and m1 <= r and -r <= n0 and n1 <= r:
            return table[n0 + r:n1 + r + 1, m0 + r:m1 + r + 1].astype(dtype)
        mm, nn = np.meshgrid(np.arange(m0, m1 + 1), np.arange(n0, n1 + 1))
        _, thick = self._hole_props(mm, nn)
        return thick.astype(dtype)

    def _compose(self, w, men, thick, dtype):
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

    def _axis_terms(self, u, dtype, ramp=None):
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

    def _base(self, lx, ly, ox: float, oy: float, need_radius: bool, dtype=np.float32,
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
        rx_, wx, mx, cx = self._axis_terms(np.asarray(lx, dtype=dtype) * inv, dtype, rmp[0])
        ry_, wy, my, cy = self._axis_terms(np.asarray(ly, dtype=dtype) * inv, dtype, rmp[1])
        # w and the meniscus are monotonic in max(|fx|, |fy|): combine the axes by max
        w = np.maximum(wx, wy)
        men = np.maximum(mx, my)
        cov = np.maximum(cx, cy)
        mo, no = int(round(ox / p.pitch)), int(round(oy / p.pitch))
        m0, m1 = int(rx_.min()), int(rx_.max())
        n0, n1 = int(ry_.min()), int(ry_.max())
        tab = self._hole_tables(m0 + mo, m1 + mo, n0 + no, n1 + no, dtype)
        ncol = m1 - m0 + 1
        # hole index as float (exact small integers), one gather from the per-hole table
        flat = (ry_ - dtype(n0)) * dtype(ncol) + (rx_ - dtype(m0))
        thick = tab.reshape(-1)[flat.astype(np.intp)]
        shape = np.broadcast_shapes(np.shape(lx), np.shape(ly))
        if thick.shape != shape:
            thick = np.broadcast_to(thick, shape)
        if men.shape != shape:
            men = np.broadcast_to(men, shape).copy()
        h, mat = self._compose(w, men, thick, dtype)
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

    def _needs_radius(self, bbox) -> bool:
        xmin, xmax, ymin, ymax = bbox
        # farthest corner beyond the mesh radius or nearest point ... either way check corners
        far = max(math.hypot(x, y) for x in (xmin, xmax) for y in (ymin, ymax))
        return far > self.params.mesh_radius - 2 * self.params.bar_edge

    def _origin(self, x: float, y: float) -> tuple[float, float]:
        pitch = self.params.pitch
        return round(x / pitch) * pitch, round(y / pitch) * pitch

    # ------------------------------------------------------------------ objects
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
        iced, _ = self._hole_props(mm, nn)
        inside = np.hypot(mm * p.pitch, nn * p.pitch) < p.mesh_radius - p.pitch
        ncell = np.floor(_uniform(self.seed, _S_NCELL, mm, nn) * (p.max_cells_per_hole + 1))
        ncell = np.where(iced & inside, ncell, 0).astype(np.int64)
        sel = [np.nonzero(ncell > k)[0] for k in range(p.max_cells_per_hole)]
        ks = np.concatenate([np.full(len(s), k) for k, s in enumerate(sel)]).astype(np.int64)
        idx = np.concatenate(sel)
        m, n = mm[idx], nn[idx]

        def u(q):
            return _uniform(self.seed, _S_CELL + 16 * ks + q, m, n)

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
        pop = self._populations[population]
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
            exists = _uniform(self.seed, salt, ii, jj) < prob
            ii, jj = ii[exists], jj[exists]
            r = 0.5 * dlo * (dhi / dlo) ** _uniform(self.seed, salt + 1, ii, jj)
            margin = r + 0.05 * L
            cx = ii * L + margin + (L - 2 * margin) * _uniform(self.seed, salt + 2, ii, jj)
            cy = jj * L + margin + (L - 2 * margin) * _uniform(self.seed, salt + 3, ii, jj)
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
        height = _CAP * r * (r / r_eff) ** 2
        ids = np.stack([ii, jj, np.zeros_like(ii)], axis=1)
        return SceneObjects(population, ids, cx, cy, r_eff.copy(),
                            {"r_true": r, "height": height})

    @staticmethod
    def _cell_profile(dx, dy, P: dict, k) -> np.ndarray:
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

    @staticmethod
    def _particle_profile(dx, dy, P: dict, k) -> np.ndarray:
        """Spherical cap of base radius ``radius`` and apex ``height``."""
        r = P["radius"][k]
        rho2 = (dx * dx + dy * dy) / (r * r)
        f = (np.sqrt(np.maximum(_CAP_R * _CAP_R - rho2, 0.0)) - (_CAP_R - _CAP)) / _CAP
        return P["height"][k] * np.maximum(f, 0.0)

    def _objects(self, bbox, spacing):
        """Cells and every particle population in ``bbox``, ready for the profile functions."""
        cells = self.cells(bbox)
        cells.params.update(cx=cells.x, cy=cells.y)
        pops = []
        for name in self._populations:
            objs = self.particles(bbox, spacing, name)
            objs.params.update(radius=objs.radius)
            pops.append(objs)
        return cells, pops

    # ------------------------------------------------------------------ texture
    def _taper(self, waves: _Waves, steps: list[np.ndarray]) -> np.ndarray:
        """Anti-aliasing weight per wave: 1 below pi/2 phase per node, 0 at Nyquist."""
        worst = np.zeros_like(waves.amp)
        for st in steps:
            worst = np.maximum(worst, np.abs(st))
        return np.clip(2.0 - worst / (math.pi / 2), 0.0, 1.0)

    def _wave_factors(self, waves: _Waves, grid: RasterGrid):
        """The waves on an affine grid as two float32 factors ``(left (nj, 2K), right (2K, ni))``
        whose product is the field (``sin(a + b) = sin a cos b + cos a sin b``); ``None`` when
        every wave is finer than the grid resolves."""
        ox, oy = grid.origin
        b = waves.kx * grid.di[0] + waves.ky * grid.di[1]      # phase step per column
        g = waves.kx * grid.dj[0] + waves.ky * grid.dj[1]      # phase step per row
        amp = waves.amp * self._taper(waves, [b, g])
        keep = amp != 0
        if not keep.any():
            return None
        amp, b, g = amp[keep], b[keep], g[keep]
        alpha = np.mod(waves.kx[keep] * ox + waves.ky[keep] * oy + waves.phase[keep], 2 * math.pi)
        ii = np.arange(grid.ni)
        jj = np.arange(grid.nj)
        # phases reduced to [0, 2 pi) in float64, their sines and cosines in float32
        pc = _wrap_phase(alpha[:, None] + b[:, None] * ii[None, :])          # (K, ni)
        pr = _wrap_phase(g[None, :] * jj[:, None])                          # (nj, K)
        # sin(pc + pr) = sin(pc) cos(pr) + cos(pc) sin(pr)
        k = len(amp)
        a32 = amp.astype(np.float32)
        left = np.empty((grid.nj, 2 * k), dtype=np.float32)
        np.multiply(np.cos(pr), a32, out=left[:, :k])
        np.multiply(np.sin(pr), a32, out=left[:, k:])
        right = np.empty((2 * k, grid.ni), dtype=np.float32)
        np.sin(pc, out=right[:k])
        np.cos(pc, out=right[k:])
        return left, right

    @staticmethod
    def _waves_at(waves: _Waves, x: np.ndarray, y: np.ndarray, spacing: float | None):
        amp = waves.amp
        if spacing is not None:
            k = np.hypot(waves.kx, waves.ky)
            amp = amp * np.clip(2.0 - k * spacing / (math.pi / 2), 0.0, 1.0)
        out = np.zeros(x.shape, dtype=np.float64)
        xf, yf, of = x.ravel(), y.ravel(), out.reshape(-1)
        for s in range(0, xf.size, 4096):
            ph = np.outer(xf[s:s + 4096], waves.kx) + np.outer(yf[s:s + 4096], waves.ky)
            of[s:s + 4096] = np.sin(ph + waves.phase) @ amp
        return out

    # ------------------------------------------------------------------ public evaluation
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
        ox, oy = self._origin(0.5 * (bbox[0] + bbox[1]), 0.5 * (bbox[2] + bbox[3]))
        h, mat, _ = self._base(x - ox, y - oy, ox, oy, self._needs_radius(bbox),
                               dtype=np.float64)
        h = h + self._waves_at(self._waviness, x, y, spacing)
        cells, pops = self._objects(bbox, spacing)
        kinds = [(cells, self._cell_profile)] + [(q, self._particle_profile) for q in pops]
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
                mat = np.where(acc > 0, np.uint8(self._populations[objs.kind]["material"]), mat)
        h = h + self._tex_factor[mat] * self._waves_at(self._texture, x, y, spacing)
        for patch in self.patches:
            h, mat = self._apply_patch_points(patch, x, y, h, mat, patch_materials)
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
                erode_layers(stack, patch.values(patch.removed, x, y), _UNIT_RATES)
        return stack

    @staticmethod
    def _apply_patch_points(patch: HeightPatch, x, y, h, mat, materials: bool = True):
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

    # ------------------------------------------------------------------ bounds
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
        ox, oy = self._origin(0.5 * (xmin + xmax), 0.5 * (ymin + ymax))
        need_r = self._needs_radius(bbox)
        hb, mat, _ = self._base(xs - ox, ys - oy, ox, oy, need_r, dtype=np.float64)
        slack = 0.0
        for waves, factor in ((self._waviness, None), (self._texture, self._tex_factor)):
            # on the lattice: sin(a_x + b_y) = sin a_x cos b_y + cos a_x sin b_y per wave
            a = np.outer(x1, waves.kx) + waves.phase
            b = np.outer(y1, waves.ky)
            v = ((np.cos(b) * waves.amp) @ np.sin(a).T + (np.sin(b) * waves.amp) @ np.cos(a).T)
            v = v.ravel()
            hb = hb + (v if factor is None else v * factor[mat])
            k = np.hypot(waves.kx, waves.ky)
            dev = float(np.sum(waves.amp * np.minimum(1.0, (k * d / 2) ** 2 / 2)))
            slack += dev * (1.0 if factor is None else self._max_tex_factor)
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
        hi += max(q["diameter"][1] for q in self._populations.values()) / 2
        for patch in self.patches:  # those that reach the bbox (they add up where they meet)
            px0, px1, py0, py1 = patch.bbox
            if px1 < xmin or px0 > xmax or py1 < ymin or py0 > ymax:
                continue
            lo += min(0.0, float(patch.dh.min()))
            hi += max(0.0, float(patch.dh.max()))
        return lo, hi

    # ------------------------------------------------------------------ raster (fast path)
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

    def _stamp(self, grid: RasterGrid, objs: SceneObjects, *profiles,
               extent: list | None = None) -> list | None:
        """Max-composite each profile of the objects onto the grid.

        Returns one float32 (nj, ni) array per profile, or ``None`` if no object is visible.
        Stamps reach one node beyond the objects' radii (room for anti-aliased coverage).
        ``extent``, when given, receives ``[i0, i1, j0, j1]``: a node range outside which
        every profile is zero.
        """
        ni, nj = grid.ni, grid.nj
        visible = self._visible_objects(grid, objs)
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

    @staticmethod
    def _visible_objects(grid: RasterGrid, objs: SceneObjects):
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

    def _particle_stamps(self, grid: RasterGrid, objs: SceneObjects, node: float):
        """Height (spherical caps, :meth:`_particle_profile`) and anti-aliased coverage (a
        one-node linear ramp centred on the rim, ``node`` = node size, m) of a particle
        population on the grid, max-composited where particles overlap.

        Returns ``(flat_index, height, coverage)`` over the nodes a particle covers, indices
        sorted and unique (the height's support lies inside the coverage's), or ``None``.
        """
        ni, nj = grid.ni, grid.nj
        f32 = np.float32
        visible = self._visible_objects(grid, objs)
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
                f = np.sqrt(np.maximum(f32(_CAP_R * _CAP_R) - rho2, 0.0))
                f -= f32(_CAP_R - _CAP)
                f *= f32(1.0 / _CAP)
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

    @staticmethod
    def _apply_patch_separable(patch: HeightPatch, grid: RasterGrid, h: np.ndarray,
                               mat: np.ndarray, ii: np.ndarray, jj: np.ndarray):
        """:meth:`_apply_patch_points` on an axis-aligned grid, where the patch coordinate
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

    @staticmethod
    def _apply_patch_grid(patch: HeightPatch, grid: RasterGrid, h: np.ndarray, mat: np.ndarray,
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
        sep = Scene._apply_patch_separable(patch, grid, h, mat, ii, jj)
        if sep is not None:
            if sep[0] is None:
                return
            (j0, j1, i0, i1), changed = sep
        else:
            x = grid.origin[0] + ii[None, :] * grid.di[0] + jj[:, None] * grid.dj[0]
            y = grid.origin[1] + ii[None, :] * grid.di[1] + jj[:, None] * grid.dj[1]
            hb = h[j0:j1, i0:i1].astype(np.float64)
            mb = mat[j0:j1, i0:i1]
            hn, mn = Scene._apply_patch_points(patch, x.ravel(), y.ravel(), hb.ravel(),
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


def _runs(values: np.ndarray) -> list[tuple[int, int]]:
    """``(start, stop)`` of the runs of equal values of a 1-D array."""
    if values.size == 0:
        return []
    cut = np.flatnonzero(values[1:] != values[:-1]) + 1
    edges = [0, *cut.tolist(), int(values.size)]
    return list(zip(edges[:-1], edges[1:], strict=True))


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

    def __init__(self, scene: Scene, grid: RasterGrid, executor=None):
        """``executor`` (a :class:`concurrent.futures.Executor`), when given, builds the wave
        fields and the particle stamps on its workers while this thread builds the rest."""
        self.scene, self.grid = scene, grid
        p = scene.params
        f32 = np.float32
        ni, nj = grid.ni, grid.nj
        bbox = grid.bbox()
        self.ox, self.oy = scene._origin(0.5 * (bbox[0] + bbox[1]), 0.5 * (bbox[2] + bbox[3]))
        self.need_radius = scene._needs_radius(bbox)
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
            return scene._wave_factors(w, grid)

        def particles(name):
            objs = scene.particles(bbox, spacing, name)
            if not len(objs):
                return None
            objs.params.update(radius=objs.radius)
            st = scene._particle_stamps(grid, objs, spacing)
            return None if st is None else (scene._populations[name]["material"], *st)

        jobs = [(waves, scene._waviness), (waves, scene._texture)]
        jobs += [(particles, name) for name in scene._populations]
        if executor is not None:
            futures = [executor.submit(f, a) for f, a in jobs]
        cells = scene.cells(bbox)
        cells.params.update(cx=cells.x, cy=cells.y)
        self.cells = None
        if len(cells):
            ext: list = []
            st = scene._stamp(grid, cells, scene._cell_profile, extent=ext)
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
        tx = self.scene._axis_terms(self.lx.ravel() * inv, f32, self.ramps[0] / p.pitch)
        ty = self.scene._axis_terms(self.ly.ravel() * inv, f32, self.ramps[1] / p.pitch)
        col, row = (tx, ty) if self.mode == "xy" else (ty, tx)
        mh = f32(p.meniscus_height)
        self.col_w, self.row_w = col[1], row[1]
        self.col_men, self.row_men = col[2] * mh, row[2] * mh
        self.col_cov, self.row_cov = col[3], row[3]
        mo, no = int(round(self.ox / p.pitch)), int(round(self.oy / p.pitch))
        m0, m1 = int(tx[0].min()), int(tx[0].max())
        n0, n1 = int(ty[0].min()), int(ty[0].max())
        tab = self.scene._hole_tables(m0 + mo, m1 + mo, n0 + no, n1 + no, f32)   # (n, m)
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

        ``height``, ``material`` and ``layers`` are as :meth:`Scene.rasterize` with
        ``coverage=True`` (flat indices relative to the block). ``maps`` holds, for each
        per-material float32 table in ``tables``, its value at every node with the layers
        blended in: built from the same per-axis pieces as the material map, so no per-node
        table lookup is needed.
        """
        scene, grid = self.scene, self.grid
        ni = grid.ni
        tabs = (scene._tex_factor, *tables)
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
                scene._apply_patch_grid(patch, sub, h, mat, layers,
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
        h, mat, cov = self.scene._base(lx, ly, self.ox, self.oy, self.need_radius,
                                       ramps=self.ramps)
        nz = np.flatnonzero((cov > 0) & (cov < 1))
        return h, mat, (nz, cov.reshape(-1)[nz])
