"""Patterns of several shapes, built from the parameters OpenFIBSEM uses
(``fibsem.milling.patterning``): ``Trench``, ``Horseshoe``, ``HorseshoeVertical``, ``Undercut``,
``Fiducial``, ``MicroExpansion``, ``SerialSection``, ``ArrayPattern``, ``WaffleNotch`` and
``TrapezoidTrench``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ._pattern import Pattern, _CrossSectioned, _Repeated, _Rotated, _Scanned
from ._shapes import Line, Polygon, Rectangle

__all__ = ["Trench", "Horseshoe", "HorseshoeVertical", "Undercut", "Fiducial", "MicroExpansion",
           "SerialSection", "ArrayPattern", "WaffleNotch", "TrapezoidTrench"]


@dataclass
class Trench(_CrossSectioned, _Repeated, Pattern):
    """Two rectangles above and below a lamella of thickness ``spacing`` (m), each milled
    towards the lamella (OpenFIBSEM ``Trench``): the upper ``width`` x
    ``upper_trench_height`` scans TopToBottom, the lower BottomToTop; ``passes`` as for
    rectangles."""

    width: float = 10e-6
    upper_trench_height: float = 5e-6
    lower_trench_height: float = 5e-6
    spacing: float = 5e-6
    depth: float = 1e-6
    name: ClassVar[str] = "Trench"
    openfibsem_defaults: ClassVar[dict] = {"time": (0,), "fillet": (0,)}

    def shapes(self):
        up = self.centre_y + self.spacing / 2 + self.upper_trench_height / 2
        lo = self.centre_y - self.spacing / 2 - self.lower_trench_height / 2
        return [
            Rectangle(self.width, self.upper_trench_height, self.depth, self.centre_x, up,
                      cross_section=self.cross_section, scan_direction="TopToBottom",
                      passes=self.passes),
            Rectangle(self.width, self.lower_trench_height, self.depth, self.centre_x, lo,
                      cross_section=self.cross_section, scan_direction="BottomToTop",
                      passes=self.passes),
        ]


@dataclass
class Horseshoe(_CrossSectioned, _Scanned, Pattern):
    """A trench (as :class:`Trench`) whose upper and lower cuts are joined by a side cut
    ``side_width`` m wide just outside the right end (the left with ``inverted``), spanning
    both cuts and the lamella between them: a U around the block, for lift-out
    (OpenFIBSEM ``Horseshoe``). ``scan_direction`` is the side cut's."""

    width: float = 40e-6
    upper_trench_height: float = 10e-6
    lower_trench_height: float = 10e-6
    spacing: float = 10e-6
    depth: float = 10e-6
    side_width: float = 5e-6
    inverted: bool = False
    name: ClassVar[str] = "Horseshoe"

    def shapes(self):
        cuts = Trench(self.width, self.upper_trench_height, self.lower_trench_height,
                      self.spacing, self.depth, centre_x=self.centre_x, centre_y=self.centre_y,
                      cross_section=self.cross_section).shapes()
        height = self.spacing + self.upper_trench_height + self.lower_trench_height
        side = -1.0 if self.inverted else 1.0
        cy = self.centre_y + (self.upper_trench_height - self.lower_trench_height) / 2
        return [*cuts, Rectangle(self.side_width, height, self.depth,
                                 self.centre_x + side * (self.width + self.side_width) / 2, cy,
                                 cross_section=self.cross_section,
                                 scan_direction=self.scan_direction)]


@dataclass
class HorseshoeVertical(_CrossSectioned, _Scanned, Pattern):
    """Two side cuts ``side_trench_width`` m wide either side of a block ``width`` x
    ``height`` m, each milled towards it, joined by a top cut ``top_trench_height`` m high
    across both (below the block with ``inverted``); an upside-down U
    (OpenFIBSEM ``HorseshoeVertical``). ``scan_direction`` is the top cut's."""

    width: float = 20e-6
    height: float = 50e-6
    side_trench_width: float = 5e-6
    top_trench_height: float = 10e-6
    depth: float = 4e-6
    inverted: bool = False
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
class Undercut(_CrossSectioned, Pattern):
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
class Fiducial(_Rotated, _CrossSectioned, Pattern):
    """An X of two ``width`` x ``height`` bars crossing at the point, one turned
    ``rotation`` degrees counter-clockwise (45), the other 90 degrees further (OpenFIBSEM
    ``Fiducial``). With ``asymmetric`` the first bar is halved and runs from the centre out
    along its own axis (a Y-like mark whose orientation is unambiguous)."""

    height: float = 10e-6
    width: float = 1e-6
    depth: float = 1e-6
    rotation: float = field(default=45.0, kw_only=True)
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
class ArrayPattern(_Rotated, _CrossSectioned, _Scanned, _Repeated, Pattern):
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
class WaffleNotch(_CrossSectioned, Pattern):
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
