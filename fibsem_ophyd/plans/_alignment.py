"""Alignment plans: beam-shift alignment to a reference, drift correction, coincidence.

Each plan opens one run: the frames it measured on (streams named after the beam,
"electron"/"ion", with the stage position) and one "alignment" event per measurement with
what was measured and done (``iteration``, ``beam``, ``action``, ``dx``/``dy`` m, ``score``,
``move_x``/``move_y`` m, ``hfw`` m). A bad match (score below ``min_score``) or a step beyond
``max_step`` is recorded with action "refused" and raises :class:`AlignmentError` before
anything moves; the run then closes with ``exit_status="fail"`` and stays readable.

Sign conventions (``fibsem_ophyd.geometry``): image +x right, +y up; a stage move of +d moves
the content by +d; a beam shift of +s moves the content by -s.
"""

import math
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
from bluesky.protocols import Readable
from bluesky.utils import MsgGenerator

from .. import geometry
from ..alignment import register
from ..alignment.locate import foreshorten, gaussian_weight, match_template, select_feature
from ..devices import make_recorder
from ._imaging import apply_image_settings
from ._movement import read_geometry, read_stage_position, stable_move, vertical_move

__all__ = [
    "AlignmentError",
    "acquire_reference",
    "align_beam_shift",
    "align_stage",
    "multi_step_alignment",
    "correct_drift",
    "find_coincidence",
    "eucentric_alignment",
]

_FIELDS = {
    "iteration": ("integer", None),
    "beam": ("string", None),
    "action": ("string", None),
    "dx": ("number", "m"),
    "dy": ("number", "m"),
    "score": ("number", None),
    "move_x": ("number", "m"),
    "move_y": ("number", "m"),
    "hfw": ("number", "m"),
}


class AlignmentError(RuntimeError):
    """An alignment refused to move (bad match, step too large) or could not correct."""


def _recorder():
    return make_recorder("alignment", _FIELDS)


def _record(rec, **values) -> MsgGenerator[dict]:
    args = []
    for key, value in values.items():
        args += [getattr(rec, key), value]
    yield from bps.mv(*args)
    return (yield from bps.trigger_and_read([rec], name="alignment"))


def _md(plan_name: str, detectors, plan_args: dict, md: dict | None) -> dict:
    out = {
        "plan_name": plan_name,
        "plan_args": {k: repr(v) for k, v in plan_args.items()},
        "detectors": [d.name for d in detectors],
        "hints": {},
    }
    out.update(md or {})
    return out


def _in_run(plan, md: dict) -> MsgGenerator[tuple[str, Any]]:
    """Run ``plan`` inside one run; return (run uid, what ``plan`` returned)."""
    out: dict = {}

    def capture():
        out["value"] = yield from plan

    uid = yield from bpp.run_wrapper(capture(), md=md)
    return uid, out.get("value")


def _frame(detector, stage, extra=()) -> MsgGenerator[tuple[np.ndarray, float]]:
    """Trigger and read ``detector`` (stream named after its beam; with ``extra`` readables,
    for runs whose stream of that name holds more); return (frame, pixel m)."""
    reading = yield from bps.trigger_and_read([detector, stage, *extra], name=detector.beam)
    frame = yield from bps.rd(detector.last_frame, default_value=None)
    key = f"{detector.name}_pixel_size"
    if reading and key in reading:
        pixel = float(reading[key]["value"])
    else:  # not a live RunEngine (e.g. plan inspection)
        res = yield from bps.rd(detector.resolution)
        pixel = float((yield from bps.rd(detector.hfw))) / float(res[0])
    return frame, pixel


