"""Reading stored frames the standard Tiled way: values, requests per read, the read path's
tuning (TIFF adapter, app, in-process transport), against real catalogs and real files."""

from __future__ import annotations

import gc
import threading
import weakref

import numpy as np
import pytest
import tifffile
from bluesky import RunEngine
from bluesky.plans import count
from tiled.client.utils import ClientError

from fibsem_ophyd.storage import (
    CatalogWriter,
    backup_dir,
    image_files,
    images_dir,
    open_catalog,
    serve_catalog,
)
from fibsem_ophyd.storage._tiled_app import LeanAppTransport
from fibsem_ophyd.storage.tiff import TIFF_MIMETYPE
from fibsem_ophyd.storage.tiff_adapter import TiffSeriesAdapter

from ._device import TiffDetector, expected_frame

N, SHAPE = 6, (48, 64)


def _store(catalog, data_dir, n=N):
    det = TiffDetector(images_dir(data_dir), shape=SHAPE, seed=3)
    RE = RunEngine({}, call_returns_result=False)
    writer = CatalogWriter(catalog, backup_dir(data_dir), latency=0.1)
    RE.subscribe(writer)
    (uid,) = RE(count([det], n))
    assert writer.wait(timeout=60) == []
    writer.close()
    return uid, det.image_key


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """One run of N frames in an embedded catalog (in-process app)."""
    data_dir = tmp_path_factory.mktemp("tread") / "data"
    catalog = open_catalog(data_dir)
    uid, key = _store(catalog, data_dir)
    return catalog, uid, key, image_files(catalog[uid])


def _on_disk(files):
    return np.stack([tifffile.imread(f) for f in files])


def _check_frames(catalog, uid, key, files):
    disk = _on_disk(files)
    assert disk.shape == (N, *SHAPE)
    for i in range(N):
        assert np.array_equal(disk[i], expected_frame(3, i, SHAPE))
        frame = catalog[uid]["primary"][key][i]
        assert frame.shape == (1, *SHAPE) and frame.dtype == np.uint8
        assert np.array_equal(frame[0], disk[i])
    node = catalog[uid]["primary"][key]
    whole = node.read()
    assert whole.shape == (N, 1, *SHAPE)
    assert np.array_equal(whole[:, 0], disk)
    assert np.array_equal(node[1:5, 0, 10:20, 3:60], disk[1:5, 10:20, 3:60])
    assert np.array_equal(node[-1, 0, :, 7], disk[-1, :, 7])


def test_frames_read_through_tiled_equal_the_files(stored):
    catalog, uid, key, files = stored
    _check_frames(catalog, uid, key, files)


def test_frames_read_through_a_served_catalog_equal_the_files(tmp_path):
    data_dir = tmp_path / "data"
    with serve_catalog(data_dir) as server:
        catalog = server.client()
        try:
            uid, key = _store(catalog, data_dir)
            _check_frames(catalog, uid, key, image_files(catalog[uid]))
        finally:
            catalog.context.close()  # its pooled connections to the server


class _Requests:
    """Counts the HTTP requests a client sends (an httpx event hook on its real client)."""

    def __init__(self, client):
        self.paths: list[str] = []
        self._hooks = client.context.http_client.event_hooks["request"]
        self._hooks.append(self)

    def __call__(self, request):
        self.paths.append(request.url.path)

    def take(self):
        paths, self.paths = self.paths, []
        return paths

    def close(self):
        self._hooks.remove(self)


def test_requests_per_frame(stored):
    """What a frame costs in requests: 6 through the chained navigation (the composite
    stream lists its keys twice in Tiled's client), 2 with the path in one key, 1 on a
    node in hand."""
    catalog, uid, key, files = stored
    requests = _Requests(catalog)
    try:
        frame = catalog[uid]["primary"][key][2]
        assert requests.take() == [
            f"/api/v1/metadata/{uid}",
            f"/api/v1/metadata/{uid}/primary",
            f"/api/v1/search/{uid}/primary",
            f"/api/v1/search/{uid}/primary",
            f"/api/v1/metadata/{uid}/primary/{key}",
            f"/api/v1/array/full/{uid}/primary/{key}",
        ]
        same = catalog[f"{uid}/primary/{key}"][2]
        assert requests.take() == [f"/api/v1/metadata/{uid}/primary/{key}",
                                   f"/api/v1/array/full/{uid}/primary/{key}"]
        node = catalog[uid, "primary", key]
        requests.take()
        in_hand = node[2]
        assert requests.take() == [f"/api/v1/array/full/{uid}/primary/{key}"]
    finally:
        requests.close()
    disk = tifffile.imread(files[2])
    for a in (frame, same, in_hand):
        assert np.array_equal(a[0], disk)


