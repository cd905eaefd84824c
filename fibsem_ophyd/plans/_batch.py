"""The on-grid lamella batch: many sites, each milling section done at every site before the
next, resumable from the stored documents, a lost site skipped and reported."""

import math
from typing import Any

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
from bluesky.protocols import Readable
from bluesky.utils import FailedStatus, MsgGenerator

from .. import validate
from ..alignment import RegistrationError
from ..backend import check_deposition_time
from ._alignment import AlignmentError, acquire_reference, correct_drift
from ._common import (
    check_md,
    check_settings,
    flag,
    in_run,
    positive,
    read_frame,
    read_limits,
    run_md,
)
from ._deposition import cryo_deposition, sputter_coat
from ._milling import (
    ALIGN_TOLERANCE,
    check_sections,
    lamella_protocol,
    mill_stages,
    milled_boxes,
    read_ion_limits,
)
from ._movement import change_positions, go_to_position, move_to_milling_angle
from ._util import relay

__all__ = ["mill_lamellae", "measure_lamella", "import_experiment"]

#: the match score a site's drift correction needs at a revisit. Lower than the alignment
#: default (0.5): since the reference, the site was milled (sections, debris, the walls of
#: deep trenches beyond the excluded boxes) and imaged; at 1536x1024 correct matches score
#: 0.35-0.48 there (``benchmarks/bench_overnight.py``). A lost site is still refused, by the
#: score or by ``correct_drift``'s 5 um ``max_step``.
REVISIT_MIN_SCORE = 0.3

#: how much wider the second frame of :func:`measure_lamella` is when the first does not show
#: the lamella (3x: 7 nm pixels for a 300 nm gap at 1536 px, 43 px across the lamella)
WIDEN = 3.0

#: what makes a site lost (the batch goes on without it); anything else stops the batch
SITE_ERRORS = (AlignmentError, RegistrationError, FailedStatus)


def _watch(plan, sink) -> MsgGenerator[Any]:
    """Run ``plan``, handing each reading it takes (the RunEngine's answer to a "read"
    message) to ``sink(obj, reading)`` for each device the message read; return what ``plan``
    returns. Since bluesky 1.16 ``trigger_and_read`` reads all its devices in one
    ``Msg("read", *devices)`` whose answer holds every device's keys, so a sink takes its
    device's keys out of ``reading`` by the device's name."""
    def on_response(msg, response):
        if msg.command == "read" and isinstance(response, dict):
            for obj in (msg.obj, *msg.args):
                sink(obj, response)

    return (yield from relay(plan, on_response=on_response))


def _keys_of(obj, reading: dict) -> dict:
    """``obj``'s values in ``reading`` (which may hold other devices' keys too), keyed
    without the device's name prefix."""
    prefix = f"{obj.name}_"
    return {k.removeprefix(prefix): r["value"] for k, r in reading.items()
            if k.startswith(prefix)}


def _site_log(site_state: dict, section: str, kind: str, milling):
    """A ``sink`` for :func:`_watch`: alignment measurements and finished millings."""
    def sink(obj, reading):
        if getattr(obj, "name", None) == "alignment":
            v = _keys_of(obj, reading)
            site_state["alignments"].append({
                "section": section, "kind": kind, "iteration": int(v["iteration"]),
                "action": v["action"], "dx": float(v["dx"]), "dy": float(v["dy"]),
                "score": float(v["score"])})
        elif obj is milling:
            v = _keys_of(milling, reading)
            if v.get("state") == "done":
                times = site_state["milling_time"]
                times[section] = times.get(section, 0.0) + float(v["milling_time"])
    return sink


def _skip(batch: str, site: str, section: str, reason: str, md: dict) -> MsgGenerator[str]:
    """A run that records why a site is skipped (``batch_state`` reads it back)."""
    start = {**md, "plan_name": "lamella_skipped", "batch": batch, "lamella": site,
             "section": section, "reason": reason, "hints": {}}
    uid = yield from bps.open_run(md=start)
    yield from bps.close_run()
    return uid


