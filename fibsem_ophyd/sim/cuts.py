"""Beam-parallel cuts: what milling removed, in 3-D, for the lamella ground truth.

The rendered scene is 2.5-D (a height field), which cannot hold a lamella: on-grid lamellae
are milled at a glancing angle, with material removed above *and* below a thin slab. So each
milling also records a :class:`BeamCut`: behind every point (u, v) of the ion image plane, the
beam removes a column of material along its direction, from the surface plane down to a
length ``D(u, v)``. ``D`` is the dose the pattern asks for (its depth in the application-file
material, over that material's volume per charge), spread by the probe (a Gaussian of the
spot size at the milling current plus a 2 % tail 10x wider, which rounds milled edges), times
the local material's volume per charge; deposited layers (cryo GIS, sputter coat) on the
surface are crossed first, each at its own rate and Yamamura's yield at the surface's
incidence. The floor of a beam-aligned column faces
the beam, so no angular yield enhancement applies to its length.

A cut is fixed in the sample frame: it keeps the beam view (pose, drift, beam shift) at the
moment of milling, so a stage move or a drift between two stages shows as a misplaced cut,
exactly as it would on the sample. Not modelled: drift during one cut, redeposition on the
lamella faces, the finite depth of the film.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .materials import material_table
from .milling import UM3_PER_NC, yamamura
from .scene import erode_layers

__all__ = ["BeamCut", "make_cut", "lamella_profile"]

#: the probe tail: weight and width relative to the core (physics notes: 1-5 % wide tail)
TAIL_WEIGHT, TAIL_WIDTH = 0.02, 10.0
_MAX_NODES = 6_000_000


@dataclass(frozen=True)
class BeamCut:
    """Material removed by one milling, along the ion beam.

    Attributes
    ----------
    view : BeamView
        The ion beam's view while milling (sample -> image mapping).
    u0, v0, spacing : float
        Image-plane raster: node (i, j) is at image (u0 + i*spacing, v0 + j*spacing), m.
    depth : ndarray
        Column length removed behind each node, m (float32, shape (nv, nu)).
    z_ref : float
        Sample-frame height (m) of the surface plane the columns start at.
    beam : ndarray
        Unit vector towards the ion source, sample frame.
    """

    view: object
    u0: float
    v0: float
    spacing: float
    depth: np.ndarray
    z_ref: float
    beam: np.ndarray

    def column(self, q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For sample points ``q`` (..., 3): (removed column length there, depth of the point
        below the surface plane along the beam), both m."""
        u, v = self.view.project(q)
        fi = (np.asarray(u) - self.u0) / self.spacing
        fj = (np.asarray(v) - self.v0) / self.spacing
        d = ndimage.map_coordinates(self.depth, [np.ravel(fj), np.ravel(fi)], order=1,
                                    mode="constant", cval=0.0).reshape(np.shape(fi))
        below = (self.z_ref - q[..., 2]) / self.beam[2]  # along -beam, from the plane
        return d, below


def make_cut(state, view, depth_at, bounds, current: float, voltage: float,
             application_rate: float, spot_size: float) -> BeamCut:
    """Record the cut of one milling (call it before the scene is changed).

    ``depth_at(u, v)`` is the depth (m, application material) the patterns ask for at image
    points, ``bounds`` their image-frame box (x0, y0, x1, y1), ``spot_size`` the probe
    diameter (m, FWHM) at ``current``.
    """
    sigma = max(spot_size / 2.355, 1e-9)
    x0, y0, x1, y1 = (float(b) for b in bounds)
    extent = max(x1 - x0, y1 - y0)
    spacing = max(min(sigma, 20e-9), extent / 2000.0)
    margin = 4.0 * TAIL_WIDTH * sigma + 2 * spacing
    nu = int(math.ceil((x1 - x0 + 2 * margin) / spacing)) + 1
    nv = int(math.ceil((y1 - y0 + 2 * margin) / spacing)) + 1
    if nu * nv > _MAX_NODES:
        spacing *= math.sqrt(nu * nv / _MAX_NODES)
        nu = int(math.ceil((x1 - x0 + 2 * margin) / spacing)) + 1
        nv = int(math.ceil((y1 - y0 + 2 * margin) / spacing)) + 1
    u0, v0 = x0 - margin, y0 - margin
    us = u0 + np.arange(nu) * spacing
    vs = v0 + np.arange(nv) * spacing
    target = np.asarray(depth_at(us[None, :], vs[:, None]), dtype=float)
    s = sigma / spacing
    blurred = (1.0 - TAIL_WEIGHT) * ndimage.gaussian_filter(target, s, mode="constant") + \
        TAIL_WEIGHT * ndimage.gaussian_filter(target, TAIL_WIDTH * s, mode="constant")
    # the surface plane and the material at the pattern centre
    a1, a2 = view.image_to_qperp(0.5 * (x0 + x1), 0.5 * (y0 + y1))
    centre = state.surface_point(view, float(a1), float(a2))
    if centre is None:
        raise ValueError("the milling pattern does not land on the sample")
    _, _, beam = view.sample_axes()
    depth = _column_length(state.scene, centre, blurred / application_rate, abs(float(beam[2])))
    return BeamCut(view=view, u0=u0, v0=v0, spacing=spacing, depth=depth,
                   z_ref=float(centre[2]), beam=np.asarray(beam, dtype=float))


