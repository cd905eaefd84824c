"""fibsem-ophyd: Bluesky/Ophyd control of dual-beam FIB-SEM microscopes.

Start with :func:`setup_session`; plans live in :mod:`fibsem_ophyd.plans`.
"""

from .beams import BeamType, as_beam
from .config import ConfigError, MicroscopeConfig, load_config
from .session import Session, setup_session

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
