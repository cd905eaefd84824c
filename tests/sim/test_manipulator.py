"""The simulated needle seen by both beams: where the tip appears in the images (measured
from the images) after corrected moves, contact with the sample, refused moves."""

import math

import numpy as np
import pytest

from fibsem_ophyd import geometry as G
from fibsem_ophyd.alignment import register
from fibsem_ophyd.backend import BackendError
from fibsem_ophyd.sim.manipulator import INSERT_TIME, MAX_PENETRATION
from fibsem_ophyd.sim.optics import Optics
from fibsem_ophyd.sim.shading import Shading

from ._helpers import small_sim


def _lowered_sim(drop=60e-6):
    """A simulator with the sample 60 um below the coincidence point (OpenFIBSEM: move the
    stage down before inserting the needle)."""
    sim = small_sim()
    sim.move_stage_absolute({"z": sim.get_stage_position()["z"] - drop})
    return sim


def _needle_lines(frame, reference):
    """The needle's silhouette measured from a noise-free frame and the needle-free reference:
    per image column beyond the thin tip, the top and bottom rows where the difference
    reaches half its maximum in that column (the silhouette's half-coverage edge, whatever
    the background); a straight line fitted to each edge of the cone (the needle comes in
    from the right). Returns the edges' intersection (col, row), which moves exactly with
    the tip, and the axis slope (rows per col: the mean of the edges' angles)."""
    diff = np.abs(frame.astype(float) - reference.astype(float))
    strong = diff > 0.2 * diff.max()
    assert strong.sum() > 200, "no needle in the frame"
    c0 = np.nonzero(strong.any(axis=0))[0].min()
    cs, top, bottom = [], [], []
    for c in range(c0 + 10, min(c0 + 90, diff.shape[1])):
        d = diff[:, c]
        rows = np.nonzero(d >= 0.5 * d.max())[0]
        if d.max() > 0.2 * diff.max() and rows.size:
            cs.append(c)
            top.append(_crossing(d, rows.min(), -1))
            bottom.append(_crossing(d, rows.max(), +1))
    bt, at = np.polyfit(cs, top, 1)
    bb, ab = np.polyfit(cs, bottom, 1)
    col = (ab - at) / (bt - bb)
    slope = math.tan(0.5 * (math.atan(bt) + math.atan(bb)))
    return col, at + bt * col, slope


def _crossing(d, i, step):
    """Sub-pixel row where ``d`` falls through half its maximum, going from row ``i``
    (at or above half) one row in direction ``step``."""
    half = 0.5 * d.max()
    j = i + step
    if not 0 <= j < d.size or d[j] >= half:
        return float(i)
    return i + step * (d[i] - half) / (d[i] - d[j])


def _frames(sim):
    return {b: sim.render_clean(b) for b in ("electron", "ion")}


def _pixel(sim, beam):
    return sim.get("hfw", beam) / sim.get("resolution", beam)[0]


def test_needle_axis_appears_where_its_raw_position_projects():
    """Tip 15 um above the coincidence point: the needle's axis passes through the image
    centre in the electron image, and 15 um x sin(52 deg) above it in the ion image, with
    the slope of the axis's projection."""
    sim = _lowered_sim()
    ref = _frames(sim)
    sim.insert_manipulator("PARK")
    sim.move_manipulator_absolute({"x": 0.0, "y": 0.0, "z": 15e-6})
    got = _frames(sim)
    axis = np.array([math.cos(math.radians(35)), 0.0, math.sin(math.radians(35))])
    for beam in ("electron", "ion"):
        col, row, slope = _needle_lines(got[beam], ref[beam])
        right, up, _ = G.beam_axes(beam, sim.geometry)
        p = _pixel(sim, beam)
        h, w = got[beam].shape
        expected_slope = -(axis @ up) / (axis @ right)
        assert slope == pytest.approx(expected_slope, abs=0.01), beam
        # the axis line through the measured apex passes through the projected tip
        c_tip, r_tip = G.image_to_pixel(0.0, 15e-6 * up[2], (h, w), p)
        assert row + expected_slope * (c_tip - col) == pytest.approx(r_tip, abs=1.0), beam


def _needle_only(sim, beam):
    """The needle as the simulator draws it into ``beam``'s frames, on an empty background
    and without blur (the sample's own contrast would bias a measurement of its position)."""
    view = sim.truth.view(beam)
    shading = Shading.build(beam, sim.get("detector_type", beam),
                            sim.get("detector_mode", beam), sim.get("voltage", beam))
    blank = np.zeros((view.height, view.width), np.float32)
    return sim.needle.composite(blank, view, shading, Optics(0.0))


