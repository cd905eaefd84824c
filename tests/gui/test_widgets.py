"""The imaging, movement and minimap widgets, pressed like a person would, checked against
the devices, geometry and the overview's own pixel -> stage mapping."""

from __future__ import annotations

import math

import numpy as np
import pytest
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest

from fibsem_ophyd import geometry
from fibsem_ophyd.plans import mosaic_pixel_to_stage, read_geometry

from .conftest import click, run_and_wait


def _press(button):
    QTest.mouseClick(button, Qt.MouseButton.LeftButton)


def test_acquire_button_applies_the_settings_and_places_the_frame(qtbot, mv, gui_session):
    imaging = mv.widgets["imaging"]
    imaging.hfw.value = 120.0
    imaging.resolution.value = "768x512"
    run_and_wait(qtbot, mv, lambda: _press(imaging.buttons["electron"].native))
    layer, frame = mv.layers["electron"], mv.frames["electron"]
    assert layer.data.shape == (512, 768)
    assert frame.pixel_size == pytest.approx(120e-6 / 768)
    assert tuple(layer.scale) == pytest.approx((120e-6 / 768,) * 2)
    # the layer shows the detector's last frame, as it came
    assert (layer.data == gui_session.microscope.sem.last_frame.get()).all()
    # back to the small frames the other tests use
    imaging.hfw.value, imaging.resolution.value = 150.0, "384x256"
    run_and_wait(qtbot, mv, lambda: _press(imaging.buttons["both"].native))
    assert mv.layers["ion"].data.shape == (256, 384)


def test_save_and_go_to_a_position(qtbot, mv):
    movement = mv.widgets["movement"]
    saved = mv.driver.stage_position()
    movement.name.setText("gui-here")
    run_and_wait(qtbot, mv, lambda: _press(_button(movement, "Save")))
    assert mv.driver.positions()["gui-here"] == pytest.approx(saved)
    # move away with a double-click, then back with the list's "Go to"
    frame = mv.frames["electron"]
    run_and_wait(qtbot, mv, lambda: click(mv, frame.image_to_world(*frame.pixel_to_image(
        80, 80)), double=True))
    assert mv.driver.stage_position()["x"] != pytest.approx(saved["x"])
    movement.refresh()
    (item,) = movement.positions.findItems("gui-here", Qt.MatchFlag.MatchExactly)
    movement.positions.setCurrentItem(item)
    run_and_wait(qtbot, mv, lambda: _press(_button(movement, "Go to selected")))
    assert mv.driver.stage_position() == pytest.approx(saved, abs=1e-9)


def _button(widget, text):
    from qtpy.QtWidgets import QPushButton

    (b,) = [b for b in widget.findChildren(QPushButton) if b.text() == text]
    return b


def test_flat_to_ion_and_milling_angle_buttons(qtbot, mv, gui_session):
    movement = mv.widgets["movement"]
    geom = gui_session.RE(read_geometry(gui_session.microscope)).plan_result
    run_and_wait(qtbot, mv, lambda: _press(_button(movement, "Flat to ion")))
    r, t = geometry.flat_to_beam("ion", geom)
    pos = mv.driver.stage_position()
    assert (pos["r"], pos["t"]) == pytest.approx((math.degrees(r), math.degrees(t)))
    movement.angle.setValue(12.0)
    run_and_wait(qtbot, mv, lambda: _press(_button(movement, "Move to milling angle")))
    pos = mv.driver.stage_position()
    assert math.degrees(geometry.milling_angle(math.radians(pos["t"]), geom)) == \
        pytest.approx(12.0)
    run_and_wait(qtbot, mv, lambda: _press(_button(movement, "Flat to electron")))
    r, t = geometry.flat_to_beam("electron", geom)
    pos = mv.driver.stage_position()
    assert (pos["r"], pos["t"]) == pytest.approx((math.degrees(r), math.degrees(t)))


