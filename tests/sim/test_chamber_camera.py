"""The simulated chamber camera draws the stage, the needle and the GIS nozzle where the state
puts them (a view along the tilt axis, 50 um per pixel)."""

import numpy as np
import pytest

from fibsem_ophyd.sim import SimulatedMicroscope
from fibsem_ophyd.sim.chamber_camera import LEVELS, PIXEL, SHAPE, chamber_to_pixel


def _centroid(img, level):
    rows, cols = np.nonzero(img == level)
    return rows.mean(), cols.mean()


def test_the_stage_moves_in_the_image_as_the_stage_moves():
    sim = SimulatedMicroscope()
    sim.move_stage_absolute({"t": 0.0})
    img0 = sim.acquire_chamber_image()
    assert img0.shape == SHAPE and img0.dtype == np.uint8
    r0, c0 = _centroid(img0, LEVELS["shuttle"])
    pos = sim.get_stage_position()
    sim.move_stage_absolute({"y": pos["y"] + 1e-3, "z": pos["z"] + 1e-3})
    r1, c1 = _centroid(sim.acquire_chamber_image(), LEVELS["shuttle"])
    assert c1 - c0 == pytest.approx(1e-3 / PIXEL, abs=0.5)   # 20 px right
    assert r1 - r0 == pytest.approx(-1e-3 / PIXEL, abs=0.5)  # 20 px up


def test_needle_and_gis_appear_when_inserted():
    sim = SimulatedMicroscope()
    sim.move_stage_absolute({"t": 0.0})
    img = sim.acquire_chamber_image()
    assert not np.any(img == LEVELS["needle"]) and not np.any(img == LEVELS["gis"])
    sim.insert_manipulator("PARK")
    img = sim.acquire_chamber_image()
    rows, cols = np.nonzero(img == LEVELS["needle"])
    tip = sim.get_manipulator_position()
    c, r = chamber_to_pixel(tip["y"], tip["z"])
    assert rows.max() + 0.5 == pytest.approx(r, abs=1.0)  # ends at its tip (pixel centres)
    assert cols.mean() == pytest.approx(c, abs=2.0)
    sim.set("gis_position", "cryo")
    assert np.any(sim.acquire_chamber_image() == LEVELS["gis"])
