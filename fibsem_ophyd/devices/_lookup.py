"""The look-ups devices make in stored runs: a reference frame by run uid, and named queries.

The microscope is not a catalog client. ``setup_session`` builds a :class:`CatalogLookup`
on its catalog, with the queries that know what the plans' runs mean (the state of a lamella
batch, its finished coats), and gives it to the microscope as ``microscope.store``; the
detectors' ``reference`` signals and the microscope's ``batch_state`` / ``batch_coating``
signals ask it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from ophyd import Device

from ..storage import image_keys, load_images

__all__ = ["CatalogLookup"]


class CatalogLookup(Device):
    """Reads stored runs for the devices of a session.

    Parameters
    ----------
    catalog : tiled client
        The catalog the session stores its runs in.
    queries : mapping, optional
        ``{name: function(catalog, value)}``: the look-ups :meth:`query` runs by name.
    """

    def __init__(self, *args, catalog, queries: Mapping[str, Callable[[Any, str], Any]]
                 | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._catalog = catalog
        self._queries = dict(queries or {})

    def frame(self, uid: str, image_key: str) -> np.ndarray:
        """The last frame of ``image_key`` in the stored run ``uid``.

        Raises
        ------
        ValueError
            No such run, or the run holds no frame of that key.
        """
        try:
            run = self._catalog[uid]
        except KeyError:
            raise ValueError(f"no run with uid {uid!r} in the catalog") from None
        for stream in list(run):
            if image_key in image_keys(run, stream):
                frames = load_images(run, stream, image_key)
                if frames:
                    return frames[-1].data
        raise ValueError(f"run {uid!r} holds no {image_key!r} frame")

    def query(self, name: str, value: str) -> Any:
        """The result of the query ``name`` for ``value`` (e.g. a batch name).

        Raises
        ------
        ValueError
            ``name`` is not one of the queries this look-up was given.
        """
        fn = self._queries.get(name)
        if fn is None:
            raise ValueError(f"{self.name}: no query {name!r}; it has {sorted(self._queries)}")
        return fn(self._catalog, value)
