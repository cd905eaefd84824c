"""Milling stages, protocols (OpenFIBSEM ``protocol.yaml`` milling sections) and time estimates."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ._materials import MATERIALS, sputter_rate
from ._pattern import Pattern
from ._registry import make_pattern

__all__ = [
    "MillingStage", "load_protocol", "estimate_milling_time", "estimate_stage_time",
    "check_patterns", "OVERHEADS", "as_stages",
]

#: per-stage hardware costs, seconds (OpenFIBSEM ``timing.py``, measured on a Thermo system)
OVERHEADS = {
    "current_change": 20.5,   # beam current change
    "image": 2.0,             # one reference image, overhead beyond the scan itself
    "alignment": 2.25,        # one beam-shift alignment step
}

_PATTERNING_MODES = ("Serial", "Parallel")


@dataclass
class MillingStage:
    """One milling step: a pattern and the beam settings to mill it with.

    Parameters
    ----------
    name : str
        Stage name (e.g. "Rough Milling 01").
    pattern : Pattern
        What to mill, in the ion image frame (m).
    milling_current : float
        Ion beam current, A.
    milling_voltage : float
        Ion beam voltage, V.
    hfw : float
        Field width to mill at, m.
    material : str
        Sputter-rate table entry ("Si", "C", "Pt", "ice"); OpenFIBSEM's application file.
    patterning_mode : str
        "Serial" or "Parallel".
    alignment : bool
        Align (beam shift) at the milling current before milling.
    enabled : bool
        Skipped when False.
    """

    name: str
    pattern: Pattern
    milling_current: float = 2e-9
    milling_voltage: float = 30e3
    hfw: float = 80e-6
    material: str = "Si"
    patterning_mode: str = "Serial"
    alignment: bool = True
    enabled: bool = True
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if not isinstance(self.pattern, Pattern):
            raise ValueError(f"stage {self.name!r}: pattern must be a Pattern, got "
                             f"{type(self.pattern).__name__}")
        for key, unit in (("milling_current", "A"), ("milling_voltage", "V"), ("hfw", "m")):
            v = getattr(self, key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or v <= 0:
                raise ValueError(f"stage {self.name!r}: {key} must be > 0 {unit}, got {v!r}")
        sputter_rate(self.material)  # raises for an unknown material
        if self.patterning_mode not in _PATTERNING_MODES:
            raise ValueError(f"stage {self.name!r}: patterning_mode must be one of "
                             f"{list(_PATTERNING_MODES)}, got {self.patterning_mode!r}")

    def estimated_time(self) -> float:
        """Milling (beam-on) time, s, from dose: volume / (current x sputter rate)."""
        return estimate_milling_time(self.pattern, self.milling_current, self.material)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MillingStage:
        """From an OpenFIBSEM protocol entry: ``{name, milling: {...}, pattern: {...},
        alignment: {enabled}}`` (or the flat form of :meth:`to_dict`)."""
        if not isinstance(d, Mapping):
            raise ValueError(f"a milling stage must be a mapping, got {d!r}")
        name = str(d.get("name", "stage"))
        if "pattern" not in d:
            raise ValueError(f"stage {name!r} has no pattern")
        milling = dict(d.get("milling", {}))
        flat = {k: d[k] for k in ("milling_current", "milling_voltage", "hfw", "material",
                                  "patterning_mode") if k in d}
        milling.update(flat)
        material = milling.get("material", milling.get("application_file", "Si"))
        align = d.get("alignment", True)
        if isinstance(align, Mapping):
            align = bool(align.get("enabled", True))
        return cls(
            name=name,
            pattern=make_pattern(dict(d["pattern"])),
            milling_current=milling.get("milling_current", 2e-9),
            milling_voltage=milling.get("milling_voltage", 30e3),
            hfw=milling.get("hfw", 80e-6),
            material=material if material in MATERIALS else _material_error(name, material),
            patterning_mode=milling.get("patterning_mode", "Serial"),
            alignment=bool(align),
            enabled=bool(d.get("enabled", True)),
        )

    def to_dict(self) -> dict:
        return {
            "name": self.name, "pattern": self.pattern.to_dict(),
            "milling": {"milling_current": self.milling_current,
                        "milling_voltage": self.milling_voltage, "hfw": self.hfw,
                        "material": self.material, "patterning_mode": self.patterning_mode},
            "alignment": {"enabled": self.alignment}, "enabled": self.enabled,
        }


def as_stages(value) -> list[MillingStage]:
    """One stage, a stage dict (OpenFIBSEM protocol layout) or a list of either."""
    items = value if isinstance(value, Sequence) and not isinstance(value, (str, Mapping)) \
        else [value]
    stages = []
    for item in items:
        if isinstance(item, MillingStage):
            stages.append(item)
        elif isinstance(item, Mapping):
            stages.append(MillingStage.from_dict(item))
        else:
            raise ValueError(f"a milling stage must be a MillingStage or a dict, got {item!r}")
    if not stages:
        raise ValueError("no milling stages given")
    return stages


def _material_error(stage: str, material: str):
    raise ValueError(f"stage {stage!r}: unknown material {material!r}; known: {list(MATERIALS)}")


def estimate_milling_time(pattern: Pattern, current: float, material: str = "Si") -> float:
    """Beam-on time, s: sum over shapes of volume / (current x rate) x cross-section factor.

    ``current`` in A; rates in ``fibsem_ophyd.milling.SPUTTER_RATES_UM3_PER_NC``.
    """
    if isinstance(current, bool) or not isinstance(current, (int, float)) \
            or not math.isfinite(current) or current <= 0:
        raise ValueError(f"milling current must be > 0 A, got {current!r}")
    rate = sputter_rate(material)
    return sum(s.volume * s.time_factor for s in pattern.shapes()) / (current * rate)


def estimate_stage_time(stage: MillingStage, imaging_current: float | None = None) -> dict:
    """Time of a stage, s: ``{"milling", "overhead", "total"}``. Overheads: a current change
    to and from the milling current (unless it equals ``imaging_current``), an alignment,
    and reference images before and after."""
    if not stage.enabled:
        return {"milling": 0.0, "overhead": 0.0, "total": 0.0}
    milling = stage.estimated_time()
    overhead = 2 * OVERHEADS["image"]
    if imaging_current is None or not math.isclose(imaging_current, stage.milling_current):
        overhead += 2 * OVERHEADS["current_change"]
    if stage.alignment:
        overhead += OVERHEADS["alignment"]
    return {"milling": milling, "overhead": overhead, "total": milling + overhead}


def check_patterns(pattern: Pattern, hfw: float, aspect: float = 1024 / 1536,
                   protected: tuple[float, float, float, float] | None = None) -> None:
    """Refuse a pattern outside the field of view, or one that touches ``protected``
    (x0, y0, x1, y1 in m, e.g. the lamella), before the beam turns on."""
    x0, y0, x1, y1 = pattern.bounds
    hw, hh = hfw / 2, hfw * aspect / 2
    if x0 < -hw or x1 > hw or y0 < -hh or y1 > hh:
        raise ValueError(
            f"pattern {pattern.name} spans x [{x0 * 1e6:.2f}, {x1 * 1e6:.2f}] um, "
            f"y [{y0 * 1e6:.2f}, {y1 * 1e6:.2f}] um: outside the field of view "
            f"(+-{hw * 1e6:.2f} x +-{hh * 1e6:.2f} um at hfw {hfw * 1e6:.1f} um)"
        )
    if protected is not None:
        px0, py0, px1, py1 = protected
        # sample the protected region finely (and a little beyond) and look for any depth
        n = 200
        xs = np.linspace(px0, px1, n)[None, :]
        ys = np.linspace(py0, py1, n)[:, None]
        if np.any(pattern.depth_at(xs, ys) > 0):
            raise ValueError(f"pattern {pattern.name} overlaps the protected region "
                             f"x [{px0 * 1e6:.2f}, {px1 * 1e6:.2f}] um, "
                             f"y [{py0 * 1e6:.2f}, {py1 * 1e6:.2f}] um")


def load_protocol(source: str | Path | Mapping) -> dict[str, list[MillingStage]]:
    """Milling stages of a protocol: ``{"mill_rough": [MillingStage, ...], ...}``.

    Accepts an OpenFIBSEM ``protocol.yaml`` (its ``milling:`` section; each entry a stage, a
    list of stages or a ``{name, stages: [...]}`` group) or the same as a dict. Patterns are
    named as in OpenFIBSEM (see ``PATTERNS``). Malformed YAML, unknown pattern types or
    materials, and non-positive depths or currents raise ``ValueError`` naming the stage.
    """
    if isinstance(source, (str, Path)):
        try:
            data = yaml.safe_load(Path(source).read_text())
        except OSError as exc:
            raise ValueError(f"cannot read protocol {source}: {exc}") from exc
        except yaml.YAMLError as exc:
            raise ValueError(f"malformed protocol YAML {source}: {exc}") from exc
    else:
        data = source
    if not isinstance(data, Mapping):
        raise ValueError(f"a protocol must be a mapping, got {type(data).__name__}")
    section = data.get("milling", data)
    if not isinstance(section, Mapping):
        raise ValueError("protocol 'milling' section must be a mapping of name -> stages")
    out: dict[str, list[MillingStage]] = {}
    for key, entries in section.items():
        if isinstance(entries, Mapping) and "pattern" not in entries and "stages" in entries:
            entries = entries["stages"]  # the task-protocol layout: {name, stages: [...]}
        items = entries if isinstance(entries, list) else [entries]
        stages = []
        for i, item in enumerate(items):
            try:
                stages.append(MillingStage.from_dict(item))
            except (ValueError, TypeError) as exc:
                raise ValueError(f"protocol milling.{key}[{i}]: {exc}") from exc
        out[str(key)] = stages
    return out