@pytest.mark.parametrize("beam, dx, dy", [("ion", 0.0, -8e-6), ("electron", 5e-6, 5e-6)])
def test_corrected_move_shifts_the_tip_as_the_geometry_says(beam, dx, dy):
    """Registration of the drawn needle before/after the move (sub-pixel): an ion-corrected
    move is vertical in the ion image and invisible in the electron image; an electron move
    shows (dx, dy) there and (dx, dy cos 52) in the ion image."""
    sim = _lowered_sim()
    sim.insert_manipulator("PARK")
    sim.move_manipulator_absolute({"z": 15e-6})
    before = {b: _needle_only(sim, b) for b in ("electron", "ion")}
    d = G.manipulator_corrected_delta(dx, dy, beam, sim.geometry)
    pos = sim.get_manipulator_position()
    sim.move_manipulator_absolute({a: pos[a] + d[i] for i, a in enumerate("xyz")})
    after = {b: _needle_only(sim, b) for b in ("electron", "ion")}
    expected = {  # image (u, v) shifts, m
        "ion": (dx, dy) if beam == "ion" else (dx, dy * math.cos(math.radians(52))),
        "electron": (dx, 0.0) if beam == "ion" else (dx, dy),
    }
    for view in ("electron", "ion"):
        reg = register(before[view], after[view])
        p = _pixel(sim, view)
        assert reg.dx == pytest.approx(expected[view][0] / p, abs=0.1), view
        assert reg.dy == pytest.approx(expected[view][1] / p, abs=0.1), view


def test_the_tip_touches_the_surface_and_is_refused_beyond():
    sim = _lowered_sim(drop=20e-6)
    sim.insert_manipulator("PARK")
    gap = sim.needle.gap(sim.needle.tip())
    assert 150e-6 < gap < 200e-6  # PARK, 180 um above the coincidence point, sample lowered
    pos = sim.get_manipulator_position()
    # lower along z (corrected ion move) to just touch, then try to push past the limit
    sim.move_manipulator_absolute({"z": pos["z"] - gap})
    assert sim.get("manipulator_contact") is True
    touching = sim.get_manipulator_position()
    t0 = sim.time()
    with pytest.raises(BackendError, match="inside the sample"):
        sim.move_manipulator_absolute({"z": touching["z"] - 2 * MAX_PENETRATION})
    assert sim.get_manipulator_position() == touching and sim.time() == t0
    sim.move_manipulator_absolute({"z": touching["z"] + 5e-6})
    assert sim.get("manipulator_contact") is False


def test_retracted_needle_is_gone_and_cannot_move():
    sim = small_sim()
    clean = sim.render_clean("electron")
    with pytest.raises(BackendError, match="retracted"):
        sim.move_manipulator_absolute({"z": 0.0})
    t0 = sim.time()
    sim.insert_manipulator("PARK")
    assert sim.time() - t0 >= INSERT_TIME
    assert not np.array_equal(sim.render_clean("electron"), clean)
    sim.retract_manipulator()
    assert np.array_equal(sim.render_clean("electron"), clean)
    with pytest.raises(ValueError, match="unknown manipulator position"):
        sim.insert_manipulator("HOME")
    sim.insert_manipulator("PARK")
    with pytest.raises(ValueError, match="outside the limit"):
        sim.move_manipulator_absolute({"x": 1.0})
    with pytest.raises(ValueError, match="unknown manipulator axis"):
        sim.move_manipulator_absolute({"r": 10.0})


def test_the_stage_cannot_drive_the_sample_into_the_needle():
    """Tip 2 um above the surface; raising the sample chamber-vertically (the exact vertical
    move: the same surface point stays under the tip) by 1 um leaves a 1 um gap, a further
    3 um would push the tip 2 um into the sample and is refused before the stage moves,
    1.2 um touches (0.2 um of contact)."""
    sim = _lowered_sim(drop=20e-6)
    sim.insert_manipulator("PARK")
    pos = sim.get_manipulator_position()
    sim.move_manipulator_absolute({"z": pos["z"] - sim.needle.gap(sim.needle.tip()) + 2e-6})

    def raise_sample(m):
        stage = sim.get_stage_position()
        _, dy, dz = G.vertical_move_delta(m * math.sin(math.radians(52)),
                                          math.radians(stage["t"]), sim.geometry)
        sim.move_stage_absolute({"y": stage["y"] + dy, "z": stage["z"] + dz})

    raise_sample(1e-6)
    assert sim.needle.gap(sim.needle.tip()) == pytest.approx(1e-6, abs=1e-9)
    assert sim.get("manipulator_contact") is False
    here, t0 = sim.get_stage_position(), sim.time()
    with pytest.raises(BackendError, match="inside the sample"):
        raise_sample(3e-6)
    assert sim.get_stage_position() == here and sim.time() == t0
    raise_sample(1.2e-6)
    assert sim.get("manipulator_contact") is True
