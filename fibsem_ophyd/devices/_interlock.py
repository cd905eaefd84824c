"""The milling interlock: while a milling runs (or is held paused), nothing else may move the
sample under the beam or change the ion beam.

A milling takes minutes to hours and mills where the ion beam's scan field lies on the
sample at that moment. A stage or needle move, a change of the ion beam's current, voltage,
field width, shift or scan rotation, an unblanking, or an ion image (which scans the whole
field at the milling current) from another thread or plan would mill the wrong place or
damage the sample. The :class:`~fibsem_ophyd.devices.Milling` device marks the microscope
(the root of the device tree) while a milling is in progress; the stage, the manipulator,
the ion beam's settings and the ion detector check the mark before they act and refuse with
:class:`InterlockError`. Living in the device layer, it holds on every backend. The milling
device changes the beam through the backend, not through these signals, so its own
current changes are not refused.
"""

from __future__ import annotations

__all__ = ["InterlockError", "check_no_milling", "milling_in_progress", "mark_milling"]

_ATTR = "_fibsem_milling_in_progress"


class InterlockError(RuntimeError):
    """Refused: a milling is in progress on this microscope."""


def _root(device):
    node = device
    while getattr(node, "parent", None) is not None:
        node = node.parent
    return node


def milling_in_progress(device) -> str | None:
    """What is being milled on ``device``'s microscope (e.g. ``"milling of 'box'"``), or None."""
    return getattr(_root(device), _ATTR, None)


def mark_milling(device, what: str | None) -> None:
    """Mark (``what``) or clear (``None``) the milling in progress on ``device``'s microscope."""
    setattr(_root(device), _ATTR, what)


def check_no_milling(device, action: str) -> None:
    """Raise :class:`InterlockError` naming ``action`` and the milling if one is in progress."""
    what = milling_in_progress(device)
    if what is not None:
        raise InterlockError(
            f"{action} refused: {what} is in progress on this microscope; wait for it to "
            "end, or stop it (RE.abort(), or microscope.milling.stop())")
