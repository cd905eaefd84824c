"""Coincidence: bring a feature to the point where both beams see it centred.

:func:`find_coincidence` (and its OpenFIBSEM name :func:`eucentric_alignment`) open one run:
the frames (streams "electron"/"ion", with the stage position) and one "alignment" event per
measurement, as the alignment plans record them (``fibsem_ophyd.plans._alignment``). Each
step is a sub-plan below: pick and centre a feature in the SEM, keep it centred, locate it in
the ion image and remove the height error with a vertical move.
"""

import math
from dataclasses import dataclass
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
from bluesky.protocols import Readable
from bluesky.utils import MsgGenerator

from .. import geometry
from ..alignment.locate import foreshorten, gaussian_weight, match_template, select_feature
from ._alignment import AlignmentError
from ._common import (
    check_md,
    check_settings,
    count,
    flag,
    in_run,
    positive,
    read_frame,
    read_limits,
    record,
    run_md,
    score,
)
from ._imaging import apply_image_settings
from ._movement import read_geometry, read_stage_position, stable_move, vertical_move

__all__ = ["find_coincidence", "eucentric_alignment"]


@dataclass(frozen=True)
class _Settings:
    """A coincidence search's validated settings (m, px; see :func:`find_coincidence`)."""

    hfw_coarse: float
    hfw_fine: float
    max_iterations: int
    tolerance: float
    select: bool
    template_sigma: float
    min_score: float
    max_step: float


def _cross_beam_scale(pos: dict, geom: geometry.SystemGeometry) -> float:
    """Ratio of the ion to the electron image scale of the sample's in-plane y."""
    r, t = math.radians(pos["r"]), math.radians(pos["t"])
    _, ye, _ = geometry.stable_move_delta(0.0, 1.0, geometry.ELECTRON, r, t, geom)
    _, yi, _ = geometry.stable_move_delta(0.0, 1.0, geometry.ION, r, t, geom)
    return ye / yi


def _set_hfw(microscope, hfw: float) -> MsgGenerator[None]:
    """Set the field width (m) of both detectors."""
    for det in (microscope.sem, microscope.fib):
        yield from apply_image_settings(det, {"hfw": hfw})


def _restore_hfw(microscope, saved: dict) -> MsgGenerator[None]:
    """Set each detector's field width back to ``saved[detector name]`` (m), if read."""
    for det in (microscope.sem, microscope.fib):
        if det.name in saved:
            yield from apply_image_settings(det, {"hfw": saved[det.name]})


def _refuse(rec, msg: str, **common) -> MsgGenerator[None]:
    """Record a "refused" measurement (nothing moved), then raise :class:`AlignmentError`."""
    yield from record(rec, "alignment", action="refused", move_x=0.0, move_y=0.0, **common)
    raise AlignmentError(msg)


def _centre_feature(microscope, rec, s: _Settings) -> MsgGenerator[tuple[dict, int] | None]:
    """In a fine SEM frame, centre the most distinct feature of the central 70 % with a
    stable move (coincidence-neutral). Returns (history entry, moves made), or ``None``
    without a live RunEngine (no frame)."""
    yield from _set_hfw(microscope, s.hfw_fine)
    frame, pixel = yield from read_frame(microscope.sem, microscope.stage)
    if frame is None:
        return None
    fx, fy, contrast = select_feature(frame)
    fx, fy = fx * pixel, fy * pixel
    common = {"iteration": 0, "beam": "electron", "dx": fx, "dy": fy, "score": contrast,
              "hfw": s.hfw_fine}
    moves = 0
    if math.hypot(fx, fy) > s.tolerance:
        yield from stable_move(microscope, -fx, -fy, "electron")
        moves = 1
    yield from record(rec, "alignment", action="centre_feature", move_x=-fx, move_y=-fy,
                      **common)
    return ({"iteration": 0, "beam": "electron", "action": "centre_feature", "dx": fx,
             "dy": fy, "score": contrast}, moves)


def _recentre_sem(microscope, rec, ref: np.ndarray, frame: np.ndarray, pixel: float,
                  it: int, hfw: float, s: _Settings) -> MsgGenerator[tuple[dict, bool]]:
    """Register the SEM ``frame`` against ``ref`` (the first SEM frame at this field width;
    Gaussian-weighted centre) and re-centre with a stable move if it moved by more than the
    tolerance. Returns (history entry, moved)."""
    m = match_template(ref, frame, gaussian_weight(frame.shape, (4 * s.template_sigma,
                                                                 4 * s.template_sigma)),
                       max_dx=0.2 * frame.shape[1], max_dy=0.2 * frame.shape[0])
    sx, sy = m.dx * pixel, m.dy * pixel
    common = {"iteration": it, "beam": "electron", "dx": sx, "dy": sy, "score": m.score,
              "hfw": hfw}
    if m.score < s.min_score:
        yield from _refuse(rec, f"SEM match score {m.score:.2f} < {s.min_score}", **common)
    action, moved = "measure", False
    if math.hypot(sx, sy) > s.tolerance:
        if math.hypot(sx, sy) > s.max_step:
            yield from _refuse(rec, f"SEM step {math.hypot(sx, sy) * 1e6:.2f} um > "
                                    f"max_step", **common)
        yield from stable_move(microscope, -sx, -sy, "electron")
        action, moved = "stable_move", True
    mx_, my_ = (-sx, -sy) if moved else (0.0, 0.0)
    yield from record(rec, "alignment", action=action, move_x=mx_, move_y=my_, **common)
    return ({"iteration": it, "beam": "electron", "action": action, "dx": sx, "dy": sy,
             "score": m.score}, moved)


