"""What the plan modules share: run metadata in bluesky's shape, one-run wrapping, frames and
records.

Nothing here builds a device or calls one: a detector's microscope is its ``parent`` (as in
ophyd-async), recorders are the microscope's (``microscope.recorders``), and values are read
with ``bps.rd`` / ``bps.trigger_and_read``.
"""

from collections.abc import Mapping
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
from bluesky.protocols import HasName
from bluesky.utils import MsgGenerator

from .. import validate
from ..backend import STAGE_AXES, STAGE_UNITS

__all__ = ["beam_device", "check_md", "count", "finite", "flag", "score", "in_run",
           "microscope_of", "plan_arg", "positive", "read_frame", "record", "run_md",
           "read_limits", "check_settings", "read_stage_limits", "check_stage_position",
           "read_needle", "check_needle_target"]

#: the manipulator target that retracts the needle (``Manipulator.set("retracted")``)
RETRACTED = "retracted"


def read_limits(device) -> MsgGenerator[dict]:
    """``{setting: spec}`` of ``device`` (its read-only ``limits`` signal), for
    :func:`check_settings`."""
    return (yield from bps.rd(device.limits))


def check_settings(limits: Mapping, values: Mapping) -> dict:
    """``values`` ``{setting: value}`` validated against ``limits`` (:func:`read_limits`);
    normalised. ``ValueError`` naming the setting, the value and its limit."""
    validate.known_keys("the settings", values, tuple(limits), what="setting")
    return {k: validate.setting(limits[k]["name"], v, limits[k]) for k, v in values.items()}


def read_stage_limits(microscope) -> MsgGenerator[dict[str, tuple[float, float]]]:
    """``{axis: (low, high)}`` of the stage (each axis' ``low_limit_travel`` and
    ``high_limit_travel``; m, deg for r and t)."""
    out = {}
    for ax in STAGE_AXES:
        axis = getattr(microscope.stage, ax)
        out[ax] = (float((yield from bps.rd(axis.low_limit_travel))),
                   float((yield from bps.rd(axis.high_limit_travel))))
    return out


def check_stage_position(limits: Mapping, position: Any) -> dict[str, float]:
    """A stage position (a subset of axes; ``None``: that axis stays) within ``limits``
    (:func:`read_stage_limits`), as floats."""
    return validate.position("stage", position, limits, STAGE_UNITS, what="stage axis")


def read_needle(microscope) -> MsgGenerator[tuple[dict, dict]]:
    """The manipulator's saved positions and its axes' limits (``MissingSubsystemError`` if
    there is no manipulator), for :func:`check_needle_target`."""
    needle = microscope.manipulator
    return (yield from bps.rd(needle.positions)), (yield from bps.rd(needle.limits))


def check_needle_target(needle: tuple[dict, dict], target: Any) -> Any:
    """``"retracted"``, a saved position name, or ``{axis: m}`` within the axes' limits
    (``needle`` from :func:`read_needle`)."""
    positions, limits = needle
    return validate.target("manipulator", target, positions,
                           {ax: spec["limits"] for ax, spec in limits.items()},
                           {ax: spec["units"] for ax, spec in limits.items()},
                           also=(RETRACTED,), what="manipulator axis")


def plan_arg(value: Any) -> Any:
    """A plan argument as the start document keeps it: devices as their ``repr`` (as
    bluesky's plans do), numpy values as plain numbers/lists, everything else unchanged."""
    if isinstance(value, HasName) and not isinstance(value, (str, bytes)):
        return repr(value)
    if isinstance(value, (list, tuple)):
        return [plan_arg(v) for v in value]
    if isinstance(value, Mapping):
        return {k: plan_arg(v) for k, v in value.items()}
    if isinstance(value, (np.ndarray, np.generic)):
        return value.tolist()
    return value


