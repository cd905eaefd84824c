"""Alignment plans: a reference frame, beam-shift and stage alignment to it, drift correction.

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

from ..alignment import register
from ..alignment.masks import alignment_bandpass, check_boxes, exclusion_mask, shifted_mask
from ._common import (
    beam_device,
    check_md,
    count,
    flag,
    in_run,
    microscope_of,
    positive,
    read_frame,
    read_limits,
    record,
    run_md,
    score,
)
from ._imaging import check_image_settings, write_image_settings
from ._movement import stable_move, vertical_move

__all__ = [
    "AlignmentError",
    "acquire_reference",
    "align_beam_shift",
    "align_loop",
    "align_stage",
    "multi_step_alignment",
    "correct_drift",
    "resolve_reference",
    "check_reference",
    "frame_shape",
]


class AlignmentError(RuntimeError):
    """An alignment refused to move (bad match, step too large) or could not correct."""


def _reference_array(reference: Any) -> np.ndarray:
    ref = np.asarray(getattr(reference, "data", reference))
    if ref.ndim != 2:
        raise ValueError(f"reference must be a 2-D image array, got shape {ref.shape}")
    return ref


def frame_shape(detector) -> MsgGenerator[tuple[int, int]]:
    """(rows, columns) of the detector's next frame: its resolution, cropped by its reduced
    area."""
    w, h = (int(v) for v in (yield from bps.rd(detector.resolution)))
    area = yield from bps.rd(detector.reduced_area, default_value=None)
    if area is None:
        return h, w
    _, _, width, height = (float(v) for v in area)
    return max(1, int(round(height * h))), max(1, int(round(width * w)))


def check_reference(ref: np.ndarray, shape: tuple[int, int], detector_name: str) -> None:
    """``ValueError`` unless ``ref`` can be registered against ``detector_name``'s frames of
    ``shape`` (rows, columns): the same shape, finite, not uniform (a frame taken with the
    beam blanked or off matches nothing). Checked before any frame is taken, so a bad
    reference is refused before the beam or the stage is touched."""
    if ref.shape != tuple(shape):
        raise ValueError(f"the alignment reference has shape {ref.shape} but {detector_name}'s "
                         f"frames have shape {tuple(shape)} (rows, columns): take the "
                         "reference with the detector's resolution and reduced area")
    values = ref.astype(float, copy=False)
    if not np.all(np.isfinite(values)):
        raise ValueError("the alignment reference holds NaN or inf values")
    if float(values.max()) == float(values.min()):
        raise ValueError(f"the alignment reference is uniform (every pixel {values.flat[0]:g}): "
                         "nothing to align to; was it taken with the beam blanked or off?")


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
    stage = microscope_of(detector).stage
    settings = {} if hfw is None else {"hfw": hfw}
    _md = run_md("acquire_reference", {"detector": detector, **settings}, md,
                 detectors=[detector])
    checked = yield from check_image_settings(detector, settings)  # before staging

    def body():
        yield from write_image_settings(detector, checked)
        frame, _ = yield from read_frame(detector, stage)
        if frame is not None:
            yield from bps.mv(detector.reference, frame)
        return frame

    @bpp.stage_decorator([detector])
    def inner():
        return (yield from in_run(body(), _md))

    _, frame = yield from inner()
    return frame


def _shift_limits(beam_dev) -> MsgGenerator[tuple[float, float]]:
    """The beam shift's (low, high) per axis, m (the beam's ``limits``); +-inf if none."""
    lim = (yield from read_limits(beam_dev))["shift"]["limits"]
    if not lim or lim[0] >= lim[1]:
        return (-math.inf, math.inf)
    return float(lim[0]), float(lim[1])


def align_loop(detector, ref: np.ndarray, rec, tolerance: float, max_iterations: int,
               min_score: float, max_step: float, use_stage: bool,
               subsystem: str = "beam_shift", extra=(), exclude=()) -> MsgGenerator[dict]:
    """The measure-and-correct loop inside an open run (a sub-plan: also
    :func:`~fibsem_ophyd.plans.mill_stages` aligns with it between stages).

    Each iteration reads a frame of ``detector`` (with the readables ``extra``), registers it
    against ``ref`` (ignoring the image-frame boxes ``exclude``, m) and records one
    "alignment" event with ``rec``; it corrects with ``subsystem`` ("beam_shift", "stage" or
    "stage_vertical"), refusing (:class:`AlignmentError`) a score below ``min_score`` or a
    step above ``max_step`` (m). Returns ``converged``, ``iterations``, the last ``dx``,
    ``dy`` (m), ``score`` and ``history``.
    """
    microscope = microscope_of(detector)
    stage = microscope.stage
    beam_dev = beam_device(microscope, detector.beam)
    lo, hi = yield from _shift_limits(beam_dev)
    hfw = float((yield from bps.rd(detector.hfw)))
    history = []
    converged = False
    dx = dy = score = math.nan
    for it in range(1, max_iterations + 1):
        frame, pixel = yield from read_frame(detector, stage, extra)
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
            yield from record(rec, "alignment", action="refused", move_x=0.0, move_y=0.0, **common)
            raise AlignmentError(
                f"{detector.name}: match score {score:.2f} is below min_score {min_score:.2f} "
                f"(measured shift {dx * 1e6:.2f}, {dy * 1e6:.2f} um): not moving")
        if math.hypot(dx, dy) <= tolerance:
            yield from record(rec, "alignment", action="converged", move_x=0.0, move_y=0.0,
                              **common)
            history.append({"iteration": it, "dx": dx, "dy": dy, "score": score,
                            "action": "converged"})
            converged = True
            break
        if math.hypot(dx, dy) > max_step:
            yield from record(rec, "alignment", action="refused", move_x=0.0, move_y=0.0, **common)
            raise AlignmentError(
                f"{detector.name}: measured shift {math.hypot(dx, dy) * 1e6:.2f} um exceeds "
                f"max_step {max_step * 1e6:.2f} um: not moving")
        if subsystem == "stage":
            action = "stage"
            yield from stable_move(microscope, -dx, -dy, detector.beam)
            yield from record(rec, "alignment", action=action, move_x=-dx, move_y=-dy, **common)
            history.append({"iteration": it, "dx": dx, "dy": dy, "score": score,
                            "action": action})
            continue
        if subsystem == "stage_vertical":
            action = "stage_vertical"
            yield from vertical_move(microscope, -dy, dx=-dx)
            yield from record(rec, "alignment", action=action, move_x=-dx, move_y=-dy, **common)
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
            yield from record(rec, "alignment", action="refused", move_x=0.0, move_y=0.0, **common)
            raise AlignmentError(
                f"{detector.name}: beam shift {new} would leave its limits [{lo:g}, {hi:g}] m "
                "and use_stage is False: not moving")
        yield from record(rec, "alignment", action=action, move_x=-dx, move_y=-dy, **common)
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
        use_stage, "beam_shift", md, exclude))


def _aligned_run(plan_name: str, detector, reference, tolerance, max_iterations, min_score,
                 max_step, use_stage: bool, subsystem: str, md, exclude=None,
                 plan_args: dict | None = None) -> MsgGenerator[dict]:
    """Validate, then run the measure-and-correct loop as one run of ``plan_name`` whose
    ``plan_args`` are ``plan_args`` (default: the loop's own settings)."""
    boxes = check_boxes(exclude)
    tolerance = positive("tolerance", tolerance)
    max_step = positive("max_step", max_step)
    iterations_name = "steps" if plan_args is not None and "steps" in plan_args \
        else "max_iterations"
    max_iterations = count(iterations_name, max_iterations)
    min_score = score("min_score", min_score)
    use_stage = flag("use_stage", use_stage)
    md = check_md(md)
    ref = yield from resolve_reference(detector, reference)
    rec = microscope_of(detector).recorders.alignment
    if plan_args is None:
        plan_args = {"detector": detector, "subsystem": subsystem, "tolerance": tolerance,
                     "max_iterations": max_iterations, "min_score": min_score,
                     "max_step": max_step, "use_stage": use_stage, "exclude": boxes}

    @bpp.stage_decorator([detector])
    def inner():
        loop = align_loop(detector, ref, rec, tolerance, max_iterations,
                          min_score, max_step, use_stage, subsystem=subsystem,
                          exclude=boxes)
        return (yield from in_run(loop, run_md(plan_name, plan_args, md,
                                               detectors=[detector])))

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
    args = {"detector": detector, "steps": steps, "tolerance": tolerance,
            "min_score": min_score, "max_step": max_step}
    return (yield from _aligned_run(
        "multi_step_alignment", detector, reference, tolerance, steps, min_score, max_step,
        True, "beam_shift", {"alignment_kind": "multi_step", **(md or {})}, plan_args=args))


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
    return (yield from _aligned_run(
        "correct_drift", detector, reference, tolerance, max_iterations, min_score, max_step,
        use_stage, "beam_shift", {"alignment_kind": "drift", **(md or {})}, exclude))


