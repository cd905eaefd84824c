"""``measure_lamella`` measures the lamella the simulator milled, also when it is not where
the alignment left the view."""

import pytest

from fibsem_ophyd.plans import measure_lamella, mill_stages, move_to_milling_angle

from .test_batch import PROTOCOL

STAGES = PROTOCOL["milling"]["mill_rough"] + PROTOCOL["milling"]["mill_polishing"]


@pytest.fixture
def milled(session, microscope):
    """A 500 nm lamella milled rough then polished at the ion beam centre (15 deg)."""
    microscope.fib.hfw.set(80e-6).wait()
    session.RE(move_to_milling_angle(microscope, 15.0))
    point = session.backend.truth.surface_point("ion")
    session.RE(mill_stages(microscope, STAGES))
    truth = session.backend.truth.lamella(point, depth=0.75e-6)
    assert truth["bounded"]
    return truth["thickness"]


def _frames(session, uid) -> int:
    return len(session.catalog[uid]["ion"].read()["time"])


def test_measured_in_view_with_one_frame(session, microscope, milled):
    res = session.RE(measure_lamella(microscope, 0.5e-6, width=7e-6))
    m = res.plan_result
    assert m["reason"] == ""
    assert m["thickness"] == pytest.approx(milled, abs=30e-9)
    assert _frames(session, res.run_start_uids[0]) == 1


def test_found_off_centre(session, microscope, milled):
    # the view 1.4 um off the lamella (beyond the 1.25 um first searched, as after minutes of
    # drift or under a mound of ice): found further out in the same frame
    y = microscope.ion_beam.shift.get()
    microscope.ion_beam.shift.set([y[0], y[1] + 1.4e-6]).wait()
    res = session.RE(measure_lamella(microscope, 0.5e-6, width=7e-6))
    m = res.plan_result
    assert m["reason"] == "", m["reason"]
    assert m["thickness"] == pytest.approx(milled, abs=30e-9)
    assert abs(0.5 * (m["top"] + m["bottom"])) == pytest.approx(1.4e-6, abs=0.25e-6)
    assert _frames(session, res.run_start_uids[0]) == 1
    stored = session.catalog[res.run_start_uids[0]]["lamella"].read()
    assert float(stored["lamella_thickness"][0]) == pytest.approx(m["thickness"])
    # an ion field restored
    assert microscope.fib.hfw.get() == pytest.approx(80e-6)


def test_a_blank_frame_is_said_to_be_blank_not_measured(session, microscope):
    """A frame taken with the ion beam blanked (grey 64 everywhere but for the read noise):
    measure_lamella_thickness says so rather than searching the noise; a frame of the same
    view with the beam on is not blank."""
    import numpy as np

    from fibsem_ophyd.milling import BLANK_RANGE, blank_frame, measure_lamella_thickness
    from fibsem_ophyd.plans import acquire_image

    fib = microscope.fib
    microscope.ion_beam.blanked.set(True).wait()
    session.RE(acquire_image(fib, hfw=3.6e-6))
    dark = fib.last_frame.get()
    assert dark.dtype == np.uint8 and abs(float(dark.mean()) - 64) < 1 and dark.std() < 1
    reason = blank_frame(dark)
    assert reason.startswith("blank frame: uniform grey 63.9 (1st-99th percentile 63-64"), \
        reason
    assert f"full scale 255; {100 * BLANK_RANGE:g} % or less is blank" in reason
    m = measure_lamella_thickness(dark, 3.6e-6 / dark.shape[1], 0.3e-6)
    assert m["thickness"] != m["thickness"] and m["reason"] == reason
    microscope.ion_beam.blanked.set(False).wait()
    session.RE(acquire_image(fib, hfw=3.6e-6))
    assert blank_frame(fib.last_frame.get()) == ""
