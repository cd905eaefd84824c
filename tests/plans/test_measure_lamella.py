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


POLISH_300 = {**PROTOCOL["milling"]["mill_polishing"][0]}
POLISH_300["pattern"] = {**POLISH_300["pattern"], "spacing": 0.3e-6}


def test_a_few_um_field_beside_many_milled_trenches_shows_the_lamella(session, microscope):
    """The overnight batch's polish measurement: a 3.6 um ion field (12 x the 300 nm gap) at
    15 deg, with the trenches of many lamellae within the heights the simulator bounds the
    footprint by (it adds up the depth of every milling that reaches it: -120..+29 um here,
    -136..+29 um at the 8th site of ``bench_overnight.py``). The parallax margins of such a
    field reach only +-26 um of height from their middle, which lay at -45 um, below the
    lamella: every frame was uniform grey 64 (no surface point reached the frame), and the
    reading came from the 3x wider frame (244 nm for a 303 nm lamella here). Now the margins
    are kept on the surface the frame shows: the first frame shows the lamella and it is
    measured there."""
    from fibsem_ophyd.milling import blank_frame
    from fibsem_ophyd.sim.scene import HeightPatch

    scene = session.backend.scene
    microscope.fib.hfw.set(80e-6).wait()
    session.RE(move_to_milling_angle(microscope, 15.0))
    point = session.backend.truth.surface_point("ion")
    before = len(scene.patches)
    session.RE(mill_stages(microscope, [PROTOCOL["milling"]["mill_rough"][0], POLISH_300]))
    milled = [p for p in scene.patches[before:] if p.layer is None]
    assert milled
    truth = session.backend.truth.lamella(point, depth=0.75e-6)
    assert truth["bounded"] and truth["thickness"] == pytest.approx(300e-9, abs=20e-9)
    # the same trenches milled for 16 lamellae in a row beside it, 14 um apart (none
    # overlaps this one's: its heights stay as milled)
    for k in range(16):
        dx = 14e-6 * (k // 2 + 1) * (1 if k % 2 else -1)
        for p in milled:
            scene.add_patch(HeightPatch(x0=p.x0 + dx, y0=p.y0, spacing=p.spacing, dh=p.dh,
                                        material=p.material, removed=p.removed))
    assert session.backend.truth.lamella(point, depth=0.75e-6)["thickness"] == \
        pytest.approx(truth["thickness"], abs=1e-12)
    lo, hi = session.backend.scene.height_bounds((-150e-6, 150e-6, -150e-6, 150e-6))
    assert hi - lo > 100e-6  # what the frame's margins cannot cover

    res = session.RE(measure_lamella(microscope, 0.3e-6, width=7e-6))
    m = res.plan_result
    assert m["reason"] == "", m["reason"]
    run = session.catalog[res.run_start_uids[0]]
    ion = run["ion"].read()
    assert _frames(session, res.run_start_uids[0]) == 1  # measured on the 3.6 um frame
    assert float(ion["microscope_fib_hfw"][0]) == pytest.approx(3.6e-6)
    frame = microscope.fib.last_frame.get()
    assert blank_frame(frame) == "" and frame.std() > 20, (frame.mean(), frame.std())
    assert m["thickness"] == pytest.approx(truth["thickness"], abs=30e-9)


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
