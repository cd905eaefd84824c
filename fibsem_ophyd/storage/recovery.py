"""Close runs whose writer died: rebuild them in the catalog from their JSON-lines backup.

A process killed during a run (``SIGKILL``, power loss, an out-of-memory kill of the queue
server's worker) leaves its run open: the catalog has no ``stop`` document and lacks the
frames of the last unwritten batch, while the JSON-lines backup, flushed per document,
holds everything emitted up to the kill, and the TIFF files are on disk. A writer killed
between a frame's stream_datum and its event leaves a frame without its event (no
timestamps, no other readings): recovery leaves such frames out of the run and its backup
(logged; their files stay), so that the recovered run is self-consistent: frames = events
= ``num_events``.

:func:`recover_run` makes the catalog whole again: it appends a ``stop`` document
(``exit_status="fail"``, the reason, the event counts) to the backup, removes the partial
entry from the catalog (catalog records and server-written tables only; Tiled never deletes
externally written files such as the TIFF series) and writes the complete run from the
backup. The same repairs a run the catalog writer abandoned (the catalog refused a write:
its entry lacks the stop, or the whole run) although the backup holds the run's ``stop``.
:func:`unfinished_backups` lists the backups whose run is not complete in the catalog (or,
without a catalog, that have no ``stop``).

Recover only runs whose writer is gone: a run still being acquired also has no ``stop``.
"""

from __future__ import annotations

import logging
import os
import stat
import time
import uuid
from collections import Counter
from pathlib import Path

from ._json import dumps
from .reader import iter_backup

__all__ = ["recover_run", "unfinished_backups", "RECOVERED_REASON"]

logger = logging.getLogger(__name__)

#: start of the ``reason`` of a stop document written by :func:`recover_run`
RECOVERED_REASON = "run not closed by its writer; closed from the JSON-lines backup"


def unfinished_backups(backup_dir: str | os.PathLike, catalog=None) -> list[Path]:
    """The run backups (``<run uid>.jsonl``) in ``backup_dir`` still to recover.

    Parameters
    ----------
    backup_dir : str or PathLike
        The backup directory (``<data_dir>/backup``).
    catalog : tiled client, optional
        The catalog the runs were written to. Given: every backup whose run the catalog
        does not hold complete (absent, or without its ``stop``), whether or not the
        backup has a ``stop``: this finds the runs whose writer was killed *and* those
        the catalog refused (the writer abandoned them; their backup is complete). Not
        given: only the backups without a ``stop`` (the killed writers).

    Returns
    -------
    list of pathlib.Path
        Oldest first (by modification time). A run still being acquired (or whose last
        batch is still being written) is listed too: recover only runs whose writer is gone.
    """
    out = []
    for path in Path(backup_dir).glob("*.jsonl"):
        if path.name == "orphans.jsonl":
            continue
        docs = iter_backup(path)
        first = next(docs, None)
        if first is None or first[0] != "start":
            continue
        if catalog is not None:
            if _catalog_stop(catalog, first[1]["uid"]) is None:
                out.append(path)
        elif not any(name == "stop" for name, _ in docs):
            out.append(path)
    return sorted(out, key=lambda p: p.stat().st_mtime)


def _catalog_stop(catalog, uid: str) -> dict | None:
    """The stop document of run ``uid`` in the catalog; ``None`` if absent or not closed."""
    if uid not in catalog:
        return None
    return (catalog[uid].metadata or {}).get("stop") or None


def clear_partial_run(catalog, uid: str) -> dict | None:
    """Make room for rewriting run ``uid``: delete a partial catalog entry, keep a whole one.

    Returns the catalog's stop document if the catalog holds the run complete (then
    nothing is changed: the writer writes ``stop`` last, so such an entry has every
    frame); otherwise deletes what the catalog holds of the run (catalog records and
    server-written tables only: Tiled never deletes externally written files such as the
    TIFF series) and returns ``None``: writing the run's documents then succeeds instead
    of answering HTTP 409 (the run exists).
    """
    if uid not in catalog:
        return None
    stop = _catalog_stop(catalog, uid)
    if stop is not None:
        return stop
    catalog.delete_contents(uid, recursive=True, external_only=False)
    logger.info("deleted the partial catalog entry of run %s before rewriting it", uid)
    return None


def _drop_truncated_tail(path: Path) -> None:
    """Cut a last line the dead writer did not finish (it holds no complete document)."""
    with open(path, "rb+") as f:
        end = f.seek(0, os.SEEK_END)
        if end == 0:
            return
        f.seek(end - 1)
        if f.read(1) == b"\n":
            return
        pos = end
        while pos > 0:  # back to the last newline, a block at a time
            block = min(pos, 1 << 16)
            pos -= block
            f.seek(pos)
            cut = f.read(block).rfind(b"\n")
            if cut >= 0:
                f.truncate(pos + cut + 1)
                return
        f.truncate(0)


