"""Exact planar geometry of milling shapes (metres, +y up): boxes, regular polygons, segment
crossings, and the exact area and volume of a union of polygons with planar depths."""

from __future__ import annotations

import math

import numpy as np

from ..geometry import pixel_to_image


def _grid(shape: tuple[int, int], pixel_size: float):
    h, w = shape
    x, y = pixel_to_image(np.arange(w)[None, :], np.arange(h)[:, None], shape, pixel_size)
    return np.broadcast_to(x, shape), np.broadcast_to(y, shape)


def _rotated_box(cx: float, cy: float, w: float, h: float, rotation: float) -> np.ndarray:
    """Corners (4, 2) of a w x h box centred at (cx, cy), turned ``rotation`` degrees
    counter-clockwise; listed counter-clockwise from the local bottom-left."""
    c, s = math.cos(math.radians(rotation)), math.sin(math.radians(rotation))
    local = np.array([[-w / 2, -h / 2], [w / 2, -h / 2], [w / 2, h / 2], [-w / 2, h / 2]])
    return np.column_stack([cx + c * local[:, 0] - s * local[:, 1],
                            cy + s * local[:, 0] + c * local[:, 1]])


def _bounds_of(points: np.ndarray) -> tuple[float, float, float, float]:
    return (float(points[:, 0].min()), float(points[:, 1].min()),
            float(points[:, 0].max()), float(points[:, 1].max()))


def _regular_polygon(cx: float, cy: float, r: float, n: int, same_area: bool) -> np.ndarray:
    """An n-gon around (cx, cy); with ``same_area`` its circumradius is chosen so its area is
    pi r^2 (the circle's), otherwise its vertices lie on the circle."""
    if same_area:
        r = r * math.sqrt(2 * math.pi / (n * math.sin(2 * math.pi / n)))
    a = np.linspace(0.0, 2 * math.pi, n, endpoint=False)
    return np.column_stack([cx + r * np.cos(a), cy + r * np.sin(a)])


