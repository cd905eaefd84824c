"""fibsem-ophyd profile collection: environment and run mode.

Environment variables (all optional):

- ``FIBSEM_OPHYD_BACKEND``: ``sim`` (default, the simulated microscope) or
  ``package.module:attribute`` naming a ``MicroscopeBackend`` object or a factory called with
  the loaded configuration.
- ``FIBSEM_OPHYD_CONFIG``: microscope configuration YAML (OpenFIBSEM layout), merged over the
  packaged default.
- ``FIBSEM_OPHYD_DATA_DIR``: images, embedded catalog and document backups
  (default ``./fibsem_data``).
- ``FIBSEM_OPHYD_TILED_URI`` / ``FIBSEM_OPHYD_TILED_API_KEY``: write runs to a Tiled server
  instead of the embedded catalog.
- ``FIBSEM_OPHYD_SERVE``: ``1`` serves the embedded catalog from a child process
  (``setup_session(serve=True)``: a few seconds more to start, plans that store many runs
  run up to ~40 % faster); ``0`` (default) keeps it in this process.
- ``FIBSEM_OPHYD_SEED``: simulator seed (default 0).
- ``FIBSEM_OPHYD_ZMQ_ADDRESS``: publish every document to a ``bluesky-0MQ-proxy`` input
  (``host:port``).

The same files run in IPython (``ipython --profile-dir=profile_collection``) and in the
Bluesky queue server's worker (``start-re-manager --startup-dir profile_collection/startup``).
In the worker nothing asks for input and nothing opens a plot window.
"""

import logging
import os
import sys

from bluesky_queueserver import is_re_worker_active

#: True in the queue server's worker (and in ``qserver-list-plans-devices``).
RE_WORKER = is_re_worker_active()


def _in_ipython() -> bool:
    try:
        from IPython import get_ipython as _get_ipython
    except ImportError:
        return False
    return _get_ipython() is not None and not RE_WORKER


#: True in an interactive IPython shell (not the worker, whose ``get_ipython`` is a stub).
IN_IPYTHON = _in_ipython()
#: True where a terminal is attached (progress bars make sense).
HAS_TERMINAL = (not RE_WORKER) and sys.stdout is not None and sys.stdout.isatty()
#: True where a plot window could open.
HAS_DISPLAY = (not RE_WORKER) and (
    sys.platform in ("darwin", "win32")
    or bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
)

if not HAS_DISPLAY:
    import matplotlib

    matplotlib.use("Agg")


def _flag(name: str) -> bool:
    value = (os.environ.get(name) or "0").strip().lower()
    if value not in ("0", "1", "true", "false", "yes", "no"):
        raise ValueError(f"{name}={os.environ[name]!r}: expected 0/1 (or true/false, yes/no)")
    return value in ("1", "true", "yes")


FIBSEM_ENV = {
    "backend": os.environ.get("FIBSEM_OPHYD_BACKEND") or "sim",
    "config": os.environ.get("FIBSEM_OPHYD_CONFIG") or None,
    "data_dir": os.environ.get("FIBSEM_OPHYD_DATA_DIR") or None,
    "tiled_uri": os.environ.get("FIBSEM_OPHYD_TILED_URI") or None,
    "api_key": os.environ.get("FIBSEM_OPHYD_TILED_API_KEY") or None,
    "seed": int(os.environ.get("FIBSEM_OPHYD_SEED") or 0),
    "zmq_address": os.environ.get("FIBSEM_OPHYD_ZMQ_ADDRESS") or None,
    "serve": _flag("FIBSEM_OPHYD_SERVE"),
}

logging.getLogger("fibsem_ophyd").setLevel(logging.INFO)
