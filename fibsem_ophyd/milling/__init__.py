"""Milling patterns, stages, protocols and dose-based time estimates (pure: numpy + yaml).

Coordinates are metres in the ion image frame, centred, +x right, +y up, as in OpenFIBSEM.
"""

from ._materials import MATERIALS, SPUTTER_RATES_UM3_PER_NC, sputter_rate
from ._measure import measure_lamella_thickness
from ._patterns import (
    CROSS_SECTIONS,
    PATTERNS,
    SCAN_DIRECTIONS,
    ArrayPattern,
    Bitmap,
    BitmapPattern,
    Circle,
    CirclePattern,
    Fiducial,
    Horseshoe,
    HorseshoeVertical,
    Line,
    LinePattern,
    MicroExpansion,
    Pattern,
    Polygon,
    PolygonPattern,
    Rectangle,
    RectanglePattern,
    SerialSection,
    Shape,
    TrapezoidTrench,
    Trench,
    Undercut,
    WaffleNotch,
    make_pattern,
)
from ._stage import (
    OVERHEADS,
    MillingStage,
    as_stages,
    check_patterns,
    estimate_milling_time,
    estimate_stage_time,
    load_protocol,
)

__all__ = [
    "ArrayPattern", "as_stages", "Bitmap", "BitmapPattern", "check_patterns", "Circle",
    "CirclePattern", "CROSS_SECTIONS", "estimate_milling_time", "estimate_stage_time", "Fiducial",
    "Horseshoe", "HorseshoeVertical", "Line", "LinePattern", "load_protocol", "make_pattern",
    "measure_lamella_thickness",
    "MATERIALS", "MicroExpansion", "MillingStage", "OVERHEADS", "Pattern", "PATTERNS", "Polygon",
    "PolygonPattern", "Rectangle", "RectanglePattern", "SCAN_DIRECTIONS", "SerialSection", "Shape",
    "sputter_rate", "SPUTTER_RATES_UM3_PER_NC", "TrapezoidTrench", "Trench", "Undercut",
    "WaffleNotch",
]
