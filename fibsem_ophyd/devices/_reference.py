"""The alignment reference of an imaging detector, settable from an array or a stored run.

Plans speak only bluesky messages and cannot read the catalog themselves, so a reference
that lives in a stored run is fetched by the device: ``yield from bps.mv(det.reference,
"<run uid>")`` loads the last frame that detector took in that run (through the catalog
look-up the session gives the microscope, ``microscope.store``), ``bps.mv(det.reference,
array)`` keeps an array, and ``yield from bps.rd(det.reference)`` gives the pixels back.
Under the queue server this is how a plan item names its reference: by the uid of an
earlier run.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._signals import ImmediateSignal

__all__ = ["ReferenceSignal", "BatchStateSignal"]


def _store(signal, what: str):
    """The catalog look-up (``root.store``) of ``signal``'s device tree, for ``what``."""
    root = signal.root
    if not hasattr(root, "store"):
        raise ValueError(f"{signal.name}: cannot {what} outside a microscope device tree")
    if root.store is None:
        raise ValueError(f"no catalog is attached to the microscope: {what} needs a session "
                         "(setup_session gives the microscope its catalog look-up)")
    return root.store


class ReferenceSignal(ImmediateSignal):
    """A 2-D reference frame (``None`` until set). Setting a ``str`` loads it from a run.

    ``describe()`` reports an array of the frame's shape; the signal is never part of
    ``read()`` (kind "omitted"): the reference's own run holds the stored image.
    """

    def put(self, value: Any, **kwargs):
        if isinstance(value, str):
            try:
                value = _store(self, "loading a reference by run uid").frame(
                    value, self.parent.image_key)
            except ValueError as exc:
                raise ValueError(f"{self.name} = {value!r}: {exc}") from None
        if value is not None:
            arr = np.asarray(getattr(value, "data", value))
            if arr.ndim != 2 or arr.size == 0 or not np.issubdtype(arr.dtype, np.number):
                raise ValueError(f"{self.name}: a reference must be a non-empty 2-D numeric "
                                 f"image or a run uid, got shape {arr.shape} dtype {arr.dtype}")
            if not np.all(np.isfinite(arr)):
                raise ValueError(f"{self.name}: the reference holds NaN or inf pixels")
            value = arr.copy()
            value.flags.writeable = False
        super().put(value, **kwargs)


    def describe(self):
        value = self._readback
        shape = list(np.shape(value)) if value is not None else [0, 0]
        dtype = np.asarray(value).dtype.str if value is not None else "|u1"
        return {self.name: {"source": f"memory:{self.name}", "dtype": "array", "shape": shape,
                            "dtype_numpy": dtype}}


class BatchStateSignal(ImmediateSignal):
    """The stored state of a lamella batch: ``bps.mv(sig, "batch name")`` reads it from the
    catalog (the query ``query`` of the microscope's catalog look-up: ``"batch_state"``,
    i.e. :func:`fibsem_ophyd.plans.stored_runs.batch_state`, or ``"batch_coating"``),
    ``bps.rd(sig)`` returns it. How a batch plan resumes where an interrupted one stopped."""

    def __init__(self, *args, query: str = "batch_state", **kwargs):
        self._query = query
        super().__init__(*args, **kwargs)

    def put(self, value: Any, **kwargs):
        if not isinstance(value, str):
            raise ValueError(f"{self.name}: set it to a batch name, got {value!r}")
        store = _store(self, "resuming a batch")
        super().put(store.query(self._query, value), **kwargs)


    def describe(self):
        return {self.name: {"source": f"catalog:{self.name}", "dtype": "string", "shape": []}}
