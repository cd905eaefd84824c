"""Folders of OpenFIBSEM TIFFs (``FibsemImage.save``) as runs in the catalog.

One run per folder: a stream per beam ("electron", "ion"; a beam imaged at several
resolutions gets one stream per resolution, "ion_768x512"), frames in acquisition order, each
event carrying what the image metadata says (pixel size, field width, dwell, current, voltage,
working distance, stage position, file name), the frames themselves as the TIFF series our
detectors write (copied, byte for byte, under the data directory's ``images/``). The start
document names the folder, the OpenFIBSEM experiment and user, the beams and the files, so
the runs are found with the same searches as ours (``search_runs(catalog, experiment=...)``).
Documents go through :class:`~fibsem_ophyd.storage.CatalogWriter`, as a RunEngine's do.
"""

from __future__ import annotations

import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from event_model import compose_run, compose_stream_resource

from .storage import (
    backup_dir,
    get_beam,
    get_beam_settings,
    get_hfw,
    get_pixel_size,
    get_stage_position,
    get_timestamp,
    images_dir,
    read_tiff,
)

__all__ = ["ingest_folder", "INGEST_PLAN_NAME"]

#: ``start.plan_name`` of an ingested folder
INGEST_PLAN_NAME = "ingest_openfibsem"
#: file name template of the copied frames (the detectors' TIFF series)
_TEMPLATE = "img_{:06d}.tif"
_TIFF_MIMETYPE = "multipart/related;type=image/tiff"
_SUFFIXES = (".tif", ".tiff")
#: per-frame readings: (key suffix, units, value from metadata)
_READINGS = (
    ("pixel_size", "m", lambda md, b: get_pixel_size(md)),
    ("hfw", "m", lambda md, b: get_hfw(md)),
    ("dwell_time", "s", lambda md, b: md["image"].get("dwell_time")),
    ("current", "A", lambda md, b: (b or {}).get("current")),
    ("voltage", "V", lambda md, b: (b or {}).get("voltage")),
    ("working_distance", "m", lambda md, b: (b or {}).get("working_distance")),
)


def _frames(folder: Path) -> list[tuple[Path, Any]]:
    """Every TIFF of ``folder`` (not its subfolders) with its image; refuse one without
    OpenFIBSEM metadata, naming it, before anything is written."""
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in _SUFFIXES and p.is_file())
    if not files:
        raise ValueError(f"no TIFF files in {folder}")
    out = []
    for path in files:
        try:
            img = read_tiff(path)
        except Exception as exc:  # tifffile raises many kinds for a broken file
            raise ValueError(f"{path}: not a readable TIFF ({exc})") from exc
        md = img.metadata
        if not isinstance(md, Mapping) or "image" not in md or "microscope_state" not in md:
            raise ValueError(f"{path}: no OpenFIBSEM image metadata (ImageDescription JSON "
                             "with 'image' and 'microscope_state')")
        try:
            get_beam(md), get_timestamp(md), get_pixel_size(md)
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"{path}: incomplete OpenFIBSEM metadata: {exc!r}") from exc
        out.append((path, img))
    return out


def _number(v) -> float:
    return float("nan") if v is None else float(v)


