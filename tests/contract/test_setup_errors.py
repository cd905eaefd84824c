"""Bad input to ``setup_session``: a clear error before any device or directory exists."""

import sys
from pathlib import Path

import pytest
import yaml

from fibsem_ophyd import setup_session

from .conftest import demo_config


def _config_with(tmp_path, **info) -> Path:
    data = yaml.safe_load(Path(demo_config()).read_text())
    data["info"].update(info)
    path = tmp_path / "microscope-configuration.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_unknown_backend_name(tmp_path):
    with pytest.raises(ValueError, match="unknown backend 'hitachi'.*openfibsem"):
        setup_session(backend="hitachi", data_dir=tmp_path / "data")
    assert not (tmp_path / "data").exists()


def test_fibsem_not_installed(tmp_path, monkeypatch):
    from fibsem_ophyd.backends.openfibsem import OpenFibsemError

    config = demo_config()  # read while fibsem still imports
    monkeypatch.setitem(sys.modules, "fibsem", None)  # import fibsem now fails
    with pytest.raises(OpenFibsemError, match=r"fibsem-ophyd\[openfibsem\]"):
        setup_session(config=config, backend="openfibsem", data_dir=tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_manufacturer_fibsem_cannot_drive(tmp_path):
    from fibsem_ophyd.backends.openfibsem import OpenFibsemError

    cfg = _config_with(tmp_path, manufacturer="Zeiss")
    with pytest.raises(OpenFibsemError, match="'Zeiss'.*supported"):
        setup_session(config=cfg, backend="openfibsem", data_dir=tmp_path / "d")
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("manufacturer, sdk", [("ThermoFisher", "AutoScript"),
                                               ("Tescan", "TESCAN")])
def test_vendor_sdk_missing(tmp_path, manufacturer, sdk):
    import fibsem.microscope
    from fibsem.microscopes import tescan

    from fibsem_ophyd.backends.openfibsem import OpenFibsemError

    available = {"ThermoFisher": fibsem.microscope.THERMO_API_AVAILABLE,
                 "Tescan": tescan.TESCAN_API_AVAILABLE}[manufacturer]
    if available:
        pytest.skip(f"the {manufacturer} SDK is installed here")
    cfg = _config_with(tmp_path, manufacturer=manufacturer)
    with pytest.raises(OpenFibsemError, match=f"{manufacturer} needs the {sdk}"):
        setup_session(config=cfg, backend="openfibsem", data_dir=tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_openfibsem_needs_a_configuration_file(tmp_path):
    from fibsem_ophyd.backends.openfibsem import OpenFibsemError

    with pytest.raises(ValueError, match="needs config="):
        setup_session(backend="openfibsem", data_dir=tmp_path / "d")
    with pytest.raises((OpenFibsemError, ValueError)):
        setup_session(config=tmp_path / "nope.yaml", backend="openfibsem",
                      data_dir=tmp_path / "d")
    assert not (tmp_path / "d").exists()
