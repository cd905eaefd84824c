"""The napari plugin manifest (npe2) is valid and its widget command is ours."""

from __future__ import annotations

import inspect
from pathlib import Path

import fibsem_ophyd.gui


def test_manifest_validates_and_names_the_widget_factory():
    from npe2 import PluginManifest

    path = Path(fibsem_ophyd.gui.__file__).with_name("napari.yaml")
    manifest = PluginManifest.from_file(path)
    assert manifest.name == "fibsem-ophyd"  # the distribution's name, as npe2 requires
    (command,) = manifest.contributions.commands
    (widget,) = manifest.contributions.widgets
    assert widget.command == command.id
    module, _, attr = command.python_name.partition(":")
    factory = getattr(__import__(module, fromlist=[attr]), attr)
    assert factory is fibsem_ophyd.gui.plugin_widget
    # napari passes the viewer by this parameter name
    assert list(inspect.signature(factory).parameters) == ["napari_viewer"]


def test_pyproject_registers_the_manifest_and_the_gui_extra():
    import tomllib

    root = Path(fibsem_ophyd.gui.__file__).resolve().parents[2]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    entry = project["entry-points"]["napari.manifest"]["fibsem-ophyd"]
    package, _, name = entry.partition(":")
    assert (root / package.replace(".", "/") / name).is_file()
    assert any(d.startswith("napari[pyqt6]") for d in project["optional-dependencies"]["gui"])
    # the core install stays lean: no Qt in the base dependencies
    assert not any("napari" in d or "qt" in d.lower() for d in project["dependencies"])
