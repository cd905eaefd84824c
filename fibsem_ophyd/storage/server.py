"""A facility Tiled server for Bluesky runs: catalog on PostgreSQL, Bluesky exporter registered.

``tiled serve catalog`` has no option to register extra exporters, so a server started with it
stores and serves runs but answers ``run.documents()`` with HTTP 406. Registering the
``BlueskyRun`` -> ``application/json-seq`` exporter needs a server configuration file
(``media_types``); :func:`server_config` / :func:`write_server_config` produce one that serves
the same catalog as the command line::

    # quick, no document replay:
    tiled catalog init postgresql+asyncpg://USER:PW@HOST:5432/DB
    tiled serve catalog postgresql+asyncpg://USER:PW@HOST:5432/DB \\
        -w /data/fibsem -w duckdb:///data/fibsem/tables.duckdb -r /data/fibsem/images \\
        --api-key K --port 8000

    # the same with the exporter (what the facility tests run):
    python -c "from fibsem_ophyd.storage.server import write_server_config as w; \\
        w('tiled.yml', 'postgresql+asyncpg://USER:PW@HOST:5432/DB', \\
          writable_storage=['/data/fibsem', 'duckdb:///data/fibsem/tables.duckdb'], \\
          readable_storage=['/data/fibsem/images'])"
    tiled serve config tiled.yml --api-key K --port 8000

The simplest way is this package's own command, which does all of the above in one process
(catalog initialised if needed, exporter registered)::

    fibsem-ophyd serve --catalog postgresql://USER:PW@HOST:5432/DB --data-dir /data/fibsem \
        --api-key K --host 0.0.0.0 --port 8000

(:func:`serve`; without ``--catalog`` it serves ``<data-dir>/catalog.db``, the embedded
catalog's SQLite file.)

Clients then write with ``setup_session(tiled_uri="http://HOST:8000", api_key=K)`` (or the
profile collection with ``FIBSEM_OPHYD_TILED_URI`` / ``FIBSEM_OPHYD_TILED_API_KEY``). The
server must be able to read the detectors' image directory (``-r`` / ``readable_storage``):
TIFF files are registered where the detectors wrote them, not copied. Table storage may be
DuckDB (one server process) or PostgreSQL (``postgresql://...``, for several server processes).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

import yaml

__all__ = [
    "BLUESKY_MEDIA_TYPES",
    "catalog_database_uri",
    "redact_uri",
    "build_server_app",
    "serve",
    "server_config",
    "write_server_config",
    "catalog_init_command",
    "serve_command",
]

#: the ``media_types`` section that registers the Bluesky document exporter
BLUESKY_MEDIA_TYPES = {
    "BlueskyRun": {
        "application/json-seq": "bluesky_tiled_plugins.exporters:json_seq_exporter",
    }
}


def _storage(item: str | os.PathLike) -> str:
    """A storage location: URIs (``duckdb://``, ``postgresql://``, ``file://``) are kept,
    plain paths become absolute."""
    text = os.fspath(item)
    if "://" in text:
        return text
    return str(Path(text).expanduser().resolve())


def server_config(
    catalog_uri: str,
    *,
    writable_storage: Sequence[str | os.PathLike],
    readable_storage: Sequence[str | os.PathLike] = (),
    init_if_not_exists: bool = False,
    path: str = "/",
    tiff_adapter: bool = True,
) -> dict:
    """A Tiled server configuration serving a catalog of Bluesky runs.

    Parameters
    ----------
    catalog_uri : str
        SQL catalog database, e.g. ``postgresql+asyncpg://user:pw@host:5432/db`` (created
        with ``tiled catalog init``) or a SQLite file.
    writable_storage : sequence of str or PathLike
        Where the server writes: a directory (arrays) and a table store
        (``duckdb:///path/tables.duckdb`` or ``postgresql://...``).
    readable_storage : sequence of str or PathLike
        Directories of externally written files the server may serve (the detectors' image
        directory).
    init_if_not_exists : bool
        Let the server initialise the catalog database (else run ``tiled catalog init``).
    path : str
        Where the catalog is mounted on the server.
    tiff_adapter : bool
        Read TIFF series with :class:`fibsem_ophyd.storage.tiff_adapter.TiffSeriesAdapter`
        (``adapters_by_mimetype``; the server must be able to import this package, as
        it can when started with :func:`serve_command`). ``False``: Tiled's own adapter
        (same arrays, slower: see that module).

    Returns
    -------
    dict
        For ``tiled serve config`` (pass ``--api-key``, ``--host`` and ``--port`` on its
        command line, or add ``authentication``/``uvicorn`` sections).
    """
    if not writable_storage:
        raise ValueError("writable_storage needs a directory and a table store (duckdb/postgres)")
    args = {
        "uri": catalog_uri,
        "writable_storage": [_storage(s) for s in writable_storage],
        "readable_storage": [_storage(s) for s in readable_storage],
        "init_if_not_exists": bool(init_if_not_exists),
    }
    if tiff_adapter:
        from .tiff import TIFF_MIMETYPE
        from .tiff_adapter import ADAPTER_PATH

        args["adapters_by_mimetype"] = {TIFF_MIMETYPE: ADAPTER_PATH}
    return {
        "trees": [{"path": path, "tree": "catalog", "args": args}],
        "media_types": BLUESKY_MEDIA_TYPES,
    }


def write_server_config(path: str | os.PathLike, catalog_uri: str, **kwargs) -> Path:
    """Write :func:`server_config` as YAML to ``path``; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(server_config(catalog_uri, **kwargs), sort_keys=False))
    return path


