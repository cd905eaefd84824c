"""CatalogWriter: backup, background writes, adaptive batching, flush hook, errors."""

from __future__ import annotations

import json
import logging
import threading
import time

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
import pytest
from bluesky.plans import count
from bluesky_tiled_plugins import TiledWriter
from ophyd import Signal

from fibsem_ophyd.storage import (
    CatalogWriter,
    images_dir,
    iter_backup,
    load_images,
    open_catalog,
    replay_backup,
    validate_document,
)
from fibsem_ophyd.storage import writer as writer_mod

from ._device import expected_frame


def _start_uids(RE) -> list[str]:
    """A list that receives the uid of every run started by ``RE``."""
    uids: list[str] = []
    RE.subscribe(lambda name, doc: uids.append(doc["uid"]), "start")
    return uids


def _visible(catalog, uid, key="sem_image"):
    """Frames of ``key`` currently visible in the catalog (0 if the node is not there)."""
    try:
        return catalog[uid]["primary"][key].shape[0]
    except KeyError:
        return 0


def test_frames_visible_before_stop(RE, writer, det, catalog):
    """Pins the private-API flush hook (``flush_run_writer``): frames are in the catalog,
    with their values, while the run is still open, and assets are registered
    incrementally across several flushes."""
    RE.subscribe(writer)
    uids = _start_uids(RE)
    seen = {}

    @bpp.stage_decorator([det])
    @bpp.run_decorator(md={"sample": "live"})
    def plan():
        for _ in range(3):
            yield from bps.trigger_and_read([det])
        assert writer.flush(timeout=60)
        uid = uids[-1]  # the open run
        run = catalog[uid]
        seen["stop_before"] = run.metadata.get("stop")
        seen["first"] = run["primary"]["sem_image"].read()
        seen["rows"] = len(run["primary"].base["internal"].read())
        for _ in range(2):
            yield from bps.trigger_and_read([det])
        assert writer.flush(timeout=60)
        seen["second"] = catalog[uid]["primary"]["sem_image"].read()
        seen["uid"] = uid

    RE(plan())
    writer.wait(timeout=60)
    assert seen["stop_before"] is None
    assert seen["first"].shape[0] == 3 and seen["rows"] == 3
    assert seen["second"].shape[0] == 5
    for i in range(5):
        assert np.array_equal(seen["second"][i, 0], expected_frame(det.seed, i, det.shape))
    node = catalog[seen["uid"]]["primary"]["sem_image"]
    (ds,) = node.include_data_sources().data_sources()
    assert [a.num for a in sorted(ds.assets, key=lambda a: a.num)] == list(range(5))
    assert sorted(a.data_uri.rsplit("/", 1)[1] for a in ds.assets) == [
        f"img_{i:06d}.tif" for i in range(5)
    ]
    assert catalog[seen["uid"]].metadata["stop"]["exit_status"] == "success"


def test_frames_become_visible_without_explicit_flush(RE, writer, det, catalog):
    """Adaptive batching: with the queue drained, frames show up within ~latency."""
    RE.subscribe(writer)
    uids = _start_uids(RE)
    result = {}

    @bpp.stage_decorator([det])
    @bpp.run_decorator()
    def plan():
        for _ in range(2):
            yield from bps.trigger_and_read([det])
        uid = uids[-1]
        t0 = time.monotonic()
        while _visible(catalog, uid) < 2 and time.monotonic() - t0 < 10:
            time.sleep(0.05)
        result["delay"] = time.monotonic() - t0
        result["n"] = _visible(catalog, uid)

    RE(plan())
    assert result["n"] == 2
    assert result["delay"] < 2.0  # latency is 0.1 s in the fixture


