"""Every use of bluesky-tiled-plugins' and Tiled's private API, in one place.

The catalog writer (:mod:`.writer`) flushes a run's cached rows and files before its
stop document, creates an image node with its first frames in one request, defers the
``close_stream`` requests of a stopped run and skips a second validation of events: all
through ``_RunWriter`` / ``TiledWriter`` / ``RunNormalizer`` internals, which may change in
any release. :func:`check_bluesky_tiled_plugins` refuses versions outside
:data:`BLUESKY_TILED_PLUGINS_SUPPORTED` (the writer calls it when it is built), with a
message naming the range. The in-process creation of a SQLite catalog
(:func:`init_sqlite_catalog`) uses Tiled internals; outside :data:`TILED_SUPPORTED` it
refuses and :mod:`.catalog` falls back to ``tiled catalog init`` (a subprocess), as it
does on any error here. The read path's use of Tiled's server and in-process client
internals is in :mod:`._tiled_app`.

Pinned by tests/storage/test_writer.py (``test_frames_visible_before_stop`` and the other
writer tests) and tests/storage/test_tiled_private.py.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import threading
from collections import defaultdict
from collections.abc import Callable
from concurrent.futures import Executor
from concurrent.futures import wait as futures_wait
from importlib.metadata import version as _dist_version
from typing import Any

from bluesky_tiled_plugins import TiledWriter
from packaging.specifiers import SpecifierSet
from packaging.version import Version

__all__ = [
    "BLUESKY_TILED_PLUGINS_SUPPORTED",
    "TILED_SUPPORTED",
    "UnsupportedVersion",
    "check_bluesky_tiled_plugins",
    "check_tiled",
    "HookedTiledWriter",
    "flush_run_writer",
    "make_run_writer",
    "stop_deferring_stream_close",
    "normalizer_class",
    "init_sqlite_catalog",
    "required_catalog_revision",
]

#: the bluesky-tiled-plugins releases whose private API this module was written against
BLUESKY_TILED_PLUGINS_SUPPORTED = SpecifierSet(">=2.0.12,<2.1")
#: the Tiled releases whose catalog-creation internals this module was written against
TILED_SUPPORTED = SpecifierSet(">=0.2.20,<0.3")


class UnsupportedVersion(RuntimeError):
    """An installed package is outside the range this module's private-API use supports."""


def _check(dist: str, supported: SpecifierSet, found: str | None, what: str) -> str:
    found = found if found is not None else _dist_version(dist)
    if Version(found) not in supported:
        raise UnsupportedVersion(
            f"{what} uses private API of {dist} {supported} (fibsem_ophyd/storage/"
            f"_tiled_private.py); {dist} {found} is installed. Install a supported version "
            f"(pip install '{dist}{supported}') or port that module to it."
        )
    return found


@functools.cache
def _installed_ok(dist: str) -> str:
    supported = {"bluesky-tiled-plugins": BLUESKY_TILED_PLUGINS_SUPPORTED,
                 "tiled": TILED_SUPPORTED}[dist]
    what = {"bluesky-tiled-plugins": "fibsem_ophyd.storage.CatalogWriter",
            "tiled": "the in-process catalog creation"}[dist]
    return _check(dist, supported, None, what)


def check_bluesky_tiled_plugins(found: str | None = None) -> str:
    """The bluesky-tiled-plugins version (``found``, default the installed one), if in
    :data:`BLUESKY_TILED_PLUGINS_SUPPORTED`.

    Raises
    ------
    UnsupportedVersion
        Outside the range; the message names the range and the version found.
    """
    if found is None:
        return _installed_ok("bluesky-tiled-plugins")
    return _check("bluesky-tiled-plugins", BLUESKY_TILED_PLUGINS_SUPPORTED, found,
                  "fibsem_ophyd.storage.CatalogWriter")


def check_tiled(found: str | None = None) -> str:
    """The Tiled version (``found``, default the installed one), if in
    :data:`TILED_SUPPORTED` (else :class:`UnsupportedVersion`, naming the range)."""
    if found is None:
        return _installed_ok("tiled")
    return _check("tiled", TILED_SUPPORTED, found, "the in-process catalog creation")


