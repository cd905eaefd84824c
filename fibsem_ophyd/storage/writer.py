"""RunEngine callback that stores every document: JSON-lines backup + Tiled catalog.

:class:`CatalogWriter` is subscribed to the RunEngine (``RE.subscribe(writer)``). On the
RunEngine's thread it only

1. appends the document to ``<backup_dir>/<run uid>.jsonl`` (one ``{"name", "doc"}`` JSON
   object per line, the format of ``bluesky_tiled_plugins``' ``JSONLinesWriter``; flushed
   per document so a crash of the process keeps everything emitted so far, and fsynced at
   each run's stop and every ``fsync_every`` documents so a power cut loses at most that
   many), and
2. hands it to a background thread: per-frame documents (events, stream_datums) are only
   appended to its inbox; start, descriptor, resource and stop documents wake it.

The background thread feeds the documents, in order, to
:class:`bluesky_tiled_plugins.TiledWriter` and writes in batches: while a run is open it
wakes every ``latency`` seconds (default 1 s), takes everything handed over meanwhile and
writes it in one flush, the table rows and the new TIFF files as two concurrent requests.
When a write takes longer than ``latency`` the next one starts at once with everything
that piled up, so batches grow instead of the backlog. A stop document writes its run's
last rows and files, then the stop, so a reader that sees ``stop`` sees every frame.

Bounds: while the catalog keeps up, a frame is readable at most ``latency`` plus one
catalog write after the RunEngine emitted it; and the RunEngine never runs more than
``max_lag`` seconds (default 10 s) ahead of the catalog: it waits (back-pressure) while a
document handed over longer ago than that is still unwritten.

Errors in the background thread are logged, recorded in :attr:`CatalogWriter.errors`, and
the failing run is abandoned by the catalog writer (no further writes, in particular no
``stop``, so a partial run never looks complete); its JSON-lines backup stays complete and
:func:`fibsem_ophyd.storage.recover_run` (or :func:`~fibsem_ophyd.storage.replay_backup`)
writes it into the catalog once the catalog accepts writes again. Acquisition is not
interrupted by a catalog failure (the backup holds every document, so beam time is not
lost to a catalog hiccup); ``wait(raise_errors=True)`` raises :class:`StorageError` naming
each such run, its backup file and the call that recovers it.

Call :meth:`CatalogWriter.wait` after ``RE(...)`` returns to block until the catalog has
caught up, and :meth:`CatalogWriter.close` at the end of the session.

Cost, measured on a 2-core machine (100 frames, one run): each catalog request costs the
Tiled server 15-60 ms of CPU whatever its size, plus ~1.3 ms per registered file, so the
writer keeps requests few: 6 per run (run, stream, image node created with its first
frames, table, its first rows, stop) plus 2 per later flush. ``close_stream`` requests (4
per run) are sent after the run counts as written, or not at all to a catalog without a
live-streaming cache (``close_streams=False``). Events are not schema-checked a second
time on their way to the catalog (the RunEngine validated them when it composed them). With
the in-process catalog (:func:`~fibsem_ophyd.storage.open_catalog`) the Tiled server code
runs in this process and competes with the RunEngine for the GIL; with
:func:`~fibsem_ophyd.storage.serve_catalog` that work runs in a child process.

What this needs of bluesky-tiled-plugins' private API (flushing a run's caches before its
stop, creating an image node with its first frames, deferring ``close_stream``) is in
:mod:`fibsem_ophyd.storage._tiled_private`, which checks the installed version.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import traceback
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._json import dumps
from ._tiled_private import (
    HookedTiledWriter,
    flush_run_writer,
    normalizer_class,
    stop_deferring_stream_close,
)

__all__ = ["CatalogWriter", "WriteError", "StorageError", "BackupWriteError",
           "BufferedTiledWriter", "flush_run_writer", "FSYNC_EVERY"]

logger = logging.getLogger(__name__)

#: documents that come once per frame: handed over without waking the catalog thread,
#: which takes them in batches at its next periodic flush
_PER_FRAME = frozenset({"event", "event_page", "stream_datum", "datum", "datum_page"})
#: seconds between takes of per-frame documents while a run is open (processing them only
#: caches rows and files; the catalog is written every ``latency``)
_TAKE_INTERVAL = 0.1

#: default number of documents of a run between two fsyncs of its backup (and at its stop).
#: An fsync of the backup costs 2.5 ms on an idle virtio ext4 disk and 6-10 ms while TIFFs
#: are being written (ext4 commits their blocks with it). ``benchmarks/bench_store.py
#: --fsync`` (100 frames of 1536x1024, 2-core machine): every document (a frame is a
#: stream_datum and an event) costs 11.9 ms of fsync per frame on the RunEngine's thread
#: (runs 1.12x as long as without fsync); every 100 documents 0.31 ms per frame (~0.5 %,
#: within the noise: median ratio 0.99), while a power cut loses at most the last 100
#: documents of the backup (~50 frames of one detector, a few seconds of acquisition).
FSYNC_EVERY = 100


@dataclass
class WriteError:
    """A failure of the background catalog writer.

    Attributes
    ----------
    run_uid : str or None
        The run whose write failed (``None`` if it could not be determined).
    name : str
        The document name being processed, or ``"flush"`` for a batched write.
    exception : BaseException
        The exception raised.
    traceback : str
        Its formatted traceback.
    time : float
        POSIX time (s) of the failure.
    raised : bool
        Whether it was also raised into the RunEngine (a failed backup write fails its
        run there), so :class:`StorageError` does not report it a second time.
    """

    run_uid: str | None
    name: str
    exception: BaseException
    traceback: str = ""
    time: float = field(default_factory=time.time)
    raised: bool = False

    def __str__(self) -> str:
        return f"run {self.run_uid}: {self.name}: {self.exception!r}"


class BackupWriteError(RuntimeError):
    """A document could not be appended to its run's JSON-lines backup (disk full, ...).

    Raised into the RunEngine from the writer's callback, which fails the run there (its
    stop document has ``exit_status="fail"`` and this message as its reason): a run
    whose backup is incomplete could not be rebuilt if the catalog failed too. Once the
    backup of a run failed, no further document of that run is appended (the file stays
    a prefix of the run; a partly written last line is what the recovery tools skip);
    the catalog still receives every document except a failed ``stream_datum`` (its
    event never comes: the RunEngine fails the run first).

    Attributes
    ----------
    run_uid : str or None
        The run (``None`` for a document of no known run).
    path : pathlib.Path
        The backup file.
    """

    def __init__(self, run_uid: str | None, path: Path, name: str, exc: BaseException):
        super().__init__(
            f"the JSON-lines backup of run {run_uid} could not be written ({name} document "
            f"to {path}: {exc}); the run is stopped, since without a complete backup it "
            "could not be rebuilt if the catalog failed too: free space (or repair the "
            "backup directory) before the next run")
        self.run_uid = run_uid
        self.path = path


class StorageError(RuntimeError):
    """Runs that are not completely stored in the catalog.

    Raised by :meth:`CatalogWriter.wait` (``raise_errors=True``) and so by the session's
    ``RE(...)``: the RunEngine finished the plan, but the catalog refused (part of) a run.
    The message names each run, its JSON-lines backup and the call that writes it into
    the catalog.

    Attributes
    ----------
    errors : list of WriteError
        The failures, oldest first.
    backups : dict
        ``run uid -> pathlib.Path`` of each failed run's JSON-lines backup.
    result : object
        What the RunEngine returned (a ``RunEngineResult``: uids, exit status), set by
        the session's RunEngine; ``None`` otherwise.
    """

    def __init__(self, message: str, errors: list[WriteError], backups: dict[str, Path]):
        super().__init__(message)
        self.errors = errors
        self.backups = backups
        self.result: Any = None


class _RunGuard:
    """Per-run callback: forwards to the writer chain until the first error, then drops."""

    def __init__(self, owner: BufferedTiledWriter, uid: str, cb: Any, run_writer: Any):
        self.owner = owner
        self.uid = uid
        self.cb = cb
        self.run_writer = run_writer
        self.failed = False
        self.sent_assets: dict[str, int] = {}

    def __call__(self, name: str, doc: dict) -> None:
        if name == "stop":
            self.flush()  # so that stop has no cache left to re-register in full
        if not self.failed:
            try:
                if name == "stop":
                    self._stop(doc)
                else:
                    self.cb(name, doc)
            except Exception as exc:
                self.fail(name, exc)
        if name == "stop":
            self.owner._runs.pop(self.uid, None)

    def _stop(self, doc: dict) -> None:
        """The stop document, without closing the nodes' live streams on the way.

        ``_RunWriter.stop`` ends with one ``close_stream`` request per node (4 for a run
        with one image stream). They only notify live-stream subscribers, so they are
        kept off the path that makes the run complete: queued and sent after the run
        counts as written (``close_streams=True``), or not sent at all to a catalog
        without live streaming (``close_streams=False``).
        """
        closer = stop_deferring_stream_close(self.cb, self.run_writer, doc)
        if self.owner.close_streams:
            self.owner._deferred.append((self.uid, closer))

    def fail(self, name: str, exc: BaseException) -> None:
        self.failed = True
        self.owner._report(self.uid, name, exc)

    def flush(self) -> int:
        if self.failed:
            return 0
        try:
            return flush_run_writer(self.run_writer, self.sent_assets, self.owner._executor)
        except Exception as exc:
            self.fail("flush", exc)
            return 0


class BufferedTiledWriter(HookedTiledWriter):
    """A ``TiledWriter`` whose cached events/stream_datums can be flushed on demand.

    It keeps a reference to each open run's ``_RunWriter`` (via ``open_run``) so that
    :meth:`flush` can write their caches before the run's ``stop``; the count-based
    ``batch_size`` flushing of ``TiledWriter`` still applies. A flush appends the table
    rows and registers the new files concurrently (two requests in flight). A failing
    run is logged, reported to ``on_error(run_uid, name, exception)`` and abandoned (no
    further writes). The ``close_stream`` requests of a stopped run are queued for
    :meth:`close_streams_now` (``close_streams=True``) or dropped (``False``: for a
    catalog that has no live-streaming cache, where they do nothing). Not thread-safe:
    call it, :meth:`flush` and :meth:`close_streams_now` from one thread.
    """

    def __init__(self, client, *, on_error=None, close_streams: bool = True, **kwargs):
        kwargs.pop("backup_directory", None)  # CatalogWriter keeps its own, complete backup
        kwargs.setdefault("normalizer", normalizer_class())
        super().__init__(client, **kwargs)
        self._runs: dict[str, _RunGuard] = {}
        self._on_error = on_error
        self.close_streams = bool(close_streams)
        self._deferred: list[tuple[str, Any]] = []
        self._executor = ThreadPoolExecutor(max_workers=1,
                                            thread_name_prefix="fibsem-catalog-table")

    def open_run(self, uid: str, cb: Any, run_writer: Any) -> _RunGuard:
        guard = _RunGuard(self, uid, cb, run_writer)
        self._runs[uid] = guard
        return guard

    def _report(self, uid: str | None, name: str, exc: BaseException) -> None:
        logger.error("catalog write failed for run %s (%s document); the run is abandoned "
                     "by the catalog writer", uid, name, exc_info=exc)
        if self._on_error is not None:
            self._on_error(uid, name, exc)

    def flush(self) -> int:
        """Write every open run's cached rows and stream_datums; return how many."""
        return sum(guard.flush() for guard in list(self._runs.values()))

    def close_streams_now(self) -> int:
        """Send the queued ``close_stream`` requests of stopped runs; return how many runs.

        A failure is logged and reported to ``on_error`` with the name
        ``"close_stream"``; the run's data and stop document are already stored.
        """
        done = 0
        while self._deferred:
            uid, closer = self._deferred.pop(0)
            try:
                closer()
            except Exception as exc:
                logger.warning("closing the live streams of run %s failed", uid,
                               exc_info=exc)
                if self._on_error is not None:
                    self._on_error(uid, "close_stream", exc)
            done += 1
        return done

    def shutdown(self) -> None:
        """Stop the helper thread of concurrent flushes."""
        self._executor.shutdown(wait=True)

    @property
    def open_runs(self) -> list[str]:
        """Uids of runs started and not yet stopped."""
        return list(self._runs)


