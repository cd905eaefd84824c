"""Microscope configuration in OpenFIBSEM's layout (``stage``, ``electron``, ``ion``, ...).

:func:`load_config` accepts a YAML path, a YAML string's parsed dict or ``None`` (the
packaged default), deep-merges it over the default and validates it. Every error is a
:class:`ConfigError` naming the offending key, its value and what was expected.

Every key is known (:data:`SCHEMA`: ours and those of OpenFIBSEM 0.5.3's
``microscope-configuration.yaml``, which this layout follows); a misspelt one is refused
with its close match rather than ignored (a ``dwel_time`` would leave the default in
force). Sections are mappings, switches are ``true``/``false`` (YAML's ``"false"`` is a
string, and ``bool("false")`` is True), numbers are finite numbers, and the beams' limits
keep currents, voltages, field widths, dwell times and working distances above zero.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .. import validate
from ..backend import BEAMS, MAX_RESOLUTION, STAGE_AXES
from ..geometry import STAGE_TYPES, SystemGeometry

__all__ = ["ConfigError", "MicroscopeConfig", "load_config", "default_config_path", "SCHEMA",
           "BEAM_LIMIT_KEYS", "SIM_RANGES"]

AXES = STAGE_AXES

_BEAM = ("enabled", "column_tilt", "eucentric_height", "voltage", "current", "resolution",
         "hfw", "dwell_time", "detector_type", "detector_mode", "limits", "available_currents")
#: every key of each section: ours, and OpenFIBSEM 0.5.3's (``info.model`` ... are what its
#: ``SystemInfo`` holds; ``sim.sem``/``fib``/``use_cycle``/``is_compustage`` configure its
#: own demo microscope; ``fm`` its fluorescence module). Anything else is refused by name.
SCHEMA: dict[str, tuple[str, ...]] = {
    "info": ("name", "ip_address", "manufacturer", "model", "serial_number",
             "hardware_version", "software_version", "fibsem_version", "fibsem_revision",
             "application"),
    "stage": ("type", "enabled", "rotation", "tilt", "rotation_reference", "rotation_180",
              "shuttle_pre_tilt", "manipulator_height_limit", "eucentric_z", "limits",
              "initial_position", "is_compustage"),
    "electron": _BEAM,
    "ion": _BEAM + ("plasma", "plasma_gas"),
    "manipulator": ("enabled", "rotation", "tilt"),
    "gis": ("enabled", "multichem", "sputter_coater"),
    "imaging": ("beam_type", "resolution", "hfw", "dwell_time", "imaging_current",
                "autocontrast", "autogamma", "save"),
    "milling": ("milling_voltage", "milling_current", "dwell_time", "rate", "spot_size",
                "preset", "spacing"),
    "sim": ("sample_height_offset", "collection_efficiency", "excess_noise", "drift",
            "real_time_factor", "sem", "fib", "use_cycle", "is_compustage"),
    "fm": ("enabled",),
}
#: the switches (true/false) of each section
_SWITCHES = {
    "stage": ("enabled", "rotation", "tilt", "is_compustage"),
    "electron": ("enabled",), "ion": ("enabled", "plasma"),
    "manipulator": ("enabled", "rotation", "tilt"),
    "gis": ("enabled", "multichem", "sputter_coater"),
    "imaging": ("autocontrast", "autogamma", "save"),
    "sim": ("use_cycle", "is_compustage"), "fm": ("enabled",),
}
#: the optional strings of each section (``null`` allowed)
_STRINGS = {
    "info": SCHEMA["info"], "electron": ("detector_type", "detector_mode"),
    "ion": ("detector_type", "detector_mode", "plasma_gas"), "milling": ("preset",),
    "sim": ("sem", "fib"),
}
#: the optional positive numbers (units) of the sections the devices do not start from
_POSITIVE: dict[str, dict[str, str | None]] = {
    "imaging": {"hfw": "m", "dwell_time": "s", "imaging_current": "A"},
    "milling": {"milling_voltage": "V", "milling_current": "A", "dwell_time": "s",
                "rate": "m3/s", "spot_size": "m", "spacing": None},
    "stage": {"manipulator_height_limit": "m"},
}
#: each beam's limits: ``[low, high]``; the first five must stay above zero
BEAM_LIMIT_KEYS = ("voltage", "current", "hfw", "dwell_time", "working_distance", "shift",
                   "stigmation")
_POSITIVE_LIMITS = {"voltage": "V", "current": "A", "hfw": "m", "dwell_time": "s",
                    "working_distance": "m"}
#: the simulator's numbers (``sim:``): (low, high) of each
SIM_RANGES = {"sample_height_offset": (-math.inf, math.inf),
              "collection_efficiency": (1e-6, 1.0), "excess_noise": (1.0, 10.0),
              "real_time_factor": (0.0, 1e6)}
#: keys of ``sim.drift`` when it is a mapping (else true/false)
DRIFT_KEYS = ("velocity", "settle_amplitude", "settle_tau")


class ConfigError(ValueError):
    """Invalid microscope configuration."""


def default_config_path() -> Path:
    return Path(str(resources.files(__package__).joinpath("microscope.yaml")))


def _read_yaml(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"malformed YAML in {path}: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


def _merge(base: dict, over: Mapping, path: str = "") -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        where = f"{path}.{k}" if path else str(k)
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v, where)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _checked(check, *args, **kwargs):
    """``check(*args, **kwargs)`` of :mod:`fibsem_ophyd.validate`, its ``ValueError`` as a
    :class:`ConfigError`."""
    try:
        return check(*args, **kwargs)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _check_schema(d: Mapping) -> None:
    """Known sections and keys, mappings where mappings go, switches, strings and numbers
    of the optional keys (the required ones are checked in :meth:`MicroscopeConfig._validate`)."""
    _checked(validate.known_keys, "the configuration", d, tuple(SCHEMA), what="section")
    for section, keys in SCHEMA.items():
        if section not in d:
            continue
        node = _checked(validate.mapping, section, d[section])
        _checked(validate.known_keys, section, node, keys)
        for key in _SWITCHES.get(section, ()):
            if key in node:
                _checked(validate.boolean, f"{section}.{key}", node[key])
        for key in _STRINGS.get(section, ()):
            if node.get(key) is not None:
                _checked(validate.text, f"{section}.{key}", node[key], empty=True)
        for key, units in _POSITIVE.get(section, {}).items():
            if node.get(key) is not None:
                _checked(validate.positive, f"{section}.{key}", node[key], units=units)
    imaging = d.get("imaging") or {}
    if imaging.get("resolution") is not None:
        _resolution("imaging.resolution", imaging["resolution"])
    if imaging.get("beam_type") is not None:
        _checked(validate.choice, "imaging.beam_type", imaging["beam_type"],
                 ("ELECTRON", "ION"))
    stage = d["stage"]
    for key in ("limits", "initial_position"):
        node = _checked(validate.mapping, f"stage.{key}", stage.get(key))
        _checked(validate.known_keys, f"stage.{key}", node, AXES, what="stage axis")
    for beam in BEAMS:
        node = _checked(validate.mapping, f"{beam}.limits", d[beam].get("limits"))
        _checked(validate.known_keys, f"{beam}.limits", node, BEAM_LIMIT_KEYS)
        currents = d[beam].get("available_currents")
        if currents is not None:
            if isinstance(currents, (str, Mapping)) or not hasattr(currents, "__iter__"):
                raise ConfigError(f"{beam}.available_currents must be a list of currents in A,"
                                  f" got {validate.show(currents)}")
            for i, c in enumerate(currents):
                _checked(validate.positive, f"{beam}.available_currents[{i}]", c, units="A")
    sim = d.get("sim") or {}
    for key, lim in SIM_RANGES.items():
        if sim.get(key) is not None:
            _checked(validate.in_range, f"sim.{key}", sim[key], lim,
                     rule=f"a finite number in [{lim[0]}, {lim[1]}]")
    drift = sim.get("drift")
    if drift is not None and not isinstance(drift, Mapping):
        _checked(validate.boolean, "sim.drift", drift)
    elif isinstance(drift, Mapping):
        _checked(validate.known_keys, "sim.drift", drift, DRIFT_KEYS)
        vel = drift.get("velocity")
        if vel is not None and (isinstance(vel, (str, Mapping)) or not hasattr(vel, "__len__")
                                or len(vel) != 3 or not all(validate.is_real(v) and
                                                            math.isfinite(v) for v in vel)):
            raise ConfigError(f"sim.drift.velocity must be 3 finite numbers in m/s, got "
                              f"{validate.show(vel)}")
        if drift.get("settle_amplitude") is not None:
            _checked(validate.real, "sim.drift.settle_amplitude", drift["settle_amplitude"],
                     units="m")
        if drift.get("settle_tau") is not None:
            _checked(validate.positive, "sim.drift.settle_tau", drift["settle_tau"], units="s")


def _as_float(v: Any) -> float:
    try:
        return float(v)
    except OverflowError:
        return math.inf


def _resolution(name: str, value: Any) -> list[int]:
    return _checked(validate.int_pair, name, value, maximum=MAX_RESOLUTION, units="px",
                    rule=f"[width, height], integers in [1, {MAX_RESOLUTION}] px")


def _number(cfg: dict, dotted: str, *, positive: bool = False) -> float:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ConfigError(f"missing configuration key {dotted!r}")
        node = node[part]
    try:
        return (validate.positive if positive else validate.real)(dotted, node)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _range(cfg: dict, dotted: str) -> tuple[float, float]:
    node: Any = cfg
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise ConfigError(f"missing configuration key {dotted!r}")
        node = node[part]
    if not (isinstance(node, (list, tuple)) and len(node) == 2):
        raise ConfigError(f"{dotted} must be a [low, high] pair, got {validate.show(node)}")
    if not all(validate.is_real(v) for v in node) or \
            not all(math.isfinite(_as_float(v)) for v in node):
        raise ConfigError(f"{dotted} must hold two finite numbers [low, high], got "
                          f"{validate.show(node)}")
    lo, hi = (float(v) for v in node)
    if not lo < hi:
        raise ConfigError(f"{dotted}: low must be < high, got {validate.show(node)}")
    return lo, hi


class MicroscopeConfig:
    """Validated configuration. ``.data`` is the merged dict (OpenFIBSEM layout)."""

    def __init__(self, data: dict):
        self.data = data
        self._validate()

    def _validate(self) -> None:
        d = self.data
        for section in ("info", "stage", "electron", "ion"):
            if not isinstance(d.get(section), Mapping):
                raise ConfigError(f"configuration section {section} must be a mapping, got "
                                  f"{validate.show(d.get(section))}")
        _check_schema(d)
        stype = d["stage"].get("type", "shuttle")
        if stype not in STAGE_TYPES:
            raise ConfigError(
                f"stage.type = {stype!r} is not a stage type; expected one of "
                f"{', '.join(STAGE_TYPES)}"
            )
        _number(d, "stage.rotation_reference")
        _number(d, "stage.rotation_180")
        pre = _number(d, "stage.shuttle_pre_tilt")
        if not 0 <= pre < 90:
            raise ConfigError(f"stage.shuttle_pre_tilt must be in [0, 90) degrees, got {pre}")
        _number(d, "stage.eucentric_z")
        for ax in AXES:
            lo, hi = _range(d, f"stage.limits.{ax}")
            v = _number(d, f"stage.initial_position.{ax}")
            if not lo <= v <= hi:
                raise ConfigError(
                    f"stage.initial_position.{ax} = {v} is outside stage.limits.{ax} [{lo}, {hi}]"
                )
        for beam in BEAMS:
            tilt = _number(d, f"{beam}.column_tilt")
            if not 0 <= tilt < 90:
                raise ConfigError(f"{beam}.column_tilt must be in [0, 90) degrees, got {tilt}")
            _number(d, f"{beam}.eucentric_height", positive=True)
            for key, units in _POSITIVE_LIMITS.items():
                lo, hi = _range(d, f"{beam}.limits.{key}")
                if lo <= 0:
                    raise ConfigError(
                        f"{beam}.limits.{key} = {validate.show(d[beam]['limits'][key])} "
                        f"{units}: the low limit must be > 0 {units}")
            for key in ("voltage", "current", "hfw", "dwell_time"):
                v = _number(d, f"{beam}.{key}", positive=True)
                lo, hi = _range(d, f"{beam}.limits.{key}")
                if not lo <= v <= hi:
                    raise ConfigError(
                        f"{beam}.{key} = {v} is outside {beam}.limits.{key} [{lo}, {hi}]"
                    )
            for key in ("shift", "stigmation"):
                _range(d, f"{beam}.limits.{key}")
            _resolution(f"{beam}.resolution", d[beam].get("resolution"))
        if d["ion"]["column_tilt"] <= 0:
            raise ConfigError("ion.column_tilt must be > 0 degrees (the ion column is tilted)")

    def geometry(self) -> SystemGeometry:
        d = self.data
        return SystemGeometry(
            ion_column_tilt=math.radians(d["ion"]["column_tilt"]),
            electron_column_tilt=math.radians(d["electron"]["column_tilt"]),
            shuttle_pre_tilt=math.radians(d["stage"]["shuttle_pre_tilt"]),
            rotation_reference=math.radians(d["stage"]["rotation_reference"]),
            rotation_180=math.radians(d["stage"]["rotation_180"]),
            stage_type=d["stage"].get("type", "shuttle"),
        )

    def stage_limits(self) -> dict[str, tuple[float, float]]:
        return {ax: _range(self.data, f"stage.limits.{ax}") for ax in AXES}

    def beam_limits(self, beam: str) -> dict[str, tuple[float, float]]:
        return {k: _range(self.data, f"{beam}.limits.{k}") for k in self.data[beam]["limits"]}

    def __getitem__(self, key: str) -> Any:
        return self.data[key]


def load_config(config: str | Path | Mapping | MicroscopeConfig | None = None) -> MicroscopeConfig:
    """Load and validate a configuration (YAML path, dict, or ``None`` for the default)."""
    if isinstance(config, MicroscopeConfig):
        return config
    base = _read_yaml(default_config_path())
    if config is None:
        return MicroscopeConfig(base)
    if isinstance(config, (str, Path)):
        over = _read_yaml(Path(config))
    elif isinstance(config, Mapping):
        over = dict(config)
    else:
        raise ConfigError(f"config must be a YAML path or a mapping, got "
                          f"{type(config).__name__} {validate.show(config)}")
    return MicroscopeConfig(_merge(base, over))
