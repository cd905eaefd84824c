"""The private-API module refuses bluesky-tiled-plugins/Tiled versions it was not written for."""

from importlib.metadata import version

import pytest

from fibsem_ophyd.storage import _tiled_private as tp


def test_installed_versions_are_in_the_supported_ranges():
    assert tp.check_bluesky_tiled_plugins() == version("bluesky-tiled-plugins")
    assert tp.check_tiled() == version("tiled")


@pytest.mark.parametrize("found", ["2.0.11", "2.1.0", "3.0.0"])
def test_other_bluesky_tiled_plugins_versions_name_the_range(found):
    with pytest.raises(tp.UnsupportedVersion) as info:
        tp.check_bluesky_tiled_plugins(found)
    msg = str(info.value)
    assert f"bluesky-tiled-plugins {found} is installed" in msg
    assert ">=2.0.12" in msg and "<2.1" in msg and "_tiled_private.py" in msg


def test_other_tiled_versions_name_the_range():
    with pytest.raises(tp.UnsupportedVersion, match=r"tiled 0\.3\.0 is installed"):
        tp.check_tiled("0.3.0")
