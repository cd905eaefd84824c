"""Checks of user input, written once: each error names the parameter, the value and the rule.

Pure (numpy only): the devices, the simulator, the configuration, the milling library, the
plans and the backends all call these, so a bad number is refused the same way everywhere,
before anything moves. Every check returns the value normalised (``float``, ``int``,
``[int, int]``...) and raises ``ValueError`` otherwise.

``rule`` (where accepted) replaces the default wording of what the value must be, so an
owner can say e.g. ``"a finite number in metres"``; the message stays
``"<name> must be <rule>, got <value>"``.
"""

from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Collection, Mapping
from typing import Any

import numpy as np

__all__ = [
    "show",
    "is_real",
    "real",
    "fraction",
    "boolean",
    "text",
    "mapping",
    "in_range",
    "positive",
    "non_negative",
    "integer",
    "count",
    "int_pair",
    "choice",
    "did_you_mean",
    "known_keys",
    "area",
    "setting",
    "SPEC_FIELDS",
    "position",
    "target",
]


def _unit(units: str | None) -> str:
    return f" {units}" if units else ""


#: longest ``repr`` a message quotes in full
_SHOWN = 60


def show(value: Any) -> str:
    """``repr(value)`` for a message, a huge one shortened (``10**400`` is
    ``1000000000...0000 (401 digits)``, a long string its first and last characters)."""
    if isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_)):
        digits = str(abs(int(value)))
        if len(digits) > _SHOWN:
            sign = "-" if value < 0 else ""
            return f"{sign}{digits[:10]}...{digits[-4:]} ({len(digits)} digits)"
        return repr(value)
    if isinstance(value, (list, tuple)) and len(value) <= 8:
        inner = ", ".join(show(v) for v in value)
        return f"[{inner}]" if isinstance(value, list) else \
            f"({inner}{',' if len(value) == 1 else ''})"
    text = repr(value)
    if len(text) > _SHOWN:
        return f"{text[:40]}...{text[-12:]} ({len(text)} characters)"
    return text