#: keys of ``mill_lamellae``'s ``coating`` and their defaults
COATING_KEYS = {"sputter_time": None, "sputter_current": 10e-3, "gis_time": None,
                "gas": "Pt cryo", "insert_position": "cryo", "position": None}


def _check_coating(microscope, coating, positions) -> MsgGenerator[dict | None]:
    """The coating request with defaults, validated (reads only; nothing moves)."""
    if coating is None:
        return None
    if not isinstance(coating, dict):
        raise ValueError(f"coating must be a dict with keys {list(COATING_KEYS)}, got "
                         f"{coating!r}")
    unknown = set(coating) - set(COATING_KEYS)
    if unknown:
        raise ValueError(f"unknown coating key(s) {sorted(unknown)}; known: "
                         f"{list(COATING_KEYS)}")
    c = {**COATING_KEYS, **coating}
    if c["sputter_time"] is None and c["gis_time"] is None:
        raise ValueError("coating needs sputter_time and/or gis_time (s)")
    if c["sputter_time"] is not None:
        c["sputter_time"] = check_deposition_time("coating sputter_time", c["sputter_time"])
        c["sputter_current"] = check_settings(
            (yield from read_limits(microscope.sputter_coater)),
            {"current": c["sputter_current"]})["current"]
    if c["gis_time"] is not None:
        c["gis_time"] = check_deposition_time("coating gis_time", c["gis_time"])
        checked = check_settings((yield from read_limits(microscope.gis)),
                                 {"gas": c["gas"], "insert_position": c["insert_position"]})
        c["gas"], c["insert_position"] = checked["gas"], checked["insert_position"]
        if c["insert_position"] == "retracted":
            raise ValueError("coating insert_position must be where the GIS needle goes in")
    if c["position"] is not None and c["position"] not in positions:
        raise ValueError(f"unknown coating position {c['position']!r}; saved: "
                         f"{sorted(positions)}")
    return c


def _coat(microscope, c: dict, done: list, md: dict) -> MsgGenerator[None]:
    """The batch's coats not yet done: sputter, then cryo GIS (a ``section: "coating"`` run
    each), at the coating position."""
    todo = [kind for kind, t in (("sputter", c["sputter_time"]), ("cryo", c["gis_time"]))
            if t is not None and kind not in done]
    if not todo:
        return
    if c["position"] is not None:
        yield from go_to_position(microscope, c["position"])
    md = {**md, "section": "coating"}
    if "sputter" in todo:
        yield from sputter_coat(microscope, time=c["sputter_time"],
                                current=c["sputter_current"], md=md)
    if "cryo" in todo:
        yield from cryo_deposition(microscope, time=c["gis_time"], gas=c["gas"],
                                   insert_position=c["insert_position"], md=md)