def _centre_ion(microscope, rec, ref: np.ndarray, pixel: float, it: int, hfw: float,
                s: _Settings) -> MsgGenerator[tuple[dict, bool]]:
    """Locate the SEM-centre patch of ``ref`` in a new ion frame (foreshortened to the ion
    view by the stage geometry; searched along the ion y, +-1.5 px in x) and remove its y
    offset with a vertical move. Returns (history entry, moved)."""
    geom = yield from read_geometry(microscope)
    pos = yield from read_stage_position(microscope)
    scale = _cross_beam_scale(pos, geom)
    frame_i, pixel_i = yield from read_frame(microscope.fib, microscope.stage)
    if pixel_i != pixel:
        raise AlignmentError(f"SEM and FIB pixel sizes differ ({pixel:g}, {pixel_i:g} m)"
                             ": set the same resolution on both detectors")
    warped, valid = foreshorten(ref, scale)
    weight = gaussian_weight(ref.shape, (s.template_sigma, s.template_sigma * abs(scale)))
    max_dy = 0.45 * ref.shape[0] if it == 1 else max(8.0, 4e-6 / pixel)
    m = match_template(warped, frame_i, weight * valid, max_dx=1.5, max_dy=max_dy)
    ix, iy = m.dx * pixel, m.dy * pixel
    common = {"iteration": it, "beam": "ion", "dx": ix, "dy": iy, "score": m.score,
              "hfw": hfw}
    if m.score < s.min_score:
        yield from _refuse(rec, f"ion match score {m.score:.2f} < min_score {s.min_score}: "
                                "not moving", **common)
    action, moved = "measure", False
    if abs(iy) > s.tolerance:
        if abs(iy) > s.max_step:
            yield from _refuse(rec, f"vertical step {abs(iy) * 1e6:.2f} um > max_step "
                                    f"{s.max_step * 1e6:.2f} um: not moving", **common)
        yield from vertical_move(microscope, -iy)
        action, moved = "vertical_move", True
    yield from record(rec, "alignment", action=action, move_x=0.0,
                      move_y=-iy if moved else 0.0, **common)
    return ({"iteration": it, "beam": "ion", "action": action, "dx": ix, "dy": iy,
             "score": m.score}, moved)


def _coincidence(microscope, rec, s: _Settings, saved: dict) -> MsgGenerator[dict]:
    """The search inside its run: read the field widths to restore into ``saved``, centre a
    feature (``s.select``), then iterate SEM re-centring and ion vertical moves until an
    iteration after the first needs no move."""
    for det in (microscope.sem, microscope.fib):
        saved[det.name] = float((yield from bps.rd(det.hfw)))
    history: list[dict] = []
    moves = 0
    if s.select:
        picked = yield from _centre_feature(microscope, rec, s)
        if picked is None:
            return {"converged": False, "iterations": 0, "moves": 0, "history": []}
        history.append(picked[0])
        moves += picked[1]
    sem_refs: dict[float, np.ndarray] = {}
    converged = False
    sem_off = ion_off = [math.nan, math.nan]
    it = 0
    for it in range(1, s.max_iterations + 1):
        hfw = s.hfw_coarse if it == 1 else s.hfw_fine
        yield from _set_hfw(microscope, hfw)
        moved = False
        frame, pixel = yield from read_frame(microscope.sem, microscope.stage)
        if frame is None:
            break
        if hfw in sem_refs:
            ref = sem_refs[hfw]
            entry, moved = yield from _recentre_sem(microscope, rec, ref, frame, pixel, it,
                                                    hfw, s)
            moves += moved
            history.append(entry)
            sem_off = [entry["dx"], entry["dy"]]
        else:
            sem_refs[hfw] = ref = np.asarray(frame, dtype=np.float32)
            sem_off = [0.0, 0.0]
        entry, ion_moved = yield from _centre_ion(microscope, rec, ref, pixel, it, hfw, s)
        moves += ion_moved
        moved = moved or ion_moved
        history.append(entry)
        ion_off = [entry["dx"], entry["dy"]]
        if not moved and it > 1:
            converged = True
            break
    return {"converged": converged, "iterations": it, "moves": moves,
            "sem_offset": sem_off, "ion_offset": ion_off, "history": history}


