"""A computed image (e.g. a stitched overview mosaic) stored in a run like a detector frame.

Plans compute images they cannot write themselves (a plan speaks only bluesky messages), so
they hand the pixels to this device: ``yield from bps.mv(dev.image, array, dev.pixel_size,
p)`` then ``yield from bps.trigger_and_read([dev], name=...)``. ``trigger()`` writes one TIFF
(full metadata JSON, OpenFIBSEM layout: the image settings of the detector it was computed
from, the microscope state at that moment, the given pixel size) and the run gets the usual
StreamResource/StreamDatum, so ``load_images(run, stream)`` reads it back with its metadata.
"""

from __future__ import annotations

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device

from ..storage import TIFF_TEMPLATE, TiffSeries
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
        self._series = TiffSeries(self.name, self.image_key)

    @property
    def image_key(self) -> str:
        return f"{self.name}_image"

    def stage(self):
        self._series.open(self._detector.root.images_dir)
        return super().stage()

    def unstage(self):
        self._series.close()
        return super().unstage()

    def trigger(self):
        if not self._series.is_open:
            raise RuntimeError(f"{self.name} must be staged before it is triggered")
        data = self.image.get()
        if data is None:
            raise RuntimeError(f"{self.name}: no image was set before the trigger")
        pixel = float(self.pixel_size.get())
        if not np.isfinite(pixel) or pixel <= 0:
            raise ValueError(f"{self.name}: pixel_size must be set to a positive value (m)")
        self._series.check_shape(data.shape)
        det = self._detector
        index = self._series.count
        h, w = data.shape
        settings = {**det.image_settings(), "resolution": [w, h], "hfw": pixel * w,
                    "reduced_area": None, "filename": TIFF_TEMPLATE.format(index)}
        self._series.write(index, data, det.frame_metadata(settings, pixel))
        self._series.add(data.shape)  # counted once its file is on disk
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
        return self._series.count

    def collect_asset_docs(self, index: int | None = None):
        yield from self._series.asset_docs(index)


def make_stored_image(name: str, detector) -> StoredImage:
    """A :class:`StoredImage` named ``name`` whose files and metadata follow ``detector``."""
    return StoredImage(name=name, detector=detector)