def test_runengine_thread_only_enqueues(RE, det, catalog, data_dir, monkeypatch):
    """A slow catalog does not slow the RunEngine; the writer catches up afterwards and
    batches what piled up into few catalog writes."""
    gate = threading.Event()
    original = writer_mod.BufferedTiledWriter.__call__

    def slow(self, name, doc):
        gate.wait(30)  # the catalog is "busy" until released
        return original(self, name, doc)

    monkeypatch.setattr(writer_mod.BufferedTiledWriter, "__call__", slow)
    w = CatalogWriter(catalog, data_dir / "bk", latency=0.1)
    RE.subscribe(w)
    t0 = time.perf_counter()
    (uid,) = RE(count([det], 20))
    elapsed = time.perf_counter() - t0
    assert w.pending > 40  # start, descriptor, resource, 20 x (datum + event), stop
    assert not w.flush(timeout=0.2)  # still blocked
    gate.set()
    assert w.wait(timeout=60) == []
    assert w.pending == 0
    assert elapsed < 10
    assert _visible(catalog, uid) == 20
    # everything that piled up was written in a handful of batches, not 20 + 20 writes
    assert w.stats["flushes"] <= 3
    assert len(list(iter_backup(w.backup_path(uid)))) == 44
    assert w.close(timeout=30)


def test_backup_is_numpy_safe_and_flushed_per_document(RE, writer, det):
    sig = Signal(name="np_value", value=np.float32(1.25))
    arr = Signal(name="np_array", value=np.arange(3, dtype=np.int64))
    RE.subscribe(writer)
    uids = _start_uids(RE)
    captured = {}

    @bpp.stage_decorator([det])
    @bpp.run_decorator()
    def plan():
        yield from bps.trigger_and_read([det, sig, arr])
        uid = uids[-1]
        # mid-run, before any flush of ours: the file already holds every document
        captured["mid"] = [n for n, _ in iter_backup(writer.backup_path(uid))]
        captured["uid"] = uid

    RE(plan())
    writer.wait(timeout=60)
    assert captured["mid"] == ["start", "descriptor", "stream_resource", "stream_datum",
                               "event"]
    docs = list(iter_backup(writer.backup_path(captured["uid"])))
    event = next(d for n, d in docs if n == "event")
    assert event["data"]["np_value"] == 1.25 and event["data"]["np_array"] == [0, 1, 2]
    for name, doc in docs:
        validate_document(name, doc)


def test_errors_are_logged_recorded_and_the_backup_stays_complete(
    RE, writer, det, catalog, caplog
):
    """A write the catalog refuses (two data keys 'time' and 'time_' collide in
    TiledWriter's renaming) is reported, does not disturb the RunEngine, and the run is
    abandoned in the catalog (no stop) while its backup is complete and valid."""
    RE.subscribe(writer)
    clash = [Signal(name="time", value=1.0), Signal(name="time_", value=2.0)]
    with caplog.at_level(logging.ERROR, logger="fibsem_ophyd.storage.writer"):
        (uid,) = RE(count([det, *clash], 2))
        errors = writer.wait(timeout=60)
    assert len(errors) == 1 and errors[0].run_uid == uid
    assert errors[0].name == "descriptor"
    assert isinstance(errors[0].exception, ValueError)
    assert writer.errors == errors
    assert writer.wait(timeout=5) == []  # reported once
    assert any("abandoned" in r.getMessage() for r in caplog.records)
    assert "stop" not in catalog[uid].metadata  # never marked complete
    docs = list(iter_backup(writer.backup_path(uid)))
    assert [n for n, _ in docs][0] == "start" and docs[-1][0] == "stop"
    assert [n for n, _ in docs].count("event") == 2
    for name, doc in docs:
        validate_document(name, doc)
    # the next run is written normally
    (ok,) = RE(count([det], 1))
    assert writer.wait(timeout=60) == []
    assert catalog[ok].metadata["stop"]["exit_status"] == "success"