def find_coincidence(
    microscope: Readable,
    hfw_coarse: float = 150e-6,
    hfw_fine: float = 50e-6,
    max_iterations: int = 3,
    tolerance: float = 0.1e-6,
    select: bool = True,
    template_sigma: float = 16.0,
    min_score: float = 0.25,
    max_step: float = 100e-6,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[dict]:
    """Bring a feature to the coincidence point: centred in the SEM and in the FIB.

    1. (``select``) In a fine SEM frame the most distinct feature of the central 70 % is
       centred with a stable move (coincidence-neutral).
    2. Each iteration images with both beams (iteration 1 at ``hfw_coarse``, then at
       ``hfw_fine``); at the fine scale the SEM view is registered against the first fine
       SEM frame and re-centred with a stable move if it moved by more than ``tolerance``.
    3. The feature is located in the ion image by normalised cross-correlation with a
       Gaussian-weighted patch (``template_sigma`` px) of the SEM frame centre,
       foreshortened to the ion view by the stage geometry; the search runs along the ion
       y (where a height error displaces the feature) and +-1.5 px in x.
    4. A vertical move brings it to the ion centre. The plan stops when both beams agree
       within ``tolerance`` (m, image plane) without a move.

    The beams' scan rotation is assumed 0. Image settings of ``sem`` and ``fib`` (hfw) are
    restored at the end.

    Parameters
    ----------
    microscope : Readable
        The microscope device.
    hfw_coarse, hfw_fine : float
        Field widths (m) of the first and of the later iterations.
    max_iterations : int
        Measurement iterations at most (each: one frame per beam, then the moves).
    tolerance : float
        Offset (m) in either image below which no move is made.
    select : bool
        Pick and centre a distinct feature first (else the feature is the current SEM centre).
    template_sigma : float
        Width (px) of the Gaussian patch around the SEM centre that locates the feature.
    min_score : float
        Normalised cross-correlation below which the plan refuses to move.
    max_step : float
        Largest move (m, image plane) allowed in one step.
    md : dict, optional
        Extra run metadata.

    Returns
    -------
    dict
        ``uid`` (the run), ``converged``, ``iterations``, ``moves``, the last measured
        ``sem_offset`` and ``ion_offset`` (m, [x, y]) and ``history`` (one dict per
        measurement; for the "centre_feature" step ``score`` is the feature contrast, the
        local band-passed energy over the image median).
    """
    return (yield from _coincidence_run(
        "find_coincidence", microscope, hfw_coarse, hfw_fine, max_iterations, tolerance, select,
        template_sigma, min_score, max_step, md))


def _coincidence_run(plan_name: str, microscope, hfw_coarse, hfw_fine, max_iterations,
                     tolerance, select, template_sigma, min_score,
                     max_step, md) -> MsgGenerator[dict]:
    """Validate, then run the search as one run of ``plan_name``; the field widths are
    restored however it ends."""
    s = _Settings(
        hfw_coarse=positive("hfw_coarse", hfw_coarse), hfw_fine=positive("hfw_fine", hfw_fine),
        max_iterations=count("max_iterations", max_iterations),
        tolerance=positive("tolerance", tolerance), select=flag("select", select),
        template_sigma=positive("template_sigma", template_sigma),
        min_score=score("min_score", min_score), max_step=positive("max_step", max_step))
    md = check_md(md)
    sem, fib = microscope.sem, microscope.fib
    for det in (sem, fib):
        det_limits = yield from read_limits(det)
        check_settings(det_limits, {"hfw": s.hfw_coarse})
        check_settings(det_limits, {"hfw": s.hfw_fine})
    rec = microscope.recorders.alignment
    args = {"microscope": microscope, "hfw_coarse": s.hfw_coarse, "hfw_fine": s.hfw_fine,
            "max_iterations": s.max_iterations, "tolerance": s.tolerance, "select": s.select,
            "template_sigma": s.template_sigma, "min_score": s.min_score,
            "max_step": s.max_step}
    saved: dict = {}

    @bpp.stage_decorator([sem, fib])
    def inner():
        plan = bpp.finalize_wrapper(_coincidence(microscope, rec, s, saved),
                                    _restore_hfw(microscope, saved))
        return (yield from in_run(plan, run_md(plan_name, args, md, detectors=[sem, fib])))

    uid, result = yield from inner()
    return {"uid": uid, **result}


def eucentric_alignment(
    microscope: Readable,
    hfw_coarse: float = 150e-6,
    hfw_fine: float = 50e-6,
    max_iterations: int = 3,
    tolerance: float = 0.1e-6,
    select: bool = True,
    template_sigma: float = 16.0,
    min_score: float = 0.25,
    max_step: float = 100e-6,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[dict]:
    """Alias of :func:`find_coincidence` (OpenFIBSEM's name); same result.

    Parameters
    ----------
    microscope : Readable
        The microscope device.
    hfw_coarse, hfw_fine : float
        Field widths of the first and later iterations, metres.
    max_iterations : int
        Iterations at most.
    tolerance : float
        Offsets below this (metres) need no move.
    select : bool
        Pick the most distinct feature near the SEM centre first.
    template_sigma : float
        Width of the feature template's weight, pixels.
    min_score : float
        Refuse to move on a match score below this.
    max_step : float
        Refuse a move larger than this, metres.
    md : dict, optional
        Extra run metadata.
    """
    return (yield from _coincidence_run(
        "eucentric_alignment", microscope, hfw_coarse, hfw_fine, max_iterations, tolerance,
        select, template_sigma, min_score, max_step, md))
