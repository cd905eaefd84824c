"""Shared fixtures: a simulator session with a real embedded Tiled catalog in tmp_path."""

import pytest

SMALL = {
    "electron": {"resolution": [384, 256]},
    "ion": {"resolution": [384, 256]},
}


@pytest.fixture
def session(tmp_path, request):
    from fibsem_ophyd import setup_session

    # @pytest.mark.session_kwargs(suspenders=False): more setup_session arguments
    marker = request.node.get_closest_marker("session_kwargs")
    s = setup_session(config=SMALL, data_dir=tmp_path / "data", seed=1,
                      **(marker.kwargs if marker else {}))
    yield s
    s.close()


@pytest.fixture
def microscope(session):
    return session.microscope
