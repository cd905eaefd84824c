"""``setup_session``: configuration -> backend -> devices -> RunEngine -> catalog.

The only module that chooses a backend: devices and plans never import the simulator.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bluesky import RunEngine

from . import _bluesky_compat
from .backend import MicroscopeBackend
from .config import MicroscopeConfig, load_config
from .devices import CatalogLookup, FibsemMicroscope, make_microscope
from .plans._util import explain_failures
from .plans.stored_runs import batch_coating, batch_state
from .storage import CatalogWriter, open_catalog, open_remote_catalog, serve_catalog

__all__ = ["Session", "setup_session", "DEFAULT_DATA_DIR", "BACKENDS"]

DEFAULT_DATA_DIR = "fibsem_data"

#: seconds between the interpreter's thread switches (Python's default is 0.005). The
#: RunEngine thread waits on detector threads and shares the interpreter with the catalog
#: writer; a 1 ms switch interval lets it take the interpreter back sooner. Measured with
#: benchmarks/bench_store.py: 0.44 -> 0.68 (in-process catalog), 0.77 -> 0.90 (served).
SWITCH_INTERVAL = 0.001


class _StoringRunEngine(RunEngine):
    """A RunEngine that returns only once the catalog holds everything the plan produced,
    and whose failed runs say why: every plan runs inside
    :func:`~fibsem_ophyd.plans._util.explain_failures`, so a run that fails on a device's
    failed status closes with the device's own error as its stop ``reason`` (e.g. "milling
    failed at pass 4 of 8: the ion beam went off (beam trip)"), not the status' repr."""

    _writer: CatalogWriter | None = None

    def __call__(self, *args, **kwargs):
        if args and args[0] is not None:
            plan = args[0]
            wrapped = explain_failures(plan)
            # the start document's default plan_name is the plan's __name__
            wrapped.__name__ = getattr(plan, "__name__", wrapped.__name__)
            args = (wrapped, *args[1:])
        try:
            return super().__call__(*args, **kwargs)
        finally:
            if self._writer is not None:
                self._writer.wait()

    def _stored(self, call, *args):
        try:
            return call(*args)
        finally:
            if self._writer is not None:
                self._writer.wait()

    def resume(self):
        return self._stored(super().resume)

    # a paused run ends inside these calls: return once its stop document is stored too
    def abort(self, reason=""):
        return self._stored(super().abort, reason)

    def stop(self):
        return self._stored(super().stop)

    def halt(self):
        return self._stored(super().halt)


@dataclass
class Session:
    """A ready microscope session.

    Attributes
    ----------
    RE : RunEngine
        Subscribed to the catalog writer (and its JSON-lines backup).
    microscope : FibsemMicroscope
        The top-level Ophyd device (``stage``, ``electron_beam``, ``ion_beam``, ``sem``,
        ``fib``, ``chamber``).
    catalog : tiled client
        Where runs are stored; ``catalog[uid]`` reads one back.
    backend : MicroscopeBackend
        The simulator or a hardware bridge.
    data_dir : Path
        Images (``images/``), catalog files and document backups (``backup/``).
    """

    RE: RunEngine
    microscope: FibsemMicroscope
    catalog: Any
    backend: MicroscopeBackend
    data_dir: Path
    config: MicroscopeConfig
    writer: CatalogWriter
    extras: dict = field(default_factory=dict)

    def close(self) -> None:
        """Flush the writer, stop its thread, close the detectors, stop a served catalog."""
        try:
            self.writer.close()
            self.microscope.close()
        finally:
            server = self.extras.get("catalog_server")
            if server is not None:
                # the HTTP client's pooled connections, else they leak (ResourceWarning)
                self.catalog.context.close()
                server.close()


#: backends ``setup_session`` builds by name
BACKENDS = ("sim", "openfibsem")


