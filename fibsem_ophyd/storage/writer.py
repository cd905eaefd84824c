"""RunEngine callback that stores every document: JSON-lines backup + Tiled catalog.

:class:`CatalogWriter` is subscribed to the RunEngine (``RE.subscribe(writer)``). On the
RunEngine's thread it only

1. appends the document to ``<backup_dir>/<run uid>.jsonl`` (one ``{"name", "doc"}`` JSON
   object per line, the format of ``bluesky_tiled_plugins``' ``JSONLinesWriter``; flushed
   per document so a crash keeps everything emitted so far), and
2. puts it on a queue.

A background thread feeds the queue, in order, to :class:`bluesky_tiled_plugins.TiledWriter`
and batches adaptively: events and stream_datums are cached and written to the catalog
together, at the latest ``latency`` seconds after the first unwritten one was taken off the
queue (and at ``stop``). When the thread is behind, everything that piled up in the queue
meanwhile goes into one write; when it keeps up, frames become visible in the catalog about
``latency`` seconds after they were acquired.

Errors in the background thread are logged, recorded in :attr:`CatalogWriter.errors`, and
the failing run is abandoned by the catalog writer (no further writes, in particular no
``stop``, so a partial run never looks complete); its JSON-lines backup stays complete and
can be replayed into a catalog with :func:`fibsem_ophyd.storage.replay_backup`.

Call :meth:`CatalogWriter.wait` after ``RE(...)`` returns to block until the catalog has
caught up, and :meth:`CatalogWriter.close` at the end of the session.

With the in-process catalog (:func:`~fibsem_ophyd.storage.open_catalog`) the Tiled server
code runs in this process and competes with the RunEngine for the GIL (measured: about
1.5 s of extra CPU per 100-frame run); with :func:`~fibsem_ophyd.storage.serve_catalog`
that work runs in a child process and this thread only spends ~0.15 s of CPU per run.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import queue
import threading
import time
import traceback
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bluesky_tiled_plugins import TiledWriter

from ._json import dumps

__all__ = ["CatalogWriter", "WriteError", "BufferedTiledWriter", "flush_run_writer"]

logger = logging.getLogger(__name__)

_STOP = object()
_FLUSH = object()


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
    """

    run_uid: str | None
    name: str
    exception: BaseException
    traceback: str = ""
    time: float = field(default_factory=time.time)

    def __str__(self) -> str:
        return f"run {self.run_uid}: {self.name}: {self.exception!r}"


# --------------------------------------------------------------------------------------
# The only place that touches bluesky_tiled_plugins private API (_RunWriter internals).
# Pinned by tests/storage/test_writer.py::test_frames_visible_before_stop.
# --------------------------------------------------------------------------------------
def flush_run_writer(run_writer: Any, sent_assets: dict[str, int] | None = None) -> int:
    """Write a ``_RunWriter``'s cached events and stream_datums to the catalog now.

    Does what ``_RunWriter.stop`` does with its caches, without writing the stop
    document: appends the cached rows of each stream's internal table and registers the
    cached (concatenated) stream_datums with one data-source update per node.

    Parameters
    ----------
    run_writer : bluesky_tiled_plugins.writing.tiled_writer._RunWriter
        The per-run writer.
    sent_assets : dict, optional
        Node URI -> number of that node's assets already registered; updated here. When
        given, a data-source update carries only the new assets (the server adds assets
        and keeps the ones already associated), so each flush costs O(new frames)
        instead of O(all frames so far). ``None`` sends every asset, like ``stop``.

    Returns
    -------
    int
        The number of cached items (table rows + stream_datum documents) written.
    """
    from bluesky_tiled_plugins.writing.consolidators import Patch

    written = 0
    for desc_name, cache in run_writer._internal_data_cache.items():
        if cache:
            n = len(cache)
            run_writer._write_internal_data(cache, desc_node=run_writer._desc_nodes[desc_name])
            cache.clear()
            written += n
    pending = list(run_writer._external_data_cache.values())
    run_writer._external_data_cache.clear()
    grouped: dict[tuple[Any, Any], list] = defaultdict(list)
    for doc in pending:
        node, consolidator, patch = run_writer._update_consolidator(doc)
        grouped[(node, consolidator)].append(patch)
        written += 1
    for (node, consolidator), patches in grouped.items():
        data_source = consolidator.get_data_source()
        n_assets = len(data_source.assets)
        if sent_assets is not None:
            sent = sent_assets.get(node.uri, 0)
            if 0 < sent <= n_assets:
                data_source = dataclasses.replace(
                    data_source, assets=list(data_source.assets[sent:])
                )
        run_writer._update_data_source_for_node(
            node, data_source, patch=Patch.combine_patches(patches)
        )
        if sent_assets is not None:
            sent_assets[node.uri] = n_assets
    return written


