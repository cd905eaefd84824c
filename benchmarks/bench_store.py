"""Store overhead: RE(count([sem], num=N)) into the embedded catalog vs render + raw TIFF write.

Baseline = the backend rendering the N frames directly plus raw ``tifffile.imwrite`` of them;
pipeline = ``RE(count([microscope.sem], num=N))`` into the embedded Tiled catalog (the RunEngine
returns once the catalog holds every frame). Target: baseline / pipeline >= 0.8.

    python benchmarks/bench_store.py [N] [--served | --in-process]   (default: both)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import tifffile
from bluesky.plans import count

from fibsem_ophyd import setup_session


def main(n: int = 100, serve: bool = False) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        s = setup_session(data_dir=Path(tmp) / "data", seed=0, serve=serve)
        det = s.microscope.sem
        settings = det.image_settings()
        w, h = settings["resolution"]
        # warm up both paths (imports, render cache, catalog tables)
        s.RE(count([det], num=2))
        s.backend.acquire_image("electron", settings)

        raw_dir = Path(tmp) / "raw"
        raw_dir.mkdir()
        t0 = time.perf_counter()
        for i in range(n):
            frame = s.backend.acquire_image("electron", settings)
            tifffile.imwrite(raw_dir / f"img_{i:06d}.tif", frame)
        t_base = time.perf_counter() - t0

        t0 = time.perf_counter()
        (uid,) = s.RE(count([det], num=n)).run_start_uids
        t_pipe = time.perf_counter() - t0

        stored = s.catalog[uid]["primary"][det.image_key]
        assert stored.shape == (n, h, w), stored.shape
        assert s.catalog[uid].metadata["stop"]["exit_status"] == "success"
        s.close()

    ratio = t_base / t_pipe
    mode = "served from a child process" if serve else "in-process"
    print(f"frames: {n} x {w}x{h} uint8, embedded catalog {mode}")
    print(f"baseline (render + tifffile.imwrite): {t_base:.2f} s ({1e3 * t_base / n:.1f} ms/frame)")
    print(f"pipeline (RE(count) -> TIFF + Tiled): {t_pipe:.2f} s ({1e3 * t_pipe / n:.1f} ms/frame)")
    print(f"ratio baseline/pipeline: {ratio:.2f}  (target >= 0.8)")
    return ratio


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    count_ = int(args[0]) if args else 100
    modes = [True] if "--served" in sys.argv else [False] if "--in-process" in sys.argv \
        else [False, True]
    for serve_ in modes:
        main(count_, serve=serve_)
