"""The demo workflow: images with both beams around a stable, a vertical and a flat-to-ion move."""

from typing import Any

from bluesky.protocols import Readable
from bluesky.utils import MsgGenerator

from ._imaging import take_reference_images
from ._movement import move_flat_to_beam, stable_move, vertical_move

__all__ = ["demo_workflow"]


def demo_workflow(
    microscope: Readable,
    hfw: float = 150e-6,
    resolution: list[int] | None = None,
    stable_dx: float = 20e-6,
    stable_dy: float = 10e-6,
    vertical_dy: float = 5e-6,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[list[str]]:
    """Reference images, stable move, images, vertical move, images, flat to ion, images.

    Parameters
    ----------
    microscope : Readable
        The microscope device.
    hfw : float
        Horizontal field width of every image, metres.
    resolution : list[int], optional
        [width, height] in pixels (default: the detectors' current resolution).
    stable_dx, stable_dy : float
        Stable move in the electron view, metres.
    vertical_dy : float
        Vertical move, metres of shift in the ion view.
    md : dict, optional
        Extra metadata for every run.

    Returns
    -------
    list[str]
        The uids of the four imaging runs.
    """
    base = {"workflow": "demo", **(md or {})}
    uids = []
    steps = [
        ("initial", None),
        ("after_stable_move", lambda: stable_move(microscope, stable_dx, stable_dy, "electron")),
        ("after_vertical_move", lambda: vertical_move(microscope, vertical_dy)),
        ("flat_to_ion", lambda: move_flat_to_beam(microscope, "ion")),
    ]
    for step, move in steps:
        if move is not None:
            yield from move()
        uid = yield from take_reference_images(
            microscope, hfw=hfw, resolution=resolution, md={**base, "step": step}
        )
        uids.append(uid)
    return uids
