"""Primitive milling shapes in the ion image frame: metres from the image centre, +x right, +y up.

``Rectangle``, ``Line``, ``Circle``, ``Polygon`` and ``Bitmap`` know their area, their removed
volume, how to draw themselves on an image grid (``depth_map``) and their outline (``outline``,
``outline_pixels``, ``draw``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..geometry import image_to_pixel
from ._polygons import _bounds_of, _grid, _regular_polygon, _rotated_box, _segments_cross
from ._validate import (
    CROSS_SECTIONS,
    SCAN_DIRECTIONS,
    _choice,
    _finite,
    _passes,
    _points,
    _positive,
)

__all__ = ["Shape", "Rectangle", "Line", "Circle", "Polygon", "Bitmap"]

#: vertices of the polygon a circle is replaced by when it overlaps another shape
_CIRCLE_SIDES = 720
#: vertices of a circle's drawn outline
_DRAW_SIDES = 256


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
