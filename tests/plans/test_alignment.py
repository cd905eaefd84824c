"""Alignment plans against the simulator's ground truth: beam-shift alignment, drift
correction, refusal on a bad match, and coincidence from a 30 um height error."""

import math

import numpy as np
import pytest

from fibsem_ophyd import setup_session
from fibsem_ophyd.alignment import RegistrationError
from fibsem_ophyd.plans import (
    AlignmentError,
    acquire_reference,
    align_beam_shift,
    correct_drift,
    find_coincidence,
    stable_move,
)

SMALL = {"electron": {"resolution": [384, 256]}, "ion": {"resolution": [384, 256]}}


def _centre_point_error(sim, point, beam):
    v = sim.truth.view(beam)
    col, row = sim.truth.project(point, beam)
    return math.hypot(col - (v.width - 1) / 2, row - (v.height - 1) / 2) * v.pixel


def test_last_frame_signal_holds_the_pixels(session, microscope):
    frame = session.RE(acquire_reference(microscope.sem)).plan_result
    assert isinstance(frame, np.ndarray) and frame.shape == (256, 384)
    assert "microscope_sem_last_frame" not in microscope.sem.describe()


def test_align_beam_shift_restores_the_view(session, microscope):
    sim = session.backend
    RE = session.RE
    ref = RE(acquire_reference(microscope.sem)).plan_result
    point = sim.truth.surface_point("electron")
    RE(stable_move(microscope, 3e-6, -2e-6, "electron"))  # the view moved by (3, -2) um
    assert _centre_point_error(sim, point, "electron") == pytest.approx(math.hypot(3, 2) * 1e-6,
                                                                         rel=0.02)
    z0 = microscope.stage.z.position
    r = RE(align_beam_shift(microscope.sem, ref))
    res = r.plan_result
    assert res["converged"]
    # ground truth: the reference point is back at the image centre, by beam shift only
    assert _centre_point_error(sim, point, "electron") < 0.1e-6
    shift = microscope.electron_beam.shift.get()
    assert shift == pytest.approx([3e-6, -2e-6], abs=0.1e-6)
    assert microscope.stage.z.position == z0
    # the measurements are event data of the run
    run = session.catalog[res["uid"]]
    al = run["alignment"].read()
    assert list(al["alignment_action"].values)[0] == "beam_shift"
    assert float(al["alignment_dx"][0]) == pytest.approx(3e-6, abs=0.1e-6)
    assert float(al["alignment_dy"][0]) == pytest.approx(-2e-6, abs=0.1e-6)
    assert (al["alignment_score"].values > 0.5).all()


def test_align_falls_back_to_the_stage_beyond_the_shift_range(session, microscope):
    sim = session.backend
    RE = session.RE
    ref = RE(acquire_reference(microscope.sem)).plan_result
    point = sim.truth.surface_point("electron")
    microscope.electron_beam.shift.put([49e-6, 0.0])  # near the +-50 um limit
    RE(stable_move(microscope, 0.0, 2e-6, "electron"))
    RE(stable_move(microscope, 2e-6, 0.0, "electron"))
    x0 = microscope.stage.x.position
    # the shift moves content by -49 um; the stage must take over for the +x correction
    ref2 = ref  # (the reference was taken with no shift; the view is now far off)
    microscope.electron_beam.shift.put([0.0, 0.0])
    res = RE(align_beam_shift(microscope.sem, ref2, max_step=10e-6)).plan_result
    assert res["converged"]
    assert _centre_point_error(sim, point, "electron") < 0.1e-6
    assert microscope.stage.x.position == x0  # small: done by beam shift
    microscope.electron_beam.shift.put([49e-6, 0.0])
    RE(stable_move(microscope, 49e-6 + 2e-6, 0.0, "electron"))  # content at +2 um net
    res = RE(align_beam_shift(microscope.sem, ref, max_step=10e-6)).plan_result
    assert res["history"][0]["action"] == "stage"
    assert _centre_point_error(sim, point, "electron") < 0.15e-6


def test_bad_match_refuses_to_move(session, microscope):
    RE = session.RE
    rng = np.random.default_rng(0)
    unrelated = rng.integers(0, 255, (256, 384)).astype(np.uint8)
    pos = {ax: getattr(microscope.stage, ax).position for ax in "xyz"}
    shift = microscope.electron_beam.shift.get()
    with pytest.raises(AlignmentError, match="score"):
        RE(align_beam_shift(microscope.sem, unrelated))
    assert {ax: getattr(microscope.stage, ax).position for ax in "xyz"} == pos
    assert microscope.electron_beam.shift.get() == shift
    # the refusal is recorded in the (failed) run
    run = session.catalog[session.catalog.keys()[-1]] if hasattr(session.catalog, "keys") \
        else None
    if run is not None:
        al = run["alignment"].read()
        assert list(al["alignment_action"].values) == ["refused"]


