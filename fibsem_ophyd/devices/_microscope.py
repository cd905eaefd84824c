"""The top-level microscope device: stage, both beams, their detectors, the chamber, milling,
gas injection, sputter coating and the manipulator."""

from __future__ import annotations

from pathlib import Path

from ophyd import Component as Cpt
from ophyd import Device, Signal

from ..backend import STATE_BEAM_KEYS, MicroscopeBackend
from ..storage import read_state, state_metadata, system_info
from ._beam import Beam, Chamber
from ._chamber_camera import ChamberCamera
from ._detector import ImagingDetector
from ._faults import FaultWatch
from ._gis import GasInjection, SputterCoater
from ._lookup import CatalogLookup
from ._manipulator import Manipulator
from ._milling import Milling
from ._plan_records import PlanRecorders
from ._reference import BatchStateSignal
from ._stage import Stage

__all__ = ["FibsemMicroscope", "make_microscope", "STATE_BEAM_KEYS", "MicroscopeStateSignal"]


class MicroscopeStateSignal(Signal):
    """The whole microscope state in one read (read-only): ``bps.rd(microscope.state)``
    returns :meth:`FibsemMicroscope.microscope_state` (:func:`fibsem_ophyd.storage.read_state`
    of the backend's one-call ``state()``; m, s, A, V, deg)."""

    def get(self, **kwargs):
        return self.root.microscope_state()

    def put(self, value, **kwargs):
        raise ValueError(f"{self.name} is read-only")

    def describe(self):
        return {self.name: {"source": "backend:state", "dtype": "object", "shape": []}}

#: beam settings captured in a microscope state snapshot (OpenFIBSEM's BeamSettings)


