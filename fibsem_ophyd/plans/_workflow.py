"""The demo workflow: images with both beams around a stable, a vertical and a flat-to-ion move."""

import math
from typing import Any

from bluesky.protocols import Readable
from bluesky.utils import MsgGenerator

from .. import geometry
from ._common import check_md, check_stage_position, finite, read_stage_limits
from ._imaging import check_image_settings, take_reference_images
from ._movement import (
    move_flat_to_beam,
    read_geometry,
    read_stage_position,
    stable_move,
    stable_move_target,
    vertical_move,
    vertical_move_target,
)

__all__ = ["demo_workflow"]


def _check_step(limits: dict, target: dict, name: str, value) -> None:
    try:
        check_stage_position(limits, target)
    except ValueError as exc:
        raise ValueError(f"{name} = {value!r}: the move would leave the stage's limits: "
                         f"{exc}") from None


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
    base = {"workflow": "demo", **check_md(md)}
    # everything checked before the first image: the image settings on both detectors, then
    # each move's target from where the one before leaves the stage
    settings = {"hfw": hfw} if resolution is None else {"hfw": hfw, "resolution": resolution}
    for det in (microscope.sem, microscope.fib):
        yield from check_image_settings(det, settings)
    for name, value in (("stable_dx", stable_dx), ("stable_dy", stable_dy),
                        ("vertical_dy", vertical_dy)):
        finite(name, value)
    limits = yield from read_stage_limits(microscope)
    pos = yield from read_stage_position(microscope)
    pos = {**pos, **(yield from stable_move_target(microscope, stable_dx, stable_dy, pos=pos))}
    _check_step(limits, pos, "stable_dx, stable_dy", (stable_dx, stable_dy))
    pos = {**pos, **(yield from vertical_move_target(microscope, vertical_dy, pos=pos))}
    _check_step(limits, pos, "vertical_dy", vertical_dy)
    geom = yield from read_geometry(microscope)
    r, t = geometry.flat_to_beam("ion", geom)
    _check_step(limits, {**pos, "r": math.degrees(r), "t": math.degrees(t)}, "flat to ion",
                "ion")
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
