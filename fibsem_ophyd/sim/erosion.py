"""Erosion by ion imaging: every ion frame sputters the field it scans, a little.

A frame delivers the charge ``I t`` (current x frame time) over the scanned image-plane area
``A``; on the surface that is ``I t cos(theta) / A`` per unit area (theta: the beam's
incidence on the nominal surface), and the surface recedes along its normal by that dose x
``Y(theta)/Y(0)`` (Yamamura) x the material's volume per charge, i.e. vertically by
``I t / A x Y(theta)/Y(0) x R`` (``cos(theta)`` cancels against the normal's tilt). At an
imaging current this is hundredths of a nanometre per frame; alignment at a milling current
or hundreds of frames of one field add up to nanometres.

To keep rendering cached, erosion is collected per imaged field (the sample-frame
quadrilateral the frame covers) and written to the scene as one height patch per field once
it reaches :data:`FLUSH_DEPTH`; the ground truth (:meth:`ImagingErosion.depth_at`) counts the
unwritten part too.
"""

from __future__ import annotations

import math

import numpy as np

from .milling import local_sputter_rate, yamamura
from .scene import HeightPatch

__all__ = ["ImagingErosion", "FLUSH_DEPTH"]

#: erosion collected before the scene is changed (m)
FLUSH_DEPTH = 1e-9


def _inside(quad: np.ndarray, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Points inside a convex quadrilateral (vertices in order, either orientation)."""
    xs, ys = quad[:, 0], quad[:, 1]
    orient = 1.0 if np.sum(xs * np.roll(ys, -1) - np.roll(xs, -1) * ys) >= 0 else -1.0
    inside = np.ones(np.broadcast(x, y).shape, dtype=bool)
    for k in range(4):
        (x0, y0), (x1, y1) = quad[k], quad[(k + 1) % 4]
        inside &= orient * ((x1 - x0) * (y - y0) - (y1 - y0) * (x - x0)) >= 0
    return inside


class ImagingErosion:
    """The erosion of every ion-imaged field of one simulator."""

    def __init__(self):
        #: key -> {"quad", "bbox", "applied", "pending", "patch"}
        self.fields: dict[tuple, dict] = {}

    def add_frame(self, state, view, current: float, duration: float, area: float,
                  reduced_area=None) -> float:
        """Record one ion frame; returns the vertical erosion (m) it caused in its field."""
        if current <= 0 or duration <= 0 or area <= 0:
            return 0.0
        w2 = view.width * view.pixel / 2
        h2 = view.height * view.pixel / 2
        u0, v0, u1, v1 = -w2, -h2, w2, h2
        if reduced_area is not None:
            left, top, width, height = reduced_area
            u0, u1 = -w2 + 2 * w2 * left, -w2 + 2 * w2 * (left + width)
            v1, v0 = h2 - 2 * h2 * top, h2 - 2 * h2 * (top + height)
        a1, a2 = view.image_to_qperp(0.5 * (u0 + u1), 0.5 * (v0 + v1))
        centre = state.surface_point(view, float(a1), float(a2))
        if centre is None:
            return 0.0
        # the field's corners on the level plane through the centre's surface point (one ray
        # traced, not five: the footprint's outline moves by parallax x relief, tens of nm)
        pm = view.plane_map(float(centre[2]) - view.offset)
        if pm is None:
            return 0.0
        g, g0, _ = pm
        cu = np.array([u0, u1, u1, u0])
        cv = np.array([v0, v0, v1, v1])
        q1, q2 = view.image_to_qperp(cu, cv)
        quad = (g @ np.stack([q1, q2])).T + g0
        rate = local_sputter_rate(state.scene, float(centre[0]), float(centre[1]))
        cos_t = max(view.incidence_cos(), 1e-3)
        depth = current * duration / area * float(yamamura(np.array(cos_t))) * rate
        key = tuple(np.round(quad.ravel() / 100e-9).astype(int))
        f = self.fields.get(key)
        if f is None:
            f = self.fields[key] = {"quad": quad, "applied": 0.0, "pending": 0.0, "patch": None}
        f["pending"] += depth
        if f["pending"] >= FLUSH_DEPTH:
            self._flush(state.scene, f)
        return depth

    @staticmethod
    def _flush(scene, f: dict) -> None:
        quad = f["quad"]
        x0, y0 = quad.min(axis=0)
        x1, y1 = quad.max(axis=0)
        spacing = max(max(x1 - x0, y1 - y0) / 256.0, 10e-9)
        xs = x0 - spacing + np.arange(int(math.ceil((x1 - x0) / spacing)) + 3) * spacing
        ys = y0 - spacing + np.arange(int(math.ceil((y1 - y0) / spacing)) + 3) * spacing
        inside = _inside(quad, xs[None, :], ys[:, None])
        f["applied"] += f["pending"]
        f["pending"] = 0.0
        patch = HeightPatch(x0=float(xs[0]), y0=float(ys[0]), spacing=float(spacing),
                            dh=(-f["applied"] * inside).astype(np.float32))
        index = next((i for i, p in enumerate(scene.patches) if p is f["patch"]), None)
        if index is not None:  # one patch per field: replace it
            scene.patches[index] = patch
            scene.version += 1
        else:
            scene.add_patch(patch)
        f["patch"] = patch

    def depth_at(self, x: float, y: float) -> float:
        """Total imaging erosion (m, written and pending) at sample point (x, y)."""
        total = 0.0
        for f in self.fields.values():
            if _inside(f["quad"], np.array(x), np.array(y)):
                total += f["applied"] + f["pending"]
        return float(total)
