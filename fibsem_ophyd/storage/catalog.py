"""Open the Tiled catalog: embedded (no server, under a data directory) or remote.

Embedded layout of a data directory::

    <data_dir>/catalog.db       SQLite catalog (nodes, metadata, data sources)
    <data_dir>/tables.duckdb    DuckDB: the event tables written by TiledWriter
    <data_dir>/data/            other writable storage (zarr arrays)
    <data_dir>/images/          detector files (TIFF series); registered, not copied
    <data_dir>/backup/          JSON-lines backup of every document (CatalogWriter)

The in-process app registers the ``application/json-seq`` exporter for the ``BlueskyRun``
spec so ``run.documents()`` replays a stored run. Re-opening an existing data directory
sees every earlier run.
"""

from __future__ import annotations

import copy
import logging
import os
import sqlite3
from pathlib import Path

__all__ = [
    "open_catalog",
    "serve_catalog",
    "CatalogServer",
    "build_catalog_app",
    "adapters_by_mimetype",
    "tune_app",
    "open_remote_catalog",
    "serialization_registry",
    "images_dir",
    "backup_dir",
    "CATALOG_FILE",
    "TABLES_FILE",
    "IMAGES_DIR",
    "BACKUP_DIR",
]

CATALOG_FILE = "catalog.db"
TABLES_FILE = "tables.duckdb"
DATA_DIR = "data"
#: sub-directory of the data directory where detectors write their TIFF series
IMAGES_DIR = "images"
#: sub-directory of the data directory for the JSON-lines document backup
BACKUP_DIR = "backup"

logger = logging.getLogger(__name__)


def images_dir(data_dir: str | os.PathLike) -> Path:
    """``<data_dir>/images`` (absolute): where detectors write ``<uuid>/img_NNNNNN.tif``."""
    return Path(data_dir).expanduser().resolve() / IMAGES_DIR


def backup_dir(data_dir: str | os.PathLike) -> Path:
    """``<data_dir>/backup`` (absolute): the default JSON-lines backup directory."""
    return Path(data_dir).expanduser().resolve() / BACKUP_DIR


def serialization_registry():
    """A copy of Tiled's default serialization registry with the Bluesky exporter added.

    Registers ``("BlueskyRun", "application/json-seq")`` ->
    :func:`bluesky_tiled_plugins.exporters.json_seq_exporter`, which ``run.documents()``
    needs (without it the server answers HTTP 406).
    """
    from bluesky_tiled_plugins.exporters import json_seq_exporter
    from tiled.media_type_registration import default_serialization_registry
    from tiled.server.app import build_app  # noqa: F401  (registers built-in serializers)

    registry = copy.deepcopy(default_serialization_registry)
    registry.register("BlueskyRun", "application/json-seq", json_seq_exporter)
    return registry


def _stamped_revision(db_path: Path) -> str | None:
    """The alembic revision stamped in a SQLite catalog, ``None`` if absent/unreadable."""
    if not db_path.exists():
        return None
    try:
        con = sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)
        try:
            row = con.execute("SELECT version_num FROM alembic_version").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return None
    return row[0] if row else None


def _needs_init(db_path: Path) -> bool:
    """Whether the catalog must be (created and) stamped before opening it."""
    from ._tiled_private import required_catalog_revision

    return _stamped_revision(db_path) != required_catalog_revision()


def build_catalog_app(
    data_dir: str | os.PathLike,
    *,
    readable_storage: list[str | os.PathLike] | None = None,
    api_key: str | None = None,
):
    """The Tiled app serving a data directory's catalog (created if needed).

    Parameters
    ----------
    data_dir : str or PathLike
        The data directory (created if missing); see the module docstring for its layout.
    readable_storage : list of path, optional
        Extra directories whose files the catalog may serve, besides ``<data_dir>/images``.
    api_key : str, optional
        Single-user API key (for a served app); ``None`` for the in-process app.

    Returns
    -------
    fastapi.FastAPI
        The app, with the ``BlueskyRun`` ``application/json-seq`` exporter registered.
    """
    from tiled.catalog import from_uri
    from tiled.server.app import build_app

    root = Path(data_dir).expanduser().resolve()
    for sub in (DATA_DIR, IMAGES_DIR):
        (root / sub).mkdir(parents=True, exist_ok=True)
    readable = [str(images_dir(root))]
    readable += [str(Path(p).expanduser().resolve()) for p in (readable_storage or [])]
    db_uri = f"sqlite:///{root / CATALOG_FILE}"
    init = _needs_init(root / CATALOG_FILE)
    if init:
        try:
            from ._tiled_private import init_sqlite_catalog

            init_sqlite_catalog(db_uri)
            init = _needs_init(root / CATALOG_FILE)
        except Exception:
            logger.warning("in-process catalog init failed; using `tiled catalog init`",
                           exc_info=True)
    catalog = from_uri(
        db_uri,
        writable_storage=[
            f"file://{root / DATA_DIR}",
            f"duckdb:///{root / TABLES_FILE}",
        ],
        readable_storage=readable,
        init_if_not_exists=init,
        adapters_by_mimetype=adapters_by_mimetype(),
    )
    kwargs = {}
    if api_key is not None:
        from tiled.config import Authentication

        kwargs["authentication"] = Authentication(single_user_api_key=api_key)
    app = build_app(catalog, serialization_registry=serialization_registry(), **kwargs)
    tune_app(app)
    return app