def mill_lamellae(
    microscope: Readable,
    sites: list[str],
    protocol: dict[str, Any],
    batch: str = "batch",
    milling_angle: float | None = None,
    resume: bool = False,
    supervised: bool = False,
    coating: dict[str, Any] | None = None,
    md: dict[str, Any] | None = None,
    imported: dict[str, Any] | None = None,
) -> MsgGenerator[dict]:
    """Mill lamellae at many saved positions, the way a facility runs them overnight.

    Each protocol section (fiducial, micro-expansion, rough, thin, polish) is milled at every
    site before the next section starts, so all lamellae reach each thickness together. At
    its first visit a site gets an ion reference image (run with ``role: "reference"``);
    at every later visit the plan goes to the saved position, corrects the drift against
    that reference, aligns again at each milling current and mills. A site that is lost (a
    bad match, too large a correction, a failed milling) is skipped for the rest of the
    batch and reported (a ``lamella_skipped`` run with the reason); the others go on.

    Every run carries ``batch``, ``lamella`` (the site) and ``section``, so the stored
    documents say what is done: with ``resume=True`` the plan reads them back (through the
    session's catalog: ``microscope.batch_state``) and does only what is missing, with each
    site's stored reference; an interrupted section is milled again.

    Parameters
    ----------
    microscope : Readable
        The microscope device.
    sites : list[str]
        Saved stage positions (see ``save_position``), one lamella each, in visiting order.
    protocol : dict
        An OpenFIBSEM protocol (its ``milling`` section), as for ``mill_lamella``.
    batch : str
        Name of the batch, recorded in every run (``start.batch``); the key to resume it.
    milling_angle : float, optional
        Ion-beam-to-surface angle (degrees) to tilt to at each site after moving there.
    resume : bool
        Skip what the stored runs of ``batch`` say is done, and the sites they say are lost.
    supervised : bool
        Pause before every milling stage for a person to confirm or move the patterns
        (see ``mill_stages``).
    coating : dict, optional
        Protective coats for the whole grid before the first site's reference (as
        AutoLamella's set-up does): ``sputter_time`` (s) and ``sputter_current`` (A, 10 mA),
        then ``gis_time`` (s) of ``gas`` ("Pt cryo") at ``insert_position`` ("cryo"); at the
        saved stage ``position`` (default: where the stage is). Runs with ``section:
        "coating"``; a resumed batch does only the coats its runs do not show done. The
        protocol's depths must then include the coat (see the README: a PtC layer takes the
        charge of ten times its thickness of ice).
    md : dict, optional
        Extra metadata for every run.
    imported : dict, optional
        The state of an AutoLamella experiment (:func:`import_experiment`): the sections its
        ``done`` lists for a site are not milled again, its ``skipped`` sites are left out.

    Returns
    -------
    dict
        ``batch``, ``sections`` (milling order), ``done`` ({site: [sections]}), ``skipped``
        ({site: {"section", "reason"}}), ``thickness`` ({site: the last measured, m}: after
        each section with a trench, :func:`measure_lamella` measures it on an ion frame) and
        ``summary`` (the uid of the summary run: one
        "site" event per site with its status).
    """
    if not isinstance(sites, (list, tuple)) or not sites or \
            not all(isinstance(s, str) and s for s in sites):
        raise ValueError(f"sites must be a non-empty list of saved position names, got {sites!r}")
    if len(set(sites)) != len(sites):
        raise ValueError(f"sites must not repeat, got {sites!r}")
    if not isinstance(batch, str) or not batch:
        raise ValueError(f"batch must be a non-empty string, got {batch!r}")
    if coating is not None:
        validate.mapping("coating", coating)
    resume, supervised = flag("resume", resume), flag("supervised", supervised)
    md = check_md(md)
    sections, order = lamella_protocol(microscope, protocol)
    check_sections(sections, (yield from read_ion_limits(microscope)))
    positions = yield from bps.rd(microscope.stage.positions, default_value={})
    unknown = [s for s in sites if s not in positions]
    if unknown:
        raise ValueError(f"unknown site position(s) {unknown}; saved: {sorted(positions)}")
    coat = yield from _check_coating(microscope, coating, positions)
    base = {**(md or {}), "batch": batch}

    state = {s: {"done": [], "skipped": None, "reference": None, "thickness": None,
                 "thickness_reason": "not measured", "alignments": [], "milling_time": {},
                 "measurements": [], "shift": [0.0, 0.0]}
             for s in sites}
    for site, st in _imported_state(imported, sites, order).items():
        state[site].update(st)
    if resume:
        yield from bps.mv(microscope.batch_state, batch)
        stored = (yield from bps.rd(microscope.batch_state, default_value=None)) or {}
        for site in sites:
            if site in stored:
                state[site].update({k: stored[site][k] for k in ("done", "skipped",
                                                                  "reference", "thickness")})
                if state[site]["thickness"] is not None:
                    state[site]["thickness_reason"] = ""
    if coat is not None:
        coated = []
        if resume:
            yield from bps.mv(microscope.batch_coating, batch)
            coated = list((yield from bps.rd(microscope.batch_coating, default_value=None))
                          or [])
        yield from _coat(microscope, coat, coated, base)
    fib = microscope.fib
    hfw = sections[order[0]][0].hfw
    # what each section mills changes the view against the site reference: alignments ignore
    # it (the same pattern positions at every site)
    boxes = {name: [b for st in sections[name] if st.enabled for b in milled_boxes(st)]
             for name in order}

    for i, name in enumerate(order):
        stages = [s.to_dict() for s in sections[name]]
        for site in sites:
            st = state[site]
            if st["skipped"] is not None or name in st["done"]:
                continue
            site_md = {**base, "lamella": site, "section": name}
            try:
                yield from go_to_position(microscope, site)
                if milling_angle is not None:
                    yield from move_to_milling_angle(microscope, milling_angle)
                # start from this site's own last alignment (the last site's beam shift means
                # nothing here): the drift correction then has only the drift since this
                # site's last visit to find, not all since its reference
                yield from bps.mv(microscope.ion_beam.blanked, False,
                                  microscope.ion_beam.shift, st["shift"])
                fresh = st["reference"] is None
                if fresh:
                    # first visit: this view is where the lamella goes
                    st["reference"] = yield from acquire_reference(
                        fib, hfw=hfw, md={**site_md, "role": "reference"})
                elif isinstance(st["reference"], str):  # resumed: the stored run's frame
                    yield from bps.mv(fib.reference, st["reference"])
                    st["reference"] = yield from bps.rd(fib.reference)
                changed = [b for n in st["done"] for b in boxes[n]]
                if not fresh:
                    yield from _watch(correct_drift(
                        fib, st["reference"], tolerance=ALIGN_TOLERANCE, max_iterations=3,
                        exclude=changed, min_score=REVISIT_MIN_SCORE, md=site_md),
                        _site_log(st, name, "drift", microscope.milling))
                yield from _watch(mill_stages(
                    microscope, stages, align=True, reference=st["reference"],
                    supervised=supervised, exclude=changed, md={**site_md, "section_index": i}),
                    _site_log(st, name, "milling", microscope.milling))
                st["done"].append(name)
                trench = next((s.pattern for s in sections[name]
                               if s.enabled and hasattr(s.pattern, "spacing")), None)
                st["shift"] = [float(v) for v in (yield from bps.rd(microscope.ion_beam.shift))]
                if trench is not None:
                    m = yield from measure_lamella(microscope, float(trench.spacing),
                                                   width=float(trench.width), md=site_md)
                    if m:
                        st["measurements"].append({"section": name, **m})
                        st["thickness"], st["thickness_reason"] = m["thickness"], m["reason"]
            except SITE_ERRORS as exc:
                reason = f"{type(exc).__name__}: {exc}"
                st["skipped"] = {"section": name, "reason": reason}
                if st["thickness"] is None:
                    st["thickness_reason"] = f"not measured: skipped at {name}"
                yield from _skip(batch, site, name, reason, base)
    yield from bps.mv(microscope.ion_beam.blanked, True)

    rec = microscope.recorders.site
    summary_md = {**base, "plan_name": "mill_lamellae", "sites": list(sites),
                  "sections": order, "resumed": bool(resume), "coating": coat, "hints": {}}

    @bpp.run_decorator(md=summary_md)
    def summary():
        for site in sites:
            st = state[site]
            status = "skipped" if st["skipped"] else \
                "done" if all(n in st["done"] for n in order) else "incomplete"
            skipped = st["skipped"] or {"section": "", "reason": ""}
            yield from bps.mv(rec.site, site, rec.status, status,
                              rec.sections_done, ",".join(st["done"]),
                              rec.skipped_section, skipped["section"],
                              rec.reason, skipped["reason"],
                              rec.thickness, float("nan") if st["thickness"] is None
                              else float(st["thickness"]),
                              rec.thickness_reason, st["thickness_reason"])
            yield from bps.trigger_and_read([rec], name="site")

    uid = yield from summary()
    return {"batch": batch, "sections": order,
            "done": {s: list(state[s]["done"]) for s in sites},
            "skipped": {s: state[s]["skipped"] for s in sites if state[s]["skipped"]},
            "thickness": {s: state[s]["thickness"] for s in sites},
            "sites": {s: _site_summary(state[s], order) for s in sites},
            "summary": uid}


