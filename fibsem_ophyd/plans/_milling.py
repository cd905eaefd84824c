"""Milling plans: mill stages with reference images before and after, recorded as documents."""

from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.protocols import Readable
from bluesky.utils import MsgGenerator

from .. import validate
from ..alignment.masks import check_boxes
from ..milling import as_stages, check_stages, estimate_stage_time
from ._common import check_md, flag, positive, read_limits, run_md
from ._movement import check_milling_angle

__all__ = ["mill_stages", "mill_fiducial", "mill_lamella", "LAMELLA_ORDER"]


#: alignments before milling stop within this (m): the beam shift is cheap, the lamella thin
ALIGN_TOLERANCE = 10e-9

#: the match score an Overtilt cut's alignment needs at the tilted pose: the tilt changes the
#: foreshortening of the view (at a 15 degree milling angle 1 degree stretches it by 7 %)
OVERTILT_MIN_SCORE = 0.3

#: how far around a milled shape the alignment ignores the image (m): the probe tail, debris,
#: and at glancing incidence the walls and floor of a cut show up to microns beyond its outline
EXCLUSION_MARGIN = 3e-6


def read_ion_limits(microscope) -> MsgGenerator[dict]:
    """The ion beam's ``{"current", "voltage", "hfw": (low, high)}`` (its ``limits`` signal),
    for :func:`~fibsem_ophyd.milling.check_stages`."""
    specs = yield from read_limits(microscope.ion_beam)
    return {key: specs[key]["limits"] for key in ("current", "voltage", "hfw") if key in specs}


def milled_boxes(stage) -> list[list[float]]:
    """Image-frame boxes [x0, y0, x1, y1] (m) around each shape a stage mills, with margin;
    in y also the shape's depth: at glancing incidence the floor of a cut shows up to about
    its depth above or below its outline in the ion image."""
    m = EXCLUSION_MARGIN
    out = []
    for sh in stage.pattern.shapes():
        b, d = sh.bounds, float(getattr(sh, "depth", 0.0))
        out.append([b[0] - m, b[1] - m - d, b[2] + m, b[3] + m + d])
    return out


