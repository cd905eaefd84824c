"""The JSON-lines backup is fsynced: at each run's stop and every ``fsync_every`` documents."""

from __future__ import annotations

import math
import os

import pytest
from bluesky.plans import count

from fibsem_ophyd.storage import CatalogWriter, iter_backup
from fibsem_ophyd.storage.writer import FSYNC_EVERY


@pytest.fixture
def fsynced(monkeypatch):
    """Paths of the files and directories ``os.fsync`` is called on (the real fsync runs)."""
    calls: list[str] = []
    real = os.fsync

    def spy(fd):
        calls.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return calls


@pytest.mark.parametrize("every", [5, 7, FSYNC_EVERY, 0])
def test_backup_is_fsynced_every_n_documents_and_at_stop(RE, catalog, data_dir, det,
                                                         fsynced, every):
    w = CatalogWriter(catalog, data_dir / "bk", latency=0.1, fsync_every=every)
    RE.subscribe(w)
    try:
        (uid,) = RE(count([det], 10))
        w.wait(timeout=60, raise_errors=True)
    finally:
        w.close(timeout=60)
    path = str(w.backup_path(uid))
    docs = len(list(iter_backup(path)))
    assert docs == 3 + 2 * 10 + 1  # start, descriptor, stream_resource, frames, stop
    expected = math.ceil(docs / every) if every else 0
    assert fsynced.count(path) == expected
    # the directory once, with the file's first fsync (the new file's entry)
    assert fsynced.count(str(w.backup_dir)) == (1 if every else 0)
    assert w.stats["fsyncs"] == expected
    if every:  # the stop document is on disk when the run ends (then maybe the directory)
        assert path in fsynced[-2:] and set(fsynced[-2:]) <= {path, str(w.backup_dir)}


def test_fsync_every_is_checked_before_anything_is_made(catalog, tmp_path):
    for bad in (-1, 2.5, True, "10"):
        with pytest.raises(ValueError, match=rf"fsync_every must be an integer >= 0.*{bad!r}"):
            CatalogWriter(catalog, tmp_path / "bk", fsync_every=bad)
    assert not (tmp_path / "bk").exists()

    from fibsem_ophyd import setup_session

    with pytest.raises(ValueError, match=r"fsync_every.*-3"):
        setup_session(data_dir=tmp_path / "s", backup_fsync_every=-3)
    assert not (tmp_path / "s").exists()
