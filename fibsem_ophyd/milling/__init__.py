"""Milling patterns, stages, protocols and dose-based time estimates (pure: numpy + yaml).

Coordinates are metres in the ion image frame, centred, +x right, +y up, as in OpenFIBSEM.
"""

from ._materials import MATERIALS, SPUTTER_RATES_UM3_PER_NC, sputter_rate
from ._patterns import (
    CROSS_SECTIONS,
    PATTERNS,
    SCAN_DIRECTIONS,
    Bitmap,
    Circle,
    Fiducial,
    Horseshoe,
    Line,
    MicroExpansion,
    Pattern,
    Polygon,
    Rectangle,
    RectanglePattern,
    Shape,
    Trench,
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
    "Bitmap", "CROSS_SECTIONS", "Circle", "Fiducial", "Horseshoe", "Line", "MATERIALS",
    "MicroExpansion", "MillingStage", "OVERHEADS", "PATTERNS", "Pattern", "Polygon",
    "Rectangle", "RectanglePattern", "SCAN_DIRECTIONS", "SPUTTER_RATES_UM3_PER_NC", "Shape",
    "Trench", "as_stages", "check_patterns", "estimate_milling_time", "estimate_stage_time",
    "load_protocol", "make_pattern", "sputter_rate",
]
