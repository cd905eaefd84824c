"""The detection data engine: stored detections as a training/evaluation set.

A detection run (its start document has ``detection``: features, checkpoint, supervised)
holds the frame (a detector stream or ``detection_image``), the class mask
(``detection_mask``), the model's keypoints (stream ``detection``: ``<Feature>_x``/``_y``
px) and, when supervised, the user's final keypoints (stream ``correction``). This module
reads them back as :class:`DetectionItem` and writes them in OpenFIBSEM's layout (``data.csv``
with ``filename, feature, px.x, px.y, pixelsize, corrected`` and one TIFF per image, masks in
``mask/``) for people who train with OpenFIBSEM's tools.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .reader import load_images
from .tiff import write_tiff

__all__ = ["DetectionItem", "detection_dataset", "export_detection_dataset", "read_detection"]


@dataclass
class DetectionItem:
    """One stored detection.

    Attributes
    ----------
    uid : str
        The run.
    image, mask : ndarray
        uint8 (H, W) frame and class mask.
    keypoints : dict
        The model's guesses, ``{feature: (x, y)}`` px (features it did not find left out).
    correction : dict
        The user's corrected positions ``{feature: (x, y)}`` px (only the corrected ones).
    pixelsize : float
        m per pixel.
    checkpoint : str
        The model file's name.
    beam : str
        "electron" or "ion": the beam whose frame it is.
    """

    uid: str
    image: np.ndarray
    mask: np.ndarray
    keypoints: dict = field(default_factory=dict)
    correction: dict = field(default_factory=dict)
    pixelsize: float = float("nan")
    checkpoint: str = ""
    metadata: dict = field(default_factory=dict)
    beam: str = ""

    @property
    def corrected(self) -> bool:
        return bool(self.correction)

    @property
    def filename(self) -> str:
        return self.uid

    def final_keypoints(self) -> dict:
        """The user's positions where corrected, else the model's."""
        return {**self.keypoints, **self.correction}


def _points(table, names) -> dict:
    out = {}
    for n in names:
        x = float(np.asarray(table[f"{table.prefix}{n}_x"])[-1])
        y = float(np.asarray(table[f"{table.prefix}{n}_y"])[-1])
        if math.isfinite(x) and math.isfinite(y):
            out[n] = (x, y)
    return out


class _Table:
    def __init__(self, ds, prefix):
        self.ds, self.prefix = ds, prefix

    def __getitem__(self, k):
        return self.ds[k].values


def _item(run) -> DetectionItem | None:
    start = run.metadata["start"]
    info = start.get("detection")
    if not info:
        return None
    names = list(info.get("features") or [])
    streams = set(run)
    if "detection" not in streams:
        return None           # the run failed before detecting
    det = run["detection"].read()
    keypoints = _points(_Table(det, "detection_"), names)
    (mask,) = load_images(run, "detection", key="detection_mask_image")[-1:]
    if "detection_image" in streams:
        frame = load_images(run, "detection_image")[-1]
    else:
        beam_streams = [s for s in ("electron", "ion") if s in streams]
        if not beam_streams:
            return None
        frame = load_images(run, beam_streams[0])[-1]
    correction = {}
    if "correction" in streams:
        corr = run["correction"].read()
        final = _points(_Table(corr, "correction_"), names)
        for n, xy in final.items():
            ok = int(np.asarray(corr[f"correction_{n}_correct"].values)[-1])
            if not ok:
                correction[n] = xy
    return DetectionItem(uid=start["uid"], image=np.asarray(frame.data),
                         mask=np.asarray(mask.data), keypoints=keypoints,
                         correction=correction, pixelsize=float(mask.pixel_size),
                         checkpoint=str(info.get("checkpoint", "")),
                         metadata={"time": start.get("time"), "features": names,
                                   "supervised": bool(info.get("supervised"))},
                         beam=str(mask.beam))


def read_detection(run) -> DetectionItem | None:
    """The detection stored in ``run`` (``None`` if it is not a detection run or failed
    before detecting). An open run (a supervised detection waiting for corrections) reads
    too: its correction is then empty."""
    return _item(run)


def detection_dataset(catalog, corrected: bool | None = None) -> list[DetectionItem]:
    """The stored detections of ``catalog`` (oldest first).

    Parameters
    ----------
    catalog : tiled container
        A catalog or a search result of one.
    corrected : bool, optional
        True: only detections the user corrected; False: only uncorrected ones; None: all.
    """
    if corrected not in (None, True, False):
        raise ValueError(f"corrected must be None, True or False, got {corrected!r}")
    from tiled.queries import KeyPresent

    runs = catalog.search(KeyPresent("start.detection"))
    out = []
    for uid in list(runs):
        item = _item(runs[uid])
        if item is None:
            continue
        if corrected is not None and item.corrected != corrected:
            continue
        out.append(item)
    out.sort(key=lambda it: it.metadata.get("time") or 0.0)
    return out


def export_detection_dataset(items, directory: str | os.PathLike) -> Path:
    """Write ``items`` in OpenFIBSEM's layout under ``directory``: ``<uid>.tif`` images,
    ``mask/<uid>.tif`` masks and ``data.csv`` (one row per feature: the final position,
    ``corrected`` True where the user moved it). Returns the CSV's path."""
    root = Path(directory)
    (root / "mask").mkdir(parents=True, exist_ok=True)
    path = root / "data.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["filename", "feature", "px.x", "px.y", "pixelsize", "corrected",
                    "checkpoint"])
        for it in items:
            write_tiff(root / f"{it.uid}.tif", it.image, None)
            write_tiff(root / "mask" / f"{it.uid}.tif", it.mask, None)
            for name, (x, y) in it.final_keypoints().items():
                w.writerow([it.uid, name, x, y, it.pixelsize, name in it.correction,
                            it.checkpoint])
    return path
