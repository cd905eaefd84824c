"""Milling patterns in the ion image frame: metres from the image centre, +x right, +y up.

Primitive shapes (``Rectangle``, ``Line``, ``Circle``, ``Polygon``, ``Bitmap``) know their area,
their removed volume, how to draw themselves on an image grid (``depth_map``) and their outline
(``outline``, ``outline_pixels``, ``draw``). Patterns are named lists of shapes, built from the
parameters OpenFIBSEM uses (``fibsem.milling.patterning``): the single-shape patterns
``Rectangle``, ``Line``, ``Circle``, ``Polygon``, ``Bitmap`` and the composites ``Trench``,
``Horseshoe``, ``HorseshoeVertical``, ``Undercut``, ``Fiducial``, ``MicroExpansion``,
``SerialSection``, ``ArrayPattern``, ``WaffleNotch`` and ``TrapezoidTrench``.

Where shapes of a pattern overlap, the deepest one sets the depth there (``depth_at``), and
``Pattern.area`` / ``Pattern.volume`` count the overlap once: they integrate that union exactly
(polygon sweep; circles enter as area-preserving 720-gons when they overlap something).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import ClassVar

import numpy as np

from ..geometry import image_to_pixel, pixel_to_image

__all__ = [
    "Shape", "Rectangle", "Line", "Circle", "Polygon", "Bitmap",
    "Pattern", "RectanglePattern", "LinePattern", "CirclePattern", "PolygonPattern",
    "BitmapPattern", "Trench", "Horseshoe", "HorseshoeVertical", "Undercut", "Fiducial",
    "MicroExpansion", "SerialSection", "ArrayPattern", "WaffleNotch", "TrapezoidTrench",
    "PATTERNS", "make_pattern", "CROSS_SECTIONS", "SCAN_DIRECTIONS",
]

CROSS_SECTIONS = ("Rectangle", "RegularCrossSection", "CleaningCrossSection")
SCAN_DIRECTIONS = ("TopToBottom", "BottomToTop", "LeftToRight", "RightToLeft")

#: vertices of the polygon a circle is replaced by when it overlaps another shape
_CIRCLE_SIDES = 720
#: vertices of a circle's drawn outline
_DRAW_SIDES = 256


# ----------------------------------------------------------------------------- validation
def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) \
        and math.isfinite(value)


def _positive(name: str, value: float, owner: str) -> float:
    if not _is_number(value):
        raise ValueError(f"{owner}.{name} must be a finite number in metres, got {value!r}")
    if value <= 0:
        raise ValueError(f"{owner}.{name} must be > 0 m, got {value!r}")
    return float(value)


def _finite(name: str, value: float, owner: str) -> float:
    if not _is_number(value):
        raise ValueError(f"{owner}.{name} must be a finite number, got {value!r}")
    return float(value)


def _passes(value, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not float(value).is_integer() or value < 0:
        raise ValueError(f"{owner}.passes must be an integer >= 0 (0: the application "
                         f"file's default), got {value!r}")
    return int(value)


def _choice(name: str, value, options: tuple[str, ...], owner: str) -> str:
    if value not in options:
        raise ValueError(f"{owner}.{name}: unknown {value!r}; choose one of {list(options)}")
    return value


def _points(value, owner: str) -> np.ndarray:
    """``value`` as an (n >= 3, 2) array of finite points, else ValueError naming it."""
    try:
        v = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        v = np.empty((0,))
    if v.ndim != 2 or v.shape[1] != 2 or len(v) < 3 or not np.all(np.isfinite(v)):
        raise ValueError(f"{owner} must be >= 3 finite [x, y] pairs (m), got {value!r}")
    return v


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


# ----------------------------------------------------------------------------- outlines
class _Outlined:
    """Outline in metres (``outline``), in image pixels (``outline_pixels``) and drawn over an
    image on matplotlib axes (``draw``)."""

    def outline(self) -> list[np.ndarray]:
        """Closed outlines, each an (N, 2) array of image-frame points (m)."""
        raise NotImplementedError

    def outline_pixels(self, pixel_size: float, image_shape: tuple[int, int]) -> list[np.ndarray]:
        """The outlines as (col, row) pixel coordinates of an image ``image_shape`` (rows,
        cols) with ``pixel_size`` m pixels: +y up in metres is rows down; pixel centres sit at
        integer (col, row), as matplotlib's ``imshow`` draws them."""
        pixel_size = _positive("pixel_size", pixel_size, type(self).__name__)
        out = []
        for ring in self.outline():
            col, row = image_to_pixel(ring[:, 0], ring[:, 1], image_shape, pixel_size)
            out.append(np.column_stack([col, row]))
        return out

    def draw(self, ax, pixel_size: float, image_shape: tuple[int, int], **style) -> list:
        """Outline every shape on matplotlib axes ``ax`` showing an image ``image_shape`` with
        ``pixel_size`` m pixels (pixel coordinates, rows down). ``style`` goes to
        ``matplotlib.patches.Polygon`` (default: unfilled yellow, 1 pt). Returns the patches."""
        from matplotlib.patches import Polygon as PolygonPatch

        style = {"fill": False, "edgecolor": "yellow", "linewidth": 1.0, **style}
        patches = []
        for ring in self.outline_pixels(pixel_size, image_shape):
            patch = PolygonPatch(ring, closed=True, **style)
            ax.add_patch(patch)
            patches.append(patch)
        return patches