def _make_backend(backend: str | MicroscopeBackend, config: MicroscopeConfig,
                  seed: int, source: Any = None) -> MicroscopeBackend:
    if isinstance(backend, str):
        if backend == "sim":
            from .sim import SimulatedMicroscope

            return SimulatedMicroscope(config, seed=seed)
        if backend == "openfibsem":
            if not isinstance(source, (str, Path)):
                raise ValueError("backend='openfibsem' needs config=<path of an OpenFIBSEM "
                                 "microscope-configuration.yaml>")
            from .backends.openfibsem import connect  # imports fibsem only now

            return connect(source)
        raise ValueError(f"unknown backend {backend!r}; available: {list(BACKENDS)} (or pass "
                         "a backend object implementing fibsem_ophyd.backend.MicroscopeBackend)")
    if not isinstance(backend, MicroscopeBackend):
        raise TypeError(f"backend {backend!r} does not implement MicroscopeBackend")
    return backend


def setup_session(
    config: str | Path | dict | None = None,
    data_dir: str | Path | None = None,
    backend: str | MicroscopeBackend = "sim",
    seed: int = 0,
    tiled_uri: str | None = None,
    api_key: str | None = None,
    serve: bool = False,
) -> Session:
    """Build a session: microscope devices on a backend, a RunEngine, a Tiled catalog.

    Parameters
    ----------
    config : str, Path or dict, optional
        Microscope configuration (OpenFIBSEM layout): a YAML path or a dict merged over the
        packaged default. Malformed input raises ``ConfigError`` before anything starts.
    data_dir : str or Path, optional
        Where images, the embedded catalog and backups go (default ``./fibsem_data`` or
        ``$FIBSEM_OPHYD_DATA_DIR``).
    backend : str or MicroscopeBackend
        ``"sim"`` (the simulator), ``"openfibsem"`` (the OpenFIBSEM bridge: ``config`` is
        then an OpenFIBSEM ``microscope-configuration.yaml`` and the manufacturer it names is
        connected: Demo, ThermoFisher, Tescan, Odemis) or a backend object. A bad name, a
        missing package or SDK, or a refused connection raises before any device exists.
    seed : int
        Simulator seed: same seed, same images.
    tiled_uri, api_key : str, optional
        Write to a Tiled server instead of the embedded catalog.
    serve : bool
        Serve the embedded catalog (same files) from a child process on localhost instead of
        a thread of this process: the catalog's work then no longer competes with the
        RunEngine for the GIL (faster acquisition; a few seconds more to start).
    """
    cfg = load_config(config)
    be = _make_backend(backend, cfg, seed, config)  # before any directory is made
    cfg = be.config
    _bluesky_compat.install()
    if sys.getswitchinterval() > SWITCH_INTERVAL:
        sys.setswitchinterval(SWITCH_INTERVAL)
    data_dir = Path(data_dir or os.environ.get("FIBSEM_OPHYD_DATA_DIR", DEFAULT_DATA_DIR))
    data_dir = data_dir.expanduser().resolve()
    images_dir = data_dir / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    microscope = make_microscope(be, images_dir)
    extras = {}
    if tiled_uri:
        catalog = open_remote_catalog(tiled_uri, api_key=api_key)
    elif serve:
        extras["catalog_server"] = serve_catalog(data_dir)
        catalog = extras["catalog_server"].client()
    else:
        catalog = open_catalog(data_dir)
    microscope.store = CatalogLookup(name=f"{microscope.name}_store", catalog=catalog,
                                     queries={"batch_state": batch_state,
                                              "batch_coating": batch_coating})
    # The embedded catalog (in-process or served by us) has no live-streaming cache, so
    # Tiled's close_stream requests (4 per run) would do nothing there: skip them.
    writer = CatalogWriter(catalog, backup_dir=data_dir / "backup",
                           close_streams=bool(tiled_uri))
    # RE(plan) returns a RunEngineResult: .plan_result (e.g. a state or a uid),
    # .run_start_uids, .exit_status.
    RE = _StoringRunEngine({}, call_returns_result=True)
    RE._writer = writer
    RE.subscribe(writer)
    RE.md["instrument"] = cfg["info"].get("name", "fibsem")
    return Session(RE=RE, microscope=microscope, catalog=catalog, backend=be,
                   data_dir=data_dir, config=cfg, writer=writer, extras=extras)
