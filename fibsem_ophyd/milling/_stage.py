"""Milling stages, protocols (OpenFIBSEM ``protocol.yaml`` milling sections) and time estimates."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from .. import validate
from ._composites import Trench
from ._materials import sputter_rate
from ._pattern import Pattern
from ._protocol import material_for, normalise_protocol, read_protocol_file
from ._registry import PATTERNS, make_pattern
from ._single_patterns import RectanglePattern
from ._validate import _is_number

__all__ = [
    "MillingStage", "load_protocol", "estimate_milling_time", "estimate_stage_time",
    "check_patterns", "check_stages", "OVERHEADS", "DEPTH_RANGE", "as_stages", "STRATEGIES",
    "OVERTILT_RANGE",
]

#: per-stage hardware costs, seconds (OpenFIBSEM ``timing.py``, measured on a Thermo system)
OVERHEADS = {
    "current_change": 20.5,   # beam current change
    "image": 2.0,             # one reference image, overhead beyond the scan itself
    "alignment": 2.25,        # one beam-shift alignment step
}

_PATTERNING_MODES = ("Serial", "Parallel")
#: milling strategies (OpenFIBSEM names); its CoincidenceMilling needs a fluorescence camera
STRATEGIES = ("Standard", "Overtilt")
#: OpenFIBSEM's overtilt range, degrees
OVERTILT_RANGE = (0.1, 10.0)

#: ``milling:`` keys of a stage beyond ours: TESCAN / Odemis beam recipe settings, recorded in
#: ``extra`` (the dose model sets the time; on Thermo OpenFIBSEM does not apply them either)
_RECORDED_MILLING = ("preset", "spot_size", "rate", "dwell_time", "acquire_images")
#: ``imaging:`` keys of a stage that say where OpenFIBSEM saves images (ours go to the catalog)
_RECORDED_IMAGING = ("path", "filename", "save")


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
        Sputter-rate table entry ("Si", "C", "Pt", "ice"); protocols name it by the vendor
        application file (``APPLICATION_FILES``).
    patterning_mode : str
        "Serial" or "Parallel".
    alignment : bool
        Align (beam shift) at the milling current before milling.
    enabled : bool
        Skipped when False.
    extra : dict
        What a protocol gave that is recorded, not applied (``application_file``, ``preset``,
        ``unread`` legacy keys).
    strategy : str
        "Standard", or "Overtilt": each cut of a ``Trench`` milled with the stage tilted by
        -``overtilt`` (the upper cut) and +``overtilt`` (the lower), as OpenFIBSEM does.
    overtilt : float
        Degrees, within ``OVERTILT_RANGE`` for "Overtilt"; 0 otherwise.
    imaging_hfw : float, optional
        Field width of the images before and after milling, m (default: ``hfw``).
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
    strategy: str = "Standard"
    overtilt: float = 0.0
    imaging_hfw: float | None = None

    def __post_init__(self):
        if not isinstance(self.pattern, Pattern):
            raise ValueError(f"stage {self.name!r}: pattern must be a Pattern, got "
                             f"{type(self.pattern).__name__}")
        for key, unit in (("milling_current", "A"), ("milling_voltage", "V"), ("hfw", "m")):
            v = getattr(self, key)
            if not _is_number(v) or v <= 0:
                raise ValueError(f"stage {self.name!r}: {key} must be > 0 {unit}, got {v!r}")
        if self.imaging_hfw is not None and (not _is_number(self.imaging_hfw)
                                             or self.imaging_hfw <= 0):
            raise ValueError(f"stage {self.name!r}: imaging hfw must be > 0 m, got "
                             f"{self.imaging_hfw!r}")
        sputter_rate(self.material)  # raises for an unknown material
        if self.patterning_mode not in _PATTERNING_MODES:
            raise ValueError(f"stage {self.name!r}: patterning_mode must be one of "
                             f"{list(_PATTERNING_MODES)}, got {self.patterning_mode!r}")
        self._check_strategy()

    def _check_strategy(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(f"stage {self.name!r}: milling strategy {self.strategy!r} is not "
                             f"supported; supported: {list(STRATEGIES)}")
        lo, hi = OVERTILT_RANGE
        if self.strategy == "Standard":
            if self.overtilt != 0:
                raise ValueError(f"stage {self.name!r}: overtilt={self.overtilt!r} needs the "
                                 "Overtilt strategy")
            return
        if not isinstance(self.pattern, Trench):
            raise ValueError(f"stage {self.name!r}: the Overtilt strategy mills a Trench, got "
                             f"{self.pattern.name}")
        if not _is_number(self.overtilt) or not lo <= self.overtilt <= hi:
            raise ValueError(f"stage {self.name!r}: overtilt must be within [{lo}, {hi}] "
                             f"degrees, got {self.overtilt!r}")

    def estimated_time(self) -> float:
        """Milling (beam-on) time, s, from dose: volume / (current x sputter rate)."""
        return estimate_milling_time(self.pattern, self.milling_current, self.material)

    def cuts(self) -> list[tuple[float, MillingStage]]:
        """``[(relative stage tilt in degrees, stage), ...]`` to mill in turn, returning to the
        starting tilt after each: ``[(0, self)]`` for the Standard strategy; for Overtilt the
        Trench's upper cut at -``overtilt`` and its lower cut at +``overtilt``."""
        if self.strategy == "Standard":
            return [(0.0, self)]
        out = []
        for sign, part, shape in zip((-1.0, 1.0), ("upper", "lower"), self.pattern.shapes(),
                                     strict=True):
            cut = RectanglePattern(shape.width, shape.height, shape.depth,
                                   centre_x=shape.centre_x, centre_y=shape.centre_y,
                                   rotation=shape.rotation, cross_section=shape.cross_section,
                                   scan_direction=shape.scan_direction, passes=shape.passes)
            out.append((sign * self.overtilt, replace(
                self, name=f"{self.name} ({part} cut)", pattern=cut, strategy="Standard",
                overtilt=0.0)))
        return out

    @classmethod
    def from_dict(cls, d: Mapping[str, Any],
                  materials: Mapping[str, str] | None = None) -> MillingStage:
        """From an OpenFIBSEM protocol stage: ``{name, milling: {...}, pattern: {...},
        strategy: {name, config}, alignment: {enabled}, imaging: {hfw}}`` (or the flat form
        of :meth:`to_dict`). Application files map to materials by ``APPLICATION_FILES``
        (``materials`` adds or overrides names). Keys we cannot honour raise ``ValueError``
        naming them."""
        if not isinstance(d, Mapping):
            raise ValueError(f"a milling stage must be a mapping, got {d!r}")
        name = str(d.get("name", "stage"))
        validate.known_keys(f"stage {name!r}", d, sorted(_STAGE_KEYS), what="stage setting")
        if "pattern" not in d:
            raise ValueError(f"stage {name!r} has no pattern")
        if d.get("reference_image") is not None:
            raise ValueError(f"stage {name!r}: a stored reference_image is not read (the "
                             "milling plans take their own reference)")
        milling = validate.mapping(f"stage {name!r}: milling", d.get("milling"), none=True)
        milling.update({k: d[k] for k in _FLAT_KEYS if k in d})
        extra: dict[str, Any] = {}
        validate.known_keys(f"stage {name!r}", milling, _MILLING_KEYS + _RECORDED_MILLING,
                            what="milling setting")
        channel = milling.get("milling_channel", "ION")
        if channel not in ("ION", 2):
            raise ValueError(f"stage {name!r}: milling_channel={channel!r} is not supported "
                             "(milling is with the ion beam)")
        if "application_file" in milling:
            extra["application_file"] = milling["application_file"]
            if "material" in milling and milling["material"] != material_for(
                    milling["application_file"], materials):
                raise ValueError(f"stage {name!r}: material {milling['material']!r} "
                                 f"contradicts application_file "
                                 f"{milling['application_file']!r}")
        extra.update({k: milling[k] for k in _RECORDED_MILLING if k in milling})
        material = material_for(milling.get("material", milling.get("application_file", "Si")),
                                materials)
        strategy, overtilt = _strategy(d.get("strategy"), name)
        imaging_hfw = _imaging(d.get("imaging"), name, extra)
        if d.get("_unread"):
            extra["unread"] = dict(d["_unread"])
        return cls(
            name=name,
            pattern=make_pattern(dict(d["pattern"])),
            milling_current=milling.get("milling_current", 2e-9),
            milling_voltage=milling.get("milling_voltage", 30e3),
            hfw=milling.get("hfw", 80e-6),
            material=material,
            patterning_mode=milling.get("patterning_mode", "Serial"),
            alignment=_alignment(d.get("alignment", True), name),
            enabled=validate.boolean(f"stage {name!r}: enabled", d.get("enabled", True)),
            extra=extra,
            strategy=strategy,
            overtilt=overtilt,
            imaging_hfw=imaging_hfw,
        )

    def to_dict(self) -> dict:
        """OpenFIBSEM's stage layout (``application_file`` as the protocol gave it, else the
        material)."""
        d = {
            "name": self.name, "pattern": self.pattern.to_dict(),
            "milling": {"milling_current": self.milling_current,
                        "milling_voltage": self.milling_voltage, "hfw": self.hfw,
                        "material": self.material, "patterning_mode": self.patterning_mode},
            "alignment": {"enabled": self.alignment}, "enabled": self.enabled,
            "strategy": {"name": self.strategy,
                         "config": {"overtilt": self.overtilt} if self.overtilt else {}},
        }
        if "application_file" in self.extra:
            d["milling"]["application_file"] = self.extra["application_file"]
        if self.imaging_hfw is not None:
            d["imaging"] = {"hfw": self.imaging_hfw}
        return d


