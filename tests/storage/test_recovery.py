"""A run whose writer process was killed: closed and completed in the catalog from its backup."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
from bluesky.plans import count

from fibsem_ophyd.storage import (
    RECOVERED_REASON,
    images_dir,
    iter_backup,
    load_images,
    open_catalog,
    read_tiff,
    recover_run,
    unfinished_backups,
)

WRITER = textwrap.dedent("""
    import sys
    from fibsem_ophyd import setup_session
    from fibsem_ophyd.plans import acquire_series

    s = setup_session(config={"electron": {"resolution": [128, 96]}}, data_dir=sys.argv[1],
                      seed=4)
    s.RE(acquire_series(s.microscope.sem, num=2000, delay=0.01, md={"sample": "cut"}))
""")


def _frames(path) -> int:
    return sum(1 for name, _ in iter_backup(path) if name == "stream_datum")


def _events(path) -> int:
    return sum(1 for name, _ in iter_backup(path) if name == "event")


def _catalog_frames(run) -> int:
    try:
        return len(load_images(run))
    except (KeyError, ValueError):  # nothing flushed yet: no image node
        return 0


@pytest.fixture
def killed_run(tmp_path):
    """(data_dir, backup path): a writer process SIGKILLed after >= 100 frames."""
    data = tmp_path / "data"
    backup_dir = data / "backup"
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(data)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    try:
        while True:
            assert proc.poll() is None, proc.stderr.read().decode()[-3000:]
            assert time.monotonic() < deadline, "the writer did not get to 100 frames"
            backups = list(backup_dir.glob("*.jsonl")) if backup_dir.exists() else []
            if backups and _frames(backups[0]) >= 100:
                break
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL
    (backup,) = backups
    return data, backup


def test_killed_run_is_closed_with_every_announced_frame(killed_run):
    data, backup = killed_run
    assert unfinished_backups(data / "backup") == [backup]
    uid = backup.stem
    # the kill may fall between a frame's stream_datum and its event: that frame has no
    # event (no timestamps, no readings) and is left out of the recovered run
    n = _events(backup)
    assert _frames(backup) - n in (0, 1)
    catalog = open_catalog(data)
    assert unfinished_backups(data / "backup", catalog) == [backup]
    assert catalog[uid].metadata.get("stop") is None  # left open by the dead writer
    assert _catalog_frames(catalog[uid]) <= _frames(backup)  # the last batch(es) never came

    with open(backup, "a", encoding="utf-8") as f:  # what a kill mid-write leaves
        f.write('{"name":"event","doc":{"uid":"half-writ')

    stop = recover_run(catalog, backup)
    assert stop["exit_status"] == "fail" and stop["reason"].startswith(RECOVERED_REASON)
    assert stop["num_events"] == {"primary": n}
    assert _frames(backup) == _events(backup) == n  # self-consistent backup
    assert unfinished_backups(data / "backup") == []
    assert unfinished_backups(data / "backup", catalog) == []
    # the half-written line is gone and the stop is the backup's last line: the backup
    # replays to the same closed run
    lines = backup.read_text().splitlines()
    assert json.loads(lines[-1]) == {"name": "stop", "doc": stop}
    assert "half-writ" not in lines[-2]

    run = catalog[uid]
    assert run.start["sample"] == "cut"
    assert run.stop == stop
    images = load_images(run)
    assert len(images) == n
    for i, img in enumerate(images):
        assert img.path.name == f"img_{i:06d}.tif"
        assert img.data.shape == (96, 128)
    # pixels through Tiled (the re-registered TIFF series) equal the files
    arrays = run["primary"]["microscope_sem_image"].read()
    assert arrays.shape == (n, 96, 128)
    assert np.array_equal(arrays[-1], read_tiff(images[-1].path).data)
    assert run["primary"].read()["microscope_stage_x"].shape == (n,)

    # a second recovery changes nothing
    assert recover_run(catalog, backup) == stop
    assert backup.read_text().count('"name":"stop"') == 1


def test_a_backup_without_start_is_refused(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"name": "event", "doc": {}}) + "\n")
    with pytest.raises(ValueError, match="start document"):
        recover_run(open_catalog(tmp_path / "data"), path)
    assert not os.path.exists(tmp_path / "data" / "backup")


def test_a_frame_without_its_event_is_left_out_of_the_recovered_run(
        RE, writer, det, catalog, data_dir, tmp_path, caplog):
    """A writer killed between a frame's stream_datum and its event: the backup's last
    document announces a frame (its file on disk) that has no event. Recovery leaves it
    out of the run and of the backup (logged, the file stays), so frames = events =
    num_events."""
    RE.subscribe(writer)
    (uid,) = RE(count([det], 4))
    writer.wait(timeout=60)
    path = writer.backup_path(uid)
    docs = list(iter_backup(path))
    assert docs[-1][0] == "stop"
    last = next(doc for name, doc in reversed(docs) if name == "stream_datum")
    dangling = dict(last, uid=f"{last['uid']}-next",
                    indices={"start": 4, "stop": 5}, seq_nums={"start": 5, "stop": 6})
    frame4 = load_images(catalog[uid])[-1].path.with_name("img_000004.tif")
    shutil.copy(frame4.with_name("img_000003.tif"), frame4)  # its file was written
    with open(path, "w", encoding="utf-8") as f:  # what the kill left: no stop, a frame
        for name, doc in docs[:-1] + [("stream_datum", dangling)]:
            f.write(json.dumps({"name": name, "doc": doc}) + "\n")
    assert _frames(path) == 5 and _events(path) == 4

    other = open_catalog(tmp_path / "other", readable_storage=[images_dir(data_dir)])
    assert unfinished_backups(path.parent, other) == [path]
    with caplog.at_level(logging.WARNING, logger="fibsem_ophyd.storage.recovery"):
        stop = recover_run(other, path)
    assert any("1 stream_datum" in r.getMessage() and uid in r.getMessage()
               for r in caplog.records)
    assert stop["num_events"] == {"primary": 4}
    assert _frames(path) == _events(path) == 4  # the backup replays to the same run
    assert all(d["uid"] != dangling["uid"] for _, d in iter_backup(path))
    assert [n for n, _ in iter_backup(path)][-1] == "stop"
    run = other[uid]
    images = load_images(run)
    assert len(images) == 4 and run["primary"]["sem_image"].shape[0] == 4
    assert len(run["primary"].read()["sem_image"]) == 4
    assert frame4.exists()  # the frame file is not deleted
    assert recover_run(other, path) == stop  # and a second recovery changes nothing