def _make_run_writer(tiled_writer: TiledWriter) -> tuple[Any, Any]:
    """Build (callback chain, _RunWriter) for one run, as ``TiledWriter._factory`` does."""
    from bluesky_tiled_plugins.writing.tiled_writer import _RunWriter

    run_writer = _RunWriter(
        tiled_writer.client,
        batch_size=tiled_writer._batch_size,
        max_array_size=tiled_writer._max_array_size,
        validate=tiled_writer._validate,
        ignore_errors=tiled_writer.ignore_errors,
    )
    cb = run_writer
    if tiled_writer._normalizer:
        cb = tiled_writer._normalizer(
            patches=tiled_writer.patches, spec_to_mimetype=tiled_writer.spec_to_mimetype
        )
        cb.subscribe(run_writer)
    return cb, run_writer


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
                self.cb(name, doc)
            except Exception as exc:
                self.fail(name, exc)
        if name == "stop":
            self.owner._runs.pop(self.uid, None)

    def fail(self, name: str, exc: BaseException) -> None:
        self.failed = True
        self.owner._report(self.uid, name, exc)

    def flush(self) -> int:
        if self.failed:
            return 0
        try:
            return flush_run_writer(self.run_writer, self.sent_assets)
        except Exception as exc:
            self.fail("flush", exc)
            return 0


class BufferedTiledWriter(TiledWriter):
    """A ``TiledWriter`` whose cached events/stream_datums can be flushed on demand.

    It keeps a reference to each open run's ``_RunWriter`` (via ``_factory``) so that
    :meth:`flush` can write their caches before the run's ``stop``; the count-based
    ``batch_size`` flushing of ``TiledWriter`` still applies. A failing run is logged,
    reported to ``on_error(run_uid, name, exception)`` and abandoned (no further writes).
    Not thread-safe: call it and :meth:`flush` from one thread.
    """

    def __init__(self, client, *, on_error=None, **kwargs):
        kwargs.pop("backup_directory", None)  # CatalogWriter keeps its own, complete backup
        super().__init__(client, **kwargs)
        self._runs: dict[str, _RunGuard] = {}
        self._on_error = on_error

    def _factory(self, name, doc):
        cb, run_writer = _make_run_writer(self)
        guard = _RunGuard(self, doc["uid"], cb, run_writer)
        self._runs[doc["uid"]] = guard
        return [guard], []

    def _report(self, uid: str | None, name: str, exc: BaseException) -> None:
        logger.error("catalog write failed for run %s (%s document); the run is abandoned "
                     "by the catalog writer", uid, name, exc_info=exc)
        if self._on_error is not None:
            self._on_error(uid, name, exc)

    def flush(self) -> int:
        """Write every open run's cached rows and stream_datums; return how many."""
        return sum(guard.flush() for guard in list(self._runs.values()))

    @property
    def open_runs(self) -> list[str]:
        """Uids of runs started and not yet stopped."""
        return list(self._runs)


