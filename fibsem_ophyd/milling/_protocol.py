"""OpenFIBSEM and AutoLamella protocol files: their milling sections as :class:`MillingStage`.

Every layout that ``fibsem`` 0.5.3 (``applications/autolamella/protocol/``, ``legacy/``,
``development/``) and ``autolamella`` 0.4.0 (``protocol/*.yaml``) ship is read:

- the task protocol: ``tasks: {Task: {milling: {key: {name, field_of_view, channel, alignment,
  acquisition, stages: [...]}}}}``; as in OpenFIBSEM the group's field of view and alignment
  apply to each of its stages;
- the stage protocol: ``milling: {key: [stage, ...] | stage | {stages: [...], point}}`` with
  stages ``{name, milling: {...}, pattern: {...}, strategy: {name, config}, alignment, imaging}``;
- the flat stage of AutoLamella 0.2 / AutoLiftout (``{type, hfw, milling_current,
  application_file, <pattern parameters>}``); without ``type`` the pattern follows from the
  section's key, as OpenFIBSEM's ``PROTOCOL_MILL_MAP`` does; a ``lamella`` section is split
  into ``mill_rough`` and ``mill_polishing`` (the last ``options.num_polishing_stages``, 1).

What OpenFIBSEM would do that we cannot is refused by name (``ValueError``). Legacy keys that
OpenFIBSEM 0.5.3 itself does not read are kept in ``stage.extra["unread"]`` and logged.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from .. import validate
from ._materials import MATERIALS

__all__ = ["APPLICATION_FILES", "PATTERN_FOR_SECTION", "material_for", "normalise_protocol",
           "read_protocol_file"]

logger = logging.getLogger(__name__)

#: vendor application files (the beam scan recipe named in a protocol) -> our material.
#: Every name the shipped protocols use mills silicon in OpenFIBSEM's estimate too.
APPLICATION_FILES = {
    "Si": "Si",
    "Si-ccs": "Si",          # silicon, cleaning cross-section recipe
    "Si-multipass": "Si",    # silicon, many passes (welds)
    "autolamella": "Si",     # a site-made copy of the silicon recipe (AutoLamella 0.2)
}

#: pattern of a flat legacy entry without ``type``, by section key (OpenFIBSEM
#: ``PROTOCOL_MILL_MAP``; its ``clover`` has no counterpart here and is refused)
PATTERN_FOR_SECTION = {
    **dict.fromkeys(("cut", "flatten", "sever", "sharpen", "needle", "serial_undercut",
                     "serial_sever", "lamella_sever", "MillUndercut", "rectangle"),
                    "Rectangle"),
    **dict.fromkeys(("lamella", "polish_lamella", "thin_lamella", "lamella_polish", "trench",
                     "autolamella", "MillRough", "MillRegularCut", "MillPolishing",
                     "mill_rough", "mill_polishing"), "Trench"),
    **dict.fromkeys(("horseshoe", "copper_release", "serial_trench"), "Horseshoe"),
    "fiducial": "Fiducial", "undercut": "Undercut", "notch": "WaffleNotch",
    "microexpansion": "MicroExpansion",
}

#: keys of a flat legacy entry that are milling settings (OpenFIBSEM ``MILLING_KEYS``)
_FLAT_MILLING = ("dwell_time", "hfw", "milling_current", "milling_voltage", "patterning_mode",
                 "preset", "rate", "spot_size", "application_file", "milling_channel")

#: legacy pattern keys OpenFIBSEM 0.5.3 drops when it loads them (not fields of its patterns);
#: kept in ``stage.extra["unread"]``
_UNREAD_PATTERN_KEYS = {
    "side_offset": "AutoLiftout's horseshoe side-cut offset",
    "needle_angle": "AutoLiftout's needle sharpening geometry",
    "tip_angle": "AutoLiftout's needle sharpening geometry",
    "bias": "AutoLiftout's needle sharpening geometry",
    "undercut_angle": "AutoLiftout's undercut tilt (a stage move, not a pattern)",
    "v_offset": "AutoLiftout's undercut offset",
}
#: settings a pattern without them accepts only at these values (else refused)
_NOOP_PATTERN_KEYS = {"rotation": (0, 0.0), "scan_direction": ("TopToBottom",)}


def read_protocol_file(source: str | Path | Mapping) -> Mapping:
    """The parsed YAML of a protocol file (or ``source`` itself if it is a mapping)."""
    if not isinstance(source, (str, Path)):
        data = source
    else:
        try:
            data = yaml.safe_load(Path(source).read_text())
        except OSError as exc:
            raise ValueError(f"cannot read protocol {source}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ValueError(f"malformed protocol YAML {source}: {exc}") from exc
    if not isinstance(data, Mapping):
        raise ValueError(f"a protocol must be a mapping, got {type(data).__name__}")
    return _numbers(data)


#: a number YAML 1.1 reads as a string: an exponent without a decimal point ("200e-6")
_EXPONENT = re.compile(r"^[-+]?\d+[eE][-+]?\d+$")


def _numbers(value):
    """``value`` with the strings YAML 1.1 leaves unparsed as numbers (``200e-6``) made
    floats, as OpenFIBSEM's ``float(...)`` of its settings does."""
    if isinstance(value, Mapping):
        return {k: _numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_numbers(v) for v in value]
    if isinstance(value, str) and _EXPONENT.match(value):
        return float(value)
    return value


