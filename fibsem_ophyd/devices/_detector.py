"""Imaging detectors: one TIFF per frame, announced with StreamResource/StreamDatum documents.

Data flow of one frame: ``stage()`` opens a TIFF series (:class:`~fibsem_ophyd.storage.TiffSeries`)
in a new directory under the microscope's ``images_dir``; ``trigger()`` asks the backend for
a frame, writes it as one TIFF whose ImageDescription holds the full metadata JSON
(OpenFIBSEM layout, built by :meth:`ImagingDetector.frame_metadata`), and records the
per-frame readings; ``collect_asset_docs()`` yields the series' StreamResource once and a
StreamDatum per frame; ``read()`` returns the per-frame readings (never the image itself).
``close()`` ends the detector's acquisition thread (the session's ``close()`` calls it).

Suspension (a vacuum loss or a beam trip, see :mod:`fibsem_ophyd.devices._faults`): the
RunEngine rewinds to the plan's last checkpoint and takes again what follows. ``pause()``
therefore forgets the frames that no saved event holds (their TIFFs are deleted, the next
frame takes their number) and a frame that fails while such a fault is present is not
reported as failed: the suspension takes it again. Which frames a saved event holds is told
by the documents (:meth:`ImagingDetector.note_document`, subscribed by ``setup_session``).
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.status import DeviceStatus

from ..storage import TIFF_TEMPLATE, TiffSeries, image_metadata, image_settings
from ._interlock import check_no_milling
from ._limits import SettingLimits
from ._reference import ReferenceSignal
from ._signals import BackendSignal, SettingSignal, find_backend

__all__ = ["ImagingDetector", "TIFF_TEMPLATE"]

_log = logging.getLogger(__name__)

# Per-frame readings: (suffix, units, dtype)
_READINGS = (
    ("pixel_size", "m", "number"),
    ("hfw", "m", "number"),
    ("dwell_time", "s", "number"),
    ("current", "A", "number"),
    ("voltage", "V", "number"),
    ("working_distance", "m", "number"),
    ("mean_intensity", "", "number"),
    ("frame_number", "", "integer"),
    ("acquisition_time", "s", "number"),
)


class FrameSignal(Signal):
    """The last frame of a detector as a value (uint8 ndarray; ``None`` before the first)."""

    def describe(self):
        value = self._readback
        shape = list(np.shape(value)) if value is not None else [0, 0]
        return {self.name: {"source": f"memory:{self.name}", "dtype": "array", "shape": shape,
                            "dtype_numpy": "|u1"}}


class ImagingDetector(Device):
    """Imaging detector of one beam (``beam`` is ``"electron"`` or ``"ion"``).

    Detector settings (on the microscope): ``detector_type``, ``detector_mode``,
    ``brightness`` and ``contrast`` (0..1). Image settings (applied to the beam for each
    frame, as OpenFIBSEM's ``ImageSettings``): ``resolution`` [w, h] px, ``dwell_time`` s,
    ``hfw`` m, ``reduced_area`` (left, top, width, height in 0..1), ``line_integration``,
    ``frame_integration``, ``autocontrast``.
    """

    detector_type = Cpt(BackendSignal, key="detector_type", vtype="str", kind="config")
    detector_mode = Cpt(BackendSignal, key="detector_mode", vtype="str", kind="config")
    brightness = Cpt(BackendSignal, key="brightness", limits=(0.0, 1.0), kind="config")
    contrast = Cpt(BackendSignal, key="contrast", limits=(0.0, 1.0), kind="config")

    resolution = Cpt(SettingSignal, vtype="intpair", length=2, units="px", limits=(1, 16384),
                     value=[1536, 1024], kind="config")
    dwell_time = Cpt(SettingSignal, units="s", limits_key="dwell_time", value=1e-6,
                     kind="config")
    hfw = Cpt(SettingSignal, units="m", limits_key="hfw", value=150e-6, kind="config")
    reduced_area = Cpt(SettingSignal, vtype="area", value=None, kind="config")
    line_integration = Cpt(SettingSignal, vtype="int", limits=(1, 255), value=1, kind="config")
    frame_integration = Cpt(SettingSignal, vtype="int", limits=(1, 255), value=1, kind="config")
    autocontrast = Cpt(SettingSignal, vtype="bool", value=False, kind="config")
    #: what each setting accepts, read with ``bps.rd`` to validate before writing
    limits = Cpt(SettingLimits, kind="omitted")
    #: the last frame (uint8 ndarray, ``None`` before the first), for plans that need the
    #: pixels (alignment): ``yield from bps.rd(det.last_frame)`` after a trigger. Never part
    #: of ``read()`` (the stored image is the TIFF announced by StreamDatum).
    last_frame = Cpt(FrameSignal, value=None, kind="omitted")
    #: the alignment reference (2-D array; ``None`` until set): ``bps.mv(det.reference, x)``
    #: with an array or the uid of a stored run (its last frame of this detector); filled by
    #: the ``acquire_reference`` plan and used by the alignment plans when they get none.
    reference = Cpt(ReferenceSignal, value=None, kind="omitted")

    def __init__(self, *args, beam: str, setting_limits=None, **kwargs):
        self.beam = beam
        self.setting_limits = dict(setting_limits or {})
        super().__init__(*args, **kwargs)
        self._series = TiffSeries(self.name, self.image_key)
        self._closed = False
        self._readings: dict = {}
        self._last_path: Path | None = None
        self._pending_writes: list[threading.Event] = []
        self._write_error: Exception | None = None
        # Frames take seconds on hardware: acquire off the RunEngine's thread, on one
        # long-lived worker (starting a thread per trigger cost ~2 ms of the RunEngine's
        # time per frame on a busy 2-core machine). One worker also keeps frames in order.
        self._worker = ThreadPoolExecutor(max_workers=1,
                                          thread_name_prefix=f"{self.name}-acquire")
        #: frames held by emitted events, if told (``_noted``; see note_document)
        self._noted = False
        self._committed = 0
        self._resource_emitted = False
        self._suspended = threading.Event()

    # -- image settings ---------------------------------------------------------------------
    @property
    def image_key(self) -> str:
        return f"{self.name}_image"

    def image_settings(self) -> dict:
        """The image settings applied to the next frame (units as in the class docstring)."""
        area = self.reduced_area._readback
        return {
            "resolution": list(self.resolution.get()),
            "dwell_time": float(self.dwell_time.get()),
            "hfw": float(self.hfw.get()),
            "reduced_area": list(area) if area is not None else None,
            "line_integration": int(self.line_integration.get()),
            "frame_integration": int(self.frame_integration.get()),
            "autocontrast": bool(self.autocontrast.get()),
        }

    def _expected_shape(self) -> tuple[int, int]:
        if self._series.shape is not None:
            return self._series.shape
        w, h = self.resolution.get()
        area = self.reduced_area._readback
        if area is not None:
            left, top, width, height = area
            return max(1, int(round(height * h))), max(1, int(round(width * w)))
        return int(h), int(w)

    # -- staging ----------------------------------------------------------------------------
    def stage(self):
        self._series.open(self.root.images_dir)
        self._committed = 0
        self._resource_emitted = False
        return super().stage()

    # -- suspension -------------------------------------------------------------------------
    def note_document(self, name: str, doc: dict) -> None:
        """Called with every document the RunEngine emits: a StreamResource or StreamDatum
        of this detector's series went out in a saved event, so those frames are kept."""
        self._noted = True
        uid = self._series.resource_uid
        if uid is None:
            return
        if name == "stream_resource" and doc.get("uid") == uid:
            self._resource_emitted = True
        elif name == "stream_datum" and doc.get("stream_resource") == uid:
            self._committed = int(doc["indices"]["stop"])

    def pause(self) -> None:
        """The RunEngine suspends or pauses and will take again what followed its last
        checkpoint: wait for the frame in flight, then forget the frames no emitted event
        holds (or, if no documents are noted, the frames not yet read)."""
        self._suspended.set()
        if not self._closed:
            self._worker.submit(lambda: None).result()  # the frame in flight is done
        self._wait_for_writes()
        if not self._series.is_open:
            return
        keep = self._committed if self._noted else self._series.announced
        keep = min(keep, self._series.count)
        if keep < self._series.count:
            _log.info("%s: suspended; frames %d..%d are taken again on resume", self.name,
                      keep, self._series.count - 1)
        self._series.rewind(keep, resource_emitted=self._resource_emitted or not self._noted)
        super().pause()

    def resume(self) -> None:
        self._suspended.clear()
        super().resume()

    def unstage(self):
        try:
            self._wait_for_writes()
        finally:
            self._series.close()
        return super().unstage()

    def close(self) -> None:
        """Stop the acquisition thread once the frames in flight are written. Idempotent;
        a closed detector refuses to trigger."""
        self._closed = True
        self._worker.shutdown(wait=True)

    # -- acquisition ------------------------------------------------------------------------
    def trigger(self):
        if self._closed:
            raise RuntimeError(f"{self.name} is closed (its session was closed)")
        if self.beam == "ion":  # an ion frame scans the field at whatever current it is at
            check_no_milling(self, f"an ion image ({self.name})")
        if not self._series.is_open:
            raise RuntimeError(
                f"{self.name} must be staged before it is triggered: use the acquire_image plan "
                "or wrap your plan in bluesky.preprocessors.stage_decorator"
            )
        self._suspended.clear()  # the RunEngine is taking frames: not (or no longer) suspended
        settings = self.image_settings()
        status = DeviceStatus(self)
        written = threading.Event()
        self._pending_writes.append(written)

        def acquire():
            try:
                frame, index, state, pixel_size = self._grab(settings)
            except Exception as exc:
                written.set()
                if self._held_by_suspension(exc):
                    return  # the RunEngine suspended: it triggers this frame again
                status.set_exception(exc)
                return
            # The frame and its readings exist: the RunEngine may go on (read, save, emit)
            # while this thread writes the TIFF. The StreamDatum that announces the file is
            # only yielded once it is on disk (collect_asset_docs waits for it).
            status.set_finished()
            try:
                self._write(frame, index, state, pixel_size, settings)
            except Exception as exc:
                self._write_error = exc
            finally:
                written.set()

        self._worker.submit(acquire)
        return status

    def _held_by_suspension(self, exc: Exception) -> bool:
        """A frame failed: if a fault a suspender waits out is present (vacuum loss, beam
        trip), wait up to the watch's grace time for the suspension (``pause()``) and return
        True if it came. Reporting the failure first would end the run."""
        watch = getattr(self.root, "fault_watch", None)
        if watch is None or not watch.fault_present():
            return False
        if self._suspended.wait(watch.grace):
            _log.info("%s: frame failed during a suspension (%s); taken again on resume",
                      self.name, exc)
            return True
        return False

    def _grab(self, settings: dict):
        backend = find_backend(self)
        frame = np.asarray(backend.acquire_image(self.beam, settings))
        if frame.ndim != 2:
            raise RuntimeError(f"{self.name}: backend returned a {frame.ndim}-D frame")
        self._series.check_shape(frame.shape)
        acq_time = backend.time()
        state = self.root.microscope_state()
        beam_state = state["electron_beam" if self.beam == "electron" else "ion_beam"]
        pixel_size = settings["hfw"] / settings["resolution"][0]
        full = 255.0 if frame.dtype == np.uint8 else 65535.0
        # uint32 accumulation: exact for up to 16.8 M pixels of uint8, ~3x faster than mean()
        total = np.add.reduce(frame.ravel(), dtype=np.uint64 if frame.size > 2**24 else np.uint32)
        index = self._series.add(frame.shape)
        self._readings = {
            "pixel_size": pixel_size,
            "hfw": pixel_size * frame.shape[1] if settings["reduced_area"] else settings["hfw"],
            "dwell_time": settings["dwell_time"],
            "current": float(beam_state["current"]),
            "voltage": float(beam_state["voltage"]),
            "working_distance": float(beam_state["working_distance"]),
            "mean_intensity": float(total) / frame.size / full,
            "frame_number": index,
            "acquisition_time": float(acq_time),
        }
        self.last_frame.put(frame)
        return frame, index, state, pixel_size

    def _write(self, frame, index: int, state: dict, pixel_size: float, settings: dict) -> None:
        md = self.frame_metadata({**settings, "filename": TIFF_TEMPLATE.format(index)},
                                 pixel_size, state)
        self._last_path = self._series.write(index, frame, md)

    def frame_metadata(self, settings: dict, pixel_size: float,
                       state: dict | None = None) -> dict:
        """The metadata stored with a frame of this detector (OpenFIBSEM layout).

        Parameters
        ----------
        settings : dict
            The frame's image settings (:meth:`image_settings`, plus ``"filename"``).
        pixel_size : float
            Pixel size in metres.
        state : dict, optional
            The microscope state at acquisition (``microscope_state()``); read now if
            ``None``.
        """
        root = self.root
        return image_metadata(image_settings(self.beam, settings),
                              root.microscope_state_metadata(state), pixel_size,
                              system=root.system_metadata())

    def _wait_for_writes(self, timeout: float = 60.0) -> None:
        while self._pending_writes:
            ev = self._pending_writes[0]
            if not ev.wait(timeout):
                raise TimeoutError(f"{self.name}: a TIFF write took longer than {timeout} s")
            self._pending_writes.pop(0)
        if self._write_error is not None:
            exc, self._write_error = self._write_error, None
            raise RuntimeError(f"{self.name}: writing a frame failed: {exc}") from exc

    @property
    def last_file(self) -> Path | None:
        """Path of the last TIFF written."""
        self._wait_for_writes()
        return self._last_path

    # -- Readable ---------------------------------------------------------------------------
    def read(self):
        out = super().read()
        ts = time.time()
        for suffix, _, _ in _READINGS:
            if suffix in self._readings:
                out[f"{self.name}_{suffix}"] = {"value": self._readings[suffix], "timestamp": ts}
        return out

    def describe(self):
        out = super().describe()
        h, w = self._expected_shape()
        out[self.image_key] = {
            "source": f"backend:{self.beam}:image",
            "dtype": "array",
            "shape": [h, w],
            "dtype_numpy": "|u1",
            "external": "STREAM:",
        }
        for suffix, units, dtype in _READINGS:
            desc = {"source": f"backend:{self.beam}:{suffix}", "dtype": dtype, "shape": []}
            desc["dtype_numpy"] = "<i8" if dtype == "integer" else "<f8"
            if units:
                desc["units"] = units
            out[f"{self.name}_{suffix}"] = desc
        return out

    # -- WritesStreamAssets -----------------------------------------------------------------
    def get_index(self) -> int:
        return self._series.count

    def collect_asset_docs(self, index: int | None = None):
        stop = self._series.count if index is None else min(index, self._series.count)
        if stop <= self._series.announced:
            return
        self._wait_for_writes()  # announce only files that are on disk
        yield from self._series.asset_docs(stop)

