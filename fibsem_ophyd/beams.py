"""Beam names: OpenFIBSEM's ``BeamType`` and the plain strings used in plans and backends."""

from __future__ import annotations

from enum import Enum

__all__ = ["BeamType", "as_beam"]


class BeamType(Enum):
    """The two beams, numbered as in OpenFIBSEM (``fibsem.structures.BeamType``)."""

    ELECTRON = 1
    ION = 2

    @property
    def key(self) -> str:
        """``"electron"`` or ``"ion"``: the name backends and devices use."""
        return self.name.lower()


def as_beam(beam) -> str:
    """Normalise ``BeamType``, ``"electron"``/``"ion"`` (any case) or ``"ELECTRON"`` to a key.

    Raises ``ValueError`` naming the accepted values for anything else.
    """
    if isinstance(beam, BeamType):
        return beam.key
    if isinstance(beam, str):
        name = beam.strip().lower()
        aliases = {"electron": "electron", "sem": "electron", "e": "electron",
                   "ion": "ion", "fib": "ion", "i": "ion"}
        if name in aliases:
            return aliases[name]
    raise ValueError(
        f"unknown beam {beam!r}; use BeamType.ELECTRON / BeamType.ION or 'electron' / 'ion'"
    )