def adapters_by_mimetype() -> dict:
    """The adapters this package's catalogs use instead of Tiled's defaults: the TIFF
    series is read by :class:`~fibsem_ophyd.storage.tiff_adapter.TiffSeriesAdapter`."""
    from .tiff import TIFF_MIMETYPE
    from .tiff_adapter import TiffSeriesAdapter

    return {TIFF_MIMETYPE: TiffSeriesAdapter}


def tune_app(app):
    """Remove per-request costs of a Tiled app that change no response (see
    :mod:`fibsem_ophyd.storage._tiled_app`); returns ``app``."""
    from ._tiled_app import tune_app as _tune

    _tune(app)
    return app


def open_catalog(
    data_dir: str | os.PathLike,
    *,
    readable_storage: list[str | os.PathLike] | None = None,
    structure_clients: str = "numpy",
):
    """Open (creating if needed) the embedded catalog of a data directory, in-process.

    Parameters
    ----------
    data_dir : str or PathLike
        The data directory (created if missing); see the module docstring for its layout.
    readable_storage : list of path, optional
        Extra directories whose files the catalog may serve, besides
        ``<data_dir>/images`` (e.g. a detector share).
    structure_clients : str
        ``"numpy"`` (default) or ``"dask"``.

    Returns
    -------
    tiled.client.container.Container
        The root of the catalog (a ``CatalogOfBlueskyRuns`` client); usable as the
        ``client`` of :class:`fibsem_ophyd.storage.CatalogWriter`.

    Notes
    -----
    The Tiled server code runs in this process (a thread), so catalog writes compete with
    the RunEngine for the GIL. For acquisition throughput prefer :func:`serve_catalog`,
    which serves the same data directory from a child process.
    """
    from tiled.client import from_context

    from ._tiled_app import in_process_context, lean_in_process_transport

    app = build_catalog_app(data_dir, readable_storage=readable_storage)
    # Server and client share this process: compressing responses only to decompress them
    # a moment later costs CPU (and the GIL) for nothing, so ask for identity encoding.
    context = in_process_context(app, headers={"accept-encoding": "identity"})
    # One thread crossing per request instead of starlette TestClient's ~8 (see _tiled_app)
    lean_in_process_transport(context)
    return from_context(context, structure_clients=structure_clients)


