"""The sample stage: five axes (x, y, z in metres; r, t in degrees) and named positions.

Units and limits of each axis are the backend's (``describe("stage_x")``...); ``stop()``
stops the stage through the backend (a RunEngine abort or stop calls it).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path

import yaml
from ophyd import Component as Cpt
from ophyd import Device, Signal

from .. import validate
from ..backend import STAGE_AXES, STAGE_UNITS, MissingSubsystemError
from ._interlock import check_no_milling
from ._limits import LimitTravel
from ._signals import ImmediateSignal, background_status, find_backend, validate_value

__all__ = ["Stage", "StageAxis", "NamedPositions", "AXES", "AXIS_UNITS", "stop_subsystem",
           "load_positions", "save_positions", "check_positions_file", "COORDINATE_SYSTEMS"]

AXES = STAGE_AXES
AXIS_UNITS = STAGE_UNITS
_log = logging.getLogger(__name__)


def stop_subsystem(device, subsystem: str) -> bool:
    """Ask the backend to stop ``subsystem``; False (logged) if it cannot. Never raises: a
    RunEngine abort calls this and must go on stopping the other devices."""
    try:
        find_backend(device).stop(subsystem)
    except MissingSubsystemError as exc:
        _log.warning("%s: cannot stop the %s: %s", device.name, subsystem, exc)
        return False
    except Exception as exc:  # noqa: BLE001 -- an abort must reach every device
        _log.error("%s: stopping the %s failed: %s", device.name, subsystem, exc)
        return False
    return True


def _stage(obj) -> Stage:
    node = obj
    while node is not None and not isinstance(node, Stage):
        node = node.parent
    if node is None:
        raise RuntimeError(f"{obj.name} is not part of a Stage")
    return node


class _AxisReadback(Signal):
    def get(self, **kwargs):
        axis = self.parent.axis
        value = float(find_backend(self).get_stage_position()[axis])
        self._readback = value
        self._metadata["timestamp"] = time.time()
        return value

    def describe(self):
        axis = self.parent.axis
        lo, hi = self.parent.limits
        return {self.name: {
            "source": f"backend:stage:{axis}", "dtype": "number", "shape": [],
            "dtype_numpy": "<f8", "units": self.parent.egu,
            "limits": {"control": {"low": lo, "high": hi}},
        }}


class _AxisSetpoint(Signal):
    def describe(self):
        axis = self.parent.axis
        return {self.name: {
            "source": f"setpoint:stage:{axis}", "dtype": "number", "shape": [],
            "dtype_numpy": "<f8", "units": self.parent.egu,
        }}


class StageAxis(Device):
    """One stage axis. ``set(v)`` validates (finite, within limits) before anything moves."""

    readback = Cpt(_AxisReadback, kind="hinted")
    setpoint = Cpt(_AxisSetpoint, value=float("nan"), kind="normal")
    #: the travel limits (``bps.rd``-able, as on ophyd's EpicsMotor), m or deg
    low_limit_travel = Cpt(LimitTravel, end=0, kind="omitted")
    high_limit_travel = Cpt(LimitTravel, end=1, kind="omitted")

    def __init__(self, *args, axis: str, **kwargs):
        self.axis = axis
        super().__init__(*args, **kwargs)
        self.readback.name = self.name

    def _description(self) -> dict:
        return find_backend(self).describe(f"stage_{self.axis}")

    @property
    def limits(self) -> tuple[float, float]:
        lim = self._description().get("limits")
        return tuple(lim) if lim is not None else _stage(self).axis_limits[self.axis]

    @property
    def egu(self) -> str:
        return self._description().get("units") or AXIS_UNITS[self.axis]

    @property
    def position(self) -> float:
        return self.readback.get()

    def check_value(self, value) -> float:
        return validate_value(f"stage.{self.axis}", value, vtype="float",
                              units=self.egu, limits=self.limits)

    def set(self, value, **kwargs):
        return _stage(self).set({self.axis: value})

    def stop(self, *, success: bool = False):
        """Stop the stage (all axes move together)."""
        _stage(self).stop(success=success)


class NamedPositions(ImmediateSignal):
    """Named stage positions, persisted to a YAML file in OpenFIBSEM's positions.yaml layout.

    ``get()`` returns ``{name: {x, y, z (m), r, t (deg)}}``. ``set({name: position})`` adds or
    replaces positions (``position=None`` deletes one) and rewrites the file. The file stores
    r and t in radians with ``coordinate_system: RAW``, as OpenFIBSEM's ``save_positions`` does.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, value={}, **kwargs)
        self.path: Path | None = None

    def load(self, path: str | Path) -> None:
        """Read ``path`` (OpenFIBSEM's positions.yaml; none yet: no positions) and use it
        from now on. A bad file, or a position beyond the stage's limits, raises
        ``ValueError`` naming the position, the axis and the value, and changes nothing."""
        path = Path(path)
        positions = load_positions(path) if path.exists() else {}
        stage = _stage(self)
        for name, pos in positions.items():
            try:
                stage.check_position(pos)
            except ValueError as exc:
                raise ValueError(f"positions file {path}: position {name!r}: {exc}") from None
        self.path, self._readback = path, positions

    def get(self, **kwargs):
        return dict(self._readback)

    def check_value(self, value):
        if not isinstance(value, Mapping):
            raise ValueError(f"named positions must map name -> position, got {value!r}")
        stage = _stage(self)
        for name, pos in value.items():
            if not isinstance(name, str) or not name:
                raise ValueError(f"position name must be a non-empty string, got {name!r}")
            if pos is not None:
                stage.check_position(pos)

    def put(self, value, **kwargs):
        self.check_value(value)
        new = dict(self._readback)
        for name, pos in value.items():
            if pos is None:
                new.pop(name, None)
            else:
                new[name] = {k: float(v) for k, v in pos.items() if k in AXES}
        if self.path is not None:
            save_positions(self.path, new)
        old, self._readback = self._readback, new
        self._run_subs(sub_type=self.SUB_VALUE, old_value=old, value=new, timestamp=time.time())


    def describe(self):
        return {self.name: {"source": "file:positions.yaml", "dtype": "object", "shape": []}}


