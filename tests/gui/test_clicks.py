"""OpenFIBSEM's mouse controls with real clicks on the canvas, checked against geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fibsem_ophyd import geometry
from fibsem_ophyd.plans import read_geometry

from .conftest import click, fine_zoom, run_and_wait, world_per_canvas_pixel


def _stage(mv):
    return mv.driver.stage_position()


def _geom(session):
    return session.RE(read_geometry(session.microscope)).plan_result


def test_layers_are_in_metres_centred_with_y_up(mv):
    e = mv.layers["electron"]
    frame = mv.frames["electron"]
    h, w = e.data.shape
    px = frame.pixel_size
    assert px == pytest.approx(mv.driver.image_settings("electron")["hfw"] / w)
    # the image centre is world (0, 0); row 0 is at the top (+y up in image metres)
    assert np.allclose(e.data_to_world(((h - 1) / 2, (w - 1) / 2)), (0.0, 0.0), atol=1e-12)
    x, y = frame.world_to_image(e.data_to_world((0, w - 1)))
    assert (x, y) == pytest.approx(geometry.pixel_to_image(w - 1, 0, (h, w), px))
    assert y > 0 and x > 0
    # the ion view sits beside the electron view, not over it
    assert mv.frames["ion"].offset_x > frame.width / 2 + mv.frames["ion"].width / 2


@pytest.mark.parametrize("beam, col, row", [("electron", 300, 60), ("ion", 90, 200)])
def test_double_click_stable_moves_the_point_to_the_centre(qtbot, mv, gui_session, beam, col,
                                                           row):
    frame = mv.frames[beam]
    target = frame.pixel_to_image(col, row)
    before = _stage(mv)
    geom = _geom(gui_session)
    rot = math.radians(gui_session.microscope.beam(beam).scan_rotation.get())
    run_and_wait(qtbot, mv, lambda: click(mv, frame.image_to_world(*target), double=True,
                                          zoom=fine_zoom(mv, beam)))
    b, action, x, y = mv.last_click
    assert (b, action) == (beam, "stable_move")
    # the click landed in pixel (col, row), to two screen pixels
    tol = world_per_canvas_pixel(mv)
    assert math.hypot(x - target[0], y - target[1]) <= 2 * tol
    assert tuple(np.round(frame.image_to_pixel(x, y))) == (col, row)
    after = _stage(mv)
    # the stage moved by geometry's delta that brings the clicked point to the centre
    d = geometry.stable_move_delta(-x, -y, beam, math.radians(before["r"]),
                                   math.radians(before["t"]), geom, scan_rotation=rot)
    moved = (after["x"] - before["x"], after["y"] - before["y"], after["z"] - before["z"])
    assert moved == pytest.approx(d, abs=1e-12)
    assert np.linalg.norm(moved) > 10 * frame.pixel_size  # a real move, not a rounding


def test_alt_double_click_in_ion_is_the_exact_vertical_move(qtbot, mv, gui_session):
    frame = mv.frames["ion"]
    target = frame.pixel_to_image(250, 40)
    before = _stage(mv)
    geom = _geom(gui_session)
    rot = math.radians(gui_session.microscope.ion_beam.scan_rotation.get())
    run_and_wait(qtbot, mv, lambda: click(mv, frame.image_to_world(*target), double=True,
                                          modifiers=("Alt",), zoom=fine_zoom(mv, "ion")))
    assert tuple(np.round(frame.image_to_pixel(*mv.last_click[2:]))) == (250, 40)
    _, action, x, y = mv.last_click
    assert action == "vertical_move"
    after = _stage(mv)
    d = geometry.vertical_move_delta(-y, math.radians(before["t"]), geom, dx=-x,
                                     scan_rotation=rot)
    moved = (after["x"] - before["x"], after["y"] - before["y"], after["z"] - before["z"])
    assert moved == pytest.approx(d, abs=1e-12)
    # chamber-vertical: in the chamber the move is along z only (plus the x of the click)
    m = -y / math.sin(geom.ion_column_tilt)
    assert math.hypot(moved[1], moved[2]) == pytest.approx(abs(m), rel=1e-9)


def test_alt_double_click_in_electron_is_refused_with_a_message(qtbot, mv):
    frame = mv.frames["electron"]
    before = _stage(mv)
    n = len(mv.messages)
    click(mv, frame.image_to_world(*frame.pixel_to_image(100, 100)), double=True,
          modifiers=("Alt",))
    qtbot.wait(300)
    assert mv.last_click[1] == "refused"
    assert "only available in the ion beam" in " ".join(mv.messages[n:])
    assert mv.driver.current_state == "idle"
    assert _stage(mv) == before