def test_minimap_overview_double_click_adds_the_site_under_the_mouse(qtbot, mv):
    minimap = mv.widgets["minimap"]
    minimap.rows.setValue(2)
    minimap.cols.setValue(2)
    run_and_wait(qtbot, mv, lambda: _press(_button(minimap, "Acquire overview")),
                 timeout=180_000)
    layer = mv.viewer.layers["overview"]
    h, w = layer.data.shape
    assert layer.scale[0] == pytest.approx(minimap.mapping["pixel_size"])
    col, row = 0.7 * w, 0.3 * h
    mv.viewer.layers.selection.active = layer
    mv.viewer.scene.camera.center = tuple(layer.data_to_world((row, col)))
    qtbot.wait(100)
    click(mv, layer.data_to_world((row, col)), double=True)
    (name, pos), = minimap.site_positions.items()
    # the site is the stage position that centres the clicked mosaic pixel
    r_clicked, c_clicked = layer.world_to_data(mv.viewer.cursor.position)[-2:]
    expected = mosaic_pixel_to_stage(minimap.mapping, c_clicked, r_clicked)
    assert pos == pytest.approx(expected, abs=1e-12)
    near = mosaic_pixel_to_stage(minimap.mapping, col, row)
    px = minimap.mapping["pixel_size"]
    assert math.hypot(pos["x"] - near["x"], pos["y"] - near["y"]) < 10 * px
    # the site is marked on the mosaic where it was clicked
    marks = mv.viewer.layers["sites"]
    assert list(marks.features["name"]) == [name]
    assert np.asarray(marks.data_to_world(marks.data[0]), float)[-2:] == pytest.approx(
        np.asarray(layer.data_to_world((r_clicked, c_clicked)), float)[-2:], abs=1e-3 * px)
    mv.viewer.reset_view()


def test_batch_table_shows_each_lamella_and_the_dose_based_time_left(qtbot, mv):
    from fibsem_ophyd.milling import estimate_stage_time

    protocol = {"milling": {
        "mill_rough": [{"name": "rough", "milling": {"milling_current": 2e-9, "hfw": 80e-6},
                        "pattern": {"name": "Trench", "width": 10e-6,
                                    "upper_trench_height": 3e-6, "lower_trench_height": 3e-6,
                                    "spacing": 2e-6, "depth": 1e-6}}],
        "mill_polishing": [{"name": "polish", "milling": {"milling_current": 60e-12,
                                                           "hfw": 80e-6},
                            "pattern": {"name": "Trench", "width": 8e-6,
                                        "upper_trench_height": 0.5e-6,
                                        "lower_trench_height": 0.5e-6, "spacing": 0.5e-6,
                                        "depth": 0.4e-6}}]}}
    milling, batch = mv.widgets["milling"], mv.widgets["batch"]
    milling.load(protocol)
    assert [milling.section.itemText(i) for i in range(milling.section.count())] == \
        ["mill_rough", "mill_polishing"]
    for name in ("L1", "L2"):
        run_and_wait(qtbot, mv, lambda n=name: mv.driver.run("save_position", "microscope",
                                                              name=n))
    batch.batch.setText("gui-batch")
    batch.refresh()
    for name in ("L1", "L2"):
        (item,) = batch.sites.findItems(name, Qt.MatchFlag.MatchExactly)
        item.setSelected(True)
    batch.refresh()
    per_site = sum(estimate_stage_time(s)["total"]
                   for stages in milling.protocol.values() for s in stages)
    rows = {batch.table.item(r, 0).text(): r for r in range(batch.table.rowCount())}
    assert set(rows) == {"L1", "L2"}
    for r in rows.values():
        assert batch.table.item(r, 1).text() == "-"  # nothing milled in this batch yet
        assert float(batch.table.item(r, 4).text()) == pytest.approx(per_site, abs=0.5)
    assert batch.total.text() == f"estimated time to the end: {2 * per_site / 60:.1f} min"
    milling.protocol = {}
