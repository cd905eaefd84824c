"""The manipulator (needle), as OpenFIBSEM drives it: insert at a saved position, move, retract."""

from __future__ import annotations

import time

from ophyd import Component as Cpt
from ophyd import Device, Signal

from .. import validate
from ..backend import MANIPULATOR_AXES, MANIPULATOR_LIMITS, check_subsystem
from ._interlock import check_no_milling
from ._limits import SavedPositions, SettingLimits
from ._signals import BackendSignal, background_status, find_backend
from ._stage import stop_subsystem

__all__ = ["Manipulator", "RETRACTED"]

#: ``Manipulator.set(RETRACTED)`` retracts the needle
RETRACTED = "retracted"


class _TipAxis(Signal):
    """One RAW coordinate of the tip (m), read from the backend."""

    def __init__(self, *args, axis: str, **kwargs):
        self.axis = axis
        super().__init__(*args, **kwargs)

    def get(self, **kwargs):
        backend = find_backend(self)
        check_subsystem(backend, "manipulator")
        value = float(backend.get_manipulator_position()[self.axis])
        self._readback = value
        self._metadata["timestamp"] = time.time()
        return value

    def description(self) -> dict:
        """The backend's units and limits of this axis."""
        d = find_backend(self).describe(f"manipulator_{self.axis}")
        return {"units": d.get("units") or "m", "limits": tuple(d.get("limits")
                                                                or MANIPULATOR_LIMITS)}

    def spec(self) -> dict:
        """The axis for :func:`fibsem_ophyd.validate.setting` (a float in its limits)."""
        d = self.description()
        return {"name": f"manipulator.{self.axis}", "vtype": "float", "units": d["units"],
                "limits": d["limits"], "length": None, "choices": None, "read_only": False}

    def describe(self):
        d = self.description()
        lo, hi = d["limits"]
        return {self.name: {"source": f"backend:manipulator:{self.axis}", "dtype": "number",
                            "shape": [], "dtype_numpy": "<f8", "units": d["units"],
                            "limits": {"control": {"low": lo, "high": hi}}}}


class Manipulator(Device):
    """The needle. ``x``, ``y``, ``z``: its tip in RAW coordinates (m: the chamber frame from the
    coincidence point; x right in both images, y up in the electron image, z up along the
    electron column). ``inserted``, ``contact`` (the tip touches the sample): read-only.

    ``set(target)``: a saved position name ("PARK", "EUCENTRIC": inserts the needle if needed
    and goes there, OpenFIBSEM's ``insert_manipulator(name)``), ``"retracted"`` (retracts), or
    a mapping of axes to RAW metres (an absolute move of the inserted needle). Names, axes,
    finiteness and limits are checked before anything moves. ``saved_positions()`` lists the
    calibrated positions.
    """

    x = Cpt(_TipAxis, axis="x", kind="hinted")
    y = Cpt(_TipAxis, axis="y", kind="hinted")
    z = Cpt(_TipAxis, axis="z", kind="hinted")
    inserted = Cpt(BackendSignal, key="manipulator_inserted", vtype="bool", read_only=True,
                   subsystem="manipulator", kind="normal")
    contact = Cpt(BackendSignal, key="manipulator_contact", vtype="bool", read_only=True,
                  subsystem="manipulator_contact", kind="normal")
    #: the calibrated saved positions, ``bps.rd``-able (:class:`SavedPositions`)
    positions = Cpt(SavedPositions, kind="omitted")
    #: the tip axes' units and limits, ``bps.rd``-able (:class:`SettingLimits`)
    limits = Cpt(SettingLimits, settings=MANIPULATOR_AXES, kind="omitted")

    def _absent(self) -> set[str]:
        """Readings a backend without contact sensing cannot give (left out, not faked)."""
        missing = find_backend(self).missing()
        return {self.contact.name} if "manipulator_contact" in missing else set()

    def _present(self, verb: str) -> dict:
        out = {}
        for sig in (self.x, self.y, self.z, self.inserted):
            out.update(getattr(sig, verb)())
        return out

    def read(self):
        return self._present("read") if self._absent() else super().read()

    def describe(self):
        return self._present("describe") if self._absent() else super().describe()

    def saved_positions(self) -> dict[str, dict[str, float]]:
        backend = find_backend(self)
        check_subsystem(backend, "manipulator")
        return backend.manipulator_positions()

    def check_target(self, target):
        """The validated target: ``"retracted"``, a saved position name, or ``{axis: m}``.
        ``MissingSubsystemError`` if the microscope has no manipulator."""
        check_subsystem(find_backend(self), "manipulator")
        if isinstance(target, str):
            return validate.target("manipulator", target, self.saved_positions(), {}, {},
                                   also=(RETRACTED,))
        desc = {ax: getattr(self, ax).description() for ax in MANIPULATOR_AXES}
        return validate.target("manipulator", target, (),
                               {ax: d["limits"] for ax, d in desc.items()},
                               {ax: d["units"] for ax, d in desc.items()},
                               also=(RETRACTED,), what="manipulator axis")

    def set(self, target, **kwargs):
        target = self.check_target(target)
        check_no_milling(self, f"manipulator move to {target!r}")
        backend = find_backend(self)

        def move():
            if target == RETRACTED:
                backend.retract_manipulator()
            elif isinstance(target, str):
                backend.insert_manipulator(target)
            else:
                backend.move_manipulator_absolute(target)

        return background_status(self, move, "move")

    def stop(self, *, success: bool = False):
        """Stop the needle where it is (the move's status then fails with ``StoppedError``)."""
        stop_subsystem(self, "manipulator")
