"""``setup_session``: configuration -> backend -> devices -> RunEngine -> catalog.

The only module that chooses a backend: devices and plans never import the simulator.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bluesky import RunEngine
from bluesky.run_engine import get_bluesky_event_loop, set_bluesky_event_loop
from bluesky.suspenders import SuspendBoolHigh

from . import _bluesky_compat, validate
from .backend import MicroscopeBackend
from .config import MicroscopeConfig, load_config
from .devices import (
    CatalogLookup,
    FaultWatch,
    FibsemMicroscope,
    check_positions_file,
    make_microscope,
)
from .plans._safety import note_suspension
from .plans._util import explain_failures
from .plans.stored_runs import batch_coating, batch_state
from .storage import (
    CatalogWriter,
    StorageError,
    open_catalog,
    open_remote_catalog,
    serve_catalog,
)
from .storage.writer import FSYNC_EVERY, checked_fsync_every

__all__ = ["Session", "setup_session", "DEFAULT_DATA_DIR", "BACKENDS", "FaultSuspender"]

DEFAULT_DATA_DIR = "fibsem_data"

logger = logging.getLogger(__name__)

#: process umask while a session runs: new files 0o640 and directories 0o750 (owner
#: read-write, group read, others nothing), so images, backups and the catalog's database
#: files are not readable by every account of the machine
DEFAULT_UMASK = 0o027

#: seconds between the interpreter's thread switches (Python's default is 0.005). The
#: RunEngine thread waits on detector threads and shares the interpreter with the catalog
#: writer; a 1 ms switch interval lets it take the interpreter back sooner. Measured with
#: benchmarks/bench_store.py: 0.44 -> 0.68 (in-process catalog), 0.77 -> 0.90 (served).
SWITCH_INTERVAL = 0.001


class _ProcessChanges:
    """What sessions change in the interpreter: bluesky's ``Plan`` class
    (:mod:`fibsem_ophyd._bluesky_compat`) and the switch interval while any is open, bluesky's
    process-wide event loop (each RunEngine sets its own), the simulator's shared worker
    threads (started by its first frame). The last session to close undoes them (a switch
    interval changed since by someone else is left alone)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open = 0
        self._switch: float | None = None
        self._loop: Any = None
        self._patched = False

    @property
    def open_sessions(self) -> int:
        return self._open

    def acquire(self) -> None:
        with self._lock:
            if self._open == 0:
                self._loop = get_bluesky_event_loop()  # each RunEngine sets its own
                self._switch = sys.getswitchinterval()
                # ours to undo only if it was not installed before the first session
                self._patched = (not _bluesky_compat.installed()
                                 and _bluesky_compat.install())
                if self._switch > SWITCH_INTERVAL:
                    sys.setswitchinterval(SWITCH_INTERVAL)
            self._open += 1

    def release(self) -> None:
        with self._lock:
            self._open -= 1
            if self._open > 0:
                return
            if self._switch is not None and sys.getswitchinterval() == SWITCH_INTERVAL:
                sys.setswitchinterval(self._switch)
            self._switch = None
            if self._patched:
                _bluesky_compat.uninstall()
            self._patched = False
            current = get_bluesky_event_loop()
            if current is None or current.is_closed():
                set_bluesky_event_loop(self._loop)
            self._loop = None
            workers = sys.modules.get("fibsem_ophyd.sim._workers")
            if workers is not None:
                workers.shutdown()


_PROCESS = _ProcessChanges()


class _StoringRunEngine(RunEngine):
    """A RunEngine that returns only once the catalog holds everything the plan produced,
    and whose failed runs say why.

    Every plan runs inside :func:`~fibsem_ophyd.plans._util.explain_failures`, so a run that
    fails on a device's failed status closes with the device's own error as its stop
    ``reason`` (e.g. "milling failed at pass 4 of 8: the ion beam went off (beam trip)"),
    not the status' repr. A run the catalog did not store completely raises
    ``StorageError`` (its backup file and the recovering call in the message; the
    RunEngine's result in ``.result``) instead of returning a uid that is not in the
    catalog. When the plan itself raised, its exception is the one raised, with the storage
    failure added as a note.
    """

    _writer: CatalogWriter | None = None

    def __call__(self, *args, **kwargs):
        if args and args[0] is not None:
            plan = args[0]
            wrapped = explain_failures(plan)
            # the start document's default plan_name is the plan's __name__
            wrapped.__name__ = getattr(plan, "__name__", wrapped.__name__)
            args = (wrapped, *args[1:])
        return self._stored(super().__call__, *args, **kwargs)

    def resume(self):
        return self._stored(super().resume)

    # a paused run ends inside these calls: return once its stop document is stored too
    def abort(self, reason=""):
        return self._stored(super().abort, reason)

    def stop(self):
        return self._stored(super().stop)

    def halt(self):
        return self._stored(super().halt)

    def _stored(self, call, *args, **kwargs):
        if self._writer is None:
            return call(*args, **kwargs)
        try:
            result = call(*args, **kwargs)
        except BaseException as exc:
            try:
                self._writer.wait(raise_errors=True)
            except Exception as storage_exc:  # never in place of the plan's own error
                exc.add_note(f"Storing the run(s) also failed: "
                             f"{type(storage_exc).__name__}: {storage_exc}")
            raise
        try:
            self._writer.wait(raise_errors=True)
        except StorageError as exc:
            exc.result = result
            raise
        return result


