"""Exact class masks and keypoints of a simulated frame (``sim.truth.mask``,
``sim.truth.keypoint``), for training and scoring feature detection.

The mask is drawn with the render pipeline's own projection (the frame's
:class:`~fibsem_ophyd.sim.render.BeamView`, the needle's
:func:`~fibsem_ophyd.sim.manipulator.cone_footprint` and the blocks' silhouettes of
:mod:`~fibsem_ophyd.sim.objects_liftout`), in the order the frame is drawn: a pixel carries the
class of the last object whose projection covers its centre. Classes (OpenFIBSEM's): 0
background, 1 lamella, 2 manipulator, 3 landing_post, 4 copper_adaptor, 5 volume_block.

Keypoints are pixel (column, row), pixel centres at integers, computed from the objects'
geometry (never from a mask), with OpenFIBSEM's feature names:

- ``NeedleTip``: the end of the needle's silhouette (the apex sphere's edge along the projected
  needle axis);
- ``LamellaCentre``: centre of the bounding box of the projected lamella (clipped to the
  frame) nearest the image centre; ``LamellaLeftEdge`` / ``LamellaRightEdge``: its
  silhouette's ends on the centre's row; ``LamellaTopEdge`` / ``LamellaBottomEdge``: on the
  centre's column;
- ``LandingPost``: the point of a landing post's silhouette nearest the image centre;
- ``VolumeBlockCentre``, ``CopperAdapterCentre``: centroid of the silhouette;
- ``ImageCentre``: ``(W // 2, H // 2)``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from ..geometry import image_to_pixel
from .manipulator import AXIS, HALF_ANGLE, LENGTH, TIP_RADIUS, cone_footprint
from .objects_liftout import CLASS_IDS, CLASS_NAMES

if TYPE_CHECKING:
    from .manipulator import NeedleModel
    from .objects_liftout import LiftoutObjects

__all__ = ["class_mask", "keypoint", "KEYPOINTS", "CLASS_NAMES", "CLASS_IDS"]

KEYPOINTS = ("ImageCentre", "NeedleTip", "LamellaCentre", "LamellaLeftEdge",
             "LamellaRightEdge", "LamellaTopEdge", "LamellaBottomEdge", "LandingPost",
             "VolumeBlockCentre", "CopperAdapterCentre")


def class_mask(view, liftout: LiftoutObjects, needle: NeedleModel) -> np.ndarray:
    """uint8 (H, W) class mask of the full frame of ``view`` (a beam's
    :class:`~fibsem_ophyd.sim.render.BeamView` now) with the ``liftout`` objects and the
    ``needle`` (module docstring)."""
    labels = np.zeros((view.height, view.width), dtype=np.uint8)
    liftout.paint_labels(labels, view, attached=False)
    if needle.inserted:
        fp = cone_footprint(view, labels.shape, needle.tip(), AXIS, HALF_ANGLE, TIP_RADIUS,
                            LENGTH)
        if fp is not None:
            r0, r1, c0, c1, d, r = fp
            labels[r0:r1, c0:c1][d < r] = CLASS_IDS["manipulator"]
    liftout.paint_labels(labels, view, attached=True)
    return labels


def _polygon_centroid(hull: np.ndarray) -> np.ndarray:
    x, y = hull[:, 0], hull[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cr = x * yn - xn * y
    a = cr.sum() / 2
    if abs(a) < 1e-12:
        return hull.mean(axis=0)
    return np.array([((x + xn) * cr).sum() / (6 * a), ((y + yn) * cr).sum() / (6 * a)])


def _clip_poly(hull: np.ndarray, w: int, h: int) -> np.ndarray:
    """Convex polygon clipped to the frame's pixel-centre box [0, w-1] x [0, h-1]."""
    poly = [tuple(p) for p in hull]
    for axis, lim, keep_le in ((0, 0.0, False), (0, w - 1.0, True), (1, 0.0, False),
                               (1, h - 1.0, True)):
        out = []
        n = len(poly)
        for k in range(n):
            p, q = poly[k], poly[(k + 1) % n]
            pin = p[axis] <= lim if keep_le else p[axis] >= lim
            qin = q[axis] <= lim if keep_le else q[axis] >= lim
            if pin:
                out.append(p)
            if pin != qin:
                t = (lim - p[axis]) / (q[axis] - p[axis])
                out.append((p[0] + t * (q[0] - p[0]), p[1] + t * (q[1] - p[1])))
        poly = out
        if not poly:
            return np.zeros((0, 2))
    return np.array(poly)