_MILLING_KEYS = ("milling_current", "milling_voltage", "hfw", "material", "application_file",
                 "patterning_mode", "milling_channel")
_FLAT_KEYS = ("milling_current", "milling_voltage", "hfw", "material", "patterning_mode")
_STAGE_KEYS = {"name", "num", "enabled", "milling", "pattern", "strategy", "alignment",
               "imaging", "reference_image", "_unread", *_FLAT_KEYS}


def _strategy(spec, stage: str) -> tuple[str, float]:
    """(name, overtilt in degrees) of an OpenFIBSEM ``strategy: {name, config}``."""
    if spec is None or spec == {}:
        return "Standard", 0.0
    if not isinstance(spec, Mapping):
        raise ValueError(f"stage {stage!r}: strategy must be {{name, config}}, got {spec!r}")
    name = spec.get("name", "Standard")
    config = dict(spec.get("config") or {})
    if name not in STRATEGIES:
        reason = " (it stops on a fluorescence signal; there is no fluorescence microscope " \
                 "here)" if name == "CoincidenceMilling" else ""
        raise ValueError(f"stage {stage!r}: milling strategy {name!r} is not supported"
                         f"{reason}; supported: {list(STRATEGIES)}")
    # OpenFIBSEM's Overtilt config also carries an alignment image size and two test fields
    allowed = {"Standard": set(), "Overtilt": {"overtilt", "image_resolution",
                                                "secret_parameter", "area_parameter"}}[name]
    unknown = set(config) - allowed
    if unknown:
        raise ValueError(f"stage {stage!r}: unknown {name} strategy setting(s) "
                         f"{sorted(unknown)}")
    return name, float(config.get("overtilt", 1.0)) if name == "Overtilt" else 0.0


