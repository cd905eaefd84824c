"""``fibsem-ophyd`` command line: ``demo`` runs the demo workflow on the simulator."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

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

    session = setup_session(config=args.config, data_dir=args.data_dir, seed=args.seed,
                            serve=args.serve)
    try:
        res = [int(v) for v in args.resolution.split("x")]
        result = session.RE(demo_workflow(session.microscope, hfw=args.hfw, resolution=res))
        uids = list(result.plan_result)
        print(f"Stored {len(uids)} runs in {session.data_dir}:")
        sheet = []
        for uid in uids:
            run = session.catalog[uid]
            step = run.metadata["start"].get("step")
            print(f"  {uid}  step={step}  exit_status={run.metadata['stop']['exit_status']}")
            for stream in ("electron", "ion"):
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="fibsem-ophyd", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="run the demo workflow on the simulator")
    p.add_argument("--data-dir", default="fibsem_data", help="storage folder")
    p.add_argument("--config", default=None, help="microscope configuration YAML")
    p.add_argument("--seed", type=int, default=0, help="simulator seed")
    p.add_argument("--hfw", type=float, default=150e-6, help="horizontal field width, m")
    p.add_argument("--resolution", default="1536x1024", help="WIDTHxHEIGHT pixels")
    p.add_argument("--serve", action="store_true",
                   help="serve the embedded catalog from a child process (faster acquisition)")
    p.set_defaults(func=demo)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
