"""Keypoint supervision in the viewer: a supervised detection pauses, its keypoints are drawn
over the frame they were found in (placed like the image layers, in metres), a real mouse drag
of a point by (dc, dr) image pixels is what the run stores as the correction (read back from
the Tiled catalog), and Abort closes the run with no correction."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import QPoint, Qt
from qtpy.QtTest import QTest

from fibsem_ophyd.gui._keypoints import LAYER

from .._catalog import count_runs
from .conftest import canvas_of, fine_zoom, run_and_wait, world_to_canvas
from .test_patterns import _mouse


def _press(button):
    QTest.mouseClick(button, Qt.MouseButton.LeftButton)


def _lamella_frame():
    """An ion frame of a lamella from a simulator of its own (the viewer's scene stays as
    the other tests expect it): the frame, its pixel size."""
    from fibsem_ophyd.sim import SimulatedMicroscope

    sim = SimulatedMicroscope({"electron": {"resolution": [384, 256]},
                               "ion": {"resolution": [384, 256]}}, seed=3)
    c = sim.truth.surface_point("ion")
    sim.liftout.add_lamella(c[:2], width=30e-6, depth=6e-6, thickness=3e-6)
    return sim.acquire_image("ion"), float(sim.get("hfw", "ion")) / 384


def _point_world(mv, name: str) -> np.ndarray:
    layer = mv.viewer.layers[LAYER]
    (i,) = np.flatnonzero(np.asarray(layer.features["name"]) == name)
    return np.asarray(layer.data[i], float)


def _drag(qtbot, mv, world, dx: int, dy: int, steps: int = 6) -> tuple[QPoint, QPoint]:
    """A real left-button drag on the canvas from the world point, by (dx, dy) canvas px."""
    widget = canvas_of(mv).native
    start = QPoint(*world_to_canvas(mv, world))
    end = QPoint(start.x() + dx, start.y() + dy)
    held = Qt.MouseButton.LeftButton
    _mouse(widget, "move", start, Qt.MouseButton.NoButton)
    _mouse(widget, "press", start, held)
    for k in range(1, steps + 1):
        _mouse(widget, "move", QPoint(start.x() + dx * k // steps, start.y() + dy * k // steps),
               held)
    _mouse(widget, "release", end, Qt.MouseButton.NoButton)
    qtbot.wait(50)
    return start, end


def test_dragged_keypoint_is_the_stored_correction(qtbot, mv, gui_session):
    frame_data, px = _lamella_frame()
    supervision = mv.widgets["supervision"]
    assert mv.driver.run("detect", "fib", features=["LamellaCentre", "ImageCentre"],
                         image=frame_data, pixel_size=px, supervised=True)
    qtbot.waitUntil(lambda: mv.keypoints.active, timeout=60_000)
    assert mv.driver.current_state == "paused" and supervision.resume_button.isEnabled()
    det = mv.keypoints.detection
    assert det.beam == "ion" and det.pixel_size == pytest.approx(px)
    assert det.features["ImageCentre"] == (192.0, 128.0)  # the rule, exact
    # the ion view shows the frame the keypoints were found in (a given one, not the live)
    ion_layer = mv.layers["ion"]
    assert np.array_equal(ion_layer.data, frame_data)
    # each point sits where the ion image layer draws that pixel
    for name, guess in det.features.items():
        if guess is not None:
            want = np.asarray(ion_layer.data_to_world((guess[1], guess[0])), float)[-2:]
            assert _point_world(mv, name) == pytest.approx(want, abs=1e-12)
    assert mv.viewer.layers.selection.active is mv.viewer.layers[LAYER]
    # drag the model's lamella centre (the image centre if the model found no lamella) by
    # (dc, dr) image pixels: 4 canvas pixels per image pixel
    name = "LamellaCentre" if det.features["LamellaCentre"] is not None else "ImageCentre"
    other = "ImageCentre" if name == "LamellaCentre" else "LamellaCentre"
    gx, gy = det.features[name]
    dc, dr = 9, -6
    frame = mv.frames["ion"]
    start_world = _point_world(mv, name)
    mv.viewer.scene.camera.center = tuple(start_world)
    mv.viewer.scene.camera.zoom = fine_zoom(mv, "ion", per_pixel=4)
    qtbot.wait(50)
    start, end = _drag(qtbot, mv, start_world, 4 * dc, 4 * dr)
    canvas = canvas_of(mv)
    w0, w1 = (np.asarray(canvas._map_canvas2world((p.x(), p.y()), canvas.view))[-2:]
              for p in (start, end))
    # the drag in image pixels, from napari's own canvas -> world map (rows down)
    drag = ((w1[1] - w0[1]) / frame.pixel_size, (w1[0] - w0[0]) / frame.pixel_size)
    assert drag == pytest.approx((dc, dr), abs=0.01)
    moved = mv.keypoints.corrections()
    assert set(moved) == {name}
    assert moved[name] == pytest.approx((gx + dc, gy + dr), abs=0.5)
    assert f"moved ({dc:+.1f}, {dr:+.1f}) px" in supervision.offset.text()
    done = run_and_wait(qtbot, mv, lambda: _press(supervision.resume_button))
    plan, result, error = done[-1]
    assert plan == "detect" and error is None
    assert result["corrected"][name] == pytest.approx(moved[name])
    run = gui_session.catalog[result["uid"]]
    assert run.metadata["stop"]["exit_status"] == "success"
    corr = run["correction"].read()

    def value(key):
        return float(np.asarray(corr[f"correction_{key}"].values)[-1])

    # the stored final position is the guess plus the drag; model minus user is minus it
    assert (value(f"{name}_x"), value(f"{name}_y")) == pytest.approx((gx + dc, gy + dr),
                                                                      abs=0.5)
    assert (value(f"{name}_dpx"), value(f"{name}_dpy")) == pytest.approx((-dc, -dr), abs=0.5)
    assert (value(f"{name}_dmx"), value(f"{name}_dmy")) == pytest.approx(
        (-dc * px, dr * px), abs=0.5 * px)
    assert value(f"{name}_correct") == 0
    # the point not dragged: the model's guess kept (NaN where it found nothing)
    assert value(f"{other}_correct") == 1
    if det.features[other] is not None:
        assert (value(f"{other}_x"), value(f"{other}_y")) == det.features[other]
    # the supervision is over: the points are gone, the ion view takes the mouse again
    assert LAYER not in mv.viewer.layers and not mv.keypoints.active
    assert mv.viewer.layers.selection.active is mv.layers["ion"]
    mv.viewer.reset_view()


def test_detect_button_pauses_and_abort_stores_no_correction(qtbot, mv, gui_session):
    supervision = mv.widgets["supervision"]
    supervision.detect_beam.setCurrentText("ion")
    # bad input: a name the plan does not know is refused with the name, no run opened
    runs = count_runs(gui_session.catalog)
    supervision.detect_features.setText("Tip")
    done = run_and_wait(qtbot, mv, lambda: _press(supervision.detect_button))
    assert done[-1][0] == "detect" and "unknown feature 'Tip'" in str(done[-1][2])
    assert count_runs(gui_session.catalog) == runs
    supervision.detect_features.setText("ImageCentre")
    _press(supervision.detect_button)
    qtbot.waitUntil(lambda: mv.keypoints.active, timeout=60_000)
    uid = mv.driver.run_uid
    # the live ion frame, the image centre's point on its centre pixel
    ion_layer = mv.layers["ion"]
    assert np.array_equal(ion_layer.data, gui_session.microscope.fib.last_frame.get())
    h, w = ion_layer.data.shape
    want = np.asarray(ion_layer.data_to_world((h // 2, w // 2)), float)[-2:]
    assert _point_world(mv, "ImageCentre") == pytest.approx(want, abs=1e-12)
    assert "detect waits for keypoint corrections in the ion view" in supervision.asked.text()
    run_and_wait(qtbot, mv, lambda: _press(supervision.abort_button))
    run = gui_session.catalog[uid]
    assert run.metadata["stop"]["exit_status"] == "abort"
    assert "correction" not in set(run) and "detection" in set(run)
    assert LAYER not in mv.viewer.layers
    assert supervision.detect_button.isEnabled()
    supervision.detect_features.setText("NeedleTip, LamellaCentre")
