"""Coincidence study: ``find_coincidence`` from a 30 um eucentric height error, 20 seeds.

Scored against the simulator's ground truth: the stage z vs ``sim.truth.eucentric_z()`` and
the distance of the surface point on the electron-beam axis from the ion image centre.
Target: <= 0.3 um residual in <= 3 iterations for 20 of 20 seeds.

    python benchmarks/bench_coincidence.py [--seeds 20] [--offset 30e-6]
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time

from fibsem_ophyd import setup_session
from fibsem_ophyd.plans import find_coincidence

SMALL = {"electron": {"resolution": [384, 256]}, "ion": {"resolution": [384, 256]}}


def score(sim) -> tuple[float, float, float]:
    """(stage z error, ion-centre error, SEM-centre error) in metres, from the ground truth."""
    ez = sim.truth.eucentric_z() - sim.get_stage_position()["z"]
    point = sim.truth.surface_point("electron")
    errs = []
    for beam in ("ion", "electron"):
        v = sim.truth.view(beam)
        col, row = sim.truth.project(point, beam)
        errs.append(math.hypot(col - (v.width - 1) / 2, row - (v.height - 1) / 2) * v.pixel)
    return ez, errs[0], errs[1]


def run(seed: int, offset: float, data_dir: str) -> dict:
    cfg = {**SMALL, "sim": {"sample_height_offset": offset}}
    s = setup_session(config=cfg, data_dir=f"{data_dir}/s{seed}", seed=seed)
    try:
        t0 = time.perf_counter()
        result = s.RE(find_coincidence(s.microscope)).plan_result
        dt = time.perf_counter() - t0
        ez, ion, sem = score(s.backend)
    finally:
        s.close()
    return {"seed": seed, "ez": ez, "ion": ion, "sem": sem, "iterations": result["iterations"],
            "moves": result["moves"], "converged": result["converged"], "time": dt}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=20)
    ap.add_argument("--offset", type=float, default=30e-6)
    ap.add_argument("--target", type=float, default=0.3e-6)
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(args.seeds):
            r = run(seed, args.offset, tmp)
            r["ok"] = max(abs(r["ez"]), r["ion"]) <= args.target and r["iterations"] <= 3
            rows.append(r)
            print(f"seed {seed:2d}: |z - z_euc| {abs(r['ez']) * 1e6:.3f} um, "
                  f"ion {r['ion'] * 1e6:.3f} um, sem {r['sem'] * 1e6:.3f} um, "
                  f"iterations {r['iterations']}, moves "
                  f"{r['moves']}, converged {r['converged']}, {r['time']:.1f} s, "
                  f"{'ok' if r['ok'] else 'FAIL'}")
    n_ok = sum(r["ok"] for r in rows)
    worst = max(max(abs(r["ez"]), r["ion"]) for r in rows)
    med = sorted(abs(r["ez"]) for r in rows)[len(rows) // 2]
    print(f"success {n_ok}/{len(rows)} (<= {args.target * 1e6:.2f} um in <= 3 iterations); "
          f"|z error| median {med * 1e6:.3f} um, worst residual {worst * 1e6:.3f} um; "
          f"iterations max {max(r['iterations'] for r in rows)}, "
          f"mean time {sum(r['time'] for r in rows) / len(rows):.1f} s")


if __name__ == "__main__":
    main()
