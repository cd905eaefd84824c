"""The alignment reference of an imaging detector, settable from an array or a stored run.

Plans speak only bluesky messages and cannot read the catalog themselves, so a reference
that lives in a stored run is fetched by the device: ``yield from bps.mv(det.reference,
"<run uid>")`` loads the last frame that detector took in that run (through the catalog the
session attached to the microscope), ``bps.mv(det.reference, array)`` keeps an array, and
``yield from bps.rd(det.reference)`` gives the pixels back. Under the queue server this is
how a plan item names its reference: by the uid of an earlier run.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..storage import image_keys, load_images
from ._signals import ImmediateSignal

__all__ = ["ReferenceSignal", "BatchStateSignal", "load_run_frame"]


def load_run_frame(catalog, uid: str, image_key: str) -> np.ndarray:
    """The last frame of ``image_key`` in the run ``uid`` of ``catalog``.

    Raises
    ------
    ValueError
        No catalog, no such run, or the run holds no frame of that key.
    """
    if catalog is None:
        raise ValueError("no catalog is attached to the microscope: a reference by run uid "
                         "needs a session (setup_session attaches its catalog)")
    try:
        run = catalog[uid]
    except KeyError:
        raise ValueError(f"no run with uid {uid!r} in the catalog") from None
    for stream in list(run):
        if image_key in image_keys(run, stream):
            frames = load_images(run, stream, image_key)
            if frames:
                return frames[-1].data
    raise ValueError(f"run {uid!r} holds no {image_key!r} frame")


class ReferenceSignal(ImmediateSignal):
    """A 2-D reference frame (``None`` until set). Setting a ``str`` loads it from a run.

    ``describe()`` reports an array of the frame's shape; the signal is never part of
    ``read()`` (kind "omitted"): the reference's own run holds the stored image.
    """

    def put(self, value: Any, **kwargs):
        if isinstance(value, str):
            loader = getattr(self.root, "load_reference", None)
            if loader is None:
                raise ValueError(f"{self.name}: cannot load a reference by run uid outside a "
                                 "microscope device tree")
            value = loader(value, self.parent.image_key)
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
    catalog (the root device's ``loader`` method: ``load_batch_state``, i.e.
    :func:`fibsem_ophyd.storage.batch_state`, or ``load_batch_coating``), ``bps.rd(sig)``
    returns it. How a batch plan resumes where an interrupted one stopped."""

    def __init__(self, *args, loader: str = "load_batch_state", **kwargs):
        self._loader = loader
        super().__init__(*args, **kwargs)

    def put(self, value: Any, **kwargs):
        if not isinstance(value, str):
            raise ValueError(f"{self.name}: set it to a batch name, got {value!r}")
        loader = getattr(self.root, self._loader, None)
        if loader is None:
            raise ValueError(f"{self.name}: needs a microscope device tree with a catalog")
        super().put(loader(value), **kwargs)


    def describe(self):
        return {self.name: {"source": f"catalog:{self.name}", "dtype": "string", "shape": []}}
