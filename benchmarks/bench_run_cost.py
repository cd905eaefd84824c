"""What one short run costs: a 2-frame ``take_reference_images`` against the same two frames
rendered by the backend and written with ``tifffile.imwrite``.

Every plan stores short runs (a click in the viewer, each step of a batch), so this is the
price of every one of them. Measured in one session, in alternating rounds (``--rounds``,
default 5, each ``--runs`` runs, default 10) so a slow patch of a shared machine hits both:

- baseline: ``backend.acquire_image`` of the electron and the ion frame at the detectors'
  settings + ``tifffile.imwrite`` of both;
- pipeline: ``RE(take_reference_images(microscope))`` into the embedded catalog; the
  RunEngine returns once the catalog holds both frames (the full cost a user waits for),
  split into the plan itself (until the stop document is emitted: rendering, TIFF files,
  documents, JSON-lines backup) and the wait for the catalog after it;
- visibility: from a run's first frame (its event time) to the moment the RunEngine returns,
  when the catalog holds it (each round's last run is read back through
  ``session.catalog``).

Printed: ms per run of each, the ratio pipeline / baseline (target <= 2), the plan / catalog
split and the worst visibility (target <= 1 s).

    python benchmarks/bench_run_cost.py [--rounds R] [--runs N] [--served]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import tifffile

from fibsem_ophyd import setup_session
from fibsem_ophyd.plans import take_reference_images


def main(rounds: int = 5, runs: int = 10, serve: bool = False) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        s = setup_session(data_dir=Path(tmp) / "data", seed=0, serve=serve)
        scope, be = s.microscope, s.backend
        dets = {"electron": scope.sem, "ion": scope.fib}
        stop_at: list[float] = []
        event_at: list[float] = []
        s.RE.subscribe(lambda name, doc: stop_at.append(time.perf_counter()), "stop")
        s.RE.subscribe(lambda name, doc: event_at.append(doc["time"]), "event")
        s.RE(take_reference_images(scope))  # warm: imports, render caches, catalog tables
        for beam, det in dets.items():
            be.acquire_image(beam, det.image_settings())

        base, pipe, plan, visible = [], [], [], []
        for r in range(rounds):
            raw = Path(tmp) / f"raw{r}"
            raw.mkdir()
            t0 = time.perf_counter()
            for i in range(runs):
                for beam, det in dets.items():
                    frame = be.acquire_image(beam, det.image_settings())
                    tifffile.imwrite(raw / f"{beam}_{i:04d}.tif", frame)
            base.append((time.perf_counter() - t0) / runs)

            uids, plan_s = [], 0.0
            t0 = time.perf_counter()
            for _ in range(runs):
                t_run = time.perf_counter()
                del event_at[:]
                uids.append(s.RE(take_reference_images(scope)).plan_result)
                # RE returns once the catalog holds the run: its first frame waited this long
                visible.append(time.time() - min(event_at))
                plan_s += stop_at[-1] - t_run
            pipe.append((time.perf_counter() - t0) / runs)
            plan.append(plan_s / runs)

            run = s.catalog[uids[-1]]  # the frames are there, whole
            for beam, det in dets.items():
                assert run[beam][det.image_key][0].shape == tuple(
                    det.image_settings()["resolution"][::-1])
        s.close()

    ratios = [p / b for p, b in zip(pipe, base, strict=True)]
    median = statistics.median(ratios)
    mode = "served from a child process" if serve else "in-process"
    print(f"2-frame take_reference_images, embedded catalog {mode}; {rounds} rounds of {runs}")
    for b, p, pl, r in zip(base, pipe, plan, ratios, strict=True):
        print(f"  baseline {1e3 * b:6.1f} ms/run   pipeline {1e3 * p:6.1f} ms/run "
              f"(plan {1e3 * pl:6.1f}, catalog wait {1e3 * (p - pl):6.1f})   ratio {r:5.2f}")
    print(f"ratio pipeline/baseline: median {median:.2f}  (target <= 2)")
    print(f"frames readable in the catalog at most {max(visible):.2f} s after their event "
          f"(target <= 1 s)")
    return {"median": median, "visible": max(visible)}


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--runs", type=int, default=10)
    p.add_argument("--served", action="store_true")
    a = p.parse_args()
    main(a.rounds, a.runs, a.served)
