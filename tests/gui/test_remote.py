"""The same widgets through a queue server and a Tiled server (PostgreSQL catalog): frames
read back from the server are the stored ones, a double-click moves the stage by geometry's
delta, a supervised milling paused and corrected from the widget records the click, and a
supervised detection's keypoint dragged in the viewer is the correction the run stores."""

from __future__ import annotations

import math

import numpy as np
import pytest
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest

from fibsem_ophyd import geometry
from fibsem_ophyd.storage import load_images
from tests.facility.conftest import (
    PG_HOST,
    PG_PORT,
    REDIS_HOST,
    REDIS_PORT,
    SMALL_CONFIG,
    QueueServer,
    TiledPostgresServer,
    port_open,
)

from .conftest import click, fine_zoom
from .test_keypoints import _drag, _point_world

pytestmark = [pytest.mark.facility, pytest.mark.xdist_group("facility")]


@pytest.fixture
def facility(tmp_path):
    """A Tiled server on PostgreSQL and a queue server whose worker writes to it."""
    if not port_open(REDIS_HOST, REDIS_PORT):
        pytest.skip(f"Redis is not reachable on {REDIS_HOST}:{REDIS_PORT}")
    if not port_open(PG_HOST, PG_PORT):
        pytest.skip(f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}")
    config = tmp_path / "microscope.yaml"
    config.write_text(SMALL_CONFIG)
    server = TiledPostgresServer(tmp_path / "tiled", command="fibsem")
    qs = None
    try:
        server.start()
        qs = QueueServer(tmp_path, server.data_dir, config,
                         FIBSEM_OPHYD_TILED_URI=server.uri,
                         FIBSEM_OPHYD_TILED_API_KEY=server.api_key)
        qs.connect()
        qs.open_environment(user_group="primary", user="gui")
        yield server, qs, config
    finally:
        if qs is not None:
            qs.close()
        server.close()


def _wait_idle(qtbot, mv, timeout=120_000):
    qtbot.waitUntil(lambda: mv.driver.current_state == "idle" and not mv.driver._submitted,
                    timeout=timeout)


