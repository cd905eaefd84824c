"""Manipulator plans through the device on the simulator: insert, offsets, corrected moves,
what a run records, and bad input refused before the needle moves."""

import math

import bluesky.plan_stubs as bps
import numpy as np
import pytest
from bluesky.plans import count

from fibsem_ophyd.backend import BackendError
from fibsem_ophyd.plans import (
    insert_manipulator,
    move_manipulator_corrected,
    move_manipulator_to_position_offset,
    read_manipulator_position,
    retract_manipulator,
)


def _lower_stage(session, drop=60e-6):
    sim = session.backend
    sim.move_stage_absolute({"z": sim.get_stage_position()["z"] - drop})


def test_insert_offset_corrected_move_retract(session, microscope):
    sim = session.backend
    _lower_stage(session)
    assert session.RE(insert_manipulator(microscope)).plan_result == pytest.approx(
        {"x": 0.0, "y": 0.0, "z": 180e-6})
    assert microscope.manipulator.inserted.get() is True
    # 10 um above EUCENTRIC, then 4 um down in the ion image: along z by 4 / sin 52 um
    session.RE(move_manipulator_to_position_offset(microscope, {"z": 10e-6}, "EUCENTRIC"))
    session.RE(move_manipulator_corrected(microscope, dy=-4e-6, beam="ion"))
    pos = sim.get_manipulator_position()
    assert pos["x"] == pytest.approx(0.0, abs=1e-12)
    assert pos["z"] == pytest.approx(10e-6 - 4e-6 / math.sin(math.radians(52)))
    # an electron-corrected move from a scan-rotated (180 deg) view flips its direction
    session.RE(bps.mv(microscope.electron_beam.scan_rotation, 180.0))
    session.RE(move_manipulator_corrected(microscope, dx=2e-6, dy=0.0, beam="electron"))
    assert sim.get_manipulator_position()["x"] == pytest.approx(-2e-6)
    session.RE(retract_manipulator(microscope))
    assert microscope.manipulator.inserted.get() is False


def test_a_run_records_the_needle(session, microscope):
    _lower_stage(session)
    session.RE(insert_manipulator(microscope, "PARK"))
    uid = session.RE(count([microscope.manipulator])).plan_result
    table = session.catalog[uid]["primary"].read()
    assert float(np.asarray(table["microscope_manipulator_z"])[0]) == pytest.approx(180e-6)
    assert bool(np.asarray(table["microscope_manipulator_inserted"])[0]) is True
    desc = microscope.manipulator.describe()["microscope_manipulator_x"]
    assert desc["units"] == "m" and desc["limits"]["control"] == {"low": -5e-3, "high": 5e-3}


@pytest.mark.parametrize("plan, match", [
    (lambda m: insert_manipulator(m, "HOME"), "unknown manipulator position 'HOME'"),
    (lambda m: move_manipulator_corrected(m, dx=float("nan")), "dx must be a finite number"),
    (lambda m: move_manipulator_corrected(m, dy=1e-6, beam="optical"), "optical"),
    (lambda m: move_manipulator_corrected(m, dx=0.02), "outside its limits"),
    (lambda m: move_manipulator_to_position_offset(m, {"q": 1e-6}), "unknown manipulator axis"),
    (lambda m: move_manipulator_to_position_offset(m, {"z": 1e-6}, "HOME"), "HOME"),
])
def test_bad_manipulator_input_refused_before_the_needle_moves(session, microscope, plan,
                                                               match):
    sim = session.backend
    _lower_stage(session)
    session.RE(insert_manipulator(microscope))
    t0, pos = sim.time(), sim.get_manipulator_position()
    with pytest.raises(ValueError, match=match):
        session.RE(plan(microscope))
    assert sim.time() == t0 and sim.get_manipulator_position() == pos


def test_moving_a_retracted_needle_or_into_the_sample_fails(session, microscope):
    sim = session.backend
    with pytest.raises(BackendError, match="retracted"):
        session.RE(move_manipulator_corrected(microscope, dy=-1e-6, beam="ion"))
    _lower_stage(session, drop=20e-6)
    session.RE(insert_manipulator(microscope))
    pos = session.RE(read_manipulator_position(microscope)).plan_result
    with pytest.raises(BackendError, match="inside the sample"):
        session.RE(move_manipulator_corrected(microscope, dy=-250e-6, beam="ion"))
    assert sim.get_manipulator_position() == pos
