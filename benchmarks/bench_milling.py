"""Simulated milling of one lamella protocol (all stages): wall time vs simulated hardware time.

AutoLamella's default recipe (physics notes, section 3) in vitreous ice at a 15 deg milling
angle: fiducial (1 nA), stress-relief joints (1 nA), rough trench (0.74 nA, 10 um wide,
3.5 um heights, 4.6 um gap, 2 um deep), thin (0.2 nA, 2 um heights, 1.6 um gap), polish
(60 pA, 0.7 um heights, 0.3 um gap, 9 um wide); ion images at 1536x1024 before and after each
stage, drift correction between stages, everything stored in the embedded catalog.
Target: <= 10 s wall time on 2 cores. Every stage stores several runs, so the catalog's
request handling is a large share: the protocol is timed with the embedded catalog in this
process and served from a child process (``setup_session(serve=True)``).

    python benchmarks/bench_milling.py [--served | --in-process]   (default: both)
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from fibsem_ophyd import setup_session
from fibsem_ophyd.milling import estimate_stage_time, load_protocol
from fibsem_ophyd.plans import mill_lamella


def trench(name, current, width, height, gap, depth):
    return {"name": name, "milling": {"milling_current": current, "hfw": 80e-6,
                                      "material": "ice"},
            "pattern": {"name": "Trench", "width": width, "upper_trench_height": height,
                        "lower_trench_height": height, "spacing": gap, "depth": depth,
                        "cross_section": "CleaningCrossSection"}}


PROTOCOL = {"milling": {
    "fiducial": {"name": "fiducial", "milling": {"milling_current": 1e-9, "hfw": 80e-6,
                                                 "material": "ice"},
                 "pattern": {"name": "Fiducial", "height": 10e-6, "width": 1e-6, "depth": 1e-6,
                             "point": {"x": -25e-6, "y": 0.0}}},
    "microexpansion": {"name": "stress relief",
                       "milling": {"milling_current": 1e-9, "hfw": 80e-6, "material": "ice"},
                       "pattern": {"name": "MicroExpansion", "width": 0.5e-6, "height": 18e-6,
                                   "distance": 10e-6, "depth": 2e-6}},
    "mill_rough": [trench("rough", 0.74e-9, 10e-6, 3.5e-6, 4.6e-6, 2e-6)],
    "mill_thin": [trench("thin", 0.2e-9, 10e-6, 2e-6, 1.6e-6, 2e-6)],
    "mill_polishing": [trench("polish", 60e-12, 9e-6, 0.7e-6, 0.3e-6, 2e-6)],
}}


def main(serve: bool = False) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        s = setup_session(data_dir=Path(tmp) / "data", seed=0, serve=serve)
        m = s.microscope
        m.fib.hfw.set(80e-6).wait()
        imaging = m.ion_beam.current.get()
        est = sum(estimate_stage_time(st, imaging)["total"]
                  for stages in load_protocol(PROTOCOL).values() for st in stages)
        t_sim0 = s.backend.time()
        t0 = time.perf_counter()
        res = s.RE(mill_lamella(m, PROTOCOL, lamella="bench", milling_angle=15.0)).plan_result
        wall = time.perf_counter() - t0
        sim = s.backend.time() - t_sim0
        s.close()
    mode = "served from a child process" if serve else "in-process"
    print(f"embedded catalog {mode}; sections: {res['sections']}")
    print(f"wall time: {wall:.2f} s  (target <= 10 s)")
    print(f"simulated hardware time: {sim:.0f} s ({sim / 60:.1f} min); "
          f"dose-based estimate incl. overheads: {est:.0f} s")
    print(f"speed-up over hardware: {sim / wall:.0f}x")
    return wall


if __name__ == "__main__":
    modes = [True] if "--served" in sys.argv else [False] if "--in-process" in sys.argv \
        else [False, True]
    for serve_ in modes:
        main(serve=serve_)
