"""Reading stored frames the standard Tiled way, against a raw ``tifffile.imread`` of the files.

Writes N frames of 1536x1024 (default 100) through the test TIFF detector
(``tests/storage/_device.py``) with ``RE(count(...))`` and a
:class:`fibsem_ophyd.storage.CatalogWriter` into an embedded catalog, then times, with the
catalog in this process (``open_catalog``) and served from a child process
(``serve_catalog``, what ``setup_session(serve=True)`` uses):

- one frame as an analyst reads it, ``catalog[uid]["primary"][key][i]`` (navigation and
  frame), the same with the path in one key (``catalog[f"{uid}/primary/{key}"][i]``), and
  the frame alone on a node already in hand (``node[i]``); medians over 10 frames, with the
  HTTP requests each form sends (counted on the client);
- ``node.read()`` of all N frames;
- raw ``tifffile.imread`` of one file and of all N files (the baseline).

CPU times are per frame, summed over this process's threads and, served, the server's
process: on a loaded machine the wall times are mostly waits for a core.

Targets: one frame <= 15 ms; ``.read()`` <= 2x the raw reads. Absolute times depend on the
machine's load; the ratios are measured in the same run.

    python benchmarks/bench_tiled_read.py [N] [--repeats R] [--served | --in-process]
"""

from __future__ import annotations

import argparse
import os
import resource
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


def _cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system, all threads) of this process, or of ``pid`` (Linux
    ``/proc``; 0 where unavailable): under load, wall times mostly measure the wait for a
    core, CPU times what the read costs."""
    if pid is None:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


class _Requests:
    """Counts the HTTP requests a catalog client sends (an httpx request hook)."""

    def __init__(self, catalog):
        self.n = 0
        catalog.context.http_client.event_hooks["request"].append(self)

    def __call__(self, request):
        self.n += 1

    def count(self, fn):
        before = self.n
        out = fn()
        return out, self.n - before


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
            requests = _Requests(catalog)

            picks = list(range(0, n, max(1, n // 10)))[:10]
            times: dict[str, list[float]] = {"chain": [], "path": [], "node": [], "raw": []}
            calls: dict[str, int] = {}
            node = catalog[uid]["primary"][key]
            forms = {
                "chain": lambda i: catalog[uid]["primary"][key][i],
                "path": lambda i: catalog[f"{uid}/primary/{key}"][i],
                "node": lambda i: node[i],
                "raw": lambda i: tifffile.imread(files[i]),
            }
            pid = server.process.pid if server is not None else None
            cpu: dict[str, float] = dict.fromkeys(forms, 0.0)
            for i in picks:
                got = {}
                for name, fn in forms.items():
                    c0 = _cpu_seconds() + (_cpu_seconds(pid) if pid else 0.0)
                    t0 = time.perf_counter()
                    got[name], calls[name] = requests.count(lambda: fn(i))  # noqa: B023
                    times[name].append(time.perf_counter() - t0)
                    cpu[name] += _cpu_seconds() + (_cpu_seconds(pid) if pid else 0.0) - c0
                # the detector's frames are (1, H, W) each
                expected = expected_frame(0, i, (H, W))
                assert np.array_equal(got["raw"], expected)
                for name in ("chain", "path", "node"):
                    assert np.array_equal(got[name].reshape(H, W), expected), name
            t_read = timed(lambda: node.read(), repeats)
            t_raw = timed(lambda: [tifffile.imread(p) for p in files], repeats)
            whole, calls["read"] = requests.count(node.read)
            assert whole.shape[0] == n
            writer.close()
        finally:
            if server is not None:
                server.close()
    mode = "served (child process)" if served else "in-process"
    med = {k: statistics.median(v) for k, v in times.items()}
    cpu_ms = {k: v / len(picks) * 1e3 for k, v in cpu.items()}
    print(f"catalog {mode}; {n} frames of {W}x{H} uint8; load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"  one frame catalog[uid]['primary'][key][i]: {med['chain'] * 1e3:6.1f} ms "
          f"({calls['chain']} requests, CPU {cpu_ms['chain']:.0f} ms; target <= 15 ms)")
    print(f"  one frame catalog[f'{{uid}}/primary/{{key}}'][i]: {med['path'] * 1e3:6.1f} ms "
          f"({calls['path']} requests, CPU {cpu_ms['path']:.0f} ms); node[i] alone "
          f"{med['node'] * 1e3:6.1f} ms ({calls['node']}, CPU {cpu_ms['node']:.0f} ms); "
          f"raw imread {med['raw'] * 1e3:5.2f} ms")
    print(f"  node.read() of {n}: {t_read:6.2f} s ({calls['read']} requests); raw imread of "
          f"{n}: {t_raw:6.2f} s; ratio {t_read / t_raw:.1f}  (target <= 2)")
    return {"one": med["chain"], "path": med["path"], "node": med["node"],
            "read_ratio": t_read / t_raw}


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
