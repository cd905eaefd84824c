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

from .conftest import click, fine_zoom, run_and_wait, world_per_canvas_pixel


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
    click(mv, frame.image_to_world(*target), modifiers=("Shift",), zoom=fine_zoom(mv, "ion"))
    _, action, x, y = mv.last_click
    assert action == "move_pattern"
    assert math.hypot(x - target[0], y - target[1]) <= 2 * world_per_canvas_pixel(mv)
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


def _mouse(widget, kind, pos, buttons):
    from qtpy.QtCore import QEvent, QPointF
    from qtpy.QtGui import QMouseEvent
    from qtpy.QtWidgets import QApplication

    types = {"press": QEvent.Type.MouseButtonPress, "move": QEvent.Type.MouseMove,
             "release": QEvent.Type.MouseButtonRelease}
    button = Qt.MouseButton.NoButton if kind == "move" else Qt.MouseButton.LeftButton
    p = QPointF(pos)
    ev = QMouseEvent(types[kind], p, QPointF(widget.mapToGlobal(pos)), button, buttons,
                     Qt.KeyboardModifier.NoModifier)
    QApplication.sendEvent(widget, ev)
    QApplication.processEvents()


def test_dragging_a_shape_moves_its_pattern_by_the_drag_in_metres(qtbot, mv):
    from qtpy.QtCore import QPoint

    from .conftest import canvas_of, world_to_canvas

    model = mv.patterns
    model.set_stages([_box("dragged", -5e-6, 3e-6)])
    frame = mv.frames["ion"]
    layer = model.layer
    mv.viewer.layers.selection.active = layer
    layer.mode = "select"
    widget = canvas_of(mv).native
    mv.viewer.scene.camera.center = tuple(frame.image_to_world(-5e-6, 3e-6))
    qtbot.wait(50)
    start = QPoint(*world_to_canvas(mv, frame.image_to_world(-5e-6, 3e-6)))
    end = QPoint(start.x() + 40, start.y() + 25)  # right and down on the screen
    held = Qt.MouseButton.LeftButton
    _mouse(widget, "move", start, Qt.MouseButton.NoButton)
    _mouse(widget, "press", start, held)
    for k in range(1, 6):
        _mouse(widget, "move", QPoint(start.x() + 8 * k, start.y() + 5 * k), held)
    _mouse(widget, "release", end, Qt.MouseButton.NoButton)
    qtbot.wait(100)
    mv.viewer.layers.selection.active = mv.layers["ion"]
    w0 = np.asarray(canvas_of(mv)._map_canvas2world((start.x(), start.y()),
                                                     canvas_of(mv).view))[-2:]
    w1 = np.asarray(canvas_of(mv)._map_canvas2world((end.x(), end.y()),
                                                     canvas_of(mv).view))[-2:]
    # the drag in metres, image frame: right is +x, down on the screen is -y
    dx, dy = w1[1] - w0[1], -(w1[0] - w0[0])
    assert dx > 0 and dy < 0
    assert centre_of(model.stages[0]) == pytest.approx((-5e-6 + dx, 3e-6 + dy), abs=1e-9)
    # the stage kept its size and depth: only the place changed
    assert model.stages[0].pattern.width == pytest.approx(3e-6)
    assert model.stages[0].pattern.depth == pytest.approx(0.3e-6)