def is_real(value: Any) -> bool:
    """True for a real number that is not a bool (numpy scalars count; complex does not)."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def real(name: str, value: Any, *, units: str | None = None, rule: str | None = None) -> float:
    """``value`` as a finite float.

    Parameters
    ----------
    name : str
        The parameter, as the user knows it (``"stage.x"``, ``"dwell_time"``).
    value : Any
        What was given; bools, strings, complex numbers, NaN and infinities are refused.
    units : str, optional
        Said in the message (``"must be a number in V"``).
    rule : str, optional
        Replaces the rule's wording in the message.
    """
    if not is_real(value):
        raise ValueError(f"{name} must be {rule or 'a number' + (' in ' + units if units else '')}"
                         f", got {show(value)}")
    try:
        v = float(value)
    except OverflowError:  # an int beyond a float (10**400)
        v = math.inf
    if not math.isfinite(v):
        raise ValueError(f"{name} must be {rule or 'finite'}, got {show(value)}")
    return v


def fraction(name: str, value: Any, *, rule: str | None = None) -> float:
    """``value`` as a finite float in [0, 1] (a score, a fraction); ``rule`` as in
    :func:`real`. NaN is refused: compared with a threshold it is never below it, so a NaN
    threshold would accept every match."""
    rule = rule or "a number in [0, 1]"
    v = real(name, value, rule=rule)
    if not 0.0 <= v <= 1.0:
        raise ValueError(f"{name} must be {rule}, got {show(value)}")
    return v


def boolean(name: str, value: Any) -> bool:
    """``value`` if it is True or False (numpy bools count). Strings, numbers and None are
    refused: ``bool("false")`` is True."""
    if not isinstance(value, (bool, np.bool_)):
        raise ValueError(f"{name} must be True or False, got {show(value)}")
    return bool(value)


def text(name: str, value: Any, *, empty: bool = False) -> str:
    """``value`` if it is a string (non-empty unless ``empty``)."""
    if not isinstance(value, str) or (not empty and not value.strip()):
        kind = "a string" if empty else "a non-empty string"
        raise ValueError(f"{name} must be {kind}, got {show(value)}")
    return value


def mapping(name: str, value: Any, *, none: bool = False) -> dict:
    """``value`` as a dict if it is a mapping (``None`` -> ``{}`` if ``none``); a string, a
    list or a number is refused by name (``dict("cryo")`` would fail without one)."""
    if value is None and none:
        return {}
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be a mapping, got {show(value)}")
    return dict(value)


def in_range(name: str, value: Any, limits: tuple[float, float] | None, *,
             units: str | None = None, rule: str | None = None,
             limits_name: str = "its limits", exact: bool = False) -> float:
    """``value`` as a finite float within ``limits`` (low, high; inclusive; None: any).

    The range error reads ``"<name> = <value> <units> is outside its limits [low, high]
    <units>"``; ``limits_name`` replaces ``"its limits"``; ``exact`` writes the value in
    full (``repr``), and the limits, rather than to 6 significant digits.
    """
    v = real(name, value, units=units, rule=rule)
    if limits is not None and not limits[0] <= v <= limits[1]:
        u = _unit(units)
        if exact:
            shown, lo, hi = repr(v), repr(float(limits[0])), repr(float(limits[1]))
        else:
            shown, lo, hi = f"{v:g}", f"{limits[0]:g}", f"{limits[1]:g}"
        raise ValueError(f"{name} = {shown}{u} is outside {limits_name} [{lo}, {hi}]{u}")
    return v


def positive(name: str, value: Any, *, units: str | None = None,
             rule: str | None = None) -> float:
    """``value`` as a finite float > 0 (``"<name> must be > 0 <units>, got <value>"``)."""
    v = real(name, value, units=units, rule=rule)
    if v <= 0:
        raise ValueError(f"{name} must be > 0{_unit(units)}, got {value!r}")
    return v


def non_negative(name: str, value: Any, *, units: str | None = None,
                 rule: str | None = None) -> float:
    """``value`` as a finite float >= 0 (``"<name> must be >= 0 <units>, got <value>"``)."""
    v = real(name, value, units=units, rule=rule)
    if v < 0:
        raise ValueError(f"{name} must be >= 0{_unit(units)}, got {value!r}")
    return v


def integer(name: str, value: Any, *, minimum: int | None = None,
            maximum: int | None = None, integral_float: bool = False,
            rule: str | None = None) -> int:
    """``value`` as an int (numpy integers count, bools do not), within ``minimum`` and
    ``maximum`` if given.

    ``integral_float`` also accepts a float with no fractional part (``2.0``), as YAML
    files write them.
    """
    ok = isinstance(value, (numbers.Integral, np.integer)) and \
        not isinstance(value, (bool, np.bool_))
    if not ok and integral_float and is_real(value):
        ok = math.isfinite(float(value)) and float(value).is_integer()
    if not ok or (minimum is not None and value < minimum) \
            or (maximum is not None and value > maximum):
        if maximum is None:
            default = "an integer" + (f" >= {minimum}" if minimum is not None else "")
        else:
            default = f"an integer in [{minimum}, {maximum}]" if minimum is not None \
                else f"an integer <= {maximum}"
        raise ValueError(f"{name} must be {rule or default}, got {show(value)}")
    return int(value)


#: the largest count :func:`count` takes unless told (iterations, frames, tiles)
MAX_COUNT = 100_000


def count(name: str, value: Any, *, minimum: int = 1, maximum: int = MAX_COUNT) -> int:
    """``value`` as an int in [``minimum``, ``maximum``] (iterations, frames, steps); a
    float such as ``2.5``, a bool, a string or an absurd count is refused, not truncated."""
    return integer(name, value, minimum=minimum, maximum=maximum)


def int_pair(name: str, value: Any, *, minimum: int | None = 1, maximum: int | None = None,
             units: str | None = None, rule: str | None = None) -> list[int]:
    """``value`` as ``[int, int]`` (e.g. a resolution in px), each within ``minimum`` and
    ``maximum``. A string is refused, not read as its characters (``"12"`` is not
    ``[1, 2]``)."""
    if rule is None:
        bounds = f" in [{minimum}, {maximum}]" if minimum is not None and maximum is not None \
            else f" >= {minimum}" if minimum is not None else \
            f" <= {maximum}" if maximum is not None else ""
        rule = f"a pair of integers{bounds}{' in ' + units if units else ''}"
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__len__") \
            or len(value) != 2:
        raise ValueError(f"{name} must be {rule}, got {show(value)}")
    for v in value:
        try:
            integer(name, v, minimum=minimum, maximum=maximum)
        except ValueError:
            raise ValueError(f"{name} must be {rule}, got {show(value)}") from None
    return [int(v) for v in value]


def choice(name: str, value: Any, choices: Collection, *, what: str = "") -> Any:
    """``value`` if it is one of ``choices``; else ``"<name>: unknown <value>; choose one of
    [...]"`` (``what`` is said before the value, e.g. ``"value"``)."""
    try:
        ok = value in choices
    except TypeError:  # an unhashable value against a set
        ok = False
    if not ok:
        what = f"{what} " if what else ""
        raise ValueError(f"{name}: unknown {what}{show(value)}; choose one of {list(choices)}"
                         f"{did_you_mean(value, choices)}")
    return value


