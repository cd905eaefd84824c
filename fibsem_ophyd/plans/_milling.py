"""Milling plans: mill stages with reference images before and after, recorded as documents."""

from __future__ import annotations

from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.protocols import Readable
from bluesky.utils import MsgGenerator

from ..milling import as_stages, estimate_stage_time

__all__ = ["mill_stages"]


def mill_stages(
    microscope: Readable,
    stages: list[dict[str, Any]],
    imaging_hfw: float | None = None,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[str]:
    """Mill stages with the ion beam, imaging before and after each.

    Parameters
    ----------
    microscope : Readable
        The microscope device.
    stages : list[dict]
        Milling stages in OpenFIBSEM's protocol layout (``{"name", "milling": {...},
        "pattern": {...}}``) or ``MillingStage.to_dict()``; patterns in metres, centred in the
        ion image, +y up.
    imaging_hfw : float, optional
        Field width of the reference images, m (default: each stage's milling hfw).
    md : dict, optional
        Extra run metadata (e.g. ``sample``, ``lamella``).

    Returns
    -------
    str
        The run uid. Stream "ion": per stage an image before (milling state "ready") and
        after ("done"), each event with the stage name and the estimated and
        microscope-reported milling times. The ion beam ends at its imaging current,
        blanked, also when milling fails.
    """
    objs = as_stages(stages)
    microscope.milling.check([s for s in objs if s.enabled])  # refuse before any run/beam
    imaging_current = yield from bps.rd(microscope.ion_beam.current)
    estimates = [estimate_stage_time(s, imaging_current) for s in objs]
    _md = {
        "plan_name": "mill_stages",
        "plan_args": {"stages": repr([s.name for s in objs]), "imaging_hfw": repr(imaging_hfw)},
        "milling_stages": [s.to_dict() for s in objs],
        "estimated_time": {s.name: e for s, e in zip(objs, estimates, strict=True)},
        "hints": {},
    }
    _md.update(md or {})
    fib, stage, milling = microscope.fib, microscope.stage, microscope.milling

    def image(hfw: float):
        # One stream for every ion image of the run: a detector feeds one stream per run.
        # The milling readings in the same event say whether it is before or after.
        yield from bps.mv(microscope.ion_beam.blanked, False, fib.hfw, hfw)
        yield from bps.trigger_and_read([fib, stage, milling], name="ion")

    def blank():
        yield from bps.mv(microscope.ion_beam.blanked, True)

    @bpp.stage_decorator([fib])
    @bpp.run_decorator(md=_md)
    @bpp.finalize_decorator(blank)  # the ion beam ends blanked, even on failure
    def inner():
        for st in objs:
            if not st.enabled:
                continue
            hfw = imaging_hfw or st.hfw
            yield from bps.mv(milling.state, "ready", milling.stage_name, st.name)
            yield from image(hfw)  # before: state "ready"
            yield from bps.mv(milling, st.to_dict())
            yield from image(hfw)  # after: state "done", with the milling times

    return (yield from inner())
