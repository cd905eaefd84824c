"""The state of a lamella batch, read back from its stored runs (what a resumed batch skips).

Every run of a batch carries ``batch`` and ``lamella`` (the site) in its start document;
milling runs also ``section``. A site's section is *done* when a ``mill_stages`` run of it
closed with exit_status "success"; a site is *skipped* when the batch recorded a
``lamella_skipped`` run for it (lost alignment, a failed milling); the site's alignment
reference is its latest successful run with ``role: "reference"``, its thickness the
latest ``measure_lamella`` run's. A run that was
interrupted (the batch was stopped or crashed) marks nothing: its section is done again.
The batch's coating (sputter, cryo GIS) has runs with ``section: "coating"`` and no site
(:func:`batch_coating`).

:class:`BatchSummary`, a document callback, rebuilds what ``mill_lamellae`` returns per site
(sections done, skip reason, every alignment measurement, the milling time per section, every
lamella measurement) from a batch's documents, live or replayed (:func:`replay_batch`).

The saved stage positions (:func:`saved_positions`) and the newest overview with the sites
chosen on it (:func:`stored_overview`) are read back the same way, for a viewer that has only
the catalog (the queue server's worker holds the devices).

These functions know the plans' run vocabulary (plan names, the ``lamella`` recorder), so
they live with the plans; they are not plans (they read a catalog) and are not in
:data:`fibsem_ophyd.plans.__all__`. ``setup_session`` gives them to the microscope's
catalog look-up (``microscope.store``), through which ``microscope.batch_state`` and
``microscope.batch_coating`` answer a batch plan.
"""

from __future__ import annotations

import math

import numpy as np
from event_model import DocumentRouter

from ..backend import STAGE_AXES
from ..storage import load_images, search_runs

__all__ = ["batch_state", "batch_coating", "BatchSummary", "replay_batch", "POSITIONS_KEY",
           "OVERVIEW_PLANS", "newest_run", "positions_query", "overview_query",
           "saved_positions", "positions_of", "stored_overview", "overview_of"]

#: the start-document key of every run that changed the saved stage positions (the names
#: changed); its stream "positions" holds all of them after the change (see
#: :func:`fibsem_ophyd.plans.save_position`)
POSITIONS_KEY = "positions_changed"
#: the plans whose runs hold an overview mosaic, or the sites chosen on one
OVERVIEW_PLANS = ("acquire_overview", "select_sites")
_AXES = STAGE_AXES

#: the plans whose runs coat the sample, by the kind of coat
_COATINGS = {"sputter_coat": "sputter", "cryo_deposition": "cryo"}


def batch_state(catalog, batch: str) -> dict[str, dict]:
    """``{site: {"done": [sections], "skipped": {"section", "reason"} | None, "reference":
    uid | None, "thickness": m | None}}`` of the runs of ``batch`` in ``catalog`` (empty if it
    has none); the thickness is the site's last ``measure_lamella``."""
    if not isinstance(batch, str) or not batch:
        raise ValueError(f"a batch name must be a non-empty string, got {batch!r}")
    state: dict[str, dict] = {}
    found = []
    for uid, run in search_runs(catalog, batch=batch).items():
        md = run.metadata
        start, stop = md.get("start") or {}, md.get("stop") or {}
        site = start.get("lamella")
        if site is None:
            continue
        found.append((float(start.get("time", 0.0)), uid, site, start, stop, run))
    for _, uid, site, start, stop, run in sorted(found, key=lambda f: (f[0], f[1])):
        st = state.setdefault(site, {"done": [], "skipped": None, "reference": None,
                                     "thickness": None})
        ok = stop.get("exit_status") == "success"
        plan = start.get("plan_name")
        if plan == "mill_stages" and ok and start.get("section") not in st["done"]:
            st["done"].append(start.get("section"))
        elif plan == "lamella_skipped":
            st["skipped"] = {"section": start.get("section"), "reason": start.get("reason", "")}
        elif start.get("role") == "reference" and ok:
            st["reference"] = uid
        elif plan == "measure_lamella" and ok:
            st["thickness"] = float(run["lamella"].read()["lamella_thickness"][-1])
    return state


def batch_coating(catalog, batch: str) -> list[str]:
    """The coats of ``batch`` that finished ("sputter", "cryo"), from its ``section:
    "coating"`` runs that closed with exit_status "success"."""
    if not isinstance(batch, str) or not batch:
        raise ValueError(f"a batch name must be a non-empty string, got {batch!r}")
    done = set()
    for run in search_runs(catalog, batch=batch, section="coating").values():
        start, stop = run.metadata.get("start") or {}, run.metadata.get("stop") or {}
        kind = _COATINGS.get(start.get("plan_name"))
        if kind and stop.get("exit_status") == "success":
            done.add(kind)
    return sorted(done)


