"""``fibsem-ophyd gui`` and the napari plugin's widget."""

from __future__ import annotations

import os

__all__ = ["run_app", "plugin_widget"]


def run_app(args) -> int:
    """Open the viewer from the command line's arguments and run Qt until it closes."""
    import napari

    from ._viewer import MicroscopeViewer

    if args.queue_server:
        from ._remote import RemoteDriver

        api_key = args.api_key or os.environ.get("FIBSEM_OPHYD_TILED_API_KEY")
        driver = RemoteDriver.connect(args.queue_server, args.tiled_uri, api_key=api_key)
        session = None
    else:
        from .. import setup_session
        from ._driver import InProcessDriver

        session = setup_session(config=args.config, data_dir=args.data_dir, seed=args.seed,
                                serve=args.serve)
        driver = InProcessDriver(session)
    from . import _VIEWERS

    _VIEWERS.append(MicroscopeViewer(driver, show=True))
    if session is not None:
        driver.run("take_reference_images", "microscope")
    try:
        napari.run()
    finally:
        driver.close()
        if session is not None:
            session.close()
    return 0


def plugin_widget(napari_viewer):
    """The napari plugin's entry (npe2 ``napari.yaml``): the microscope widgets on a viewer
    the user opened, with a simulator session under ``$FIBSEM_OPHYD_DATA_DIR`` (or
    ``./fibsem_data``). Returns the panel of widgets (tabs), which napari docks."""
    from .. import setup_session
    from . import _VIEWERS
    from ._driver import InProcessDriver
    from ._viewer import MicroscopeViewer

    session = setup_session(config=os.environ.get("FIBSEM_OPHYD_CONFIG"))
    from ._widgets import add_widgets

    mv = MicroscopeViewer(InProcessDriver(session), viewer=napari_viewer, widgets=False)
    _VIEWERS.append(mv)
    mv.widgets = add_widgets(mv, dock=False)
    return mv.widgets_panel
