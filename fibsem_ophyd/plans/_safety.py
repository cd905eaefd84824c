"""What a run records and does when the microscope fails under it.

``safe_state``: blank both beams, retract the needle and the GIS needle, leave the stage
where it is. ``safe_state_wrapper``: run a plan and, if it fails (or is aborted or stopped),
put the microscope in that state before the error goes on: the plans that insert a needle
or deposit (the manipulator plans, ``cryo_deposition``, ``sputter_coat``, and so
``move_based_on_detection`` and ``mill_lamellae``'s coating) are wrapped in it.

``note_suspension``: the event a suspended run records (stream "suspensions"), the
pre- and post-plan of the suspenders ``setup_session`` installs.
"""

import logging
from collections.abc import Generator
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.protocols import Readable
from bluesky.utils import (
    FailedPause,
    IllegalMessageSequence,
    MsgGenerator,
    RunEngineControlException,
    make_decorator,
)

from ..backend import MissingSubsystemError
from ._util import mv_raising_cause

__all__ = ["safe_state", "safe_state_wrapper", "safe_state_decorator", "note_suspension",
           "SUSPENSION_STREAM"]

#: the stream of a run's suspensions: one event "suspended" and one "resumed" each
SUSPENSION_STREAM = "suspensions"

_log = logging.getLogger(__name__)


def note_suspension(microscope: Readable, event: str, reason: str) -> MsgGenerator[None]:
    """Record ``event`` ("suspended" or "resumed") and ``reason`` as an event of stream
    "suspensions" of the open run (bluesky records nothing of a suspension by itself), and
    log it. Outside a run only the log has it."""
    _log.warning("run %s: %s", event, reason)
    rec = microscope.recorders.suspension
    yield from bps.mv(rec.event, event, rec.reason, reason)
    try:
        yield from bps.create(name=SUSPENSION_STREAM)
    except IllegalMessageSequence:
        return  # no run is open
    yield from bps.read(rec)
    yield from bps.save()


def _step(out: dict, name: str, plan: Generator) -> MsgGenerator[None]:
    """Run one step of the safe state; its error is recorded in ``out`` (and logged), not
    raised: the other steps must still run. An abort or stop of the RunEngine goes on."""
    try:
        done = yield from plan
        out[name] = done or "done"
    except (RunEngineControlException, FailedPause, GeneratorExit):
        raise
    except Exception as exc:  # noqa: BLE001 -- one failed step must not skip the others
        out[name] = f"failed: {type(exc).__name__}: {exc}"
        _log.error("safe state: %s failed: %s", name, exc)


def _blank(beam) -> MsgGenerator[str]:
    yield from bps.mv(beam.blanked, True)
    return "done"


def _retract_needle(microscope) -> MsgGenerator[str]:
    try:
        inserted = yield from bps.rd(microscope.manipulator.inserted)
    except MissingSubsystemError as exc:
        return f"skipped: {exc}"
    if not inserted:
        return "already retracted"
    yield from mv_raising_cause(microscope.manipulator, "retracted")
    return "done"


def _retract_gis(microscope) -> MsgGenerator[str]:
    try:
        position = yield from bps.rd(microscope.gis.insert_position)
    except MissingSubsystemError as exc:
        return f"skipped: {exc}"
    if position == "retracted":
        return "already retracted"
    yield from bps.mv(microscope.gis.insert_position, "retracted")
    return "done"


def safe_state(microscope: Readable) -> MsgGenerator[dict]:
    """Make the microscope safe to leave: blank both beams, retract the manipulator needle
    and the GIS needle. The stage stays where it is (a move could drive the sample into
    something; a person decides). Each step runs even if another fails; a subsystem the
    microscope lacks is skipped.

    Parameters
    ----------
    microscope : Readable
        The microscope device.

    Returns
    -------
    dict
        ``{step: "done" | "already retracted" | "skipped: ..." | "failed: ..."}`` for
        ``blank_electron``, ``blank_ion``, ``retract_manipulator``, ``retract_gis``.
    """
    out: dict[str, Any] = {}
    yield from _step(out, "blank_electron", _blank(microscope.electron_beam))
    yield from _step(out, "blank_ion", _blank(microscope.ion_beam))
    yield from _step(out, "retract_manipulator", _retract_needle(microscope))
    yield from _step(out, "retract_gis", _retract_gis(microscope))
    _log.warning("safe state: %s", "; ".join(f"{k} {v}" for k, v in out.items()))
    return out


def safe_state_wrapper(plan: Generator, microscope: Readable) -> MsgGenerator[Any]:
    """Run ``plan``; if it raises (a failure, or the RunEngine's abort or stop), run
    :func:`safe_state` and raise the error again (in a run: the run closes with that
    error after the microscope is safe). A plan that ends normally is left as it ends (an
    inserted needle may be its point)."""

    def make_safe(exc):
        _log.error("%s: putting the microscope in the safe state", exc or type(exc).__name__)
        yield from safe_state(microscope)

    return (yield from bpp.contingency_wrapper(plan, except_plan=make_safe))


safe_state_decorator = make_decorator(safe_state_wrapper)
