"""The procedural sample: a cryo-EM grid with ice, cells and particles, in the SAMPLE frame.

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

Modules: :mod:`.hashing` (lattice hashes), :mod:`.parameters`, :mod:`.tem_grid` (bars,
holes, ice), :mod:`.texture` (plane-wave relief), :mod:`.objects` (cells, particles),
:mod:`.patches` (:class:`HeightPatch`, :func:`erode_layers`), :mod:`.raster_grid`,
:mod:`.raster` (:class:`RasterPlan`) and :mod:`.sample` (:class:`Scene`).
"""

from __future__ import annotations

from .objects import SceneObjects
from .parameters import SceneParameters
from .patches import HeightPatch, erode_layers
from .raster import RasterPlan, blend_layer
from .raster_grid import RasterGrid
from .sample import Scene

__all__ = ["SceneParameters", "HeightPatch", "RasterGrid", "RasterPlan", "Scene", "SceneObjects",
           "blend_layer", "erode_layers"]