# ----------------------------------------------------------------------------- shapes
class Shape(_Outlined):
    """A primitive milling shape. Subclasses define ``area`` (m^2), ``volume`` (m^3),
    ``bounds`` (x0, y0, x1, y1 in m), ``depth_at(x, y, pixel_size)``: the target depth (m) at
    image points (m), ``outline()`` and ``pieces()``: polygons with a depth that is linear
    (``a x + b y + c``) inside each, used to measure overlapping shapes exactly."""

    #: milling time multiplier relative to volume / (current x rate)
    time_factor: float = 1.0

    def depth_map(self, shape: tuple[int, int], pixel_size: float) -> np.ndarray:
        """Target depth (m) per pixel of an image ``shape`` with ``pixel_size`` m pixels."""
        x, y = _grid(shape, pixel_size)
        return np.broadcast_to(self.depth_at(x, y, pixel_size), shape)

    def mask(self, shape: tuple[int, int], pixel_size: float) -> np.ndarray:
        """Boolean mask of the pixels the beam visits."""
        return self.depth_map(shape, pixel_size) > 0

    def pieces(self) -> list[tuple[list[np.ndarray], tuple[float, float, float]]]:
        """``[(rings, (a, b, c)), ...]``: even-odd polygons (m) and their depth plane (m)."""
        raise NotImplementedError


@dataclass
class Rectangle(Shape):
    """A rectangle ``width`` x ``height`` (m) at ``centre_x, centre_y`` (m), rotated by
    ``rotation`` degrees (counter-clockwise), milled ``depth`` m deep.

    ``cross_section``: "Rectangle" (flat floor), "RegularCrossSection" (a ramp, deepest where
    the scan ends: half the volume) or "CleaningCrossSection" (line by line towards the face;
    OpenFIBSEM's estimator takes 0.66 of the time). ``passes``: how many times the beam
    scans the shape (0: the application file's default); the dose, and so the depth and
    time, do not depend on it.
    """

    width: float
    height: float
    depth: float
    centre_x: float = 0.0
    centre_y: float = 0.0
    rotation: float = 0.0
    cross_section: str = "Rectangle"
    scan_direction: str = "TopToBottom"
    passes: int = 0

    def __post_init__(self):
        for n in ("width", "height", "depth"):
            setattr(self, n, _positive(n, getattr(self, n), "Rectangle"))
        for n in ("centre_x", "centre_y", "rotation"):
            setattr(self, n, _finite(n, getattr(self, n), "Rectangle"))
        _choice("cross_section", self.cross_section, CROSS_SECTIONS, "Rectangle")
        _choice("scan_direction", self.scan_direction, SCAN_DIRECTIONS, "Rectangle")
        self.passes = _passes(self.passes, "Rectangle")

    @property
    def time_factor(self) -> float:  # type: ignore[override]
        return 0.66 if self.cross_section == "CleaningCrossSection" else 1.0

    @property
    def area(self) -> float:
        return self.width * self.height

    @property
    def volume(self) -> float:
        ramp = 0.5 if self.cross_section == "RegularCrossSection" else 1.0
        return self.area * self.depth * ramp

    def outline(self) -> list[np.ndarray]:
        return [_rotated_box(self.centre_x, self.centre_y, self.width, self.height,
                             self.rotation)]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        return _bounds_of(self.outline()[0])

    def _ramp(self) -> tuple[float, float]:
        """d(fraction of the depth)/d(u, v) of a regular cross-section: deepest where the
        scan ends."""
        return {
            "TopToBottom": (0.0, -1.0 / self.height),
            "BottomToTop": (0.0, 1.0 / self.height),
            "LeftToRight": (1.0 / self.width, 0.0),
            "RightToLeft": (-1.0 / self.width, 0.0),
        }[self.scan_direction]

    def pieces(self):
        if self.cross_section != "RegularCrossSection":
            return [(self.outline(), (0.0, 0.0, self.depth))]
        c, s = math.cos(math.radians(self.rotation)), math.sin(math.radians(self.rotation))
        ku, kv = self._ramp()
        # depth = D (0.5 + ku u + kv v), u = c dx + s dy, v = -s dx + c dy
        a = self.depth * (ku * c - kv * s)
        b = self.depth * (ku * s + kv * c)
        return [(self.outline(), (a, b, 0.5 * self.depth - a * self.centre_x
                                  - b * self.centre_y))]

    def depth_at(self, x, y, pixel_size: float = 0.0):
        c, s = math.cos(math.radians(self.rotation)), math.sin(math.radians(self.rotation))
        dx, dy = x - self.centre_x, y - self.centre_y
        u, v = c * dx + s * dy, -s * dx + c * dy  # pattern-local coordinates
        inside = (np.abs(u) <= self.width / 2) & (np.abs(v) <= self.height / 2)
        depth = np.where(inside, self.depth, 0.0)
        if self.cross_section == "RegularCrossSection":
            ku, kv = self._ramp()
            depth = depth * np.clip(0.5 + ku * u + kv * v, 0.0, 1.0)
        return depth


@dataclass
class Line(Shape):
    """A line from (start_x, start_y) to (end_x, end_y) m, milled ``depth`` m deep over a
    ``width`` m wide strip (the beam's footprint): a rectangle ``length`` x ``width`` along the
    line, so its area is ``length * width``."""

    start_x: float
    start_y: float
    end_x: float
    end_y: float
    depth: float
    width: float = 50e-9

    def __post_init__(self):
        for n in ("start_x", "start_y", "end_x", "end_y"):
            setattr(self, n, _finite(n, getattr(self, n), "Line"))
        self.depth = _positive("depth", self.depth, "Line")
        self.width = _positive("width", self.width, "Line")
        if self.length == 0:
            raise ValueError(f"Line: start and end are the same point "
                             f"({self.start_x!r}, {self.start_y!r})")

    @property
    def length(self) -> float:
        return math.hypot(self.end_x - self.start_x, self.end_y - self.start_y)

    @property
    def area(self) -> float:
        return self.length * self.width

    @property
    def volume(self) -> float:
        return self.area * self.depth

    def _footprint(self, width: float) -> np.ndarray:
        return _rotated_box((self.start_x + self.end_x) / 2, (self.start_y + self.end_y) / 2,
                            self.length, width,
                            math.degrees(math.atan2(self.end_y - self.start_y,
                                                    self.end_x - self.start_x)))

    def outline(self) -> list[np.ndarray]:
        return [self._footprint(self.width)]

    @property
    def bounds(self):
        return _bounds_of(self.outline()[0])

    def pieces(self):
        return [(self.outline(), (0.0, 0.0, self.depth))]

    def depth_at(self, x, y, pixel_size: float = 0.0):
        ax, ay = (self.end_x - self.start_x) / self.length, (self.end_y - self.start_y) / \
            self.length
        dx, dy = x - self.start_x, y - self.start_y
        along = dx * ax + dy * ay
        across = np.abs(-dx * ay + dy * ax)
        # at least the nearest pixel: a line narrower than a pixel still mills
        inside = (along >= 0) & (along <= self.length) & \
            (across <= max(self.width, pixel_size) / 2)
        return np.where(inside, self.depth, 0.0)