# ------------------------------------------------------------------------- the TIFF adapter
def test_catalogs_read_tiff_series_with_the_package_adapter(stored):
    catalog = stored[0]
    tree = catalog.context.http_client.app.state.root_tree
    assert tree.context.adapters_by_mimetype[TIFF_MIMETYPE] is TiffSeriesAdapter


def test_server_config_names_the_adapter_tiled_imports():
    from tiled.utils import import_object

    from fibsem_ophyd.storage.server import server_config

    args = server_config("sqlite:////tmp/c.db", writable_storage=["/tmp/w"])["trees"][0]["args"]
    (path,) = args["adapters_by_mimetype"].values()
    assert list(args["adapters_by_mimetype"]) == [TIFF_MIMETYPE]
    assert import_object(path) is TiffSeriesAdapter
    plain = server_config("sqlite:////tmp/c.db", writable_storage=["/tmp/w"],
                          tiff_adapter=False)
    assert "adapters_by_mimetype" not in plain["trees"][0]["args"]


@pytest.mark.parametrize("selection", [
    3, (3,), (0, slice(5, 9), slice(None)), slice(None), slice(1, 4), (slice(2, 6), 0),
    (slice(None), 0, slice(10, 12), 5), Ellipsis, (Ellipsis, 7),
])
def test_tiff_adapter_returns_what_tiled_adapter_returns(stored, selection):
    """Same arrays as Tiled's TiffSequenceAdapter, on the stored files, with the
    structure the catalog records ((N, 1, H, W), one frame per chunk)."""
    from tiled.adapters.tiff import TiffSequenceAdapter

    catalog, uid, key, files = stored
    structure = catalog[uid]["primary"][key].structure()
    uris = [f"file://localhost{p.as_posix()}" for p in files]
    ours = TiffSeriesAdapter(uris, structure=structure, chunks=structure.chunks)
    tileds = TiffSequenceAdapter(uris, structure=structure, chunks=structure.chunks)
    a, b = ours.read(selection), tileds.read(selection)
    assert a.dtype == b.dtype and a.shape == b.shape
    assert np.array_equal(a, b)


def test_tiff_adapter_refuses_a_frame_of_another_shape(tmp_path):
    paths = []
    for i, shape in enumerate([(8, 10), (8, 10), (9, 10)]):
        paths.append(tmp_path / f"img_{i}.tif")
        tifffile.imwrite(paths[-1], np.full(shape, i, np.uint8))
    adapter = TiffSeriesAdapter([f"file://localhost{p.as_posix()}" for p in paths[:2]])
    assert np.array_equal(adapter.read(), np.stack([np.zeros((8, 10)), np.ones((8, 10))]))
    bad = TiffSeriesAdapter([f"file://localhost{p.as_posix()}" for p in paths])
    with pytest.raises(ValueError):
        bad.read()


# ------------------------------------------------------------------------------- the app
def test_settings_override_is_settled_and_a_later_override_is_honoured(stored):
    from tiled.server.settings import get_settings

    catalog, uid, key, files = stored
    app = catalog.context.http_client.app
    overrides = app.dependency_overrides
    # FastAPI re-resolves every dependency per request while this is truthy
    assert not overrides
    assert overrides[get_settings]() is get_settings()
    # an override set later makes it truthy, and FastAPI applies it: a settings object
    # with another API key makes the client's key invalid
    other = get_settings().model_copy()
    other.single_user_api_key = "another0key"
    original = overrides[get_settings]
    overrides[get_settings] = lambda: other
    try:
        assert overrides
        with pytest.raises(ClientError) as info:
            catalog[uid]
        assert info.value.response.status_code == 401
    finally:
        overrides[get_settings] = original
    assert not overrides
    assert np.array_equal(catalog[uid]["primary"][key][0][0], tifffile.imread(files[0]))


