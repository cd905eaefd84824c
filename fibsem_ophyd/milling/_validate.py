"""Checks of milling parameters: each names the owner, the parameter, the value and the limit."""

from __future__ import annotations

import math

import numpy as np

from .. import validate

__all__ = ["CROSS_SECTIONS", "SCAN_DIRECTIONS"]

CROSS_SECTIONS = ("Rectangle", "RegularCrossSection", "CleaningCrossSection")
SCAN_DIRECTIONS = ("TopToBottom", "BottomToTop", "LeftToRight", "RightToLeft")


def _is_number(value) -> bool:
    return validate.is_real(value) and math.isfinite(value)


_IN_METRES = "a finite number in metres"


def _positive(name: str, value: float, owner: str) -> float:
    return validate.positive(f"{owner}.{name}", value, units="m", rule=_IN_METRES)


def _non_negative(name: str, value: float, owner: str) -> float:
    return validate.non_negative(f"{owner}.{name}", value, units="m", rule=_IN_METRES)


def _finite(name: str, value: float, owner: str) -> float:
    return validate.real(f"{owner}.{name}", value, rule="a finite number")


def _passes(value, owner: str) -> int:
    return validate.integer(f"{owner}.passes", value, minimum=0, integral_float=True,
                            rule="an integer >= 0 (0: the application file's default)")


def _choice(name: str, value, options: tuple[str, ...], owner: str) -> str:
    return validate.choice(f"{owner}.{name}", value, options)


def _points(value, owner: str) -> np.ndarray:
    """``value`` as an (n >= 3, 2) array of finite points, else ValueError naming it."""
    try:
        v = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        v = np.empty((0,))
    if v.ndim != 2 or v.shape[1] != 2 or len(v) < 3 or not np.all(np.isfinite(v)):
        raise ValueError(f"{owner} must be >= 3 finite [x, y] pairs (m), got {value!r}")
    return v