def test_step_limit_refuses_to_move(session, microscope):
    RE = session.RE
    ref = RE(acquire_reference(microscope.sem)).plan_result
    RE(stable_move(microscope, 6e-6, 0.0, "electron"))
    x = microscope.stage.x.position
    with pytest.raises(AlignmentError, match="max_step"):
        RE(correct_drift(microscope.sem, ref))  # drift steps are limited to 5 um
    assert microscope.stage.x.position == x
    assert microscope.electron_beam.shift.get() == [0.0, 0.0]


def test_reference_of_another_shape_or_constant_is_a_clear_error(session, microscope):
    RE = session.RE
    with pytest.raises(RegistrationError, match="same shape"):
        RE(align_beam_shift(microscope.sem, np.ones((100, 100)) * np.arange(100)))
    with pytest.raises(RegistrationError, match="constant"):
        RE(align_beam_shift(microscope.sem, np.zeros((256, 384))))
    with pytest.raises(ValueError, match="2-D"):
        RE(align_beam_shift(microscope.sem, np.zeros(10)))


def test_reference_by_run_uid_or_the_detectors_last_reference(session, microscope):
    """How a queue-server item names its reference: by the uid of the run that took it, or
    not at all (the detector keeps the last acquire_reference frame)."""
    sim, RE = session.backend, session.RE
    point = sim.truth.surface_point("electron")
    first = RE(acquire_reference(microscope.sem))
    ref_uid = first.run_start_uids[0]
    # the detector's reference is that frame, and the stored run holds the same pixels
    np.testing.assert_array_equal(microscope.sem.reference.get(), first.plan_result)
    RE(acquire_reference(microscope.fib))  # another detector's reference changes nothing here
    RE(stable_move(microscope, -2e-6, 1.5e-6, "electron"))
    res = RE(align_beam_shift(microscope.sem, ref_uid)).plan_result
    assert res["converged"]
    assert _centre_point_error(sim, point, "electron") < 0.1e-6
    # by default: the detector's current reference
    microscope.electron_beam.shift.set([0.0, 0.0]).wait()
    RE(stable_move(microscope, 1e-6, 1e-6, "electron"))
    RE(acquire_reference(microscope.sem))
    RE(stable_move(microscope, 2e-6, 0.0, "electron"))
    res = RE(align_beam_shift(microscope.sem)).plan_result
    assert res["converged"]
    assert res["history"][0]["dx"] == pytest.approx(2e-6, abs=0.1e-6)


def test_bad_reference_names_are_clear_errors_before_any_move(session, microscope):
    RE = session.RE
    pos = microscope.stage.x.position
    with pytest.raises(ValueError, match="has no reference yet"):
        RE(align_beam_shift(microscope.fib))
    with pytest.raises(ValueError, match="no run with uid 'nope'"):
        RE(align_beam_shift(microscope.sem, "nope"))
    uid = RE(acquire_reference(microscope.fib)).run_start_uids[0]
    with pytest.raises(ValueError, match="holds no 'microscope_sem_image' frame"):
        RE(align_beam_shift(microscope.sem, uid))
    with pytest.raises(ValueError, match="NaN"):
        microscope.sem.reference.set(np.full((4, 4), np.nan))
    assert microscope.stage.x.position == pos
    assert microscope.electron_beam.shift.get() == [0.0, 0.0]


