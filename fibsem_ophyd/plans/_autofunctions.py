"""Auto functions: autofocus by a working-distance sweep, auto contrast/brightness.

Each plan opens one run: the frames it measured on (one stream named after the beam,
"electron"/"ion") and one event per measurement in a recorder stream ("autofocus" or
"contrast_brightness") with what was measured and set. Bad arguments raise ``ValueError``
before anything moves.
"""

import math
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
from bluesky.protocols import Readable
from bluesky.utils import MsgGenerator

from .. import validate
from ..alignment.focus import METRICS, fit_peak, sharpness
from ._common import (
    beam_device,
    in_run,
    microscope_of,
    positive,
    read_limits,
    record,
    run_md,
)

__all__ = ["autofocus", "auto_contrast_brightness"]

#: Gaussian pre-smoothing (px) of the frames before the sharpness metric (shot noise).
_SMOOTH = 1.0
#: Fraction of the score range above which sweep samples enter the peak fit.
_FIT_LEVEL = 0.4
#: How often a coarse sweep whose best sample is at its edge is re-centred there.
_MAX_RECENTRES = 2

def _grab(detector) -> MsgGenerator[np.ndarray | None]:
    """Trigger and read ``detector`` into the stream named after its beam; return the pixels."""
    yield from bps.trigger_and_read([detector], name=detector.beam)
    return (yield from bps.rd(detector.last_frame, default_value=None))


def _steps(name: str, value: Any) -> int:
    return validate.count(name, value, minimum=3)


def _sweep_points(centre: float, half_range: float, steps: int, spec: dict) -> list[float]:
    """``steps`` working distances over ``centre +- half_range``, those within the limits
    (``spec``: the working distance's, from the beam's ``limits``)."""
    out = []
    for wd in np.linspace(centre - half_range, centre + half_range, steps):
        try:
            validate.setting(spec["name"], float(wd), spec)
        except ValueError:
            continue
        out.append(float(wd))
    return out