#: the coordinate systems a positions.yaml entry may name: RAW (the stage's own axes, as
#: OpenFIBSEM's ``save_positions`` writes them); a SPECIMEN or STAGE position is in another
#: frame and would be moved to wrongly, so it is refused rather than read as RAW
COORDINATE_SYSTEMS = ("RAW",)
#: keys of a positions.yaml entry besides the axes (OpenFIBSEM's FibsemStagePosition)
_POSITION_KEYS = ("name", "coordinate_system", *AXES)


def load_positions(path: str | Path) -> dict[str, dict[str, float]]:
    """Read an OpenFIBSEM positions.yaml (a list of ``{name, x, y, z, r, t,
    coordinate_system}``, r/t in radians) as ``{name: {x, y, z (m), r, t (deg)}}``.

    Every entry names all five axes (``null``: that axis does not move, as OpenFIBSEM
    writes it), each a finite number; ``coordinate_system`` is ``RAW`` (or absent); names
    are non-empty and unique; unknown keys are refused. ``ValueError`` names the file, the
    position, the key and the value.
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ValueError(f"malformed positions file {path}: {exc}") from exc
    if data is None:
        return {}
    if not isinstance(data, list):
        raise ValueError(f"positions file {path} must hold a list of positions, got "
                         f"{type(data).__name__}")
    out: dict[str, dict[str, float]] = {}
    for i, item in enumerate(data):
        if not isinstance(item, Mapping) or "name" not in item:
            raise ValueError(f"positions file {path}: entry {i} must be a mapping with a "
                             f"name, got {validate.show(item)}")
        name = item["name"]
        where = f"positions file {path}: position {validate.show(name)}"
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"positions file {path}: entry {i}: name must be a non-empty "
                             f"string, got {validate.show(name)}")
        if name in out:
            raise ValueError(f"{where} appears twice")
        validate.known_keys(where, item, _POSITION_KEYS)
        system = item.get("coordinate_system", "RAW")
        if system not in COORDINATE_SYSTEMS:
            raise ValueError(f"{where}: coordinate_system {validate.show(system)} is not "
                             f"supported; allowed: {list(COORDINATE_SYSTEMS)}")
        missing = [ax for ax in AXES if ax not in item]
        if missing:
            raise ValueError(f"{where} is missing axes {missing} (write null for an axis that "
                             "does not move)")
        pos = {}
        for ax in AXES:
            v = item[ax]
            if v is None:
                continue
            unit = "m" if ax in ("x", "y", "z") else "rad"
            v = validate.real(f"{where}: {name}.{ax}", v, rule=f"a finite number in {unit}")
            pos[ax] = math.degrees(v) if ax in ("r", "t") else v
        out[name] = pos
    return out


def check_positions_file(path: str | Path, limits: Mapping[str, tuple[float, float]]) -> None:
    """Refuse a bad positions.yaml at ``path`` (if there is one) as :meth:`NamedPositions.load`
    would, with the stage ``limits`` (m, deg) given: ``setup_session`` asks before it makes
    any directory."""
    path = Path(path)
    if not path.exists():
        return
    for name, pos in load_positions(path).items():
        try:
            validate.position("stage", pos, limits, AXIS_UNITS, what="stage axis")
        except ValueError as exc:
            raise ValueError(f"positions file {path}: position {name!r}: {exc}") from None


def save_positions(path: str | Path, positions: Mapping[str, Mapping[str, float]]) -> None:
    path = Path(path)
    items = []
    for name, pos in positions.items():
        item = {"name": name}
        for ax in AXES:
            if ax in pos:
                v = float(pos[ax])
                item[ax] = math.radians(v) if ax in ("r", "t") else v
        item["coordinate_system"] = "RAW"
        items.append(item)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(yaml.safe_dump(items, sort_keys=False))
    tmp.replace(path)


class _ConstSignal(Signal):
    """A fixed configuration value (degrees), read-only."""

    def __init__(self, *args, units: str = "deg", **kwargs):
        self._units = units
        super().__init__(*args, **kwargs)

    def put(self, value, **kwargs):
        if kwargs.pop("_init", False):
            return super().put(value, **kwargs)
        raise ValueError(f"{self.name} is read-only configuration")

    def describe(self):
        return {self.name: {"source": "config:stage", "dtype": "number", "shape": [],
                            "dtype_numpy": "<f8", "units": self._units}}


class _ConstStringSignal(_ConstSignal):
    """A fixed configuration string, read-only."""

    def describe(self):
        return {self.name: {"source": "config:stage", "dtype": "string", "shape": []}}


class Stage(Device):
    """Five-axis stage. ``set({"x": .., "z": ..})`` validates every axis, then moves once.

    Configuration (read-only, degrees): ``shuttle_pre_tilt``, ``rotation_reference``,
    ``rotation_180``; ``stage_type`` ("shuttle", "tescan" or "compustage") names the frame.
    """

    x = Cpt(StageAxis, axis="x")
    y = Cpt(StageAxis, axis="y")
    z = Cpt(StageAxis, axis="z")
    r = Cpt(StageAxis, axis="r")
    t = Cpt(StageAxis, axis="t")
    positions = Cpt(NamedPositions, kind="omitted")
    shuttle_pre_tilt = Cpt(_ConstSignal, value=35.0, kind="config")
    rotation_reference = Cpt(_ConstSignal, value=0.0, kind="config")
    rotation_180 = Cpt(_ConstSignal, value=180.0, kind="config")
    stage_type = Cpt(_ConstStringSignal, value="shuttle", kind="config")

    def __init__(self, *args, limits: Mapping[str, tuple[float, float]] | None = None, **kwargs):
        self.axis_limits = dict(limits or dict.fromkeys(AXES, (-math.inf, math.inf)))
        super().__init__(*args, **kwargs)

    def __call__(self):
        # The microscope exposes this device as ``microscope.stage``, shadowing ophyd's
        # ``Device.stage()`` verb: calling it stages the microscope, as bluesky expects.
        if self.parent is None:
            raise TypeError("'Stage' object is not callable")
        return Device.stage(self.parent)

    @property
    def position(self) -> dict[str, float]:
        pos = find_backend(self).get_stage_position()
        return {ax: float(pos[ax]) for ax in AXES}

    def check_position(self, position: Mapping[str, float]) -> dict[str, float]:
        if not isinstance(position, Mapping):
            raise ValueError(f"a stage position must be a mapping of axis -> value, got "
                             f"{position!r}")
        validate.known_keys("the stage position", position, AXES, what="stage axis")
        out = {}
        for ax, v in position.items():
            if v is None:
                continue  # OpenFIBSEM: None means "don't move this axis"
            out[ax] = getattr(self, ax).check_value(v)
        return out

    def set(self, position, **kwargs):
        target = self.check_position(position)
        check_no_milling(self, f"stage move to {target}")
        backend = find_backend(self)

        def move():
            backend.move_stage_absolute(target)
            for ax in target:
                getattr(self, ax).setpoint.put(target[ax])

        return background_status(self, move, "move")

    def stop(self, *, success: bool = False):
        """Stop the stage where it is (the move's status then fails with ``StoppedError``)."""
        stop_subsystem(self, "stage")
