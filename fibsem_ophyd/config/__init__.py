"""Microscope configuration in OpenFIBSEM's layout (``stage``, ``electron``, ``ion``, ...).

:func:`load_config` accepts a YAML path, a YAML string's parsed dict or ``None`` (the
packaged default), deep-merges it over the default and validates it. Every error is a
:class:`ConfigError` naming the offending key, its value and what was expected.
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
from ..backend import BEAMS, STAGE_AXES
from ..geometry import STAGE_TYPES, SystemGeometry

__all__ = ["ConfigError", "MicroscopeConfig", "load_config", "default_config_path"]

AXES = STAGE_AXES


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
        raise ConfigError(f"{dotted} must be a [low, high] pair, got {node!r}")
    lo, hi = node
    if not all(validate.is_real(v) and math.isfinite(v) for v in (lo, hi)):
        raise ConfigError(f"{dotted} must hold two finite numbers, got {node!r}")
    if not lo < hi:
        raise ConfigError(f"{dotted}: low must be < high, got {node!r}")
    return float(lo), float(hi)


class MicroscopeConfig:
    """Validated configuration. ``.data`` is the merged dict (OpenFIBSEM layout)."""

    def __init__(self, data: dict):
        self.data = data
        self._validate()

    def _validate(self) -> None:
        d = self.data
        for section in ("stage", "electron", "ion"):
            if not isinstance(d.get(section), Mapping):
                raise ConfigError(f"configuration section {section!r} must be a mapping")
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
            for key in ("voltage", "current", "hfw", "dwell_time"):
                v = _number(d, f"{beam}.{key}", positive=True)
                lo, hi = _range(d, f"{beam}.limits.{key}")
                if not lo <= v <= hi:
                    raise ConfigError(
                        f"{beam}.{key} = {v} is outside {beam}.limits.{key} [{lo}, {hi}]"
                    )
            for key in ("working_distance", "shift", "stigmation"):
                _range(d, f"{beam}.limits.{key}")
            res = d[beam].get("resolution")
            try:
                validate.int_pair(f"{beam}.resolution", res,
                                  rule="[width, height] integers > 0")
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
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
        raise ConfigError(f"config must be a YAML path or a mapping, got {type(config).__name__}")
    return MicroscopeConfig(_merge(base, over))
