"""Read stored runs back: images with their metadata, searches, document replay.

:func:`load_images` resolves the TIFF files behind an image array node (its data sources'
assets) and reads them directly with tifffile when they are on this machine, which is as
fast as reading the files by hand and also yields each frame's metadata. For a remote
catalog it downloads the raw TIFF bytes (``/asset/bytes``), and as a last resort reads
the array through Tiled (pixels only, ``metadata=None``).
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np

from .tiff import FibImage, _parse_description, read_tiff

__all__ = [
    "load_images",
    "image_files",
    "image_keys",
    "search_runs",
    "replay",
    "replay_backup",
    "iter_backup",
]

logger = logging.getLogger(__name__)

TIFF_MIMETYPES = ("multipart/related;type=image/tiff", "image/tiff")


def _path_from_uri(uri: str) -> Path | None:
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        return None
    path = unquote(parsed.path)
    if os.name == "nt" and path.startswith("/") and path[2:3] == ":":
        path = path[1:]
    return Path(path)


def _tiff_source(node):
    """The TIFF data source of an array node (``None`` if it is not TIFF-backed)."""
    for ds in node.include_data_sources().data_sources() or []:
        if ds.mimetype in TIFF_MIMETYPES:
            return ds
    return None


def _with_sources(run):
    """The run client that fetches data sources with each node (no request made here)."""
    if getattr(run, "_include_data_sources", False):
        return run
    return run.new_variation(include_data_sources=True)


def _candidate_keys(run, stream: str) -> list[str]:
    """External (asset-backed) data keys of a stream, from its descriptor metadata."""
    data_keys = run[stream].metadata.get("data_keys") or {}
    return [k for k, v in data_keys.items() if isinstance(v, dict) and v.get("external")]


_KEY_CACHE: dict[tuple[str, str], list[str]] = {}
_KEY_CACHE_SIZE = 256


def image_keys(run, stream: str = "primary") -> list[str]:
    """Keys of a stream that are TIFF-backed image arrays.

    Parameters
    ----------
    run : BlueskyRun client
        The run (``catalog[uid]``).
    stream : str
        Stream name.

    Returns
    -------
    list of str
    """
    cache_key = (run.uri, stream)
    if cache_key in _KEY_CACHE:  # a stream's data keys never change once described
        return list(_KEY_CACHE[cache_key])
    runv = _with_sources(run)
    keys = []
    for key in _candidate_keys(run, stream):
        try:
            node = runv[f"{stream}/{key}"]
        except KeyError:
            continue
        if getattr(node, "structure_family", None) == "array" and _tiff_source(node):
            keys.append(key)
    if keys and (run.metadata or {}).get("stop"):  # only finished runs are cached
        if len(_KEY_CACHE) >= _KEY_CACHE_SIZE:
            _KEY_CACHE.pop(next(iter(_KEY_CACHE)))
        _KEY_CACHE[cache_key] = list(keys)
    return keys


def _image_node(run, stream: str, key: str | None):
    """(key, array node with data sources, TIFF data source or None)."""
    if key is None:
        keys = image_keys(run, stream)
        if len(keys) != 1:
            raise ValueError(
                f"stream {stream!r} has {len(keys)} TIFF image keys {keys}; pass key="
            )
        key = keys[0]
    node = _with_sources(run)[f"{stream}/{key}"]
    return key, node, _tiff_source(node)


def _files(node, ds) -> list[Path | str]:
    n = node.shape[0] if node.shape else len(ds.assets)
    assets = sorted(ds.assets, key=lambda a: (a.num is None, a.num))[:n]
    return [_path_from_uri(a.data_uri) or a.data_uri for a in assets]


def image_files(run, stream: str = "primary", key: str | None = None) -> list[Path | str]:
    """The files behind an image array, in frame order.

    Returns
    -------
    list
        A :class:`pathlib.Path` per frame for ``file:`` assets, the URI string otherwise.
    """
    key, node, ds = _image_node(run, stream, key)
    if ds is None:
        raise ValueError(f"{stream}/{key} is not backed by TIFF files")
    return _files(node, ds)


def _frame(data: np.ndarray) -> np.ndarray:
    while data.ndim > 2 and data.shape[0] == 1:
        data = data[0]
    return data


def _read_local(paths: list[Path], workers: int | None) -> list[FibImage]:
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    if workers <= 1 or len(paths) < 8:
        return [read_tiff(p) for p in paths]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(read_tiff, paths))


def _read_bytes(node, ds) -> list[FibImage]:
    """Download each TIFF from the server's ``/asset/bytes`` endpoint and parse it."""
    import tifffile
    from tiled.client.utils import handle_error

    link = node.item["links"]["self"].replace("/metadata", "/asset/bytes", 1)
    client = node.context.http_client
    n = node.shape[0] if node.shape else len(ds.assets)
    out = []
    for asset in sorted(ds.assets, key=lambda a: (a.num is None, a.num))[:n]:
        response = handle_error(client.get(link, params={"id": asset.id}))
        with tifffile.TiffFile(io.BytesIO(response.content)) as tif:
            page = tif.pages.first
            out.append(FibImage(page.asarray(), _parse_description(page.description)))
    return out


