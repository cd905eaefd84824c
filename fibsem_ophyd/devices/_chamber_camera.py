"""The chamber camera: a detector whose frames are the microscope's view inside the chamber.

It behaves like the beam detectors for storage: ``stage()`` opens a TIFF series, ``trigger()``
asks the backend for a frame (``acquire_chamber_image``) and writes it as one TIFF with the
microscope state (stage, beams, detectors: OpenFIBSEM's MicroscopeState layout) in its
ImageDescription, and ``collect_asset_docs()`` announces it with StreamResource/StreamDatum
documents, so ``RE(acquire_image(microscope.chamber_camera))`` stores it in Tiled. A backend
without a chamber camera makes ``trigger()`` fail with ``MissingSubsystemError``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device
from ophyd.status import DeviceStatus

from ..backend import check_subsystem
from ..storage import TiffSeries
from ._detector import FrameSignal
from ._signals import background_status, find_backend

__all__ = ["ChamberCamera"]


class ChamberCamera(Device):
    """The chamber camera (``beam`` is ``"chamber"``). Readings per frame:
    ``<name>_frame_number`` and ``<name>_acquisition_time`` (s, the microscope's clock)."""

    last_frame = Cpt(FrameSignal, value=None, kind="omitted")
    beam = "chamber"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._series = TiffSeries(self.name, self.image_key)
        self._readings: dict = {}
        self._last_path: Path | None = None

    @property
    def image_key(self) -> str:
        return f"{self.name}_image"

    def stage(self):
        self._series.open(self.root.images_dir)
        return super().stage()

    def unstage(self):
        self._series.close()
        return super().unstage()

    def trigger(self) -> DeviceStatus:
        if not self._series.is_open:
            raise RuntimeError(f"{self.name} must be staged before it is triggered: use the "
                               "acquire_image plan")
        backend = find_backend(self)
        check_subsystem(backend, "chamber_camera")  # refuse before anything is asked of it
        return background_status(self, lambda: self._grab(backend), "acquire")

    def _grab(self, backend) -> None:
        frame = np.asarray(backend.acquire_chamber_image())
        if frame.ndim != 2:
            raise RuntimeError(f"{self.name}: backend returned a {frame.ndim}-D frame")
        self._series.check_shape(frame.shape)
        root = self.root
        state = root.microscope_state()
        md = {"chamber_camera": {"height_width": list(frame.shape),
                                 "timestamp": state["timestamp"]},
              "microscope_state": root.microscope_state_metadata(state),
              **root.system_metadata()}
        index = self._series.count
        self._last_path = self._series.write(index, frame, md)
        self._series.add(frame.shape)  # counted once its file is on disk
        self._readings = {"frame_number": index, "acquisition_time": float(state["timestamp"])}
        self.last_frame.put(frame)

    @property
    def last_file(self) -> Path | None:
        """Path of the last TIFF written."""
        return self._last_path

    def read(self):
        out = super().read()
        ts = time.time()
        for k, v in self._readings.items():
            out[f"{self.name}_{k}"] = {"value": v, "timestamp": ts}
        return out

    def describe(self):
        out = super().describe()
        h, w = self._series.shape or (0, 0)
        if self._series.shape is None:
            try:  # the frame size is the camera's; ask once before the first frame
                h, w = np.shape(find_backend(self).acquire_chamber_image())
            except Exception:  # noqa: BLE001 -- trigger() reports a missing camera
                pass
        out[self.image_key] = {"source": "backend:chamber:image", "dtype": "array",
                               "shape": [int(h), int(w)], "dtype_numpy": "|u1",
                               "external": "STREAM:"}
        out[f"{self.name}_frame_number"] = {"source": "backend:chamber:frame_number",
                                            "dtype": "integer", "shape": [],
                                            "dtype_numpy": "<i8"}
        out[f"{self.name}_acquisition_time"] = {"source": "backend:chamber:time",
                                                "dtype": "number", "shape": [],
                                                "dtype_numpy": "<f8", "units": "s"}
        return out

    def get_index(self) -> int:
        return self._series.count

    def collect_asset_docs(self, index: int | None = None):
        yield from self._series.asset_docs(index)