# --------------------------------------------------------------------------------------
# bluesky-tiled-plugins: TiledWriter / _RunWriter / RunNormalizer internals
# --------------------------------------------------------------------------------------
class HookedTiledWriter(TiledWriter):
    """A ``TiledWriter`` that builds each run's ``_RunWriter`` itself and hands it to
    :meth:`open_run`, which returns the run's callback (``TiledWriter._factory`` is the
    hook). Building one checks the bluesky-tiled-plugins version."""

    def __init__(self, client, **kwargs):
        check_bluesky_tiled_plugins()
        super().__init__(client, **kwargs)

    def open_run(self, uid: str, cb: Callable, run_writer: Any) -> Callable:
        """The callback for the run ``uid``, given its callback chain ``cb`` (normalizer,
        then ``run_writer``) and its ``_RunWriter``."""
        raise NotImplementedError

    def _factory(self, name, doc):
        cb, run_writer = make_run_writer(self)
        return [self.open_run(doc["uid"], cb, run_writer)], []


def stop_deferring_stream_close(cb: Callable, run_writer: Any, doc: dict) -> Callable[[], None]:
    """Send the stop document through ``cb`` without ``run_writer`` closing its nodes'
    live streams; return the bound method that closes them, for later.

    ``_RunWriter.stop`` ends with one ``close_stream`` request per node; they only notify
    live-stream subscribers, so the caller sends them after the run counts as written,
    or not at all.
    """
    closer = run_writer._close_stream_tree  # the bound method
    run_writer._close_stream_tree = _no_op  # shadows it on the instance during stop
    try:
        cb("stop", doc)
    finally:
        del run_writer._close_stream_tree
    return closer


def _no_op() -> None:
    return None


