"""The gas injection system and the sputter coater: what deposits material on the sample."""

from __future__ import annotations

from ophyd import Component as Cpt
from ophyd import Device
from ophyd.status import DeviceStatus

from ..backend import SPUTTER_CURRENT_LIMITS, check_deposition_time, check_subsystem
from ._limits import SettingLimits
from ._signals import BackendSignal, SettingSignal, background_status, find_backend

__all__ = ["GasInjection", "SputterCoater"]


def _timed(device, call, name: str, seconds, last, subsystem: str) -> DeviceStatus:
    """Check ``seconds`` and that the microscope has ``subsystem``, then run the backend's
    timed ``call`` in the background; the time it reports goes to ``last``."""
    seconds = check_deposition_time(name, seconds)
    backend = find_backend(device)
    check_subsystem(backend, subsystem)

    def run():
        last.put(float(call(backend)(seconds)))

    return background_status(device, run, name)


class GasInjection(Device):
    """Gas injection system (GIS). ``insert_position``: ``"retracted"`` or an insert position
    (e.g. ``"cryo"``); writing it inserts or retracts the needle. ``gas``: the precursor (e.g.
    ``"Pt cryo"``). ``set(seconds)`` opens the valve for that long at the inserted position
    (cryo deposition: the precursor condenses on the cold sample without a beam) and returns
    a status done when the valve has closed; ``last_time`` reads the valve time (s)."""

    insert_position = Cpt(BackendSignal, key="gis_position", vtype="str", choices="backend",
                          subsystem="gis", kind="normal")
    gas = Cpt(BackendSignal, key="gis_gas", vtype="str", choices="backend", subsystem="gis",
              kind="normal")
    last_time = Cpt(SettingSignal, value=0.0, units="s", kind="normal")
    #: what each setting accepts, read with ``bps.rd`` to validate before writing
    limits = Cpt(SettingLimits, kind="omitted")

    def set(self, seconds, **kwargs):
        return _timed(self, lambda b: b.gis_deposit, "GIS valve time", seconds,
                      self.last_time, "gis")


class SputterCoater(Device):
    """Integrated sputter coater. ``current`` (A); ``set(seconds)`` coats the sample for that
    long (the coater cycles its gas before and after) and returns a status done when the
    chamber is back at high vacuum; ``last_time`` reads the time the run took (s)."""

    current = Cpt(BackendSignal, key="sputter_current", units="A",
                  limits=SPUTTER_CURRENT_LIMITS, subsystem="sputter_coater", kind="normal")
    last_time = Cpt(SettingSignal, value=0.0, units="s", kind="normal")
    #: what each setting accepts, read with ``bps.rd`` to validate before writing
    limits = Cpt(SettingLimits, kind="omitted")

    def set(self, seconds, **kwargs):
        return _timed(self, lambda b: b.sputter_coat, "sputter time", seconds, self.last_time,
                      "sputter_coater")
