"""fibsem-ophyd: Bluesky/Ophyd control of dual-beam FIB-SEM microscopes.

Start with :func:`setup_session`; plans live in :mod:`fibsem_ophyd.plans`.
"""

from .beams import BeamType, as_beam
from .config import ConfigError, MicroscopeConfig, load_config

__all__ = [
    "BeamType",
    "ConfigError",
    "MicroscopeConfig",
    "Session",
    "as_beam",
    "load_config",
    "setup_session",
]

__version__ = "0.1.0"


def __getattr__(name):
    # The session pulls in bluesky, ophyd and tiled: import it only when asked for, so the
    # pure modules (geometry, alignment) stay light to import.
    if name in ("Session", "setup_session"):
        from . import session

        return getattr(session, name)
    raise AttributeError(f"module 'fibsem_ophyd' has no attribute {name!r}")