def autofocus(
    detector: Readable,
    coarse_range: float = 100e-6,
    coarse_steps: int = 9,
    fine_range: float = 20e-6,
    fine_steps: int = 9,
    metric: str = "tenengrad",
    md: dict[str, Any] | None = None,
) -> MsgGenerator[dict]:
    """Focus ``detector``'s beam by sweeping its working distance, coarse then fine.

    1. Coarse: ``coarse_steps`` frames at working distances evenly over the current
       WD +- ``coarse_range``. If the sharpest is at an end of the sweep, the sweep is
       re-centred there (at most twice).
    2. Fine: ``fine_steps`` frames over the coarse estimate +- ``fine_range``.
    3. The peak of the fine sweep is fitted (a Gaussian, least squares over the samples in
       the upper 60 % of the score range, so a flat top within the depth of field is centred
       by its flanks), set, and one verification frame is taken there.

    Frames use the detector's current image settings (choose an ``hfw`` whose pixel is small
    against the blur to be resolved: the depth of field is about pixel / aperture angle;
    a reduced area or a lower resolution makes the sweep faster). Working distances outside
    the beam's limits are skipped. If the plan fails, the initial working distance is
    restored.

    Parameters
    ----------
    detector : Readable
        ``microscope.sem`` or ``microscope.fib``.
    coarse_range, fine_range : float
        Half-widths (m) of the coarse and fine sweeps.
    coarse_steps, fine_steps : int
        Frames per sweep (>= 3).
    metric : str
        Sharpness metric: "tenengrad", "variance" or "laplacian"
        (:mod:`fibsem_ophyd.alignment.focus`).
    md : dict, optional
        Extra run metadata.

    Returns
    -------
    dict
        ``uid`` (the run), ``working_distance`` (m, set), ``initial_working_distance`` (m),
        ``score`` (of the verification frame), ``at_edge`` (the fine peak was at a sweep end),
        ``coarse`` and ``fine`` (lists of ``[wd, score]``).

    Notes
    -----
    Events, stream "autofocus": ``sweep`` ("coarse"/"fine"/"final"), ``step``,
    ``working_distance`` (m), ``score``, ``action`` ("measure", or "set" for the
    verification frame).
    """
    coarse_range = positive("coarse_range", coarse_range)
    fine_range = positive("fine_range", fine_range)
    coarse_steps = _steps("coarse_steps", coarse_steps)
    fine_steps = _steps("fine_steps", fine_steps)
    if metric not in METRICS:
        raise ValueError(f"unknown sharpness metric {metric!r}; known: {sorted(METRICS)}")
    beam_dev = beam_device(microscope_of(detector), detector.beam)
    wd_signal = beam_dev.working_distance
    rec = microscope_of(detector).recorders.autofocus
    args = {"detector": detector, "coarse_range": coarse_range,
            "coarse_steps": coarse_steps, "fine_range": fine_range, "fine_steps": fine_steps,
            "metric": metric}
    state: dict = {"done": False}

    def sweep(name: str, points: list[float], out: list):
        for k, wd in enumerate(points):
            yield from bps.mv(wd_signal, wd)
            frame = yield from _grab(detector)
            if frame is None:  # not a live RunEngine (plan inspection)
                return False
            score = sharpness(frame, metric, smooth=_SMOOTH)
            out.append([wd, score])
            yield from record(rec, "autofocus", sweep=name, step=k, working_distance=wd,
                               score=score, action="measure")
        return True

    def body():
        wd0 = float((yield from bps.rd(wd_signal)))
        state["wd0"] = wd0
        wd_spec = (yield from read_limits(beam_dev))["working_distance"]
        coarse: list = []
        centre = wd0
        for _ in range(_MAX_RECENTRES + 1):
            points = _sweep_points(centre, coarse_range, coarse_steps, wd_spec)
            if len(points) < 3:
                raise ValueError(f"fewer than 3 coarse working distances around {centre:g} m "
                                 f"lie within the limits of {wd_signal.name}")
            samples: list = []
            if not (yield from sweep("coarse", points, samples)):
                return {"working_distance": wd0, "initial_working_distance": wd0}
            coarse += samples
            fit = fit_peak([p[0] for p in samples], [p[1] for p in samples], "gaussian",
                           level=_FIT_LEVEL)
            moved = abs(fit.x - centre) > 1e-12
            centre = fit.x
            if not fit.at_edge or not moved:  # (not moved: the edge is a WD limit)
                break
        fine: list = []
        points = _sweep_points(centre, fine_range, fine_steps, wd_spec)
        if len(points) < 3:
            raise ValueError(f"fewer than 3 fine working distances around {centre:g} m lie "
                             f"within the limits of {wd_signal.name}")
        yield from sweep("fine", points, fine)
        fit = fit_peak([p[0] for p in fine], [p[1] for p in fine], "gaussian", level=_FIT_LEVEL)
        best = float(fit.x)
        yield from bps.mv(wd_signal, best)
        frame = yield from _grab(detector)
        score = sharpness(frame, metric, smooth=_SMOOTH)
        yield from record(rec, "autofocus", sweep="final", step=0, working_distance=best,
                           score=score, action="set")
        state["done"] = True
        return {"working_distance": best, "initial_working_distance": wd0, "score": score,
                "at_edge": bool(fit.at_edge), "coarse": coarse, "fine": fine}

    def restore():
        if not state["done"] and "wd0" in state:
            yield from bps.mv(wd_signal, state["wd0"])

    @bpp.stage_decorator([detector])
    def inner():
        plan = bpp.finalize_wrapper(body(), restore())
        return (yield from in_run(plan, run_md("autofocus", args, md, detectors=[detector])))

    uid, result = yield from inner()
    return {"uid": uid, "metric": metric, **result}


# ------------------------------------------------------------------------------------------
# contrast / brightness

#: Target 0.5 - 99.5 % grey range (fraction of full scale) of a well-set frame.
_TARGET_SPREAD = 0.5
#: Accepted spread range: contrast is left alone inside it.
_SPREAD_OK = (0.3, 0.7)
#: Initial assumption of the contrast response: decades of gain per unit of the control.
_GAIN_DECADES = 1.5
#: Smallest accepted grey range (unless the contrast is at its maximum): no flat frames.
_MIN_SPREAD = 0.15
#: Largest contrast change in one iteration.
_MAX_DC = 0.3
#: Contrast decrease (at least) while the saturation limit is exceeded.
_SAT_DC = 0.1
#: Brightness kept this far from its ends when the contrast can be lowered instead.
_B_MARGIN = 0.05