def test_failed_run_can_be_rebuilt_from_its_backup(RE, det, catalog, data_dir, tmp_path,
                                                   monkeypatch):
    """A transient catalog failure during a batched write: the backup rebuilds the run."""
    calls = {"n": 0}
    original = writer_mod.flush_run_writer

    def flaky(run_writer, sent_assets=None, executor=None):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("catalog went away")
        return original(run_writer, sent_assets, executor)

    monkeypatch.setattr(writer_mod, "flush_run_writer", flaky)
    w = CatalogWriter(catalog, data_dir / "bk", latency=0.1)
    RE.subscribe(w)
    (uid,) = RE(count([det], 4), sample="rebuild")
    errors = w.wait(timeout=60)
    assert [e.name for e in errors] == ["flush"]
    assert isinstance(errors[0].exception, ConnectionError)
    assert "stop" not in catalog[uid].metadata
    w.close()

    other = open_catalog(tmp_path / "other", readable_storage=[images_dir(data_dir)])
    n = replay_backup(w.backup_path(uid), TiledWriter(other))
    assert n == 3 + 4 * 2 + 1
    run = other[uid]
    assert run.metadata["stop"]["exit_status"] == "success"
    assert run.metadata["start"]["sample"] == "rebuild"
    images = load_images(run)
    assert len(images) == 4
    for i, img in enumerate(images):
        assert np.array_equal(img.data, expected_frame(det.seed, i, det.shape))
        assert img.pixel_size == pytest.approx(det.pixel_size())


def test_flush_wait_close(catalog, data_dir, RE, det):
    w = CatalogWriter(catalog, data_dir / "bk")
    assert w.flush(timeout=1) and w.pending == 0 and w.wait(timeout=1) == []
    RE.subscribe(w)
    (uid,) = RE(count([det], 2))
    assert w.close(timeout=60)
    assert w.close()  # idempotent
    assert _visible(catalog, uid) == 2
    # after close: the backup still records runs, the catalog no longer does
    (late,) = RE(count([det], 1))
    assert late not in catalog
    assert [n for n, _ in iter_backup(w.backup_path(late))][-1] == "stop"


def test_backup_lines_are_plain_json(RE, writer, det):
    RE.subscribe(writer)
    (uid,) = RE(count([det], 1))
    writer.wait(timeout=60)
    lines = writer.backup_path(uid).read_text().splitlines()
    first = json.loads(lines[0])
    assert set(first) == {"name", "doc"} and first["name"] == "start"
    assert first["doc"]["uid"] == uid


def test_backpressure_keeps_the_catalog_within_max_lag(RE, det, catalog, data_dir,
                                                        monkeypatch):
    """max_lag: while the catalog is stuck, the RunEngine waits instead of running ahead
    of it by more than max_lag; once the catalog moves, the run goes on and is complete."""
    gate = threading.Event()
    original = writer_mod.BufferedTiledWriter.__call__

    def stuck(self, name, doc):
        gate.wait(30)  # the catalog does not answer until released
        return original(self, name, doc)

    monkeypatch.setattr(writer_mod.BufferedTiledWriter, "__call__", stuck)
    w = CatalogWriter(catalog, data_dir / "bk", latency=0.1, max_lag=0.5)
    RE.subscribe(w)
    lags = []  # the catalog's lag right after each hand-over (subscribed after w)
    RE.subscribe(lambda name, doc: lags.append(w.lag))
    release = threading.Timer(2.0, gate.set)
    release.start()
    t0 = time.perf_counter()
    (uid,) = RE(count([det], 10, delay=0.2))
    elapsed = time.perf_counter() - t0
    release.join()
    assert w.stats["throttled_s"] > 0.8  # the RunEngine was held back ...
    assert elapsed > 2.0  # ... until the catalog moved again (2 s)
    assert max(lags) < 0.5 + 0.3  # never handed a document over further behind
    assert w.wait(timeout=60) == []
    assert w.lag == 0.0 and w.pending == 0
    assert _visible(catalog, uid) == 10
    assert catalog[uid].metadata["stop"]["exit_status"] == "success"
    assert w.close(timeout=30)