def _segments_cross(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """For segment arrays p, q (n, 4: x0, y0, x1, y1): n x m booleans, True where they cross
    at a point interior to both."""
    px, py = p[:, 0:1], p[:, 1:2]
    rx, ry = p[:, 2:3] - px, p[:, 3:4] - py
    qx, qy = q[None, :, 0], q[None, :, 1]
    sx, sy = q[None, :, 2] - qx, q[None, :, 3] - qy
    den = rx * sy - ry * sx
    with np.errstate(divide="ignore", invalid="ignore"):
        t = ((qx - px) * sy - (qy - py) * sx) / den
        u = ((qx - px) * ry - (qy - py) * rx) / den
    eps = 1e-9
    return (np.abs(den) > 0) & (t > eps) & (t < 1 - eps) & (u > eps) & (u < 1 - eps)


def _polygon_area_centroid(p: np.ndarray) -> tuple[float, float, float]:
    x, y = p[:, 0], p[:, 1]
    xn, yn = np.roll(x, -1), np.roll(y, -1)
    cross = x * yn - xn * y
    a = cross.sum() / 2
    if abs(a) < 1e-300:
        return 0.0, float(x.mean()), float(y.mean())
    return abs(a), float(((x + xn) * cross).sum() / (6 * a)), \
        float(((y + yn) * cross).sum() / (6 * a))


def _clip(poly: np.ndarray, f: np.ndarray) -> np.ndarray:
    """Keep the part of convex ``poly`` where f . (x, y, 1) >= 0."""
    if len(poly) == 0:
        return poly
    val = poly @ f[:2] + f[2]
    out = []
    n = len(poly)
    for i in range(n):
        p, q = poly[i], poly[(i + 1) % n]
        vp, vq = val[i], val[(i + 1) % n]
        if vp >= 0:
            out.append(p)
        if (vp >= 0) != (vq >= 0):
            out.append(p + (q - p) * (vp / (vp - vq)))
    return np.array(out) if out else np.empty((0, 2))


def _union_measure(pieces) -> tuple[float, float]:
    """Exact area (m^2) and volume (m^3) of a union of polygons (even-odd rings) whose depth
    is a plane ``a x + b y + c`` inside each; where they overlap the deepest counts.

    Sweep: between consecutive vertex / edge-crossing abscissae no two edges cross, so the
    plane is cut into trapezoids each covered by a fixed set of pieces; a trapezoid's volume
    is that of each piece's plane over the part where it is the deepest (a convex clip).
    """
    pts = np.concatenate([r for rings, _ in pieces for r in rings])
    x0, y0 = pts.min(axis=0)
    scale = float(max(np.ptp(pts[:, 0]), np.ptp(pts[:, 1]), 1e-300))
    segs, owner, planes = [], [], []
    for i, (rings, (a, b, c)) in enumerate(pieces):
        planes.append((a * scale, b * scale, a * x0 + b * y0 + c))
        for ring in rings:
            r = (np.asarray(ring, dtype=float) - (x0, y0)) / scale
            seg = np.column_stack([r, np.roll(r, -1, axis=0)])
            flip = seg[:, 0] > seg[:, 2]
            seg[flip] = seg[flip][:, [2, 3, 0, 1]]
            keep = seg[:, 2] - seg[:, 0] > 1e-13  # vertical edges never cross a sweep line
            segs.append(seg[keep])
            owner.append(np.full(int(keep.sum()), i))
    seg = np.concatenate(segs)
    owner = np.concatenate(owner)
    planes = np.array(planes)
    xs = [seg[:, 0], seg[:, 2]]
    for k in range(0, len(seg), 256):  # abscissae where edges cross
        p = seg[k:k + 256]
        hit = _segments_cross(p, seg)
        i, j = np.nonzero(hit)
        if i.size:
            q = seg[j]
            rx, ry = p[i, 2] - p[i, 0], p[i, 3] - p[i, 1]
            sx, sy = q[:, 2] - q[:, 0], q[:, 3] - q[:, 1]
            t = ((q[:, 0] - p[i, 0]) * sy - (q[:, 1] - p[i, 1]) * sx) / (rx * sy - ry * sx)
            xs.append(p[i, 0] + t * rx)
    xs = np.unique(np.concatenate(xs))
    xs = xs[np.concatenate([[True], np.diff(xs) > 1e-12])]
    slope = (seg[:, 3] - seg[:, 1]) / (seg[:, 2] - seg[:, 0])
    area = volume = 0.0
    parity = np.zeros(len(pieces), dtype=bool)
    for xa, xb in zip(xs[:-1], xs[1:], strict=True):
        idx = np.flatnonzero((seg[:, 0] <= xa + 1e-12) & (seg[:, 2] >= xb - 1e-12))
        if idx.size < 2:
            continue
        ya = seg[idx, 1] + slope[idx] * (xa - seg[idx, 0])
        yb = seg[idx, 1] + slope[idx] * (xb - seg[idx, 0])
        order = np.argsort(ya + yb, kind="stable")
        parity[:] = False
        for k in range(idx.size - 1):
            lo, hi = order[k], order[k + 1]
            parity[owner[idx[lo]]] ^= True
            cover = np.flatnonzero(parity)
            ha, hb = ya[hi] - ya[lo], yb[hi] - yb[lo]
            if cover.size == 0 or ha + hb <= 1e-15:
                continue
            trap = np.array([[xa, ya[lo]], [xb, yb[lo]], [xb, yb[hi]], [xa, ya[hi]]])
            t_area = (xb - xa) * (ha + hb) / 2
            area += t_area
            pl = np.unique(planes[cover], axis=0)
            if len(pl) == 1:
                _, cx, cy = _polygon_area_centroid(trap)
                volume += t_area * (pl[0, 0] * cx + pl[0, 1] * cy + pl[0, 2])
                continue
            for i in range(len(pl)):  # where plane i is the deepest
                part = trap
                for j in range(len(pl)):
                    if j != i:
                        part = _clip(part, pl[i] - pl[j])
                if len(part) >= 3:
                    a_p, cx, cy = _polygon_area_centroid(part)
                    volume += a_p * (pl[i, 0] * cx + pl[i, 1] * cy + pl[i, 2])
    return area * scale**2, volume * scale**2


def _overlap_groups(bounds: list[tuple[float, float, float, float]]) -> list[list[int]]:
    """Indices grouped into sets whose bounding boxes overlap (touching is not overlap)."""
    n = len(bounds)
    b = np.asarray(bounds, dtype=float)
    tol = 1e-9 * float(max(np.ptp(b[:, [0, 2]]), np.ptp(b[:, [1, 3]]), 1e-300))
    parent = list(range(n))

    def root(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    active: list[int] = []
    for i in sorted(range(n), key=lambda k: b[k, 0]):
        active = [j for j in active if b[j, 2] > b[i, 0] + tol]
        for j in active:
            if b[j, 1] < b[i, 3] - tol and b[i, 1] < b[j, 3] - tol:
                parent[root(i)] = root(j)
        active.append(i)
    groups: dict[int, list[int]] = {}
    for i in range(n):
        groups.setdefault(root(i), []).append(i)
    return list(groups.values())
