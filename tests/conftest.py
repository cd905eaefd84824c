"""Shared fixtures: a simulator session with a real embedded Tiled catalog in tmp_path."""

import pytest

SMALL = {
    "electron": {"resolution": [384, 256]},
    "ion": {"resolution": [384, 256]},
}


@pytest.fixture
def session(tmp_path):
    from fibsem_ophyd import setup_session

    s = setup_session(config=SMALL, data_dir=tmp_path / "data", seed=1)
    yield s
    s.close()


@pytest.fixture
def microscope(session):
    return session.microscope
