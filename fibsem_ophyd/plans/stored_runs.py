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

These functions know the plans' run vocabulary (plan names, the ``lamella`` recorder), so
they live with the plans; they are not plans (they read a catalog) and are not in
:data:`fibsem_ophyd.plans.__all__`. ``setup_session`` gives them to the microscope's
catalog look-up (``microscope.store``), through which ``microscope.batch_state`` and
``microscope.batch_coating`` answer a batch plan.
"""

from __future__ import annotations

from ..storage import search_runs

__all__ = ["batch_state", "batch_coating"]

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
