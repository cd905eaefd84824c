"""Simulated FIB milling: the beam's dose erodes the scene by sputter yield.

Physics (shared physics notes, section 3): the pattern asks for a depth ``d`` in the
application-file material, so the beam delivers a charge per image-plane area
``D = d / R_app`` (C/m^2, ``R`` = volume per charge). On the surface this is ``D cos(theta)``
per unit surface area (theta = incidence angle), and the surface recedes along its normal by
``D cos(theta) Y(theta)/Y(0) R_local`` with Yamamura's angular yield
``Y/Y0 = cos^-f(theta) exp(b (1 - 1/cos(theta)))`` (f = 1.41, b = 0.17). The change is applied
in several passes, re-evaluating heights and slopes, and stored as a
:class:`~fibsem_ophyd.sim.scene.HeightPatch` (the 2.5-D scene). The beam time is the total
charge over the current, spent pass by pass.

A milling ended part way (a stop, or the ion beam going off: ``before_pass`` or ``progress``
raised) keeps what the passes before it removed, as on hardware: the patch holds the passes
done, and the exception goes on to the caller.

Redeposition, approximated: a fraction :data:`REDEPOSITION` of the removed volume lands
around the milled footprint (a Gaussian of width :data:`REDEPOSITION_WIDTH` spreading out of
it), raising rims the way debris does; the milled floor keeps its depth.

Deposited layers (:meth:`~fibsem_ophyd.sim.scene.Scene.layers_at`) are milled first, top
down, each at its own rate, the rest of the dose going into the layer below and then the
sample; the patch records the thickness removed and shows the material left on top. Not
modelled here: overhangs (see :mod:`fibsem_ophyd.sim.cuts` for lamellae), the probe's tail.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from .materials import material_table
from .scene import HeightPatch, erode_layers

__all__ = ["mill_shapes", "milling_charge", "PASSES", "yamamura", "local_sputter_rate",
           "UM3_PER_NC", "REDEPOSITION", "REDEPOSITION_WIDTH", "LAYER_VISIBLE"]

#: 1 um^3/nC in m^3/C
UM3_PER_NC = 1e-9
#: fraction of the sputtered volume that redeposits around a milled pattern
REDEPOSITION = 0.05
#: how far (m, Gaussian sigma) redeposited material spreads from the milled footprint
REDEPOSITION_WIDTH = 0.5e-6
#: a deposited layer thinner than this (m) no longer shows: the sample's material does
LAYER_VISIBLE = 0.5e-9
#: passes a milling is delivered in (heights and slopes are re-evaluated between them)
PASSES = 8
_F, _B = 1.41, 0.17


def local_sputter_rate(scene, x: float, y: float) -> float:
    """Volume per charge (m^3/C) of the scene's material at sample point (x, y)."""
    _, mat = scene.evaluate(np.array([x]), np.array([y]))
    return float(material_table("sputter_rate")[int(mat[0])]) * UM3_PER_NC


def yamamura(cos_theta: np.ndarray) -> np.ndarray:
    """Relative sputter yield Y(theta)/Y(0) for incidence cosines (clipped at 85 deg)."""
    c = np.clip(cos_theta, math.cos(math.radians(85.0)), 1.0)
    return c**-_F * np.exp(_B * (1.0 - 1.0 / c))


def mill_shapes(
    state,
    view,
    depth_at: Callable[[np.ndarray, np.ndarray], np.ndarray],
    bounds: Sequence[float],
    current: float,
    application_rate: float,
    passes: int = PASSES,
    spacing: float | None = None,
    progress: Callable[[float], None] | None = None,
    before_pass: Callable[[int], None] | None = None,
) -> dict:
    """Mill on the simulator's scene; returns ``{"time": s, "charge": C, "spacing": m,
    "passes": passes done}``.

    Parameters
    ----------
    state : SimState
        The simulator's state (:mod:`fibsem_ophyd.sim.state`); its scene is milled.
    view : BeamView
        The ion beam's view the pattern is placed in.
    depth_at : callable
        Target depth (m) at ion-image points (m, +x right, +y up, image centre origin).
    bounds : (x0, y0, x1, y1)
        Image-frame bounding box of the pattern, m.
    current : float
        Milling current, A.
    application_rate : float
        Volume per charge of the application-file material, m^3/C.
    progress : callable, optional
        ``progress(fraction)`` after each pass (fraction of the passes done).
    before_pass : callable, optional
        ``before_pass(k)`` before pass ``k`` (0-based): raise to end the milling there.
    """
    x0, y0, x1, y1 = (float(v) for v in bounds)
    # sample-frame footprint of the pattern: the surface points seen at its image corners
    corners = []
    for u, v in ((x0, y0), (x0, y1), (x1, y0), (x1, y1), (0.5 * (x0 + x1), 0.5 * (y0 + y1))):
        a1, a2 = view.image_to_qperp(u, v)
        p = state.surface_point(view, float(a1), float(a2))
        if p is None:
            raise ValueError("the milling pattern does not land on the sample")
        corners.append(p[:2])
    corners = np.array(corners)
    margin = 0.5e-6 + 4 * REDEPOSITION_WIDTH
    sx0, sy0 = corners.min(axis=0) - margin
    sx1, sy1 = corners.max(axis=0) + margin
    if spacing is None:
        spacing = max(min(x1 - x0, y1 - y0) / 60.0, 25e-9)
    nx = int(math.ceil((sx1 - sx0) / spacing)) + 1
    ny = int(math.ceil((sy1 - sy0) / spacing)) + 1
    if nx * ny > 4_000_000:
        raise ValueError(f"milling raster of {nx} x {ny} nodes is too large; coarser spacing")
    xs = sx0 + np.arange(nx) * spacing
    ys = sy0 + np.arange(ny) * spacing
    gx, gy = np.meshgrid(xs, ys)
    rate_table = material_table("sputter_rate").astype(float) * UM3_PER_NC
    _, _, source = view.sample_axes()
    scene = state.scene
    dh_total = np.zeros((ny, nx))
    offset = view.offset
    # the scene does not change between passes; deposited layers are milled first, top down
    h_scene, mat = scene.evaluate(gx, gy, spacing, patch_materials=False)
    layers = [(mid, th.copy()) for mid, th in scene.layers_at(gx, gy) if th.any()]
    charge = milling_charge(depth_at, (x0, y0, x1, y1), application_rate)
    done = 0
    try:
        for k in range(passes):
            if before_pass is not None:
                before_pass(k)
            dh_total -= _one_pass(view, offset, h_scene + dh_total, gx, gy, spacing, depth_at,
                                  application_rate, passes, source, layers, rate_table, mat)
            done = k + 1
            if progress is not None:
                progress(done / passes)
    except BaseException:
        # what the passes before the end removed stays milled
        if done:
            _store_patch(scene, dh_total, sx0, sy0, spacing, mat, layers)
        raise
    _store_patch(scene, dh_total, sx0, sy0, spacing, mat, layers)
    return {"time": charge / current, "charge": charge, "spacing": spacing, "passes": done}