def run_md(plan_name: str, plan_args: dict, md: dict | None, *, detectors=None,
           hints: dict | None = None, **extra) -> dict:
    """Start-document metadata in bluesky's shape.

    ``plan_name``, ``plan_args`` (through :func:`plan_arg`), ``detectors`` (names, if given)
    and ``extra`` keys, then the caller's ``md`` on top (``_md.update(md or {})``), then each
    of the plan's ``hints`` only where the caller gave none (``setdefault``).
    """
    md = check_md(md)
    _md: dict = {"plan_name": plan_name,
                 "plan_args": {k: plan_arg(v) for k, v in plan_args.items()}}
    if detectors is not None:
        _md["detectors"] = [d.name for d in detectors]
    _md.update(extra)
    _md["hints"] = {}
    _md.update(md or {})
    _md["hints"] = dict(_md.get("hints") or {})  # never write into the caller's dict
    for key, value in (hints or {}).items():
        _md["hints"].setdefault(key, value)
    return _md


def in_run(plan, md: dict) -> MsgGenerator[tuple[str, Any]]:
    """Run ``plan`` inside one run; return (run uid, what ``plan`` returned)."""
    out: dict = {}

    def capture():
        out["value"] = yield from plan

    uid = yield from bpp.run_wrapper(capture(), md=md)
    return uid, out.get("value")


def beam_device(microscope, beam: str):
    """The microscope's beam device for ``beam`` ("electron" or "ion")."""
    return getattr(microscope, f"{beam}_beam")


def microscope_of(detector):
    """The microscope a detector belongs to (its parent device)."""
    return detector.parent


def read_frame(detector, stage, extra=()) -> MsgGenerator[tuple[np.ndarray, float]]:
    """Trigger and read ``detector`` (stream named after its beam; with ``extra`` readables,
    for runs whose stream of that name holds more); return (frame, pixel m)."""
    reading = yield from bps.trigger_and_read([detector, stage, *extra], name=detector.beam)
    image = yield from bps.rd(detector.last_frame, default_value=None)
    key = f"{detector.name}_pixel_size"
    if reading and key in reading:
        pixel = float(reading[key]["value"])
    else:  # not a live RunEngine (e.g. plan inspection)
        res = yield from bps.rd(detector.resolution)
        pixel = float((yield from bps.rd(detector.hfw))) / float(res[0])
    return image, pixel


def record(recorder, stream: str, **values) -> MsgGenerator[dict]:
    """Set ``recorder``'s fields to ``values`` and read it as one event of ``stream``."""
    args = []
    for key, value in values.items():
        args += [getattr(recorder, key), value]
    yield from bps.mv(*args)
    return (yield from bps.trigger_and_read([recorder], name=stream))


def count(name: str, value: Any, *, minimum: int = 1) -> int:
    """``value`` as an int; ``ValueError`` naming ``name`` unless an integer in
    [``minimum``, ``validate.MAX_COUNT``] (``2.5`` and ``True`` are refused, not truncated)."""
    return validate.count(name, value, minimum=minimum)


def score(name: str, value: Any) -> float:
    """A threshold on a match score, in [0, 1]. NaN is refused: no score is below NaN, so a
    NaN ``min_score`` would let every match, however bad, move the beam or stage."""
    return validate.fraction(name, value, rule="a score in [0, 1]")


def check_md(md: Any) -> dict:
    """Run metadata: a mapping or None (``{}``); a string (a sample name given where the
    metadata goes) is refused by name."""
    return validate.mapping("md", md, none=True)


def flag(name: str, value: Any) -> bool:
    """A switch: True or False only (``bool("no")`` is True)."""
    return validate.boolean(name, value)


def finite(name: str, value: Any) -> float:
    """``value`` as a float; ``ValueError`` naming ``name`` unless a finite number (m)."""
    return validate.real(name, value, rule="a finite number in metres")


def positive(name: str, value: Any) -> float:
    """``value`` as a float; ``ValueError`` naming ``name`` unless positive and finite."""
    return validate.positive(name, value, rule="a positive finite number")
