"""Read-back benchmark: 100 frames of 1536x1024 via ``load_images`` vs raw ``tifffile.imread``.

Writes 100 frames through the test TIFF detector (``tests/storage/_device.py``) with
``RE(count(...))`` and a :class:`fibsem_ophyd.storage.CatalogWriter` into an embedded
catalog in a temporary directory, then times reading every frame back

- with :func:`fibsem_ophyd.storage.load_images` (pixels + metadata, via the catalog), and
- with ``tifffile.imread`` of the same files (pixels only),

and prints both and their ratio (target <= 1.5). Also prints the TIFF write overhead of
``write_tiff`` over ``tifffile.imwrite`` and how long the writer took to drain after
``RE`` returned.

Run: ``python benchmarks/bench_readback.py [--frames N] [--repeats R] [--served]``
(``--served`` uses :func:`fibsem_ophyd.storage.serve_catalog`, a child-process server).
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
    load_images,
    open_catalog,
    serve_catalog,
    write_tiff,
)
from tests.storage._device import TiffDetector, expected_frame  # noqa: E402

H, W = 1024, 1536


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def write_overhead(tmp: Path, det: TiffDetector, n: int = 20) -> tuple[float, float]:
    """Median seconds per frame: raw ``tifffile.imwrite`` and ``write_tiff`` + metadata."""
    frame = expected_frame(0, 0, (H, W))
    meta = det.metadata_for(0)
    raw, ours = [], []
    for i in range(n):
        t0 = time.perf_counter()
        tifffile.imwrite(tmp / f"raw_{i}.tif", frame)
        raw.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        write_tiff(tmp / f"ours_{i}.tif", frame, meta)
        ours.append(time.perf_counter() - t0)
    return statistics.median(raw), statistics.median(ours)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--served", action="store_true",
                        help="serve the catalog from a child process")
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")

    with tempfile.TemporaryDirectory(prefix="bench_readback_") as tmp:
        data_dir = Path(tmp) / "data"
        server = None
        t0 = time.perf_counter()
        if args.served:
            server = serve_catalog(data_dir)
            catalog = server.client()
        else:
            catalog = open_catalog(data_dir)
        t_open = time.perf_counter() - t0
        try:
            det = TiffDetector(images_dir(data_dir), shape=(H, W), seed=0)
            RE = RunEngine({}, call_returns_result=False)
            writer = CatalogWriter(catalog, backup_dir(data_dir))
            RE.subscribe(writer)

            t0 = time.perf_counter()
            (uid,) = RE(count([det], args.frames), sample="bench")
            t_re = time.perf_counter() - t0
            errors = writer.wait(timeout=600)
            t_drain = time.perf_counter() - t0 - t_re
            assert not errors, errors
            run = catalog[uid]

            files = image_files(run)
            assert len(files) == args.frames
            fresh = catalog[uid]  # cold: nothing about this run looked up yet
            t0 = time.perf_counter()
            images = load_images(fresh)
            t_cold = time.perf_counter() - t0
            assert len(images) == args.frames
            for i in (0, args.frames - 1):
                assert np.array_equal(images[i].data, expected_frame(0, i, (H, W)))
                assert images[i].pixel_size == det.pixel_size()

            t_ours = median_time(lambda: load_images(run), args.repeats)
            t_seq = median_time(lambda: load_images(run, workers=1), args.repeats)
            t_raw = median_time(lambda: [tifffile.imread(p) for p in files], args.repeats)
            w_raw, w_ours = write_overhead(Path(tmp), det)
            writer.close()
        finally:
            if server is not None:
                server.close()

    mode = "served (child process)" if args.served else "embedded (in-process)"
    print(f"catalog: {mode}, opened in {t_open:.2f} s")
    print(f"acquire {args.frames} frames {H}x{W}: RE(count) {t_re:.2f} s, "
          f"writer drained {t_drain:.2f} s after RE returned")
    print(f"read back {args.frames} frames (median of {args.repeats}):")
    print(f"  load_images (pixels + metadata): {t_ours:.3f} s   (default threads)")
    print(f"  load_images, workers=1:          {t_seq:.3f} s   (sequential reads)")
    print(f"  load_images, first call:         {t_cold:.3f} s   (cold: key lookup, no median)")
    print(f"  tifffile.imread (pixels only):   {t_raw:.3f} s   (sequential)")
    ratio = t_ours / t_raw
    print(f"  ratio load_images / imread:      {ratio:.2f}  (target <= 1.5: "
          f"{'OK' if ratio <= 1.5 else 'MISSED'})")
    print(f"TIFF write per frame: tifffile.imwrite {w_raw * 1e3:.2f} ms, "
          f"write_tiff+metadata {w_ours * 1e3:.2f} ms "
          f"(overhead {(w_ours - w_raw) * 1e3:+.2f} ms, {w_ours / w_raw - 1:+.1%})")
    return 0 if ratio <= 1.5 else 1


if __name__ == "__main__":
    sys.exit(main())
