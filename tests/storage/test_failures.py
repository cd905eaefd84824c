"""Storage failures through the session: a run the catalog refuses raises, names its backup
and is recovered from it."""

from __future__ import annotations

import sqlite3

import pytest
from bluesky.plans import count

from fibsem_ophyd import setup_session
from fibsem_ophyd.storage import (
    StorageError,
    iter_backup,
    load_images,
    recover_run,
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
    con = sqlite3.connect(db_path, timeout=0, isolation_level=None)
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
