"""Microscope state snapshot and restore (OpenFIBSEM's ``MicroscopeState``)."""


import bluesky.plan_stubs as bps
from bluesky.protocols import Readable
from bluesky.utils import MsgGenerator

from .. import validate
from ..backend import DETECTOR_KEYS, STATE_BEAM_KEYS, STATE_SECTIONS
from ._common import check_settings, check_stage_position, read_limits, read_stage_limits
from ._movement import safe_absolute_move

__all__ = ["snapshot_state", "restore_state", "STATE_BEAM_KEYS", "STATE_DETECTOR_KEYS"]

#: detector settings in a state (OpenFIBSEM FibsemDetectorSettings)
STATE_DETECTOR_KEYS = DETECTOR_KEYS
_SECTIONS = tuple(s for s in STATE_SECTIONS if s != "stage")


def _parts(microscope):
    return {
        "electron_beam": (microscope.electron_beam, STATE_BEAM_KEYS),
        "ion_beam": (microscope.ion_beam, STATE_BEAM_KEYS),
        "electron_detector": (microscope.sem, STATE_DETECTOR_KEYS),
        "ion_detector": (microscope.fib, STATE_DETECTOR_KEYS),
    }


def snapshot_state(microscope: Readable) -> MsgGenerator[dict]:
    """Read the stage, both beams and both detectors.

    Parameters
    ----------
    microscope : Readable
        The microscope device.

    Returns
    -------
    dict
        ``{"stage": {x, y, z (m), r, t (deg)}, "electron_beam": {...}, "ion_beam": {...},
        "electron_detector": {...}, "ion_detector": {...}}``.
    """
    # one read, one builder: the state the TIFF metadata stores
    state = yield from bps.rd(microscope.state)
    return {section: state[section] for section in STATE_SECTIONS}


def restore_state(microscope: Readable, state: dict) -> MsgGenerator[dict]:
    """Restore a state from :func:`snapshot_state` (any subset of its sections and keys).

    Every value is validated before anything is written; the stage moves last, safely.

    Parameters
    ----------
    microscope : Readable
        The microscope device.
    state : dict
        ``{"stage": {...}, "electron_beam": {...}, "ion_beam": {...},
        "electron_detector": {...}, "ion_detector": {...}}`` (any subset), units as in
        :func:`snapshot_state`.
    """
    if not isinstance(state, dict):
        raise ValueError(f"state must be a dict from snapshot_state, got "
                         f"{type(state).__name__} {validate.show(state)}")
    unknown = set(state) - set(_SECTIONS) - {"stage", "timestamp"}
    if unknown:
        raise ValueError(f"unknown state section(s) {sorted(unknown)}")
    parts = _parts(microscope)
    writes = []
    for section in _SECTIONS:
        values = state.get(section) or {}
        device, keys = parts[section]
        bad = set(values) - set(keys)
        if bad:
            raise ValueError(f"unknown key(s) {sorted(bad)} in state section {section!r}")
        checked = check_settings((yield from read_limits(device)), values)
        writes += [(getattr(device, key), value) for key, value in checked.items()]
    if state.get("stage"):
        check_stage_position((yield from read_stage_limits(microscope)), state["stage"])
    for sig, value in writes:
        yield from bps.abs_set(sig, value, wait=True)
    if state.get("stage"):
        yield from safe_absolute_move(microscope, state["stage"])
    return state
