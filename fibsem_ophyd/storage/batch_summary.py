"""A lamella batch's per-site summary, rebuilt from its stored documents by a callback.

:class:`BatchSummary` is an event-model ``DocumentRouter``: fed the documents of a batch's
runs (live from a RunEngine, or replayed from the catalog with :func:`replay_batch`), it
rebuilds what ``mill_lamellae`` returns per site: the sections done, the skip reason, every
alignment measurement (the drift correction at a revisit and the alignment at each milling
current: dx, dy in m, match score, action), the milling time per section (s, as the
microscope reported it), every lamella measurement (thickness, edges, contrast, or why
there is none) and the last thickness. Everything it needs is in the start documents
(``batch``, ``lamella``, ``section``, ``plan_name``, ``alignment_kind``) and the events of
the "alignment", "ion" and "lamella" streams.
"""

from __future__ import annotations

import math

from event_model import DocumentRouter

from .reader import search_runs

__all__ = ["BatchSummary", "replay_batch"]


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
