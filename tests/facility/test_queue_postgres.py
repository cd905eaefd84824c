"""The queue server writing straight into a served PostgreSQL Tiled; memory over a long
series; the RE Worker killed mid-run (images kept, queue recovered).

One RE Manager for the module, its worker started from the profile collection with
``FIBSEM_OPHYD_TILED_URI`` / ``FIBSEM_OPHYD_TILED_API_KEY`` pointing at ``fibsem-ophyd serve``
on PostgreSQL, and ``FIBSEM_OPHYD_DATA_DIR`` at the server's data directory (the worker's
detectors write their TIFF series under ``<data_dir>/images``, which the server reads).
"""

from __future__ import annotations

import os
import signal
import time

import numpy as np
import pytest
from bluesky_queueserver_api import BPlan

from fibsem_ophyd.storage import iter_backup, load_images, read_tiff, recover_run

from .conftest import QueueServer, sampling_rss, wait_for

#: the RE Worker's RSS may grow at most this much over a series (bytes)
RSS_GROWTH_LIMIT = 200e6


@pytest.fixture(scope="module")
def qs_pg(served_postgres, tmp_path_factory, redis_available_module):
    root = tmp_path_factory.mktemp("qs_pg")
    config = root / "microscope.yaml"
    from .conftest import SMALL_CONFIG

    config.write_text(SMALL_CONFIG)
    qs = QueueServer(root, served_postgres.data_dir, config,
                     FIBSEM_OPHYD_TILED_URI=served_postgres.uri,
                     FIBSEM_OPHYD_TILED_API_KEY=served_postgres.api_key)
    try:
        qs.connect()
        RM = qs.open_environment()
        assert RM.status(reload=True)["worker_environment_exists"], qs.log.read_text()[-3000:]
        yield qs
    finally:
        qs.close()


@pytest.fixture(scope="module")
def redis_available_module():
    from .conftest import REDIS_HOST, REDIS_PORT, port_open

    if not port_open(REDIS_HOST, REDIS_PORT):
        pytest.skip(f"Redis is not reachable on {REDIS_HOST}:{REDIS_PORT}")


def _run_queue(RM, *plans, timeout=180) -> list[dict]:
    """Add the plans, run the queue to the end; the history items of these plans."""
    n_before = len(RM.history_get()["items"])
    for plan in plans:
        RM.item_add(plan)
    RM.queue_start()
    RM.wait_for_idle(timeout=timeout)
    items = RM.history_get()["items"][n_before:]
    assert len(items) == len(plans), items
    return items


def _completed_uid(item: dict) -> str:
    result = item["result"]
    assert result["exit_status"] == "completed", result
    (uid,) = result["run_uids"]
    return uid


def _announced_frames(backup_path) -> list[int]:
    """Frame indices announced (stream_datum documents) in a run's JSON-lines backup."""
    frames = []
    for name, doc in iter_backup(backup_path):
        if name == "stream_datum":
            frames.extend(range(doc["indices"]["start"], doc["indices"]["stop"]))
    return frames


def _dead(process) -> bool:
    """Gone, or a zombie (the watchdog reaps its worker only when asked to)."""
    import psutil

    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _stream_resource_dir(backup_path):
    from fibsem_ophyd.storage.reader import _path_from_uri

    (resource,) = [doc for name, doc in iter_backup(backup_path) if name == "stream_resource"]
    return _path_from_uri(resource["uri"]), resource["parameters"]["template"]


def test_queue_writes_into_the_served_postgres_catalog(qs_pg, served_postgres, served_catalog):
    RM = qs_pg.api
    refs, series = _run_queue(
        RM,
        BPlan("take_reference_images", "microscope", hfw=110e-6, md={"sample": "qpg-1"}),
        BPlan("acquire_series", "sem", num=5, hfw=60e-6, md={"sample": "qpg-1"}),
    )
    catalog = served_catalog
    run = catalog[_completed_uid(refs)]
    assert run.start["sample"] == "qpg-1" and run.stop["exit_status"] == "success"
    (sem,) = load_images(run, "electron")
    (fib,) = load_images(run, "ion")
    assert sem.data.shape == fib.data.shape == (256, 384)
    assert sem.pixel_size == pytest.approx(110e-6 / 384)
    run = catalog[_completed_uid(series)]
    assert run.start["plan_name"] == "acquire_series" and run.stop["num_events"] == {
        "primary": 5}
    assert len(load_images(run, method="array")) == 5  # pixels through the server
    # the worker wrote over HTTP: no embedded catalog was created in its data directory
    assert not (served_postgres.data_dir / "catalog.db").exists()


