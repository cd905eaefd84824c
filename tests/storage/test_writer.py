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

    def flaky(run_writer, sent_assets=None):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ConnectionError("catalog went away")
        return original(run_writer, sent_assets)

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