@dataclass
class Circle(Shape):
    """A disc of ``radius`` m at (centre_x, centre_y), or an annulus when ``thickness`` > 0
    (the ring between radius - thickness and radius)."""

    radius: float
    depth: float
    centre_x: float = 0.0
    centre_y: float = 0.0
    thickness: float = 0.0

    def __post_init__(self):
        self.radius = _positive("radius", self.radius, "Circle")
        self.depth = _positive("depth", self.depth, "Circle")
        self.centre_x = _finite("centre_x", self.centre_x, "Circle")
        self.centre_y = _finite("centre_y", self.centre_y, "Circle")
        self.thickness = _finite("thickness", self.thickness, "Circle")
        if not 0 <= self.thickness <= self.radius:
            raise ValueError(f"Circle.thickness must be within [0, radius {self.radius!r}] m, "
                             f"got {self.thickness!r}")

    @property
    def inner_radius(self) -> float:
        return self.radius - self.thickness if self.thickness > 0 else 0.0

    @property
    def area(self) -> float:
        return math.pi * (self.radius**2 - self.inner_radius**2)

    @property
    def volume(self) -> float:
        return self.area * self.depth

    @property
    def bounds(self):
        r = self.radius
        return self.centre_x - r, self.centre_y - r, self.centre_x + r, self.centre_y + r

    def _rings(self, n: int, same_area: bool) -> list[np.ndarray]:
        rings = [_regular_polygon(self.centre_x, self.centre_y, self.radius, n, same_area)]
        if self.inner_radius > 0:
            rings.append(_regular_polygon(self.centre_x, self.centre_y, self.inner_radius, n,
                                          same_area))
        return rings

    def outline(self) -> list[np.ndarray]:
        return self._rings(_DRAW_SIDES, same_area=False)

    def pieces(self):
        return [(self._rings(_CIRCLE_SIDES, same_area=True), (0.0, 0.0, self.depth))]

    def depth_at(self, x, y, pixel_size: float = 0.0):
        r = np.hypot(x - self.centre_x, y - self.centre_y)
        return np.where((r <= self.radius) & (r >= self.inner_radius), self.depth, 0.0)


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


@dataclass
class Polygon(Shape):
    """A filled simple polygon with ``vertices`` [[x, y], ...] in m, ``depth`` m deep."""

    vertices: list
    depth: float

    def __post_init__(self):
        v = _points(self.vertices, "Polygon.vertices")
        self.vertices = v.tolist()
        self.depth = _positive("depth", self.depth, "Polygon")
        edges = np.column_stack([v, np.roll(v, -1, axis=0)])
        if np.any(_segments_cross(edges, edges)):
            raise ValueError(f"Polygon edges cross each other: vertices {self.vertices!r}")
        if self.area == 0:
            raise ValueError(f"Polygon has zero area: vertices {self.vertices!r}")

    @property
    def area(self) -> float:
        v = np.asarray(self.vertices)
        x, y = v[:, 0], v[:, 1]
        return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2)

    @property
    def volume(self) -> float:
        return self.area * self.depth

    @property
    def bounds(self):
        return _bounds_of(np.asarray(self.vertices))

    def outline(self) -> list[np.ndarray]:
        return [np.asarray(self.vertices)]

    def pieces(self):
        return [(self.outline(), (0.0, 0.0, self.depth))]

    def depth_at(self, x, y, pixel_size: float = 0.0):
        v = np.asarray(self.vertices)
        inside = np.zeros(np.broadcast(x, y).shape, dtype=bool)
        for (x0, y0), (x1, y1) in zip(v, np.roll(v, -1, axis=0), strict=True):
            crosses = (y0 > y) != (y1 > y)
            with np.errstate(divide="ignore", invalid="ignore"):
                xc = x0 + (y - y0) * (x1 - x0) / (y1 - y0)
            inside ^= crosses & (x < xc)
        return np.where(inside, self.depth, 0.0)