def _frame_stats(frame: np.ndarray) -> dict:
    full = 255.0 if frame.dtype == np.uint8 else float(np.iinfo(frame.dtype).max) \
        if np.issubdtype(frame.dtype, np.integer) else 1.0
    f = frame.astype(np.float32) / np.float32(full)
    lo, med, hi = np.percentile(f, [0.5, 50.0, 99.5])
    return {"mean": float(f.mean()), "median": float(med), "lo": float(lo), "hi": float(hi),
            "saturation": float(np.count_nonzero(frame >= full)) / frame.size,
            "dark": float(np.count_nonzero(frame <= 0)) / frame.size}


def auto_contrast_brightness(
    detector: Readable,
    target_mean: float = 0.5,
    max_saturation: float = 0.005,
    max_iterations: int = 8,
    mean_tolerance: float = 0.05,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[dict]:
    """Set ``detector``'s brightness and contrast from its own frames.

    Each iteration takes a frame (current image settings) and measures the mean grey level
    (0..1), the saturated (full-scale) and black fractions and the 0.5-99.5 % grey range.
    It stops when the mean is within ``mean_tolerance`` of ``target_mean``, the saturated
    fraction is at most ``max_saturation`` and the grey range is at least 0.15 (no flat
    frames; waived at contrast 1). Otherwise:

    * contrast: changed so the grey range becomes ~0.5 when it is outside 0.3..0.7 (unless
      one end clips: that is a brightness error first), narrowed when both ends clip, and
      lowered by at least 0.1 while the saturation limit is exceeded with the level about
      right. The gain is assumed exponential in the control (1.5 decades per unit at first,
      then the slope measured between unclipped frames); at most 0.3 per step;
    * brightness (an offset of the grey level, the gain applied about it): set so the mean
      lands on the target after the contrast change (the median when much is clipped; a
      bounded step when the median itself clips); if that needs a brightness beyond
      0.05..0.95, the contrast is lowered until it fits.

    Parameters
    ----------
    detector : Readable
        ``microscope.sem`` or ``microscope.fib``.
    target_mean : float
        Mean grey level to reach, fraction of full scale (0..1, exclusive).
    max_saturation : float
        Largest accepted fraction of saturated pixels (0..1).
    max_iterations : int
        Frames at most.
    mean_tolerance : float
        Accepted deviation of the mean from ``target_mean``.
    md : dict, optional
        Extra run metadata.

    Returns
    -------
    dict
        ``uid`` (the run), ``converged``, ``iterations`` (frames), the final ``brightness``,
        ``contrast``, measured ``mean`` and ``saturation``, ``history``.

    Notes
    -----
    Events, stream "contrast_brightness", one per frame: ``iteration``, ``brightness``,
    ``contrast`` (the settings the frame was taken with), ``mean``, ``saturation``, ``dark``
    (fractions), ``action`` ("adjust" or "converged"; "stopped" if the iterations ran out).
    """
    for name, value, lo, hi in (("target_mean", target_mean, 0.0, 1.0),
                                ("max_saturation", max_saturation, 0.0, 1.0),
                                ("mean_tolerance", mean_tolerance, 0.0, 0.5)):
        rule = f"a number in ({lo:g}, {hi:g})"
        if not lo < validate.real(name, value, rule=rule) < hi:
            raise ValueError(f"{name} must be {rule}, got {value!r}")
    max_iterations = validate.count("max_iterations", max_iterations)
    target_mean, max_saturation = float(target_mean), float(max_saturation)
    mean_tolerance = float(mean_tolerance)
    rec = microscope_of(detector).recorders.contrast_brightness
    args = {"detector": detector, "target_mean": target_mean,
            "max_saturation": max_saturation, "max_iterations": max_iterations,
            "mean_tolerance": mean_tolerance}

    def body():
        history: list[dict] = []
        decades = _GAIN_DECADES
        prev: tuple[float, float] | None = None  # (contrast, spread) of an unclipped frame
        converged = False
        stats: dict = {}
        b = c = math.nan
        for it in range(1, int(max_iterations) + 1):
            b = float((yield from bps.rd(detector.brightness)))
            c = float((yield from bps.rd(detector.contrast)))
            frame = yield from _grab(detector)
            if frame is None:  # not a live RunEngine
                return {"converged": False, "iterations": 0, "history": []}
            stats = _frame_stats(np.asarray(frame))
            mean, sat = stats["mean"], stats["saturation"]
            clipped = stats["saturation"] + stats["dark"]
            spread = stats["hi"] - stats["lo"]
            entry = {"iteration": it, "brightness": b, "contrast": c, "mean": mean,
                     "saturation": sat, "dark": stats["dark"]}
            if abs(mean - target_mean) <= mean_tolerance and sat <= max_saturation and \
                    (spread >= _MIN_SPREAD or c >= 1.0):
                converged = True
                yield from record(rec, "contrast_brightness", action="converged", **entry)
                history.append({**entry, "action": "converged"})
                break
            if it == int(max_iterations):
                yield from record(rec, "contrast_brightness", action="stopped", **entry)
                history.append({**entry, "action": "stopped"})
                break
            # refine the contrast response from two unclipped frames at different contrast
            if clipped < 0.01 and spread > 0.02:
                if prev is not None and abs(c - prev[0]) > 0.02 and prev[1] > 0.02:
                    slope = math.log10(spread / prev[1]) / (c - prev[0])
                    if 0.3 <= slope <= 5.0:
                        decades = slope
                prev = (c, spread)
            # contrast
            dc = 0.0
            mid_ok = 0.01 < stats["median"] < 0.99
            level = stats["median"] if clipped >= 0.01 else mean
            if stats["saturation"] >= 0.01 and stats["dark"] >= 0.01:
                # clipped at both ends: the range is wider than full scale
                dc = min(math.log10(_TARGET_SPREAD / max(spread, 1e-3)) / decades, -_SAT_DC)
            elif clipped >= 0.01 and not mid_ok:
                # most of the frame clipped at one end: the range is unknown; step the
                # contrast down too (a large step if the brightness is already at its end)
                stuck = b <= 1e-6 if level >= 0.99 else b >= 1.0 - 1e-6
                dc = -_MAX_DC if stuck else -_SAT_DC
            elif clipped >= 0.01:
                # clipped at one end: mostly a brightness error; narrow only a wide range
                if spread > _TARGET_SPREAD:
                    dc = math.log10(_TARGET_SPREAD / spread) / decades
            elif not _SPREAD_OK[0] <= spread <= _SPREAD_OK[1]:
                dc = math.log10(_TARGET_SPREAD / max(spread, 1e-3)) / decades
            if sat > max_saturation and mid_ok and abs(level - target_mean) < 0.15:
                dc = min(dc, -_SAT_DC)  # a bright tail with the level about right: narrow it
            dc = max(-_MAX_DC, min(_MAX_DC, dc))
            new_c = min(max(c + dc, 0.0), 1.0)
            ratio = 10.0 ** (decades * (new_c - c))
            # brightness: the grey level's offset; the content scales about it by the gain
            if 0.01 < level < 0.99:
                new_b = target_mean - (level - b) * ratio
                lim = min(max(new_b, _B_MARGIN), 1.0 - _B_MARGIN)
                if lim != new_b and (target_mean - lim) / (level - b) > 0:
                    # the brightness would leave its range: lower the gain until it fits
                    ratio = min(ratio, (target_mean - lim) / (level - b))
                    new_c = min(max(c + math.log10(ratio) / decades, 0.0), 1.0)
                    ratio = 10.0 ** (decades * (new_c - c))
                    new_b = target_mean - (level - b) * ratio
            else:  # all clipped at one end: a bounded step towards the target
                new_b = b + max(-0.3, min(0.3, target_mean - level))
            new_b = min(max(new_b, 0.0), 1.0)
            yield from record(rec, "contrast_brightness", action="adjust", **entry)
            history.append({**entry, "action": "adjust"})
            yield from bps.mv(detector.brightness, new_b, detector.contrast, new_c)
        return {"converged": converged, "iterations": len(history), "brightness": b,
                "contrast": c, "mean": stats.get("mean", math.nan),
                "saturation": stats.get("saturation", math.nan), "history": history}

    @bpp.stage_decorator([detector])
    def inner():
        return (yield from in_run(body(), run_md("auto_contrast_brightness", args, md,
                                                  detectors=[detector])))

    uid, result = yield from inner()
    return {"uid": uid, **result}
