"""The validated base of milling patterns, and the parameters many patterns share.

A pattern is a dataclass of OpenFIBSEM's parameters whose ``shapes()`` are primitive shapes
(``._shapes``). The shared parameters (the point, cross-section, scan direction, passes and
rotation) are keyword-only fields of :class:`Pattern` and of small mixins, so each pattern's own
leading parameters keep their positions.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

import numpy as np

from .. import validate
from ._polygons import _grid, _overlap_groups, _union_measure
from ._shapes import Shape, _Outlined
from ._validate import (
    CROSS_SECTIONS,
    SCAN_DIRECTIONS,
    _choice,
    _finite,
    _non_negative,
    _passes,
    _positive,
)

__all__ = ["Pattern"]

#: parameter names checked as finite numbers (others that are floats must be > 0 m)
_FINITE = {"centre_x", "centre_y", "start_x", "start_y", "end_x", "end_y", "rotation", "angle",
           "thickness", "h_offset"}
#: lengths that may be zero: a one-column array's pitch, a section line on the point
_NON_NEGATIVE = {"pitch_vertical", "pitch_horizontal", "section_thickness"}
_FLAGS = {"inverted", "asymmetric", "use_side_patterns"}
_COUNTS = {"n_columns": (1, 100), "n_rows": (1, 100)}
_SHAPE_DATA = {"vertices", "array"}


@dataclass(kw_only=True)
class Pattern(_Outlined):
    """A named list of primitive shapes, built in ``shapes()`` from the pattern's parameters,
    placed at ``centre_x, centre_y`` (m; OpenFIBSEM's ``point``).

    Parameters are validated on construction: lengths must be > 0 m, positions and angles
    finite, cross-sections and scan directions known. ``area`` and ``volume`` count overlaps
    once (the union, the deepest shape setting the depth, as ``depth_at`` does).
    """

    name: ClassVar[str] = "Pattern"
    #: OpenFIBSEM parameters read from protocols only at these (no-op) values
    openfibsem_defaults: ClassVar[dict] = {}

    centre_x: float = 0.0
    centre_y: float = 0.0

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
                n = validate.integer(f"{owner}.{f.name}", v, integral_float=True,
                                     rule=f"an integer in [{lo}, {hi}]")
                if not lo <= n <= hi:
                    raise ValueError(f"{owner}.{f.name} must be an integer in [{lo}, {hi}], "
                                     f"got {v!r}")
                setattr(self, f.name, n)
            elif f.name in _FINITE:
                setattr(self, f.name, _finite(f.name, v, owner))
            elif f.name in _NON_NEGATIVE:
                setattr(self, f.name, _non_negative(f.name, v, owner))
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



@dataclass(kw_only=True)
class _CrossSectioned:
    """``cross_section``: "Rectangle" (flat floor), "RegularCrossSection" or
    "CleaningCrossSection" (see :class:`~._shapes.Rectangle`)."""

    cross_section: str = "Rectangle"


@dataclass(kw_only=True)
class _Scanned:
    """``scan_direction``: "TopToBottom", "BottomToTop", "LeftToRight" or "RightToLeft"."""

    scan_direction: str = "TopToBottom"


@dataclass(kw_only=True)
class _Repeated:
    """``passes``: how many times the beam scans each shape (0: the application file's
    default); the dose, and so the depth and time, do not depend on it."""

    passes: int = 0


@dataclass(kw_only=True)
class _Rotated:
    """``rotation``: degrees counter-clockwise."""

    rotation: float = 0.0
