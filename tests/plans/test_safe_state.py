"""safe_state: beams blanked, needle and GIS retracted, the stage left alone; the needle and
deposition plans end in it when they fail, and a refusal moves nothing."""

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import pytest

from fibsem_ophyd import setup_session
from fibsem_ophyd.backend import BackendError
from fibsem_ophyd.plans import (
    insert_manipulator,
    move_manipulator_to_position_offset,
    safe_state,
)

from ..conftest import SMALL


def _blanked(microscope):
    return (microscope.electron_beam.blanked.get(), microscope.ion_beam.blanked.get())


def test_a_failed_needle_step_ends_with_needle_and_gis_out_and_beams_blanked(session,
                                                                           microscope):
    stage_before = microscope.stage.position
    assert _blanked(microscope) == (False, False)

    @bpp.run_decorator(md={"plan_name": "lift_out_step"})
    def lift_out_step():
        yield from bps.mv(microscope.gis.insert_position, "cryo")
        yield from insert_manipulator(microscope, "PARK")
        # 200 um below PARK (~180 um above the coincidence point): the simulator refuses,
        # the tip would be in the sample (a real fault mid-way, with both needles in)
        yield from move_manipulator_to_position_offset(microscope, {"z": -200e-6}, "PARK")

    with pytest.raises(BackendError, match="inside the sample"):
        session.RE(lift_out_step())
    run = session.catalog.values().last()
    assert run.metadata["start"]["plan_name"] == "lift_out_step"
    assert run.metadata["stop"]["exit_status"] == "fail"
    assert "inside the sample" in run.metadata["stop"]["reason"]
    assert microscope.manipulator.inserted.get() is False
    assert microscope.gis.insert_position.get() == "retracted"
    assert _blanked(microscope) == (True, True)
    assert microscope.stage.position == stage_before  # the stage was left alone


def test_a_refused_needle_move_moves_nothing(session, microscope):
    session.RE(insert_manipulator(microscope, "PARK"))
    tip = {ax: getattr(microscope.manipulator, ax).get() for ax in "xyz"}
    with pytest.raises(ValueError, match="'NOWHERE'"):
        session.RE(move_manipulator_to_position_offset(microscope, {"z": 1e-6}, "NOWHERE"))
    assert microscope.manipulator.inserted.get() is True  # no safe state for bad input
    assert {ax: getattr(microscope.manipulator, ax).get() for ax in "xyz"} == tip
    assert _blanked(microscope) == (False, False)


def test_safe_state_alone_reports_each_step_and_skips_what_is_missing(tmp_path):
    cfg = {**SMALL, "manipulator": {"enabled": False}}
    s = setup_session(config=cfg, data_dir=tmp_path / "data", seed=1)
    try:
        scope = s.microscope
        scope.gis.insert_position.put("cryo")
        out = s.RE(safe_state(scope)).plan_result
        assert out["blank_electron"] == out["blank_ion"] == "done"
        assert out["retract_gis"] == "done"
        assert out["retract_manipulator"].startswith("skipped: ")
        assert "manipulator" in out["retract_manipulator"]
        assert _blanked(scope) == (True, True)
        assert scope.gis.insert_position.get() == "retracted"
        again = s.RE(safe_state(scope)).plan_result  # safe already: reads, changes nothing
        assert again["retract_gis"] == "already retracted"
    finally:
        s.close()