def _alignment(spec, stage: str) -> bool:
    if isinstance(spec, bool):
        return spec
    if not isinstance(spec, Mapping):
        raise ValueError(f"stage {stage!r}: alignment must be true/false or {{enabled}}, got "
                         f"{spec!r}")
    if spec.get("interval_enabled"):
        raise ValueError(f"stage {stage!r}: alignment.interval_enabled (re-aligning during "
                         "milling) is not supported; the stage aligns before it mills")
    unknown = set(spec) - {"enabled", "interval_enabled", "interval"}
    if unknown:
        raise ValueError(f"stage {stage!r}: alignment setting(s) {sorted(unknown)} are not "
                         "supported (the alignment registers the whole ion image)")
    return bool(spec.get("enabled", True))


def _imaging(spec, stage: str, extra: dict) -> float | None:
    """The imaging field width of a stage's ``imaging:`` settings; where to save goes to
    ``extra``; anything else is refused."""
    if spec is None:
        return None
    if not isinstance(spec, Mapping):
        raise ValueError(f"stage {stage!r}: imaging must be a mapping, got {spec!r}")
    unknown = {k for k, v in spec.items()
               if k not in ("hfw", *_RECORDED_IMAGING) and v is not None}
    if unknown:
        raise ValueError(f"stage {stage!r}: imaging setting(s) {sorted(unknown)} are not "
                         "supported (only hfw; images before and after milling use the ion "
                         "detector's own resolution and dwell)")
    saved = {k: spec[k] for k in _RECORDED_IMAGING if spec.get(k) is not None}
    if saved:
        extra["imaging"] = saved
    return spec.get("hfw")


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
            raise ValueError(f"stages: a milling stage must be a MillingStage or a dict, got "
                             f"{validate.show(item)}")
    if not stages:
        raise ValueError("no milling stages given")
    return stages


