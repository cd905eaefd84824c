"""Milling patterns in the viewer: Shift + click moves the selected pattern by the clicked
offset (m) and the next milling mills it there; a supervised pause resumed from the widget
mills the moved pattern and records the correction. Ground truth: the simulator's cuts."""

from __future__ import annotations

import math

import numpy as np
import pytest
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest

from fibsem_ophyd.gui._patterns import centre_of
from fibsem_ophyd.milling import MillingStage, RectanglePattern

from .conftest import click, run_and_wait, world_per_canvas_pixel


def _box(name: str, x: float = 0.0, y: float = 0.0) -> MillingStage:
    # 3 x 2 x 0.3 um of ice at 1 nA: 0.6 s of simulated beam time
    return MillingStage(name, RectanglePattern(width=3e-6, height=2e-6, depth=0.3e-6,
                                               centre_x=x, centre_y=y),
                        milling_current=1e-9, hfw=80e-6, material="ice")


def _cut_centre(cut) -> tuple[float, float]:
    """Depth-weighted centre of a simulated cut on the sample, in the ion image frame (m):
    the cut's own coordinates are the scanned field's, which the beam shift moves."""
    col = np.arange(cut.depth.shape[1]) * cut.spacing + cut.u0
    row = np.arange(cut.depth.shape[0]) * cut.spacing + cut.v0
    w = np.clip(cut.depth, 0, None)
    sx, sy = (float(v) for v in cut.view.shift)
    return (float((w.sum(0) * col).sum() / w.sum()) + sx,
            float((w.sum(1) * row).sum() / w.sum()) + sy)


def _press(button):
    QTest.mouseClick(button, Qt.MouseButton.LeftButton)


def test_shift_click_moves_the_pattern_and_the_milling_follows(qtbot, mv, gui_session):
    sim = gui_session.backend
    model = mv.patterns
    model.set_stages([_box("moved")])
    model.selected = 0
    frame = mv.frames["ion"]
    target = frame.pixel_to_image(250, 90)  # right of and above the centre
    click(mv, frame.image_to_world(*target), modifiers=("Shift",))
    _, action, x, y = mv.last_click
    assert action == "move_pattern"
    assert math.hypot(x - target[0], y - target[1]) <= world_per_canvas_pixel(mv)
    # moved by the clicked offset: its centre is where the click was
    assert centre_of(model.stages[0]) == pytest.approx((x, y), abs=1e-12)
    # the drawn shape moved with it (world coordinates of the ion view)
    ring = frame.world_to_polygon(model.layer.data[0])
    assert ring.mean(0) == pytest.approx((x, y), abs=1e-9)
    n = len(sim.cuts)
    run_and_wait(qtbot, mv, lambda: _press(mv.widgets["milling"].run_button))
    assert len(sim.cuts) == n + 1
    cx, cy = _cut_centre(sim.cuts[-1])
    assert (cx, cy) == pytest.approx((x, y), abs=0.15e-6)


def test_ctrl_shift_click_moves_all_patterns_together(mv):
    model = mv.patterns
    model.set_stages([_box("a", -4e-6, 0.0), _box("b", 4e-6, 2e-6)])
    model.selected = 1
    frame = mv.frames["ion"]
    target = frame.pixel_to_image(120, 160)
    click(mv, frame.image_to_world(*target), modifiers=("Control", "Shift"))
    _, action, x, y = mv.last_click
    assert action == "move_all_patterns"
    d = (x - 4e-6, y - 2e-6)
    assert centre_of(model.stages[1]) == pytest.approx((x, y), abs=1e-12)
    assert centre_of(model.stages[0]) == pytest.approx((-4e-6 + d[0], d[1]), abs=1e-12)


def test_shift_click_in_electron_moves_no_pattern(mv):
    model = mv.patterns
    model.set_stages([_box("stay")])
    frame = mv.frames["electron"]
    click(mv, frame.image_to_world(*frame.pixel_to_image(50, 50)), modifiers=("Shift",))
    assert centre_of(model.stages[0]) == (0.0, 0.0)
    assert "ion beam" in mv.messages[-1]


def test_supervised_pause_resumed_from_the_widget_mills_the_moved_pattern(qtbot, mv,
                                                                          gui_session):
    sim = gui_session.backend
    model = mv.patterns
    milling, supervision = mv.widgets["milling"], mv.widgets["supervision"]
    model.set_stages([_box("supervised", 1e-6, -1e-6)])
    milling.supervised.setChecked(True)
    n = len(sim.cuts)
    _press(milling.run_button)
    # the widget has taken the pause in (Qt delivered the driver's signal)
    qtbot.waitUntil(supervision.resume_button.isEnabled, timeout=60_000)
    assert mv.driver.current_state == "paused"
    # the widget says what is asked; nothing milled yet
    assert "supervised" in supervision.asked.text() and len(sim.cuts) == n
    assert supervision.resume_button.isEnabled()
    frame = mv.frames["ion"]
    target = frame.pixel_to_image(220, 100)
    click(mv, frame.image_to_world(*target), modifiers=("Shift",))
    _, _, x, y = mv.last_click
    offset = (x - 1e-6, y + 1e-6)
    assert model.offset == pytest.approx(offset, abs=1e-12)
    done = run_and_wait(qtbot, mv, lambda: _press(supervision.resume_button))
    milling.supervised.setChecked(False)
    assert len(sim.cuts) == n + 1
    # milled where the person moved it: the plan shifted the field by the correction
    assert list(sim.cuts[-1].view.shift) == pytest.approx(offset, abs=1e-12)
    assert _cut_centre(sim.cuts[-1]) == pytest.approx((x, y), abs=0.15e-6)
    # the correction is recorded with the stage, as the plan records it
    (plan, uid, error) = done[-1]
    assert plan == "mill_stages" and error is None
    ion = gui_session.catalog[uid]["ion"].read()
    assert float(ion["microscope_milling_pattern_offset_x"][1]) == pytest.approx(offset[0])
    assert float(ion["microscope_milling_pattern_offset_y"][1]) == pytest.approx(offset[1])
    # the drawn pattern stays where it was milled; the supervision is over
    assert centre_of(model.stages[0]) == pytest.approx((x, y), abs=1e-12)
    assert model.supervised is None and not supervision.resume_button.isEnabled()
