"""Reading stored frames the standard Tiled way, against a raw ``tifffile.imread`` of the files.

Writes N frames of 1536x1024 (default 100) through the test TIFF detector
(``tests/storage/_device.py``) with ``RE(count(...))`` and a
:class:`fibsem_ophyd.storage.CatalogWriter` into an embedded catalog, then times, with the
catalog in this process and served from a child process (``serve_catalog``):

- one frame as an analyst reads it: ``catalog[uid]["primary"][key][i]`` from the catalog
  client (navigation and frame), and the frame alone on a node already in hand
  (``node[i]``); median over several frames;
- ``node.read()`` of all N frames;
- raw ``tifffile.imread`` of one file and of all N files (the baseline).

Targets: one frame <= 15 ms; ``.read()`` <= 2x the raw reads. Absolute times depend on the
machine's load; the ratios are measured in the same run.

    python benchmarks/bench_tiled_read.py [N] [--repeats R] [--served | --in-process]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import tifffile  # noqa: E402
from bluesky import RunEngine  # noqa: E402
from bluesky.plans import count  # noqa: E402

from fibsem_ophyd.storage import (  # noqa: E402
    CatalogWriter,
    backup_dir,
    image_files,
    images_dir,
    open_catalog,
    serve_catalog,
)
from tests.storage._device import TiffDetector, expected_frame  # noqa: E402

H, W = 1024, 1536


def timed(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main(n: int = 100, served: bool = False, repeats: int = 3) -> dict:
    warnings.simplefilter("ignore")
    with tempfile.TemporaryDirectory(prefix="bench_tiled_read_") as tmp:
        data_dir = Path(tmp) / "data"
        server = serve_catalog(data_dir) if served else None
        catalog = server.client() if served else open_catalog(data_dir)
        try:
            det = TiffDetector(images_dir(data_dir), shape=(H, W), seed=0)
            RE = RunEngine({}, call_returns_result=False)
            writer = CatalogWriter(catalog, backup_dir(data_dir))
            RE.subscribe(writer)
            (uid,) = RE(count([det], n), sample="bench")
            assert not writer.wait(timeout=600)
            files = image_files(catalog[uid])
            key = det.image_key
            assert len(files) == n

            picks = list(range(0, n, max(1, n // 10)))[:10]
            frame_path, frame_only, raw_one = [], [], []
            node = catalog[uid]["primary"][key]
            for i in picks:
                t0 = time.perf_counter()
                a = catalog[uid]["primary"][key][i]
                frame_path.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                b = node[i]
                frame_only.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                tifffile.imread(files[i])
                raw_one.append(time.perf_counter() - t0)
                # the detector's frames are (1, H, W) each
                assert np.array_equal(a.reshape(H, W), expected_frame(0, i, (H, W)))
                assert np.array_equal(a, b)
            t_read = timed(lambda: node.read(), repeats)
            t_raw = timed(lambda: [tifffile.imread(p) for p in files], repeats)
            assert node.read().shape[0] == n
            writer.close()
        finally:
            if server is not None:
                server.close()
    mode = "served (child process)" if served else "in-process"
    one, only, raw = (statistics.median(v) for v in (frame_path, frame_only, raw_one))
    print(f"catalog {mode}; {n} frames of {W}x{H} uint8")
    print(f"  one frame catalog[uid]['primary'][key][i]: {one * 1e3:6.1f} ms  (target <= 15 ms)"
          f"; node[i] alone {only * 1e3:6.1f} ms; raw imread {raw * 1e3:5.2f} ms")
    print(f"  node.read() of {n}: {t_read:6.2f} s; raw imread of {n}: {t_raw:6.2f} s; "
          f"ratio {t_read / t_raw:.1f}  (target <= 2)")
    return {"one": one, "node": only, "read_ratio": t_read / t_raw}


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("n", nargs="?", type=int, default=100)
    ap.add_argument("--repeats", type=int, default=3)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--served", action="store_true")
    g.add_argument("--in-process", action="store_true")
    args = ap.parse_args()
    modes = [True] if args.served else [False] if args.in_process else [False, True]
    for m in modes:
        main(args.n, served=m, repeats=args.repeats)