@dataclass
class Bitmap(Shape):
    """A grey-level bitmap ``array`` (0..1 = fraction of ``depth``; row 0 at the top)
    stretched over ``width`` x ``height`` m, centred at (centre_x, centre_y) and rotated by
    ``rotation`` degrees counter-clockwise. Area: the non-zero pixels; volume: the grey-weighted
    sum. ``scan_direction`` and ``passes`` (0: application file default) as for rectangles."""

    array: np.ndarray = field(repr=False)
    width: float = 10e-6
    height: float = 10e-6
    depth: float = 1e-6
    centre_x: float = 0.0
    centre_y: float = 0.0
    rotation: float = 0.0
    scan_direction: str = "TopToBottom"
    passes: int = 0

    def __post_init__(self):
        try:
            a = np.asarray(self.array, dtype=float)
        except (TypeError, ValueError):
            a = np.empty((0,))
        if a.ndim != 2 or a.size == 0 or not np.all(np.isfinite(a)) or a.min() < 0 \
                or a.max() > 1:
            raise ValueError("Bitmap.array must be a non-empty 2-D array of values in 0..1, "
                             f"got {self.array!r}")
        self.array = a
        for n in ("width", "height", "depth"):
            setattr(self, n, _positive(n, getattr(self, n), "Bitmap"))
        for n in ("centre_x", "centre_y", "rotation"):
            setattr(self, n, _finite(n, getattr(self, n), "Bitmap"))
        _choice("scan_direction", self.scan_direction, SCAN_DIRECTIONS, "Bitmap")
        self.passes = _passes(self.passes, "Bitmap")

    @property
    def pixel_area(self) -> float:
        rows, cols = self.array.shape
        return (self.width / cols) * (self.height / rows)

    @property
    def area(self) -> float:
        return float(np.count_nonzero(self.array)) * self.pixel_area

    @property
    def volume(self) -> float:
        return float(self.array.sum()) * self.pixel_area * self.depth

    def outline(self) -> list[np.ndarray]:
        return [_rotated_box(self.centre_x, self.centre_y, self.width, self.height,
                             self.rotation)]

    @property
    def bounds(self):
        return _bounds_of(self.outline()[0])

    def pieces(self):
        rows, cols = self.array.shape
        pw, ph = self.width / cols, self.height / rows
        c, s = math.cos(math.radians(self.rotation)), math.sin(math.radians(self.rotation))
        out = []
        for r, k in zip(*np.nonzero(self.array), strict=True):
            u = -self.width / 2 + (k + 0.5) * pw
            v = self.height / 2 - (r + 0.5) * ph
            cx, cy = self.centre_x + c * u - s * v, self.centre_y + s * u + c * v
            out.append(([_rotated_box(cx, cy, pw, ph, self.rotation)],
                        (0.0, 0.0, float(self.array[r, k]) * self.depth)))
        return out

    def depth_at(self, x, y, pixel_size: float = 0.0):
        rows, cols = self.array.shape
        c, s = math.cos(math.radians(self.rotation)), math.sin(math.radians(self.rotation))
        dx, dy = x - self.centre_x, y - self.centre_y
        u, v = c * dx + s * dy, -s * dx + c * dy
        col = np.floor((u + self.width / 2) / (self.width / cols)).astype(int)
        row = np.floor((self.height / 2 - v) / (self.height / rows)).astype(int)
        ok = (col >= 0) & (col < cols) & (row >= 0) & (row < rows)
        out = np.zeros(np.broadcast(x, y).shape)
        out[ok] = self.array[row[ok], col[ok]] * self.depth
        return out


# ----------------------------------------------------------------------------- union measure
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


# ----------------------------------------------------------------------------- patterns
#: parameter names checked as finite numbers (others that are floats must be > 0 m)
_FINITE = {"centre_x", "centre_y", "start_x", "start_y", "end_x", "end_y", "rotation", "angle",
           "thickness", "h_offset"}
_FLAGS = {"inverted", "asymmetric", "use_side_patterns"}
_COUNTS = {"n_columns": (1, 100), "n_rows": (1, 100)}
_SHAPE_DATA = {"vertices", "array"}


class Pattern(_Outlined):
    """A named list of primitive shapes, built in ``shapes()`` from the pattern's parameters.

    Parameters are validated on construction: lengths must be > 0 m, positions and angles
    finite, cross-sections and scan directions known. ``area`` and ``volume`` count overlaps
    once (the union, the deepest shape setting the depth, as ``depth_at`` does).
    """

    name: ClassVar[str] = "Pattern"
    #: OpenFIBSEM parameters read from protocols only at these (no-op) values
    openfibsem_defaults: ClassVar[dict] = {}

    def __post_init__(self):
        owner = self.name
        for f in fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            if f.name in _SHAPE_DATA:
                continue
            if f.name == "cross_section":
                _choice(f.name, v, CROSS_SECTIONS, owner)
            elif f.name == "scan_direction":
                _choice(f.name, v, SCAN_DIRECTIONS, owner)
            elif f.name == "passes":
                setattr(self, f.name, _passes(v, owner))
            elif f.name in _FLAGS:
                if not isinstance(v, bool):
                    raise ValueError(f"{owner}.{f.name} must be true or false, got {v!r}")
            elif f.name in _COUNTS:
                lo, hi = _COUNTS[f.name]
                if isinstance(v, bool) or not isinstance(v, (int, float)) \
                        or not float(v).is_integer() or not lo <= v <= hi:
                    raise ValueError(f"{owner}.{f.name} must be an integer in [{lo}, {hi}], "
                                     f"got {v!r}")
                setattr(self, f.name, int(v))
            elif f.name in _FINITE:
                setattr(self, f.name, _finite(f.name, v, owner))
            else:
                setattr(self, f.name, _positive(f.name, v, owner))
        self._check()
        self.shapes()  # every shape validates itself now, not at milling time

    def _check(self) -> None:
        """Relations between parameters (subclasses)."""

    def shapes(self) -> list[Shape]:
        raise NotImplementedError

    def _measure(self) -> tuple[float, float]:
        shapes = self.shapes()
        area = volume = 0.0
        for group in _overlap_groups([s.bounds for s in shapes]):
            if len(group) == 1:
                area += shapes[group[0]].area
                volume += shapes[group[0]].volume
            else:
                a, v = _union_measure([p for i in group for p in shapes[i].pieces()])
                area += a
                volume += v
        return area, volume

    @property
    def area(self) -> float:
        """Milled area, m^2 (overlaps once)."""
        return self._measure()[0]

    @property
    def volume(self) -> float:
        """Removed volume, m^3 (overlaps once, at the deepest shape's depth)."""
        return self._measure()[1]

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        b = np.array([s.bounds for s in self.shapes()])
        return float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), \
            float(b[:, 3].max())

    def outline(self) -> list[np.ndarray]:
        return [ring for s in self.shapes() for ring in s.outline()]

    def depth_at(self, x, y, pixel_size: float = 0.0) -> np.ndarray:
        """Target depth (m) at image points (m): the deepest of the overlapping shapes."""
        out = np.zeros(np.broadcast(x, y).shape)
        for s in self.shapes():
            np.maximum(out, s.depth_at(x, y, pixel_size), out=out)
        return out

    def depth_map(self, shape: tuple[int, int], pixel_size: float) -> np.ndarray:
        """Target depth (m) per pixel of an image ``shape`` with ``pixel_size`` m pixels."""
        x, y = _grid(shape, pixel_size)
        return self.depth_at(x, y, pixel_size)

    def to_dict(self) -> dict:
        d = {"name": self.name}
        for f in fields(self):  # type: ignore[arg-type]
            v = getattr(self, f.name)
            d[f.name] = v.tolist() if isinstance(v, np.ndarray) else v
        return d


