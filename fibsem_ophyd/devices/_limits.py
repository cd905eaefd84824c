"""Read-only signals that publish what a device accepts, so plans validate with ``bps.rd``.

As ophyd's ``EpicsMotor`` (``low_limit_travel``, ``high_limit_travel``) and ophyd-async's
``Motor`` do, limits are signals, not methods: a plan reads them with ``bps.rd`` and checks
its whole input with :mod:`fibsem_ophyd.validate` before the first move, the same way on an
ophyd-async device or through a queue server.
"""

from __future__ import annotations

from ophyd import Signal

__all__ = ["SettingLimits", "LimitTravel", "SavedPositions"]


class _ReadOnly(Signal):
    def put(self, value, **kwargs):
        raise ValueError(f"{self.name} is read-only")

    def set(self, value, **kwargs):
        raise ValueError(f"{self.name} is read-only")


class SettingLimits(_ReadOnly):
    """``{setting: spec}`` for each validated setting of the parent device: ``name``,
    ``vtype``, ``units``, ``limits`` ((low, high) in those units, or None), ``length``,
    ``choices``, ``read_only`` (:func:`fibsem_ophyd.validate.setting` takes it). Limits come
    from the backend's ``describe`` when read, so they follow the microscope's state."""

    def __init__(self, *args, settings: tuple[str, ...] | None = None, **kwargs):
        self._settings = settings
        super().__init__(*args, **kwargs)

    def get(self, **kwargs):
        parent = self.parent
        names = self._settings or parent.component_names
        return {attr: getattr(parent, attr).spec() for attr in names
                if attr != self.attr_name and callable(getattr(getattr(parent, attr), "spec",
                                                               None))}

    def describe(self):
        return {self.name: {"source": f"limits:{self.parent.name}", "dtype": "object",
                            "shape": []}}


class LimitTravel(_ReadOnly):
    """One end of a stage axis' travel (``low_limit_travel`` / ``high_limit_travel``, as
    ``EpicsMotor`` names them), in the axis' units (m; deg for r and t)."""

    def __init__(self, *args, end: int, **kwargs):
        self._end = end
        super().__init__(*args, **kwargs)

    def get(self, **kwargs):
        return float(self.parent.limits[self._end])

    def describe(self):
        return {self.name: {"source": f"limits:{self.parent.name}", "dtype": "number",
                            "shape": [], "units": self.parent.egu}}


class SavedPositions(_ReadOnly):
    """The manipulator's calibrated saved positions ``{name: {x, y, z}}`` (RAW, m).
    ``MissingSubsystemError`` on reading if the microscope has no manipulator."""

    def get(self, **kwargs):
        return self.parent.saved_positions()

    def describe(self):
        return {self.name: {"source": "backend:manipulator:positions", "dtype": "object",
                            "shape": []}}
