"""Ophyd devices of a dual-beam FIB-SEM. They talk only to a backend (``fibsem_ophyd.backend``)."""

from ._beam import Beam, Chamber
from ._chamber_camera import ChamberCamera
from ._detector import TIFF_TEMPLATE, ImagingDetector
from ._faults import FaultSignal, FaultWatch, WatchedSignal
from ._gis import GasInjection, SputterCoater
from ._interlock import InterlockError
from ._lookup import CatalogLookup
from ._manipulator import Manipulator
from ._microscope import FibsemMicroscope, make_microscope
from ._milling import Milling, MillingAborted
from ._plan_records import PLAN_RECORDS, PlanRecorders
from ._recorder import RecordSignal, make_recorder
from ._signals import BackendSignal, SettingSignal
from ._stage import (
    AXES,
    NamedPositions,
    Stage,
    StageAxis,
    check_positions_file,
    load_positions,
    save_positions,
)
from ._stored_image import StoredImage, make_stored_image

__all__ = [
    "GasInjection",
    "Manipulator",
    "SputterCoater",
    "AXES",
    "BackendSignal",
    "Beam",
    "CatalogLookup",
    "Chamber",
    "ChamberCamera",
    "FaultSignal",
    "FaultWatch",
    "FibsemMicroscope",
    "ImagingDetector",
    "InterlockError",
    "NamedPositions",
    "PLAN_RECORDS",
    "PlanRecorders",
    "RecordSignal",
    "SettingSignal",
    "Stage",
    "StageAxis",
    "StoredImage",
    "TIFF_TEMPLATE",
    "WatchedSignal",
    "load_positions",
    "check_positions_file",
    "make_microscope",
    "Milling",
    "MillingAborted",
    "make_recorder",
    "make_stored_image",
    "save_positions",
]
