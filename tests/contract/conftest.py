"""One contract suite, two backends: our simulator and OpenFIBSEM's Demo microscope through the
bridge (``FIBSEM_SIM_NO_DELAY=1``: the Demo's sleeps are off unless a test turns them on)."""

import os

import pytest

os.environ.setdefault("FIBSEM_SIM_NO_DELAY", "1")

BACKENDS = ("sim", "openfibsem")
SMALL = {"electron": {"resolution": [384, 256]}, "ion": {"resolution": [384, 256]}}


def demo_config() -> str:
    """OpenFIBSEM's own default configuration (manufacturer Demo)."""
    pytest.importorskip("fibsem")
    from fibsem.config import DEFAULT_CONFIGURATION_PATH

    return str(DEFAULT_CONFIGURATION_PATH)


def make_session(name: str, data_dir, sim_options: dict | None = None):
    from fibsem_ophyd import setup_session

    if name == "sim":
        config = {**SMALL, "sim": dict(sim_options or {})}
        return setup_session(config=config, data_dir=data_dir, seed=1)
    return setup_session(config=demo_config(), backend="openfibsem", data_dir=data_dir)


@pytest.fixture(scope="module", params=BACKENDS)
def session(request, tmp_path_factory):
    s = make_session(request.param, tmp_path_factory.mktemp(request.param) / "data")
    s.name = request.param
    yield s
    s.close()


@pytest.fixture(scope="module")
def microscope(session):
    return session.microscope
