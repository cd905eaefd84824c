"""A minimal TIFF-writing ophyd detector used by the storage tests and benchmarks.

Not part of the package: it stands in for the real detector (written elsewhere) and
follows the same contract: ``<images>/<uuid>/img_{:06d}.tif`` with the full metadata
JSON, one ``stream_resource`` per staging, one ``stream_datum`` per frame, the image key
``"external": "STREAM:"`` in ``describe()`` and absent from ``read()``.
"""

from __future__ import annotations

import uuid
from collections import deque
from pathlib import Path

import numpy as np
from event_model import compose_stream_resource
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.status import StatusBase

from fibsem_ophyd.storage import metadata as md
from fibsem_ophyd.storage.tiff import write_tiff

TEMPLATE = "img_{:06d}.tif"
CONFIG = {
    "info": {"name": "test-scope", "manufacturer": "Simulator", "ip_address": "localhost"},
    "stage": {"rotation_reference": 0, "rotation_180": 180, "shuttle_pre_tilt": 35},
    "electron": {"column_tilt": 0},
    "ion": {"column_tilt": 52},
}


def expected_frame(seed: int, index: int, shape: tuple[int, int]) -> np.ndarray:
    """The frame the detector writes for ``index`` (deterministic, distinct per index)."""
    base = np.random.default_rng(seed).integers(0, 256, size=shape, dtype=np.uint8)
    return base + np.uint8(index % 256)


class TiffDetector(Device):
    """Writes one TIFF per trigger and emits StreamResource/StreamDatum documents.

    Parameters
    ----------
    images_dir : path
        Directory under which each staging creates ``<uuid>/``.
    shape : (int, int)
        Frame (height, width) in pixels.
    beam : str
        ``"electron"`` or ``"ion"``.
    seed : int
        Seed of the frame content.
    """

    hfw = Cpt(Signal, value=1.5e-4, kind="normal")
    stage_x = Cpt(Signal, value=1.0e-3, kind="normal")
    stage_t = Cpt(Signal, value=35.0, kind="normal")
    image_key = "sem_image"

    def __init__(self, images_dir, *, shape=(64, 96), beam="electron", seed=0, name="det",
                 **kwargs):
        super().__init__(name=name, **kwargs)
        self.images_dir = Path(images_dir)
        self.shape = tuple(shape)
        self.beam = beam
        self.seed = seed
        self._base = expected_frame(seed, 0, self.shape)
        self._index = 0
        self._dir: Path | None = None
        self._compose_datum = None
        self._asset_docs: deque = deque()
        self.files: list[Path] = []
        self.system = md.system_info(CONFIG)

    # --- staging --------------------------------------------------------------------
    def stage(self):
        self._dir = self.images_dir / str(uuid.uuid4())
        self._dir.mkdir(parents=True)
        self._index = 0
        h, w = self.shape
        bundle = compose_stream_resource(
            mimetype="multipart/related;type=image/tiff",
            uri=f"file://localhost/{self._dir.as_posix().lstrip('/')}/",
            data_key=self.image_key,
            parameters={"template": TEMPLATE, "chunk_shape": [1, h, w]},
        )
        self._asset_docs.append(("stream_resource", bundle.stream_resource_doc))
        self._compose_datum = bundle.compose_stream_datum
        return super().stage()

    def unstage(self):
        self._compose_datum = None
        return super().unstage()

    # --- acquisition ----------------------------------------------------------------
    def pixel_size(self) -> float:
        return self.hfw.get() / self.shape[1]

    def metadata_for(self, index: int) -> dict:
        h, w = self.shape
        beam_settings = {
            "voltage": 2000.0, "current": 5e-11, "hfw": self.hfw.get(),
            "working_distance": 4e-3, "dwell_time": 1e-6, "resolution": [w, h],
            "scan_rotation": 0.0, "shift": [0.0, 0.0], "stigmation": [0.0, 0.0],
        }
        state = md.microscope_state(
            stage={"x": self.stage_x.get(), "y": 0.0, "z": 4e-3, "r": 0.0,
                   "t": self.stage_t.get()},
            beams={self.beam: beam_settings},
            detectors={self.beam: {"detector_type": "ETD",
                                   "detector_mode": "SecondaryElectrons",
                                   "brightness": 0.5, "contrast": 0.5}},
            timestamp=1.7e9 + index,
        )
        settings = md.image_settings(self.beam, {
            "resolution": [w, h], "dwell_time": 1e-6, "hfw": self.hfw.get(),
            "path": str(self._dir), "filename": Path(TEMPLATE.format(index)).stem,
        })
        return md.image_metadata(settings, state, self.pixel_size(), system=self.system)

    def trigger(self):
        if self._compose_datum is None:
            raise RuntimeError(f"{self.name} is not staged")
        i = self._index
        frame = self._base + np.uint8(i % 256)
        path = self._dir / TEMPLATE.format(i)
        write_tiff(path, frame, self.metadata_for(i))
        self.files.append(path)
        self._asset_docs.append(
            ("stream_datum", self._compose_datum(indices={"start": i, "stop": i + 1}))
        )
        self._index += 1
        status = StatusBase()
        status.set_finished()
        return status

    def describe(self):
        out = super().describe()
        h, w = self.shape
        out[self.image_key] = {
            "source": f"file:{self.name}",
            "dtype": "array",
            "dtype_numpy": np.dtype(np.uint8).str,
            "shape": [1, h, w],
            "external": "STREAM:",
        }
        return out

    def read(self):
        return super().read()  # the image key is external and never in read()

    def collect_asset_docs(self, index=None):
        while self._asset_docs:
            yield self._asset_docs.popleft()

    def get_index(self) -> int:
        return self._index


class FailingAfter(Exception):
    """Raised by the failing test plan."""