def did_you_mean(value: Any, allowed: Collection) -> str:
    """``" (did you mean 'x'?)"`` for the allowed name closest to ``value`` (difflib), or
    ``""`` if none is close or ``value`` is not a string."""
    if not isinstance(value, str):
        return ""
    close = difflib.get_close_matches(value, [str(a) for a in allowed], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def known_keys(name: str, keys: Any, allowed: Collection[str], *,
               what: str = "key") -> None:
    """Refuse any of ``keys`` (a mapping's keys or an iterable) not in ``allowed``.

    The message names every unknown key, what they are (``what``: ``"stage axis"``...), the
    allowed ones and, for a misspelling, the close match (``'dwel_time' (did you mean
    'dwell_time'?)``).
    """
    unknown = [k for k in keys if k not in allowed]
    if not unknown:
        return
    named = [f"{show(k)}{did_you_mean(str(k), allowed)}" for k in sorted(unknown, key=str)]
    raise ValueError(f"unknown {what} {', '.join(named)} in {name}; "
                     f"expected a subset of {list(allowed)}")


def area(name: str, value: Any) -> list[float] | None:
    """A reduced area ``[left, top, width, height]`` (fractions of the frame, 0..1; a
    sequence or a ``{left, top, width, height}`` mapping) inside the frame; None stays None
    (the full frame)."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        try:
            value = [value["left"], value["top"], value["width"], value["height"]]
        except KeyError as exc:
            raise ValueError(f"{name} needs left, top, width, height; missing {exc}") from None
    rule = "(left, top, width, height), four finite numbers in 0..1"
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") or len(value) != 4 \
            or not all(is_real(v) for v in value):
        raise ValueError(f"{name} must be {rule}, got {show(value)}")
    left, top, width, height = (_finite_element(name, v, value) for v in value)
    if width <= 0 or height <= 0 or left < 0 or top < 0 or left + width > 1 + 1e-9 \
            or top + height > 1 + 1e-9:
        raise ValueError(f"{name} = {value!r} must lie inside the frame (0..1, width/height > 0)")
    return [left, top, width, height]


def _finite_element(name: str, v: Any, value: Any) -> float:
    try:
        f = float(v)
    except OverflowError:
        f = math.inf
    if not math.isfinite(f):
        raise ValueError(f"{name} must be finite, got {show(value)}")
    return f


#: what a setting's specification holds (see :func:`setting`)
SPEC_FIELDS = ("vtype", "units", "limits", "length", "choices", "read_only")


def setting(name: str, value: Any, spec: Mapping) -> Any:
    """One microscope setting checked against its specification; returned normalised.

    Parameters
    ----------
    name : str
        The setting, as the messages name it.
    value : Any
        The value to write.
    spec : Mapping
        :data:`SPEC_FIELDS`: ``vtype`` (``"float"``, ``"int"``, ``"bool"``, ``"str"``,
        ``"pair"``, ``"intpair"`` or ``"area"``), ``units`` (str or None), ``limits``
        ((low, high) or None), ``length`` (of a pair), ``choices`` (allowed strings or None),
        ``read_only``. A device's settings publish theirs in a read-only ``limits`` signal, so
        a plan validates with ``bps.rd`` and this function, before anything moves.
    """
    vtype, units = spec.get("vtype", "float"), spec.get("units")
    limits, length, choices = spec.get("limits"), spec.get("length"), spec.get("choices")
    if spec.get("read_only"):
        raise ValueError(f"{name} is read-only")
    unit = _unit(units)
    if vtype == "bool":
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError(f"{name} must be True or False, got {value!r}")
        return bool(value)
    if vtype == "str":
        if not isinstance(value, str):
            raise ValueError(f"{name} must be a string, got {value!r}")
        return value if choices is None else choice(name, value, choices, what="value")
    if vtype in ("float", "int"):
        v = in_range(name, value, limits, units=units)
        if vtype == "int":
            if v != int(v):
                raise ValueError(f"{name} must be an integer, got {value!r}")
            return int(v)
        return v
    if vtype == "area":
        return area(name, value)
    if vtype in ("pair", "intpair"):
        what = "integers" if vtype == "intpair" else "numbers"
        n = length or 2
        if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__len__"):
            raise ValueError(f"{name} must be a pair of {what} in{unit}, got {show(value)}")
        if len(value) != n:
            raise ValueError(f"{name} must have {n} elements, got {show(value)}")
        if vtype == "intpair":
            if not all(isinstance(v, (numbers.Integral, np.integer))
                       and not isinstance(v, (bool, np.bool_)) for v in value):
                raise ValueError(f"{name} must hold integers, got {show(value)}")
        elif not all(is_real(v) for v in value):
            raise ValueError(f"{name} must be a pair of numbers in{unit}, got {show(value)}")
        arr = [_finite_element(name, v, value) for v in value]
        for v in arr:
            if limits is not None and not limits[0] <= v <= limits[1]:
                raise ValueError(f"{name} = {show(value)}{unit} is outside its limits "
                                 f"[{limits[0]:g}, {limits[1]:g}]{unit}")
        if vtype == "intpair":
            return [int(v) for v in value]
        return arr
    raise TypeError(f"unknown value type {vtype!r}")


def position(name: str, value: Any, limits: Mapping[str, tuple[float, float]],
             units: Mapping[str, str], *, what: str = "axis") -> dict[str, float]:
    """A position ``{axis: value}`` (a subset of ``limits``' axes; ``None``: this axis does
    not move, as OpenFIBSEM has it) as floats within each axis' limits.

    ``name`` prefixes the axes in messages (``"stage"``: ``"stage.x = 1 m is outside its
    limits [...]"``); ``what`` names an unknown key (``"stage axis"``).
    """
    if not isinstance(value, Mapping):
        raise ValueError(f"a {name} position must be a mapping of axis -> value, got {value!r}")
    known_keys(f"the {name} position", value, tuple(limits), what=what)
    return {ax: in_range(f"{name}.{ax}", v, limits[ax], units=units.get(ax))
            for ax, v in value.items() if v is not None}


def target(name: str, value: Any, names: Collection[str],
           limits: Mapping[str, tuple[float, float]], units: Mapping[str, str], *,
           also: tuple[str, ...] = (), what: str = "axis") -> str | dict[str, float]:
    """A move target: a saved position's name (one of ``names``, or of ``also`` such as
    ``"retracted"``), or a position (:func:`position`)."""
    if isinstance(value, str):
        if value not in also and value not in names:
            extra = f" (or {', '.join(repr(a) for a in also)})" if also else ""
            raise ValueError(f"unknown {name} position {value!r}; saved positions: "
                             f"{sorted(names)}{extra}")
        return value
    if not isinstance(value, Mapping):
        raise ValueError(f"a {name} target is a position name or a mapping of axis -> value, "
                         f"got {value!r}")
    return position(name, value, limits, units, what=what)
