"""Manipulator plans (OpenFIBSEM's manipulator API as plan stubs: use them inside a run or on
their own; the moves are recorded by whatever run reads ``microscope.manipulator``). A move
that fails leaves the microscope in the safe state (``safe_state``: beams blanked, needles
retracted); input is checked before, and a refusal moves nothing."""

import math
from typing import Any

import bluesky.plan_stubs as bps
from bluesky.protocols import Readable
from bluesky.utils import MsgGenerator

from .. import geometry, validate
from ..backend import MANIPULATOR_AXES
from ..beams import as_beam
from ._common import beam_device, check_needle_target, finite, read_needle
from ._movement import read_axes, read_geometry
from ._safety import safe_state_wrapper as _guarded
from ._util import mv_raising_cause

__all__ = ["insert_manipulator", "retract_manipulator", "move_manipulator_corrected",
           "move_manipulator_to_position_offset", "read_manipulator_position"]

_AXES = MANIPULATOR_AXES


def read_manipulator_position(microscope: Readable) -> MsgGenerator[dict]:
    """The needle tip, RAW: ``{x, y, z}`` in metres.

    Parameters
    ----------
    microscope : Readable
        The microscope device."""
    return (yield from read_axes(microscope.manipulator, _AXES))


def insert_manipulator(microscope: Readable, name: str = "PARK") -> MsgGenerator[dict]:
    """Insert the needle and move it to its saved position ``name`` ("PARK": ~180 um above
    the coincidence point, the safe default; "EUCENTRIC": the tip on the coincidence point).
    Move the stage flat and down first, as OpenFIBSEM advises.

    Parameters
    ----------
    microscope : Readable
        The microscope device.
    name : str
        A saved manipulator position.

    Returns
    -------
    dict
        The tip position reached (RAW, m).
    """
    check_needle_target((yield from read_needle(microscope)), name)
    yield from _guarded(mv_raising_cause(microscope.manipulator, name), microscope)
    return (yield from read_manipulator_position(microscope))


def retract_manipulator(microscope: Readable) -> MsgGenerator[None]:
    """Retract the needle.

    Parameters
    ----------
    microscope : Readable
        The microscope device."""
    yield from _guarded(mv_raising_cause(microscope.manipulator, "retracted"), microscope)


def move_manipulator_corrected(microscope: Readable, dx: float = 0.0, dy: float = 0.0,
                               beam: str = "electron") -> MsgGenerator[dict]:
    """Move the needle so its tip shifts by (dx, dy) in ``beam``'s image (OpenFIBSEM's
    ``move_manipulator_corrected``). In the ion view ``dy`` moves it along the electron beam
    axis, so it moves vertically in the ion image and not at all in the electron image: how
    the tip is lowered onto the sample.

    Parameters
    ----------
    microscope : Readable
        The microscope device.
    dx, dy : float
        Shift of the tip in ``beam``'s image, metres (+x right, +y up).
    beam : str
        "electron" or "ion" (or a ``BeamType``).

    Returns
    -------
    dict
        The tip target (RAW, m).
    """
    beam = as_beam(beam)
    dx, dy = finite("dx", dx), finite("dy", dy)
    geom = yield from read_geometry(microscope)
    rot = yield from bps.rd(beam_device(microscope, beam).scan_rotation)
    d = geometry.manipulator_corrected_delta(dx, dy, beam, geom,
                                             scan_rotation=math.radians(rot))
    pos = yield from read_manipulator_position(microscope)
    target = check_needle_target((yield from read_needle(microscope)),
                                 {ax: pos[ax] + d[i] for i, ax in enumerate(_AXES)})
    yield from _guarded(mv_raising_cause(microscope.manipulator, target), microscope)
    return target


def move_manipulator_to_position_offset(microscope: Readable, offset: dict[str, Any],
                                        name: str = "EUCENTRIC") -> MsgGenerator[dict]:
    """Move the inserted needle to a saved position plus a RAW offset (OpenFIBSEM's
    ``move_manipulator_to_position_offset``), e.g. ``{"z": 10e-6}``: 10 um above EUCENTRIC.

    Parameters
    ----------
    microscope : Readable
        The microscope device.
    offset : dict
        RAW offset per axis (x, y, z), metres; missing axes are 0.
    name : str
        The saved position the offset is from.

    Returns
    -------
    dict
        The tip target (RAW, m).
    """
    offset = validate.mapping("offset", offset)
    needle = microscope.manipulator
    known = yield from read_needle(microscope)
    check_needle_target(known, name)
    saved = known[0]
    if name not in saved:
        raise ValueError(f"{name!r} is not a saved manipulator position: {sorted(saved)}")
    offset = check_needle_target(known, offset)
    target = check_needle_target(known, {ax: saved[name][ax] + offset.get(ax, 0.0)
                                         for ax in _AXES})
    yield from _guarded(mv_raising_cause(needle, target), microscope)
    return target
