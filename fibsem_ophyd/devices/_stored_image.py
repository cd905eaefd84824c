"""A computed image (e.g. a stitched overview mosaic) stored in a run like a detector frame.

Plans compute images they cannot write themselves (a plan speaks only bluesky messages), so
they hand the pixels to this device: ``yield from bps.mv(dev.image, array, dev.pixel_size,
p)`` then ``yield from bps.trigger_and_read([dev], name=...)``. ``trigger()`` writes one TIFF
(full metadata JSON, OpenFIBSEM layout: the image settings of the detector it was computed
from, the microscope state at that moment, the given pixel size) and the run gets the usual
StreamResource/StreamDatum, so ``load_images(run, stream)`` reads it back with its metadata.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device

from ..storage import image_metadata, image_settings, write_tiff
from ._detector import TIFF_TEMPLATE, tiff_series_docs
from ._recorder import RecordSignal
from ._signals import ImmediateSignal, finished_status

__all__ = ["StoredImage", "make_stored_image"]


class _ImageSignal(ImmediateSignal):
    """A 2-D grey-level image; floats are rounded and clipped to uint8 (0..255)."""

    def put(self, value, **kwargs):
        arr = np.asarray(value)
        if arr.ndim != 2 or arr.size == 0 or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(f"{self.name}: an image must be a non-empty 2-D numeric array, got "
                             f"shape {arr.shape} dtype {arr.dtype}")
        if arr.dtype not in (np.uint8, np.uint16):
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{self.name}: the image holds NaN or inf pixels")
            arr = np.clip(np.rint(arr), 0, 255).astype(np.uint8)
        super().put(np.ascontiguousarray(arr), **kwargs)


class StoredImage(Device):
    """Stores the image put in ``image`` (pixel size ``pixel_size`` m) as one TIFF per trigger.

    ``detector`` is the imaging detector the image was made with: its beam, image settings
    and microscope give the file's metadata and its ``images_dir`` the directory.
    """

    image = Cpt(_ImageSignal, value=None, kind="omitted")
    pixel_size = Cpt(RecordSignal, dtype="number", units="m", kind="omitted")

    def __init__(self, *args, detector, **kwargs):
        self._detector = detector
        super().__init__(*args, **kwargs)
        self._dir: Path | None = None
        self._index = 0
        self._emitted = 0
        self._bundle = None
        self._shape: tuple[int, int] | None = None

    @property
    def image_key(self) -> str:
        return f"{self.name}_image"

    def stage(self):
        root = self._detector.root
        self._dir = Path(root.images_dir) / f"{self.name}_{uuid.uuid4().hex[:12]}"
        self._dir.mkdir(parents=True, exist_ok=True)
        self._index = self._emitted = 0
        self._bundle = None
        self._shape = None
        return super().stage()

    def unstage(self):
        self._dir = None
        return super().unstage()

    def trigger(self):
        if self._dir is None:
            raise RuntimeError(f"{self.name} must be staged before it is triggered")
        data = self.image.get()
        if data is None:
            raise RuntimeError(f"{self.name}: no image was set before the trigger")
        pixel = float(self.pixel_size.get())
        if not np.isfinite(pixel) or pixel <= 0:
            raise ValueError(f"{self.name}: pixel_size must be set to a positive value (m)")
        if self._shape is None:
            self._shape = data.shape
        elif data.shape != self._shape:
            raise RuntimeError(f"{self.name}: image shape changed from {self._shape} to "
                               f"{data.shape} within one staging")
        det = self._detector
        root = det.root
        h, w = data.shape
        settings = {**det.image_settings(), "resolution": [w, h], "hfw": pixel * w,
                    "reduced_area": None, "filename": TIFF_TEMPLATE.format(self._index)}
        md = image_metadata(image_settings(det.beam, settings),
                            root.microscope_state_metadata(), pixel,
                            system=root.system_metadata())
        write_tiff(self._dir / TIFF_TEMPLATE.format(self._index), data, md)
        self._index += 1
        return finished_status(self)

    def describe(self):
        out = super().describe()
        value = self.image.get()
        shape = list(value.shape) if value is not None else [0, 0]
        dtype = value.dtype.str if value is not None else "|u1"
        out[self.image_key] = {"source": f"computed:{self.name}", "dtype": "array",
                               "shape": shape, "dtype_numpy": dtype, "external": "STREAM:"}
        return out

    # -- WritesStreamAssets -----------------------------------------------------------------
    def get_index(self) -> int:
        return self._index

    def collect_asset_docs(self, index: int | None = None):
        stop = self._index if index is None else min(index, self._index)
        if stop > self._emitted:
            yield from tiff_series_docs(self, self._dir, stop)


def make_stored_image(name: str, detector) -> StoredImage:
    """A :class:`StoredImage` named ``name`` whose files and metadata follow ``detector``."""
    return StoredImage(name=name, detector=detector)