def _imported_state(imported, sites, order) -> dict:
    """``{site: {"done", "skipped"}}`` from an imported experiment (sections of this
    protocol only, in its order)."""
    if imported is None:
        return {}
    if not isinstance(imported, dict) or not isinstance(imported.get("done", {}), dict):
        raise ValueError(f"imported must be what import_experiment returns, got {imported!r}")
    out = {}
    for site in sites:
        done = (imported.get("done") or {}).get(site, [])
        skipped = (imported.get("skipped") or {}).get(site)
        out[site] = {"done": [n for n in order if n in done],
                     "skipped": dict(skipped) if skipped else None}
    return out


def import_experiment(microscope: Readable, source: Any,
                      protocol: Any = None) -> MsgGenerator[dict]:
    """Read an AutoLamella ``experiment.yaml`` and save its lamellae's milling positions as
    stage positions named after them (see :func:`fibsem_ophyd.milling.read_experiment`).

    Returns the experiment as a batch: pass ``result["sites"]`` and ``imported=result`` (and
    ``batch=result["name"]``) to :func:`mill_lamellae`. Write a batch back with
    :func:`fibsem_ophyd.milling.write_experiment` and ``microscope.stage.positions.get()``.
    The saved positions are recorded in a run (``plan_name: "import_experiment"``, stream
    "positions"), as :func:`save_position` records them.

    Parameters
    ----------
    microscope : Readable
        The microscope device.
    source : str, Path or dict
        The experiment file, its folder or its contents.
    protocol : dict, str or Path, optional
        The AutoLamella task protocol that maps tasks to sections (default: the folder's
        ``protocol.yaml``).
    """
    from ..milling import read_experiment

    exp = read_experiment(source, protocol)
    # the positions are checked against the stage limits before any is saved; the run
    # records the saved positions after the change (see save_position)
    yield from change_positions(microscope, exp["positions"], "import_experiment",
                                {"microscope": microscope, "experiment": exp["name"]})
    return exp


