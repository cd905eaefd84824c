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

    Returns
    -------
    dict
        For ``tiled serve config`` (pass ``--api-key``, ``--host`` and ``--port`` on its
        command line, or add ``authentication``/``uvicorn`` sections).
    """
    if not writable_storage:
        raise ValueError("writable_storage needs a directory and a table store (duckdb/postgres)")
    return {
        "trees": [
            {
                "path": path,
                "tree": "catalog",
                "args": {
                    "uri": catalog_uri,
                    "writable_storage": [_storage(s) for s in writable_storage],
                    "readable_storage": [_storage(s) for s in readable_storage],
                    "init_if_not_exists": bool(init_if_not_exists),
                },
            }
        ],
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
