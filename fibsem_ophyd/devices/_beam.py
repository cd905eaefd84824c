"""Electron and ion beams, and the chamber."""

from __future__ import annotations

from collections.abc import Mapping

from ophyd import Component as Cpt
from ophyd import Device
from ophyd.status import DeviceStatus

from ._interlock import check_no_milling
from ._limits import SettingLimits
from ._signals import BackendSignal, find_backend

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

    on = Cpt(BackendSignal, key="on", vtype="bool", kind="config")
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
    """Vacuum chamber. ``set("pumped")`` pumps, ``set("vented")`` vents; pressure in Pa."""

    vacuum_state = Cpt(BackendSignal, key="vacuum_state", vtype="str",
                       choices=("pumped", "vented"), read_only=True, kind="normal")
    pressure = Cpt(BackendSignal, key="pressure", units="Pa", read_only=True, kind="normal")

    def set(self, value, **kwargs):
        if value not in ("pumped", "vented"):
            raise ValueError(f"chamber state must be 'pumped' or 'vented', got {value!r}")
        check_no_milling(self, f"{'pumping' if value == 'pumped' else 'venting'} the chamber")
        backend = find_backend(self)
        status = DeviceStatus(self)
        try:
            backend.pump() if value == "pumped" else backend.vent()
        except Exception as exc:
            status.set_exception(exc)
        else:
            status.set_finished()
        return status
