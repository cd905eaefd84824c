"""Facility reliability: a long series through the queue server into PostgreSQL-backed Tiled,
and the RE Worker killed mid-run.

Starts ``fibsem-ophyd serve`` on a fresh PostgreSQL database (dropped afterwards) and a
``start-re-manager`` on the profile collection (Redis on localhost, own key prefix) whose
worker writes to that server, then

1. runs ``acquire_series(sem, num=N)`` (default N=500 frames of the default 1536x1024),
   sampling the RE Worker's RSS every 0.1 s; prints its growth over the run (target
   <= 200 MB) and how many of the N frames are missing when read back from Tiled
   (target 0);
2. runs the same series again and SIGKILLs the worker when half the frames are announced;
   prints the frames announced (JSON-lines backup), in the catalog at the kill and after
   ``recover_run``, whether each announced frame's file reads back, and the time for
   ``environment_destroy`` + ``environment_open`` until a new plan completes.

    python benchmarks/bench_facility.py [N] [--small]     (--small: 384x256 frames)

Needs PostgreSQL on 127.0.0.1:5432 (trust auth) and Redis on 127.0.0.1:6379.
"""

from __future__ import annotations

import os
import signal
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the facility test helpers (process management)

from bluesky_queueserver_api import BPlan  # noqa: E402

from fibsem_ophyd.storage import (  # noqa: E402
    iter_backup,
    load_images,
    read_tiff,
    recover_run,
)
from tests.facility.conftest import (  # noqa: E402
    SMALL_CONFIG,
    QueueServer,
    TiledPostgresServer,
    sampling_rss,
    wait_for,
)

RSS_TARGET_MB = 200.0


def announced(backup: Path) -> int:
    return sum(d["indices"]["stop"] - d["indices"]["start"]
               for name, d in iter_backup(backup) if name == "stream_datum")


def run_queue(RM, plan: BPlan, timeout: float = 1800) -> dict:
    n = len(RM.history_get()["items"])
    RM.item_add(plan)
    RM.queue_start()
    RM.wait_for_idle(timeout=timeout)
    (item,) = RM.history_get()["items"][n:]
    return item["result"]