def test_series_memory_and_no_missing_frames(qs_pg, served_postgres, served_catalog):
    """RSS of the RE Worker over a 60-frame series, and every frame read back."""
    RM = qs_pg.api
    _run_queue(RM, BPlan("acquire_series", "sem", num=5))  # warm: caches, tables, clients
    worker = qs_pg.worker_process()
    with sampling_rss(worker, period=0.05) as samples:
        (item,) = _run_queue(RM, BPlan("acquire_series", "sem", num=60, md={"sample": "mem"}))
    baseline = samples[0]
    growth = max(samples) - baseline
    assert len(samples) > 3
    assert growth <= RSS_GROWTH_LIMIT, f"RE Worker RSS grew {growth / 1e6:.0f} MB"

    run = served_catalog[_completed_uid(item)]
    assert run.stop["exit_status"] == "success" and run.stop["num_events"] == {"primary": 60}
    images = load_images(run)
    assert len(images) == 60
    assert len({img.path for img in images}) == 60
    assert [img.path.name for img in images] == [f"img_{i:06d}.tif" for i in range(60)]
    assert np.array_equal(images[-1].data, read_tiff(images[-1].path).data)


def test_worker_killed_mid_run_keeps_images_and_queue_recovers(qs_pg, served_postgres,
                                                               served_catalog):
    RM = qs_pg.api
    backup_dir = served_postgres.data_dir / "backup"
    worker = qs_pg.worker_process()
    n_history = len(RM.history_get()["items"])
    RM.item_add(BPlan("acquire_series", "sem", num=60, delay=0.05, md={"sample": "killed"}))
    RM.queue_start()

    def open_run():
        runs = RM.re_runs()["run_list"]
        return runs[0]["uid"] if runs and runs[0]["is_open"] else None

    uid = wait_for(open_run, 60, "the series to start", qs_pg.process, qs_pg.log)
    backup = backup_dir / f"{uid}.jsonl"
    wait_for(lambda: backup.exists() and len(_announced_frames(backup)) >= 20, 60,
             "20 frames", qs_pg.process, qs_pg.log, interval=0.05)
    os.kill(worker.pid, signal.SIGKILL)
    wait_for(lambda: _dead(worker), 10, "the killed worker to die")

    # Every frame announced before the kill is in the backup and readable from its file...
    announced = _announced_frames(backup)
    assert 20 <= len(announced) < 60
    assert announced == list(range(len(announced)))
    directory, template = _stream_resource_dir(backup)
    for i in announced:
        img = read_tiff(directory / template.format(i))
        assert img.data.shape == (256, 384) and img.beam == "electron"
    # ... and the catalog holds a prefix of them (the rest were in the last batch), each
    # identical to its file; the run has no stop document.
    run = served_catalog[uid]
    assert run.metadata.get("stop") is None
    stored = load_images(run)
    assert 0 < len(stored) <= len(announced)
    for i, img in enumerate(stored):
        assert img.path == directory / template.format(i)
        assert np.array_equal(img.data, read_tiff(img.path).data)

    # The backup closes the run in the PostgreSQL catalog with every announced frame that
    # has its event (the kill may fall between a frame's stream_datum and its event: that
    # frame is left out, so that frames = events = num_events).
    n_events = sum(1 for name, _ in iter_backup(backup) if name == "event")
    assert len(announced) - n_events in (0, 1)
    stop = recover_run(served_catalog, backup)
    run = served_catalog[uid]
    assert run.stop == stop and stop["exit_status"] == "fail"
    assert stop["num_events"] == {"primary": n_events}
    recovered = load_images(run)
    assert [img.path for img in recovered] == [directory / template.format(i)
                                               for i in announced[:n_events]]
    assert len(load_images(run, method="array")) == n_events

    # The manager keeps its last view of the worker until told: destroying the environment
    # clears it, records the interrupted plan as failed and puts it back in the queue.
    RM.environment_destroy()
    RM.wait_for_idle(timeout=60)
    status = RM.status(reload=True)
    assert not status["worker_environment_exists"]
    assert status["manager_state"] == "idle"
    history = RM.history_get()["items"][n_history:]
    assert [h["result"]["exit_status"] for h in history] == ["failed"]
    assert "destroyed" in history[0]["result"]["msg"]
    queue = RM.queue_get()["items"]
    assert [q["name"] for q in queue] == ["acquire_series"]
    assert queue[0]["kwargs"]["md"] == {"sample": "killed"}

    # A new environment runs the interrupted plan again and a new one after it.
    qs_pg.open_environment()
    assert RM.status(reload=True)["worker_environment_exists"]
    assert qs_pg.worker_process().pid != worker.pid
    RM.item_add(BPlan("acquire_image", "fib", hfw=50e-6, md={"sample": "after-kill"}))
    t0 = time.monotonic()
    RM.queue_start()
    RM.wait_for_idle(timeout=180)
    assert time.monotonic() - t0 < 120
    rerun, after = RM.history_get()["items"][n_history + 1:]
    catalog = served_catalog
    rerun_run = catalog[_completed_uid(rerun)]
    assert rerun_run.start["sample"] == "killed"
    assert len(load_images(rerun_run)) == 60
    (img,) = load_images(catalog[_completed_uid(after)])
    assert img.beam == "ion"
