"""Signals backed by a :class:`~fibsem_ophyd.backend.MicroscopeBackend` key.

Every signal declares ``units`` and limits in ``describe()`` and validates before it writes:
a NaN, a wrong type or an out-of-range value raises ``ValueError`` naming the value and the
limit, and nothing is sent to the microscope. A :class:`BackendSignal` takes its units, limits,
allowed values and read-only-ness from the backend's ``describe(key, beam)`` (asked again at
each check: a vendor's ranges may depend on the state), and refuses with
:class:`~fibsem_ophyd.backend.MissingSubsystemError` if its subsystem is missing.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
from ophyd import Signal
from ophyd.status import DeviceStatus, Status

from .. import validate
from ..backend import check_subsystem

__all__ = [
    "finished_status", "background_status", "ImmediateSignal",
    "BackendSignal", "SettingSignal", "find_backend", "validate_value", "check_area",
]


def find_backend(obj):
    """The backend of the device tree ``obj`` belongs to (stored on the root as ``_backend``)."""
    node = obj
    while node is not None:
        backend = getattr(node, "_backend", None)
        if backend is not None:
            return backend
        node = node.parent
    raise RuntimeError(f"{obj.name!r} is not attached to a microscope backend")


def finished_status(obj) -> Status:
    """A status already done: for writes that complete on return (``put`` then report)."""
    st = Status(obj)
    st.set_finished()
    return st


def background_status(device, work, label: str) -> DeviceStatus:
    """Run ``work()`` off the RunEngine's thread (moves and depositions take seconds to
    minutes on hardware); the status finishes when it returns, or fails with what it
    raised."""
    status = DeviceStatus(device)

    def run():
        try:
            work()
        except Exception as exc:
            status.set_exception(exc)
        else:
            status.set_finished()

    threading.Thread(target=run, daemon=True, name=f"{device.name}-{label}").start()
    return status


def _describe_value(value: Any) -> tuple[str, list[int], str | None]:
    if isinstance(value, (bool, np.bool_)):
        return "boolean", [], "|b1"
    if isinstance(value, (int, np.integer)):
        return "integer", [], "<i8"
    if isinstance(value, (float, np.floating)):
        return "number", [], "<f8"
    if isinstance(value, str):
        return "string", [], None
    if value is None:
        return "string", [], None
    arr = np.asarray(value)
    return "array", list(arr.shape), arr.dtype.str


def validate_value(name: str, value: Any, *, vtype: str, units: str | None,
                   limits: tuple[float, float] | None, length: int | None = None,
                   choices: Sequence[str] | None = None) -> Any:
    """Check one value against type, finiteness, limits and choices; return it normalised
    (:func:`fibsem_ophyd.validate.setting`)."""
    return validate.setting(name, value, {"vtype": vtype, "units": units, "limits": limits,
                                          "length": length, "choices": choices})


class ImmediateSignal(Signal):
    """A signal whose writes are done on return: ``set`` is ``put`` (which raises on a bad
    value, before anything moves) and a finished status."""

    def set(self, value, **kwargs):
        self.put(value)
        return finished_status(self)


class _ValidatingSignal(ImmediateSignal):
    def __init__(self, *, vtype: str = "float", units: str | None = None,
                 limits: tuple[float, float] | None = None, length: int | None = None,
                 choices: Sequence[str] | None = None, read_only: bool = False,
                 limits_key: str | None = None, **kwargs):
        self._vtype = vtype
        self._units = units
        self._limits_cfg = limits
        self._length = length
        self._choices = choices
        self._read_only = read_only
        super().__init__(**kwargs)
        # Signals of a beam or detector take their limits from the parent's configuration.
        parent = kwargs.get("parent")
        if self._limits_cfg is None and limits_key and parent is not None:
            self._limits_cfg = getattr(parent, "setting_limits", {}).get(limits_key)

    @property
    def limits(self) -> tuple[float, float]:
        return self._limits_cfg if self._limits_cfg is not None else (0, 0)

    @property
    def units(self) -> str | None:
        return self._units

    def check_value(self, value: Any) -> Any:
        if self._read_only:
            raise ValueError(f"{self.name} is read-only")
        return validate_value(self.name, value, vtype=self._vtype, units=self._units,
                              limits=self._limits_cfg, length=self._length,
                              choices=self._choices)

    def spec(self) -> dict:
        """What a value must be (:func:`fibsem_ophyd.validate.setting`), and ``name``."""
        return {"name": self.name, "vtype": self._vtype, "units": self._units,
                "limits": self._limits_cfg, "length": self._length,
                "choices": None if self._choices is None else list(self._choices),
                "read_only": self._read_only}

    def describe(self):
        value = self.get()
        dtype, shape, dtype_numpy = _describe_value(value)
        desc = {"source": self._source(), "dtype": dtype, "shape": shape}
        if dtype_numpy:
            desc["dtype_numpy"] = dtype_numpy
        if self._units:
            desc["units"] = self._units
        if self._limits_cfg is not None:
            desc["limits"] = {"control": {"low": self._limits_cfg[0], "high": self._limits_cfg[1]}}
        if self._choices is not None:
            desc["choices"] = list(self._choices)
        return {self.name: desc}

    def _source(self) -> str:
        return f"SIM:{self.name}"


class BackendSignal(_ValidatingSignal):
    """A microscope setting read from and written to the backend by ``key``.

    Units, limits, choices and read-only-ness come from the backend's ``describe``; the
    values given here are what the device expects when the backend is silent. ``subsystem``
    (e.g. ``"manipulator"``): refuse reads and writes if the backend lacks it.
    """

    def __init__(self, *, key: str, beam: str | None = None, subsystem: str | None = None,
                 guard=None, **kwargs):
        self._key = key
        self._beam = beam
        self._subsystem = subsystem
        #: ``guard(signal, value)`` raises to refuse a write (after validation, before the
        #: backend is asked), e.g. the milling interlock
        self._guard = guard
        if kwargs.get("choices") == "backend":  # the backend's describe() gives them
            kwargs["choices"] = None
        kwargs.setdefault("limits_key", key)
        super().__init__(**kwargs)
        # Signals of a beam or detector take the beam name from their parent.
        parent = kwargs.get("parent")
        if beam is None and parent is not None and getattr(parent, "beam", None):
            self._beam = parent.beam

    def _source(self) -> str:
        return f"backend:{self._beam or 'chamber'}:{self._key}"

    def _checked_backend(self):
        backend = find_backend(self)
        if self._subsystem is not None:
            check_subsystem(backend, self._subsystem)
        return backend

    def _load_description(self) -> None:
        d = self._checked_backend().describe(self._key, self._beam)
        if d.get("units") is not None:
            self._units = d["units"]
        if d.get("limits") is not None:
            self._limits_cfg = tuple(d["limits"])
        if d.get("choices") is not None:
            self._choices = tuple(d["choices"])
        self._read_only = self._read_only or bool(d.get("read_only"))

    @property
    def limits(self) -> tuple[float, float]:
        self._load_description()
        return super().limits

    @property
    def units(self) -> str | None:
        self._load_description()
        return self._units

    def check_value(self, value: Any) -> Any:
        self._load_description()
        return super().check_value(value)

    def spec(self) -> dict:
        self._load_description()
        return super().spec()

    def describe(self):
        self._load_description()
        return super().describe()

    def get(self, **kwargs):
        value = self._checked_backend().get(self._key, self._beam)
        if isinstance(value, tuple):
            value = list(value)
        self._readback = value
        self._metadata["timestamp"] = time.time()
        return value

    def put(self, value, **kwargs):
        value = self.check_value(value)
        if self._guard is not None:
            self._guard(self, value)
        old = self._readback
        self._checked_backend().set(self._key, value, self._beam)
        self._readback = value
        ts = time.time()
        self._metadata["timestamp"] = ts
        self._run_subs(sub_type=self.SUB_VALUE, old_value=old, value=value, timestamp=ts)


class SettingSignal(_ValidatingSignal):
    """A client-side setting (e.g. an image setting applied at acquisition), validated."""

    def put(self, value, **kwargs):
        if value is None and self._vtype == "area":
            return super(_ValidatingSignal, self).put(None, **kwargs)
        value = self.check_value(value)
        return super().put(value, **kwargs)

    def check_value(self, value: Any) -> Any:
        if self._vtype == "area":
            return check_area(self.name, value)
        return super().check_value(value)

    def describe(self):
        if self._vtype == "area":
            return {self.name: {"source": self._source(), "dtype": "array", "shape": [4],
                                "dtype_numpy": "<f8"}}
        return super().describe()

    def get(self, **kwargs):
        value = super().get(**kwargs)
        if self._vtype == "area" and value is None:
            return [0.0, 0.0, 1.0, 1.0]
        return value


def check_area(name: str, value: Any) -> list[float] | None:
    """Reduced area (left, top, width, height), normalised to the full frame."""
    return validate.area(name, value)