def material_for(application_file: Any, materials: Mapping[str, str] | None = None) -> str:
    """Our material for a vendor application file name (``APPLICATION_FILES``, then
    ``materials`` overrides; our own material names map to themselves)."""
    table = {**{m: m for m in MATERIALS}, **APPLICATION_FILES, **(materials or {})}
    if application_file not in table:
        raise ValueError(f"unknown material {application_file!r}; known: {list(MATERIALS)} "
                         f"and the application files {sorted(APPLICATION_FILES)} (pass "
                         f"materials={{{application_file!r}: ...}} to map another)")
    material = table[application_file]
    if material not in MATERIALS:
        raise ValueError(f"application file {application_file!r} maps to unknown material "
                         f"{material!r}; known: {list(MATERIALS)}")
    return material


def _legacy_trench(p: dict) -> None:
    """OpenFIBSEM's conversion of a pre-0.2 trench: lamella_width/height, offset, size_ratio,
    trench_height -> width, spacing, upper/lower_trench_height (in place)."""
    if "lamella_width" not in p:
        return
    ratio = p.pop("size_ratio", 1.0)
    height = p.pop("trench_height")
    p["width"] = p.pop("lamella_width")
    p["spacing"] = p.pop("lamella_height") + 2 * p.pop("offset", 0.0)
    p["upper_trench_height"] = height / max(ratio, 1.0)
    p["lower_trench_height"] = height * min(ratio, 1.0)


def _legacy_pattern(pattern: dict, known: set[str], where: str, unread: dict) -> dict:
    """Translate the old pattern keys (``cleaning_cross_section``, ``flip``, ``passes: null``,
    pre-0.2 trench geometry); move keys OpenFIBSEM does not read into ``unread``."""
    p = dict(pattern)
    name = p.get("name")
    if name in ("Trench", "Horseshoe"):
        _legacy_trench(p)
    if "cleaning_cross_section" in p:
        ccs = p.pop("cleaning_cross_section")
        if ccs:
            if p.get("cross_section", "CleaningCrossSection") != "CleaningCrossSection":
                raise ValueError(f"{where}: cleaning_cross_section={ccs!r} contradicts "
                                 f"cross_section={p['cross_section']!r}")
            if "cross_section" not in known:
                raise ValueError(f"{where}: {name} has no cross-section to make a cleaning "
                                 f"cross-section (cleaning_cross_section={ccs!r})")
            p["cross_section"] = "CleaningCrossSection"
    if "flip" in p:  # WaffleNotch before OpenFIBSEM renamed it
        flip = bool(p.pop("flip"))
        if p.setdefault("inverted", flip) != flip:
            raise ValueError(f"{where}: flip={flip!r} contradicts inverted={p['inverted']!r}")
    if p.get("passes", 0) is None:
        p.pop("passes")  # null: the application file's default
    for key in list(p):
        if key in known or key in ("name", "point"):
            continue
        if key in _UNREAD_PATTERN_KEYS:
            unread[key] = p.pop(key)
        elif key in _NOOP_PATTERN_KEYS:
            if p[key] not in _NOOP_PATTERN_KEYS[key]:
                raise ValueError(f"{where}: {name} cannot take {key}={p[key]!r} (only "
                                 f"{_NOOP_PATTERN_KEYS[key][-1]!r})")
            unread[key] = p.pop(key)
    return p


def _flat_stage(entry: Mapping, key: str, where: str) -> dict:
    """A flat legacy entry as a stage ``{name, milling, pattern}``."""
    name = entry.get("type")
    if name is None:
        if key not in PATTERN_FOR_SECTION:
            raise ValueError(f"{where}: the entry has no pattern 'type' and section {key!r} "
                             f"names none; known sections: {sorted(PATTERN_FOR_SECTION)}")
        name = PATTERN_FOR_SECTION[key]
    milling = {k: entry[k] for k in _FLAT_MILLING if k in entry}
    pattern = {k: v for k, v in entry.items()
               if k not in _FLAT_MILLING and k not in ("name", "type", "strategy")}
    pattern["name"] = name
    out = {"name": entry.get("name", key), "milling": milling, "pattern": pattern}
    if "strategy" in entry:
        out["strategy"] = entry["strategy"]
    return out


def _group_stages(entries: Any, key: str, where: str) -> tuple[list, dict]:
    """The stage entries of a section and its group settings (task layout)."""
    if isinstance(entries, list):
        return entries, {}
    if isinstance(entries, Mapping) and "stages" in entries and "pattern" not in entries:
        group = {k: v for k, v in entries.items() if k != "stages"}
        return list(entries["stages"] or []), group
    if isinstance(entries, Mapping):
        return [entries], {}
    raise ValueError(f"{where}: a milling section must be a stage, a list of stages or "
                     f"{{stages: [...]}}, got {entries!r}")


