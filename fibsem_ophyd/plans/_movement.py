"""Stage movement plan stubs: stable, vertical, flat-to-beam, safe absolute, named positions.

The moves open no run (like ``bps.mv``): call them inside your own run to have the moves
recorded, or on their own. Each computes its full target and validates it against the stage
limits before anything moves; each returns the target it moved to (m, deg).

Saving a position changes state that outlives the plan, so :func:`save_position` records it
in a run of its own (its own run key, so it may also be called inside an open run): stream
"primary" the stage as it reads, stream "positions" every saved position after the change
(one "position" event each). The newest such run is the whole list; a viewer that has only
the catalog (:func:`fibsem_ophyd.plans.stored_runs.saved_positions`) shows it.
"""

import math
from collections.abc import Mapping

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.protocols import Readable
from bluesky.utils import MsgGenerator

from .. import geometry, validate
from ..backend import STAGE_AXES
from ..beams import as_beam
from ._common import (
    beam_device,
    check_stage_position,
    finite,
    in_run,
    read_stage_limits,
    record,
    run_md,
)
from .stored_runs import POSITIONS_KEY

__all__ = [
    "read_stage_position",
    "stable_move",
    "vertical_move",
    "move_flat_to_beam",
    "move_to_milling_angle",
    "safe_absolute_move",
    "save_position",
    "go_to_position",
    "read_geometry",
    "check_milling_angle",
    "stable_move_target",
    "vertical_move_target",
]

_AXES = STAGE_AXES


def read_stage_position(microscope: Readable) -> MsgGenerator[dict]:
    """Read the stage position: ``{x, y, z (m), r, t (deg)}``.

    Parameters
    ----------
    microscope : Readable
        The microscope device."""
    return (yield from read_axes(microscope.stage, _AXES))


def read_axes(device, axes) -> MsgGenerator[dict]:
    """``{axis: float}`` read (``bps.rd``) from the ``axes`` children of ``device``."""
    pos = {}
    for ax in axes:
        pos[ax] = float((yield from bps.rd(getattr(device, ax))))
    return pos


def read_geometry(microscope: Readable) -> MsgGenerator[geometry.SystemGeometry]:
    """Column and holder geometry read from the devices' configuration signals.

    Parameters
    ----------
    microscope : Readable
        The microscope device."""
    st = microscope.stage
    pre = yield from bps.rd(st.shuttle_pre_tilt)
    r_ref = yield from bps.rd(st.rotation_reference)
    r_180 = yield from bps.rd(st.rotation_180)
    stage_type = yield from bps.rd(st.stage_type)
    ion_tilt = yield from bps.rd(microscope.ion_beam.column_tilt)
    e_tilt = yield from bps.rd(microscope.electron_beam.column_tilt)
    return geometry.SystemGeometry(
        ion_column_tilt=math.radians(ion_tilt),
        electron_column_tilt=math.radians(e_tilt),
        shuttle_pre_tilt=math.radians(pre),
        rotation_reference=math.radians(r_ref),
        rotation_180=math.radians(r_180),
        stage_type=str(stage_type),
    )


def _move(microscope, target: Mapping[str, float]) -> MsgGenerator[dict]:
    target = check_stage_position((yield from read_stage_limits(microscope)), target)
    yield from bps.mv(microscope.stage, target)
    return target


def stable_move(microscope: Readable, dx: float, dy: float,
                beam: str = "electron") -> MsgGenerator[dict]:
    """Move the stage in the sample plane so the image content shifts by (dx, dy).

    Parameters
    ----------
    microscope : Readable
        The microscope device.
    dx, dy : float
        Shift of the image content in ``beam``'s view, metres (+x right, +y up). To centre a
        feature seen at image offset ``f``, move by ``-f``.
    beam : str
        View the shift is expressed in: "electron" or "ion" (or a ``BeamType``).

    Returns
    -------
    dict
        The stage target moved to (x, y, z in m).
    """
    target = yield from stable_move_target(microscope, dx, dy, beam)
    return (yield from _move(microscope, target))