class FaultSuspender(SuspendBoolHigh):
    """Suspend while a :class:`~fibsem_ophyd.devices.FaultSignal` is high (vacuum lost, beam
    tripped); the run records "suspended" and "resumed" events with the reason in its stream
    "suspensions" (:func:`~fibsem_ophyd.plans._safety.note_suspension`)."""

    def __init__(self, signal, microscope: FibsemMicroscope, what: str, **kwargs):
        self.what = what
        super().__init__(
            signal, tripped_message=what,
            pre_plan=lambda: note_suspension(microscope, "suspended", self.reason),
            post_plan=lambda: note_suspension(microscope, "resumed", self.reason), **kwargs)

    @property
    def reason(self) -> str:
        return f"{self.what} ({self._sig.name})"


def _fault_suspenders(microscope: FibsemMicroscope) -> list[FaultSuspender]:
    whats = ("vacuum lost", "electron beam tripped", "ion beam tripped")
    return [FaultSuspender(sig, microscope, what)
            for sig, what in zip(microscope.fault_signals(), whats, strict=True)]


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
    #: the suspenders installed on ``RE`` (vacuum loss, beam trips); empty if opted out
    suspenders: list = field(default_factory=list)

    def close(self) -> None:
        """Undo what the session started and changed: remove the suspenders, stop the fault
        watch, flush the writer and stop its thread, close the detectors and the simulator
        the session made, close the catalog's client (and a served catalog), stop the
        RunEngine's event-loop thread; the last session open also gives the process back
        what it changed (see the README). Idempotent; ``RE`` is unusable afterwards."""
        if self.extras.get("closed"):
            return
        self.extras["closed"] = True
        try:
            for sup in self.suspenders:
                self.RE.remove_suspender(sup)
            self.suspenders = []
            if self.microscope.fault_watch is not None:
                self.microscope.fault_watch.stop()
                self.microscope.fault_watch = None
            self.writer.close()
            self.microscope.close()
            if self.extras.get("owns_backend") and hasattr(self.backend, "close"):
                self.backend.close()
        finally:
            _restore_umask(self.extras.pop("umask", None))
            try:
                # the client's connections and threads (an in-process catalog's too)
                self.catalog.context.close()
                server = self.extras.get("catalog_server")
                if server is not None:
                    server.close()
            finally:
                _stop_loop(self.RE, self.extras.get("previous_bluesky_loop"))
                _PROCESS.release()


def _stop_loop(RE: RunEngine, previous) -> None:
    """Stop the thread running ``RE``'s event loop, close the loop, and point bluesky's
    process-wide event loop back at what it was."""
    loop = RE.loop
    if loop.is_running():
        loop.call_soon_threadsafe(loop.stop)
        RE._th.join(10)
    if not loop.is_running() and not loop.is_closed():
        loop.close()
    if get_bluesky_event_loop() is loop:
        set_bluesky_event_loop(previous if previous is not None and not previous.is_closed()
                               else None)


def _checked_umask(umask: Any) -> int | None:
    if umask is not None and (isinstance(umask, bool) or not isinstance(umask, int)
                              or not 0 <= umask <= 0o777):
        raise ValueError(f"umask must be None or an integer 0..0o777 (e.g. 0o027), "
                         f"not {umask!r}")
    return umask