def _field(data: dict, suffix: str):
    for key, value in data.items():
        if key.endswith(suffix):
            return value
    return None


class BatchSummary(DocumentRouter):
    """Per-site summary of the lamella batch ``batch`` from its documents.

    ``sites`` maps each site to ``{"status", "sections_done", "skipped", "alignments",
    "milling_time", "measurements", "thickness", "thickness_reason"}`` (the layout of
    ``mill_lamellae``'s ``sites``); ``status`` needs the batch's summary run (its sections).
    """

    def __init__(self, batch: str):
        super().__init__()
        if not isinstance(batch, str) or not batch:
            raise ValueError(f"a batch name must be a non-empty string, got {batch!r}")
        self.batch = batch
        self.sites: dict[str, dict] = {}
        self.sections: list[str] | None = None
        self._start: dict | None = None
        self._streams: dict[str, str] = {}

    def _site(self, name: str) -> dict:
        return self.sites.setdefault(name, {
            "status": "incomplete", "sections_done": [], "skipped": None, "alignments": [],
            "milling_time": {}, "measurements": [], "thickness": math.nan,
            "thickness_reason": "not measured"})

    def start(self, doc):
        self._streams = {}
        self._start = None
        if doc.get("batch") != self.batch:
            return
        if doc.get("plan_name") == "mill_lamellae" and "sections" in doc:
            self.sections = list(doc["sections"])
            for site in doc.get("sites", []):
                self._site(site)
        elif doc.get("lamella"):
            self._start = doc
            self._site(doc["lamella"])

    def descriptor(self, doc):
        self._streams[doc["uid"]] = doc.get("name", "primary")

    def event(self, doc):
        start = self._start
        if start is None:
            return
        site, section = self._site(start["lamella"]), start.get("section")
        stream, data = self._streams.get(doc["descriptor"]), doc["data"]
        if stream == "alignment":
            site["alignments"].append({
                "section": section,
                "kind": "drift" if start.get("alignment_kind") == "drift" else "milling",
                "iteration": int(data["alignment_iteration"]),
                "action": data["alignment_action"], "dx": float(data["alignment_dx"]),
                "dy": float(data["alignment_dy"]), "score": float(data["alignment_score"])})
        elif stream == "ion" and start.get("plan_name") == "mill_stages" and \
                _field(data, "_milling_state") == "done":
            times = site["milling_time"]
            times[section] = times.get(section, 0.0) + float(_field(data, "_milling_time"))
        elif stream == "lamella":
            m = {k: data[f"lamella_{k}"] for k in ("thickness", "top", "bottom", "contrast",
                                                   "reason")}
            site["measurements"].append({"section": section, **m})
            site["thickness"], site["thickness_reason"] = float(m["thickness"]), m["reason"]

    def stop(self, doc):
        start, self._start = self._start, None
        if start is None:
            return
        site, section = self._site(start["lamella"]), start.get("section")
        plan = start.get("plan_name")
        if plan == "mill_stages" and doc.get("exit_status") == "success" and \
                section not in site["sections_done"]:
            site["sections_done"].append(section)
        elif plan == "lamella_skipped":
            site["skipped"] = {"section": section, "reason": start.get("reason", "")}
            if not site["measurements"]:
                site["thickness_reason"] = f"not measured: skipped at {section}"
        self._status(site)

    def _status(self, site: dict) -> None:
        if site["skipped"]:
            site["status"] = "skipped"
        elif self.sections is not None and all(n in site["sections_done"]
                                               for n in self.sections):
            site["status"] = "done"
        else:
            site["status"] = "incomplete"

    def summary(self) -> dict[str, dict]:
        """``{site: summary}`` (statuses settled against the batch's sections)."""
        for site in self.sites.values():
            self._status(site)
        return self.sites


def replay_batch(catalog, batch: str) -> dict[str, dict]:
    """Feed every stored run of ``batch`` (in start-time order) through a
    :class:`BatchSummary` and return its per-site summary."""
    summary = BatchSummary(batch)
    runs = list(search_runs(catalog, batch=batch).values())
    runs.sort(key=lambda r: (float(r.metadata["start"].get("time", 0.0)),
                             r.metadata["start"]["uid"]))
    for run in runs:
        for name, doc in run.documents():
            summary(name, doc)
    return summary.summary()