def _apply_group(stage: dict, group: Mapping, where: str) -> dict:
    """OpenFIBSEM's task settings override each stage's: field of view, channel, alignment;
    the group ``point`` (legacy) places stages without one."""
    stage = dict(stage)
    known = {"name", "field_of_view", "channel", "alignment", "acquisition", "point",
             "dwell_time", "hfw", "resolution", "rotation_angle", "tilt_angle"}
    unknown = set(group) - known
    if unknown:
        raise ValueError(f"{where}: unknown milling task setting(s) {sorted(unknown)}")
    milling = dict(stage.get("milling") or {})
    if "field_of_view" in group:
        milling["hfw"] = group["field_of_view"]
    if "channel" in group:
        milling["milling_channel"] = group["channel"]
    stage["milling"] = milling
    if "alignment" in group:
        stage["alignment"] = group["alignment"]
    acq = group.get("acquisition") or {}
    if acq.get("acquire_sem"):
        raise ValueError(f"{where}: acquisition.acquire_sem=True is not supported (the "
                         "milling plans image with the ion beam before and after each stage)")
    if "point" in group and isinstance(stage.get("pattern"), Mapping):
        stage["pattern"] = {"point": group["point"], **stage["pattern"]}
    # the legacy lamella group's imaging and stage pose: not milling settings
    legacy = {k: group[k] for k in ("dwell_time", "hfw", "resolution", "rotation_angle",
                                    "tilt_angle") if k in group}
    if legacy:
        stage["_unread"] = {**stage.get("_unread", {}), **legacy}
    return stage


def _split_lamella(milling: dict, options: Mapping) -> dict:
    """OpenFIBSEM's ``validate_protocol``: a ``lamella`` section becomes ``mill_rough`` and
    ``mill_polishing`` (its last ``num_polishing_stages`` stages, default 1)."""
    if "lamella" not in milling:
        return milling
    milling = dict(milling)
    stages, group = _group_stages(milling.pop("lamella"), "lamella", "milling.lamella")
    n = validate.integer("options.num_polishing_stages", options.get("num_polishing_stages", 1),
                         minimum=0, integral_float=True)
    rough, polish = stages[:-n] if n else stages, stages[-n:] if n else []
    for key, part in (("mill_rough", rough), ("mill_polishing", polish)):
        if key in milling:
            raise ValueError(f"milling.lamella cannot be split: milling.{key} exists too")
        if part:
            milling[key] = {**group, "stages": part}
    return milling


def normalise_protocol(data: Mapping, known_fields) -> dict[str, list[tuple[str, dict]]]:
    """Every milling section of a protocol, its stages in OpenFIBSEM's stage layout:
    ``{key: [(where, stage_dict), ...]}``. ``known_fields(pattern_name)`` gives the keys a
    pattern takes (``None`` for an unknown pattern)."""
    sections: dict[str, tuple[Any, dict]] = {}
    if "tasks" in data:
        tasks = data["tasks"]
        if not isinstance(tasks, Mapping):
            raise ValueError("protocol 'tasks' must be a mapping of task name -> task")
        for tname, task in tasks.items():
            for key, entries in ((task or {}).get("milling") or {}).items():
                if key in sections:
                    raise ValueError(f"milling section {key!r} appears in two tasks "
                                     f"({sections[key][1]['task']!r} and {tname!r})")
                sections[key] = (entries, {"task": tname})
    else:
        milling = data.get("milling", data)
        if not isinstance(milling, Mapping):
            raise ValueError("protocol 'milling' section must be a mapping of name -> stages")
        milling = _split_lamella(dict(milling), data.get("options") or {})
        sections = {k: (v, {}) for k, v in milling.items()}
    out: dict[str, list[tuple[str, dict]]] = {}
    for key, (entries, ctx) in sections.items():
        prefix = f"task {ctx['task']!r} milling.{key}" if ctx else f"milling.{key}"
        items, group = _group_stages(entries, key, prefix)
        stages = []
        for i, item in enumerate(items):
            where = f"{prefix}[{i}]"
            if not isinstance(item, Mapping):
                raise ValueError(f"protocol {where}: a milling stage must be a mapping, "
                                 f"got {item!r}")
            stage = dict(item) if "pattern" in item or "milling" in item \
                else _flat_stage(item, key, where)
            stage = _apply_group(stage, group, where) if group else stage
            if isinstance(stage.get("pattern"), Mapping):
                unread = dict(stage.pop("_unread", {}))
                known = known_fields(stage["pattern"].get("name"))
                if known is not None:
                    stage["pattern"] = _legacy_pattern(stage["pattern"], known, where, unread)
                if unread:
                    logger.warning("protocol %s: %s not read (OpenFIBSEM 0.5.3 does not read "
                                   "them either)", where, sorted(unread))
                    stage["_unread"] = unread
            stages.append((where, stage))
        out[str(key)] = stages
    return out
