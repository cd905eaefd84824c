"""Frame round trip through the OpenFIBSEM bridge vs OpenFIBSEM's ``acquire_image`` alone.

On OpenFIBSEM's Demo microscope (``FIBSEM_SIM_NO_DELAY=1``: its sleeps off, so what is timed is
software), in one run, interleaved so machine load hits all of them alike:

* ``theirs``: ``microscope.acquire_image(image_settings=...)``, the OpenFIBSEM call alone;
* ``bridge``: ``OpenFibsemBackend.acquire_image`` (our settings -> ``ImageSettings``, the
  settings applied, the frame back) plus ``state()`` (the one metadata read per frame);
* ``RE``: ``RE(acquire_image(microscope.sem))`` end to end: the plan, the TIFF with the full
  metadata, the documents and the Tiled catalog (``--no-re`` skips it).

Also counts calls into the OpenFIBSEM microscope per bridged frame. Run::

    FIBSEM_SIM_NO_DELAY=1 python benchmarks/bench_bridge.py [--repeats N] [--resolution WxH]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time

os.environ.setdefault("FIBSEM_SIM_NO_DELAY", "1")


def main(argv: list[str] | None = None) -> dict[str, float]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--resolution", default="1536x1024")
    ap.add_argument("--no-re", action="store_true", help="skip the RunEngine round trip")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.resolution.split("x"))

    from fibsem.config import DEFAULT_CONFIGURATION_PATH
    from fibsem.structures import BeamType, ImageSettings

    from fibsem_ophyd import setup_session
    from fibsem_ophyd.plans import acquire_image

    session = setup_session(config=str(DEFAULT_CONFIGURATION_PATH), backend="openfibsem",
                            data_dir=tempfile.mkdtemp(prefix="bench_bridge_"))
    be = session.backend
    scope = be.microscope
    settings = {"resolution": [w, h], "dwell_time": 1e-6, "hfw": 150e-6}
    theirs_settings = ImageSettings(resolution=(w, h), dwell_time=1e-6, hfw=150e-6,
                                    beam_type=BeamType.ELECTRON, save=False)

    def theirs():
        scope.acquire_image(image_settings=theirs_settings)

    def bridge():
        be.acquire_image("electron", settings)
        be.state()

    def run_engine():
        session.RE(acquire_image(session.microscope.sem, resolution=[w, h], dwell_time=1e-6,
                                 hfw=150e-6))

    jobs = {"theirs": theirs, "bridge": bridge}
    if not args.no_re:
        jobs["RE"] = run_engine
    for fn in jobs.values():  # warm: their glyph cache, our first TIFF series
        fn()
    times: dict[str, list[float]] = {k: [] for k in jobs}
    for _ in range(args.repeats):
        for name, fn in jobs.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    calls0 = be.calls
    bridge()
    calls = be.calls - calls0
    session.close()

    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"frame {w}x{h}, median of {args.repeats} (interleaved), fibsem Demo, "
          f"FIBSEM_SIM_NO_DELAY={os.environ.get('FIBSEM_SIM_NO_DELAY')}")
    for k, v in med.items():
        print(f"  {k:7s} {v * 1e3:8.1f} ms   ratio to theirs {v / med['theirs']:.2f}")
    print(f"  calls into the OpenFIBSEM microscope per bridged frame (acquire + state): {calls}")
    return {**med, "calls": calls}


if __name__ == "__main__":
    main()