def estimate_milling_time(pattern: Pattern, current: float, material: str = "Si") -> float:
    """Beam-on time, s: sum over shapes of volume / (current x rate) x cross-section factor.

    ``current`` in A; rates in ``fibsem_ophyd.milling.SPUTTER_RATES_UM3_PER_NC``.
    """
    validate.positive("milling current", current, units="A", rule="a number > 0 A")
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


#: the milling depths (m) a stage may ask for. Below 1 nm a cut removes less than two atomic
#: layers of silicon (lattice constant 0.543 nm): nothing a milling step is for. Above 100 um
#: no FIB cut goes: the deepest (lift-out trenches, large cross-sections) are 10-50 um, and a
#: 100 x 100 x 100 um^3 block of Si takes 16 h at the strongest Ga current (65 nA x 0.27
#: um^3/nC = 17.6 um^3/s) while redeposition fills the trench. A depth outside is a unit slip
#: (2 um written as 2, or as 2e-12), refused before the beam is touched.
DEPTH_RANGE = (1e-9, 100e-6)

#: stage parameters checked against the ion beam's limits, and the beam setting each is
BEAM_PARAMETERS = (("milling_current", "current", "A"), ("milling_voltage", "voltage", "V"),
                   ("hfw", "hfw", "m"))


def check_stages(stages: Sequence[MillingStage],
                 beam_limits: Mapping[str, Sequence[float] | None] | None = None) -> None:
    """Refuse a stage that cannot be milled, naming it, the parameter, its value and the limit;
    nothing is changed. Checked: the pattern inside the field of view, every shape's depth
    within :data:`DEPTH_RANGE`, and with ``beam_limits`` (the ion beam's ``{"current": (low,
    high), "voltage": ..., "hfw": ...}``, as the backend describes them) the stage's
    milling current, voltage and field width within them."""
    for st in stages:
        try:
            check_patterns(st.pattern, st.hfw)
            for shape in st.pattern.shapes():
                depth = getattr(shape, "depth", None)
                if depth is not None:
                    validate.in_range(f"pattern {st.pattern.name} depth", depth, DEPTH_RANGE,
                                      units="m", limits_name="the plausible milling depths")
            for param, key, units in BEAM_PARAMETERS:
                limits = (beam_limits or {}).get(key)
                if limits is not None:
                    validate.in_range(param, getattr(st, param), tuple(limits), units=units,
                                      limits_name="the ion beam's limits")
        except ValueError as exc:
            raise ValueError(f"stage {st.name!r}: {exc}") from None


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


def load_protocol(source: str | Path | Mapping,
                  materials: Mapping[str, str] | None = None) -> dict[str, list[MillingStage]]:
    """Milling stages of a protocol: ``{"mill_rough": [MillingStage, ...], ...}``.

    Reads every OpenFIBSEM / AutoLamella layout (``fibsem_ophyd.milling._protocol``): the
    ``tasks:`` protocol, the ``milling:`` stage protocol and the flat legacy entries. Vendor
    application files map to materials by ``APPLICATION_FILES`` (``materials`` adds or
    overrides names). Malformed YAML, unknown pattern types, parameters or materials, and
    what cannot be honoured (e.g. the CoincidenceMilling strategy) raise ``ValueError``
    naming the stage.
    """
    data = read_protocol_file(source)

    def known_fields(name):
        cls = PATTERNS.get(name) if isinstance(name, str) else None
        if cls is None:
            return None
        return {f.name for f in fields(cls)} | set(cls.openfibsem_defaults)

    out: dict[str, list[MillingStage]] = {}
    for key, stages in normalise_protocol(data, known_fields).items():
        out[key] = []
        for where, d in stages:
            try:
                out[key].append(MillingStage.from_dict(d, materials))
            except (ValueError, TypeError) as exc:
                raise ValueError(f"protocol {where}: {exc}") from exc
    return out
