"""The overnight batch on the simulator, end to end: wall time vs simulated hardware time.

An SEM overview (3x3 tiles of 150 um), ``select_sites`` (squares found, each site brought
to the coincidence point and saved), then ``mill_lamellae`` at a 15 deg milling angle with
the grid coated first (10 s sputter, 5 s cryo GIS) and the AutoLamella recipe of
``bench_milling.py`` (ice) with 1.5 um added to every depth (the dose that goes through the
coat),
drift on (``--drift=`` nm/s, default 0.2: 12 nm/min, a settled cryo stage drifts a few
nm/min) and shot noise; 1536x1024 frames; everything stored in the embedded
catalog, served from a child process. Prints the wall and simulated times per step and the
speed-up over the hardware time the simulator's clock accumulates.

    python benchmarks/bench_overnight.py [n_sites] [--drift=nm_per_s]   (default 3, 0.2)
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

from bench_milling import PROTOCOL

from fibsem_ophyd import setup_session
from fibsem_ophyd.plans import mill_lamellae, select_sites

#: a 5 s cryo GIS layer (~0.14 um of PtC) takes the charge of ~1.4 um of ice
COAT = {"sputter_time": 10.0, "gis_time": 5.0}
COAT_ICE_DEPTH = 1.5e-6


def main(n_sites: int = 3, drift: float = 0.2e-9) -> None:
    protocol = json.loads(json.dumps(PROTOCOL))
    for section in protocol["milling"].values():  # the dose for the coat (~1.4 um of ice)
        for stage in section if isinstance(section, list) else [section]:
            stage["pattern"]["depth"] += COAT_ICE_DEPTH
    with tempfile.TemporaryDirectory() as tmp:
        v = drift / 3 ** 0.5
        config = {"sim": {"drift": {"velocity": [v, v, v], "settle_amplitude": 0.0}}}
        s = setup_session(config=config, data_dir=Path(tmp) / "data", seed=0, serve=True)
        sim, scope = s.backend, s.microscope
        steps = []

        def timed(name, plan):
            t_sim, t0 = sim.time(), time.perf_counter()
            out = s.RE(plan).plan_result
            steps.append((name, time.perf_counter() - t0, sim.time() - t_sim))
            return out

        intended = {}

        def note_site(name, doc):  # ground truth: where each lamella should go
            if name == "start" and doc.get("role") == "reference":
                intended[doc["lamella"]] = sim.truth.surface_point("ion")

        s.RE.subscribe(note_site)
        sel = timed("select_sites", select_sites(scope, n_sites=n_sites, prefix="L"))
        sites = sorted(sel["sites"])
        scope.fib.hfw.set(80e-6).wait()
        res = timed("mill_lamellae", mill_lamellae(
            scope, sites, protocol, batch="bench", milling_angle=15.0,
            coating=COAT))
        n_runs = len(s.catalog)
        truth = {site: sim.truth.lamella(point, depth=1e-6) for site, point in intended.items()}
        s.close()
    print(f"drift {drift * 1e9:.2f} nm/s; {len(sites)} sites {sites}")
    print(f"done: {res['done']}")
    print(f"skipped: {res['skipped']}")
    print("measured thickness (nm): " + ", ".join(
        f"{k} {v * 1e9:.0f}" if v is not None else f"{k} -" for k, v in res["thickness"].items()))
    print("ground truth 1 um below the top (nm): " + ", ".join(
        f"{k} {t['thickness'] * 1e9:.0f} (offset {t['centre_offset'] * 1e9:.0f}, "
        f"{'bounded' if t['bounded'] else 'NOT bounded'})" for k, t in sorted(truth.items())))
    total_wall = total_sim = 0.0
    for name, wall, simt in steps:
        total_wall += wall
        total_sim += simt
        print(f"  {name:14s} wall {wall:6.1f} s   simulated {simt / 60:6.1f} min")
    print(f"total: wall {total_wall:.1f} s, simulated hardware time {total_sim / 3600:.2f} h, "
          f"speed-up over hardware {total_sim / total_wall:.0f}x; {n_runs} runs stored")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--drift=")]
    rate = [float(a.split("=", 1)[1]) for a in sys.argv[1:] if a.startswith("--drift=")]
    main(int(args[0]) if args else 3, (rate[0] if rate else 0.2) * 1e-9)
