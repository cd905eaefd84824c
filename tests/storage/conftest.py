"""Fixtures for the storage tests: real Tiled catalogs and real TIFF files in tmp_path."""

from __future__ import annotations

import pytest
from bluesky import RunEngine

from fibsem_ophyd.storage import backup_dir, images_dir, open_catalog

from ._device import TiffDetector


@pytest.fixture
def data_dir(tmp_path):
    """A fresh data directory."""
    return tmp_path / "data"


@pytest.fixture
def catalog(data_dir):
    """The embedded catalog of ``data_dir`` (in-process app); its client closed afterwards."""
    c = open_catalog(data_dir)
    yield c
    c.context.close()


@pytest.fixture
def RE():
    return RunEngine({}, call_returns_result=False)


@pytest.fixture
def writer(catalog, data_dir):
    """A CatalogWriter with a short latency; closed (and checked drained) afterwards."""
    from fibsem_ophyd.storage import CatalogWriter

    w = CatalogWriter(catalog, backup_dir(data_dir), latency=0.1)
    yield w
    assert w.close(timeout=60)


@pytest.fixture
def det(data_dir):
    """A small TIFF detector writing under ``<data_dir>/images``."""
    return TiffDetector(images_dir(data_dir), shape=(48, 64), seed=1)
