"""The microscope viewer (napari): live electron and ion images in metres, OpenFIBSEM's mouse
controls, milling patterns and the imaging, movement, milling, minimap, batch and
supervision widgets, driven in-process (a session) or remotely (queue server + Tiled).

Needs the ``gui`` extra (napari with a Qt binding, magicgui). Entry points:
``fibsem-ophyd gui``, :func:`viewer` (from IPython), and the napari plugin (``napari.yaml``).
"""

from __future__ import annotations

from ._app import plugin_widget, run_app
from ._driver import Call, Driver, Frame, InProcessDriver
from ._frames import ImageFrame
from ._viewer import BEAMS, MicroscopeViewer

__all__ = ["BEAMS", "Call", "Driver", "Frame", "ImageFrame", "InProcessDriver",
           "MicroscopeViewer", "microscope_viewer_of", "plugin_widget", "run_app", "viewer"]


def viewer(session, show: bool = True, widgets: bool = True):
    """Open the microscope viewer on ``session`` (from :func:`fibsem_ophyd.setup_session`)
    and return the ``napari.Viewer`` (:func:`microscope_viewer_of` gives its
    :class:`MicroscopeViewer`).

    Plans started from the window run on the session's RunEngine on a worker thread; the
    same session keeps working from IPython between them.
    """
    mv = MicroscopeViewer(InProcessDriver(session), show=show, widgets=widgets)
    _VIEWERS.append(mv)
    return mv.viewer


#: the open microscope viewers (their napari viewer does not hold them)
_VIEWERS: list[MicroscopeViewer] = []


def microscope_viewer_of(napari_viewer) -> MicroscopeViewer | None:
    """The :class:`MicroscopeViewer` opened on ``napari_viewer`` (``None`` if none)."""
    for mv in _VIEWERS:
        if mv.viewer is napari_viewer:
            return mv
    return None
