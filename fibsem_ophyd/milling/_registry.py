"""The pattern registry: OpenFIBSEM pattern names to classes, and ``make_pattern`` building a
pattern from a protocol's pattern dict."""

from __future__ import annotations

from dataclasses import fields

from .. import validate
from . import _composites, _single_patterns
from ._pattern import Pattern
from ._validate import _is_number

__all__ = ["PATTERNS", "make_pattern"]

#: OpenFIBSEM pattern name -> class, in the order the modules list them
PATTERNS: dict[str, type[Pattern]] = {
    cls.name: cls for cls in (getattr(module, n) for module in (_single_patterns, _composites)
                              for n in module.__all__)
}
#: OpenFIBSEM's own name for the polygon pattern
PATTERNS["PolygonPattern"] = _single_patterns.PolygonPattern


def make_pattern(spec: dict) -> Pattern:
    """Build a pattern from an OpenFIBSEM-style dict: ``{"name": "Trench", "width": ...,
    "point": {"x": .., "y": ..}}``. Names match as in OpenFIBSEM (exactly, else ignoring
    case). OpenFIBSEM-only parameters (e.g. ``time``, ``fillet``) are accepted at their no-op
    value. Unknown names and parameters, and bad values, raise ``ValueError``."""
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"a pattern needs a 'name'; got {spec!r}")
    spec = dict(spec)
    name = spec.pop("name")
    cls = PATTERNS.get(name) if isinstance(name, str) else None
    if cls is None and isinstance(name, str):
        cls = {k.lower(): v for k, v in PATTERNS.items()}.get(name.lower())
    if cls is None:
        raise ValueError(f"unknown pattern type {validate.show(name)}"
                         f"{validate.did_you_mean(name, PATTERNS)}; known: {sorted(PATTERNS)}")
    point = spec.pop("point", None)
    if point is not None:
        if not isinstance(point, dict):
            raise ValueError(f"{name}.point must be a mapping {{x, y}} in m, got {point!r}")
        spec.setdefault("centre_x", point.get("x", 0.0))
        spec.setdefault("centre_y", point.get("y", 0.0))
    for key, accepted in cls.openfibsem_defaults.items():
        if key in spec:
            value = spec.pop(key)
            if not any(value is a or (type(value) is type(a) and value == a)
                       or (_is_number(value) and _is_number(a) and value == a)
                       for a in accepted):
                raise ValueError(f"{name}.{key}={value!r} is not supported (only "
                                 f"{' or '.join(map(repr, accepted))}): {_UNSUPPORTED[key]}")
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = set(spec) - known
    if unknown:
        allowed = known | set(cls.openfibsem_defaults)
        hints = "".join(f" {k!r}{validate.did_you_mean(k, allowed)}" for k in sorted(unknown)
                        if validate.did_you_mean(k, allowed))
        raise ValueError(f"{name}: unknown parameter(s) {sorted(unknown)};{hints} known: "
                         f"{sorted(allowed)}")
    try:
        return cls(**spec)
    except TypeError as exc:
        raise ValueError(f"{name}: {exc}") from exc


_UNSUPPORTED = {
    "time": "the milling time follows from the dose (depth x area / (current x rate))",
    "fillet": "trench corners are square",
    "path": "give the bitmap as 'array' (rows of 0..1 values)",
    "interpolation": "bitmap pixels are sampled nearest",
    "is_exclusion": "exclusion polygons are not milled patterns",
}
