"""Deposition plans: cryo deposition with the gas injection system, sputter coating.

Both are one run each: optional images with both beams before and after (streams "electron"
and "ion", the recorder field ``deposition_step`` says which), and the deposition itself as
an event of stream "deposition" (the device's settings and the time it took).
"""

from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.protocols import Readable
from bluesky.utils import MsgGenerator

from .. import validate
from ..backend import check_deposition_time
from ._common import (
    check_md,
    check_settings,
    check_stage_position,
    flag,
    read_limits,
    read_stage_limits,
)
from ._movement import safe_absolute_move
from ._safety import safe_state_wrapper
from ._util import mv_raising_cause

__all__ = ["cryo_deposition", "sputter_coat", "GIS_PROTOCOL_KEYS"]

#: keys of OpenFIBSEM's GIS protocol dict; the beam-related ones (a Pt GIS baked with the
#: electron beam) are recorded but do not act in a cryo deposition
GIS_PROTOCOL_KEYS = ("time", "gas", "position", "application_file", "hfw", "length",
                     "beam_current")
_BEAM_KEYS = ("application_file", "hfw", "length", "beam_current")


def _images(microscope, step: str, rec) -> MsgGenerator[None]:
    yield from bps.mv(rec.deposition_step, step)
    for det in (microscope.sem, microscope.fib):
        yield from bps.trigger_and_read([det, microscope.stage, rec], name=det.beam)


def _run(microscope, md: dict, images: bool, act) -> MsgGenerator[str]:
    rec = microscope.recorders.deposition_record
    dets = [microscope.sem, microscope.fib] if images else []

    @bpp.stage_decorator(dets)
    @bpp.run_decorator(md=md)
    def inner():
        if images:
            yield from _images(microscope, "before", rec)
        # a failure leaves the beams blanked and the needles out (before the run closes)
        yield from safe_state_wrapper(act(), microscope)
        if images:
            yield from _images(microscope, "after", rec)

    return (yield from inner())


def cryo_deposition(
    microscope: Readable,
    time: float = 30.0,
    gas: str = "Pt cryo",
    insert_position: str = "cryo",
    name: str | None = None,
    protocol: dict[str, Any] | None = None,
    retract: bool = True,
    images: bool = True,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[str]:
    """Cryo deposition (OpenFIBSEM's ``gis.cryo_deposition``): insert the GIS needle, open
    the valve for ``time`` seconds (the precursor condenses on the cold sample; no beam),
    close it and retract the needle.

    Parameters
    ----------
    microscope : Readable
        The microscope device.
    time : float
        Valve opening, s (0 < time <= 600).
    gas : str
        Precursor, one of ``microscope.gis.gas``'s choices (e.g. "Pt cryo").
    insert_position : str
        Where the needle goes (e.g. "cryo"; OpenFIBSEM's protocol ``position``).
    name : str, optional
        A saved stage position to move to first (safely); default: deposit where the stage is.
    protocol : dict, optional
        OpenFIBSEM's GIS protocol (``time``, ``gas``, ``position``; its ``application_file``,
        ``hfw``, ``length``, ``beam_current`` are recorded in the run but do not act in a cryo
        deposition); its values override the arguments.
    retract : bool
        Retract the needle after the deposition (also when it fails or is aborted).
    images : bool
        Take an image with each beam before and after.
    md : dict, optional
        Extra run metadata (e.g. ``lamella``, ``batch``).

    Returns
    -------
    str
        The run uid. Stream "deposition" holds the GIS settings and valve time.
    """
    protocol = validate.mapping("protocol", protocol, none=True)
    validate.known_keys("the GIS protocol", protocol, GIS_PROTOCOL_KEYS, what="GIS protocol key")
    time = check_deposition_time("time", protocol.get("time", time))
    retract, images = flag("retract", retract), flag("images", images)
    md = check_md(md)
    gis = microscope.gis
    checked = check_settings((yield from read_limits(gis)),
                             {"gas": protocol.get("gas", gas),
                              "insert_position": protocol.get("position", insert_position)})
    gas, insert_position = checked["gas"], checked["insert_position"]
    if insert_position == "retracted":
        raise ValueError("insert_position must be where the needle goes in, not 'retracted'")
    target = None
    if name is not None:
        positions = yield from bps.rd(microscope.stage.positions, default_value={})
        if name not in positions:
            raise ValueError(f"unknown position {name!r}; saved positions: {sorted(positions)}")
        target = positions[name]
        check_stage_position((yield from read_stage_limits(microscope)), target)
    _md = {
        "plan_name": "cryo_deposition",
        "plan_args": {"time": time, "gas": gas, "insert_position": insert_position,
                      "name": name, "retract": retract, "images": images},
        "deposition": "cryo",
        "gas": gas,
        "deposition_time": time,
        "protocol_not_used": {k: protocol[k] for k in _BEAM_KEYS if k in protocol},
        "hints": {},
    }
    _md.update(md or {})

    def valve():
        yield from bps.mv(gis.insert_position, insert_position)
        yield from bps.checkpoint()
        yield from mv_raising_cause(gis, time)
        yield from bps.trigger_and_read([gis, microscope.stage], name="deposition")

    def needle_out():
        if retract:
            yield from bps.mv(gis.insert_position, "retracted")

    def act():
        if target is not None:
            yield from safe_absolute_move(microscope, target)
        yield from bps.mv(gis.gas, gas)
        # the needle comes out again whatever happens (a stage move could hit it)
        yield from bpp.finalize_wrapper(valve(), needle_out())

    return (yield from _run(microscope, _md, images, act))


def sputter_coat(
    microscope: Readable,
    time: float = 10.0,
    current: float = 10e-3,
    images: bool = True,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[str]:
    """Sputter-coat the sample with the integrated coater (a few nm of Pt: it stops charging).

    Parameters
    ----------
    microscope : Readable
        The microscope device.
    time : float
        Sputtering time, s (0 < time <= 600); the coater's gas cycle comes on top.
    current : float
        Sputter current, A (within ``microscope.sputter_coater.current``'s limits).
    images : bool
        Take an image with each beam before and after.
    md : dict, optional
        Extra run metadata.

    Returns
    -------
    str
        The run uid. Stream "deposition" holds the coater's current and the time taken.
    """
    time = check_deposition_time("time", time)
    images = flag("images", images)
    md = check_md(md)
    coater = microscope.sputter_coater
    current = check_settings((yield from read_limits(coater)), {"current": current})["current"]
    _md = {
        "plan_name": "sputter_coat",
        "plan_args": {"time": time, "current": current, "images": images},
        "deposition": "sputter",
        "deposition_time": time,
        "hints": {},
    }
    _md.update(md or {})

    def act():
        yield from bps.mv(coater.current, current)
        yield from bps.checkpoint()
        yield from mv_raising_cause(coater, time)
        yield from bps.trigger_and_read([coater, microscope.stage], name="deposition")

    return (yield from _run(microscope, _md, images, act))