def milling_charge(depth_at: Callable[[np.ndarray, np.ndarray], np.ndarray],
                   bounds: Sequence[float], application_rate: float) -> float:
    """The charge (C) a pattern asks for: its depth integrated over its image-plane area
    (``bounds`` x0, y0, x1, y1, m), over the application material's volume per charge."""
    x0, y0, x1, y1 = (float(v) for v in bounds)
    pix = min(x1 - x0, y1 - y0) / 200.0
    cu = np.arange(x0 + pix / 2, x1, pix)
    cv = np.arange(y0 + pix / 2, y1, pix)
    return float(np.asarray(depth_at(cu[None, :], cv[:, None])).sum()) * pix * pix \
        / application_rate


def _one_pass(view, offset, h, gx, gy, spacing, depth_at, application_rate, passes, source,
              layers, rate_table, mat) -> np.ndarray:
    """Depth (m, >= 0) one pass removes at the raster nodes (deposited layers thinned in
    place)."""
    sz = offset + h
    u, v = view.project(np.stack([gx, gy, sz], axis=-1))
    target = np.asarray(depth_at(u, v), dtype=float)  # m in the application material
    dose = target / application_rate / passes          # C per image-plane m^2, this pass
    gy_h, gx_h = np.gradient(h, spacing)
    n = np.stack([-gx_h, -gy_h, np.ones_like(h)], axis=-1)
    n /= np.linalg.norm(n, axis=-1, keepdims=True)
    cos_t = np.clip(n @ source, 0.0, 1.0)  # faces turned away from the beam get nothing
    # charge per surface area, over the vertical: times a volume per charge, a depth
    budget = dose * cos_t * yamamura(cos_t) / np.maximum(n[..., 2], 0.2)
    return erode_layers(layers, budget, rate_table) + budget * rate_table[mat]


def _store_patch(scene, dh_total, sx0, sy0, spacing, mat, layers) -> None:
    """Add the milled height change (with its redeposition) to the scene."""
    removed = np.clip(-dh_total, 0.0, None)
    material = None
    if layers:  # the surface shows what is left on top: a layer, or the sample again
        top = mat.copy()
        for mid, th in layers:
            top[th > LAYER_VISIBLE] = mid
        material = np.where(removed > 0, top, 255).astype(np.uint8)
    dh = dh_total + _redeposit(dh_total, spacing)
    scene.add_patch(HeightPatch(x0=float(sx0), y0=float(sy0), spacing=float(spacing),
                                dh=dh.astype(np.float32), material=material,
                                removed=removed))


def _redeposit(dh: np.ndarray, spacing: float) -> np.ndarray:
    """Height added around the milled footprint of ``dh`` (m): :data:`REDEPOSITION` of the
    removed volume, spread out of the footprint by a Gaussian of :data:`REDEPOSITION_WIDTH`."""
    from scipy.ndimage import gaussian_filter

    removed = np.clip(-dh, 0.0, None)
    if not removed.any():
        return np.zeros_like(dh)
    footprint = removed > 0.01 * removed.max()
    weight = gaussian_filter(footprint.astype(float), REDEPOSITION_WIDTH / spacing,
                             mode="constant") * ~footprint
    total = weight.sum()
    if total <= 0:
        return np.zeros_like(dh)
    return REDEPOSITION * removed.sum() * weight / total