def stable_move_target(microscope, dx: float, dy: float, beam: str = "electron",
                       pos: dict | None = None) -> MsgGenerator[dict]:
    """The stage target (x, y, z) of :func:`stable_move` from ``pos`` (default: the stage's
    position now), computed and not moved to (a plan checks a sequence of moves first)."""
    beam = as_beam(beam)
    dx, dy = finite("dx", dx), finite("dy", dy)
    geom = yield from read_geometry(microscope)
    if pos is None:
        pos = yield from read_stage_position(microscope)
    rot = yield from bps.rd(beam_device(microscope, beam).scan_rotation)
    ddx, ddy, ddz = geometry.stable_move_delta(
        dx, dy, beam, math.radians(pos["r"]), math.radians(pos["t"]), geom,
        scan_rotation=math.radians(rot),
    )
    return {"x": pos["x"] + ddx, "y": pos["y"] + ddy, "z": pos["z"] + ddz}


def vertical_move(microscope: Readable, dy: float, dx: float = 0.0) -> MsgGenerator[dict]:
    """Move the sample chamber-vertically so it shifts by ``dy`` (m, +up) in the ion image.

    The feature stays put in the electron image: this is how coincidence is restored.
    Exact form: m = dy / sin(ion column tilt); stage (dy, dz) = (m sin t, m cos t) where y, z
    ride the tilt (shuttle, compustage), dz = -m on a TESCAN stage (z vertical, down).

    Parameters
    ----------
    microscope : Readable
        The microscope device.
    dy : float
        Shift of the image content in the ion view, metres (+y up).
    dx : float
        Stage x move, metres (+x right in both views).
    """
    target = yield from vertical_move_target(microscope, dy, dx)
    return (yield from _move(microscope, target))


def vertical_move_target(microscope, dy: float, dx: float = 0.0,
                         pos: dict | None = None) -> MsgGenerator[dict]:
    """The stage target (x, y, z) of :func:`vertical_move` from ``pos`` (default: the
    stage's position now), computed and not moved to."""
    dx, dy = finite("dx", dx), finite("dy", dy)
    geom = yield from read_geometry(microscope)
    if pos is None:
        pos = yield from read_stage_position(microscope)
    rot = yield from bps.rd(microscope.ion_beam.scan_rotation)
    ddx, ddy, ddz = geometry.vertical_move_delta(
        dy, math.radians(pos["t"]), geom, dx=dx, scan_rotation=math.radians(rot)
    )
    return {"x": pos["x"] + ddx, "y": pos["y"] + ddy, "z": pos["z"] + ddz}


def safe_absolute_move(microscope: Readable, position: dict) -> MsgGenerator[dict]:
    """Move to an absolute stage position, tilting flat first for large rotations.

    Parameters
    ----------
    microscope : Readable
        The microscope device.
    position : dict
        Any of x, y, z (m), r, t (deg); missing or ``None`` axes stay where they are.

    Follows OpenFIBSEM's safe movement: if the rotation changes by more than 90 deg, tilt to
    0 deg first, then rotate, then move to the full target. Every intermediate and the final
    target are validated before the first move.
    """
    stage = microscope.stage
    limits = yield from read_stage_limits(microscope)
    target = check_stage_position(limits, position)
    pos = yield from read_stage_position(microscope)
    steps = []
    if "r" in target:
        dr = (target["r"] - pos["r"] + 180.0) % 360.0 - 180.0
        if abs(dr) > 90.0:
            if abs(pos["t"]) > 1e-6:
                steps.append({"t": 0.0})
            steps.append({"r": target["r"]})
    steps.append(target)
    for step in steps:
        check_stage_position(limits, step)
    for step in steps:
        yield from bps.mv(stage, step)
    return {**pos, **target}


def move_flat_to_beam(microscope: Readable, beam: str = "electron") -> MsgGenerator[dict]:
    """Rotate and tilt so the (pre-tilted) sample surface faces ``beam`` squarely.

    Electron: (rotation_reference, pre_tilt + electron column tilt); ion: (rotation_180,
    ion column tilt - pre_tilt). x, y, z are unchanged.

    Parameters
    ----------
    microscope : Readable
        The microscope device.
    beam : str
        "electron" or "ion" (or a ``BeamType``).
    """
    beam = as_beam(beam)
    geom = yield from read_geometry(microscope)
    r, t = geometry.flat_to_beam(beam, geom)
    return (yield from safe_absolute_move(microscope, {"r": math.degrees(r), "t": math.degrees(t)}))