def test_remote_viewer_shows_stored_frames_moves_and_supervises(qtbot, qapp, facility):
    from fibsem_ophyd import setup_session
    from fibsem_ophyd.gui import MicroscopeViewer
    from fibsem_ophyd.gui._remote import RemoteDriver
    from fibsem_ophyd.plans import read_geometry

    server, qs, config = facility
    catalog = server.client()
    driver = RemoteDriver(qs.api, catalog, period=0.1)
    mv = MicroscopeViewer(driver, show=True)
    try:
        mv.viewer.window._qt_window.resize(1400, 900)
        imaging = mv.widgets["imaging"]
        imaging.hfw.value, imaging.resolution.value = 150.0, "384x256"
        shown = []
        driver.frame.connect(lambda f: shown.append(f))
        QTest.mouseClick(imaging.buttons["both"].native, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: {f.beam for f in shown} >= {"electron", "ion"},
                        timeout=120_000)
        _wait_idle(qtbot, mv)
        # the layers show the frames as the Tiled server stores them, placed in metres
        for f in shown[-2:]:
            stored = load_images(catalog[f.run_uid], "primary")[-1]
            assert np.array_equal(mv.layers[f.beam].data, stored.data)
            assert mv.frames[f.beam].pixel_size == pytest.approx(150e-6 / 384)
        before = driver.stage_position()

        # a double-click in the electron view: the stage moves by geometry's delta
        local = setup_session(config=str(config), data_dir=server.root / "local")
        geom = local.RE(read_geometry(local.microscope)).plan_result
        local.close()
        frame = mv.frames["electron"]
        n = len(shown)
        click(mv, frame.image_to_world(*frame.pixel_to_image(290, 70)), double=True)
        _, action, x, y = mv.last_click
        assert action == "stable_move"
        qtbot.waitUntil(lambda: len(shown) >= n + 2, timeout=120_000)
        _wait_idle(qtbot, mv)
        after = driver.stage_position()
        d = geometry.stable_move_delta(-x, -y, "electron", math.radians(before["r"]),
                                       math.radians(before["t"]), geom)
        moved = (after["x"] - before["x"], after["y"] - before["y"], after["z"] - before["z"])
        assert moved == pytest.approx(d, abs=1e-9)

        # supervised milling: paused by the plan, the pattern moved with Shift + click,
        # resumed from the widget; the run records the correction
        from fibsem_ophyd.milling import MillingStage, RectanglePattern

        mv.patterns.set_stages([MillingStage(
            "remote-box", RectanglePattern(width=3e-6, height=2e-6, depth=0.3e-6),
            milling_current=1e-9, hfw=80e-6, material="ice")])
        milling, supervision = mv.widgets["milling"], mv.widgets["supervision"]
        milling.supervised.setChecked(True)
        QTest.mouseClick(milling.run_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(supervision.resume_button.isEnabled, timeout=120_000)
        assert "remote-box" in supervision.asked.text()
        ion = mv.frames["ion"]
        click(mv, ion.image_to_world(*ion.pixel_to_image(230, 110)), modifiers=("Shift",))
        _, _, x, y = mv.last_click
        assert mv.patterns.offset == pytest.approx((x, y), abs=1e-12)
        finished = []
        driver.finished.connect(lambda *a: finished.append(a))
        QTest.mouseClick(supervision.resume_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: bool(finished), timeout=120_000)
        plan, uid, error = finished[-1]
        assert plan == "mill_stages" and error is None
        table = catalog[uid]["ion"].read()
        assert list(table["microscope_milling_state"].values) == ["ready", "done"]
        assert float(table["microscope_milling_pattern_offset_x"][1]) == pytest.approx(x)
        assert float(table["microscope_milling_pattern_offset_y"][1]) == pytest.approx(y)

        # keypoint supervision: a supervised detection paused on the worker, read back from
        # the Tiled server; the image centre's point dragged by (dc, dr) px with the mouse;
        # Resume enters it with a background script and the run stores it
        supervision.detect_beam.setCurrentText("ion")
        supervision.detect_features.setText("ImageCentre")
        finished.clear()
        QTest.mouseClick(supervision.detect_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: mv.keypoints.active, timeout=120_000)
        assert mv.keypoints.detection.features == {"ImageCentre": (192.0, 128.0)}
        start = _point_world(mv, "ImageCentre")
        assert start == pytest.approx(np.asarray(mv.layers["ion"].data_to_world((128, 192)),
                                                 float)[-2:], abs=1e-12)
        dc, dr = -7, 5
        mv.viewer.scene.camera.center = tuple(start)
        mv.viewer.scene.camera.zoom = fine_zoom(mv, "ion", per_pixel=4)
        qtbot.wait(50)
        _drag(qtbot, mv, start, 4 * dc, 4 * dr)
        assert mv.keypoints.corrections()["ImageCentre"] == pytest.approx(
            (192 + dc, 128 + dr), abs=0.5)
        QTest.mouseClick(supervision.resume_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: bool(finished), timeout=120_000)
        plan, uid, error = finished[-1]
        assert plan == "detect" and error is None
        corr = catalog[uid]["correction"].read()
        assert float(corr["correction_ImageCentre_x"][0]) == pytest.approx(192 + dc, abs=0.5)
        assert float(corr["correction_ImageCentre_y"][0]) == pytest.approx(128 + dr, abs=0.5)
        assert float(corr["correction_ImageCentre_dpx"][0]) == pytest.approx(-dc, abs=0.5)
        assert float(corr["correction_ImageCentre_dpy"][0]) == pytest.approx(-dr, abs=0.5)
        assert int(corr["correction_ImageCentre_correct"][0]) == 0
    finally:
        driver.close()
        mv.viewer.close()
        catalog.context.close()  # given to the driver, so still ours to close