def load_images(
    run,
    stream: str = "primary",
    key: str | None = None,
    *,
    method: str = "auto",
    workers: int | None = None,
) -> list[FibImage]:
    """Every frame of an image key as :class:`FibImage` (pixels + metadata).

    Parameters
    ----------
    run : BlueskyRun client
        The run (``catalog[uid]``).
    stream : str
        Stream name (default ``"primary"``).
    key : str, optional
        Image data key; default the stream's only TIFF-backed key.
    method : {"auto", "files", "bytes", "array"}
        ``"files"``: read the TIFF files at the paths in the catalog (fast, needs them
        locally); ``"bytes"``: download the raw TIFF files from the server;
        ``"array"``: read pixels through Tiled (no metadata). ``"auto"`` tries them in
        that order.
    workers : int, optional
        Threads reading local files; default ``min(4, cpu count)`` for 8 files or more
        (file reads release the GIL). ``1`` reads sequentially.

    Returns
    -------
    list of FibImage
        In frame order; ``FibImage.path`` is set for local files.
    """
    key, node, ds = _image_node(run, stream, key)
    methods = ("files", "bytes", "array") if method == "auto" else (method,)
    errors = []
    for m in methods:
        try:
            if m == "files":
                if ds is None:
                    raise ValueError(f"{stream}/{key} is not backed by TIFF files")
                paths = _files(node, ds)
                if not all(isinstance(p, Path) and p.is_file() for p in paths):
                    raise FileNotFoundError("image files are not all on this machine")
                return _read_local(paths, workers)
            if m == "bytes":
                if ds is None:
                    raise ValueError(f"{stream}/{key} is not backed by TIFF files")
                return _read_bytes(node, ds)
            if m == "array":
                return [FibImage(_frame(np.asarray(a)), None) for a in node.read()]
            raise ValueError(f"unknown method {m!r}")
        except Exception as exc:
            errors.append(f"{m}: {exc!r}")
            if method != "auto":
                raise
            logger.debug("load_images: %s failed (%r), trying the next method", m, exc)
    raise RuntimeError(f"could not load {stream}/{key}: " + "; ".join(errors))


def search_runs(catalog, *queries, **start_keys):
    """Search runs by start-document metadata (and optional Tiled queries).

    Parameters
    ----------
    catalog : tiled container
        The catalog (e.g. :func:`fibsem_ophyd.storage.open_catalog`).
    *queries
        Extra ``tiled.queries`` objects (``FullText``, ``Comparison``, plugin
        ``TimeRange``...), combined with AND.
    **start_keys
        ``name=value`` equality on ``start.<name>`` (e.g. ``sample="L3"``).

    Returns
    -------
    tiled container
        The matching runs (``len()``, ``.values()``, ``[uid]``...).
    """
    from tiled.queries import Key

    results = catalog
    for k, v in start_keys.items():
        results = results.search(Key(f"start.{k}") == v)
    for q in queries:
        results = results.search(q)
    return results


def replay(run, callback: Callable[[str, dict], object]) -> int:
    """Feed a stored run's documents (``run.documents()``) to ``callback(name, doc)``.

    Returns
    -------
    int
        Number of documents replayed.
    """
    n = 0
    for name, doc in run.documents():
        callback(name, doc)
        n += 1
    return n


def iter_backup(path: str | os.PathLike) -> Iterator[tuple[str, dict]]:
    """``(name, doc)`` pairs of a JSON-lines backup file.

    A truncated last line (a crash during the write) is skipped with a warning.
    """
    with open(path, encoding="utf-8") as f:
        lines = f.readlines()
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:
                logger.warning("%s: skipping a truncated last line", path)
                return
            raise
        yield item["name"], item["doc"]


def replay_backup(path: str | os.PathLike, callback: Callable[[str, dict], object]) -> int:
    """Feed the documents of a JSON-lines backup to ``callback(name, doc)``.

    Use ``replay_backup(path, TiledWriter(client))`` to rebuild a run in a catalog. With a
    ``TiledWriter``, a partial entry of the run in its catalog (a run the catalog writer
    abandoned, or whose writer died) is deleted first (as
    :func:`~fibsem_ophyd.storage.recover_run` does; the TIFF files stay), so the replay
    does not fail with HTTP 409; a run the catalog already holds complete (with its
    ``stop``) is left as it is and nothing is replayed. A backup without a ``stop`` (a
    killed writer) is replayed as it is and stays open: :func:`recover_run` closes it.

    Returns
    -------
    int
        Number of documents replayed (0 if the catalog already held the run complete).
    """
    from bluesky_tiled_plugins import TiledWriter

    docs = iter_backup(path)
    first = next(docs, None)
    if first is None:
        return 0
    if isinstance(callback, TiledWriter) and first[0] == "start":
        from .recovery import clear_partial_run

        if clear_partial_run(callback.client, first[1]["uid"]) is not None:
            logger.info("run %s is already complete in the catalog; %s not replayed",
                        first[1]["uid"], path)
            return 0
    callback(*first)
    n = 1
    for name, doc in docs:
        callback(name, doc)
        n += 1
    return n
