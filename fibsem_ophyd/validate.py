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
    "is_real",
    "real",
    "in_range",
    "positive",
    "non_negative",
    "integer",
    "int_pair",
    "choice",
    "known_keys",
]


def _unit(units: str | None) -> str:
    return f" {units}" if units else ""


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
                         f", got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be {rule or 'finite'}, got {value!r}")
    return v


def in_range(name: str, value: Any, limits: tuple[float, float] | None, *,
             units: str | None = None, rule: str | None = None,
             limits_name: str = "its limits") -> float:
    """``value`` as a finite float within ``limits`` (low, high; inclusive; None: any).

    The range error reads ``"<name> = <value> <units> is outside its limits [low, high]
    <units>"``; ``limits_name`` replaces ``"its limits"``.
    """
    v = real(name, value, units=units, rule=rule)
    if limits is not None and not limits[0] <= v <= limits[1]:
        u = _unit(units)
        raise ValueError(f"{name} = {v:g}{u} is outside {limits_name} "
                         f"[{limits[0]:g}, {limits[1]:g}]{u}")
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
            integral_float: bool = False, rule: str | None = None) -> int:
    """``value`` as an int (numpy integers count, bools do not), ``>= minimum`` if given.

    ``integral_float`` also accepts a float with no fractional part (``2.0``), as YAML
    files write them.
    """
    ok = isinstance(value, (numbers.Integral, np.integer)) and \
        not isinstance(value, (bool, np.bool_))
    if not ok and integral_float and is_real(value):
        ok = math.isfinite(float(value)) and float(value).is_integer()
    if not ok or (minimum is not None and value < minimum):
        default = "an integer" + (f" >= {minimum}" if minimum is not None else "")
        raise ValueError(f"{name} must be {rule or default}, got {value!r}")
    return int(value)


def int_pair(name: str, value: Any, *, minimum: int | None = 1,
             units: str | None = None) -> list[int]:
    """``value`` as ``[int, int]`` (e.g. a resolution in px), each ``>= minimum``."""
    rule = f"a pair of integers{' >= ' + str(minimum) if minimum is not None else ''}" \
        f"{' in ' + units if units else ''}"
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__len__") \
            or len(value) != 2:
        raise ValueError(f"{name} must be {rule}, got {value!r}")
    return [integer(name, v, minimum=minimum, rule=rule) for v in value]


def choice(name: str, value: Any, choices: Collection, *, what: str = "") -> Any:
    """``value`` if it is one of ``choices``; else ``"<name>: unknown <value>; choose one of
    [...]"`` (``what`` is said before the value, e.g. ``"value"``)."""
    try:
        ok = value in choices
    except TypeError:  # an unhashable value against a set
        ok = False
    if not ok:
        what = f"{what} " if what else ""
        raise ValueError(f"{name}: unknown {what}{value!r}; choose one of {list(choices)}")
    return value


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
    named = []
    for k in sorted(unknown, key=str):
        close = difflib.get_close_matches(str(k), [str(a) for a in allowed], n=1)
        named.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    raise ValueError(f"unknown {what} {', '.join(named)} in {name}; "
                     f"expected a subset of {list(allowed)}")