# --- single shapes
@dataclass
class RectanglePattern(Pattern):
    """One rectangle (OpenFIBSEM ``Rectangle``): ``width`` x ``height`` x ``depth`` m,
    ``rotation`` degrees counter-clockwise, ``cross_section`` (Rectangle, RegularCrossSection,
    CleaningCrossSection), ``scan_direction`` and ``passes`` (0: application file default)."""

    width: float = 10e-6
    height: float = 5e-6
    depth: float = 1e-6
    centre_x: float = 0.0
    centre_y: float = 0.0
    rotation: float = 0.0
    cross_section: str = "Rectangle"
    scan_direction: str = "TopToBottom"
    passes: int = 0
    name: ClassVar[str] = "Rectangle"
    openfibsem_defaults: ClassVar[dict] = {"time": (0,)}

    def shapes(self):
        return [Rectangle(self.width, self.height, self.depth, self.centre_x, self.centre_y,
                          self.rotation, self.cross_section, self.scan_direction, self.passes)]


@dataclass
class LinePattern(Pattern):
    """One line (OpenFIBSEM ``Line``) from (start_x, start_y) to (end_x, end_y) m, ``depth``
    m deep. Not in OpenFIBSEM: ``width``, the beam footprint the area and volume are taken
    over (50 nm), and the line is placed relative to ``centre_x, centre_y`` (the protocol's
    ``point``) so moving the pattern moves the line; OpenFIBSEM ignores the point of a line."""

    start_x: float = -10e-6
    end_x: float = 10e-6
    start_y: float = 0.0
    end_y: float = 0.0
    depth: float = 1e-6
    width: float = 50e-9
    centre_x: float = 0.0
    centre_y: float = 0.0
    name: ClassVar[str] = "Line"

    def shapes(self):
        return [Line(self.centre_x + self.start_x, self.centre_y + self.start_y,
                     self.centre_x + self.end_x, self.centre_y + self.end_y, self.depth,
                     self.width)]


@dataclass
class CirclePattern(Pattern):
    """One disc (OpenFIBSEM ``Circle``) of ``radius`` m, ``depth`` m deep; an annulus of
    ``thickness`` m (the ring inside the radius) when thickness > 0."""

    radius: float = 5e-6
    depth: float = 1e-6
    thickness: float = 0.0
    centre_x: float = 0.0
    centre_y: float = 0.0
    name: ClassVar[str] = "Circle"

    def shapes(self):
        return [Circle(self.radius, self.depth, self.centre_x, self.centre_y, self.thickness)]


@dataclass
class PolygonPattern(Pattern):
    """One filled polygon (OpenFIBSEM ``PolygonPattern``): ``vertices`` [[x, y], ...] in m
    relative to ``centre_x, centre_y`` (+y up), ``depth`` m deep. Exclusion polygons
    (``is_exclusion: true``) are not supported."""

    vertices: list = field(default_factory=lambda: [[-5e-6, -5e-6], [5e-6, -5e-6],
                                                    [0.0, 5e-6]])
    depth: float = 1e-6
    centre_x: float = 0.0
    centre_y: float = 0.0
    name: ClassVar[str] = "Polygon"
    openfibsem_defaults: ClassVar[dict] = {"is_exclusion": (False,)}

    def shapes(self):
        v = _points(self.vertices, "Polygon.vertices")
        return [Polygon(v + (self.centre_x, self.centre_y), self.depth)]


@dataclass
class BitmapPattern(Pattern):
    """A grey-level bitmap (OpenFIBSEM ``Bitmap``): ``array`` (rows of 0..1 values, row 0 at
    the top) stretched over ``width`` x ``height`` m, ``depth`` m where the value is 1,
    ``rotation`` degrees counter-clockwise, ``scan_direction``, ``passes``. Bitmaps are given
    as arrays; OpenFIBSEM's image ``path`` and resampling ``interpolation`` are not read
    (pixels are sampled nearest)."""

    array: list = field(default_factory=lambda: [[1.0]], repr=False)
    width: float = 10e-6
    height: float = 10e-6
    depth: float = 1e-6
    centre_x: float = 0.0
    centre_y: float = 0.0
    rotation: float = 0.0
    scan_direction: str = "TopToBottom"
    passes: int = 0
    name: ClassVar[str] = "Bitmap"
    openfibsem_defaults: ClassVar[dict] = {"time": (0,), "path": ("", None),
                                          "interpolation": (None, "nearest")}

    def shapes(self):
        return [Bitmap(self.array, self.width, self.height, self.depth, self.centre_x,
                       self.centre_y, self.rotation, self.scan_direction, self.passes)]