def _apply_umask(umask: int, dirs: list[Path]) -> tuple[int, int]:
    """Set the process umask; take what it withholds from the existing ``dirs`` too.

    Returns ``(umask, previous umask)``. A data directory made by an earlier session with
    a looser umask is tightened (``mode & ~umask``), so what it holds is no longer
    reachable by the accounts the umask excludes; directories of another owner are left
    as they are (logged).
    """
    previous = os.umask(umask)
    for d in dirs:
        try:
            mode = d.stat().st_mode & 0o7777
            if mode & umask:
                d.chmod(mode & ~umask)
        except OSError as exc:
            logger.warning("could not restrict the permissions of %s: %s", d, exc)
    return umask, previous


def _restore_umask(applied: tuple[int, int] | None) -> None:
    """Give the process its umask back, unless it was changed since the session set it."""
    if applied is None:
        return
    ours, previous = applied
    current = os.umask(previous)
    if current != ours:
        os.umask(current)


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
    backup_fsync_every: int = FSYNC_EVERY,
    umask: int | None = DEFAULT_UMASK,
    suspenders: bool = True,
    fault_poll_period: float = 0.1,
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
    backup_fsync_every : int
        fsync each run's JSON-lines backup every this many documents and at its stop
        (default 100: a power cut loses at most that many; why 100: ``FSYNC_EVERY`` in
        ``fibsem_ophyd.storage.writer``); 0 never fsyncs.
    umask : int or None
        The process umask while the session runs (restored by ``close``): default 0o027,
        files 0o640 and directories 0o750, private to the owner and group (images,
        backups, the catalog's database files, a served catalog's files); existing
        directories of the data directory are tightened alike. 0o007 shares write access
        with the group; ``None`` leaves the process's umask and modes alone.
    suspenders : bool
        Suspend a running plan while the vacuum is lost or a beam has tripped, and resume it
        when that clears (``Session.suspenders``; a thread polls the faults every
        ``fault_poll_period`` s). ``False``: such a fault fails the run instead.
    """
    checked_fsync_every(backup_fsync_every)
    _checked_umask(umask)
    if suspenders:
        fault_poll_period = validate.positive("fault_poll_period", fault_poll_period, units="s")
    cfg = load_config(config)
    be = _make_backend(backend, cfg, seed, config)  # before any directory is made
    cfg = be.config
    _PROCESS.acquire()
    try:
        return _build(cfg, be, isinstance(backend, str), data_dir, tiled_uri, api_key, serve,
                      suspenders, fault_poll_period, backup_fsync_every, umask)
    except BaseException:
        _PROCESS.release()
        raise


def _build(cfg, be, owns_backend, data_dir, tiled_uri, api_key, serve, suspenders,
           fault_poll_period, backup_fsync_every, umask) -> Session:
    data_dir = Path(data_dir or os.environ.get("FIBSEM_OPHYD_DATA_DIR", DEFAULT_DATA_DIR))
    data_dir = data_dir.expanduser().resolve()
    check_positions_file(data_dir / "positions.yaml", cfg.stage_limits())  # before any mkdir
    images_dir = data_dir / "images"
    extras: dict[str, Any] = {"owns_backend": owns_backend,
                              "previous_bluesky_loop": get_bluesky_event_loop()}
    if umask is not None:
        owned = [data_dir, images_dir, data_dir / "backup", data_dir / "data"]
        extras["umask"] = _apply_umask(umask, [d for d in owned if d.is_dir()])
    try:
        images_dir.mkdir(parents=True, exist_ok=True)
        microscope = make_microscope(be, images_dir)
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
                               close_streams=bool(tiled_uri), fsync_every=backup_fsync_every)
        # RE(plan) returns a RunEngineResult: .plan_result (e.g. a state or a uid),
        # .run_start_uids, .exit_status.
        RE = _StoringRunEngine({}, call_returns_result=True)
        RE._writer = writer
        RE.subscribe(writer)
        RE.md["instrument"] = cfg["info"].get("name", "fibsem")
        # which frames emitted events hold: a suspension takes the others again
        RE.subscribe(microscope.note_document)
        installed = []
        if suspenders:
            watch = FaultWatch(microscope.fault_signals(), period=fault_poll_period)
            watch.hold_failures = True
            microscope.fault_watch = watch
            installed = _fault_suspenders(microscope)
            for sup in installed:
                RE.install_suspender(sup)
            watch.start()
        return Session(RE=RE, microscope=microscope, catalog=catalog, backend=be,
                       data_dir=data_dir, config=cfg, writer=writer, extras=extras,
                       suspenders=installed)
    except BaseException:  # the process's umask back as it was
        _restore_umask(extras.pop("umask", None))
        raise
