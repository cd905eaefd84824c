"""AutoLamella's ``experiment.yaml``: lamellae, their positions and per-task state, read into a
lamella batch (``mill_lamellae``) and written back from one.

The layout is OpenFIBSEM's ``Experiment.to_dict`` (``fibsem.applications.autolamella``):
``{name, _id, path, created_at, metadata, positions: [lamella, ...]}``, a lamella being
``{petname, path, number, id, poses: {"MILLING": {stage_position: {x, y, z (m), r, t (rad),
coordinate_system}}}, task_state, task_history: [{name, status, ...}], defect: {state, ...},
milling_angle (deg)}``. AutoLamella's tasks map to our protocol sections through the task
protocol's ``tasks: {Task: {milling: {section: ...}}}``.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .. import validate
from ..backend import STAGE_AXES
from ._protocol import read_protocol_file

__all__ = ["read_experiment", "write_experiment", "task_sections"]

#: the pose of a lamella we mill at
_MILLING_POSE = "MILLING"
#: a stable namespace: the same batch exports the same lamella ids
_NAMESPACE = uuid.UUID("6f1c2a3e-8d0b-4f4e-9a51-0c7b1f6d2e90")


def task_sections(protocol: Mapping | str | Path | None) -> dict[str, list[str]]:
    """``{task name: [milling section, ...]}`` of a task protocol (``tasks:`` layout); tasks
    that mill nothing map to ``[]``. A stage protocol (no ``tasks:``) has one task per
    section, named as the section."""
    if protocol is None:
        return {}
    data = read_protocol_file(protocol)
    if "tasks" not in data:
        return {str(k): [str(k)] for k in (data.get("milling") or {})}
    return {str(name): [str(k) for k in ((task or {}).get("milling") or {})]
            for name, task in data["tasks"].items()}


def _position(lamella: Mapping, where: str) -> dict[str, float]:
    pose = (lamella.get("poses") or {}).get(_MILLING_POSE)
    if not pose or not pose.get("stage_position"):
        raise ValueError(f"{where}: no {_MILLING_POSE} pose (stage position) to mill at")
    sp = pose["stage_position"]
    if sp.get("coordinate_system", "RAW") not in ("RAW", "raw", None):
        raise ValueError(f"{where}: stage position in {sp['coordinate_system']!r} coordinates; "
                         "only RAW positions are read")
    out = {}
    for axis in STAGE_AXES:
        v = validate.real(f"{where}: stage position {axis}", sp.get(axis),
                          rule="a finite number")
        # OpenFIBSEM keeps r and t in radians, our positions in degrees
        out[axis] = math.degrees(v) if axis in ("r", "t") else float(v)
    return out


def read_experiment(source: str | Path | Mapping,
                    protocol: Mapping | str | Path | None = None) -> dict[str, Any]:
    """A lamella batch from an AutoLamella ``experiment.yaml`` (or its dict).

    Parameters
    ----------
    source : str, Path or dict
        The file (or the folder holding it) or its contents.
    protocol : dict, str or Path, optional
        The task protocol, to map completed tasks to protocol sections (default: the
        ``protocol.yaml`` next to the experiment, if there is one; without any, each
        completed task stands for the section of its name).

    Returns
    -------
    dict
        ``name`` (the batch), ``sites`` (lamella names, in order), ``positions`` ({site:
        {x, y, z (m), r, t (deg)}}), ``done`` ({site: [sections of completed tasks]}),
        ``skipped`` ({site: {"section", "reason"}} for lamellae marked failed),
        ``milling_angle`` ({site: deg or None}), ``tasks`` ({site: {"state", "history"}},
        AutoLamella's task records as they were).
    """
    folder = None
    if isinstance(source, (str, Path)):
        path = Path(source)
        path = path / "experiment.yaml" if path.is_dir() else path
        folder = path.parent
        try:
            data = yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ValueError(f"cannot read experiment {path}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ValueError(f"malformed experiment YAML {path}: {exc}") from exc
    else:
        data = source
    if not isinstance(data, Mapping) or not isinstance(data.get("positions"), list):
        raise ValueError("an experiment must be a mapping with a 'positions' list of lamellae")
    if protocol is None and folder is not None and (folder / "protocol.yaml").exists():
        protocol = folder / "protocol.yaml"
    sections_of = task_sections(protocol)
    out: dict[str, Any] = {"name": str(data.get("name") or "experiment"), "sites": [],
                           "positions": {}, "done": {}, "skipped": {}, "milling_angle": {},
                           "tasks": {}}
    for i, lam in enumerate(data["positions"]):
        where = f"experiment positions[{i}]"
        if not isinstance(lam, Mapping) or not lam.get("petname"):
            raise ValueError(f"{where}: a lamella needs a 'petname', got {lam!r}")
        site = str(lam["petname"])
        if site in out["positions"]:
            raise ValueError(f"{where}: lamella name {site!r} repeats")
        out["sites"].append(site)
        out["positions"][site] = _position(lam, f"{where} ({site})")
        history = list(lam.get("task_history") or [])
        done: list[str] = []
        for task in history:
            if (task or {}).get("status") != "Completed":
                continue
            name = task.get("name")
            if protocol is None:
                # no task protocol: a task stands for the section of its name
                done += [name] if name not in done else []
                continue
            if name not in sections_of:
                raise ValueError(f"{where} ({site}): completed task {name!r} is not in the "
                                 f"protocol's tasks {sorted(sections_of)}")
            done += [s for s in sections_of[name] if s not in done]
        out["done"][site] = done
        defect = lam.get("defect") or {}
        failed = defect.get("state") == "FAILURE" or (defect.get("has_defect")
                                                     and not defect.get("requires_rework"))
        if failed:
            out["skipped"][site] = {"section": "", "reason": "AutoLamella defect: " + str(
                defect.get("description") or "marked failed")}
        angle = lam.get("milling_angle")
        out["milling_angle"][site] = None if angle is None else float(angle)
        out["tasks"][site] = {"state": lam.get("task_state"), "history": history}
    return out


def _task_record(name: str, site_id: str, status: str, stamp: float) -> dict:
    return {"name": name, "step": "FINISHED" if status == "Completed" else "",
            "task_id": str(uuid.uuid5(_NAMESPACE, f"{site_id}/{name}")), "task_type": "",
            "lamella_id": site_id, "start_timestamp": stamp, "end_timestamp": stamp,
            "status": status, "status_message": "", "outputs": {}}


def write_experiment(path: str | Path, batch: Mapping[str, Any],
                     positions: Mapping[str, Mapping[str, float]],
                     protocol: Mapping | str | Path | None = None,
                     milling_angle: float | None = None) -> Path:
    """Write a lamella batch as AutoLamella's ``experiment.yaml`` in the folder ``path``.

    Parameters
    ----------
    path : str or Path
        The experiment folder (created); the file is ``path/experiment.yaml``.
    batch : dict
        What ``mill_lamellae`` returns (``batch``, ``done``, ``skipped``; ``sites`` or the
        keys of ``done`` give the order), or what :func:`read_experiment` returns.
    positions : dict
        ``{site: {x, y, z (m), r, t (deg)}}`` (the stage's saved positions).
    protocol : dict, str or Path, optional
        The task protocol: a task is recorded Completed when all its sections are done.
        Without it each done section is recorded as a task of its own name.
    milling_angle : float, optional
        Degrees, recorded for every lamella (else the batch's own, if it has one).

    Returns
    -------
    Path
        The file written.
    """
    folder = Path(path)
    sites = list(batch.get("sites") or batch.get("done") or [])
    if not sites:
        raise ValueError("the batch has no sites")
    missing = [s for s in sites if s not in positions]
    if missing:
        raise ValueError(f"no saved position for site(s) {missing}")
    tasks = task_sections(protocol)
    name = str(batch.get("batch") or batch.get("name") or "batch")
    stamp = time.time()
    angles = batch.get("milling_angle") if isinstance(batch.get("milling_angle"), Mapping) \
        else {}
    lamellae = []
    for number, site in enumerate(sites, start=1):
        site_id = str(uuid.uuid5(_NAMESPACE, f"{name}/{site}"))
        done = list((batch.get("done") or {}).get(site, []))
        if tasks:
            completed = [t for t, secs in tasks.items() if secs and all(s in done for s in secs)]
        else:
            completed = done
        history = [_task_record(t, site_id, "Completed", stamp) for t in completed]
        skipped = (batch.get("skipped") or {}).get(site)
        if skipped:
            state = _task_record(skipped.get("section") or "", site_id, "Failed", stamp)
            state["status_message"] = str(skipped.get("reason", ""))
        else:
            state = history[-1] if history else _task_record("", site_id, "NotStarted", stamp)
        p = positions[site]
        angle = milling_angle if milling_angle is not None else angles.get(site)
        lamellae.append({
            "petname": site, "path": str(folder / site), "number": number, "id": site_id,
            "alignment_area": {"left": 0.7, "top": 0.3, "width": 0.25, "height": 0.4},
            "poses": {_MILLING_POSE: {
                "timestamp": stamp,
                "stage_position": {"name": site, "x": float(p["x"]), "y": float(p["y"]),
                                   "z": float(p["z"]), "r": math.radians(p["r"]),
                                   "t": math.radians(p["t"]), "coordinate_system": "RAW"},
                "electron_beam": None, "ion_beam": None, "electron_detector": None,
                "ion_detector": None, "objective_position": None}},
            "task_config": {}, "task_state": state, "task_history": history,
            "defect": {"state": "FAILURE" if skipped else "NONE",
                       "last_completed_task": completed[-1] if completed else "",
                       "description": str(skipped.get("reason", "")) if skipped else "",
                       "updated_at": stamp if skipped else None},
            "milling_angle": None if angle is None else float(angle),
            "poi": {"x": 0.0, "y": 0.0}, "description": "",
        })
    doc = {"name": name, "_id": str(uuid.uuid5(_NAMESPACE, name)), "path": str(folder),
           "positions": lamellae, "landing_positions": [], "created_at": stamp,
           "metadata": {}, "session": None}
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "experiment.yaml"
    out.write_text(yaml.safe_dump(doc, indent=4, sort_keys=False))
    return out

