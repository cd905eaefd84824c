"""Session: backend, microscope devices, RunEngine and catalog (``setup_session``)."""

import atexit
import importlib

from fibsem_ophyd import setup_session


def _backend_from_env(spec, config):
    """``"sim"`` or ``"package.module:attr"`` (a backend object or a factory of one)."""
    if spec == "sim" or ":" not in spec:
        return spec
    module, _, attr = spec.partition(":")
    obj = getattr(importlib.import_module(module), attr)
    if callable(obj) and not hasattr(obj, "acquire_image"):
        from fibsem_ophyd.config import load_config

        obj = obj(load_config(config))
    return obj


session = setup_session(
    config=FIBSEM_ENV["config"],  # noqa: F821  (00-base.py)
    data_dir=FIBSEM_ENV["data_dir"],  # noqa: F821
    backend=_backend_from_env(FIBSEM_ENV["backend"], FIBSEM_ENV["config"]),  # noqa: F821
    seed=FIBSEM_ENV["seed"],  # noqa: F821
    tiled_uri=FIBSEM_ENV["tiled_uri"],  # noqa: F821
    api_key=FIBSEM_ENV["api_key"],  # noqa: F821
    serve=FIBSEM_ENV["serve"] and not FIBSEM_ENV["tiled_uri"],  # noqa: F821
)
atexit.register(session.close)

RE = session.RE
microscope = session.microscope
#: Tiled client of the run catalog: ``catalog[uid]``, ``catalog[-1]``, ``catalog.search(...)``
catalog = session.catalog

stage = microscope.stage
electron_beam = microscope.electron_beam
ion_beam = microscope.ion_beam
sem = microscope.sem
fib = microscope.fib
chamber = microscope.chamber
gis = microscope.gis
sputter_coater = microscope.sputter_coater
manipulator = microscope.manipulator