def _unmatched_stream_datums(docs: list[tuple[str, dict]]
                             ) -> tuple[list[tuple[str, dict]], list[dict]]:
    """Drop the stream_datums announced after the last event of their stream.

    The RunEngine emits a frame's stream_datum(s) and then its event; a writer killed in
    between leaves a stream_datum whose event (timestamps, the other readings) never came.
    Kept, the recovered run would hold one more frame than events and ``num_events``.
    Returns the documents without them (a stream_datum covering several events, some of
    them written, is cut to those) and the dropped or cut stream_datums as they were.
    """
    last_seq: Counter = Counter()  # descriptor uid -> seq_num of its last event
    for name, doc in docs:
        if name == "event":
            last_seq[doc["descriptor"]] = max(last_seq[doc["descriptor"]], doc["seq_num"])
        elif name == "event_page" and doc["seq_num"]:
            last_seq[doc["descriptor"]] = max(last_seq[doc["descriptor"]],
                                              max(doc["seq_num"]))
    kept: list[tuple[str, dict]] = []
    dropped: list[dict] = []
    for name, doc in docs:
        seq = doc.get("seq_nums") if name == "stream_datum" else None
        if not seq or not seq.get("start"):  # not a stream_datum, or not tied to events
            kept.append((name, doc))
            continue
        last = last_seq[doc.get("descriptor")]
        if seq["stop"] - 1 <= last:
            kept.append((name, doc))
            continue
        dropped.append(doc)
        n_seq = seq["stop"] - seq["start"]
        n_idx = doc["indices"]["stop"] - doc["indices"]["start"]
        keep = last + 1 - seq["start"]  # events of this stream_datum that were written
        if keep > 0 and n_idx % n_seq == 0:
            cut = dict(doc, seq_nums={"start": seq["start"], "stop": last + 1},
                       indices={"start": doc["indices"]["start"],
                                "stop": doc["indices"]["start"] + keep * (n_idx // n_seq)})
            kept.append((name, cut))
    return kept, dropped


def _rewrite(path: Path, docs: list[tuple[str, dict]]) -> None:
    """Replace the backup with ``docs``, atomically (temporary file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for name, doc in docs:
            f.write(dumps({"name": name, "doc": doc}) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.chmod(tmp, stat.S_IMODE(path.stat().st_mode))
    os.replace(tmp, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _stop_document(docs: list[tuple[str, dict]], reason: str, exit_status: str) -> dict:
    start = docs[0][1]
    streams = {d["uid"]: d.get("name", "primary") for n, d in docs if n == "descriptor"}
    num_events: Counter = Counter()
    for name, doc in docs:
        if name == "event":
            num_events[streams.get(doc["descriptor"], "primary")] += 1
        elif name == "event_page":
            num_events[streams.get(doc["descriptor"], "primary")] += len(doc["seq_num"])
    return {
        "uid": str(uuid.uuid4()),
        "time": max(doc.get("time", start["time"]) for _, doc in docs),
        "run_start": start["uid"],
        "exit_status": exit_status,
        "reason": reason,
        "num_events": {name: num_events.get(name, 0) for name in sorted(set(streams.values()))},
    }


def recover_run(
    catalog,
    backup: str | os.PathLike,
    *,
    reason: str | None = None,
    exit_status: str = "fail",
) -> dict:
    """Close a run whose writer died and make its catalog entry complete.

    Parameters
    ----------
    catalog : tiled client
        The writable catalog the run was being written to (embedded or served).
    backup : str or PathLike
        The run's JSON-lines backup (``<data_dir>/backup/<run uid>.jsonl``).
    reason : str, optional
        Why the run ended; default :data:`RECOVERED_REASON`, with the time of recovery.
    exit_status : {"fail", "abort"}
        Exit status of the added stop document.

    Returns
    -------
    dict
        The stop document now in the backup and the catalog (the catalog's own if it
        already holds the run complete: then nothing is changed).

    Raises
    ------
    ValueError
        If the backup does not begin with a start document.
    """
    from bluesky_tiled_plugins import TiledWriter

    from .validate import validate_document

    path = Path(backup)
    _drop_truncated_tail(path)
    docs = list(iter_backup(path))
    if not docs or docs[0][0] != "start":
        raise ValueError(f"{path} does not begin with a start document")
    uid = docs[0][1]["uid"]
    stop = next((doc for name, doc in docs if name == "stop"), None)
    stored = _catalog_stop(catalog, uid)
    if stored is not None:  # complete in the catalog (its stop is written last)
        if stop is None:
            logger.warning("run %s is complete in the catalog but its backup %s has no stop "
                           "(its last documents were lost); the backup is left as it is",
                           uid, path)
        return stored
    if stop is None:
        docs, dropped = _unmatched_stream_datums(docs)
        if dropped:
            logger.warning(
                "run %s: %d stream_datum document(s) announced frames whose event never "
                "came (the writer died in between): left out of the recovered run, which "
                "keeps only frames with their events (the files stay on disk): %s",
                uid, len(dropped),
                [(d.get("stream_resource"), d["indices"]) for d in dropped])
            _rewrite(path, docs)
        if reason is None:
            reason = f"{RECOVERED_REASON} at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}"
        stop = _stop_document(docs, reason, exit_status)
        validate_document("stop", stop)
        with open(path, "a", encoding="utf-8") as f:
            f.write(dumps({"name": "stop", "doc": stop}) + "\n")
            f.flush()
            os.fsync(f.fileno())
        docs.append(("stop", stop))
    clear_partial_run(catalog, uid)
    writer = TiledWriter(catalog)
    for name, doc in docs:
        writer(name, doc)
    logger.info("run %s recovered from %s (%s)", uid, path, stop["num_events"])
    return stop