def _site_summary(st: dict, order: list[str]) -> dict:
    """What the batch did at one site (in this call), as :class:`BatchSummary` rebuilds it
    from the stored documents."""
    status = "skipped" if st["skipped"] else \
        "done" if all(n in st["done"] for n in order) else "incomplete"
    return {"status": status, "sections_done": list(st["done"]), "skipped": st["skipped"],
            "alignments": list(st["alignments"]), "milling_time": dict(st["milling_time"]),
            "measurements": list(st["measurements"]),
            "thickness": math.nan if st["thickness"] is None else float(st["thickness"]),
            "thickness_reason": st["thickness_reason"]}



def measure_lamella(microscope: Readable, spacing: float, width: float | None = None,
                    md: dict[str, Any] | None = None) -> MsgGenerator[dict]:
    """Measure the lamella near the ion image centre on an ion frame.

    The field is 12 x ``spacing`` wide, or (given the trench ``width``) 1.2 x ``width`` if
    that is smaller, but at least 3.2 x ``spacing`` high, so the frame shows the lamella, its
    edges and the trenches beyond them at a few nm per pixel. The frame is stored (stream
    "ion") with the measurement (stream "lamella": ``thickness``, its ``top`` and ``bottom``
    edges in m from the centre, +y up, the grey-level ``contrast``, the ``expected``
    thickness and the ``reason`` when there is no measurement), see
    :func:`fibsem_ophyd.milling.measure_lamella_thickness`. When the lamella is not within
    2.5 x ``spacing`` of the centre, it is looked for within 45 % of the frame's height,
    then on a second frame :data:`WIDEN` x wider (both frames stored), and measured where
    found. A frame that shows nothing (:func:`fibsem_ophyd.milling.blank_frame`: grey levels
    within 1 % of the full scale, as with the beam blanked) is not measured and not widened
    from: the thickness is nan and the reason says "blank frame", its grey level and field.
    The ion field width is restored.

    Parameters
    ----------
    microscope : Readable
        The microscope device.
    spacing : float
        The expected thickness (the last trench's spacing), m.
    width : float, optional
        The trenches' width, m.
    md : dict, optional
        Extra run metadata.

    Returns
    -------
    dict
        The measurement (``thickness`` nan and ``reason`` saying why when the frame shows no
        lamella); empty outside a live RunEngine.
    """
    from ..milling import blank_frame, measure_lamella_thickness

    spacing = positive("spacing", spacing)
    if width is not None:
        width = positive("width", width)
    fib = microscope.fib
    rec = microscope.recorders.lamella

    def body():
        hfw0 = float((yield from bps.rd(fib.hfw)))
        res = yield from bps.rd(fib.resolution)
        hfw = 12 * spacing
        if width is not None:  # the trenches fill the field, the lamella still a strip
            hfw = min(hfw, max(1.2 * width, 3.2 * spacing * res[0] / res[1]))
        try:
            yield from bps.mv(fib.hfw, hfw, microscope.ion_beam.blanked, False)
            frame, pixel = yield from read_frame(fib, microscope.stage)
            if frame is None:
                return {}
            m = measure_lamella_thickness(frame, pixel, spacing, width=width)
            blank = blank_frame(frame)
            if blank:
                # nothing imaged: a wider frame would read the lamella at 3x coarser pixels,
                # or nothing at all, as if this one had only missed it. Said, not read.
                m["reason"] += f"; at a {hfw * 1e6:.2f} um field, not widened"
            elif not math.isfinite(m["thickness"]):
                # not near the centre: drifted, or under a mound of ice it stands microns
                # higher than its trenches' reference (from the milling angle, microns off
                # the centre). First the whole frame, then a wider one.
                m = measure_lamella_thickness(frame, pixel, spacing, width=width,
                                              search=0.45 * pixel * frame.shape[0])
            if not math.isfinite(m["thickness"]) and not blank:
                yield from bps.mv(fib.hfw, WIDEN * hfw)
                frame, pixel = yield from read_frame(fib, microscope.stage)
                half = 0.45 * pixel * frame.shape[0]
                wide = measure_lamella_thickness(frame, pixel, spacing, width=width,
                                                 search=half)
                if math.isfinite(wide["thickness"]):
                    m = wide
                elif blank_frame(frame):
                    m["reason"] += f"; the {WIDEN:g}x field's frame: {wide['reason']}"
                else:
                    m["reason"] += f"; nor within {half * 1e9:.0f} nm in a {WIDEN:g}x field"
        finally:
            yield from bps.mv(fib.hfw, hfw0)
        yield from bps.mv(rec.thickness, m["thickness"], rec.top, m["top"], rec.bottom,
                          m["bottom"], rec.contrast, m["contrast"], rec.expected, spacing,
                          rec.reason, m["reason"])
        yield from bps.trigger_and_read([rec], name="lamella")
        return m

    @bpp.stage_decorator([fib])
    def inner():
        return (yield from in_run(body(), run_md(
            "measure_lamella", {"microscope": microscope, "spacing": spacing, "width": width},
            md, detectors=[fib])))

    _, result = yield from inner()
    return result or {}
