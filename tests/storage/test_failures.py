"""Storage failures through the session: a run the catalog refuses raises, names its backup
and is recovered from it."""

from __future__ import annotations

import sqlite3
import subprocess

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import pytest
from bluesky.plans import count
from bluesky_tiled_plugins import TiledWriter

from fibsem_ophyd import setup_session
from fibsem_ophyd.storage import (
    StorageError,
    iter_backup,
    load_images,
    recover_run,
    replay_backup,
    unfinished_backups,
)
from fibsem_ophyd.storage.catalog import CATALOG_FILE

TINY = {"electron": {"resolution": [128, 96]}, "ion": {"resolution": [128, 96]}}


@pytest.fixture
def small_session(tmp_path):
    s = setup_session(config=TINY, data_dir=tmp_path / "data", seed=2)
    yield s
    s.close()


def _lock(db_path) -> sqlite3.Connection:
    """Another connection holding an exclusive transaction on the catalog's database."""
    con = sqlite3.connect(db_path, timeout=0, isolation_level=None, check_same_thread=False)
    con.execute("BEGIN EXCLUSIVE")
    return con


def test_a_run_the_locked_catalog_refuses_raises_and_is_recovered(small_session):
    """SQLite locked by another connection for the whole run: the catalog refuses the run
    (after SQLite's busy timeout); RE(...) raises StorageError naming the run, its backup
    and recover_run instead of returning "success" for a uid the catalog does not hold;
    the backup then restores the run in full."""
    s = small_session
    sem = s.microscope.sem
    s.RE(count([sem], 1))  # the catalog works before the lock
    con = _lock(s.data_dir / CATALOG_FILE)
    try:
        with pytest.raises(StorageError) as info:
            s.RE(count([sem], 3), sample="locked")
    finally:
        con.execute("ROLLBACK")
        con.close()
    err = info.value
    (uid,) = err.result.run_start_uids
    assert err.result.exit_status == "success"  # the acquisition itself went through
    assert list(err.backups) == [uid]
    path = err.backups[uid]
    assert path == s.writer.backup_path(uid) and path.exists()
    message = str(err)
    assert uid in message and str(path) in message
    assert "recover_run(catalog, " in message and "replay_backup(" in message
    assert "locked" in message
    assert [e.run_uid for e in err.errors] == [uid]
    assert uid not in s.catalog  # refused at its start document

    names = [n for n, _ in iter_backup(path)]
    assert names[0] == "start" and names[-1] == "stop" and names.count("event") == 3
    stop = recover_run(s.catalog, path)
    assert stop["exit_status"] == "success"
    run = s.catalog[uid]
    assert run.metadata["stop"] == stop and run.metadata["start"]["sample"] == "locked"
    assert len(load_images(run)) == 3
    # the next run is stored normally and returns normally
    ok = s.RE(count([sem], 1))
    assert s.catalog[ok.run_start_uids[0]].metadata["stop"]["exit_status"] == "success"


def _refused_and_abandoned(s) -> tuple[str, str, str]:
    """(good, refused, abandoned) run uids: one stored run; one refused at its start
    (the catalog's database locked before it); one abandoned half-way (the database
    locked after its start and first frames were written). Both failed runs' backups are
    complete (they end with the RunEngine's stop)."""
    sem = s.microscope.sem
    db = s.data_dir / CATALOG_FILE
    good = s.RE(count([sem], 1)).run_start_uids[0]

    con = _lock(db)
    try:
        with pytest.raises(StorageError) as refused:
            s.RE(count([sem], 2), sample="refused")
    finally:
        con.execute("ROLLBACK")
        con.close()

    held = {}

    @bpp.stage_decorator([sem])
    @bpp.run_decorator(md={"sample": "abandoned"})
    def half_then_locked():
        for _ in range(2):
            yield from bps.trigger_and_read([sem])
        assert s.writer.flush(timeout=60)  # start and the first 2 frames are in the catalog
        held["con"] = _lock(db)
        for _ in range(2):
            yield from bps.trigger_and_read([sem])

    try:
        with pytest.raises(StorageError) as abandoned:
            s.RE(half_then_locked())
    finally:
        held["con"].execute("ROLLBACK")
        held["con"].close()
    return good, *refused.value.backups, *abandoned.value.backups