# --- composites
@dataclass
class Trench(Pattern):
    """Two rectangles above and below a lamella of thickness ``spacing`` (m), each milled
    towards the lamella (OpenFIBSEM ``Trench``): the upper ``width`` x
    ``upper_trench_height`` scans TopToBottom, the lower BottomToTop."""

    width: float = 10e-6
    upper_trench_height: float = 5e-6
    lower_trench_height: float = 5e-6
    spacing: float = 5e-6
    depth: float = 1e-6
    centre_x: float = 0.0
    centre_y: float = 0.0
    cross_section: str = "Rectangle"
    name: ClassVar[str] = "Trench"
    openfibsem_defaults: ClassVar[dict] = {"time": (0,), "fillet": (0,)}

    def shapes(self):
        up = self.centre_y + self.spacing / 2 + self.upper_trench_height / 2
        lo = self.centre_y - self.spacing / 2 - self.lower_trench_height / 2
        return [
            Rectangle(self.width, self.upper_trench_height, self.depth, self.centre_x, up,
                      cross_section=self.cross_section, scan_direction="TopToBottom"),
            Rectangle(self.width, self.lower_trench_height, self.depth, self.centre_x, lo,
                      cross_section=self.cross_section, scan_direction="BottomToTop"),
        ]


@dataclass
class Horseshoe(Pattern):
    """A trench (as :class:`Trench`) whose upper and lower cuts are joined by a side cut
    ``side_width`` m wide just outside the right end (the left with ``inverted``), spanning
    both cuts and the lamella between them: a U around the block, for lift-out
    (OpenFIBSEM ``Horseshoe``). ``scan_direction`` is the side cut's."""

    width: float = 40e-6
    upper_trench_height: float = 10e-6
    lower_trench_height: float = 10e-6
    spacing: float = 10e-6
    depth: float = 10e-6
    centre_x: float = 0.0
    centre_y: float = 0.0
    side_width: float = 5e-6
    inverted: bool = False
    scan_direction: str = "TopToBottom"
    cross_section: str = "Rectangle"
    name: ClassVar[str] = "Horseshoe"

    def shapes(self):
        cuts = Trench(self.width, self.upper_trench_height, self.lower_trench_height,
                      self.spacing, self.depth, self.centre_x, self.centre_y,
                      self.cross_section).shapes()
        height = self.spacing + self.upper_trench_height + self.lower_trench_height
        side = -1.0 if self.inverted else 1.0
        cy = self.centre_y + (self.upper_trench_height - self.lower_trench_height) / 2
        return [*cuts, Rectangle(self.side_width, height, self.depth,
                                 self.centre_x + side * (self.width + self.side_width) / 2, cy,
                                 cross_section=self.cross_section,
                                 scan_direction=self.scan_direction)]


@dataclass
class HorseshoeVertical(Pattern):
    """Two side cuts ``side_trench_width`` m wide either side of a block ``width`` x
    ``height`` m, each milled towards it, joined by a top cut ``top_trench_height`` m high
    across both (below the block with ``inverted``); an upside-down U
    (OpenFIBSEM ``HorseshoeVertical``). ``scan_direction`` is the top cut's."""

    width: float = 20e-6
    height: float = 50e-6
    side_trench_width: float = 5e-6
    top_trench_height: float = 10e-6
    depth: float = 4e-6
    centre_x: float = 0.0
    centre_y: float = 0.0
    scan_direction: str = "TopToBottom"
    inverted: bool = False
    cross_section: str = "Rectangle"
    name: ClassVar[str] = "HorseshoeVertical"

    def shapes(self):
        tw, cs = self.side_trench_width, self.cross_section
        dx = self.width / 2 + tw / 2
        dy = (self.height / 2 + self.top_trench_height / 2) * (-1.0 if self.inverted else 1.0)
        return [
            Rectangle(self.width + 2 * tw, self.top_trench_height, self.depth, self.centre_x,
                      self.centre_y + dy, cross_section=cs, scan_direction=self.scan_direction),
            Rectangle(tw, self.height, self.depth, self.centre_x - dx, self.centre_y,
                      cross_section=cs, scan_direction="LeftToRight"),
            Rectangle(tw, self.height, self.depth, self.centre_x + dx, self.centre_y,
                      cross_section=cs, scan_direction="RightToLeft"),
        ]


@dataclass
class Undercut(Pattern):
    """A J-cut (OpenFIBSEM ``Undercut``): a bar ``width`` x ``trench_width`` m centred on the
    point, and a side bar ``trench_width`` m wide and ``rhs_height`` m tall along its right
    end, flush with the bar's top and running down from it; the two overlap in a
    ``trench_width`` square, counted once.

    ``height`` and ``h_offset`` are OpenFIBSEM parameters that its geometry does not use;
    they are kept for protocol round trips and, as there, do not move the cuts.
    """

    width: float = 5e-6
    height: float = 10e-6
    depth: float = 10e-6
    trench_width: float = 2e-6
    rhs_height: float = 10e-6
    h_offset: float = 5e-6
    centre_x: float = 0.0
    centre_y: float = 0.0
    cross_section: str = "Rectangle"
    name: ClassVar[str] = "Undercut"

    def shapes(self):
        tw = self.trench_width
        return [
            Rectangle(self.width, tw, self.depth, self.centre_x, self.centre_y,
                      cross_section=self.cross_section, scan_direction="TopToBottom"),
            Rectangle(tw, self.rhs_height, self.depth, self.centre_x + self.width / 2 - tw / 2,
                      self.centre_y - self.rhs_height / 2 + tw / 2,
                      cross_section=self.cross_section, scan_direction="TopToBottom"),
        ]


