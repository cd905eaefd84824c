"""Milling patterns in the ion image frame: metres from the image centre, +x right, +y up.

Primitive shapes (``Rectangle``, ``Line``, ``Circle``, ``Polygon``, ``Bitmap``) know their area,
their removed volume and how to draw themselves on an image grid (``depth_map``). Composite
patterns (``Trench``, ``Horseshoe``, ``Fiducial``, ``MicroExpansion``, ...) are lists of
primitives, named as in OpenFIBSEM (``fibsem.milling.patterning.patterns2``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np

from ..geometry import pixel_to_image

__all__ = [
    "Shape", "Rectangle", "Line", "Circle", "Polygon", "Bitmap",
    "Pattern", "RectanglePattern", "Trench", "Horseshoe", "Fiducial", "MicroExpansion",
    "PATTERNS", "make_pattern", "CROSS_SECTIONS", "SCAN_DIRECTIONS",
]

CROSS_SECTIONS = ("Rectangle", "RegularCrossSection", "CleaningCrossSection")
SCAN_DIRECTIONS = ("TopToBottom", "BottomToTop", "LeftToRight", "RightToLeft")


def _positive(name: str, value: float, owner: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{owner}.{name} must be a finite number in metres, got {value!r}")
    if value <= 0:
        raise ValueError(f"{owner}.{name} must be > 0 m, got {value!r}")
    return float(value)


def _finite(name: str, value: float, owner: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{owner}.{name} must be a finite number, got {value!r}")
    return float(value)


def _grid(shape: tuple[int, int], pixel_size: float):
    h, w = shape
    x, y = pixel_to_image(np.arange(w)[None, :], np.arange(h)[:, None], shape, pixel_size)
    return np.broadcast_to(x, shape), np.broadcast_to(y, shape)


class Shape:
    """A primitive milling shape. Subclasses define ``area`` (m^2), ``volume`` (m^3),
    ``bounds`` (x0, y0, x1, y1 in m) and ``depth_at(x, y, pixel_size)``: the target depth
    (m) at image points (m)."""

    #: milling time multiplier relative to volume / (current x rate)
    time_factor: float = 1.0

    def depth_map(self, shape: tuple[int, int], pixel_size: float) -> np.ndarray:
        """Target depth (m) per pixel of an image ``shape`` with ``pixel_size`` m pixels."""
        x, y = _grid(shape, pixel_size)
        return np.broadcast_to(self.depth_at(x, y, pixel_size), shape)

    def mask(self, shape: tuple[int, int], pixel_size: float) -> np.ndarray:
        """Boolean mask of the pixels the beam visits."""
        return self.depth_map(shape, pixel_size) > 0


@dataclass
class Rectangle(Shape):
    """A rectangle ``width`` x ``height`` (m) at ``centre_x, centre_y`` (m), rotated by
    ``rotation`` degrees (counter-clockwise), milled ``depth`` m deep.

    ``cross_section``: "Rectangle" (flat floor), "RegularCrossSection" (a ramp, deepest where
    the scan ends: half the volume) or "CleaningCrossSection" (line by line towards the face;
    OpenFIBSEM's estimator takes 0.66 of the time).
    """

    width: float
    height: float
    depth: float
    centre_x: float = 0.0
    centre_y: float = 0.0
    rotation: float = 0.0
    cross_section: str = "Rectangle"
    scan_direction: str = "TopToBottom"
    passes: int = 1

    def __post_init__(self):
        for n in ("width", "height", "depth"):
            setattr(self, n, _positive(n, getattr(self, n), "Rectangle"))
        for n in ("centre_x", "centre_y", "rotation"):
            setattr(self, n, _finite(n, getattr(self, n), "Rectangle"))
        if self.cross_section not in CROSS_SECTIONS:
            raise ValueError(f"Rectangle.cross_section: unknown {self.cross_section!r}; "
                             f"choose one of {list(CROSS_SECTIONS)}")
        if self.scan_direction not in SCAN_DIRECTIONS:
            raise ValueError(f"Rectangle.scan_direction: unknown {self.scan_direction!r}; "
                             f"choose one of {list(SCAN_DIRECTIONS)}")
        if not isinstance(self.passes, int) or self.passes < 1:
            raise ValueError(f"Rectangle.passes must be an integer >= 1, got {self.passes!r}")

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

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        c, s = math.cos(math.radians(self.rotation)), math.sin(math.radians(self.rotation))
        hx, hy = self.width / 2, self.height / 2
        xs = [self.centre_x + c * dx - s * dy for dx in (-hx, hx) for dy in (-hy, hy)]
        ys = [self.centre_y + s * dx + c * dy for dx in (-hx, hx) for dy in (-hy, hy)]
        return min(xs), min(ys), max(xs), max(ys)

    def depth_at(self, x, y, pixel_size: float = 0.0):
        c, s = math.cos(math.radians(self.rotation)), math.sin(math.radians(self.rotation))
        dx, dy = x - self.centre_x, y - self.centre_y
        u, v = c * dx + s * dy, -s * dx + c * dy  # pattern-local coordinates
        inside = (np.abs(u) <= self.width / 2) & (np.abs(v) <= self.height / 2)
        depth = np.where(inside, self.depth, 0.0)
        if self.cross_section == "RegularCrossSection":
            # fraction of the scan done at this line: deepest where the scan ends
            frac = {
                "TopToBottom": 0.5 - v / self.height,
                "BottomToTop": 0.5 + v / self.height,
                "LeftToRight": 0.5 + u / self.width,
                "RightToLeft": 0.5 - u / self.width,
            }[self.scan_direction]
            depth = depth * np.clip(frac, 0.0, 1.0)
        return depth


@dataclass
class Line(Shape):
    """A line from (start_x, start_y) to (end_x, end_y) m, ``width`` m wide (the beam's
    footprint), ``depth`` m deep."""

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
            raise ValueError("Line: start and end are the same point")

    @property
    def length(self) -> float:
        return math.hypot(self.end_x - self.start_x, self.end_y - self.start_y)

    @property
    def area(self) -> float:
        return self.length * self.width

    @property
    def volume(self) -> float:
        return self.area * self.depth

    @property
    def bounds(self):
        return (min(self.start_x, self.end_x), min(self.start_y, self.end_y),
                max(self.start_x, self.end_x), max(self.start_y, self.end_y))

    def depth_at(self, x, y, pixel_size: float = 0.0):
        ax, ay = self.end_x - self.start_x, self.end_y - self.start_y
        t = np.clip(((x - self.start_x) * ax + (y - self.start_y) * ay) / self.length**2, 0, 1)
        d = np.hypot(x - (self.start_x + t * ax), y - (self.start_y + t * ay))
        # at least the nearest pixel: a line narrower than a pixel still mills
        return np.where(d <= max(self.width, pixel_size) / 2, self.depth, 0.0)


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
            raise ValueError(f"Circle.thickness must be within [0, radius], got {self.thickness}")

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

    def depth_at(self, x, y, pixel_size: float = 0.0):
        r = np.hypot(x - self.centre_x, y - self.centre_y)
        return np.where((r <= self.radius) & (r >= self.inner_radius), self.depth, 0.0)


@dataclass
class Polygon(Shape):
    """A filled polygon with ``vertices`` [[x, y], ...] in m, ``depth`` m deep."""

    vertices: list
    depth: float

    def __post_init__(self):
        v = np.asarray(self.vertices, dtype=float)
        if v.ndim != 2 or v.shape[1] != 2 or len(v) < 3 or not np.all(np.isfinite(v)):
            raise ValueError(f"Polygon.vertices must be >= 3 finite [x, y] pairs, got "
                             f"{self.vertices!r}")
        self.vertices = v.tolist()
        self.depth = _positive("depth", self.depth, "Polygon")
        if self.area == 0:
            raise ValueError("Polygon has zero area")

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
        v = np.asarray(self.vertices)
        return float(v[:, 0].min()), float(v[:, 1].min()), float(v[:, 0].max()), \
            float(v[:, 1].max())

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
    """A grey-level bitmap (0..1 = fraction of ``depth``) of ``pixel_size`` m pixels, centred
    at (centre_x, centre_y)."""

    array: np.ndarray = field(repr=False)
    pixel_size: float = 100e-9
    depth: float = 1e-6
    centre_x: float = 0.0
    centre_y: float = 0.0

    def __post_init__(self):
        a = np.asarray(self.array, dtype=float)
        if a.ndim != 2 or a.size == 0 or not np.all(np.isfinite(a)) or a.min() < 0 \
                or a.max() > 1:
            raise ValueError("Bitmap.array must be a non-empty 2-D array of values in 0..1")
        self.array = a
        self.pixel_size = _positive("pixel_size", self.pixel_size, "Bitmap")
        self.depth = _positive("depth", self.depth, "Bitmap")

    @property
    def area(self) -> float:
        return float(np.count_nonzero(self.array)) * self.pixel_size**2

    @property
    def volume(self) -> float:
        return float(self.array.sum()) * self.pixel_size**2 * self.depth

    @property
    def bounds(self):
        h, w = self.array.shape
        hw, hh = w * self.pixel_size / 2, h * self.pixel_size / 2
        return self.centre_x - hw, self.centre_y - hh, self.centre_x + hw, self.centre_y + hh

    def depth_at(self, x, y, pixel_size: float = 0.0):
        h, w = self.array.shape
        col = np.floor((x - self.centre_x) / self.pixel_size + w / 2).astype(int)
        row = np.floor(h / 2 - (y - self.centre_y) / self.pixel_size).astype(int)
        ok = (col >= 0) & (col < w) & (row >= 0) & (row < h)
        out = np.zeros(np.shape(x))
        out[ok] = self.array[row[ok], col[ok]] * self.depth
        return out


class Pattern:
    """A named list of primitive shapes. Subclasses build them in ``shapes()``."""

    name = "Pattern"

    def shapes(self) -> list[Shape]:
        raise NotImplementedError

    @property
    def area(self) -> float:
        return sum(s.area for s in self.shapes())

    @property
    def volume(self) -> float:
        return sum(s.volume for s in self.shapes())

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        b = np.array([s.bounds for s in self.shapes()])
        return float(b[:, 0].min()), float(b[:, 1].min()), float(b[:, 2].max()), \
            float(b[:, 3].max())

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
            d[f.name] = getattr(self, f.name)
        return d


@dataclass
class RectanglePattern(Pattern):
    """One rectangle (OpenFIBSEM ``RectanglePattern``)."""

    width: float
    height: float
    depth: float
    centre_x: float = 0.0
    centre_y: float = 0.0
    rotation: float = 0.0
    cross_section: str = "Rectangle"
    scan_direction: str = "TopToBottom"
    name = "Rectangle"

    def shapes(self):
        return [Rectangle(self.width, self.height, self.depth, self.centre_x, self.centre_y,
                          self.rotation, self.cross_section, self.scan_direction)]


@dataclass
class Trench(Pattern):
    """Two rectangles above and below a lamella of thickness ``spacing`` (m), each milled
    towards the lamella (OpenFIBSEM ``TrenchPattern``)."""

    width: float
    upper_trench_height: float
    lower_trench_height: float
    spacing: float
    depth: float
    centre_x: float = 0.0
    centre_y: float = 0.0
    cross_section: str = "CleaningCrossSection"
    name = "Trench"

    def shapes(self):
        _positive("spacing", self.spacing, "Trench")
        up = self.centre_y + self.spacing / 2 + self.upper_trench_height / 2
        lo = self.centre_y - self.spacing / 2 - self.lower_trench_height / 2
        return [
            Rectangle(self.width, self.upper_trench_height, self.depth, self.centre_x, up,
                      cross_section=self.cross_section, scan_direction="TopToBottom"),
            Rectangle(self.width, self.lower_trench_height, self.depth, self.centre_x, lo,
                      cross_section=self.cross_section, scan_direction="BottomToTop"),
        ]


@dataclass
class Horseshoe(Trench):
    """A trench whose upper and lower cuts are joined on one side by a bar of
    ``side_width`` m (OpenFIBSEM ``HorseshoePattern``), for lift-out."""

    side_width: float = 2e-6
    name = "Horseshoe"

    def shapes(self):
        cuts = super().shapes()
        _positive("side_width", self.side_width, "Horseshoe")
        height = self.spacing + self.upper_trench_height + self.lower_trench_height
        cy = self.centre_y + (self.upper_trench_height - self.lower_trench_height) / 2
        side = Rectangle(self.side_width, height, self.depth,
                         self.centre_x + self.width / 2 - self.side_width / 2, cy)
        return [*cuts, side]


@dataclass
class Fiducial(Pattern):
    """An X of two ``width`` x ``height`` bars at +-45 degrees (OpenFIBSEM ``FiducialPattern``)."""

    height: float = 10e-6
    width: float = 1e-6
    depth: float = 1e-6
    centre_x: float = 0.0
    centre_y: float = 0.0
    name = "Fiducial"

    def shapes(self):
        return [Rectangle(self.width, self.height, self.depth, self.centre_x, self.centre_y,
                          rotation=angle) for angle in (45.0, -45.0)]

    @property
    def area(self) -> float:
        # the two bars overlap in a width x width square at the centre
        return 2 * self.width * self.height - self.width**2

    @property
    def volume(self) -> float:
        return self.area * self.depth


@dataclass
class MicroExpansion(Pattern):
    """Two stress-relief cuts ``width`` x ``height`` m, ``distance`` m either side of the
    lamella centre (Wolff et al. 2019; OpenFIBSEM ``MicroExpansionPattern``)."""

    width: float = 0.5e-6
    height: float = 18e-6
    distance: float = 10e-6
    depth: float = 1e-6
    centre_x: float = 0.0
    centre_y: float = 0.0
    name = "MicroExpansion"

    def shapes(self):
        _positive("distance", self.distance, "MicroExpansion")
        return [Rectangle(self.width, self.height, self.depth, self.centre_x + side * self.distance,
                          self.centre_y) for side in (-1, 1)]


PATTERNS: dict[str, type[Pattern]] = {
    "Rectangle": RectanglePattern,
    "Trench": Trench,
    "Horseshoe": Horseshoe,
    "Fiducial": Fiducial,
    "MicroExpansion": MicroExpansion,
}


def make_pattern(spec: dict) -> Pattern:
    """Build a pattern from an OpenFIBSEM-style dict: ``{"name": "Trench", "width": ...,
    "point": {"x": .., "y": ..}}``. Unknown names and keys raise ``ValueError``."""
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"a pattern needs a 'name'; got {spec!r}")
    spec = dict(spec)
    name = spec.pop("name")
    cls = PATTERNS.get(name)
    if cls is None:
        raise ValueError(f"unknown pattern type {name!r}; known: {sorted(PATTERNS)}")
    point = spec.pop("point", None)
    if point is not None:
        spec.setdefault("centre_x", point.get("x", 0.0))
        spec.setdefault("centre_y", point.get("y", 0.0))
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = set(spec) - known
    if unknown:
        raise ValueError(f"{name}: unknown parameter(s) {sorted(unknown)}; known: {sorted(known)}")
    pattern = cls(**spec)
    pattern.shapes()  # validates every shape now, not at milling time
    return pattern