@pytest.mark.parametrize("tool", ["recover_run", "replay_backup"])
def test_refused_and_abandoned_runs_are_listed_and_rewritten(small_session, tool):
    """Runs the writer abandoned (the catalog refused the whole run, or the run half-way)
    have a complete backup, with its stop: unfinished_backups finds them when given the
    catalog (not without: their backups have a stop), and both recover_run and
    replay_backup rewrite them in full; replay_backup no longer fails with HTTP 409 on the
    half-written one, whose partial entry it replaces."""
    s = small_session
    good, refused, abandoned = _refused_and_abandoned(s)
    backups = s.data_dir / "backup"
    assert refused not in s.catalog
    assert abandoned in s.catalog and "stop" not in s.catalog[abandoned].metadata
    assert 0 < len(load_images(s.catalog[abandoned])) < 4  # the first frames only

    assert unfinished_backups(backups) == []  # every backup has its stop
    listed = unfinished_backups(backups, s.catalog)
    assert [p.stem for p in listed] == [refused, abandoned]

    for uid, n in ((refused, 2), (abandoned, 4)):
        path = s.writer.backup_path(uid)
        if tool == "recover_run":
            stop = recover_run(s.catalog, path)
            assert stop["exit_status"] == "success"
        else:
            assert replay_backup(path, TiledWriter(s.catalog)) == len(list(iter_backup(path)))
        run = s.catalog[uid]
        assert run.metadata["stop"]["exit_status"] == "success"
        assert len(load_images(run)) == n
        assert run["primary"].read()["microscope_sem_hfw"].shape == (n,)
    assert unfinished_backups(backups, s.catalog) == []
    # a complete run is left as it is by both
    good_path = s.writer.backup_path(good)
    assert replay_backup(good_path, TiledWriter(s.catalog)) == 0
    assert recover_run(s.catalog, good_path) == s.catalog[good].metadata["stop"]


def test_the_plans_own_error_is_raised_with_the_storage_failure_noted(small_session):
    """A plan that fails while the catalog refuses its run: RE(...) raises the plan's
    exception, not the writer's; the storage failure (run, backup, recover_run) is a note
    on it; the backup's stop says "fail" with the plan's reason."""
    s = small_session
    sem = s.microscope.sem
    uids = []
    s.RE.subscribe(lambda name, doc: uids.append(doc["uid"]), "start")

    @bpp.stage_decorator([sem])
    @bpp.run_decorator()
    def fails_after_a_frame():
        yield from bps.trigger_and_read([sem])
        raise ValueError("the plan's own failure")

    con = _lock(s.data_dir / CATALOG_FILE)
    try:
        with pytest.raises(ValueError, match="the plan's own failure") as info:
            s.RE(fails_after_a_frame())
    finally:
        con.execute("ROLLBACK")
        con.close()
    (uid,) = uids
    path = s.writer.backup_path(uid)
    notes = "\n".join(getattr(info.value, "__notes__", []))
    assert "StorageError" in notes and uid in notes and str(path) in notes
    assert "recover_run(catalog, " in notes
    stop = list(iter_backup(path))[-1][1]
    assert stop["exit_status"] == "fail" and "the plan's own failure" in stop["reason"]
    assert recover_run(s.catalog, path) == stop  # the backup's stop, now in the catalog
    assert s.catalog[uid].metadata["stop"]["exit_status"] == "fail"


def test_a_backup_the_disk_refuses_fails_the_run(catalog, data_dir, det):
    """The run's backup file is on a full device (/dev/full: every write ENOSPC): the
    writer raises BackupWriteError into the RunEngine, which fails the run; the catalog,
    which still receives every document, stores the run with exit_status "fail" and the
    reason; the next run is backed up and stored normally."""
    from bluesky import RunEngine

    from fibsem_ophyd.storage import BackupWriteError, CatalogWriter, backup_dir

    RE = RunEngine({}, call_returns_result=True)
    bdir = backup_dir(data_dir)
    bdir.mkdir(parents=True)
    full = {"uid": None}

    def full_disk(name, doc):  # subscribed before the writer: its start comes first
        if full["uid"] is None:
            full["uid"] = doc["uid"]
            (bdir / f"{doc['uid']}.jsonl").symlink_to("/dev/full")

    RE.subscribe(full_disk, "start")
    writer = CatalogWriter(catalog, bdir, latency=0.1)
    RE.subscribe(writer)
    try:
        with pytest.raises(BackupWriteError, match="No space left on device") as info:
            RE(count([det], 3))
        uid = full["uid"]
        assert info.value.run_uid == uid and info.value.path == bdir / f"{uid}.jsonl"
        assert writer.wait(timeout=60, raise_errors=True)[0].raised  # reported once: above
        stop = catalog[uid].metadata["stop"]
        assert stop["exit_status"] == "fail"
        assert "JSON-lines backup" in stop["reason"] and "No space left" in stop["reason"]
        assert catalog[uid].metadata["start"]["uid"] == uid

        ok = RE(count([det], 2))
        (ok_uid,) = ok.run_start_uids
        assert ok.exit_status == "success"
        assert writer.wait(timeout=60, raise_errors=True) == []
        assert [n for n, _ in iter_backup(writer.backup_path(ok_uid))].count("event") == 2
        assert catalog[ok_uid].metadata["stop"]["exit_status"] == "success"
    finally:
        writer.close(timeout=60)


