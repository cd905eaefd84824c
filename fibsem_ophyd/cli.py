"""``fibsem-ophyd`` command line: ``demo`` runs the demo workflow on the simulator; ``serve``
serves a Tiled catalog of runs (PostgreSQL or SQLite) for a facility's writers and readers;
``ingest`` stores folders of OpenFIBSEM TIFFs as runs; ``gui`` opens the microscope viewer
(napari; the ``gui`` extra)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .backend import BEAMS

__all__ = ["main"]


def _contact_sheet(images, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(images)
    cols = 2
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3.2 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, (title, img) in zip(axes.ravel(), images, strict=False):
        ax.imshow(img.data, cmap="gray", vmin=0, vmax=255)
        ax.set_title(title, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def demo(args: argparse.Namespace) -> int:
    from . import setup_session
    from .plans import demo_workflow
    from .storage import load_images

    config = args.config
    if args.backend == "openfibsem" and config is None:
        try:  # OpenFIBSEM's own configuration: its Demo microscope
            from fibsem.config import DEFAULT_CONFIGURATION_PATH as config
        except ImportError:
            pass  # setup_session says what is missing
    session = setup_session(config=config, data_dir=args.data_dir, seed=args.seed,
                            serve=args.serve, backend=args.backend)
    try:
        if getattr(session.backend, "manufacturer", None) == "Demo":
            # OpenFIBSEM's Demo boots at x=y=z=r=t=0, on its lowest z: start from the SEM
            # orientation at the configured eucentric z, as on a real system
            from bluesky import plan_stubs as bps

            stage = session.config["stage"]
            start = {"z": float(stage["eucentric_z"]), "r": float(stage["rotation_reference"]),
                     "t": float(stage["shuttle_pre_tilt"])}
            print(f"OpenFIBSEM Demo: stage to {start} first")
            session.RE(bps.mv(session.microscope.stage, start))
        res = [int(v) for v in args.resolution.split("x")]
        result = session.RE(demo_workflow(session.microscope, hfw=args.hfw, resolution=res))
        uids = list(result.plan_result)
        print(f"Stored {len(uids)} runs in {session.data_dir}:")
        sheet = []
        for uid in uids:
            run = session.catalog[uid]
            step = run.metadata["start"].get("step")
            print(f"  {uid}  step={step}  exit_status={run.metadata['stop']['exit_status']}")
            for stream in BEAMS:
                for img in load_images(run, stream):
                    pos = img.stage_position
                    sheet.append((f"{step} / {stream}  x={pos['x']*1e6:.1f} um "
                                  f"z={pos['z']*1e6:.1f} um t={pos['t']:.0f} deg", img))
        out = session.data_dir / "demo_contact_sheet.png"
        _contact_sheet(sheet, out)
        print(f"Contact sheet: {out}")
        print("Read them back in Python:")
        print("  from fibsem_ophyd.storage import open_catalog, load_images")
        print(f"  catalog = open_catalog({str(session.data_dir)!r})")
        print(f"  images = load_images(catalog[{uids[0]!r}], 'electron')")
        print("  images[0].data.shape, images[0].pixel_size")
    finally:
        session.close()
    return 0


#: environment variables consulted for the API key of ``serve``, in order
API_KEY_ENV = ("FIBSEM_OPHYD_TILED_API_KEY", "TILED_SINGLE_USER_API_KEY")


def serve(args: argparse.Namespace) -> int:
    import os
    import secrets

    api_key = args.api_key or next((os.environ[k] for k in API_KEY_ENV if os.environ.get(k)),
                                   None)
    if api_key is None:
        api_key = secrets.token_hex(16)
        print(f"No API key given ({', '.join(API_KEY_ENV)} unset): generated one.\n"
              f"  clients: setup_session(tiled_uri=..., api_key={api_key!r})", flush=True)
    elif not (api_key.isascii() and api_key.isalnum()):
        print("fibsem-ophyd serve: the API key must be ASCII letters and digits only",
              file=sys.stderr)
        return 2

    from .session import DEFAULT_DATA_DIR
    from .storage.server import serve as serve_catalog

    data_dir = args.data_dir or os.environ.get("FIBSEM_OPHYD_DATA_DIR") or DEFAULT_DATA_DIR
    serve_catalog(
        data_dir, catalog=args.catalog, tables=args.tables, readable_storage=args.readable,
        api_key=api_key, host=args.host, port=args.port, log_level=args.log_level,
        announce=lambda line: print(line, flush=True),
    )
    return 0


def ingest(args: argparse.Namespace) -> int:
    import os

    from .ingest import ingest_folder
    from .session import DEFAULT_DATA_DIR
    from .storage import open_catalog

    md = {}
    for item in args.md:
        key, sep, value = item.partition("=")
        if not sep or not key:
            print(f"fibsem-ophyd ingest: --md takes KEY=VALUE, got {item!r}", file=sys.stderr)
            return 2
        md[key] = value
    folders = []
    for d in map(Path, args.folders):
        if not d.is_dir():
            print(f"fibsem-ophyd ingest: not a folder: {d}", file=sys.stderr)
            return 2
        tree = sorted({p.parent for p in d.rglob("*") if p.suffix.lower() in (".tif", ".tiff")}
                      ) if args.recursive else [d]
        folders += tree
    data_dir = args.data_dir or os.environ.get("FIBSEM_OPHYD_DATA_DIR") or DEFAULT_DATA_DIR
    catalog = open_catalog(data_dir)
    for folder in folders:
        try:
            uid = ingest_folder(folder, data_dir, catalog=catalog, md=md)
        except ValueError as exc:
            print(f"fibsem-ophyd ingest: {exc}", file=sys.stderr)
            return 1
        print(f"{folder}: run {uid}", flush=True)
    return 0


def gui(args: argparse.Namespace) -> int:
    from .gui import run_app

    return run_app(args)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fibsem-ophyd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run the demo workflow on the simulator (or, with "
                       "--backend openfibsem, on OpenFIBSEM's Demo or any microscope its "
                       "configuration names)")
    p.add_argument("--data-dir", default="fibsem_data", help="storage folder")
    p.add_argument("--config", default=None, help="microscope configuration YAML")
    p.add_argument("--seed", type=int, default=0, help="simulator seed")
    p.add_argument("--backend", choices=("sim", "openfibsem"), default="sim",
                   help="sim: our simulator; openfibsem: the OpenFIBSEM bridge (--config is "
                   "then an OpenFIBSEM microscope-configuration.yaml; default: theirs, Demo)")
    p.add_argument("--hfw", type=float, default=150e-6, help="horizontal field width, m")
    p.add_argument("--resolution", default="1536x1024", help="WIDTHxHEIGHT pixels")
    p.add_argument("--serve", action="store_true",
                   help="serve the embedded catalog from a child process (faster acquisition)")
    p.set_defaults(func=demo)

    p = sub.add_parser(
        "serve", help="serve a Tiled catalog of runs (PostgreSQL or SQLite) with an API key",
        description="Serve a Tiled catalog of Bluesky runs with an API key and the document "
        "exporter registered (run.documents()). Writers: setup_session(tiled_uri=URL, "
        "api_key=KEY) or the profile collection with FIBSEM_OPHYD_TILED_URI / "
        "FIBSEM_OPHYD_TILED_API_KEY. The server must be able to read the writers' image "
        "directory: <data-dir>/images, or add it with -r.")
    p.add_argument("--catalog", default=None,
                   help="catalog database: postgresql://USER[:PW]@HOST:PORT/DB (the database "
                   "must exist; tables are created if missing) or a SQLite file "
                   "(default <data-dir>/catalog.db)")
    p.add_argument("--data-dir", default=None,
                   help="server data directory: data/ (arrays), tables.duckdb, images/ "
                   "(readable) (default $FIBSEM_OPHYD_DATA_DIR or ./fibsem_data)")
    p.add_argument("--tables", default=None,
                   help="table store URI, e.g. postgresql://... for several server processes "
                   "(default duckdb:///<data-dir>/tables.duckdb)")
    p.add_argument("-r", "--readable", action="append", default=[], metavar="DIR",
                   help="another directory of detector files to serve (repeatable)")
    p.add_argument("--api-key", default=None,
                   help="single-user API key (default $FIBSEM_OPHYD_TILED_API_KEY, then "
                   "$TILED_SINGLE_USER_API_KEY, else a generated key is printed); prefer the "
                   "environment: a command-line key shows in the process list")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (0.0.0.0 for the network)")
    p.add_argument("--port", type=int, default=8000, help="port (0 picks a free one)")
    p.add_argument("--log-level", default="warning", help="uvicorn log level")
    p.set_defaults(func=serve)

    p = sub.add_parser("ingest", help="store folders of OpenFIBSEM TIFFs as runs",
                       description="Store each folder of OpenFIBSEM TIFFs (FibsemImage.save) as "
                       "one run in the catalog of --data-dir: a stream per beam, the image "
                       "metadata in the events, the files copied under <data-dir>/images.")
    p.add_argument("folders", nargs="+", metavar="DIR", help="folder of TIFF files")
    p.add_argument("--data-dir", default=None,
                   help="catalog data directory (default $FIBSEM_OPHYD_DATA_DIR or "
                   "./fibsem_data)")
    p.add_argument("--recursive", action="store_true",
                   help="one run per folder below DIR that holds TIFF files")
    p.add_argument("--md", action="append", default=[], metavar="KEY=VALUE",
                   help="start metadata for the runs, e.g. --md sample=grid-3 (repeatable)")
    p.set_defaults(func=ingest)

    p = sub.add_parser(
        "gui", help="open the microscope viewer (napari): in-process on the simulator, or a "
        "queue server + Tiled server",
        description="Open the microscope viewer. Without --queue-server: a session in this "
        "process (as `demo`). With --queue-server: plans go to that bluesky queue server and "
        "frames are read from the Tiled server (--tiled-uri, --api-key).")
    p.add_argument("--data-dir", default="fibsem_data", help="storage folder (in-process)")
    p.add_argument("--config", default=None, help="microscope configuration YAML")
    p.add_argument("--seed", type=int, default=0, help="simulator seed")
    p.add_argument("--serve", action="store_true",
                   help="serve the embedded catalog from a child process (in-process mode)")
    p.add_argument("--queue-server", default=None, metavar="ZMQ_ADDRESS",
                   help="queue server control address, e.g. tcp://localhost:60615")
    p.add_argument("--tiled-uri", default=None, help="Tiled server the queue server writes to")
    p.add_argument("--api-key", default=None,
                   help="Tiled API key (default $FIBSEM_OPHYD_TILED_API_KEY)")
    p.set_defaults(func=gui)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