@dataclass
class Fiducial(Pattern):
    """An X of two ``width`` x ``height`` bars crossing at the point, one turned
    ``rotation`` degrees counter-clockwise (45), the other 90 degrees further (OpenFIBSEM
    ``Fiducial``). With ``asymmetric`` the first bar is halved and runs from the centre out
    along its own axis (a Y-like mark whose orientation is unambiguous)."""

    height: float = 10e-6
    width: float = 1e-6
    depth: float = 1e-6
    centre_x: float = 0.0
    centre_y: float = 0.0
    rotation: float = 45.0
    cross_section: str = "Rectangle"
    asymmetric: bool = False
    name: ClassVar[str] = "Fiducial"

    def shapes(self):
        first_h, cx, cy = self.height, self.centre_x, self.centre_y
        if self.asymmetric:
            first_h = self.height / 2
            r = math.radians(self.rotation)  # the bar's long axis points along (-sin, cos)
            cx, cy = cx - math.sin(r) * first_h / 2, cy + math.cos(r) * first_h / 2
        return [
            Rectangle(self.width, first_h, self.depth, cx, cy, rotation=self.rotation,
                      cross_section=self.cross_section),
            Rectangle(self.width, self.height, self.depth, self.centre_x, self.centre_y,
                      rotation=self.rotation + 90.0, cross_section=self.cross_section),
        ]


@dataclass
class MicroExpansion(Pattern):
    """Two stress-relief cuts ``width`` x ``height`` m, centred ``distance`` m either side
    of the lamella centre (Wolff et al. 2019; OpenFIBSEM ``MicroExpansion``)."""

    width: float = 0.5e-6
    height: float = 15e-6
    distance: float = 10e-6
    depth: float = 1e-6
    centre_x: float = 0.0
    centre_y: float = 0.0
    name: ClassVar[str] = "MicroExpansion"

    def shapes(self):
        return [Rectangle(self.width, self.height, self.depth, self.centre_x + side * self.distance,
                          self.centre_y) for side in (-1, 1)]


@dataclass
class SerialSection(Pattern):
    """Serial lift-out sectioning lines (OpenFIBSEM ``SerialSection``): a line
    ``section_width`` m long, ``section_thickness`` m above the point (below with
    ``inverted``), ``section_depth`` m deep; with ``use_side_patterns``, side lines
    ``side_depth`` m deep: one ``side_width`` m long centred on each end of the section line,
    and one from each end ``side_height`` m up (down with ``inverted``). Lines are
    ``line_width`` m wide (the beam footprint; not an OpenFIBSEM parameter); where they
    overlap the deeper line sets the depth."""

    section_thickness: float = 4e-6
    section_width: float = 50e-6
    section_depth: float = 20e-6
    side_width: float = 10e-6
    side_height: float = 10e-6
    side_depth: float = 40e-6
    inverted: bool = False
    use_side_patterns: bool = True
    line_width: float = 50e-9
    centre_x: float = 0.0
    centre_y: float = 0.0
    name: ClassVar[str] = "SerialSection"

    def shapes(self):
        sign = -1.0 if self.inverted else 1.0
        y = self.centre_y + sign * self.section_thickness
        half, lw = self.section_width / 2, self.line_width
        out = [Line(self.centre_x - half, y, self.centre_x + half, y, self.section_depth, lw)]
        if self.use_side_patterns:
            for end in (self.centre_x - half, self.centre_x + half):
                out.append(Line(end - self.side_width / 2, y, end + self.side_width / 2, y,
                                self.side_depth, lw))
            for end in (self.centre_x - half, self.centre_x + half):
                out.append(Line(end, y, end, y + sign * self.side_height, self.side_depth, lw))
        return out


@dataclass
class ArrayPattern(Pattern):
    """A grid of ``n_columns`` x ``n_rows`` rectangles ``width`` x ``height`` x ``depth`` m
    (spot welds), ``pitch_horizontal`` / ``pitch_vertical`` m apart centre to centre and
    centred on the point; each turned ``rotation`` degrees about its own centre
    (OpenFIBSEM ``ArrayPattern``). Elements that overlap (pitch < size) count once."""

    width: float = 2e-6
    height: float = 2e-6
    depth: float = 5e-6
    n_columns: int = 5
    n_rows: int = 5
    pitch_vertical: float = 5e-6
    pitch_horizontal: float = 5e-6
    passes: int = 0
    rotation: float = 0.0
    scan_direction: str = "TopToBottom"
    cross_section: str = "Rectangle"
    centre_x: float = 0.0
    centre_y: float = 0.0
    name: ClassVar[str] = "ArrayPattern"

    def shapes(self):
        return [
            Rectangle(self.width, self.height, self.depth,
                      self.centre_x + (i - (self.n_columns - 1) / 2) * self.pitch_horizontal,
                      self.centre_y + (j - (self.n_rows - 1) / 2) * self.pitch_vertical,
                      self.rotation, self.cross_section, self.scan_direction, self.passes)
            for i in range(self.n_columns) for j in range(self.n_rows)
        ]