def test_resource_models_survive_garbage_collection(stored):
    """pydantic caches parametrised generics weakly: an unpinned one is dropped by the
    garbage collector (and rebuilt on the next request); the ones the catalog's responses
    use are kept."""
    from tiled.server import schemas

    unpinned = weakref.ref(schemas.Resource[schemas.NodeAttributes, schemas.SelfLinkOnly,
                                            schemas.ContainerMeta])
    gc.collect()
    assert unpinned() is None
    used = [schemas.Resource[schemas.NodeAttributes, schemas.ArrayLinks, schemas.EmptyDict],
            schemas.Resource[schemas.NodeAttributes, schemas.ContainerLinks,
                             schemas.ContainerMeta]]
    refs = [weakref.ref(m) for m in used]
    del used
    gc.collect()
    assert all(r() is not None for r in refs)


def test_a_closed_in_process_catalog_lets_its_app_go(tmp_path):
    """Tiled's ``from_app`` registers its client's exit as a thread-exit hook and never drops
    it, which kept every in-process catalog's app alive until the interpreter exited; once
    our context is closed, the hook is gone and the app is collected. Open, it keeps the
    hook (the portal thread must be stopped before the interpreter joins threads)."""
    catalog = open_catalog(tmp_path / "data")
    client = catalog.context.http_client

    def registered(client):
        return [h for h in threading._threading_atexits
                if getattr(h, "func", None) == client.__exit__]

    assert len(registered(client)) == 1
    app = weakref.ref(client.app)
    catalog.context.close()
    assert registered(client) == []
    del catalog, client
    gc.collect()
    assert app() is None


# ------------------------------------------------------------------ the in-process transport
def test_lean_transport_answers_as_the_test_client_does(stored):
    catalog, uid, key, files = stored
    http = catalog.context.http_client
    lean = http._transport.transport
    assert isinstance(lean, LeanAppTransport)
    import httpx

    base = str(http.base_url).rstrip("/")
    for path, accept in [
        (f"/api/v1/metadata/{uid}/primary/{key}", "application/json"),
        (f"/api/v1/search/{uid}/primary", "application/x-msgpack"),
        (f"/api/v1/array/full/{uid}/primary/{key}?slice=1:3", "application/octet-stream"),
        (f"/api/v1/metadata/{uid}/nothing-here", "application/json"),
        ("/healthz", "*/*"),
    ]:
        answers = []
        for transport in (lean, lean.inner):
            request = httpx.Request("GET", base + path,
                                    headers={**http.headers, "accept": accept})
            response = transport.handle_request(request)
            answers.append((response.status_code, response.headers.get("content-type"),
                            response.read()))
        (status, ctype, body), (status2, ctype2, body2) = answers
        assert (status, ctype) == (status2, ctype2)
        if accept == "application/octet-stream":
            assert status == 200
            got = np.frombuffer(body, np.uint8).reshape(2, 1, *SHAPE)
            assert np.array_equal(got[:, 0], _on_disk(files[1:3]))
        if path.endswith("nothing-here"):
            assert status == 404
        if "metadata" not in path and "search" not in path:
            assert body == body2
    # a missing key through the client is a KeyError, as with Tiled's transport
    with pytest.raises(KeyError):
        catalog[uid]["no-such-stream"]


def test_streamed_responses_arrive_whole_through_the_lean_transport(stored):
    """File responses (``/asset/bytes``) stream their body; the transport's client stays
    connected until the whole body is sent (a disconnect seen early made the app stop:
    "No response returned" in about half of such requests)."""
    from fibsem_ophyd.storage import load_images
    from fibsem_ophyd.storage.tiff import read_tiff

    catalog, uid, key, files = stored
    for _ in range(2):
        assert load_images(catalog[uid], key=key, method="bytes") == [read_tiff(f)
                                                                      for f in files]


def test_documents_replay_through_the_lean_transport(stored):
    """``run.documents()`` (a streamed ``application/json-seq`` response) in full."""
    catalog, uid, key, files = stored
    names = [name for name, _ in catalog[uid].documents()]
    assert names[0] == "start" and names[-1] == "stop"
    assert names.count("event") == N and names.count("stream_datum") >= 1