def mill_stages(
    microscope: Readable,
    stages: list[dict[str, Any]],
    imaging_hfw: float | None = None,
    align: bool = False,
    reference: Any = None,
    supervised: bool = False,
    exclude: list[list[float]] | None = None,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[str]:
    """Mill stages with the ion beam, imaging before and after each (and aligning at the
    milling current just before milling, if asked).

    Parameters
    ----------
    microscope : Readable
        The microscope device.
    stages : list[dict]
        Milling stages in OpenFIBSEM's protocol layout (``{"name", "milling": {...},
        "pattern": {...}}``) or ``MillingStage.to_dict()``; patterns in metres, centred in the
        ion image, +y up. An Overtilt stage mills each trench cut with the stage tilted by
        -/+ its overtilt (degrees, relative), aligned again there, then tilts back.
    imaging_hfw : float, optional
        Field width of the reference images, m (default: each stage's imaging hfw, else its
        milling hfw).
    align : bool
        Before each stage: switch to its milling current, register ion frames against
        ``reference`` and correct with beam shift (as :func:`align_beam_shift`; frames and
        measurements in the run's "ion" and "alignment" streams), then mill. Drift during the
        current change no longer moves the pattern.
    reference : array, str or None
        The alignment reference (an array, the uid of a stored run, or ``None`` for the
        ion detector's current reference); only with ``align``. Take it at the field width
        the stages mill at. Refused before any frame unless it has the shape of the ion
        detector's frames, is finite and not uniform.
    supervised : bool
        Before each stage (after the alignment) stop for a person: a checkpoint and a
        pause. They look at the "ready" image, may set ``microscope.milling.pattern_offset_x``
        and ``_y`` (m, image frame, +y up) to move the patterns, and resume (``RE.resume()``,
        or ``qserver re resume`` under the queue server). The offset is applied with the ion
        beam shift for that stage and recorded with it (the "done" event's
        ``microscope_milling_pattern_offset_x``/``_y``), then reset to zero.
    exclude : list of [x0, y0, x1, y1], optional
        Image regions (m) the alignment ignores because they changed since the reference was
        taken (earlier milling); the shapes of this call's earlier stages are added (with a
        3 um margin) as they are milled.
    md : dict, optional
        Extra run metadata (e.g. ``sample``, ``lamella``).

    Returns
    -------
    str
        The run uid. Stream "ion": per stage an image before (milling state "ready") and
        after ("done"), each event with the stage name and the estimated and
        microscope-reported milling times. The ion beam ends at its imaging current,
        blanked, also when milling fails.
    """
    from ._alignment import align_loop, check_reference, frame_shape, resolve_reference

    objs = as_stages(stages)
    check_stages([s for s in objs if s.enabled])  # refuse before any run/beam
    boxes = check_boxes(exclude)
    if imaging_hfw is not None:
        imaging_hfw = positive("imaging_hfw", imaging_hfw)
    align, supervised = flag("align", align), flag("supervised", supervised)
    md = check_md(md)
    # the milling current, voltage and field width within what the ion beam accepts
    check_stages([s for s in objs if s.enabled], (yield from read_ion_limits(microscope)))
    ref = None
    if align:  # a reference it cannot register against is refused before any frame
        ref = yield from resolve_reference(microscope.fib, reference)
        check_reference(ref, (yield from frame_shape(microscope.fib)), microscope.fib.name)
    # where the ion beam goes back to: its current before a milling that has not yet put it
    # back (a halted run's) began, not the milling current it may be at
    imaging_current = yield from bps.rd(microscope.milling.imaging_current)
    estimates = [estimate_stage_time(s, imaging_current) for s in objs]
    _md = run_md("mill_stages", {"microscope": microscope, "stages": [s.name for s in objs],
                                 "imaging_hfw": imaging_hfw, "align": bool(align)}, md,
                 milling_stages=[s.to_dict() for s in objs],
                 estimated_time={s.name: e for s, e in zip(objs, estimates, strict=True)})
    fib, stage, milling = microscope.fib, microscope.stage, microscope.milling

    def image(hfw: float):
        # One stream for every ion image of the run: a detector feeds one stream per run.
        # The milling readings in the same event say whether it is before or after.
        yield from bps.mv(microscope.ion_beam.blanked, False, fib.hfw, hfw)
        yield from bps.trigger_and_read([fib, stage, milling], name="ion")

    rec = microscope.recorders.alignment

    def aligned(st, min_score=0.5):
        # at the milling current (the current change takes time, the sample drifts)
        yield from bps.mv(microscope.ion_beam.current, st.milling_current,
                          microscope.ion_beam.blanked, False, fib.hfw, st.hfw)
        yield from align_loop(fib, ref, rec, tolerance=ALIGN_TOLERANCE, max_iterations=3,
                              min_score=min_score, max_step=20e-6, use_stage=True,
                              extra=(milling,), exclude=boxes)

    def blank():
        # the ion beam ends at its imaging current, blanked, even on failure. A milling still
        # under way (the run was aborted or stopped under it) puts the beam back itself when
        # it ends: the RunEngine stops it as the run closes, and unstaging ends it
        if (yield from bps.rd(milling.state)) in ("running", "paused"):
            return
        yield from bps.mv(microscope.ion_beam.current, imaging_current,
                          microscope.ion_beam.blanked, True)

    def mill_cuts(st):
        # Overtilt (as OpenFIBSEM): each cut with the stage tilted by its overtilt, realigned
        # there, the tilt restored after it (also on failure)
        for tilt, cut in st.cuts():
            if not tilt:
                yield from mill(cut)
                continue
            t0 = float((yield from bps.rd(stage.t)))
            shift0 = [float(v) for v in (yield from bps.rd(microscope.ion_beam.shift))]
            try:
                yield from bps.mv(stage.t, t0 + tilt)
                if ref is not None:
                    # tilted, the view is foreshortened differently from the reference's
                    yield from aligned(cut, min_score=OVERTILT_MIN_SCORE)
                yield from mill(cut)
            finally:
                # the shift found at the tilt means nothing back at t0; a milling still
                # under way (aborted under it) keeps the stage where it mills (interlock)
                if (yield from bps.rd(milling.state)) not in ("running", "paused"):
                    yield from bps.mv(stage.t, t0, microscope.ion_beam.shift, shift0)

    def mill(cut):
        # a paused run rewinds to here: the RunEngine replays only the set, which goes on
        # with the held milling (re-taking the image before would be refused: an ion frame
        # while a milling is held, at its current)
        yield from bps.checkpoint()
        yield from bps.mv(milling, cut.to_dict())

    # staged (with the whole microscope, as bluesky stages a device's root), the milling is
    # unstaged however the run ends, a halt (which skips the plan's cleanup) included:
    # unstaging ends a milling this RunEngine started and left held
    @bpp.stage_decorator([fib])
    @bpp.run_decorator(md=_md)
    @bpp.finalize_decorator(blank)
    def inner():
        for st in objs:
            if not st.enabled:
                continue
            hfw = imaging_hfw or st.imaging_hfw or st.hfw
            yield from bps.mv(milling.state, "ready", milling.stage_name, st.name)
            yield from image(hfw)  # before: state "ready"
            if ref is not None:
                yield from aligned(st)
            shift = None
            if supervised:
                yield from bps.checkpoint()
                yield from bps.pause()  # a person confirms or moves the patterns
                offset = [float((yield from bps.rd(milling.pattern_offset_x))),
                          float((yield from bps.rd(milling.pattern_offset_y)))]
                if any(offset):
                    shift = [float(v) for v in (yield from bps.rd(microscope.ion_beam.shift))]
                    # the patterns are placed in the scanned field: shifting the field by
                    # +d moves them by +d on the sample
                    yield from bps.mv(microscope.ion_beam.shift,
                                      [shift[0] + offset[0], shift[1] + offset[1]])
            yield from mill_cuts(st)
            if shift is not None:
                yield from bps.mv(microscope.ion_beam.shift, shift)
            yield from bps.mv(microscope.ion_beam.current, imaging_current)
            yield from image(hfw)  # after: state "done", with the milling times and offset
            if supervised:
                yield from bps.mv(milling.pattern_offset_x, 0.0, milling.pattern_offset_y, 0.0)
            boxes.extend(tuple(b) for b in milled_boxes(st))

    return (yield from inner())


def mill_fiducial(
    microscope: Readable,
    centre_x: float = -25e-6,
    centre_y: float = 0.0,
    height: float = 10e-6,
    width: float = 1e-6,
    depth: float = 1e-6,
    milling_current: float = 2e-9,
    hfw: float = 80e-6,
    material: str = "Si",
    md: dict[str, Any] | None = None,
) -> MsgGenerator[str]:
    """Mill a fiducial (an X of two bars at +-45 deg) beside the lamella site, as alignment
    mark for the stages that follow (OpenFIBSEM's ``FiducialPattern``).

    Parameters
    ----------
    microscope : Readable
        The microscope device.
    centre_x, centre_y : float
        Centre in the ion image, m (+x right, +y up).
    height, width : float
        Length and width of each bar, m.
    depth : float
        Depth in ``material``, m.
    milling_current : float
        Ion current, A.
    hfw : float
        Field width the pattern is placed in, m.
    material : str
        Application-file material (sputter rate of the time estimate).
    md : dict, optional
        Extra run metadata.

    Returns
    -------
    str
        The run uid (a :func:`mill_stages` run, ``section: "fiducial"``).
    """
    stage = {"name": "fiducial",
             "milling": {"milling_current": milling_current, "hfw": hfw, "material": material},
             "pattern": {"name": "Fiducial", "height": height, "width": width, "depth": depth,
                         "point": {"x": centre_x, "y": centre_y}}}
    return (yield from mill_stages(microscope, [stage],
                                   md={"section": "fiducial", **(md or {})}))


#: the order a lamella's protocol sections are milled in (OpenFIBSEM / AutoLamella names);
#: sections not listed follow in the protocol's own order
LAMELLA_ORDER = ("fiducial", "microexpansion", "mill_rough", "mill_thin", "mill_polishing")


def lamella_protocol(microscope, protocol) -> tuple[dict, list[str]]:
    """Load and check every stage of a lamella protocol (before anything moves); return the
    sections and their milling order (:data:`LAMELLA_ORDER`, then the protocol's own)."""
    from ..milling import load_protocol

    sections = load_protocol(protocol)
    check_sections(sections)
    order = [k for k in LAMELLA_ORDER if k in sections]
    return sections, order + [k for k in sections if k not in order]


def check_sections(sections: dict, beam_limits: dict | None = None) -> None:
    """:func:`~fibsem_ophyd.milling.check_stages` of every section's enabled stages (with the
    ion beam's limits, :func:`read_ion_limits`, if given); the error names the section."""
    for name, stages in sections.items():
        try:
            check_stages([s for s in stages if s.enabled], beam_limits)
        except ValueError as exc:
            raise ValueError(f"protocol section {name!r}: {exc}") from None


def mill_lamella(
    microscope: Readable,
    protocol: dict[str, Any],
    lamella: str = "lamella",
    position: str | None = None,
    milling_angle: float | None = None,
    correct_drift_between_stages: bool = True,
    md: dict[str, Any] | None = None,
) -> MsgGenerator[dict]:
    """Mill one lamella: fiducial, stress-relief joints, rough, thin and polish stages.

    Parameters
    ----------
    microscope : Readable
        The microscope device.
    protocol : dict
        An OpenFIBSEM protocol (its ``milling`` section: ``{"mill_rough": [stage, ...],
        ...}``), stages in OpenFIBSEM's layout.
    lamella : str
        Name recorded in every run's metadata (``lamella``).
    position : str, optional
        Saved stage position to go to first.
    milling_angle : float, optional
        Ion-beam-to-surface angle to tilt to first, degrees.
    correct_drift_between_stages : bool
        Take an ion reference image before the first section (that view is where the lamella
        goes); before each later section, register against it and correct with beam shift.
        After the first correction the reference is retaken, so it shows the first section's
        marks (the fiducial) for the alignments that follow. Each stage is also aligned to
        the reference at its milling current right before it mills (``mill_stages(...,
        align=True)``).
    md : dict, optional
        Extra metadata for every run.

    Returns
    -------
    dict
        ``{"lamella", "sections": [names in milling order], "runs": {section: uid},
        "drift": {section: result of correct_drift}}``.
    """
    from ._alignment import acquire_reference, correct_drift
    from ._movement import go_to_position, move_to_milling_angle

    sections, order = lamella_protocol(microscope, protocol)
    lamella = validate.text("lamella", lamella)
    correct_drift_between_stages = flag("correct_drift_between_stages",
                                        correct_drift_between_stages)
    check_sections(sections, (yield from read_ion_limits(microscope)))
    base = {"lamella": lamella, **check_md(md)}
    if milling_angle is not None:  # checked before the first move
        check_milling_angle(milling_angle)
    if position is not None:
        positions = yield from bps.rd(microscope.stage.positions, default_value={})
        validate.choice("position", position, sorted(positions), what="saved position")
        yield from go_to_position(microscope, position)
    if milling_angle is not None:
        yield from move_to_milling_angle(microscope, milling_angle)
    result: dict[str, Any] = {"lamella": lamella, "sections": order, "runs": {}, "drift": {}}
    reference = None
    hfw = sections[order[0]][0].hfw if order else None
    if correct_drift_between_stages and order:
        # the view at the start defines where the lamella goes: everything aligns back to it
        yield from bps.mv(microscope.ion_beam.blanked, False)
        reference = yield from acquire_reference(
            microscope.fib, hfw=hfw, md={**base, "section": order[0], "role": "reference"})
    changed: list[list[float]] = []  # milled since the reference: alignments ignore it
    for i, name in enumerate(order):
        stages = [s.to_dict() for s in sections[name]]
        if correct_drift_between_stages and i > 0:
            # mill_stages leaves the ion beam blanked; a blanked beam images nothing
            yield from bps.mv(microscope.ion_beam.blanked, False)
            result["drift"][name] = yield from correct_drift(
                microscope.fib, reference, tolerance=ALIGN_TOLERANCE, max_iterations=3,
                exclude=changed, md={**base, "section": name})
            if i == 1:
                # now aligned to the start, the reference gains the first section's marks
                # (the fiducial), which later alignments lock on to
                reference = yield from acquire_reference(
                    microscope.fib, hfw=hfw, md={**base, "section": name, "role": "reference"})
                changed = []
        result["runs"][name] = yield from mill_stages(
            microscope, stages, align=reference is not None, reference=reference,
            exclude=changed, md={**base, "section": name, "section_index": i})
        changed = changed + [b for st in sections[name] if st.enabled for b in milled_boxes(st)]
    yield from bps.mv(microscope.ion_beam.blanked, True)
    return result