@pytest.fixture
def small_backup_fs(tmp_path):
    """``<tmp>/data/backup`` on a 32 KiB tmpfs (a disk that fills during a run)."""
    target = tmp_path / "data" / "backup"
    target.mkdir(parents=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(target)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"mounting a small tmpfs is not permitted here: {done.stderr.strip()}")
    yield target
    subprocess.run(["umount", "-l", str(target)], check=True)


def test_a_disk_that_fills_mid_run_fails_the_run(tmp_path, small_backup_fs):
    """The backup directory's disk fills during a long run: the run stops with
    exit_status "fail" (reason: the backup, no space) at the frame whose backup failed,
    instead of acquiring on without a backup; the catalog holds every frame acquired."""
    from fibsem_ophyd.storage import BackupWriteError

    s = setup_session(config=TINY, data_dir=tmp_path / "data", seed=2)
    try:
        with pytest.raises(BackupWriteError, match="No space left on device") as info:
            s.RE(count([s.microscope.sem], 2000))
        uid = info.value.run_uid
        run = s.catalog[uid]
        stop = run.metadata["stop"]
        assert stop["exit_status"] == "fail" and "No space left" in stop["reason"]
        n = stop["num_events"]["primary"]
        assert 0 < n < 2000
        assert len(load_images(run)) == n
        backed_up = [name for name, _ in iter_backup(s.writer.backup_path(uid))]
        assert backed_up[0] == "start" and "stop" not in backed_up
        assert backed_up.count("event") <= n
    finally:
        s.close()


def test_a_run_whose_tiled_server_stops_mid_run_raises_and_is_recovered(tmp_path,
                                                                         monkeypatch):
    """The served catalog's server process stops half-way through a run: RE(...) raises
    StorageError naming the run and its backup (not "success"); a server started again
    on the same data directory lists the run as unfinished, and recover_run completes it."""
    import tiled.client.utils

    # the Tiled client retries a refused connection for up to 45 s by default
    monkeypatch.setattr(tiled.client.utils, "TILED_RETRY_ATTEMPTS", 2)
    monkeypatch.setattr(tiled.client.utils, "TILED_RETRY_TIMEOUT", 5.0)
    from fibsem_ophyd.storage import serve_catalog

    s = setup_session(config=TINY, data_dir=tmp_path / "data", seed=2, serve=True)
    sem = s.microscope.sem

    @bpp.stage_decorator([sem])
    @bpp.run_decorator(md={"sample": "server stopped"})
    def server_stops_half_way():
        for _ in range(2):
            yield from bps.trigger_and_read([sem])
        assert s.writer.flush(timeout=60)  # the run and its first frames are stored
        s.extras["catalog_server"].close()
        for _ in range(3):
            yield from bps.trigger_and_read([sem])

    try:
        with pytest.raises(StorageError, match="ConnectError") as info:
            s.RE(server_stops_half_way())
    finally:
        s.close()
    (uid,) = info.value.result.run_start_uids
    path = info.value.backups[uid]
    assert info.value.result.exit_status == "success" and str(path) in str(info.value)

    with serve_catalog(tmp_path / "data") as server:
        catalog = server.client()
        try:
            assert "stop" not in catalog[uid].metadata
            assert unfinished_backups(path.parent, catalog) == [path]
            stop = recover_run(catalog, path)
            assert stop["exit_status"] == "success"
            run = catalog[uid]
            assert run.metadata["stop"] == stop
            assert run.metadata["start"]["sample"] == "server stopped"
            assert len(load_images(run)) == 5
            assert unfinished_backups(path.parent, catalog) == []
        finally:
            catalog.context.close()
