"""Run metadata in bluesky's shape: the caller's hints kept, plan arguments as given (devices
as their repr), and every plan's run named after that plan."""

import numpy as np
import pytest

from fibsem_ophyd.plans import (
    acquire_image,
    acquire_series,
    correct_drift,
    eucentric_alignment,
    find_coincidence,
    multi_step_alignment,
)


def _start(plan) -> dict:
    """The start-document metadata a plan opens its run with (read from its messages; the
    plan's reads before the run, e.g. of limits, are answered by the devices)."""
    msg = next(plan)
    while msg.command != "open_run":
        msg = plan.send(msg.obj.read() if msg.command == "read" else None)
    plan.close()
    return msg.kwargs


def test_stored_start_document_keeps_the_callers_hints_and_plain_arguments(session,
                                                                            microscope):
    uid = session.RE(acquire_series(microscope.sem, num=2, hfw=80e-6,
                                    md={"hints": {"gridding": "rectilinear"}})).plan_result
    start = session.catalog[uid].metadata["start"]
    # the plan's default dimensions are added beside the caller's hints, not instead of them
    assert start["hints"] == {"gridding": "rectilinear",
                              "dimensions": [[["time"], "primary"]]}
    args = start["plan_args"]
    assert (args["num"], args["delay"], args["hfw"]) == (2, 0.0, 80e-6)
    assert isinstance(args["num"], int)
    assert args["detector"] == repr(microscope.sem) and "microscope_sem" in args["detector"]

    mine = [[["stage_x"], "primary"]]
    uid = session.RE(acquire_image(microscope.sem, md={"hints": {"dimensions": mine}})
                     ).plan_result
    assert session.catalog[uid].metadata["start"]["hints"] == {"dimensions": mine}


def test_wrapping_plans_record_their_own_name_and_arguments(microscope):
    ref = np.zeros((4, 4), np.uint8)
    start = _start(correct_drift(microscope.sem, ref, max_step=4e-6))
    assert (start["plan_name"], start["alignment_kind"]) == ("correct_drift", "drift")
    assert start["plan_args"]["max_step"] == 4e-6

    start = _start(multi_step_alignment(microscope.sem, ref, steps=2))
    assert start["plan_name"] == "multi_step_alignment"
    assert (start["plan_args"]["steps"], start["alignment_kind"]) == (2, "multi_step")
    assert "max_iterations" not in start["plan_args"]

    for plan in (find_coincidence, eucentric_alignment):
        start = _start(plan(microscope, hfw_fine=40e-6, select=False))
        assert start["plan_name"] == plan.__name__
        assert (start["plan_args"]["hfw_fine"], start["plan_args"]["select"]) == (40e-6, False)
        assert start["plan_args"]["microscope"] == repr(microscope)


def test_caller_metadata_wins_and_is_not_modified(microscope):
    hints = {"gridding": "rectilinear"}
    start = _start(acquire_image(microscope.sem, md={"hints": hints, "sample": "grid-7"}))
    assert start["sample"] == "grid-7"
    assert start["hints"] == {"gridding": "rectilinear",
                              "dimensions": [(["time"], "primary")]}
    assert hints == {"gridding": "rectilinear"}


@pytest.mark.parametrize("md", [None, {}])
def test_default_hints_without_caller_metadata(microscope, md):
    start = _start(acquire_image(microscope.sem, md=md))
    assert start["hints"] == {"dimensions": [(["time"], "primary")]}


def test_plan_args_keep_plain_values_and_give_devices_as_repr(microscope):
    args = _start(acquire_series(microscope.sem, num=2, hfw=80e-6))["plan_args"]
    assert args == {"detector": repr(microscope.sem), "num": 2, "delay": 0.0, "hfw": 80e-6}
    assert type(args["num"]) is int