@dataclass
class WaffleNotch(Pattern):
    """The waffle-method notch (OpenFIBSEM ``WaffleNotch``): five bars, ``depth`` m deep.
    Two vertical bars ``vwidth`` x ``vheight`` m on the point's vertical, reaching from
    ``distance/2 - hheight/2`` m to ``distance/2 - hheight/2 + vheight`` m above and below
    it; two horizontal bars ``hwidth`` x ``hheight`` m centred ``distance/2`` m above and below
    the point, running right from the vertical bars (left with ``inverted``); and a vertical
    bar ``vwidth`` x (``distance + hheight``) m joining their far ends. The bars abut."""

    vheight: float = 2e-6
    vwidth: float = 0.5e-6
    hheight: float = 0.5e-6
    hwidth: float = 2e-6
    depth: float = 1e-6
    distance: float = 2e-6
    inverted: bool = False
    cross_section: str = "Rectangle"
    centre_x: float = 0.0
    centre_y: float = 0.0
    name: ClassVar[str] = "WaffleNotch"

    def shapes(self):
        x, y, d, cs = self.centre_x, self.centre_y, self.distance, self.cross_section
        side = -1.0 if self.inverted else 1.0
        v_off = d / 2 + self.vheight / 2 - self.hheight / 2
        h_x = x + side * (self.hwidth / 2 + self.vwidth / 2)
        return [
            Rectangle(self.vwidth, self.vheight, self.depth, x, y - v_off, cross_section=cs,
                      scan_direction="TopToBottom"),
            Rectangle(self.vwidth, self.vheight, self.depth, x, y + v_off, cross_section=cs,
                      scan_direction="BottomToTop"),
            Rectangle(self.hwidth, self.hheight, self.depth, h_x, y - d / 2, cross_section=cs,
                      scan_direction="TopToBottom"),
            Rectangle(self.hwidth, self.hheight, self.depth, h_x, y + d / 2, cross_section=cs,
                      scan_direction="BottomToTop"),
            Rectangle(self.vwidth, d + self.hheight, self.depth,
                      x + side * (self.hwidth + self.vwidth), y, cross_section=cs,
                      scan_direction="TopToBottom"),
        ]


@dataclass
class TrapezoidTrench(Pattern):
    """Two trapezoids above and below a lamella ``spacing`` m thick (OpenFIBSEM
    ``TrapezoidTrench``): each ``trench_height`` m tall, ``trench_width`` m wide at the
    lamella and widening by ``trench_height * tan(angle)`` on each side towards its far edge
    (``angle`` in degrees from the vertical, |angle| < 90; a negative angle narrows it),
    ``depth`` m deep."""

    trench_width: float = 10e-6
    trench_height: float = 5e-6
    spacing: float = 5e-6
    depth: float = 1e-6
    angle: float = 60.0
    centre_x: float = 0.0
    centre_y: float = 0.0
    name: ClassVar[str] = "TrapezoidTrench"

    def _check(self):
        if not abs(self.angle) < 90:
            raise ValueError(f"TrapezoidTrench.angle must be within (-90, 90) degrees, "
                             f"got {self.angle!r}")
        if self.far_width <= 0:
            raise ValueError(f"TrapezoidTrench: the far edge would be {self.far_width!r} m "
                             f"wide at angle {self.angle!r}; make the angle less negative")

    @property
    def far_width(self) -> float:
        """Width of each trapezoid's edge away from the lamella, m."""
        return self.trench_width + 2 * self.trench_height * math.tan(math.radians(self.angle))

    def shapes(self):
        near, far = self.trench_width / 2, self.far_width / 2
        y0, y1 = self.spacing / 2, self.spacing / 2 + self.trench_height
        upper = np.array([[-near, y0], [near, y0], [far, y1], [-far, y1]])
        lower = upper * (1.0, -1.0)
        c = (self.centre_x, self.centre_y)
        return [Polygon(upper + c, self.depth), Polygon(lower[::-1] + c, self.depth)]


PATTERNS: dict[str, type[Pattern]] = {
    cls.name: cls for cls in (
        RectanglePattern, LinePattern, CirclePattern, PolygonPattern, BitmapPattern,
        Trench, Horseshoe, HorseshoeVertical, Undercut, Fiducial, MicroExpansion,
        SerialSection, ArrayPattern, WaffleNotch, TrapezoidTrench,
    )
}
#: OpenFIBSEM's own name for the polygon pattern
PATTERNS["PolygonPattern"] = PolygonPattern


def make_pattern(spec: dict) -> Pattern:
    """Build a pattern from an OpenFIBSEM-style dict: ``{"name": "Trench", "width": ...,
    "point": {"x": .., "y": ..}}``. Names match as in OpenFIBSEM (exactly, else ignoring
    case). OpenFIBSEM-only parameters (e.g. ``time``, ``fillet``) are accepted at their no-op
    value. Unknown names and parameters, and bad values, raise ``ValueError``."""
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"a pattern needs a 'name'; got {spec!r}")
    spec = dict(spec)
    name = spec.pop("name")
    cls = PATTERNS.get(name) if isinstance(name, str) else None
    if cls is None and isinstance(name, str):
        cls = {k.lower(): v for k, v in PATTERNS.items()}.get(name.lower())
    if cls is None:
        raise ValueError(f"unknown pattern type {name!r}; known: {sorted(PATTERNS)}")
    point = spec.pop("point", None)
    if point is not None:
        if not isinstance(point, dict):
            raise ValueError(f"{name}.point must be a mapping {{x, y}} in m, got {point!r}")
        spec.setdefault("centre_x", point.get("x", 0.0))
        spec.setdefault("centre_y", point.get("y", 0.0))
    for key, accepted in cls.openfibsem_defaults.items():
        if key in spec:
            value = spec.pop(key)
            if not any(value is a or (type(value) is type(a) and value == a)
                       or (_is_number(value) and _is_number(a) and value == a)
                       for a in accepted):
                raise ValueError(f"{name}.{key}={value!r} is not supported (only "
                                 f"{' or '.join(map(repr, accepted))}): {_UNSUPPORTED[key]}")
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = set(spec) - known
    if unknown:
        raise ValueError(f"{name}: unknown parameter(s) {sorted(unknown)}; known: "
                         f"{sorted(known | set(cls.openfibsem_defaults))}")
    try:
        return cls(**spec)
    except TypeError as exc:
        raise ValueError(f"{name}: {exc}") from exc


_UNSUPPORTED = {
    "time": "the milling time follows from the dose (depth x area / (current x rate))",
    "fillet": "trench corners are square",
    "path": "give the bitmap as 'array' (rows of 0..1 values)",
    "interpolation": "bitmap pixels are sampled nearest",
    "is_exclusion": "exclusion polygons are not milled patterns",
}
