"""The hardware contract: what a microscope backend must do for the Ophyd devices.

Devices talk only to an object satisfying :class:`MicroscopeBackend`; the simulator
(``fibsem_ophyd.sim``) and real-microscope bridges implement it. Units at this boundary are
the ones users type: metres, seconds, amperes, volts, pascals, and **degrees** for stage
rotation/tilt, scan rotation and column tilt.

Beam keys (``beam`` is ``"electron"`` or ``"ion"``), all readable, writable unless noted:

=================  ========================  =========================================
key                type / unit               meaning
=================  ========================  =========================================
on                 bool                      beam (high voltage) on
blanked            bool                      beam blanked
voltage            float, V                  accelerating voltage
current            float, A                  beam (probe) current
hfw                float, m                  horizontal field width of the scan
working_distance   float, m                  focus distance from the pole piece
dwell_time         float, s                  per-pixel dwell
resolution         [int, int], px            scan (width, height)
scan_rotation      float, deg                scan rotation
shift              [float, float], m         beam shift (x, y), image frame
stigmation         [float, float]            stigmator (x, y), unitless
column_tilt        float, deg (read-only)    column tilt from the electron axis
detector_type      str                       e.g. "ETD", "TLD"
detector_mode      str                       e.g. "SecondaryElectrons"
brightness         float, 0..1               detector offset
contrast           float, 0..1               detector gain
=================  ========================  =========================================

Chamber keys (``beam=None``): ``vacuum_state`` (str: "pumped", "vented"), ``pressure`` (Pa).

Manipulator key (``beam=None``): ``manipulator_inserted`` (bool, read-only: insert and retract
with the verbs), ``manipulator_contact`` (bool, read-only: the tip touches the sample).

Gas injection and sputter coater keys (``beam=None``): ``gis_position`` (str: "retracted" or
an insert position, e.g. "cryo", "electron_default"; writing it inserts or retracts the
needle), ``gis_gas`` (str, e.g. "Pt cryo"), ``sputter_current`` (A). ``available_values``
lists the positions and gases.

Stage and manipulator axes are described (not read) by key: ``stage_x`` ... ``stage_t``
(:data:`STAGE_KEYS`) and ``manipulator_x`` ... ``manipulator_z`` (:data:`MANIPULATOR_KEYS`).

Besides the key-value API a backend says what it is (:meth:`MicroscopeBackend.describe`: units,
limits or allowed values, read-only-ness of every key; :meth:`~MicroscopeBackend.missing`:
the subsystems of :data:`SUBSYSTEMS` it lacks, with why), stops motion
(:meth:`~MicroscopeBackend.stop` for :data:`STOPPABLE`) and reads a frame's whole metadata
in one call (:meth:`~MicroscopeBackend.state`).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import numpy as np

from . import validate

__all__ = [
    "BEAM_UNITS",
    "describe_beam_key",
    "MicroscopeBackend",
    "SUBSYSTEMS",
    "STOPPABLE",
    "STAGE_KEYS",
    "MANIPULATOR_KEYS",
    "DESCRIPTION_FIELDS",
    "MissingSubsystemError",
    "StoppedError",
    "check_subsystem",
    "describe_value",
    "BEAM_KEYS",
    "DETECTOR_KEYS",
    "CHAMBER_KEYS",
    "GIS_KEYS",
    "SPUTTER_CURRENT_LIMITS",
    "MAX_DEPOSITION_TIME",
    "check_deposition_time",
    "STAGE_AXES",
    "MANIPULATOR_AXES",
    "MANIPULATOR_LIMITS",
    "IMAGE_SETTING_KEYS",
    "BackendError",
    "BEAMS",
    "STATE_SECTIONS",
    "STATE_BEAM_KEYS",
    "STAGE_UNITS",
]

#: the two beams, as every ``beam=`` argument names them
BEAMS = ("electron", "ion")
#: stage axes (RAW: x, y, z in m; r, t in deg)
STAGE_AXES = ("x", "y", "z", "r", "t")
#: units of the stage axes
STAGE_UNITS = {"x": "m", "y": "m", "z": "m", "r": "deg", "t": "deg"}
#: manipulator axes (RAW: the tip in the chamber frame from the coincidence point, m)
MANIPULATOR_AXES = ("x", "y", "z")
#: range of each manipulator axis, m
MANIPULATOR_LIMITS = (-5e-3, 5e-3)
BEAM_KEYS = (
    "on", "blanked", "voltage", "current", "hfw", "working_distance", "dwell_time",
    "resolution", "scan_rotation", "shift", "stigmation", "column_tilt",
)
#: the largest frame side any backend is asked for, px (the devices' resolution limit)
MAX_RESOLUTION = 16384
DETECTOR_KEYS = ("detector_type", "detector_mode", "brightness", "contrast")
#: the beam keys of a :meth:`MicroscopeBackend.state` (OpenFIBSEM's BeamSettings; column tilt
#: is geometry, not state)
STATE_BEAM_KEYS = tuple(k for k in BEAM_KEYS if k != "column_tilt")
#: the sections of a :meth:`MicroscopeBackend.state` besides ``timestamp``, and their keys
STATE_SECTIONS = {"stage": STAGE_AXES,
                  "electron_beam": STATE_BEAM_KEYS, "ion_beam": STATE_BEAM_KEYS,
                  "electron_detector": DETECTOR_KEYS, "ion_detector": DETECTOR_KEYS}
CHAMBER_KEYS = ("vacuum_state", "pressure")
GIS_KEYS = ("gis_position", "gis_gas", "sputter_current")
#: sputter coater current range, A (an integrated coater runs at a few mA)
SPUTTER_CURRENT_LIMITS = (1e-3, 30e-3)
#: longest GIS valve opening or sputter run accepted in one call, s
MAX_DEPOSITION_TIME = 600.0
#: keys of the ``settings`` mapping accepted by :meth:`MicroscopeBackend.acquire_image`
IMAGE_SETTING_KEYS = (
    "resolution", "dwell_time", "hfw", "reduced_area", "line_integration",
    "frame_integration", "autocontrast",
)


def check_deposition_time(name: str, seconds: Any) -> float:
    """A valve or sputter time in seconds, in (0, MAX_DEPOSITION_TIME]; ValueError naming it."""
    rule = f"a time in (0, {MAX_DEPOSITION_TIME:g}] s"
    if not 0 < validate.real(name, seconds, rule=rule) <= MAX_DEPOSITION_TIME:
        raise ValueError(f"{name} must be {rule}, got {validate.show(seconds)}")
    return float(seconds)


#: stage axes by key, for :meth:`MicroscopeBackend.describe` (x, y, z m; r, t deg)
STAGE_KEYS = tuple(f"stage_{ax}" for ax in STAGE_AXES)
#: manipulator tip axes by key, for :meth:`MicroscopeBackend.describe` (RAW, m)
MANIPULATOR_KEYS = tuple(f"manipulator_{ax}" for ax in MANIPULATOR_AXES)
#: the subsystems a backend may lack (:meth:`MicroscopeBackend.missing`); ``stage_stop``,
#: ``manipulator_stop`` and ``chamber_stop``: the stage, needle or vacuum system works but
#: cannot be stopped part way;
#: ``manipulator_contact``: no sensing of the tip touching the sample
SUBSYSTEMS = ("electron_beam", "ion_beam", "stage", "manipulator", "gis", "sputter_coater",
              "chamber_camera", "milling", "stage_stop", "manipulator_stop",
              "manipulator_contact", "chamber_stop")
#: what :meth:`MicroscopeBackend.stop` accepts (``"chamber"``: a pump or vent in progress;
#: ``chamber_stop`` in :meth:`~MicroscopeBackend.missing` if the microscope cannot)
STOPPABLE = ("stage", "manipulator", "milling", "chamber")
#: the fields of a :meth:`MicroscopeBackend.describe` answer
DESCRIPTION_FIELDS = ("units", "limits", "choices", "read_only")


def describe_value(units: str | None = None, limits: tuple[float, float] | None = None,
                   choices: list | None = None, read_only: bool = False) -> dict:
    """One :meth:`MicroscopeBackend.describe` answer: ``units`` (str or None), ``limits``
    ((low, high) in those units, or None), ``choices`` (allowed values, or None),
    ``read_only``."""
    return {"units": units,
            "limits": None if limits is None else (float(limits[0]), float(limits[1])),
            "choices": None if choices is None else list(choices),
            "read_only": bool(read_only)}


#: units of the beam settings that have them
BEAM_UNITS = {"voltage": "V", "current": "A", "hfw": "m", "working_distance": "m",
              "dwell_time": "s", "shift": "m", "resolution": "px", "scan_rotation": "deg",
              "column_tilt": "deg"}


def describe_beam_key(key: str, beam: str, limits: Any, max_resolution: int,
                      choices: Any) -> dict:
    """``describe(key, beam)`` of a beam or detector setting, for backends: ``limits`` the
    beam's ``{setting: (low, high)}``, ``choices(key)`` the allowed values of an enumerated
    setting. ``ValueError`` naming an unknown key."""
    if key in ("on", "blanked"):
        return describe_value()
    if key in ("voltage", "current", "hfw", "working_distance", "dwell_time", "shift",
               "stigmation"):
        return describe_value(BEAM_UNITS.get(key), limits.get(key))
    if key == "resolution":
        return describe_value("px", (1, max_resolution))
    if key == "scan_rotation":
        return describe_value("deg", (-360.0, 360.0))
    if key == "column_tilt":
        return describe_value("deg", read_only=True)
    if key in ("detector_type", "detector_mode"):
        return describe_value(choices=choices(key))
    if key in ("brightness", "contrast"):
        return describe_value(None, (0.0, 1.0))
    raise ValueError(f"unknown {beam} key {key!r}; expected one of "
                     f"{list(BEAM_KEYS) + list(DETECTOR_KEYS)}")


class BackendError(RuntimeError):
    """The microscope refused or failed an operation (beam trip, stall, vacuum...)."""


class MissingSubsystemError(BackendError):
    """The backend has no such subsystem (no manipulator, no sputter coater...).

    ``subsystem`` names it (one of :data:`SUBSYSTEMS`)."""

    def __init__(self, subsystem: str, why: str = ""):
        self.subsystem = subsystem
        super().__init__(f"this microscope has no {subsystem}" + (f": {why}" if why else ""))


class StoppedError(BackendError):
    """A :meth:`MicroscopeBackend.stop` ended a move or a milling before it finished."""


def check_subsystem(backend, subsystem: str) -> None:
    """Raise :class:`MissingSubsystemError` naming ``subsystem`` if ``backend`` lacks it."""
    if subsystem not in SUBSYSTEMS:
        raise ValueError(f"unknown subsystem {subsystem!r}; expected one of {list(SUBSYSTEMS)}")
    why = backend.missing().get(subsystem)
    if why is not None:
        raise MissingSubsystemError(subsystem, why)


@runtime_checkable
class MicroscopeBackend(Protocol):
    """What the devices need from a microscope."""

    #: the validated configuration (``fibsem_ophyd.config.MicroscopeConfig``)
    config: Any

    def get(self, key: str, beam: str | None = None) -> Any:
        """Read one setting (see the module table for keys and units)."""

    def set(self, key: str, value: Any, beam: str | None = None) -> None:
        """Write one setting; raise ``ValueError`` naming the limit if out of range."""

    def available_values(self, key: str, beam: str | None = None) -> list:
        """Allowed values of an enumerated setting (detector type/mode, currents...)."""

    def get_stage_position(self) -> dict[str, float]:
        """Raw stage position: x, y, z in metres; r, t in degrees."""

    def move_stage_absolute(self, position: dict[str, float]) -> None:
        """Move the given axes (others stay); returns when the move is complete."""

    def acquire_image(self, beam: str, settings: dict | None = None) -> np.ndarray:
        """Acquire one frame (2-D uint8, (height, width)).

        ``settings`` (keys of :data:`IMAGE_SETTING_KEYS`) are applied first, as the vendor
        APIs do: ``resolution``, ``dwell_time`` and ``hfw`` persist on the beam afterwards;
        ``reduced_area``, integrations and ``autocontrast`` apply to this frame only.
        """

    def mill(self, shapes: list, current: float, voltage: float = 30e3,
             hfw: float | None = None, application_file: str = "Si",
             progress=None) -> float:
        """Mill ``shapes`` (``fibsem_ophyd.milling`` primitives: metres in the ion image frame,
        each with its depth) at ``current`` A; ``application_file`` names the material the
        depths are calibrated for. Blocks until done; calls ``progress(fraction)`` along the
        way (an exception raised there aborts). Returns the beam time, s."""

    def gis_deposit(self, duration: float) -> float:
        """Open the gas injection valve for ``duration`` s (the needle inserted at
        ``gis_position``, gas ``gis_gas``: cryo deposition, no beam). Blocks; returns the valve
        time, s. ``BackendError`` if the needle is retracted or the chamber not pumped."""

    def sputter_coat(self, duration: float) -> float:
        """Sputter-coat the sample for ``duration`` s at ``sputter_current``. Blocks; returns
        the time taken including the coater's gas cycle, s."""

    def insert_manipulator(self, name: str = "PARK") -> None:
        """Insert the manipulator (needle) and move it to its saved position ``name``
        ("PARK" or "EUCENTRIC"); returns when there."""

    def retract_manipulator(self) -> None:
        """Retract the manipulator."""

    def get_manipulator_position(self) -> dict[str, float]:
        """RAW position of the tip (x, y, z, m; see :data:`MANIPULATOR_AXES`)."""

    def move_manipulator_absolute(self, position: dict[str, float]) -> None:
        """Move the inserted manipulator's tip to ``position`` (the given axes; RAW, m).
        ``BackendError`` if retracted or if the tip would go into the sample."""

    def manipulator_positions(self) -> dict[str, dict[str, float]]:
        """The calibrated saved positions ("PARK", "EUCENTRIC") in RAW coordinates."""

    def pump(self) -> None:
        """Pump the chamber to high vacuum."""

    def vent(self) -> None:
        """Vent the chamber."""

    def time(self) -> float:
        """The microscope's clock in seconds (simulated time on the simulator)."""

    def describe(self, key: str, beam: str | None = None) -> dict:
        """What ``key`` is on this microscope: ``{"units", "limits", "choices",
        "read_only"}`` (see :func:`describe_value`). Limits may depend on the state (a
        bridge reports the vendor's current ranges). ``ValueError`` for an unknown key."""

    def missing(self) -> dict[str, str]:
        """The subsystems (of :data:`SUBSYSTEMS`) this microscope lacks, each with why."""

    def stop(self, subsystem: str) -> None:
        """Stop ``subsystem`` (one of :data:`STOPPABLE`) now: a move ends where it is, a
        milling ends after the current pass; the interrupted call raises
        :class:`StoppedError`. Nothing running: no effect. :class:`MissingSubsystemError` if
        this microscope cannot stop it."""

    def state(self) -> dict:
        """Everything a frame's metadata needs, in one call: ``timestamp`` (s, :meth:`time`),
        ``stage`` {x, y, z m; r, t deg}, ``electron_beam`` / ``ion_beam`` {the
        :data:`BEAM_KEYS` but ``column_tilt``} and ``electron_detector`` /
        ``ion_detector`` {the :data:`DETECTOR_KEYS`}."""

    def acquire_chamber_image(self) -> np.ndarray:
        """One frame of the chamber camera (2-D uint8). :class:`MissingSubsystemError`
        (``chamber_camera``) if there is none."""