def test_live_reader_sees_each_frame_within_the_latency_bound(RE, det, catalog, data_dir):
    """A reader polling the catalog during a run sees most frames while the run is still
    going, each at most ``latency`` + two catalog writes (one in progress, then the flush
    that carries the frame) + one take interval after the RunEngine emitted it, plus the
    reader's own polling delay. The catalog write times are the writer's measured ones, so
    the bound holds on a slow machine as on a fast one."""
    from fibsem_ophyd.storage.writer import _TAKE_INTERVAL

    latency = 0.3
    poll = 0.1  # a live viewer's refresh
    w = CatalogWriter(catalog, data_dir / "bk", latency=latency)
    RE.subscribe(w)
    emitted: dict[int, float] = {}
    uids = _start_uids(RE)
    RE.subscribe(lambda name, doc: emitted.setdefault(doc["seq_num"], time.monotonic()),
                 "event")
    seen: dict[int, float] = {}
    poll_times: list[float] = []
    done = threading.Event()

    def read_live():
        while not done.is_set():
            if uids:
                t0 = time.monotonic()
                n = _visible(catalog, uids[-1])
                now = time.monotonic()
                poll_times.append(now - t0)
                for i in range(1, n + 1):
                    seen.setdefault(i, now)
            time.sleep(poll)

    reader = threading.Thread(target=read_live)
    reader.start()
    try:
        RE(count([det], 24, delay=0.2))
    finally:
        done.set()
        reader.join()
    assert w.wait(timeout=60) == []
    assert catalog[uids[-1]].metadata["stop"]["exit_status"] == "success"
    assert len(emitted) == 24
    live = [i for i in seen if seen[i] < emitted[24]]
    assert len(live) >= 12, (live, w.stats)  # most frames readable while the run went on
    bound = (latency + 2 * w.stats["longest_s"] + _TAKE_INTERVAL
             + poll + 2 * max(poll_times) + 0.2)
    lags = [seen[i] - emitted[i] for i in live]
    assert max(lags) < bound, (lags, bound, w.stats)
    assert w.close(timeout=30)


def _requests(client) -> list[tuple[str, str]]:
    """Record (method, path) of every request the catalog client sends from now on."""
    sent: list[tuple[str, str]] = []
    client.context.http_client.event_hooks["request"].append(
        lambda request: sent.append((request.method, request.url.path)))
    return sent


@pytest.mark.parametrize("close_streams", [True, False])
def test_stream_closes_follow_the_stop_or_are_skipped(RE, det, catalog, data_dir,
                                                      close_streams):
    """close_streams=True: one close_stream per node, sent after the stop document;
    False: none (the embedded catalog has no live-streaming cache), run complete."""
    sent = _requests(catalog)
    w = CatalogWriter(catalog, data_dir / "bk", latency=0.1, close_streams=close_streams)
    RE.subscribe(w)
    (uid,) = RE(count([det], 3))
    assert w.wait(timeout=60) == []
    assert _visible(catalog, uid) == 3
    assert catalog[uid].metadata["stop"]["exit_status"] == "success"
    assert w.close(timeout=30)  # sends what is left
    closes = [i for i, (m, p) in enumerate(sent) if m == "DELETE" and "/stream/close/" in p]
    if close_streams:
        paths = {sent[i][1].split("/stream/close/", 1)[1].strip("/") for i in closes}
        assert paths == {uid, f"{uid}/primary", f"{uid}/primary/internal",
                         f"{uid}/primary/sem_image"}
        stop_patch = max(i for i, (m, p) in enumerate(sent)
                         if m == "PATCH" and "/metadata/" in p and p.endswith(uid))
        assert min(closes) > stop_patch
    else:
        assert closes == []