def ingest_folder(folder: str | Path, data_dir: str | Path, catalog=None,
                  md: Mapping[str, Any] | None = None) -> str:
    """Store a folder of OpenFIBSEM TIFFs as one run; return its uid.

    Parameters
    ----------
    folder : str or Path
        The folder (its TIFF files; subfolders are not read).
    data_dir : str or Path
        The data directory of the catalog: frames are copied under its ``images/``, the
        documents backed up under its backup directory.
    catalog : tiled container, optional
        The writable catalog (default: :func:`fibsem_ophyd.storage.open_catalog` of
        ``data_dir``).
    md : dict, optional
        Extra start metadata (``sample``, ``lamella``, ...).

    Returns
    -------
    str
        The run uid.
    """
    from .storage import CatalogWriter, open_catalog

    folder, data_dir = Path(folder), Path(data_dir)
    if not folder.is_dir():
        raise ValueError(f"not a folder: {folder}")
    frames = sorted(_frames(folder), key=lambda f: get_timestamp(f[1].metadata))
    streams: dict[str, list[tuple[Path, Any]]] = {}
    shapes = {}
    for _, img in frames:
        beam = get_beam(img.metadata)
        shapes.setdefault(beam, set()).add(img.data.shape)
    for path, img in frames:
        beam = get_beam(img.metadata)
        h, w = img.data.shape
        name = beam if len(shapes[beam]) == 1 else f"{beam}_{w}x{h}"
        streams.setdefault(name, []).append((path, img))

    first = frames[0][1].metadata
    start_md = {
        "plan_name": INGEST_PLAN_NAME,
        "source": "OpenFIBSEM",
        "folder": str(folder.resolve()),
        "files": [p.name for p, _ in frames],
        "beams": sorted({get_beam(i.metadata) for _, i in frames}),
        "experiment": ((first.get("experiment") or {}).get("name")),
        "user": ((first.get("user") or {}).get("name")),
        "openfibsem_version": first.get("version"),
        "num_images": len(frames),
        "hints": {},
        **(md or {}),
    }
    bundle = compose_run(metadata=start_md, time=get_timestamp(first))
    docs: list[tuple[str, dict]] = [("start", bundle.start_doc)]
    run_dir = images_dir(data_dir) / f"ingest_{bundle.start_doc['uid'][:12]}"
    for stream, items in streams.items():
        img0 = items[0][1]
        beam = get_beam(img0.metadata)
        key = f"{stream}_image"
        data_keys = {key: {"source": f"file:{beam}:image", "dtype": "array",
                           "shape": list(img0.data.shape),
                           "dtype_numpy": np.dtype(img0.data.dtype).str, "external": "STREAM:"}}
        for suffix, units, _ in _READINGS:
            data_keys[f"{stream}_{suffix}"] = {"source": f"file:{beam}:{suffix}",
                                               "dtype": "number", "shape": [], "units": units,
                                               "dtype_numpy": "<f8"}
        for axis in ("x", "y", "z", "r", "t"):
            data_keys[f"stage_{axis}"] = {"source": f"file:stage:{axis}", "dtype": "number",
                                          "shape": [], "dtype_numpy": "<f8",
                                          "units": "deg" if axis in "rt" else "m"}
        data_keys[f"{stream}_file"] = {"source": "file:name", "dtype": "string", "shape": []}
        desc = bundle.compose_descriptor(name=stream, data_keys=data_keys,
                                         hints={stream: {"fields": [f"{stream}_hfw"]}})
        docs.append(("descriptor", desc.descriptor_doc))
        target = run_dir / stream
        target.mkdir(parents=True, exist_ok=True)
        for i, (path, _) in enumerate(items):
            shutil.copy2(path, target / _TEMPLATE.format(i))  # the bytes, metadata and all
        res = compose_stream_resource(
            mimetype=_TIFF_MIMETYPE, uri=f"file://localhost{target.resolve().as_posix()}/",
            data_key=key, parameters={"template": _TEMPLATE,
                                      "chunk_shape": [1, *img0.data.shape]},
            start=bundle.start_doc, validate=False)
        docs.append(("stream_resource", res.stream_resource_doc))
        docs.append(("stream_datum", res.compose_stream_datum(
            indices={"start": 0, "stop": len(items)}, descriptor=desc.descriptor_doc,
            validate=False)))
        for i, (path, img) in enumerate(items):
            m = img.metadata
            beam_settings = get_beam_settings(m)
            t = get_timestamp(m)
            data = {f"{stream}_{s}": _number(f(m, beam_settings)) for s, _, f in _READINGS}
            data.update({f"stage_{k}": _number(v) for k, v in get_stage_position(m).items()})
            data[f"{stream}_file"] = path.name
            docs.append(("event", desc.compose_event(
                data=data, timestamps=dict.fromkeys(data, t), time=t, seq_num=i + 1)))
    docs.append(("stop", bundle.compose_stop(time=get_timestamp(frames[-1][1].metadata))))

    client = open_catalog(data_dir) if catalog is None else catalog
    writer = CatalogWriter(client, backup_dir(data_dir), close_streams=False)
    try:
        for name, doc in docs:
            writer(name, doc)
        errors = writer.wait()
    finally:
        writer.close()
    if errors:
        raise RuntimeError(f"ingesting {folder}: the catalog refused the run: {errors[0]}")
    return bundle.start_doc["uid"]