def _positive(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or \
            not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    return float(value)


def _reference_array(reference: Any) -> np.ndarray:
    ref = np.asarray(getattr(reference, "data", reference))
    if ref.ndim != 2:
        raise ValueError(f"reference must be a 2-D image array, got shape {ref.shape}")
    return ref


def resolve_reference(detector, reference: Any) -> MsgGenerator[np.ndarray]:
    """The reference pixels: ``None`` -> the detector's current reference (set by
    :func:`acquire_reference`); a ``str`` -> the last frame of that detector in the stored run
    with that uid (loaded by the detector's ``reference`` signal); else a 2-D array."""
    if reference is None or isinstance(reference, str):
        if isinstance(reference, str):
            yield from bps.mv(detector.reference, reference)
        ref = yield from bps.rd(detector.reference, default_value=None)
        if ref is None:
            raise ValueError(f"{detector.name} has no reference yet: run acquire_reference "
                             "first or pass a reference (an array or a run uid)")
        return _reference_array(ref)
    return _reference_array(reference)


def acquire_reference(detector: Readable, hfw: float | None = None,
                      md: dict[str, Any] | None = None) -> MsgGenerator[np.ndarray]:
    """Acquire one frame (stored as a run, stream named after the beam) and return its pixels.

    The frame also becomes the detector's reference (``detector.reference``), which
    :func:`align_beam_shift`, :func:`align_stage` and :func:`correct_drift` use when they are
    given none: under the queue server, an ``acquire_reference`` item followed by an
    ``align_beam_shift`` item aligns to it. Inside a larger plan, the returned array can be
    passed on explicitly.

    Parameters
    ----------
    detector : Readable
        ``microscope.sem`` or ``microscope.fib``.
    hfw : float, optional
        Horizontal field width, metres.
    md : dict, optional
        Extra run metadata.

    Returns
    -------
    numpy.ndarray
        The frame (uint8, rows x columns).
    """
    stage = detector.root.stage
    settings = {} if hfw is None else {"hfw": hfw}

    def body():
        yield from apply_image_settings(detector, settings)
        frame, _ = yield from _frame(detector, stage)
        if frame is not None:
            yield from bps.mv(detector.reference, frame)
        return frame

    @bpp.stage_decorator([detector])
    def inner():
        return (yield from _in_run(body(), _md("acquire_reference", [detector], settings, md)))

    _, frame = yield from inner()
    return frame


def _check_boxes(exclude: Any) -> list[tuple[float, float, float, float]]:
    """Validate image-frame boxes ``[[x0, y0, x1, y1], ...]`` (m)."""
    if exclude is None:
        return []
    boxes = []
    for box in exclude:
        vals = [float(v) for v in box] if isinstance(box, (list, tuple)) else []
        if len(vals) != 4 or not all(math.isfinite(v) for v in vals) or \
                vals[2] <= vals[0] or vals[3] <= vals[1]:
            raise ValueError(f"an excluded region is [x0, y0, x1, y1] in metres with x1 > x0 "
                             f"and y1 > y0, got {box!r}")
        boxes.append(tuple(vals))
    return boxes


def exclusion_mask(shape: tuple[int, int], pixel: float, boxes) -> np.ndarray | None:
    """Registration weights that ignore image-frame boxes (m, +y up; e.g. freshly milled
    patterns, which the reference does not show), with 2 px soft edges; ``None`` if none."""
    if not boxes:
        return None
    h, w = shape
    col = (np.arange(w) + 0.5 - w / 2) * pixel
    row = (h / 2 - (np.arange(h) + 0.5)) * pixel
    keep = np.ones((h, w), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        inside_c = (col >= x0) & (col <= x1)
        inside_r = (row >= y0) & (row <= y1)
        keep &= ~(inside_r[:, None] & inside_c[None, :])
    if keep.mean() < 0.2:
        raise ValueError("the excluded regions cover more than 80 % of the field of view: "
                         "nothing left to align on")
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(keep.astype(np.float32), 2.0)


def alignment_bandpass(shape: tuple[int, int]) -> tuple[float, float]:
    """Registration band-pass (px) for a frame of ``shape``: the default (2, 32) px up to 768
    px wide, scaled with the width above, so the band covers the same fraction of the field
    (finer pixels carry more shot noise per pixel, not more structure to align on)."""
    from ..alignment.registration import DEFAULT_BANDPASS

    k = max(1.0, shape[1] / 768.0)
    return DEFAULT_BANDPASS[0] * k, DEFAULT_BANDPASS[1] * k


def shifted_mask(mask: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``mask`` moved with image content that shifted by (``dx``, ``dy``) px (+x right, +y
    up); what comes in from outside is kept (weight 1)."""
    from scipy.ndimage import shift

    return shift(mask, (-dy, dx), order=1, mode="constant", cval=1.0)


def _shift_limits(beam_dev) -> tuple[float, float]:
    lim = getattr(beam_dev.shift, "limits", None)
    if not lim or lim[0] >= lim[1]:
        return (-math.inf, math.inf)
    return float(lim[0]), float(lim[1])


def _align_loop(detector, ref: np.ndarray, rec, tolerance: float, max_iterations: int,
                min_score: float, max_step: float, use_stage: bool,
                subsystem: str = "beam_shift", extra=(), exclude=()) -> MsgGenerator[dict]:
    microscope = detector.root
    stage = microscope.stage
    beam_dev = microscope.beam(detector.beam)
    lo, hi = _shift_limits(beam_dev)
    hfw = float((yield from bps.rd(detector.hfw)))
    history = []
    converged = False
    dx = dy = score = math.nan
    for it in range(1, max_iterations + 1):
        frame, pixel = yield from _frame(detector, stage, extra)
        if frame is None:  # not a live RunEngine
            return {"converged": False, "iterations": 0, "history": []}
        if it == 1:  # the frame size and pixel stay the same within one loop
            mask = exclusion_mask(frame.shape, pixel, exclude)
            band = alignment_bandpass(frame.shape)
        reg = register(ref, frame, mask=mask, bandpass=band)
        if mask is not None and math.hypot(reg.dx, reg.dy) > 1.0:
            # the excluded regions moved with the sample: exclude them where they are now too
            reg = register(ref, frame, mask=mask * shifted_mask(mask, reg.dx, reg.dy),
                           bandpass=band)
        dx, dy, score = reg.dx * pixel, reg.dy * pixel, reg.score
        common = {"iteration": it, "beam": detector.beam, "dx": dx, "dy": dy, "score": score,
                  "hfw": hfw}
        if score < min_score:
            yield from _record(rec, action="refused", move_x=0.0, move_y=0.0, **common)
            raise AlignmentError(
                f"{detector.name}: match score {score:.2f} is below min_score {min_score:.2f} "
                f"(measured shift {dx * 1e6:.2f}, {dy * 1e6:.2f} um): not moving")
        if math.hypot(dx, dy) <= tolerance:
            yield from _record(rec, action="converged", move_x=0.0, move_y=0.0, **common)
            history.append({"iteration": it, "dx": dx, "dy": dy, "score": score,
                            "action": "converged"})
            converged = True
            break
        if math.hypot(dx, dy) > max_step:
            yield from _record(rec, action="refused", move_x=0.0, move_y=0.0, **common)
            raise AlignmentError(
                f"{detector.name}: measured shift {math.hypot(dx, dy) * 1e6:.2f} um exceeds "
                f"max_step {max_step * 1e6:.2f} um: not moving")
        if subsystem == "stage":
            action = "stage"
            yield from stable_move(microscope, -dx, -dy, detector.beam)
            yield from _record(rec, action=action, move_x=-dx, move_y=-dy, **common)
            history.append({"iteration": it, "dx": dx, "dy": dy, "score": score,
                            "action": action})
            continue
        if subsystem == "stage_vertical":
            action = "stage_vertical"
            yield from vertical_move(microscope, -dy, dx=-dx)
            yield from _record(rec, action=action, move_x=-dx, move_y=-dy, **common)
            history.append({"iteration": it, "dx": dx, "dy": dy, "score": score,
                            "action": action})
            continue
        shift = [float(v) for v in (yield from bps.rd(beam_dev.shift))]
        new = [shift[0] + dx, shift[1] + dy]  # a shift of +s moves the content by -s
        if all(lo <= v <= hi for v in new):
            action = "beam_shift"
            yield from bps.mv(beam_dev.shift, new)
        elif use_stage:
            action = "stage"
            yield from stable_move(microscope, -dx, -dy, detector.beam)
        else:
            yield from _record(rec, action="refused", move_x=0.0, move_y=0.0, **common)
            raise AlignmentError(
                f"{detector.name}: beam shift {new} would leave its limits [{lo:g}, {hi:g}] m "
                "and use_stage is False: not moving")
        yield from _record(rec, action=action, move_x=-dx, move_y=-dy, **common)
        history.append({"iteration": it, "dx": dx, "dy": dy, "score": score, "action": action})
    return {"converged": converged, "iterations": len(history), "dx": dx, "dy": dy,
            "score": score, "history": history}


def align_beam_shift(
    detector: Readable,
    reference: Any = None,
    tolerance: float = 0.05e-6,
    max_iterations: int = 3,
    min_score: float = 0.5,
    max_step: float = 20e-6,
    use_stage: bool = True,
    exclude: list[list[float]] | None = None,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[dict]:
    """Bring the current view of ``detector`` onto ``reference`` with the beam shift.

    Acquire, register against the reference, correct by beam shift (or by a stable stage
    move if the needed shift is outside the beam-shift limits), repeat until the measured
    offset is within ``tolerance``.

    Parameters
    ----------
    detector : Readable
        ``microscope.sem`` or ``microscope.fib``; frames use its current image settings.
    reference : array, str or None
        The reference image: a 2-D array of the same shape and pixel size as the frames
        (e.g. returned by :func:`acquire_reference`), the uid of a stored run (its last frame
        of this detector is loaded; how a queue-server item names its reference), or
        ``None`` (default) for the detector's current reference, which
        :func:`acquire_reference` sets.
    tolerance : float
        Offset (m) below which the view counts as aligned.
    max_iterations : int
        Measurements at most.
    min_score : float
        Registration score (0..1) below which the plan refuses to move.
    max_step : float
        Largest correction (m) allowed in one step; a larger measured offset is refused.
    use_stage : bool
        Fall back to a stable stage move when the beam shift would leave its limits.
    exclude : list of [x0, y0, x1, y1], optional
        Image-frame regions (m, centred, +y up) the registration ignores: what changed
        since the reference was taken, e.g. freshly milled patterns (they would pull the
        measured shift towards themselves).
    md : dict, optional
        Extra run metadata.

    Returns
    -------
    dict
        ``uid`` (the run), ``converged``, ``iterations``, last ``dx``, ``dy`` (m), ``score``
        and ``history``.

    Raises
    ------
    AlignmentError
        Bad match, too large a step, or the shift out of range without ``use_stage``.
    RegistrationError
        The reference does not fit the frames (shape) or has no structure.
    """
    return (yield from _aligned_run(
        "align_beam_shift", detector, reference, tolerance, max_iterations, min_score, max_step,
        bool(use_stage), "beam_shift", md, exclude))


def _aligned_run(plan_name: str, detector, reference, tolerance, max_iterations, min_score,
                 max_step, use_stage: bool, subsystem: str, md,
                 exclude=None) -> MsgGenerator[dict]:
    """Validate, then run the measure-and-correct loop as one recorded run."""
    boxes = _check_boxes(exclude)
    tolerance = _positive("tolerance", tolerance)
    max_step = _positive("max_step", max_step)
    if int(max_iterations) < 1:
        raise ValueError(f"max_iterations must be >= 1, got {max_iterations!r}")
    ref = yield from resolve_reference(detector, reference)
    rec = _recorder()
    args = {"detector": detector.name, "subsystem": subsystem, "tolerance": tolerance,
            "max_iterations": max_iterations, "min_score": min_score, "max_step": max_step,
            "use_stage": use_stage, "exclude": boxes}

    @bpp.stage_decorator([detector])
    def inner():
        loop = _align_loop(detector, ref, rec, tolerance, int(max_iterations),
                           float(min_score), max_step, use_stage, subsystem=subsystem,
                           exclude=boxes)
        return (yield from _in_run(loop, _md(plan_name, [detector], args, md)))

    uid, result = yield from inner()
    return {"uid": uid, **result}


def align_stage(
    detector: Readable,
    reference: Any = None,
    subsystem: str = "stage",
    tolerance: float = 0.05e-6,
    max_iterations: int = 3,
    min_score: float = 0.5,
    max_step: float = 50e-6,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[dict]:
    """Align to ``reference`` by moving the stage instead of the beam.

    Parameters
    ----------
    detector : Readable
        ``microscope.sem`` or ``microscope.fib``.
    reference : array, str or None
        The reference image: a 2-D array of the same shape and pixel size as the frames
        (e.g. returned by :func:`acquire_reference`), the uid of a stored run (its last frame
        of this detector is loaded; how a queue-server item names its reference), or
        ``None`` (default) for the detector's current reference, which
        :func:`acquire_reference` sets.
    subsystem : str
        "stage": stable moves in the detector's view (OpenFIBSEM's STAGE);
        "stage_vertical": vertical moves, ion view only (OpenFIBSEM's STAGE_VERTICAL: restores
        coincidence; the x offset is taken out with the stage x).
    tolerance : float
        Stop when the measured shift is below this, metres.
    max_iterations : int
        Measurements at most.
    min_score : float
        Refuse to move on a registration score below this (0..1).
    max_step : float
        Refuse a correction larger than this, metres.
    md : dict, optional
        Extra run metadata.

    Returns
    -------
    dict
        As :func:`align_beam_shift`.
    """
    if subsystem not in ("stage", "stage_vertical"):
        raise ValueError(f"subsystem must be 'stage' or 'stage_vertical', got {subsystem!r}")
    if subsystem == "stage_vertical" and detector.beam != "ion":
        raise ValueError("stage_vertical alignment works in the ion view only")
    return (yield from _aligned_run(
        "align_stage", detector, reference, tolerance, max_iterations, min_score, max_step,
        True, subsystem, md))


def multi_step_alignment(
    detector: Readable,
    reference: Any = None,
    steps: int = 3,
    tolerance: float = 0.02e-6,
    min_score: float = 0.5,
    max_step: float = 20e-6,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[dict]:
    """OpenFIBSEM's multi-step beam-shift alignment: up to ``steps`` measure-and-correct
    rounds against ``reference``, stopping early once within ``tolerance``.

    Parameters
    ----------
    detector : Readable
        ``microscope.sem`` or ``microscope.fib``.
    reference : array, str or None
        The reference image: a 2-D array of the same shape and pixel size as the frames
        (e.g. returned by :func:`acquire_reference`), the uid of a stored run (its last frame
        of this detector is loaded; how a queue-server item names its reference), or
        ``None`` (default) for the detector's current reference, which
        :func:`acquire_reference` sets.
    steps : int
        Rounds at most.
    tolerance : float
        Stop when the measured shift is below this, metres.
    min_score : float
        Refuse to move on a registration score below this (0..1).
    max_step : float
        Refuse a correction larger than this, metres.
    md : dict, optional
        Extra run metadata.
    """
    return (yield from align_beam_shift(
        detector, reference, tolerance=tolerance, max_iterations=steps, min_score=min_score,
        max_step=max_step, use_stage=True, md={"alignment_kind": "multi_step", **(md or {})}))


def correct_drift(
    detector: Readable,
    reference: Any = None,
    tolerance: float = 0.05e-6,
    max_iterations: int = 2,
    min_score: float = 0.5,
    max_step: float = 5e-6,
    use_stage: bool = True,
    exclude: list[list[float]] | None = None,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[dict]:
    """Correct the drift since ``reference`` was taken (between workflow stages).

    A thin wrapper of :func:`align_beam_shift` with drift-sized defaults (at most 5 um per
    step, two measurements); result as there.

    Parameters
    ----------
    detector : Readable
        ``microscope.sem`` or ``microscope.fib``.
    reference : array, str or None
        The reference image: a 2-D array of the same shape and pixel size as the frames
        (e.g. returned by :func:`acquire_reference`), the uid of a stored run (its last frame
        of this detector is loaded; how a queue-server item names its reference), or
        ``None`` (default) for the detector's current reference, which
        :func:`acquire_reference` sets.
    tolerance : float
        Stop when the measured shift is below this, metres.
    max_iterations : int
        Measurements at most.
    min_score : float
        Refuse to move on a registration score below this (0..1).
    max_step : float
        Refuse a correction larger than this, metres.
    use_stage : bool
        Fall back to a stable move beyond the beam-shift range.
    exclude : list of [x0, y0, x1, y1], optional
        Image-frame regions (m, centred, +y up) the registration ignores: what changed
        since the reference was taken, e.g. freshly milled patterns (they would pull the
        measured shift towards themselves).
    md : dict, optional
        Extra run metadata.
    """
    _md_ = {"alignment_kind": "drift", **(md or {})}
    return (yield from align_beam_shift(detector, reference, tolerance=tolerance,
                                        max_iterations=max_iterations, min_score=min_score,
                                        max_step=max_step, use_stage=use_stage,
                                        exclude=exclude, md=_md_))


# ------------------------------------------------------------------------------------------
# coincidence


def _cross_beam_scale(pos: dict, geom: geometry.SystemGeometry) -> float:
    """Ratio of the ion to the electron image scale of the sample's in-plane y."""
    r, t = math.radians(pos["r"]), math.radians(pos["t"])
    _, ye, _ = geometry.stable_move_delta(0.0, 1.0, geometry.ELECTRON, r, t, geom)
    _, yi, _ = geometry.stable_move_delta(0.0, 1.0, geometry.ION, r, t, geom)
    return ye / yi


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
    hfw_coarse = _positive("hfw_coarse", hfw_coarse)
    hfw_fine = _positive("hfw_fine", hfw_fine)
    tolerance = _positive("tolerance", tolerance)
    max_step = _positive("max_step", max_step)
    template_sigma = _positive("template_sigma", template_sigma)
    if int(max_iterations) < 1:
        raise ValueError(f"max_iterations must be >= 1, got {max_iterations!r}")
    sem, fib = microscope.sem, microscope.fib
    for det in (sem, fib):
        det.hfw.check_value(hfw_coarse)
        det.hfw.check_value(hfw_fine)
    stage = microscope.stage
    rec = _recorder()
    args = {"hfw_coarse": hfw_coarse, "hfw_fine": hfw_fine, "max_iterations": max_iterations,
                "tolerance": tolerance, "select": select, "template_sigma": template_sigma,
                "min_score": min_score, "max_step": max_step}
    saved: dict = {}

    def set_hfw(hfw):
        for det in (sem, fib):
            yield from apply_image_settings(det, {"hfw": hfw})

    def refuse(msg, **common):
        yield from _record(rec, action="refused", move_x=0.0, move_y=0.0, **common)
        raise AlignmentError(msg)

    def body():
        for det in (sem, fib):
            saved[det.name] = float((yield from bps.rd(det.hfw)))
        history: list[dict] = []
        moves = 0
        if select:
            yield from set_hfw(hfw_fine)
            frame, pixel = yield from _frame(sem, stage)
            if frame is None:
                return {"converged": False, "iterations": 0, "moves": 0, "history": []}
            fx, fy, contrast = select_feature(frame)
            fx, fy = fx * pixel, fy * pixel
            common = {"iteration": 0, "beam": "electron", "dx": fx, "dy": fy, "score": contrast,
                          "hfw": hfw_fine}
            if math.hypot(fx, fy) > tolerance:
                yield from stable_move(microscope, -fx, -fy, "electron")
                moves += 1
            yield from _record(rec, action="centre_feature", move_x=-fx, move_y=-fy, **common)
            history.append({"iteration": 0, "beam": "electron", "action": "centre_feature",
                            "dx": fx, "dy": fy, "score": contrast})
        sem_refs: dict[float, np.ndarray] = {}
        converged = False
        sem_off = ion_off = [math.nan, math.nan]
        it = 0
        for it in range(1, int(max_iterations) + 1):
            hfw = hfw_coarse if it == 1 else hfw_fine
            yield from set_hfw(hfw)
            moved = False
            # --- SEM: keep the feature centred (registration against the first frame)
            frame, pixel = yield from _frame(sem, stage)
            if frame is None:
                break
            if hfw in sem_refs:
                ref = sem_refs[hfw]
                m = match_template(ref, frame, gaussian_weight(frame.shape, (4 * template_sigma,
                                                                             4 * template_sigma)),
                                   max_dx=0.2 * frame.shape[1], max_dy=0.2 * frame.shape[0])
                sx, sy = m.dx * pixel, m.dy * pixel
                common = {"iteration": it, "beam": "electron", "dx": sx, "dy": sy, "score": m.score,
                              "hfw": hfw}
                if m.score < min_score:
                    yield from refuse(f"SEM match score {m.score:.2f} < {min_score}", **common)
                action = "measure"
                if math.hypot(sx, sy) > tolerance:
                    if math.hypot(sx, sy) > max_step:
                        yield from refuse(f"SEM step {math.hypot(sx, sy) * 1e6:.2f} um > "
                                          f"max_step", **common)
                    yield from stable_move(microscope, -sx, -sy, "electron")
                    action, moved = "stable_move", True
                    moves += 1
                mx_, my_ = (-sx, -sy) if moved else (0.0, 0.0)
                yield from _record(rec, action=action, move_x=mx_, move_y=my_, **common)
                history.append({"iteration": it, "beam": "electron", "action": action,
                                "dx": sx, "dy": sy, "score": m.score})
                sem_off = [sx, sy]
            else:
                sem_refs[hfw] = ref = np.asarray(frame, dtype=np.float32)
                sem_off = [0.0, 0.0]
            # --- FIB: locate the SEM-centre patch, foreshortened to the ion view
            geom = yield from read_geometry(microscope)
            pos = yield from read_stage_position(microscope)
            scale = _cross_beam_scale(pos, geom)
            frame_i, pixel_i = yield from _frame(fib, stage)
            if pixel_i != pixel:
                raise AlignmentError(f"SEM and FIB pixel sizes differ ({pixel:g}, {pixel_i:g} m)"
                                     ": set the same resolution on both detectors")
            warped, valid = foreshorten(ref, scale)
            weight = gaussian_weight(ref.shape, (template_sigma, template_sigma * abs(scale)))
            max_dy = 0.45 * ref.shape[0] if it == 1 else max(8.0, 4e-6 / pixel)
            m = match_template(warped, frame_i, weight * valid, max_dx=1.5, max_dy=max_dy)
            ix, iy = m.dx * pixel, m.dy * pixel
            common = {"iteration": it, "beam": "ion", "dx": ix, "dy": iy, "score": m.score,
                      "hfw": hfw}
            if m.score < min_score:
                yield from refuse(f"ion match score {m.score:.2f} < min_score {min_score}: "
                                  "not moving", **common)
            action = "measure"
            if abs(iy) > tolerance:
                if abs(iy) > max_step:
                    yield from refuse(f"vertical step {abs(iy) * 1e6:.2f} um > max_step "
                                      f"{max_step * 1e6:.2f} um: not moving", **common)
                yield from vertical_move(microscope, -iy)
                action, moved = "vertical_move", True
                moves += 1
            yield from _record(rec, action=action, move_x=0.0, move_y=-iy if moved else 0.0,
                               **common)
            history.append({"iteration": it, "beam": "ion", "action": action, "dx": ix,
                            "dy": iy, "score": m.score})
            ion_off = [ix, iy]
            if not moved and it > 1:
                converged = True
                break
        return {"converged": converged, "iterations": it, "moves": moves,
                "sem_offset": sem_off, "ion_offset": ion_off, "history": history}

    def restore():
        for det in (sem, fib):
            if det.name in saved:
                yield from apply_image_settings(det, {"hfw": saved[det.name]})

    @bpp.stage_decorator([sem, fib])
    def inner():
        plan = bpp.finalize_wrapper(body(), restore())
        return (yield from _in_run(plan, _md("find_coincidence", [sem, fib], args, md)))

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
    return (yield from find_coincidence(
        microscope, hfw_coarse=hfw_coarse, hfw_fine=hfw_fine, max_iterations=max_iterations,
        tolerance=tolerance, select=select, template_sigma=template_sigma,
        min_score=min_score, max_step=max_step, md=md))