def test_failed_table_write_in_a_concurrent_flush_abandons_the_run(RE, writer, det,
                                                                    catalog):
    """The table rows are appended on a helper thread while the files are registered;
    its failure (a reading that changes type) is reported like any other catalog error:
    the run is abandoned (no stop), the backup complete, the next run fine."""
    RE.subscribe(writer)
    flaky = Signal(name="flaky_value", value=1.0)
    uids = _start_uids(RE)

    @bpp.stage_decorator([det])
    @bpp.run_decorator()
    def plan():
        yield from bps.trigger_and_read([det, flaky])
        assert writer.flush(timeout=60)  # the table exists with a float column
        yield from bps.mv(flaky, "not a number")
        yield from bps.trigger_and_read([det, flaky])

    RE(plan())
    errors = writer.wait(timeout=60)
    uid = uids[-1]
    assert [e.run_uid for e in errors] == [uid] and errors[0].name in ("flush", "stop")
    assert "stop" not in catalog[uid].metadata
    assert _visible(catalog, uid) >= 1  # what was written before the failure stays
    names = [n for n, _ in iter_backup(writer.backup_path(uid))]
    assert names.count("event") == 2 and names[-1] == "stop"
    (ok,) = RE(count([det], 1))
    assert writer.wait(timeout=60) == []
    assert catalog[ok].metadata["stop"]["exit_status"] == "success"


def test_a_short_run_costs_six_catalog_requests(RE, det, catalog, data_dir):
    """The request economy: run, stream, image node created with its frames (one
    request, not two), table, rows, stop; no close_stream for the embedded catalog."""
    sent = _requests(catalog)
    w = CatalogWriter(catalog, data_dir / "bk", latency=10, close_streams=False)
    RE.subscribe(w)
    (uid,) = RE(count([det], 3))
    assert w.wait(timeout=60) == []
    writes = sorted((m, p.replace("//", "/").split("/api/v1/", 1)[1]) for m, p in sent
                    if m != "GET")
    assert writes == sorted([
        ("POST", "metadata/"),
        ("POST", f"metadata/{uid}"),
        ("POST", f"register/{uid}/primary"),
        ("POST", f"metadata/{uid}/primary"),
        ("PATCH", f"table/partition/{uid}/primary/internal"),
        ("PATCH", f"metadata/{uid}"),
    ])
    node = catalog[uid]["primary"]["sem_image"]
    assert node.shape[0] == 3
    (ds,) = node.include_data_sources().data_sources()
    assert sorted(a.num for a in ds.assets) == [0, 1, 2]
    assert w.close(timeout=30)


def test_stream_datums_are_still_schema_checked(writer, catalog, det):
    """Only events skip the writer's second schema check (the RunEngine validated them);
    a malformed stream_datum is refused and its run abandoned."""
    import event_model
    from jsonschema import ValidationError

    run = event_model.compose_run()
    desc = run.compose_descriptor(name="primary", data_keys=det.describe())
    sres = run.compose_stream_resource(
        mimetype="multipart/related;type=image/tiff", uri="file://localhost/tmp/x/",
        data_key="sem_image", parameters={"template": "img_{:06d}.tif",
                                          "chunk_shape": [1, *det.shape]})
    datum = sres.compose_stream_datum(indices={"start": 0, "stop": 1})
    datum = {**datum, "descriptor": desc.descriptor_doc["uid"]}
    del datum["seq_nums"]  # required by the schema
    for name, doc in [("start", run.start_doc), ("descriptor", desc.descriptor_doc),
                      ("stream_resource", sres.stream_resource_doc),
                      ("stream_datum", datum), ("stop", run.compose_stop())]:
        writer(name, doc)
    errors = writer.wait(timeout=60)
    uid = run.start_doc["uid"]
    assert [(e.run_uid, e.name) for e in errors] == [(uid, "stream_datum")]
    assert isinstance(errors[0].exception, ValidationError)
    assert "stop" not in catalog[uid].metadata
