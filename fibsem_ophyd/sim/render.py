"""Image formation from the true 3-D pose (``shared/reference/physics.md`` sections 1-2).

This module is the pipeline; its parts are :mod:`~fibsem_ophyd.sim.view` (pose and ray
casting), :mod:`~fibsem_ophyd.sim.parallax`, :mod:`~fibsem_ophyd.sim.shading` and
:mod:`~fibsem_ophyd.sim.optics`.

For one beam the pipeline is:

1. :class:`BeamView` holds the pose: the sample -> chamber map of the stage
   (``q = Rx(t) (x, y, z - z0) + drift + A s`` with ``A = Rx(t) Rz(r) Rx(-pretilt)``), the
   beam's image axes (``geometry.beam_axes``), pixel size, scan rotation and beam shift. A
   pixel's image metres ``(u, v)`` (``geometry.pixel_to_image``) give the chamber ray
   ``q = a1*right + a2*up + lambda*source`` with ``(a1, a2) = R(rho) ((u, v) + b)``;
2. the rays are intersected with a plane ``s_z = offset + h_ref`` (an affine map of the pixel
   grid into the sample; ``h_ref`` is the middle of the heights the footprint can hold, or,
   when the parallax margins for those would exceed their cap of 4 x (rows + columns), the
   middle of the heights where the frame's rays meet the surface), the
   scene is rasterised on those sample points (with margins) and parallax is solved exactly
   along the image direction in which a raised point moves (the projection of the sample
   normal): each raster column is a 1-D height profile whose visible envelope gives occlusion,
   and each output pixel integrates the signal over its extent of that envelope (see
   :mod:`~fibsem_ophyd.sim.parallax`). No stable/vertical-move shortcut is used anywhere;
3. the yield at each surface point: SE ``sec^n`` law of the local incidence angle, detector
   directionality, edge brightening ``tanh((h - G*h)/sigma)``, material (BSE) contrast; for the
   ion beam the ion-induced SE yield (insulators dark);
4. defocus/spot (and astigmatism) blur in image space, then the crop to the frame.

The result is the clean yield image (secondary electrons per primary); noise and the detector
transfer are in :mod:`fibsem_ophyd.sim.detector`.

Steps 2-3 run a block of raster rows at a time (:class:`~fibsem_ophyd.sim.scene.RasterPlan`,
:func:`_raster_and_shade`): each block's temporaries stay in a core's cache and the blocks run
on worker threads (numpy releases the GIL in its loops). With parallax the raster is built
transposed, so a block holds whole raster lines and its warp runs in the block too: the
heights of the whole lines give the visible envelope, and only the nodes the frame's rows can
see are shaded (:func:`~fibsem_ophyd.sim.parallax.project`: the parallax margins are sized
for every height the footprint can hold, 172 of the 1200 rows of the default 1536x1024 ion
raster, and 80-86 % of a block's nodes are shaded). Every node is computed as in a
whole-raster pass, and the block layout depends only on the raster size, so the image does
not depend on the number of threads.
"""

from __future__ import annotations

import functools
import math
import threading
from dataclasses import dataclass

import numpy as np
from threadpoolctl import ThreadpoolController

from ..geometry import pixel_to_image
from ._workers import pool
from .optics import Optics, gaussian_blur
from .parallax import project
from .scene import RasterGrid, RasterPlan, Scene
from .shading import Shading, halo, shade
from .view import BeamView, intersect_surface

__all__ = ["RenderStats", "render_clean"]

#: nodes per block of the raster (a block's temporaries stay in a core's cache)
_BLOCK_NODES = 1 << 17


_RENDER_LOCK = threading.RLock()


@functools.cache
def _blas_controller() -> ThreadpoolController:
    return ThreadpoolController()


def _rot2(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s], [s, c]])