def test_correct_drift_between_stages(tmp_path):
    cfg = {**SMALL, "sim": {"drift": {"velocity": [2e-9, -1e-9, 0.0], "settle_amplitude": 0.0}}}
    s = setup_session(config=cfg, data_dir=tmp_path / "d", seed=3)
    try:
        sim, scope = s.backend, s.microscope
        ref = s.RE(acquire_reference(scope.sem)).plan_result
        point = sim.truth.surface_point("electron")
        sim.clock.advance(600.0)  # ten minutes of milling elsewhere: 1.3 um drift
        before = _centre_point_error(sim, point, "electron")
        assert before > 1e-6
        res = s.RE(correct_drift(scope.sem, ref)).plan_result
        assert _centre_point_error(sim, point, "electron") < 0.15e-6
        assert res["history"][0]["action"] == "beam_shift"
    finally:
        s.close()


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_find_coincidence_from_30um_height_error(tmp_path, seed):
    cfg = {**SMALL, "sim": {"sample_height_offset": 30e-6}}
    s = setup_session(config=cfg, data_dir=tmp_path / "d", seed=seed)
    try:
        sim = s.backend
        assert abs(sim.truth.eucentric_z() - s.microscope.stage.z.position) > 20e-6
        res = s.RE(find_coincidence(s.microscope)).plan_result
        assert res["converged"] and res["iterations"] <= 3
        # ground truth: the stage is at the eucentric height of the feature on the e-beam axis
        assert abs(sim.truth.eucentric_z() - s.microscope.stage.z.position) <= 0.3e-6
        point = sim.truth.surface_point("electron")
        assert _centre_point_error(sim, point, "ion") <= 0.3e-6
        assert _centre_point_error(sim, point, "electron") <= 0.3e-6
        # every measurement is in the run, with the images it was made on
        run = s.catalog[res["uid"]]
        assert {"alignment", "electron", "ion"} <= set(run)
        al = run["alignment"].read()
        assert "vertical_move" in list(al["alignment_action"].values)
        assert len(al["alignment_dy"]) == len(res["history"])
        # image settings are restored
        assert s.microscope.fib.hfw.get() == pytest.approx(150e-6)
    finally:
        s.close()


def test_align_stage_variants_restore_the_position(session, microscope):
    """Stage-based alignment: stable moves in the SEM view, vertical moves in the ion view."""
    from bluesky import plan_stubs as bps

    from fibsem_ophyd.plans import acquire_reference, align_stage, multi_step_alignment
    from fibsem_ophyd.plans import vertical_move as vmove

    x0 = microscope.stage.x.position
    ref = session.RE(acquire_reference(microscope.sem, hfw=100e-6)).plan_result
    session.RE(bps.mv(microscope.stage, {"x": x0 + 2.5e-6}))
    res = session.RE(align_stage(microscope.sem, ref, "stage")).plan_result
    assert res["converged"]
    assert microscope.stage.x.position == pytest.approx(x0, abs=0.1e-6)
    assert microscope.electron_beam.shift.get() == pytest.approx([0.0, 0.0])

    z0 = microscope.stage.z.position
    ref_i = session.RE(acquire_reference(microscope.fib, hfw=100e-6)).plan_result
    session.RE(vmove(microscope, 3e-6))  # lose coincidence by 3 um in the ion view
    res = session.RE(align_stage(microscope.fib, ref_i, "stage_vertical")).plan_result
    assert res["converged"]
    assert microscope.stage.z.position == pytest.approx(z0, abs=0.1e-6)

    with pytest.raises(ValueError, match="ion view only"):
        session.RE(align_stage(microscope.sem, ref, "stage_vertical"))
    res = session.RE(multi_step_alignment(microscope.sem, ref, steps=2)).plan_result
    assert res["iterations"] <= 2


def test_excluded_regions_follow_the_content_and_cover_a_cut_floor():
    """The exclusion mask moved with content shifted by (dx, dy) px (+y up) excludes the
    region where it now is; a milled box is extended in y by the cut's depth (its floor shows
    beyond the outline at glancing incidence); the registration band-pass widens with the
    frame so it spans the same fraction of the field."""
    from fibsem_ophyd.alignment.masks import alignment_bandpass, shifted_mask
    from fibsem_ophyd.milling import load_protocol
    from fibsem_ophyd.plans._milling import EXCLUSION_MARGIN, milled_boxes

    mask = np.ones((60, 80), np.float32)
    mask[20:30, 30:40] = 0.0
    moved = shifted_mask(mask, 5.0, 3.0)  # 5 px right, 3 px up
    assert np.array_equal(np.argwhere(moved < 0.5).min(axis=0), [17, 35])
    assert np.array_equal(np.argwhere(moved < 0.5).max(axis=0), [26, 44])
    assert moved[0, 0] == 1.0 and moved[-1, -1] == 1.0

    (stage,) = load_protocol({"milling": {"box": {
        "name": "box", "milling": {"milling_current": 1e-9, "hfw": 80e-6, "material": "ice"},
        "pattern": {"name": "Rectangle", "width": 4e-6, "height": 2e-6, "depth": 3e-6}}}})["box"]
    (box,) = milled_boxes(stage)
    m = EXCLUSION_MARGIN
    assert box == pytest.approx([-2e-6 - m, -1e-6 - m - 3e-6, 2e-6 + m, 1e-6 + m + 3e-6])

    assert alignment_bandpass((256, 384)) == alignment_bandpass((512, 768)) == (2.0, 32.0)
    assert alignment_bandpass((1024, 1536)) == (4.0, 64.0)