def dead(process) -> bool:
    import psutil

    try:
        return process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def memory_and_completeness(qs, server, n: int) -> dict:
    RM = qs.api
    run_queue(RM, BPlan("acquire_series", "sem", num=5))  # warm: caches, tables, clients
    worker = qs.worker_process()
    t0 = time.perf_counter()
    with sampling_rss(worker) as samples:
        result = run_queue(RM, BPlan("acquire_series", "sem", num=n, md={"bench": "rss"}))
    elapsed = time.perf_counter() - t0
    baseline, end = samples[0], samples[-1]
    assert result["exit_status"] == "completed", result
    (uid,) = result["run_uids"]

    run = server.client()[uid]
    key = "microscope_sem_image"
    node = run["primary"][key]
    frames = load_images(run)  # the files the catalog registered, in frame order
    ok = sum(1 for i, img in enumerate(frames)
             if img.path.name == f"img_{i:06d}.tif" and img.data.size > 0)
    # and pixels through the Tiled server for the first, middle and last frame
    for i in (0, n // 2, n - 1):
        assert (node[i] == frames[i].data).all(), f"frame {i} differs through Tiled"
    return {
        "frames": n,
        "seconds": elapsed,
        "rss_baseline_mb": baseline / 1e6,
        "rss_peak_growth_mb": (max([*samples, end]) - baseline) / 1e6,
        "rss_end_growth_mb": (end - baseline) / 1e6,
        "samples": len(samples),
        "in_catalog": node.shape[0],
        "missing": n - ok,
        "exit_status": run.stop["exit_status"],
    }


def kill_and_recover(qs, server, n: int, delay: float = 0.0) -> dict:
    RM = qs.api
    worker = qs.worker_process()
    n_hist = len(RM.history_get()["items"])
    RM.item_add(BPlan("acquire_series", "sem", num=n, delay=delay, md={"bench": "kill"}))
    RM.queue_start()

    def open_run():
        runs = RM.re_runs()["run_list"]
        return runs[0]["uid"] if runs and runs[0]["is_open"] else None

    uid = wait_for(open_run, 120, "series start", qs.process, qs.log)
    backup = server.data_dir / "backup" / f"{uid}.jsonl"
    wait_for(lambda: backup.exists() and announced(backup) >= n // 2, 600, "half the frames",
             qs.process, qs.log, interval=0.05)
    os.kill(worker.pid, signal.SIGKILL)
    t_kill = time.perf_counter()
    wait_for(lambda: dead(worker), 30, "worker death")
    if any(name == "stop" for name, _ in iter_backup(backup)):
        raise RuntimeError("the run ended before the kill: use more frames")

    n_announced = announced(backup)
    resource = next(d for name, d in iter_backup(backup) if name == "stream_resource")
    directory = Path(resource["uri"].removeprefix("file://localhost"))
    readable = sum(1 for i in range(n_announced)
                   if read_tiff(directory / resource["parameters"]["template"].format(i))
                   .data.size > 0)
    run = server.client()[uid]
    try:
        at_kill = run["primary"]["microscope_sem_image"].shape[0]
    except KeyError:
        at_kill = 0
    stale = RM.status(reload=True)["manager_state"]

    t0 = time.perf_counter()
    stop = recover_run(server.client(), backup)
    t_recover = time.perf_counter() - t0
    recovered = server.client()[uid]["primary"]["microscope_sem_image"].shape[0]

    RM.environment_destroy()
    RM.wait_for_idle(timeout=120)
    requeued = [q["name"] for q in RM.queue_get()["items"]]
    RM.queue_clear()
    qs.open_environment(timeout=300)
    result = run_queue(RM, BPlan("acquire_image", "sem"))
    t_back = time.perf_counter() - t_kill
    history = RM.history_get()["items"][n_hist:]
    return {
        "announced": n_announced,
        "files_readable": readable,
        "in_catalog_at_kill": at_kill,
        "in_catalog_after_recover_run": recovered,
        "recovered_stop": stop["exit_status"],
        "recover_run_s": t_recover,
        "manager_state_after_kill": stale,
        "interrupted_item": history[0]["result"]["exit_status"],
        "requeued": requeued,
        "next_plan": result["exit_status"],
        "kill_to_next_plan_done_s": t_back,
    }


def main(n: int = 500, small: bool = False) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        config = None
        if small:
            config = tmp / "microscope.yaml"
            config.write_text(SMALL_CONFIG)
        server = TiledPostgresServer(tmp / "server", command="fibsem")
        qs = None
        try:
            server.start()
            qs = QueueServer(tmp, server.data_dir, config,
                             FIBSEM_OPHYD_TILED_URI=server.uri,
                             FIBSEM_OPHYD_TILED_API_KEY=server.api_key)
            qs.connect()
            qs.open_environment(timeout=300)
            size = "384x256" if small else "1536x1024"
            print(f"queue server -> fibsem-ophyd serve (PostgreSQL catalog), {size} frames")

            m = memory_and_completeness(qs, server, n)
            print(f"1. acquire_series(sem, num={n}): {m['seconds']:.1f} s "
                  f"({m['frames'] / m['seconds']:.1f} frames/s), exit {m['exit_status']}")
            print(f"   RE Worker RSS: baseline {m['rss_baseline_mb']:.0f} MB, peak growth "
                  f"{m['rss_peak_growth_mb']:.1f} MB, growth at end "
                  f"{m['rss_end_growth_mb']:.1f} MB ({m['samples']} samples; target <= "
                  f"{RSS_TARGET_MB:.0f} MB)")
            print(f"   frames in the catalog {m['in_catalog']}/{n}, missing on read-back "
                  f"{m['missing']} (target 0)")

            # small frames come too fast to kill mid-run by polling: pace them
            k = kill_and_recover(qs, server, n, delay=0.02 if small else 0.0)
            print(f"2. RE Worker SIGKILLed at {k['announced']}/{n} frames announced:")
            print(f"   announced frames whose file reads back: {k['files_readable']}/"
                  f"{k['announced']}")
            print(f"   frames in the catalog at the kill: {k['in_catalog_at_kill']}; after "
                  f"recover_run: {k['in_catalog_after_recover_run']} (stop "
                  f"{k['recovered_stop']!r}, {k['recover_run_s']:.1f} s)")
            print(f"   manager state after the kill (until told): "
                  f"{k['manager_state_after_kill']!r}; after environment_destroy the "
                  f"interrupted item is {k['interrupted_item']!r} and back in the queue "
                  f"{k['requeued']}")
            print(f"   environment_destroy + environment_open + next plan: "
                  f"{k['next_plan']} {k['kill_to_next_plan_done_s']:.1f} s after the kill")
        finally:
            if qs is not None:
                qs.close()
            server.close()


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(int(args[0]) if args else 500, small="--small" in sys.argv)
