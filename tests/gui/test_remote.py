"""The same widgets through a queue server and a Tiled server (PostgreSQL catalog): frames
read back from the server are the stored ones, a double-click moves the stage by geometry's
delta, the saved positions listed are the ones the worker's stage read into the stored runs
and "Go to" brings the stage back to one, the minimap shows the stored overview and the sites
chosen on it, a supervised milling paused and corrected from the widget records the click,
and a supervised detection's keypoint dragged in the viewer is the correction the run
stores."""

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
from .test_widgets import _button, _press

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


def _listed(widget) -> list[str]:
    return [widget.item(i).text() for i in range(widget.count())]


def _stored_saves(catalog) -> dict[str, dict]:
    """``{name: the stage as the worker read it}`` from the stored ``save_position`` runs'
    "primary" events (the newest run of a name wins)."""
    from tiled.queries import Key

    out = {}
    for run in catalog.search(Key("start.plan_name") == "save_position").values():
        row = run["primary"].read()
        out[run.metadata["start"]["plan_args"]["name"]] = {
            ax: float(np.asarray(row[f"microscope_stage_{ax}"])[-1])
            for ax in ("x", "y", "z", "r", "t")}
    return out


def _corners(layer) -> np.ndarray:
    """World (y, x) of the top-left and bottom-right pixel corners of an image layer."""
    h, w = layer.data.shape[-2:]
    return np.array([layer.data_to_world((-0.5, -0.5)), layer.data_to_world((h - 0.5, w - 0.5))],
                    float)[:, -2:]


def test_remote_viewer_shows_stored_frames_moves_and_supervises(qtbot, qapp, facility):
    from fibsem_ophyd import setup_session
    from fibsem_ophyd.gui import MicroscopeViewer
    from fibsem_ophyd.gui._remote import RemoteDriver
    from fibsem_ophyd.plans import read_geometry
    from fibsem_ophyd.plans.stored_runs import saved_positions

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

        # saved positions: "Save" twice through the queue; the list is built from the stored
        # runs and holds exactly those names, at the stage the worker read into each run
        movement = mv.widgets["movement"]
        assert _listed(movement.positions) == [] and driver.positions() == {}
        for name in ("far", "here"):
            movement.name.setText(name)
            _press(_button(movement, "Save"))
            _wait_idle(qtbot, mv)
            if name == "far":  # back where the first frames were, for the second one
                go = {"position": before}
                assert driver.run("safe_absolute_move", "microscope", **go)
                _wait_idle(qtbot, mv)
        qtbot.waitUntil(lambda: _listed(movement.positions) == ["far", "here"], timeout=30_000)
        stored = _stored_saves(catalog)
        assert set(stored) == {"far", "here"} and set(driver.positions()) == set(stored)
        for name, pos in driver.positions().items():
            assert pos == stored[name]  # the same reading, stored twice: equal floats
        # and the stage read into the runs is the one stored with the frames at the time
        assert stored["far"] == pytest.approx(after, abs=1e-12)
        assert stored["here"] == pytest.approx(before, abs=1e-12)
        # "Go to" the far one: go_to_position is what the queue ran, and the next stored
        # frames (the images after a move) were taken there
        (item,) = movement.positions.findItems("far", Qt.MatchFlag.MatchExactly)
        movement.positions.setCurrentItem(item)
        n = len(shown)
        _press(_button(movement, "Go to selected"))
        qtbot.waitUntil(lambda: len(shown) >= n + 2, timeout=120_000)
        _wait_idle(qtbot, mv)
        ran = [(i["name"], i.get("kwargs", {})) for i in qs.api.history_get()["items"]]
        assert ran[-3:] == [("go_to_position", {"name": "far"}), ("acquire_image", {}),
                            ("acquire_image", {})]
        for f in shown[n:]:
            (frame_stored,) = load_images(catalog[f.run_uid], "primary")[-1:]
            assert frame_stored.stage_position == pytest.approx(stored["far"], abs=1e-12)
        assert driver.stage_position() == pytest.approx(stored["far"], abs=1e-12)

        # the minimap: an overview through the queue, then a site selection; each stored
        # overview replaces the mosaic shown (in metres), the selection's sites are marked
        minimap = mv.widgets["minimap"]
        minimap.rows.setValue(2)
        minimap.cols.setValue(2)
        _press(_button(minimap, "Acquire overview"))
        _wait_idle(qtbot, mv)
        qtbot.waitUntil(lambda: minimap.overview_uid is not None, timeout=30_000)
        first = minimap.overview_uid
        assert catalog[first].metadata["start"]["plan_name"] == "acquire_overview"
        two = _corners(minimap.layer)
        minimap.rows.setValue(3)
        minimap.cols.setValue(3)
        minimap.n_sites.setValue(2)
        _press(_button(minimap, "Select sites automatically"))
        _wait_idle(qtbot, mv, timeout=240_000)
        qtbot.waitUntil(lambda: minimap.overview_uid not in (None, first)
                        and len(minimap.site_positions) == 2, timeout=30_000)
        from tiled.queries import Key

        (decisions,) = catalog.search(Key("start.plan_name") == "select_sites").values()
        start = decisions.metadata["start"]
        assert minimap.overview_uid == start["overview"]
        overview = catalog[start["overview"]]
        ev = overview["overview_mosaic"].read(variables=[
            f"overview_mosaic_{k}" for k in ("pixel_size", "height", "width")])
        px = float(ev["overview_mosaic_pixel_size"][0])
        h, w = int(ev["overview_mosaic_height"][0]), int(ev["overview_mosaic_width"][0])
        (mosaic,) = load_images(overview, "overview_mosaic")
        layer = mv.viewer.layers["overview"]
        assert np.array_equal(layer.data, mosaic.data) and layer.data.shape == (h, w)
        # the mosaic covers the overview's extent in metres: 3 tiles of 150 um at 10 %
        # overlap (the stitching shifts a tile by a few pixels at most), below the views
        three = _corners(layer)
        assert three[1] - three[0] == pytest.approx((h * px, w * px), rel=1e-12)
        assert w * px == pytest.approx(150e-6 * (1 + 2 * 0.9), abs=8 * px)
        assert (two[1] - two[0])[1] == pytest.approx(150e-6 * 1.9, abs=8 * px)
        assert three[0][0] > mv.frames["electron"].height / 2  # below the electron view
        # the sites where the stored decisions put them: the chosen squares' centre pixels
        squares = decisions["square"].read()
        chosen = {str(n): (float(c), float(r)) for n, c, r in zip(
            np.asarray(squares["square_site"]), np.asarray(squares["square_col"]),
            np.asarray(squares["square_row"]), strict=True) if str(n)}
        assert sorted(chosen) == sorted(start["sites"]) == ["site-1", "site-2"]
        marks = mv.viewer.layers["sites"]
        marked = {str(n): np.asarray(marks.data_to_world(p), float)[-2:]
                  for n, p in zip(marks.features["name"], marks.data, strict=True)}
        assert sorted(marked) == sorted(chosen)
        for name, (col, row) in chosen.items():
            where = np.asarray(layer.data_to_world((row, col)), float)[-2:]
            assert marked[name] == pytest.approx(where, abs=1e-3 * px)
        # select_sites saved its sites: the list follows the newest stored positions
        qtbot.waitUntil(lambda: _listed(movement.positions) ==
                        ["far", "here", "site-1", "site-2"], timeout=30_000)
        assert driver.positions() == saved_positions(catalog)

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