def _line_span(poly: np.ndarray, axis: int, value: float) -> tuple[float, float] | None:
    """Range of the other coordinate where the line ``coord[axis] = value`` crosses ``poly``."""
    other = 1 - axis
    hits = []
    n = len(poly)
    for k in range(n):
        p, q = poly[k], poly[(k + 1) % n]
        if (p[axis] - value) * (q[axis] - value) <= 0 and p[axis] != q[axis]:
            t = (value - p[axis]) / (q[axis] - p[axis])
            hits.append(p[other] + t * (q[other] - p[other]))
    if not hits:
        return None
    return min(hits), max(hits)


def _nearest_on_polygon(poly: np.ndarray, pt: np.ndarray) -> np.ndarray:
    """Point of a convex polygon (with its inside) nearest ``pt``."""
    from .objects_liftout import polygon_signed_distance
    if polygon_signed_distance(poly, np.array([pt[0]]), np.array([pt[1]]))[0] <= 0:
        return pt.copy()
    best, bd = None, math.inf
    n = len(poly)
    for k in range(n):
        a, b = poly[k], poly[(k + 1) % n]
        e = b - a
        t = float(np.clip((pt - a) @ e / max(e @ e, 1e-300), 0.0, 1.0))
        c = a + t * e
        d = float(np.hypot(*(c - pt)))
        if d < bd:
            best, bd = c, d
    return best


def _silhouettes(liftout: LiftoutObjects, view, label: str) -> list[np.ndarray]:
    """Frame-clipped silhouettes of the visible blocks of class ``label``."""
    out = []
    for attached in (False, True):
        for b in liftout._visible(attached):
            if b.label != label:
                continue
            poly = _clip_poly(liftout.silhouette(b, view), view.width, view.height)
            if len(poly) >= 3:
                out.append(poly)
    return out


def keypoint(view, liftout: LiftoutObjects, needle: NeedleModel,
             name: str) -> tuple[float, float]:
    """Pixel (column, row) of keypoint ``name`` in the full frame of ``view`` (module
    docstring).

    Raises
    ------
    ValueError
        Unknown name, or the object is not in the scene / not in the frame.
    """
    if name not in KEYPOINTS:
        raise ValueError(f"unknown keypoint {name!r}; known: {list(KEYPOINTS)}")
    w, h = view.width, view.height
    beam = view.beam
    centre = np.array([w // 2, h // 2], dtype=float)
    if name == "ImageCentre":
        return float(centre[0]), float(centre[1])
    if name == "NeedleTip":
        if not needle.inserted:
            raise ValueError("NeedleTip: the manipulator is not inserted")
        tip = needle.tip()
        t0 = np.array([tip @ view.right, tip @ view.up])
        k = np.array([AXIS @ view.right, AXIS @ view.up])
        end = t0 - TIP_RADIUS * k / max(float(np.hypot(*k)), 1e-12)
        col, row = image_to_pixel(*view.qperp_to_image(end[0], end[1]), (h, w), view.pixel)
        return float(col), float(row)
    label = {"Lamella": "lamella", "LandingPost": "landing_post",
             "VolumeBlock": "volume_block", "CopperAdapter": "copper_adaptor"}
    key = next(k for k in label if name.startswith(k))
    polys = _silhouettes(liftout, view, label[key])
    if not polys:
        raise ValueError(f"{name}: no {label[key]} in the {beam} frame")
    if key == "LandingPost":
        pts = [_nearest_on_polygon(p, centre) for p in polys]
        best = min(pts, key=lambda p: float(np.hypot(*(p - centre))))
        return float(best[0]), float(best[1])
    if key in ("VolumeBlock", "CopperAdapter"):
        poly = max(polys, key=lambda p: float(np.ptp(p[:, 0]) * np.ptp(p[:, 1])))
        c = _polygon_centroid(poly)
        return float(c[0]), float(c[1])
    boxes = [(0.5 * (p[:, 0].min() + p[:, 0].max()), 0.5 * (p[:, 1].min() + p[:, 1].max()), p)
             for p in polys]
    cx, cy, poly = min(boxes, key=lambda b: math.hypot(b[0] - centre[0], b[1] - centre[1]))
    if name == "LamellaCentre":
        return float(cx), float(cy)
    if name in ("LamellaLeftEdge", "LamellaRightEdge"):
        span = _line_span(poly, 1, cy)
        return float(span[0] if name == "LamellaLeftEdge" else span[1]), float(cy)
    span = _line_span(poly, 0, cx)
    return float(cx), float(span[0] if name == "LamellaTopEdge" else span[1])