def flush_run_writer(run_writer: Any, sent_assets: dict[str, int] | None = None,
                     executor: Executor | None = None) -> int:
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
    executor : concurrent.futures.Executor, optional
        If given, the table rows are appended on it while this thread registers the
        assets: the two requests go to the catalog concurrently (they touch different
        nodes), so a flush costs about one round trip instead of two. Both are complete
        when this returns; the first error of either is raised.

    Returns
    -------
    int
        The number of cached items (table rows + stream_datum documents) written.
    """
    from bluesky_tiled_plugins.writing.consolidators import Patch

    tables = [(desc_name, list(cache))
              for desc_name, cache in run_writer._internal_data_cache.items() if cache]
    for desc_name, _ in tables:
        run_writer._internal_data_cache[desc_name].clear()

    def write_tables() -> int:
        n = 0
        for desc_name, rows in tables:
            run_writer._write_internal_data(rows, desc_node=run_writer._desc_nodes[desc_name])
            n += len(rows)
        return n

    table_future = executor.submit(write_tables) if executor is not None and tables else None
    written = 0 if table_future is not None else write_tables()
    try:
        pending = list(run_writer._external_data_cache.values())
        run_writer._external_data_cache.clear()
        pending, created = _create_nodes_with_frames(run_writer, pending, sent_assets)
        written += created
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
    except BaseException:
        if table_future is not None:
            futures_wait([table_future])  # never leave a request running behind an error
        raise
    if table_future is not None:
        written += table_future.result()  # raises the table write's error, if any
    return written


def _create_nodes_with_frames(run_writer: Any, pending: list[dict],
                              sent_assets: dict[str, int] | None) -> tuple[list[dict], int]:
    """Create the node of each stream resource seen for the first time with its frames.

    ``_RunWriter`` creates a stream resource's node empty on its first stream_datum and
    then adds the frames with a second request; here the node is created with the frames
    already in its data source: one catalog request instead of two. Stream_datums of
    nodes that exist (or of a further stream resource for a known data key) are returned
    for the usual path.

    Returns
    -------
    (list of dict, int)
        The stream_datums left, and how many were written here.
    """
    from bluesky_tiled_plugins.writing.consolidators import consolidator_factory

    rest: list[dict] = []
    created = 0
    for doc in pending:
        sres_uid = doc["stream_resource"]
        sres_doc = run_writer._stream_resource_cache.get(sres_uid)
        if sres_uid in run_writer._sres_nodes or sres_doc is None:
            rest.append(doc)
            continue
        desc_node = run_writer._desc_nodes[doc["descriptor"]]
        full_key = f"{desc_node.item['id']}_{sres_doc['data_key']}"
        if full_key in run_writer._sres_nodes:
            rest.append(doc)
            continue
        consolidator = consolidator_factory(sres_doc, desc_node.metadata)
        consolidator.consume_stream_datum(doc)
        data_source = consolidator.get_data_source()
        node = desc_node.new(
            key=consolidator.data_key,
            structure_family=data_source.structure_family,
            data_sources=[data_source],
            metadata={},
            specs=[],
            access_tags=run_writer.access_tags,
        )
        run_writer._consolidators[sres_uid] = run_writer._consolidators[full_key] = consolidator
        run_writer._sres_nodes[sres_uid] = run_writer._sres_nodes[full_key] = node
        if sent_assets is not None:
            sent_assets[node.uri] = len(data_source.assets)
        created += 1
    return rest, created


def make_run_writer(tiled_writer: Any) -> tuple[Any, Any]:
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



@functools.cache
def normalizer_class():
    """``RunNormalizer`` that does not validate the events it passes on a second time.

    The RunEngine validates every event against the event-model schema when it composes it
    (``event_model.ComposeEvent``); the normalizer then only copies it and drops keys
    (``filled``, external data keys), and ``RunNormalizer.emit`` would validate the copy
    again: ~0.5 ms per frame of the catalog thread (holding the GIL). Every other
    document, stream_datums included, is still validated here.
    """
    from bluesky_tiled_plugins.writing.tiled_writer import RunNormalizer
    from event_model import DocumentNames

    class _Normalizer(RunNormalizer):
        def emit(self, name, doc):
            if name == DocumentNames.event:
                self.dispatcher.process(name, doc)
            else:
                super().emit(name, doc)

    return _Normalizer



# --------------------------------------------------------------------------------------
# Tiled: catalog creation internals
# --------------------------------------------------------------------------------------
def required_catalog_revision() -> str:
    """The alembic revision Tiled requires of a catalog database."""
    from tiled.catalog.core import REQUIRED_REVISION

    return REQUIRED_REVISION


def init_sqlite_catalog(uri: str) -> None:
    """Create and stamp a new SQLite catalog in-process (what ``tiled catalog init`` does).

    Tiled's own ``init_if_not_exists=True`` runs ``python -m tiled catalog init`` in a
    subprocess, which re-imports Tiled (~7 s on a small machine). This does the same two
    steps (create tables, stamp alembic head) in a short-lived thread with its own event
    loop and engine, so it works from inside a running loop too. Uses Tiled internals:
    the caller falls back to the subprocess if anything here fails, or if the installed
    Tiled is outside :data:`TILED_SUPPORTED`.
    """
    check_tiled()
    from sqlalchemy.ext.asyncio import create_async_engine
    from tiled.alembic_utils import UninitializedDatabase, check_database, stamp_head
    from tiled.catalog.alembic_constants import ALEMBIC_DIR, ALEMBIC_INI_TEMPLATE_PATH
    from tiled.catalog.core import ALL_REVISIONS, REQUIRED_REVISION, initialize_database
    from tiled.utils import ensure_specified_sql_driver

    uri = ensure_specified_sql_driver(uri)
    errors: list[BaseException] = []

    async def setup() -> None:
        engine = create_async_engine(uri)
        try:
            try:
                await check_database(engine, REQUIRED_REVISION, ALL_REVISIONS)
            except UninitializedDatabase:
                await initialize_database(engine)
        finally:
            await engine.dispose()

    def work() -> None:
        try:
            asyncio.run(setup())
            stamp_head(ALEMBIC_INI_TEMPLATE_PATH, ALEMBIC_DIR, uri)
        except BaseException as exc:  # reported to the caller below
            errors.append(exc)

    thread = threading.Thread(target=work, name="tiled-catalog-init")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]