def checked_fsync_every(value: Any) -> int:
    """``value`` if it is a valid ``fsync_every`` (an int >= 0), else ``ValueError``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"fsync_every must be an integer >= 0 (0: never fsync), not "
                         f"{value!r}")
    return value


class _Backup:
    """JSON-lines backup, one file per run, written on the caller's thread.

    One ``{"name", "doc"}`` object per line (the format of bluesky's ``JSONLinesWriter``),
    flushed per document; fsynced at a run's stop and every ``fsync_every`` documents of
    the file (with the directory at the file's first fsync, so that the new file's entry
    is durable too; ``fsync_every=0``: never); documents of no known run go to
    ``orphans.jsonl``.

    Not ``event_model.RunRouter`` + ``bluesky.callbacks.json_writer.JSONLinesWriter``
    (one writer per run), because that pair does not keep "every document is written":

    - ``JSONLinesWriter`` encodes with plain ``json.dump``: a numpy scalar or array in a
      document (``np.int64`` readings, metadata from numpy code) raises ``TypeError``
      half-way through the line, leaving a truncated line and losing the document; here
      :func:`~fibsem_ophyd.storage._json.dumps` encodes numpy, paths, enums and sets.
    - ``RunRouter`` raises ``KeyError`` for a document whose descriptor or stream
      resource it has not seen, instead of writing it somewhere (here: ``orphans.jsonl``).
    - ``RunRouter`` passes every event through a ``Filler`` and on as an ``event_page``:
      the backup would no longer hold the RunEngine's documents as emitted (which
      :func:`~fibsem_ophyd.storage.replay_backup` and
      :func:`~fibsem_ophyd.storage.recover_run` read back), and it cost ~400 us per event
      on the RunEngine's thread against ~33 us here (2000 events, 2-core machine under
      load).
    """

    def __init__(self, directory: str | os.PathLike, fsync_every: int = FSYNC_EVERY,
                 stats: dict | None = None):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fsync_every = fsync_every
        self.stats = stats if stats is not None else {}
        self.stats.setdefault("fsyncs", 0)
        self.stats.setdefault("fsync_s", 0.0)
        self._files: dict[str, Any] = {}
        self._run_of: dict[str, str] = {}  # descriptor/resource uid -> run uid
        self._orphans = None
        self._failed: set[str] = set()  # runs whose backup failed: not appended to any more
        self._unsynced: dict[Any, int] = {}  # file -> documents written since its last fsync
        self._new: set[Any] = set()  # files created whose directory entry is not fsynced

    def path(self, run_uid: str) -> Path:
        return self.directory / f"{run_uid}.jsonl"

    def _run_uid(self, name: str, doc: dict) -> str | None:
        if name == "start":
            return doc["uid"]
        if name in ("descriptor", "stream_resource", "resource"):
            uid = doc.get("run_start")
            if uid:
                self._run_of[doc["uid"]] = uid
            return uid
        if name == "stop":
            return doc.get("run_start")
        if name in ("event", "event_page"):
            return self._run_of.get(doc.get("descriptor"))
        if name == "stream_datum":
            return self._run_of.get(doc.get("descriptor")) or self._run_of.get(
                doc.get("stream_resource"))
        if name in ("datum", "datum_page"):
            return self._run_of.get(doc.get("resource"))
        return None

    def __call__(self, name: str, doc: dict) -> str | None:
        """Append one document; raise :class:`BackupWriteError` if it cannot be written."""
        uid = self._run_uid(name, doc)
        if uid is not None and uid in self._failed:
            if name == "stop":
                self._end(uid)
            return uid
        try:
            line = dumps({"name": name, "doc": doc}) + "\n"
            if uid is None:
                if self._orphans is None:
                    self._orphans = self._open(self.directory / "orphans.jsonl")
                f = self._orphans
            else:
                f = self._files.get(uid)
                if f is None:
                    f = self._files[uid] = self._open(self.path(uid))
            f.write(line)
            f.flush()
            if self.fsync_every:
                n = self._unsynced[f] = self._unsynced.get(f, 0) + 1
                if n >= self.fsync_every or name == "stop":
                    self._fsync(f)
            if name == "stop" and uid is not None:
                self._end(uid, raise_errors=True)
        except Exception as exc:
            path = self.path(uid) if uid is not None else self.directory / "orphans.jsonl"
            if uid is not None and name != "stop":
                self._failed.add(uid)
            self._discard(uid)
            raise BackupWriteError(uid, path, name, exc) from exc
        return uid

    def _open(self, path: Path):
        f = open(path, "a", encoding="utf-8")
        self._new.add(f)
        return f

    def _forget(self, f) -> None:
        self._unsynced.pop(f, None)
        self._new.discard(f)

    def _fsync(self, f) -> None:
        """fsync a backup file (and, once, its directory: the new files' entries)."""
        t0 = time.perf_counter()
        os.fsync(f.fileno())
        if f in self._new:
            fd = os.open(self.directory, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            self._new.discard(f)
        self._unsynced[f] = 0
        self.stats["fsyncs"] += 1
        self.stats["fsync_s"] += time.perf_counter() - t0

    def _end(self, uid: str, raise_errors: bool = False) -> None:
        """Close a stopped run's file and forget its descriptors and resources."""
        self._failed.discard(uid)
        self._run_of = {k: v for k, v in self._run_of.items() if v != uid}
        f = self._files.pop(uid, None)
        if f is not None:
            self._forget(f)
            if raise_errors:
                f.close()
            else:
                self._close_quietly(f)

    def _discard(self, uid: str | None) -> None:
        """Drop the file of a failed write (its buffer cannot be written either)."""
        if uid is None:
            f, self._orphans = self._orphans, None
        else:
            f = self._files.pop(uid, None)
        if f is not None:
            self._forget(f)
            self._close_quietly(f)

    @staticmethod
    def _close_quietly(f) -> None:
        try:
            f.close()
        except OSError:  # the unwritten buffer: the write already failed and was reported
            pass

    def close(self) -> None:
        """Close every file (fsynced first if it holds documents not yet fsynced)."""
        files = list(self._files.values())
        if self._orphans is not None:
            files.append(self._orphans)
        self._files.clear()
        self._orphans = None
        for f in files:
            if self.fsync_every and self._unsynced.get(f):
                self._fsync(f)
            self._forget(f)
            f.close()


class CatalogWriter:
    """Store every document of every run: JSON-lines backup now, catalog in background.

    Parameters
    ----------
    client : tiled.client.container.Container
        Writable catalog node (e.g. :func:`fibsem_ophyd.storage.open_catalog`).
    backup_dir : str or PathLike
        Directory for the per-run JSON-lines backups (``<run uid>.jsonl``); created.
    latency : float
        Longest time in seconds a processed event/stream_datum waits in the batch before
        it is written to the catalog (default 1 s). Smaller: fresher catalog, more
        writes (each costs the catalog server tens of milliseconds of CPU, whatever its
        size); larger: fewer, bigger writes.
    max_lag : float or None
        Bound on how far the catalog may fall behind the RunEngine, in seconds (default
        10 s): the RunEngine's call waits (back-pressure) while a document handed over
        more than ``max_lag`` seconds ago is still not in the catalog. ``None``: never
        wait (the catalog may fall behind without bound; the backup never does).
    close_streams : bool
        Send Tiled's ``close_stream`` requests (one per node of a run) after the run's
        stop document: ``True`` (default) for servers with live-streaming subscribers;
        they are sent after the run counts as written, so they do not delay
        :meth:`wait`. ``False`` skips them: right for a catalog without a
        live-streaming cache (the embedded one), where they do nothing.
    batch_size : int
        Count-based flush of ``TiledWriter`` (rows or frames per write); rarely reached
        with the time-based flush. Default 10000.
    fsync_every : int
        fsync a run's backup file every this many of its documents, and at its stop
        (default :data:`FSYNC_EVERY` = 100: a power cut loses at most the last 100
        documents of the backup, at well under 1 % of the time of a stored frame). ``0``:
        never fsync (flushed per document: a crash of the process loses nothing, a power
        cut may lose what the kernel had not yet written).
    **tiled_writer_kwargs
        Passed to ``TiledWriter`` (``patches``, ``spec_to_mimetype``, ...).

    Attributes
    ----------
    errors : list of WriteError
        Every failure of the background catalog writer, oldest first.
    backup_dir : pathlib.Path
        The backup directory.

    Notes
    -----
    Subscribe with ``RE.subscribe(writer)``. The call on the RunEngine thread costs one
    JSON encoding and one buffered file write per document (tens of microseconds).

    Freshness of the catalog during a run: while the catalog keeps up, an event and its
    frame are readable at most ``latency`` plus the duration of one catalog write after
    the RunEngine emitted them; in any case the RunEngine never runs more than ``max_lag``
    seconds ahead of the catalog. A run's stop document is written only after all its
    frames, so a reader that sees ``stop`` sees every frame.
    """

    def __init__(
        self,
        client,
        backup_dir: str | os.PathLike,
        *,
        latency: float = 1.0,
        max_lag: float | None = 10.0,
        close_streams: bool = True,
        batch_size: int = 10000,
        fsync_every: int = FSYNC_EVERY,
        **tiled_writer_kwargs,
    ):
        fsync_every = checked_fsync_every(fsync_every)  # before any directory is made
        self.backup_dir = Path(backup_dir)
        self.latency = float(latency)
        self.max_lag = None if max_lag is None else float(max_lag)
        self.errors: list[WriteError] = []
        self.stats: dict[str, Any] = {}
        self._backup = _Backup(self.backup_dir, fsync_every, stats=self.stats)
        self._tiled = BufferedTiledWriter(
            client, batch_size=batch_size, on_error=self._record,
            close_streams=close_streams, **tiled_writer_kwargs
        )
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)  # progress: RunEngine side waits
        self._work = threading.Condition(self._lock)  # the catalog thread waits
        self._inbox: deque[tuple[str, dict]] = deque()  # handed over, not yet taken
        self._wake = False  # a document the catalog thread should not wait to take
        self._flush_requested = False
        self._stop_requested = False
        self._enqueued = 0  # documents handed over
        self._written = 0  # documents processed and flushed to the catalog
        self._handed_at: deque[float] = deque()  # monotonic hand-over time, unwritten docs
        self._errors_seen = 0
        self._closed = False
        #: counters: documents processed, catalog flushes, items (rows + stream_datums)
        #: flushed, wall time busy (s) and CPU time (s) of the background thread, its
        #: longest single step (s: one document or one flush, i.e. the longest catalog
        #: write), seconds the RunEngine waited on back-pressure (``max_lag``), and the
        #: backup's fsyncs and the seconds they took (on the RunEngine's thread)
        self.stats.update({"documents": 0, "flushes": 0, "flushed_items": 0, "busy_s": 0.0,
                           "cpu_s": 0.0, "longest_s": 0.0, "throttled_s": 0.0})
        self._thread = threading.Thread(
            target=self._run, name="fibsem-catalog-writer", daemon=True
        )
        self._thread.start()

    # -- RunEngine side ---------------------------------------------------------------
    def __call__(self, name: str, doc: dict) -> None:
        """Back up ``doc`` and hand it to the catalog thread (RunEngine callback).

        Waits first if the catalog is more than ``max_lag`` seconds behind. After
        :meth:`close` documents are still backed up, but not written to the catalog.

        Raises
        ------
        BackupWriteError
            The first document of a run that could not be backed up (after handing it to
            the catalog, unless it is a stream_datum, whose event will not come): the
            RunEngine then fails the run. Later documents of that run are not backed up
            and raise nothing.
        """
        failed: BackupWriteError | None = None
        try:
            self._backup(name, doc)
        except BackupWriteError as exc:
            logger.error("%s", exc, exc_info=exc.__cause__)
            self._record(exc.run_uid, f"backup:{name}", exc, raised=True)
            failed = exc
        if failed is not None and name == "stream_datum":
            # raising here, the RunEngine fails the run before it composes this frame's
            # event: handed over, the frame would be in the catalog without its event
            raise failed
        try:
            self._hand_over(name, doc)
        finally:
            if failed is not None:  # the catalog has the document; the RunEngine fails the run
                raise failed

    def _hand_over(self, name: str, doc: dict) -> None:
        if self._closed:  # keep the backup going; the catalog is no longer written
            if name == "start":
                logger.warning("CatalogWriter is closed: run %s goes to the JSON-lines "
                               "backup only", doc.get("uid"))
            return
        if self.max_lag is not None:
            self._throttle()
        with self._lock:
            self._enqueued += 1
            self._handed_at.append(time.monotonic())
            self._inbox.append((name, doc))
            if name not in _PER_FRAME:  # start, descriptor, resources, stop: take it now
                self._wake = True
                self._work.notify()

    def _throttle(self) -> None:
        """Wait while the oldest unwritten document is older than ``max_lag`` seconds."""
        with self._cond:
            if not self._handed_at or time.monotonic() - self._handed_at[0] <= self.max_lag:
                return
            t0 = time.monotonic()
            while (self._handed_at and not self._closed and self._thread.is_alive()
                   and time.monotonic() - self._handed_at[0] > self.max_lag):
                self._cond.wait(0.1)
            self.stats["throttled_s"] += time.monotonic() - t0

    @property
    def fsync_every(self) -> int:
        """Documents of a run between fsyncs of its backup (and at its stop); 0: never."""
        return self._backup.fsync_every

    @fsync_every.setter
    def fsync_every(self, value: int) -> None:
        self._backup.fsync_every = checked_fsync_every(value)

    @property
    def close_streams(self) -> bool:
        """Whether ``close_stream`` requests are sent after each run (see the parameter)."""
        return self._tiled.close_streams

    @property
    def lag(self) -> float:
        """Seconds since the oldest document not yet in the catalog was handed over."""
        with self._lock:
            return time.monotonic() - self._handed_at[0] if self._handed_at else 0.0

    def backup_path(self, run_uid: str) -> Path:
        """The JSON-lines backup file of a run."""
        return self._backup.path(run_uid)

    @property
    def pending(self) -> int:
        """Documents handed over and not yet written to the catalog."""
        with self._lock:
            return self._enqueued - self._written

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every document handed over so far is written to the catalog.

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait at most; ``None`` waits indefinitely.

        Returns
        -------
        bool
            ``True`` if the catalog caught up, ``False`` on timeout.
        """
        with self._lock:
            target = self._enqueued
            if self._written >= target:
                return True
            self._flush_requested = True
            self._work.notify()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._written < target:
                if not self._thread.is_alive():
                    return False
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining if remaining is not None else 1.0)
        return True

    def wait(self, timeout: float | None = None, *,
             raise_errors: bool = False) -> list[WriteError]:
        """Wait for the catalog to catch up (call after ``RE(...)`` returns).

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait at most; ``None`` waits indefinitely.
        raise_errors : bool
            Raise :class:`StorageError` if a run was not completely stored (errors of
            ``close_stream`` requests, sent after a run is complete, are only logged).

        Returns
        -------
        list of WriteError
            Errors recorded since the previous :meth:`wait` (also in :attr:`errors`).

        Raises
        ------
        TimeoutError
            If the catalog did not catch up within ``timeout``.
        RuntimeError
            If the writer was closed or its thread is gone.
        StorageError
            With ``raise_errors``: runs the catalog did not store completely (their
            backups, and how to recover them, are in the message).
        """
        if not self.flush(timeout):
            if not self._thread.is_alive():
                raise RuntimeError(
                    f"the catalog writer thread is not running ({self.pending} documents "
                    f"not written); the JSON-lines backups in {self.backup_dir} are complete"
                )
            raise TimeoutError(
                f"catalog writer still has {self.pending} documents pending after {timeout} s"
            )
        with self._lock:
            new = self.errors[self._errors_seen:]
            self._errors_seen = len(self.errors)
        for err in new:
            logger.warning("catalog write error: %s (backup: %s)", err,
                           self.backup_path(err.run_uid) if err.run_uid else self.backup_dir)
        if raise_errors:
            failed = [e for e in new if e.name != "close_stream" and not e.raised]
            if failed:
                raise self._storage_error(failed)
        return new

    def _storage_error(self, errors: list[WriteError]) -> StorageError:
        """A :class:`StorageError` whose message says, per run, how to recover it."""
        backups: dict[str, Path] = {}
        lines = []
        for err in errors:
            if err.run_uid is None:
                lines.append(f"- a catalog write failed ({err.name}: {err.exception!r})")
                continue
            if err.run_uid in backups:
                continue
            path = backups[err.run_uid] = self.backup_path(err.run_uid)
            lines.append(
                f"- run {err.run_uid} is not complete in the catalog ({err.name} document: "
                f"{err.exception!r}); its JSON-lines backup {path} holds every document: "
                f"once the catalog accepts writes, "
                f"fibsem_ophyd.storage.recover_run(catalog, {str(path)!r}) writes it (or "
                f"replay_backup({str(path)!r}, TiledWriter(catalog)))")
        lines.append(f"fibsem_ophyd.storage.unfinished_backups({str(self.backup_dir)!r}, "
                     "catalog) lists every run of that directory still to recover")
        n = len(backups) or len(errors)
        msg = f"the catalog did not store {n} run(s) completely:\n" + "\n".join(lines)
        return StorageError(msg, errors, backups)

    def close(self, timeout: float | None = None) -> bool:
        """Drain the queue, send what is left (stream closes), stop the thread, close files.

        Returns
        -------
        bool
            ``True`` if everything was written before ``timeout`` (s).
        """
        if self._closed:
            return True
        ok = self.flush(timeout)
        self._closed = True
        with self._lock:
            self._stop_requested = True
            self._work.notify()
        self._thread.join(timeout)
        self._backup.close()  # files reopen (append) if documents still arrive
        return ok and not self._thread.is_alive()

    def __enter__(self) -> CatalogWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- background side --------------------------------------------------------------
    def _record(self, run_uid: str | None, name: str, exc: BaseException,
                raised: bool = False) -> None:
        err = WriteError(run_uid, name, exc, "".join(traceback.format_exception(exc)),
                         raised=raised)
        with self._lock:
            self.errors.append(err)

    def _timed(self, fn) -> Any:
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return fn()
        finally:
            dt = time.perf_counter() - t0
            self.stats["busy_s"] += dt
            self.stats["longest_s"] = max(self.stats["longest_s"], dt)
            self.stats["cpu_s"] += time.thread_time() - c0

    def _flush_catalog(self) -> None:
        def flush() -> int:
            try:
                return self._tiled.flush()
            except Exception as exc:  # defensive: guards already catch per run
                logger.exception("catalog flush failed")
                self._record(None, "flush", exc)
                return 0

        n = self._timed(flush)
        self.stats["flushes"] += 1
        self.stats["flushed_items"] += n

    def _done(self, count: int) -> None:
        with self._cond:
            self._written += count
            for _ in range(min(count, len(self._handed_at))):
                self._handed_at.popleft()
            self._cond.notify_all()

    def _take(self, timeout: float | None) -> tuple[list, bool, bool]:
        """Wait (at most ``timeout`` s) for a wake-up; take every document handed over."""
        with self._lock:
            if not (self._wake or self._flush_requested or self._stop_requested):
                if timeout is None or timeout > 0:
                    self._work.wait(timeout)
            items = list(self._inbox)
            self._inbox.clear()
            flush, stop = self._flush_requested, self._stop_requested
            self._wake = self._flush_requested = False
        return items, flush, stop

    def _process(self, name: str, doc: dict) -> None:
        try:
            self._tiled(name, doc)
        except Exception as exc:  # routing errors outside a run's guard
            logger.exception("catalog writer could not route a %r document", name)
            self._record(doc.get("run_start") or doc.get("uid"), name, exc)

    def _run(self) -> None:
        """The catalog thread.

        While a run is open it takes the documents handed over every 0.1 s (processing
        them only caches rows and files) and writes what it cached every ``latency``
        seconds in one flush (table rows and new files concurrently); start,
        descriptor, resource and stop documents, and flush or close requests, wake it at
        once. A stop document writes its run's last rows and files and then the stop (a
        reader that sees ``stop`` sees every frame).
        """
        unflushed = 0  # documents processed whose cached data may not be written yet
        next_flush: float | None = None  # monotonic time of the next periodic flush
        try:
            while True:
                if next_flush is None:
                    timeout = None
                else:  # take per-frame documents in small batches between flushes, so
                    # that a stop finds few left to process before its final write
                    timeout = min(next_flush - time.monotonic(), _TAKE_INTERVAL)
                items, flush_requested, stop_requested = self._take(timeout)
                for name, doc in items:
                    self._timed(lambda name=name, doc=doc: self._process(name, doc))
                    self.stats["documents"] += 1
                    unflushed += 1
                    if name == "stop":  # the stop wrote this run's caches; others may be open
                        if not self._tiled.open_runs:
                            self._done(unflushed)
                            unflushed = 0
                        # after the run counts as written: wait() does not wait for these
                        self._timed(self._tiled.close_streams_now)
                now = time.monotonic()
                if not self._tiled.open_runs:
                    next_flush = None
                elif next_flush is None:
                    next_flush = now + self.latency
                due = next_flush is not None and now >= next_flush
                if unflushed and (due or flush_requested or stop_requested
                                  or next_flush is None):
                    self._flush_catalog()
                    self._done(unflushed)
                    unflushed = 0
                if due:  # fixed cadence; when a write overran it, flush again at once
                    next_flush = max(next_flush + self.latency, time.monotonic())
                if stop_requested:
                    with self._lock:
                        if not self._inbox:
                            self._timed(self._tiled.close_streams_now)
                            return
        finally:
            self._tiled.shutdown()
