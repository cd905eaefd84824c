"""Screenshots of the viewer and of each widget for the README (docs/screenshots/), taken
from the running viewer; each must show what it is meant to."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from qtpy.QtGui import QImage

from fibsem_ophyd.milling import MillingStage, Trench

SHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"


def _read_png(path: Path) -> np.ndarray:
    img = QImage(str(path)).convertToFormat(QImage.Format.Format_RGBA8888)
    assert not img.isNull(), path
    ptr = img.constBits()
    ptr.setsize(img.sizeInBytes())
    return np.frombuffer(ptr, np.uint8).reshape(img.height(), img.bytesPerLine() // 4, 4)


def test_screenshots_of_the_viewer_and_each_widget(qtbot, mv):
    SHOTS.mkdir(parents=True, exist_ok=True)
    trench = MillingStage("trench", Trench(width=20e-6, upper_trench_height=6e-6,
                                           lower_trench_height=6e-6, spacing=1e-6,
                                           depth=1e-6), milling_current=2e-9, hfw=80e-6)
    mv.patterns.set_stages([trench])
    mv.viewer.window._qt_window.resize(1800, 1000)
    mv.widgets_panel.setCurrentWidget(mv.widgets["milling"])
    mv.viewer.reset_view()
    qtbot.wait(300)
    from imageio.v3 import imwrite

    imwrite(SHOTS / "viewer.png", mv.viewer.screenshot(canvas_only=False))
    canvas = mv.viewer.screenshot(canvas_only=True)
    # the images are grey: coloured pixels are the pattern's outline and fill, drawn in the
    # ion view (the right half), none over the electron view
    rgb = canvas[..., :3].astype(int)
    coloured = (rgb.max(-1) - rgb.min(-1)) > 40
    h, w = coloured.shape
    assert coloured[:, w // 2:].sum() > 20
    assert coloured[:, : int(0.4 * w)].sum() == 0
    grey = ((rgb.max(-1) - rgb.min(-1)) < 3) & (rgb[..., 0] > 20)
    cols = np.flatnonzero(grey.any(0))
    assert cols.size and (cols.max() - cols.min()) > 0.6 * w  # both views are shown
    panel = mv.widgets_panel
    for i, name in enumerate(mv.widgets):
        panel.setCurrentIndex(i)
        qtbot.wait(50)
        path = SHOTS / f"widget_{name}.png"
        assert mv.widgets[name].grab().save(str(path))
        img = _read_png(path)
        assert img.shape[0] > 100 and img.shape[1] > 100
        assert img[..., :3].std() > 5, name  # not a blank widget
    panel.setCurrentIndex(0)
    mv.viewer.window._qt_window.resize(1400, 900)


def test_screenshot_of_keypoint_supervision(qtbot, mv):
    """A paused supervised detection: its keypoints drawn (ring in the feature's colour,
    label) over the frame they were found in; docs/screenshots/keypoints.png."""
    from imageio.v3 import imwrite

    from fibsem_ophyd.gui._keypoints import LAYER

    from .conftest import canvas_of, run_and_wait, world_to_canvas
    from .test_keypoints import _lamella_frame, _press

    SHOTS.mkdir(parents=True, exist_ok=True)
    frame_data, px = _lamella_frame()
    mv.patterns.set_stages([])
    mv.viewer.window._qt_window.resize(1800, 1000)
    assert mv.driver.run("detect", "fib", features=["LamellaCentre", "ImageCentre"],
                         image=frame_data, pixel_size=px, supervised=True)
    qtbot.waitUntil(lambda: mv.keypoints.active, timeout=60_000)
    try:
        ion = mv.frames["ion"]
        native = canvas_of(mv).native
        mv.viewer.scene.camera.center = tuple(ion.image_to_world(0.0, 0.0))
        mv.viewer.scene.camera.zoom = 0.9 * min(native.width() / ion.width,
                                                native.height() / ion.height)
        qtbot.wait(300)
        imwrite(SHOTS / "keypoints.png", mv.viewer.screenshot(canvas_only=False))
        canvas = mv.viewer.screenshot(canvas_only=True)
        sy, sx = canvas.shape[0] / native.height(), canvas.shape[1] / native.width()
        rgb = canvas[..., :3].astype(int)
        coloured = (rgb.max(-1) - rgb.min(-1)) > 40  # the frame is grey
        layer = mv.viewer.layers[LAYER]
        assert len(layer.data) >= 1
        for world in np.asarray(layer.data, float):
            cx, cy = world_to_canvas(mv, world)
            r, c = int(cy * sy), int(cx * sx)
            # the point's ring or its label (yellow) within 30 px
            assert coloured[max(r - 30, 0):r + 31, max(c - 30, 0):c + 31].sum() > 10
    finally:
        run_and_wait(qtbot, mv, lambda: _press(mv.widgets["supervision"].abort_button))
        mv.viewer.window._qt_window.resize(1400, 900)
        mv.viewer.reset_view()
