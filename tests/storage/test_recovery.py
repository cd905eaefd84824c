"""A run whose writer process was killed: closed and completed in the catalog from its backup."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest

from fibsem_ophyd.storage import (
    RECOVERED_REASON,
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
    n = _frames(backup)
    catalog = open_catalog(data)
    assert catalog[uid].metadata.get("stop") is None  # left open by the dead writer
    assert _catalog_frames(catalog[uid]) <= n  # the last batch(es) never reached it

    with open(backup, "a", encoding="utf-8") as f:  # what a kill mid-write leaves
        f.write('{"name":"event","doc":{"uid":"half-writ')

    stop = recover_run(catalog, backup)
    assert stop["exit_status"] == "fail" and stop["reason"].startswith(RECOVERED_REASON)
    assert stop["num_events"] == {"primary": n}
    assert unfinished_backups(data / "backup") == []
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