def _column_length(scene, centre, charge: np.ndarray, cos_beam: float) -> np.ndarray:
    """Column lengths (m, along the beam) that ``charge`` (C/m^2 of image plane) removes at
    the sample point ``centre``: through the deposited layers there first, then the sample's
    material. A layer lies on the surface, which the beam meets at ``cos_beam``: it is
    crossed over its thickness / cos, at its rate times Yamamura's yield at that incidence
    (as the height field mills it); the column's floor below faces the beam."""
    x, y = np.array([float(centre[0])]), np.array([float(centre[1])])
    _, sub = scene.evaluate(x, y, patch_materials=False)
    rates = material_table("sputter_rate").astype(float) * UM3_PER_NC
    budget = charge.astype(float).copy()
    c = max(cos_beam, 0.05)
    layer_rates = rates * float(yamamura(np.array(c)))
    layers = [(mid, np.full(budget.shape, float(th[0]) / c))
              for mid, th in scene.layers_at(x, y) if float(th[0]) > 0]
    length = erode_layers(layers, budget, layer_rates) + budget * rates[int(sub[0])]
    return length.astype(np.float32)


def lamella_profile(cuts: list[BeamCut], point: np.ndarray, depth: float, half_range: float,
                    step: float = 1e-9) -> dict:
    """Material left across a lamella at ``point`` (its top surface, sample frame): along the
    last cut's image v axis, is the material ``depth`` m below the surface (along the beam)
    still there? (A column removed to a length > ``depth`` says no.)

    Returns ``{"thickness", "centre_offset", "inside", "bounded", "t", "solid"}``: the width
    (m) of the run of intact material containing (or nearest) the probe, the offset (m, +v)
    of that run's middle from the probe, whether the probe itself is intact, whether the run
    ends inside the probed range on both sides, the positions and the intact mask. Columns
    of cuts with the same beam direction add up (a later stage mills on from where an earlier
    one stopped); cuts from another direction remove independently.
    """
    if not cuts:
        raise ValueError("nothing was milled")
    last = cuts[-1]
    _, up, _ = last.view.sample_axes()
    rho = last.view.scan_rotation
    right, _, _ = last.view.sample_axes()
    # image +v in the sample frame (scan rotation included)
    ev = -math.sin(rho) * right + math.cos(rho) * up
    ev = ev - np.dot(ev, last.beam) * last.beam
    ev /= np.linalg.norm(ev)
    point = np.asarray(point, dtype=float)
    t = np.arange(-half_range, half_range + step / 2, step)
    # walk along image v on the (sample-frame level) plane through ``point``, then ``depth``
    # down the beam: the points a column's length is compared with are all ``depth`` below
    # the top
    q = point[None, :] + t[:, None] * ev[None, :]
    q += ((point[2] - q[:, 2]) / last.beam[2])[:, None] * last.beam[None, :]
    q -= depth * last.beam[None, :]
    removed = np.zeros(t.shape, dtype=bool)
    # per beam direction: (beam, summed column length, depth below the surface plane of the
    # cut that removed most there, that cut's length) -- cuts at different places start from
    # different surface planes; where they overlap, the deepest one's plane is the surface
    groups: list[list] = []
    for cut in cuts:
        d, below = cut.column(q)
        for g in groups:
            if float(np.dot(g[0], cut.beam)) > math.cos(math.radians(1.0)):
                g[1] = g[1] + d
                better = d > g[3]
                g[2] = np.where(better, below, g[2])
                g[3] = np.where(better, d, g[3])
                break
        else:
            groups.append([cut.beam, d, below, d])
    for _, dsum, below, _ in groups:
        removed |= below < dsum
    solid = ~removed
    i0 = int(np.argmin(np.abs(t)))
    inside = bool(solid[i0])
    if not solid.any():
        return {"thickness": 0.0, "centre_offset": math.nan, "inside": False,
                "bounded": True, "t": t, "solid": solid}
    if not inside:  # the nearest intact run
        idx = np.nonzero(solid)[0]
        i0 = int(idx[np.argmin(np.abs(idx - i0))])
    lo = i0
    while lo > 0 and solid[lo - 1]:
        lo -= 1
    hi = i0
    while hi < len(t) - 1 and solid[hi + 1]:
        hi += 1
    thickness = (hi - lo + 1) * step
    return {"thickness": float(thickness), "centre_offset": float(0.5 * (t[lo] + t[hi])),
            "inside": inside, "bounded": bool(lo > 0 and hi < len(t) - 1), "t": t,
            "solid": solid}