def _bilinear(a: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Bilinear sample of ``a`` at fractional (col i, row j), clamped to the array."""
    nj, ni = a.shape
    i = np.clip(i, 0.0, ni - 1.0001)
    j = np.clip(j, 0.0, nj - 1.0001)
    i0 = i.astype(np.int32)
    j0 = j.astype(np.int32)
    fi = (i - i0).astype(np.float32)
    fj = (j - j0).astype(np.float32)
    flat = j0 * np.int32(ni) + i0
    af = a.reshape(-1)
    top = af[flat] * (1 - fi) + af[flat + 1] * fi
    bot = af[flat + ni] * (1 - fi) + af[flat + ni + 1] * fi
    return top * (1 - fj) + bot * fj


# ---------------------------------------------------------------------------- the renderer
@dataclass
class RenderStats:
    """Diagnostics of the last render (sizes, parallax, blur)."""

    raster_shape: tuple[int, int] = (0, 0)
    parallax_px_per_um: float = 0.0
    aligned: bool = True
    blur_sigma_px: float = 0.0


def render_clean(scene: Scene, view: BeamView, shading: Shading, optics: Optics,
                 stats: RenderStats | None = None) -> np.ndarray:
    """Noise-free yield image (float32, (height, width)) of ``view``.

    The raster blocks run on worker threads, so renders take turns (each already uses every
    core), and BLAS is kept to one thread per call meanwhile: its idle threads would otherwise
    spin on the cores the workers need.
    """
    with _RENDER_LOCK, _blas_controller().limit(limits=1, user_api="blas"):
        return _render(scene, view, shading, optics, stats)


def _render(scene: Scene, view: BeamView, shading: Shading, optics: Optics,
            stats: RenderStats | None) -> np.ndarray:
    W, H, p = view.width, view.height, view.pixel
    pm = view.plane_map()
    if pm is None:     # the beam hits the back of the holder: no signal
        return np.zeros((H, W), dtype=np.float32)
    g, g0, _k = pm
    bm = int(math.ceil(3.0 * optics.max_sigma)) + 2 if optics.max_sigma >= 0.5 else 2
    bm = min(bm, 256)
    par = view.parallax()                       # image (u, v) metres per metre of height
    par_norm = float(np.hypot(*par))
    # image frame of the extended (margin) output, as image metres of pixel centres
    u_lo, v_hi = pixel_to_image(-bm, -bm, (H, W), p)
    aligned = par_norm < 1e-9 or abs(par[0]) < 1e-9 * max(par_norm, 1e-300)
    if aligned:
        e_c = np.array([1.0, 0.0])
        e_r = np.array([0.0, -1.0])
        n_ci, n_cj = W + 2 * bm, H + 2 * bm
        o_img = np.array([float(u_lo), float(v_hi)])
    else:
        e_r = par / par_norm
        if e_r[1] > 0:
            e_r = -e_r
        e_c = np.array([-e_r[1], e_r[0]])
        # bounding box of the extended frame in the rotated (e_c, e_r) axes, plus 1 node
        cu, cv = pixel_to_image(np.array([-bm, W + bm - 1, -bm, W + bm - 1]),
                                np.array([-bm, -bm, H + bm - 1, H + bm - 1]), (H, W), p)
        pc = (cu * e_c[0] + cv * e_c[1]) / p
        pr = (cu * e_r[0] + cv * e_r[1]) / p
        c0, r0 = math.floor(pc.min()) - 1, math.floor(pr.min()) - 1
        n_ci = int(math.ceil(pc.max())) + 2 - c0
        n_cj = int(math.ceil(pr.max())) + 2 - r0
        o_img = p * (c0 * e_c + r0 * e_r)
    kappa = float(par @ e_r) / p                 # rows of the raster per metre of height
    if abs(kappa) * 100e-6 < 0.01:               # < 0.01 px even for 100 um of relief
        kappa = 0.0

    # node (i, j) of the output -> sample point on the plane
    rot = _rot2(view.scan_rotation)
    shift = np.array(view.shift)
    lin = g @ rot
    # parallax margins from the heights the footprint can hold; the plane of the raster is
    # moved to the middle of that range so the margins are split on both sides
    h_ref = 0.0
    if abs(kappa) > 0:
        grid0 = RasterGrid(tuple(lin @ (o_img + shift) + g0), tuple(lin @ (p * e_c)),
                           tuple(lin @ (p * e_r)), n_ci, n_cj)
        x0, x1, y0, y1 = grid0.bbox()
        kn = float(np.hypot(*_k))
        reach = kn * 25e-6
        for _ in range(2):
            lo, hi = scene.height_bounds((x0 - reach, x1 + reach, y0 - reach, y1 + reach))
            reach = kn * max(abs(lo), abs(hi))
        # a whole number of raster rows of parallax, so the raster nodes keep their sampling
        # phase when the footprint (and with it the height range) changes
        ak = abs(kappa)
        h_ref = round(0.5 * (lo + hi) * ak) / ak
        cap = 4 * (n_cj + n_ci)       # bound the work for absurd margins (edge-on views)
        if math.ceil(ak * max(hi - h_ref, h_ref - lo)) + 2 > cap:
            # the margins reach only +-(cap - 2) rows of parallax from h_ref: keep the surface
            # the frame shows within them (else no node reaches the frame rows and the frame
            # is blank), with as much of the bounds beyond it as fits
            h_ref = round(_capped_middle(scene, view, lo, hi, (cap - 3) / ak, h_ref) * ak) / ak
        g, g0, _k = view.plane_map(h_ref)
        half = max(hi - h_ref, h_ref - lo)
        top = bot = min(int(math.ceil(abs(kappa) * half)) + 2, cap)
    else:
        top = bot = 0
    lin = g @ rot
    di = lin @ (p * e_c)
    dj = lin @ (p * e_r)
    origin = lin @ (o_img + shift) + g0
    nj = n_cj + top + bot
    grid = RasterGrid(tuple(origin - top * dj), tuple(di), tuple(dj), n_ci, nj)
    warp = (kappa, top, n_cj, h_ref) if top or bot else None
    blur = optics.max_sigma >= 0.5
    if aligned and not blur:
        # the blocks write the frame itself: nothing needs the margins
        img = _raster_and_shade(scene, grid, view, shading, warp, crop=(bm, H, W))
        if stats is not None:
            stats.raster_shape = (nj, n_ci)
            stats.parallax_px_per_um = kappa * 1e-6
            stats.aligned = aligned
            stats.blur_sigma_px = optics.max_sigma
        return img
    out = _raster_and_shade(scene, grid, view, shading, warp)
    if blur:
        cov = optics.covariance()
        if not aligned:
            # image (col, row) -> raster (i, j): columns of q are e_c, e_r in image (col, row)
            q = np.array([[e_c[0], e_r[0]], [-e_c[1], -e_r[1]]])
            cov = q.T @ cov @ q
        out = gaussian_blur(out, cov)
    if aligned:
        img = out[bm:bm + H, bm:bm + W]
    else:
        cols, rows = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
        uu, vv = pixel_to_image(cols, rows, (H, W), p)
        du = uu - o_img[0]
        dv = vv - o_img[1]
        ii = (du * e_c[0] + dv * e_c[1]) / p
        jj = (du * e_r[0] + dv * e_r[1]) / p
        img = _bilinear(out, ii, jj)
    if stats is not None:
        stats.raster_shape = (nj, n_ci)
        stats.parallax_px_per_um = kappa * 1e-6
        stats.aligned = aligned
        stats.blur_sigma_px = optics.max_sigma
    return np.ascontiguousarray(img, dtype=np.float32)


def _capped_middle(scene: Scene, view: BeamView, lo: float, hi: float, reach: float,
                   default: float) -> float:
    """The middle of the height window (m above the view's offset plane) when the parallax
    margins cover only ``+-reach`` of the ``lo``..``hi`` the footprint can hold (a high
    parallax, e.g. a few-um ion field at 52 deg, over the conservative bounds of a milled
    site and its neighbours): the middle of the heights where 3 x 3 of the frame's rays first
    meet the surface, moved as little as keeps the window inside ``lo``..``hi``; ``default``
    if no ray meets it."""
    w2, h2 = 0.5 * view.width * view.pixel, 0.5 * view.height * view.pixel
    seen = []
    for u in (-w2, 0.0, w2):
        for v in (-h2, 0.0, h2):
            a1, a2 = view.image_to_qperp(u, v)
            point = intersect_surface(scene, view, float(a1), float(a2), spacing=view.pixel)
            if point is not None:
                seen.append(float(point[2]) - view.offset)
    if not seen:
        return default
    mid = 0.5 * (min(seen) + max(seen))
    return min(max(mid, lo + reach), hi - reach)


def _raster_and_shade(scene: Scene, grid: RasterGrid, view: BeamView, shading: Shading,
                      warp: tuple | None = None,
                      crop: tuple[int, int, int] | None = None) -> np.ndarray:
    """Yield on ``grid`` (``(nj, ni)``), or with ``warp = (kappa, top, n_out, h_ref)`` the
    yield seen through the parallax along the grid's rows (``(n_out, ni)``, see
    :mod:`~fibsem_ophyd.sim.parallax`), computed a block at a time; with
    ``crop = (m, H, W)`` only the ``[m:m+H, m:m+W]`` part of that result is returned.

    The grid is extended by a halo of :func:`~fibsem_ophyd.sim.shading.halo` nodes on every
    side so each block's shading sees its neighbours; every node is computed exactly as in a
    whole-grid pass, so the block layout (fixed by the grid size) and the number of worker
    threads do not change the image.
    With parallax the grid is rasterised transposed: a block is then a range of the grid's
    columns with all its rows, the raster lines along which the parallax acts, so the warp
    runs inside the block too, and only the lines of the result and the nodes its rows can
    see are shaded (:func:`~fibsem_ophyd.sim.parallax.project`).
    """
    ni, nj = grid.ni, grid.nj
    hal = halo(grid, shading)
    if warp is None:
        work_grid = grid
    else:
        work_grid = RasterGrid(grid.origin, grid.dj, grid.di, nj, ni)     # transposed
    wi, wj = work_grid.ni, work_grid.nj
    di, dj = np.array(work_grid.di), np.array(work_grid.dj)
    origin = np.array(work_grid.origin) - hal * (di + dj)
    ext = RasterGrid((float(origin[0]), float(origin[1])), work_grid.di, work_grid.dj,
                     wi + 2 * hal, wj + 2 * hal)
    plan = RasterPlan(scene, ext, pool())
    tables = (-shading.exponent, shading.base)
    full = (nj if warp is None else warp[2], ni)
    m, (fh, fw) = (0, full) if crop is None else (crop[0], crop[1:])
    out = np.empty((fh, fw), dtype=np.float32)
    rows = max(8, 4 * hal, _BLOCK_NODES // ext.ni)
    starts = list(range(0, wj, rows))

    def work(a: int) -> None:
        b = min(a + rows, wj)
        h, _, _, (neg_expo, y0) = plan.block(a, b + 2 * hal, tables)
        if warp is None:                      # block rows a..b of the result
            sig = shade(h, neg_expo, y0, hal, ext, view, shading)
            lo, hi = max(a, m), min(b, m + fh)
            if lo < hi:
                out[lo - m:hi - m] = sig[lo - a:hi - a, m:m + fw]
            return
        # block columns a..b of the result: its lines lo..hi, shaded where the rows see them
        lo, hi = max(a, m), min(b, m + fw)
        if lo >= hi:
            return

        def shade_nodes(c0: int, c1: int) -> np.ndarray:
            ls, ns = slice(lo - a, hi - a + 2 * hal), slice(c0, c1 + 2 * hal)
            return shade(h[ls, ns], neg_expo[ls, ns], y0[ls, ns], hal, ext, view, shading)

        kappa, top, _, h_ref = warp
        project(h[hal + lo - a:hal + hi - a, hal:hal + wi], shade_nodes, kappa, top, h_ref,
                (m, m + fh), out[:, lo - m:hi - m])

    if len(starts) == 1:
        work(0)
    else:
        for f in [pool().submit(work, a) for a in starts]:
            f.result()
    return out