def _tiled() -> list[str]:
    return [sys.executable, "-m", "tiled"]


def catalog_init_command(catalog_uri: str, *, if_not_exists: bool = True) -> list[str]:
    """``tiled catalog init [--if-not-exists] URI`` (creates the tables, stamps the schema)."""
    cmd = [*_tiled(), "catalog", "init"]
    if if_not_exists:
        cmd.append("--if-not-exists")
    return [*cmd, catalog_uri]


def serve_command(
    config_path: str | os.PathLike,
    *,
    api_key: str | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
) -> list[str]:
    """``tiled serve config CONFIG --host H --port P [--api-key K]``.

    Prefer passing the key through the ``TILED_SINGLE_USER_API_KEY`` environment variable
    (``api_key=None``) so it does not show in the process list.
    """
    cmd = [*_tiled(), "serve", "config", os.fspath(config_path), "--host", host,
           "--port", str(port)]
    if api_key is not None:
        cmd += ["--api-key", api_key]
    return cmd


# --------------------------------------------------------------------------- fibsem-ophyd serve
def catalog_database_uri(catalog: str | os.PathLike) -> str:
    """The SQL URI of a catalog given as a URI or a SQLite file path.

    ``postgresql://...`` gets Tiled's async driver (``postgresql+asyncpg://...``); a plain
    path becomes ``sqlite+aiosqlite:///<absolute path>``.
    """
    from tiled.utils import ensure_specified_sql_driver

    text = os.fspath(catalog)
    if "://" not in text:
        text = f"sqlite:///{Path(text).expanduser().resolve()}"
    return ensure_specified_sql_driver(text)


