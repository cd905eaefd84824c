"""Milling patterns, stages, protocols and dose-based time estimates (pure: numpy + yaml).

Coordinates are metres in the ion image frame, centred, +x right, +y up, as in OpenFIBSEM.
"""

from ._composites import (
    ArrayPattern,
    Fiducial,
    Horseshoe,
    HorseshoeVertical,
    MicroExpansion,
    SerialSection,
    TrapezoidTrench,
    Trench,
    Undercut,
    WaffleNotch,
)
from ._experiment import read_experiment, task_sections, write_experiment
from ._materials import MATERIALS, SPUTTER_RATES_UM3_PER_NC, sputter_rate
from ._measure import (
    BLANK_RANGE,
    MIN_CONTRAST,
    MIN_WIDTH,
    blank_frame,
    measure_lamella_thickness,
)
from ._pattern import Pattern
from ._protocol import APPLICATION_FILES, PATTERN_FOR_SECTION, material_for
from ._registry import PATTERNS, make_pattern
from ._shapes import Bitmap, Circle, Line, Polygon, Rectangle, Shape
from ._single_patterns import (
    BitmapPattern,
    CirclePattern,
    LinePattern,
    PolygonPattern,
    RectanglePattern,
)
from ._stage import (
    DEPTH_RANGE,
    OVERHEADS,
    OVERTILT_RANGE,
    STRATEGIES,
    MillingStage,
    as_stages,
    check_patterns,
    check_stages,
    estimate_milling_time,
    estimate_stage_time,
    load_protocol,
)
from ._validate import CROSS_SECTIONS, SCAN_DIRECTIONS

__all__ = [
    "APPLICATION_FILES", "material_for", "OVERTILT_RANGE", "PATTERN_FOR_SECTION", "STRATEGIES",
    "ArrayPattern", "as_stages", "Bitmap", "BitmapPattern", "check_patterns", "Circle",
    "CirclePattern", "CROSS_SECTIONS", "estimate_milling_time", "estimate_stage_time", "Fiducial",
    "Horseshoe", "HorseshoeVertical", "Line", "LinePattern", "load_protocol", "make_pattern",
    "measure_lamella_thickness", "blank_frame", "BLANK_RANGE", "MIN_CONTRAST", "MIN_WIDTH",
    "check_stages", "DEPTH_RANGE",
    "MATERIALS", "MicroExpansion", "MillingStage", "OVERHEADS", "Pattern", "PATTERNS", "Polygon",
    "PolygonPattern", "Rectangle", "RectanglePattern", "SCAN_DIRECTIONS", "SerialSection", "Shape",
    "sputter_rate", "SPUTTER_RATES_UM3_PER_NC", "TrapezoidTrench", "Trench", "Undercut",
    "WaffleNotch", "read_experiment", "write_experiment", "task_sections",
]
