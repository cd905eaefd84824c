"""Electron and ion beams, and the chamber."""

from __future__ import annotations

from collections.abc import Mapping

from ophyd import Component as Cpt
from ophyd import Device

from ._faults import FaultSignal, WatchedSignal
from ._interlock import check_no_milling
from ._limits import SettingLimits
from ._signals import BackendSignal, background_status, find_backend
from ._stage import stop_subsystem

__all__ = ["Beam", "Chamber"]


def _ion_interlock(signal, value) -> None:
    """The ion beam's current, voltage, field width, shift and scan rotation stay as the
    milling set them, and it stays blanked, while a milling is in progress (blanking is
    always allowed: it is the safe direction)."""
    if signal.parent.beam != "ion" or (signal.attr_name == "blanked" and value):
        return
    check_no_milling(signal, f"setting {signal.name} to {value!r}")


class Beam(Device):
    """One charged-particle column: ``beam`` is ``"electron"`` or ``"ion"``.

    Units: voltage V, current A, hfw m, working_distance m, dwell_time s, resolution px,
    scan_rotation deg, shift m (x, y in the image frame), column_tilt deg (read-only).
    """

    on = Cpt(WatchedSignal, key="on", vtype="bool", fault="tripped", kind="config")
    #: True while the beam is off although it should be on (a trip; see ``FaultSignal``)
    tripped = Cpt(FaultSignal, source="on", good=True, kind="omitted")
    blanked = Cpt(BackendSignal, key="blanked", vtype="bool", guard=_ion_interlock,
                  kind="config")
    voltage = Cpt(BackendSignal, key="voltage", units="V", guard=_ion_interlock, kind="config")
    current = Cpt(BackendSignal, key="current", units="A", guard=_ion_interlock, kind="config")
    hfw = Cpt(BackendSignal, key="hfw", units="m", guard=_ion_interlock, kind="config")
    working_distance = Cpt(BackendSignal, key="working_distance", units="m", kind="config")
    dwell_time = Cpt(BackendSignal, key="dwell_time", units="s", kind="config")
    resolution = Cpt(BackendSignal, key="resolution", vtype="intpair", length=2, units="px",
                     limits=(1, 16384), kind="config")
    scan_rotation = Cpt(BackendSignal, key="scan_rotation", units="deg", limits=(-360.0, 360.0),
                        guard=_ion_interlock, kind="config")
    shift = Cpt(BackendSignal, key="shift", vtype="pair", length=2, units="m",
                guard=_ion_interlock, kind="config")
    stigmation = Cpt(BackendSignal, key="stigmation", vtype="pair", length=2, kind="config")
    column_tilt = Cpt(BackendSignal, key="column_tilt", units="deg", read_only=True,
                      kind="config")
    #: what each setting accepts, read with ``bps.rd`` to validate before writing
    limits = Cpt(SettingLimits, kind="omitted")

    def __init__(self, *args, beam: str, setting_limits: Mapping | None = None, **kwargs):
        self.beam = beam
        self.setting_limits = dict(setting_limits or {})
        super().__init__(*args, **kwargs)


class Chamber(Device):
    """Vacuum chamber. ``set("pumped")`` pumps, ``set("vented")`` vents; pressure in Pa.
    ``vacuum_lost``: True while the chamber is not pumped although it should be."""

    vacuum_state = Cpt(BackendSignal, key="vacuum_state", vtype="str",
                       choices=("pumped", "vented"), read_only=True, kind="normal")
    pressure = Cpt(BackendSignal, key="pressure", units="Pa", read_only=True, kind="normal")
    vacuum_lost = Cpt(FaultSignal, source="vacuum_state", good="pumped", kind="omitted")

    def set(self, value, **kwargs):
        """Pump or vent off the RunEngine's thread (minutes on hardware: 3 min to pump,
        2 to vent in the simulator's clock). The status is returned at once, finishes when
        the backend's pump or vent returns and fails with its error."""
        if value not in ("pumped", "vented"):
            raise ValueError(f"chamber state must be 'pumped' or 'vented', got {value!r}")
        check_no_milling(self, f"{'pumping' if value == 'pumped' else 'venting'} the chamber")
        backend = find_backend(self)
        self.vacuum_lost.request(value)

        def work():
            try:
                backend.pump() if value == "pumped" else backend.vent()
            except Exception:
                self.vacuum_lost.request_done(ok=False)
                raise
            self.vacuum_lost.request_done()

        return background_status(self, work, "pump" if value == "pumped" else "vent")

    def stop(self, *, success: bool = False):
        """Stop a pump or vent in progress where it is, if the microscope can (else logged:
        ``chamber_stop`` in ``backend.missing()``); its status then fails."""
        stop_subsystem(self, "chamber")
