"""Patterns of one shape (OpenFIBSEM ``Rectangle``, ``Line``, ``Circle``, ``PolygonPattern``,
``Bitmap``): the shape's parameters, placed at the pattern's point."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ._pattern import Pattern, _CrossSectioned, _Repeated, _Rotated, _Scanned
from ._shapes import Bitmap, Circle, Line, Polygon, Rectangle
from ._validate import _points

__all__ = ["RectanglePattern", "LinePattern", "CirclePattern", "PolygonPattern",
           "BitmapPattern"]


@dataclass
class RectanglePattern(_Rotated, _CrossSectioned, _Scanned, _Repeated, Pattern):
    """One rectangle (OpenFIBSEM ``Rectangle``): ``width`` x ``height`` x ``depth`` m,
    ``rotation`` degrees counter-clockwise, ``cross_section`` (Rectangle, RegularCrossSection,
    CleaningCrossSection), ``scan_direction`` and ``passes`` (0: application file default)."""

    width: float = 10e-6
    height: float = 5e-6
    depth: float = 1e-6
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
    name: ClassVar[str] = "Polygon"
    openfibsem_defaults: ClassVar[dict] = {"is_exclusion": (False,)}

    def shapes(self):
        v = _points(self.vertices, "Polygon.vertices")
        return [Polygon(v + (self.centre_x, self.centre_y), self.depth)]


@dataclass
class BitmapPattern(_Rotated, _Scanned, _Repeated, Pattern):
    """A grey-level bitmap (OpenFIBSEM ``Bitmap``): ``array`` (rows of 0..1 values, row 0 at
    the top) stretched over ``width`` x ``height`` m, ``depth`` m where the value is 1,
    ``rotation`` degrees counter-clockwise, ``scan_direction``, ``passes``. Bitmaps are given
    as arrays; OpenFIBSEM's image ``path`` and resampling ``interpolation`` are not read
    (pixels are sampled nearest)."""

    array: list = field(default_factory=lambda: [[1.0]], repr=False)
    width: float = 10e-6
    height: float = 10e-6
    depth: float = 1e-6
    name: ClassVar[str] = "Bitmap"
    openfibsem_defaults: ClassVar[dict] = {"time": (0,), "path": ("", None),
                                          "interpolation": (None, "nearest")}

    def shapes(self):
        return [Bitmap(self.array, self.width, self.height, self.depth, self.centre_x,
                       self.centre_y, self.rotation, self.scan_direction, self.passes)]
