"""Store overhead: RE(count([sem], num=N)) into the embedded catalog vs render + raw TIFF write.

Baseline = the backend rendering the N frames directly plus raw ``tifffile.imwrite`` of them;
pipeline = ``RE(count([microscope.sem], num=N))`` into the embedded Tiled catalog (the RunEngine
returns once the catalog holds every frame). Target: baseline / pipeline >= 0.8.

The two are measured in alternating rounds in one session (``--rounds``, default 3), so a
slow patch of a shared machine hits both; printed: each round's ratio, their median, and the
ratio of the best baseline to the best pipeline time (the least disturbed of each).

    python benchmarks/bench_store.py [N] [--rounds R] [--served | --in-process]
    (default: N = 100, 3 rounds, both modes)

``--fsync`` measures instead what fsyncing the JSON-lines backup costs: in one session,
alternating rounds of the same ``RE(count([sem], num=N))`` with the backup fsynced every
``FSYNC_EVERY`` documents and at the stop (the default), never (``fsync_every=0``), and
after every document (``fsync_every=1``, for scale); printed: each round's ms/frame, the
median ratio of each to never, and the time spent in fsync per frame (timed around each
``os.fsync`` by the writer, on the RunEngine's thread).

    python benchmarks/bench_store.py --fsync [N] [--rounds R]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import tifffile
from bluesky.plans import count

from fibsem_ophyd import setup_session


def main(n: int = 100, serve: bool = False, rounds: int = 3) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        s = setup_session(data_dir=Path(tmp) / "data", seed=0, serve=serve)
        det = s.microscope.sem
        settings = det.image_settings()
        w, h = settings["resolution"]
        # warm up both paths (imports, render cache, catalog tables)
        s.RE(count([det], num=2))
        s.backend.acquire_image("electron", settings)

        base_times, pipe_times = [], []
        for r in range(rounds):
            raw_dir = Path(tmp) / f"raw{r}"
            raw_dir.mkdir()
            t0 = time.perf_counter()
            for i in range(n):
                frame = s.backend.acquire_image("electron", settings)
                tifffile.imwrite(raw_dir / f"img_{i:06d}.tif", frame)
            base_times.append(time.perf_counter() - t0)

            t0 = time.perf_counter()
            (uid,) = s.RE(count([det], num=n)).run_start_uids
            pipe_times.append(time.perf_counter() - t0)

            stored = s.catalog[uid]["primary"][det.image_key]
            assert stored.shape == (n, h, w), stored.shape
            assert s.catalog[uid].metadata["stop"]["exit_status"] == "success"
        s.close()

    ratios = [b / p for b, p in zip(base_times, pipe_times, strict=True)]
    median = statistics.median(ratios)
    best = min(base_times) / min(pipe_times)
    mode = "served from a child process" if serve else "in-process"
    print(f"frames: {n} x {w}x{h} uint8, embedded catalog {mode}, {rounds} alternating rounds")
    for b, p, r in zip(base_times, pipe_times, ratios, strict=True):
        print(f"  baseline (render + tifffile.imwrite) {1e3 * b / n:5.1f} ms/frame, "
              f"pipeline (RE(count) -> TIFF + Tiled) {1e3 * p / n:5.1f} ms/frame, ratio {r:.2f}")
    print(f"ratio baseline/pipeline: median {median:.2f}, best/best {best:.2f}  (target >= 0.8)")
    return {"median": median, "best": best, "ratios": ratios}


def fsync_cost(n: int = 100, rounds: int = 3) -> dict[str, float]:
    """Pipeline time with the backup fsynced every FSYNC_EVERY documents, never, always."""
    from fibsem_ophyd.storage.writer import FSYNC_EVERY

    settings = {f"every {FSYNC_EVERY} (default)": FSYNC_EVERY, "never": 0, "every 1": 1}
    times: dict[str, list[float]] = {k: [] for k in settings}
    fsync_s: dict[str, float] = dict.fromkeys(settings, 0.0)
    fsyncs: dict[str, int] = dict.fromkeys(settings, 0)
    with tempfile.TemporaryDirectory() as tmp:
        s = setup_session(data_dir=Path(tmp) / "data", seed=0)
        det = s.microscope.sem
        w, h = det.image_settings()["resolution"]
        s.RE(count([det], num=2))  # warm up
        for r in range(rounds):
            order = list(settings) if r % 2 == 0 else list(settings)[::-1]
            for label in order:
                s.writer.fsync_every = settings[label]
                c0, t0 = s.writer.stats["fsyncs"], s.writer.stats["fsync_s"]
                start = time.perf_counter()
                (uid,) = s.RE(count([det], num=n)).run_start_uids
                times[label].append(time.perf_counter() - start)
                fsyncs[label] += s.writer.stats["fsyncs"] - c0
                fsync_s[label] += s.writer.stats["fsync_s"] - t0
                assert s.catalog[uid]["primary"][det.image_key].shape == (n, h, w)
        s.close()
    print(f"backup fsync cost: {n} x {w}x{h} frames per run, embedded catalog in-process, "
          f"{rounds} alternating rounds")
    never = times["never"]
    out = {}
    for label in settings:
        per_frame = ", ".join(f"{1e3 * t / n:.1f}" for t in times[label])
        ratio = statistics.median(t / b for t, b in zip(times[label], never, strict=True))
        out[label] = ratio
        print(f"  fsync {label:18s}: ms/frame {per_frame}; median time ratio to never "
              f"{ratio:.3f}; {fsyncs[label]} fsyncs, "
              f"{1e3 * fsync_s[label] / (n * rounds):.3f} ms of fsync per frame"
              + (f" ({1e3 * fsync_s[label] / fsyncs[label]:.2f} ms each)"
                 if fsyncs[label] else ""))
    return out


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", nargs="?", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=3)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--served", action="store_true")
    g.add_argument("--in-process", action="store_true")
    g.add_argument("--fsync", action="store_true",
                   help="cost of fsyncing the JSON-lines backup (default vs never vs always)")
    args = ap.parse_args()
    if args.fsync:
        fsync_cost(args.n, rounds=args.rounds)
        raise SystemExit(0)
    modes = [True] if args.served else [False] if args.in_process else [False, True]
    for serve_ in modes:
        main(args.n, serve=serve_, rounds=args.rounds)