class FibsemMicroscope(Device):
    """A dual-beam FIB-SEM. Build it with :func:`make_microscope` (it needs a backend).

    Children: ``stage``, ``electron_beam``, ``ion_beam``, ``sem``, ``fib``, ``chamber``,
    ``milling``, ``gis`` (gas injection), ``sputter_coater``, ``manipulator``,
    ``chamber_camera``. Subsystems the backend lacks (``backend.missing()``) stay as devices
    that refuse with ``MissingSubsystemError`` naming them.
    ``stage`` is the name microscopists use, but ophyd reserves it for the staging verb, so
    the stage is attached as an attribute rather than a component; it is callable, and
    ``microscope.stage()`` still stages the microscope as the bluesky interface requires.

    ``store`` is the :class:`CatalogLookup` that stored runs are read through (references
    by run uid, a batch's state); ``setup_session`` gives it one, it is ``None`` otherwise.
    """

    electron_beam = Cpt(Beam, beam="electron")
    ion_beam = Cpt(Beam, beam="ion")
    sem = Cpt(ImagingDetector, beam="electron")
    fib = Cpt(ImagingDetector, beam="ion")
    chamber = Cpt(Chamber)
    milling = Cpt(Milling)
    gis = Cpt(GasInjection)
    sputter_coater = Cpt(SputterCoater)
    manipulator = Cpt(Manipulator)
    chamber_camera = Cpt(ChamberCamera)
    #: the stored state of a lamella batch (see :class:`BatchStateSignal`)
    batch_state = Cpt(BatchStateSignal, value=None, kind="omitted")
    #: the coats a lamella batch has finished (``plans.stored_runs.batch_coating``)
    batch_coating = Cpt(BatchStateSignal, value=None, kind="omitted", query="batch_coating")
    #: stage, beams and detectors in one read (:class:`MicroscopeStateSignal`)
    state = Cpt(MicroscopeStateSignal, kind="omitted")

    def __init__(self, *args, backend: MicroscopeBackend, images_dir: str | Path, **kwargs):
        if not isinstance(backend, MicroscopeBackend):
            raise TypeError(f"backend must implement MicroscopeBackend, got {type(backend)!r}")
        self._backend = backend
        self.store: CatalogLookup | None = None
        #: polls the faults a plan waits out (``setup_session`` starts one; see
        #: :class:`~fibsem_ophyd.devices.FaultWatch`)
        self.fault_watch: FaultWatch | None = None
        self.images_dir = Path(images_dir)
        cfg = backend.config
        limits = {
            "stage": cfg.stage_limits(),
            "electron": cfg.beam_limits("electron"),
            "ion": cfg.beam_limits("ion"),
        }
        self._component_kwargs = limits
        super().__init__(*args, **kwargs)
        self.stage = Stage(name=f"{self.name}_stage", parent=self, limits=limits["stage"])
        #: what plans record their measurements with (plans build no devices)
        self.recorders = PlanRecorders({"electron": self.sem, "ion": self.fib})

    @property
    def backend(self) -> MicroscopeBackend:
        return self._backend

    # ophyd builds components lazily; pass configuration-derived limits at build time.
    def _instantiate_component(self, attr):
        cpt = getattr(type(self), attr)
        extra = {}
        if attr in ("electron_beam", "sem"):
            extra = {"setting_limits": self._component_kwargs["electron"]}
        elif attr in ("ion_beam", "fib"):
            extra = {"setting_limits": self._component_kwargs["ion"]}
        saved = dict(cpt.kwargs)
        cpt.kwargs = {**saved, **extra}
        try:
            return super()._instantiate_component(attr)
        finally:
            cpt.kwargs = saved

    def detector(self, beam: str) -> ImagingDetector:
        return self.sem if beam == "electron" else self.fib

    def beam(self, beam: str) -> Beam:
        return self.electron_beam if beam == "electron" else self.ion_beam

    def fault_signals(self) -> list:
        """The faults a running plan can wait out: ``chamber.vacuum_lost``,
        ``electron_beam.tripped``, ``ion_beam.tripped``."""
        return [self.chamber.vacuum_lost, self.electron_beam.tripped, self.ion_beam.tripped]

    def note_document(self, name: str, doc: dict) -> None:
        """A RunEngine subscription: tells the detectors which frames emitted events hold
        (what a suspension must not take again)."""
        for det in (self.sem, self.fib):
            det.note_document(name, doc)

    def close(self) -> None:
        """End a milling in progress (the ion beam back at its imaging current, blanked),
        close both detectors (their acquisition threads end once their frames are written);
        the session's ``close()`` calls it."""
        try:
            self.milling.close()
        finally:
            for det in (self.sem, self.fib):
                det.close()

    # -- state (one vocabulary, shared with the TIFF metadata) -----------------------------
    def microscope_state(self) -> dict:
        """Stage, both beams and both detectors, read from the backend (m, s, A, V, deg) in
        one call (``backend.state()``: one round trip per frame on hardware)."""
        return read_state(self._backend.state())

    def microscope_state_metadata(self, state: dict | None = None) -> dict:
        """The state in OpenFIBSEM's MicroscopeState layout (as stored in every TIFF)."""
        return state_metadata(state or self.microscope_state())

    def system_metadata(self) -> dict:
        if not hasattr(self, "_system_md"):
            self._system_md = system_info(self._backend.config.data)
        return self._system_md


def make_microscope(backend: MicroscopeBackend, images_dir: str | Path,
                    name: str = "microscope") -> FibsemMicroscope:
    """Build the device tree for ``backend`` and load image settings from its config."""
    scope = FibsemMicroscope(name=name, backend=backend, images_dir=images_dir)
    cfg = backend.config
    for key in ("shuttle_pre_tilt", "rotation_reference", "rotation_180"):
        getattr(scope.stage, key).put(float(cfg["stage"][key]), _init=True)
    scope.stage.stage_type.put(str(cfg["stage"].get("type", "shuttle")), _init=True)
    positions_file = Path(images_dir).parent / "positions.yaml"
    scope.stage.positions.load(positions_file)
    for beam, det in (("electron", scope.sem), ("ion", scope.fib)):
        section = cfg[beam]
        det.resolution.put(list(section["resolution"]))
        det.dwell_time.put(float(section["dwell_time"]))
        det.hfw.put(float(section["hfw"]))
    return scope