class CatalogServer:
    """A data directory's catalog served from a child process on localhost.

    The child runs the same app as :func:`open_catalog` (same files, exporter registered)
    under uvicorn on ``127.0.0.1`` with a random port and API key, so the catalog's server
    work does not compete with the RunEngine for this process's GIL. It exits when
    :meth:`close` is called, when this process exits, or when this process dies (it
    watches its stdin pipe). Its log is ``<data_dir>/catalog-server.log``.

    Do not also open the same data directory in-process (DuckDB allows one writer process).

    Parameters
    ----------
    data_dir : str or PathLike
        The data directory.
    readable_storage : list of path, optional
        Extra readable directories besides ``<data_dir>/images``.
    startup_timeout : float
        Seconds to wait for the server to answer (importing Tiled takes a few seconds).

    Attributes
    ----------
    uri : str
        ``http://127.0.0.1:<port>``.
    api_key : str
        The single-user API key of the server.
    process : subprocess.Popen
        The child process.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike,
        *,
        readable_storage: list[str | os.PathLike] | None = None,
        startup_timeout: float = 120.0,
    ):
        import atexit
        import secrets
        import subprocess
        import sys
        import time

        self.data_dir = Path(data_dir).expanduser().resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.api_key = secrets.token_hex(16)
        cmd = [sys.executable, "-m", "fibsem_ophyd.storage._serve", str(self.data_dir)]
        for p in readable_storage or []:
            cmd += ["-r", str(Path(p).expanduser().resolve())]
        env = dict(os.environ, FIBSEM_CATALOG_API_KEY=self.api_key)
        self._log = open(self.data_dir / "catalog-server.log", "ab")
        self.process = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, env=env
        )
        atexit.register(self.close)
        line = self.process.stdout.readline().decode().strip()  # "PORT <n>" once bound
        if not line.startswith("PORT "):
            self.close()
            raise RuntimeError(
                f"catalog server failed to start (see {self.data_dir / 'catalog-server.log'})"
            )
        self.port = int(line.split()[1])
        self.uri = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + startup_timeout
        import httpx

        while True:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"catalog server exited with {self.process.returncode} "
                    f"(see {self.data_dir / 'catalog-server.log'})"
                )
            try:
                if httpx.get(f"{self.uri}/healthz", timeout=1.0).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                self.close()
                raise TimeoutError(f"catalog server did not answer within {startup_timeout} s")
            time.sleep(0.1)

    def client(self, **kwargs):
        """A new client of the served catalog (``tiled.client.from_uri``).

        Responses are not compressed (``accept-encoding: identity``, unless ``headers``
        says otherwise): over localhost compressing and decompressing only costs CPU.
        """
        kwargs.setdefault("headers", {"accept-encoding": "identity"})
        return open_remote_catalog(self.uri, api_key=self.api_key, **kwargs)

    def close(self, timeout: float = 10.0) -> None:
        """Stop the child process and close its pipes and log (idempotent)."""
        import atexit
        import subprocess

        atexit.unregister(self.close)
        proc = getattr(self, "process", None)
        if proc is not None:
            if proc.poll() is None:
                try:
                    proc.stdin.close()  # the child exits on EOF
                    proc.wait(timeout)
                except (subprocess.TimeoutExpired, OSError):
                    proc.terminate()
                    try:
                        proc.wait(timeout)
                    except subprocess.TimeoutExpired:
                        proc.kill()
                        proc.wait()
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None and not pipe.closed:
                    pipe.close()
        log = getattr(self, "_log", None)
        if log is not None and not log.closed:
            log.close()

    def __enter__(self) -> CatalogServer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def serve_catalog(
    data_dir: str | os.PathLike,
    *,
    readable_storage: list[str | os.PathLike] | None = None,
    startup_timeout: float = 120.0,
) -> CatalogServer:
    """Serve a data directory's catalog from a child process (see :class:`CatalogServer`).

    Returns
    -------
    CatalogServer
        ``server.client()`` gives a catalog client for :class:`CatalogWriter` and reading.
    """
    return CatalogServer(
        data_dir, readable_storage=readable_storage, startup_timeout=startup_timeout
    )


def open_remote_catalog(uri: str, api_key: str | None = None, **kwargs):
    """Connect to a Tiled server (e.g. ``http://host:8000``, PostgreSQL-backed).

    Parameters
    ----------
    uri : str
        Server (or node) URI.
    api_key : str, optional
        API key; default from the ``TILED_API_KEY`` environment variable or a login.
    **kwargs
        ``structure_clients``, ``include_data_sources`` and ``remember_me`` are passed to
        :func:`tiled.client.from_context`, the rest (``headers``, ``timeout``, ``verify``,
        ...) to ``tiled.client.context.Context.from_any_uri``.

    Returns
    -------
    tiled.client.container.Container
        The catalog node. For ``run.documents()`` the server must register the
        ``BlueskyRun`` ``application/json-seq`` exporter in its config
        (``media_types: {BlueskyRun: {"application/json-seq":
        "bluesky_tiled_plugins.exporters:json_seq_exporter"}}``).
    """
    from tiled.client import from_context
    from tiled.client.context import Context

    # tiled's from_uri, except that a refused connection (no or wrong key, a node that is
    # not there) closes the HTTP client it opened instead of leaving its socket to the GC
    node_kwargs = {k: kwargs.pop(k) for k in ("structure_clients", "include_data_sources",
                                              "remember_me") if k in kwargs}
    context, node_path_parts = Context.from_any_uri(uri, api_key=api_key, **kwargs)
    try:
        return from_context(context, node_path_parts=node_path_parts, **node_kwargs)
    except BaseException:
        context.close()
        raise
