"""GUI tests: real Qt and napari on an X server. Without a display this starts its own
Xvfb (one per pytest process, so it works under pytest-xdist); ``.ci/run`` installs it."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess

import numpy as np
import pytest

#: the simulator sleeps 1/100 of every simulated interval (``sim: real_time_factor``), so a
#: milling of a few hundred seconds of beam time runs for a few seconds, time to press Pause
#: or Stop; frames (0.3 s) and current changes (20 s) then take 3 ms and 0.2 s
REAL_TIME = 0.01
SMALL = {"electron": {"resolution": [384, 256]}, "ion": {"resolution": [384, 256]},
         "sim": {"real_time_factor": REAL_TIME}}

_XVFB: subprocess.Popen | None = None


def _start_xvfb() -> str | None:
    """Start Xvfb on a free display; return ":N" (``None`` if Xvfb is not installed)."""
    global _XVFB
    exe = shutil.which("Xvfb")
    if exe is None:
        return None
    read, write = os.pipe()
    _XVFB = subprocess.Popen([exe, "-displayfd", str(write), "-screen", "0", "1600x1200x24",
                              "-nolisten", "tcp"], pass_fds=(write,),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    with os.fdopen(read) as f:
        number = f.readline().strip()
    atexit.register(_stop_xvfb)
    return f":{number}" if number else None


def _stop_xvfb() -> None:
    """Terminate Xvfb and reap it (a Popen left unwaited is a ResourceWarning)."""
    if _XVFB is not None and _XVFB.poll() is None:
        _XVFB.terminate()
        try:
            _XVFB.wait(10)
        except subprocess.TimeoutExpired:
            _XVFB.kill()
            _XVFB.wait()


def pytest_configure(config):
    # the remote test is a facility test (tests/facility's conftest may not be loaded)
    config.addinivalue_line("markers", "facility: queue server / Tiled server tests")
    if not os.environ.get("DISPLAY"):
        display = _start_xvfb()
        if display:
            os.environ["DISPLAY"] = display
            # the rest of the suite keeps the headless matplotlib it had without a display
            # (a Qt backend would also make bluesky's RunEngine spin Qt while it waits)
            os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("QT_QPA_PLATFORM", "xcb")


def pytest_collection_modifyitems(config, items):
    if os.environ.get("DISPLAY"):
        return
    skip = pytest.mark.skip(reason="no X display and no Xvfb to start (apt-get install xvfb)")
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(skip)


@pytest.fixture(scope="session")
def gui_session(tmp_path_factory):
    from fibsem_ophyd import setup_session

    s = setup_session(config=SMALL, data_dir=tmp_path_factory.mktemp("gui") / "data", seed=3)
    yield s
    s.close()


@pytest.fixture(scope="session")
def mv(gui_session, qapp):
    """A shown microscope viewer on the session, both beams imaged once (one per pytest
    process: opening napari is the slow part of these tests)."""
    from fibsem_ophyd.gui import InProcessDriver, MicroscopeViewer

    m = MicroscopeViewer(InProcessDriver(gui_session), show=True)
    m.viewer.window._qt_window.resize(1400, 900)
    m.driver.run("take_reference_images", "microscope")
    m.driver.wait(60)
    qapp.processEvents()
    yield m
    m.driver.close()
    m.viewer.close()


def run_and_wait(qtbot, mv, action, timeout=60_000):
    """Do ``action`` (which starts plans) and wait until the driver is idle again."""
    done = []

    def note(*args):
        done.append(args)

    mv.driver.finished.connect(note)
    try:
        action()
        qtbot.waitUntil(lambda: mv.driver.current_state == "idle" and bool(done),
                        timeout=timeout)
    finally:
        mv.driver.finished.disconnect(note)
    return done


def canvas_of(mv):
    return mv.viewer.window._qt_viewer.canvas


def _canvas2world(mv, pos) -> np.ndarray:
    canvas = canvas_of(mv)
    return np.asarray(canvas._map_canvas2world(pos, canvas.view), float)[-2:]


def world_to_canvas(mv, world) -> tuple[int, int]:
    """Canvas pixel (x, y) of a 2-D world point (y, x), from napari's own canvas -> world map."""
    origin = _canvas2world(mv, (0, 0))
    ex = _canvas2world(mv, (1, 0)) - origin
    ey = _canvas2world(mv, (0, 1)) - origin
    m = np.column_stack([ex, ey])  # world = origin + m @ (cx, cy)
    cx, cy = np.linalg.solve(m, np.asarray(world, float)[-2:] - origin)
    return int(round(cx)), int(round(cy))


def fine_zoom(mv, beam: str, per_pixel: int = 8) -> float:
    """A camera zoom with ``per_pixel`` canvas pixels per image pixel of ``beam``: a click
    then lands well inside the image pixel aimed at."""
    return per_pixel / mv.frames[beam].pixel_size


def world_per_canvas_pixel(mv) -> float:
    return float(np.hypot(*(_canvas2world(mv, (1, 0)) - _canvas2world(mv, (0, 0)))))


def click(mv, world, double=False, modifiers=(), zoom=None):
    """A real mouse click on the canvas at a world point: the camera centred there (at
    ``zoom`` canvas pixels per metre if given), a mouse move there, then a (double) click
    with the keyboard modifiers held ("Alt", "Shift", "Control")."""
    from qtpy.QtCore import QPoint, Qt
    from qtpy.QtTest import QTest
    from qtpy.QtWidgets import QApplication

    flags = Qt.KeyboardModifier.NoModifier
    for m in modifiers:
        flags |= {"Alt": Qt.KeyboardModifier.AltModifier,
                  "Shift": Qt.KeyboardModifier.ShiftModifier,
                  "Control": Qt.KeyboardModifier.ControlModifier}[m]
    mv.viewer.scene.camera.center = tuple(float(v) for v in np.asarray(world)[-2:])
    if zoom is not None:
        mv.viewer.scene.camera.zoom = zoom
    QApplication.processEvents()
    widget = canvas_of(mv).native
    pos = QPoint(*world_to_canvas(mv, world))
    QTest.mouseMove(widget, pos)
    QApplication.processEvents()
    if double:
        QTest.mouseDClick(widget, Qt.MouseButton.LeftButton, flags, pos)
    else:
        QTest.mouseClick(widget, Qt.MouseButton.LeftButton, flags, pos)
    QApplication.processEvents()