class _Backup:
    """JSON-lines backup, one file per run, written on the caller's thread."""

    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._files: dict[str, Any] = {}
        self._run_of: dict[str, str] = {}  # descriptor/resource uid -> run uid
        self._orphans = None

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
        uid = self._run_uid(name, doc)
        line = dumps({"name": name, "doc": doc}) + "\n"
        if uid is None:
            if self._orphans is None:
                self._orphans = open(self.directory / "orphans.jsonl", "a", encoding="utf-8")
            f = self._orphans
        else:
            f = self._files.get(uid)
            if f is None:
                f = self._files[uid] = open(self.path(uid), "a", encoding="utf-8")
        f.write(line)
        f.flush()
        if name == "stop" and uid is not None:
            f.close()
            del self._files[uid]
            self._run_of = {k: v for k, v in self._run_of.items() if v != uid}
        return uid

    def close(self) -> None:
        for f in self._files.values():
            f.close()
        self._files.clear()
        if self._orphans is not None:
            self._orphans.close()
            self._orphans = None


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
        it is written to the catalog (default 0.5 s). Smaller: fresher catalog, more
        writes; larger: fewer, bigger writes.
    batch_size : int
        Count-based flush of ``TiledWriter`` (rows or frames per write); rarely reached
        with the time-based flush. Default 10000.
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
    """

    def __init__(
        self,
        client,
        backup_dir: str | os.PathLike,
        *,
        latency: float = 0.5,
        batch_size: int = 10000,
        **tiled_writer_kwargs,
    ):
        self.backup_dir = Path(backup_dir)
        self.latency = float(latency)
        self.errors: list[WriteError] = []
        self._backup = _Backup(self.backup_dir)
        self._tiled = BufferedTiledWriter(
            client, batch_size=batch_size, on_error=self._record, **tiled_writer_kwargs
        )
        self._queue: queue.Queue = queue.Queue()
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._enqueued = 0  # documents put on the queue
        self._written = 0  # documents processed and flushed to the catalog
        self._errors_seen = 0
        self._closed = False
        #: counters of the background thread: documents processed, catalog flushes,
        #: items (rows + stream_datums) flushed, wall time busy (s), its CPU time (s)
        self.stats = {"documents": 0, "flushes": 0, "flushed_items": 0, "busy_s": 0.0,
                      "cpu_s": 0.0}
        self._thread = threading.Thread(
            target=self._run, name="fibsem-catalog-writer", daemon=True
        )
        self._thread.start()

    # -- RunEngine side ---------------------------------------------------------------
    def __call__(self, name: str, doc: dict) -> None:
        """Back up ``doc`` and hand it to the catalog thread (RunEngine callback).

        After :meth:`close` documents are still backed up, but not written to the catalog.
        """
        try:
            self._backup(name, doc)
        except Exception as exc:  # never break the RunEngine over the backup
            logger.exception("JSON-lines backup failed for a %r document", name)
            self._record(None, f"backup:{name}", exc)
        if self._closed:  # keep the backup going; the catalog is no longer written
            if name == "start":
                logger.warning("CatalogWriter is closed: run %s goes to the JSON-lines "
                               "backup only", doc.get("uid"))
            return
        with self._lock:
            self._enqueued += 1
        self._queue.put((name, doc))

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
        self._queue.put(_FLUSH)
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

    def wait(self, timeout: float | None = None) -> list[WriteError]:
        """Wait for the catalog to catch up (call after ``RE(...)`` returns).

        Parameters
        ----------
        timeout : float, optional
            Seconds to wait at most; ``None`` waits indefinitely.

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
        return new

    def close(self, timeout: float | None = None) -> bool:
        """Drain the queue, stop the thread and close the backup files.

        Returns
        -------
        bool
            ``True`` if everything was written before ``timeout`` (s).
        """
        if self._closed:
            return True
        ok = self.flush(timeout)
        self._closed = True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._backup.close()  # files reopen (append) if documents still arrive
        return ok and not self._thread.is_alive()

    def __enter__(self) -> CatalogWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- background side --------------------------------------------------------------
    def _record(self, run_uid: str | None, name: str, exc: BaseException) -> None:
        err = WriteError(run_uid, name, exc, "".join(traceback.format_exception(exc)))
        with self._lock:
            self.errors.append(err)

    def _flush_catalog(self) -> None:
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            n = self._tiled.flush()
        except Exception as exc:  # defensive: guards already catch per run
            logger.exception("catalog flush failed")
            self._record(None, "flush", exc)
            n = 0
        self.stats["flushes"] += 1
        self.stats["flushed_items"] += n
        self.stats["busy_s"] += time.perf_counter() - t0
        self.stats["cpu_s"] += time.thread_time() - c0

    def _done(self, count: int) -> None:
        with self._cond:
            self._written += count
            self._cond.notify_all()

    def _run(self) -> None:
        unflushed = 0  # documents processed whose cached data may not be written yet
        first_at: float | None = None  # monotonic time the oldest of those was processed
        while True:
            if first_at is None:
                timeout = None
            else:
                timeout = max(0.0, first_at + self.latency - time.monotonic())
            try:
                item = self._queue.get(timeout=timeout)
            except queue.Empty:
                item = _FLUSH
            if item is _STOP:
                if unflushed:
                    self._flush_catalog()
                    self._done(unflushed)
                return
            if item is _FLUSH:
                if unflushed:
                    self._flush_catalog()
                    self._done(unflushed)
                    unflushed, first_at = 0, None
                continue
            name, doc = item
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                self._tiled(name, doc)
            except Exception as exc:  # routing errors outside a run's guard
                logger.exception("catalog writer could not route a %r document", name)
                self._record(doc.get("run_start") or doc.get("uid"), name, exc)
            self.stats["documents"] += 1
            self.stats["busy_s"] += time.perf_counter() - t0
            self.stats["cpu_s"] += time.thread_time() - c0
            unflushed += 1
            if name == "stop":  # the stop wrote this run's caches; others may be open
                if self._tiled.open_runs:
                    first_at = first_at or time.monotonic()
                else:
                    self._done(unflushed)
                    unflushed, first_at = 0, None
                continue
            if first_at is None:
                first_at = time.monotonic()
            elif time.monotonic() - first_at >= self.latency:
                self._flush_catalog()
                self._done(unflushed)
                unflushed, first_at = 0, None