def positions_query():
    """The Tiled query of the runs that changed the saved stage positions."""
    from tiled.queries import KeyPresent

    return KeyPresent(f"start.{POSITIONS_KEY}")


def overview_query():
    """The Tiled query of the :data:`OVERVIEW_PLANS` runs."""
    from tiled.queries import In

    return In("start.plan_name", list(OVERVIEW_PLANS))


def newest_run(catalog, query) -> tuple[str | None, object]:
    """``(uid, run)`` of the newest run that matches ``query`` and closed with exit_status
    "success"; ``(None, None)`` if there is none. One search on the server."""
    from tiled.queries import Key

    found = catalog.search(query).search(Key("stop.exit_status") == "success")
    keys = list(found.keys().tail(1))
    return (keys[-1], found[keys[-1]]) if keys else (None, None)


def positions_of(run) -> dict[str, dict[str, float]]:
    """The saved stage positions a run that changed them recorded (all of them after the
    change): ``{name: {x, y, z (m), r, t (deg)}}``, an axis left unset omitted."""
    if "positions" not in set(run):
        return {}  # no position left after the change: the stream has no event
    table = run["positions"].read()
    names = [str(n) for n in np.asarray(table["position_label"])]
    axes = {ax: np.asarray(table[f"position_{ax}"], float) for ax in _AXES}
    return {name: {ax: float(v[i]) for ax, v in axes.items() if np.isfinite(v[i])}
            for i, name in enumerate(names)}


def saved_positions(catalog) -> dict[str, dict[str, float]]:
    """The saved stage positions as the newest successful run that changed them left them
    (a removal included); ``{}`` if no run recorded any."""
    _, run = newest_run(catalog, positions_query())
    return {} if run is None else positions_of(run)


def overview_of(catalog, run) -> dict:
    """The overview of an :data:`OVERVIEW_PLANS` run: ``{"uid"`` (the ``acquire_overview``
    run), ``"mosaic"`` (the stored uint8 mosaic), ``"mapping"`` (its "overview_mosaic"
    event: the :func:`~fibsem_ophyd.plans.acquire_overview` result's ``mapping``),
    ``"sites"`` (a ``select_sites`` run's choice: ``{name: {"col", "row"`` mosaic px, ``"x",
    "y", "z"`` m of the square's centre, ``"r", "t"`` deg``}}``, in the order chosen; ``{}``
    for an overview alone), ``"decisions"`` (the ``select_sites`` run's uid or ``None``)}."""
    start = run.metadata["start"]
    decisions = None
    sites: dict[str, dict] = {}
    if start.get("plan_name") == "select_sites":
        decisions, overview = start["uid"], catalog[start["overview"]]
        if "square" in set(run):
            squares = run["square"].read()
            names = [str(n) for n in np.asarray(squares["square_site"])]
            cols = {k: np.asarray(squares[f"square_{k}"], float)
                    for k in ("col", "row", "stage_x", "stage_y", "stage_z")}
            chosen = {n: i for i, n in enumerate(names) if n}
            for name in [n for n in start.get("sites", []) if n in chosen]:
                i = chosen[name]
                sites[name] = {"col": float(cols["col"][i]), "row": float(cols["row"][i]),
                               **{ax: float(cols[f"stage_{ax}"][i]) for ax in ("x", "y", "z")}}
    else:
        overview = run
    stream = overview["overview_mosaic"]
    prefix = "overview_mosaic_"
    # the mapping's fields only: the image is read once, below, as the TIFF it is
    keys = [k for k in stream if k.startswith(prefix) and k != f"{prefix}image"]
    ev = stream.read(variables=keys)
    mapping = {}
    for key in keys:
        value = np.asarray(ev[key])[-1]
        mapping[key[len(prefix):]] = value.item() if hasattr(value, "item") else value
    for name in sites:
        sites[name].update(r=float(mapping["stage_r"]), t=float(mapping["stage_t"]))
    (image,) = load_images(overview, "overview_mosaic")[-1:]
    return {"uid": overview.metadata["start"]["uid"], "mosaic": np.asarray(image.data),
            "mapping": mapping, "sites": sites, "decisions": decisions}


def stored_overview(catalog) -> dict | None:
    """:func:`overview_of` the newest successful :data:`OVERVIEW_PLANS` run (``None`` if
    there is none): the newest mosaic, with its sites if ``select_sites`` chose them."""
    _, run = newest_run(catalog, overview_query())
    return None if run is None else overview_of(catalog, run)
