"""The microscope viewer: live "electron" and "ion" layers in metres, OpenFIBSEM's mouse
controls, milling patterns, and the widgets docked beside them."""

from __future__ import annotations

import time

import numpy as np

from ._driver import Driver, Frame
from ._frames import VIEW_GAP, ImageFrame
from ._keypoints import KeypointModel
from ._patterns import PatternModel

__all__ = ["MicroscopeViewer", "BEAMS"]

BEAMS = ("electron", "ion")


def _blank(settings: dict) -> tuple[np.ndarray, float]:
    w, h = (int(v) for v in settings.get("resolution", (1536, 1024)))
    return np.zeros((h, w), np.uint8), float(settings.get("hfw", 150e-6)) / w


class MicroscopeViewer:
    """napari viewer + a driver: what ``fibsem-ophyd gui`` opens.

    Parameters
    ----------
    driver : Driver
        :class:`~fibsem_ophyd.gui.InProcessDriver` (a session) or
        :class:`~fibsem_ophyd.gui.RemoteDriver` (queue server + Tiled server).
    viewer : napari.Viewer, optional
        Use this viewer (the napari plugin's case) instead of opening one.
    show : bool
        Show the window.
    widgets : bool
        Dock the imaging, movement, milling, minimap, batch and supervision widgets.

    Mouse (napari callbacks on the "electron" and "ion" layers, as in OpenFIBSEM):
    double-click: ``stable_move`` bringing the point to the centre; Alt + double-click in
    the ion view: ``vertical_move`` (refused in the electron view); Shift + click in the ion
    view: move the selected milling pattern there; Ctrl + Shift + click: move all patterns.
    """

    def __init__(self, driver: Driver, viewer=None, show: bool = True, widgets: bool = True):
        import napari

        self.driver = driver
        self.viewer = viewer if viewer is not None else napari.Viewer(
            title="fibsem-ophyd", show=show)
        self.frames: dict[str, ImageFrame] = {}
        self.layers = {}
        self.acquire_after_move = True
        self.messages: list[str] = []
        #: the last handled click: (beam, action, image x, image y in m)
        self.last_click: tuple | None = None
        #: seconds from acquisition to display of the last frame of each beam
        self.display_latency: dict[str, float] = {}
        #: image layers besides the two views that take the focus under the mouse (the
        #: minimap's mosaic), so each one's clicks reach it
        self.hover_layers: list[str] = []
        for beam in BEAMS:
            data, px = _blank(driver.image_settings(beam))
            frame = ImageFrame(data.shape, px)
            if beam == "ion":
                frame = ImageFrame(data.shape, px, self._ion_offset(frame))
            layer = self.viewer.add_image(data, name=beam, colormap="gray",
                                          contrast_limits=(0, 255), units=("m", "m"),
                                          **frame.layer_kwargs())
            layer.mouse_double_click_callbacks.append(self._on_double_click)
            layer.mouse_drag_callbacks.append(self._on_press)
            self.frames[beam], self.layers[beam] = frame, layer
        self.patterns = PatternModel(self.viewer, self.frames["ion"])
        #: the keypoints of a paused supervised detection (layer "keypoints" while one waits)
        self.keypoints = KeypointModel(self.viewer)
        self.viewer.layers.selection.active = self.layers["electron"]
        self.viewer.mouse_move_callbacks.append(self._follow_mouse)
        self.viewer.canvas.overlays.scale_bar.visible = True  # in metres: the layers' units
        self.viewer.reset_view()
        driver.frame.connect(self.show_frame)
        driver.message.connect(self.notify)
        self.widgets = {}
        if widgets:
            from ._widgets import add_widgets

            self.widgets = add_widgets(self)

    # -- placement ------------------------------------------------------------------------------
    def _ion_offset(self, ion: ImageFrame) -> float:
        # the ion view beside the electron view, a small gap between the two fields
        e = self.frames["electron"]
        return e.width / 2 + e.width * VIEW_GAP + ion.width / 2

    # -- frames -----------------------------------------------------------------------------------
    def show_frame(self, frame: Frame) -> None:
        """Show a frame in its beam's layer (Qt thread), placed in metres."""
        beam = frame.beam
        if beam not in self.layers:
            return
        data = np.asarray(frame.data)
        if beam == "ion":
            offset = self._ion_offset(ImageFrame(data.shape, frame.pixel_size))
        else:
            offset = 0.0
        placed = ImageFrame(data.shape, frame.pixel_size, offset, *frame.centre)
        layer = self.layers[beam]
        if placed != self.frames[beam]:
            kw = placed.layer_kwargs()
            layer.scale, layer.translate = kw["scale"], kw["translate"]
        layer.data = data
        self.frames[beam] = placed
        if beam == "electron" and self.frames["ion"].offset_x != self._ion_offset(
                self.frames["ion"]):
            # the electron field changed: move the ion view beside it again
            ion = self.frames["ion"]
            moved = ImageFrame(ion.shape, ion.pixel_size, self._ion_offset(ion), ion.centre_x,
                           ion.centre_y)
            kw = moved.layer_kwargs()
            self.layers["ion"].scale, self.layers["ion"].translate = kw["scale"], kw["translate"]
            self.frames["ion"] = moved
        self.patterns.set_frame(self.frames["ion"])  # no-op unless the ion view moved
        if frame.acquired:
            self.display_latency[beam] = time.time() - frame.acquired

    # -- messages ---------------------------------------------------------------------------------
    def notify(self, text: str) -> None:
        """Tell the user (status bar and the log of messages)."""
        self.messages.append(text)
        self.viewer.status = text
        try:
            from napari.utils.notifications import show_info

            show_info(text)
        except Exception:  # noqa: BLE001 -- a headless viewer has no notification area
            pass

    # -- mouse ------------------------------------------------------------------------------------
    def _follow_mouse(self, viewer, event) -> None:
        # the image under the mouse becomes the active layer, so its click callbacks run;
        # the patterns layer keeps the focus while it is being edited
        active = viewer.layers.selection.active
        if active is not None and active.name not in (*BEAMS, *self.hover_layers):
            return
        under = None
        for beam in BEAMS:
            x, y = self.frames[beam].world_to_image(event.position)
            if self.frames[beam].contains(x, y):
                under = self.layers[beam]
                break
        for name in self.hover_layers:
            if under is None and name in viewer.layers:
                layer = viewer.layers[name]
                row, col = (float(v) for v in layer.world_to_data(event.position)[-2:])
                h, w = layer.data.shape[-2:]
                if -0.5 <= row < h - 0.5 and -0.5 <= col < w - 0.5:
                    under = layer
        if under is not None and active is not under:
            viewer.layers.selection.active = under

    def _click_point(self, layer, event) -> tuple[str, float, float] | None:
        # whichever image layer is active gets the callback: the beam is the view under the
        # mouse (the two views do not overlap)
        for beam in BEAMS:
            x, y = self.frames[beam].world_to_image(event.position)
            if self.frames[beam].contains(x, y):
                return beam, x, y
        return None

    def _on_double_click(self, layer, event) -> None:
        hit = self._click_point(layer, event)
        if hit is None:
            return
        beam, x, y = hit
        mods = {str(getattr(m, "name", m)) for m in event.modifiers}
        if "Alt" in mods:
            if beam != "ion":
                self.notify("vertical move is only available in the ion beam "
                            "(Alt + double-click in the ion view)")
                self.last_click = (beam, "refused", x, y)
                return
            self.last_click = (beam, "vertical_move", x, y)
            # bring the point to the centre: the sample moves vertically in the chamber
            self.move("vertical_move", dy=-y, dx=-x)
            return
        self.last_click = (beam, "stable_move", x, y)
        self.move("stable_move", dx=-x, dy=-y, beam=beam)

    def move(self, plan: str, **kwargs) -> bool:
        """Run a movement plan, then (if ``acquire_after_move``) new images of both beams."""
        from ._driver import Call

        calls = [Call(plan, ("microscope",), kwargs)]
        if self.acquire_after_move:
            calls += [Call("acquire_image", ("sem",)), Call("acquire_image", ("fib",))]
        return self.driver.submit(calls)

    def _on_press(self, layer, event):
        mods = {str(getattr(m, "name", m)) for m in event.modifiers}
        if "Shift" not in mods:
            return
        hit = self._click_point(layer, event)
        if hit is None:
            return
        beam, x, y = hit
        if beam != "ion":
            self.notify("milling patterns are placed in the ion beam (Shift + click there)")
            return
        try:
            if "Control" in mods:
                d = self.patterns.move_all_to(x, y)
                self.last_click = (beam, "move_all_patterns", x, y)
            else:
                d = self.patterns.move_selected_to(x, y)
                self.last_click = (beam, "move_pattern", x, y)
        except ValueError as exc:
            self.notify(str(exc))
            return
        self.notify(f"pattern moved by ({d[0] * 1e6:.2f}, {d[1] * 1e6:.2f}) um")
        yield