def move_to_milling_angle(microscope: Readable, milling_angle: float = 15.0) -> MsgGenerator[dict]:
    """Tilt (at the reference rotation) so the ion beam meets the surface at an angle.

    Parameters
    ----------
    microscope : Readable
        The microscope device.
    milling_angle : float
        Ion-beam-to-surface angle, degrees (AutoLamella's default: 15).
    """
    angle = check_milling_angle(milling_angle)
    geom = yield from read_geometry(microscope)
    t = geometry.milling_tilt(math.radians(angle), geom)
    return (yield from safe_absolute_move(
        microscope, {"r": math.degrees(geom.rotation_reference), "t": math.degrees(t)}
    ))


def check_milling_angle(milling_angle) -> float:
    """The ion-beam-to-surface angle, degrees in [0, 90]."""
    return validate.in_range("milling_angle", milling_angle, (0.0, 90.0), units="deg",
                             rule="a number of degrees in [0, 90]")


def save_position(microscope: Readable, name: str) -> MsgGenerator[dict]:
    """Save the current stage position under ``name`` (persisted to positions.yaml).

    Recorded in a run of its own (``plan_name: "save_position"``, ``positions_changed:
    [name]``): the stage's reading (stream "primary") and every saved position after the
    change (stream "positions", see :func:`change_positions`).

    Parameters
    ----------
    microscope : Readable
        The microscope device.
    name : str
        Position name (e.g. "lamella-01"); an existing one is replaced.
    """
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"position name must be a non-empty string, got {name!r}")
    pos = yield from read_stage_position(microscope)
    yield from change_positions(microscope, {name: pos}, "save_position",
                                {"microscope": microscope, "name": name},
                                read=[microscope.stage])
    return pos


#: the run key of the runs that record saved positions (so they may nest in an open run)
POSITIONS_RUN_KEY = "saved_positions"


def change_positions(microscope, changes: Mapping, plan_name: str, plan_args: dict,
                     read=()) -> MsgGenerator[str]:
    """Change the saved stage positions (``{name: position, or None to remove it}``, checked
    by the stage before anything is recorded) in a run that records them; return its uid.

    The run's start document has ``plan_name``, ``plan_args`` and ``positions_changed``
    (the names, sorted); stream "primary" reads ``read`` (readables) first; stream
    "positions" holds one event per saved position after the change (``position_label``,
    ``position_x``/``_y``/``_z`` m, ``position_r``/``_t`` deg; NaN for an axis a position
    leaves unset), none when no position is left.
    """
    stage = microscope.stage
    stage.positions.check_value(changes)  # a bad position opens no run
    rec = microscope.recorders.position

    def body():
        if read:
            yield from bps.trigger_and_read(list(read))
        yield from bps.mv(stage.positions, dict(changes))
        positions = yield from bps.rd(stage.positions, default_value={})
        for key in sorted(positions or {}):
            pos = positions[key]
            yield from record(rec, "positions", label=key,
                              **{ax: float(pos.get(ax, math.nan)) for ax in _AXES})

    # the key stored_runs.positions_query finds these runs by
    md = run_md(plan_name, plan_args, None, **{POSITIONS_KEY: sorted(changes)})
    uid, _ = yield from bpp.set_run_key_wrapper(in_run(body(), md), POSITIONS_RUN_KEY)
    return uid


def go_to_position(microscope: Readable, name: str) -> MsgGenerator[dict]:
    """Move (safely) to the stage position saved as ``name``.

    Parameters
    ----------
    microscope : Readable
        The microscope device.
    name : str
        A name saved with :func:`save_position` (or in positions.yaml).
    """
    positions = yield from bps.rd(microscope.stage.positions, default_value={})
    if name not in positions:
        raise ValueError(f"unknown position {name!r}; saved positions: {sorted(positions)}")
    return (yield from safe_absolute_move(microscope, positions[name]))
