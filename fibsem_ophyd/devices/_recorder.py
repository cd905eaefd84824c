"""Recorder devices: soft signals that plans set (``bps.mv``) and record
(``bps.trigger_and_read``) so that what a plan *measured* (shifts, scores, iterations, focus
metrics) is event data in the run, next to the images it was measured on.
"""

from __future__ import annotations

from ophyd import Component as Cpt
from ophyd import Device, Signal

from ._signals import finished_status

__all__ = ["RecordSignal", "make_recorder"]

_TYPES = {"number": (float, "number", "<f8"), "integer": (int, "integer", "<i8"),
          "string": (str, "string", None)}


class RecordSignal(Signal):
    """A soft signal with a declared dtype and units (``describe()`` reports both)."""

    def __init__(self, *args, dtype: str = "number", units: str | None = None, **kwargs):
        if dtype not in _TYPES:
            raise ValueError(f"dtype must be one of {sorted(_TYPES)}, got {dtype!r}")
        self._dtype = dtype
        self._units = units
        kwargs.setdefault("value", {"number": float("nan"), "integer": 0, "string": ""}[dtype])
        super().__init__(*args, **kwargs)

    def put(self, value, **kwargs):
        cast = _TYPES[self._dtype][0]
        super().put(cast(value), **kwargs)

    def set(self, value, **kwargs):
        """Done on return. (ophyd's ``Signal.set`` waits until the readback equals the value,
        which a NaN never does: a plan recording "no measurement" would hang.)"""
        self.put(value)
        return finished_status(self)

    def describe(self):
        _, dtype, numpy = _TYPES[self._dtype]
        desc = {"source": f"SOFT:{self.name}", "dtype": dtype, "shape": []}
        if numpy:
            desc["dtype_numpy"] = numpy
        if self._units:
            desc["units"] = self._units
        return {self.name: desc}


def make_recorder(name: str, fields: dict[str, tuple[str, str | None]]) -> Device:
    """A recorder device named ``name`` with one :class:`RecordSignal` per field.

    Parameters
    ----------
    fields : dict
        ``{field: (dtype, units)}`` with dtype "number", "integer" or "string".
    """
    cpts = {key: Cpt(RecordSignal, dtype=dtype, units=units, kind="hinted")
            for key, (dtype, units) in fields.items()}
    cls = type(f"Recorder_{name}", (Device,), cpts)
    return cls(name=name)