def redact_uri(uri: str) -> str:
    """``uri`` with any password replaced by ``***`` (for logs and messages)."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def build_server_app(
    catalog_uri: str,
    *,
    writable_storage: Sequence[str | os.PathLike],
    readable_storage: Sequence[str | os.PathLike] = (),
    api_key: str,
    init_if_not_exists: bool = True,
):
    """The Tiled app of a Bluesky-run catalog, API key required, exporter registered.

    The same app ``tiled serve catalog URI -w ... -r ... --api-key K`` builds, plus the
    ``BlueskyRun`` -> ``application/json-seq`` exporter (``run.documents()``).

    Parameters
    ----------
    catalog_uri : str
        Catalog database (see :func:`catalog_database_uri`).
    writable_storage : sequence of str or PathLike
        A directory (arrays) and a table store (``duckdb:///...`` or ``postgresql://...``).
    readable_storage : sequence of str or PathLike
        Directories of the detectors' files the server may serve.
    api_key : str
        Single-user API key (letters and digits); every request must carry it.
    init_if_not_exists : bool
        Create the catalog tables in an empty database (``tiled catalog init``).

    Returns
    -------
    fastapi.FastAPI
    """
    from tiled.catalog import from_uri
    from tiled.config import Authentication
    from tiled.server.app import build_app

    from .catalog import adapters_by_mimetype, serialization_registry, tune_app

    if not api_key or not api_key.isalnum() or not api_key.isascii():
        raise ValueError("the API key must be a non-empty string of ASCII letters and digits")
    for item in writable_storage:
        if "://" not in os.fspath(item):
            Path(item).expanduser().mkdir(parents=True, exist_ok=True)
    tree = from_uri(
        catalog_database_uri(catalog_uri),
        writable_storage=[_storage(s) for s in writable_storage],
        readable_storage=[_storage(s) for s in readable_storage],
        init_if_not_exists=init_if_not_exists,
        adapters_by_mimetype=adapters_by_mimetype(),
    )
    return tune_app(build_app(tree, Authentication(single_user_api_key=api_key),
                              serialization_registry=serialization_registry()))


def serve(
    data_dir: str | os.PathLike,
    *,
    catalog: str | os.PathLike | None = None,
    tables: str | None = None,
    readable_storage: Sequence[str | os.PathLike] = (),
    api_key: str,
    host: str = "127.0.0.1",
    port: int = 8000,
    log_level: str = "warning",
    announce=print,
) -> None:
    """Serve a catalog of Bluesky runs until interrupted (what ``fibsem-ophyd serve`` runs).

    Parameters
    ----------
    data_dir : str or PathLike
        The data directory: ``<data_dir>/data`` (server-written arrays),
        ``<data_dir>/tables.duckdb`` (event tables, unless ``tables``) and
        ``<data_dir>/images`` (readable: where writers sharing this directory put their
        TIFF series) -- the layout of the embedded catalog.
    catalog : str or PathLike, optional
        Catalog database: ``postgresql://user[:pw]@host:port/db`` (the database must exist;
        its tables are created if missing) or a SQLite file; default
        ``<data_dir>/catalog.db``.
    tables : str, optional
        Table store URI (``duckdb:///...`` or ``postgresql://...`` for several server
        processes); default ``duckdb:///<data_dir>/tables.duckdb``.
    readable_storage : sequence of str or PathLike
        More directories of detector files the server may serve.
    api_key : str
        Single-user API key.
    host, port : str, int
        Where to listen; ``port=0`` picks a free port.
    log_level : str
        uvicorn's log level.
    announce : callable
        Called once with the line ``Serving http://HOST:PORT ...`` when the socket is bound.
    """
    import socket

    import uvicorn

    from .catalog import CATALOG_FILE, DATA_DIR, IMAGES_DIR, TABLES_FILE

    root = Path(data_dir).expanduser().resolve()
    (root / IMAGES_DIR).mkdir(parents=True, exist_ok=True)
    catalog_uri = catalog_database_uri(catalog if catalog is not None else root / CATALOG_FILE)
    app = build_server_app(
        catalog_uri,
        writable_storage=[root / DATA_DIR, tables or f"duckdb:///{root / TABLES_FILE}"],
        readable_storage=[root / IMAGES_DIR, *readable_storage],
        api_key=api_key,
    )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    announce(f"Serving http://{shown}:{bound} (catalog {redact_uri(catalog_uri)}, "
             f"data {root})")
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on")
    uvicorn.Server(config).run(sockets=[sock])
