"""Checks of milling parameters: each names the owner, the parameter, the value and the limit."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["CROSS_SECTIONS", "SCAN_DIRECTIONS"]

CROSS_SECTIONS = ("Rectangle", "RegularCrossSection", "CleaningCrossSection")
SCAN_DIRECTIONS = ("TopToBottom", "BottomToTop", "LeftToRight", "RightToLeft")


def _is_number(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) \
        and math.isfinite(value)


def _positive(name: str, value: float, owner: str) -> float:
    if not _is_number(value):
        raise ValueError(f"{owner}.{name} must be a finite number in metres, got {value!r}")
    if value <= 0:
        raise ValueError(f"{owner}.{name} must be > 0 m, got {value!r}")
    return float(value)


def _non_negative(name: str, value: float, owner: str) -> float:
    if not _is_number(value):
        raise ValueError(f"{owner}.{name} must be a finite number in metres, got {value!r}")
    if value < 0:
        raise ValueError(f"{owner}.{name} must be >= 0 m, got {value!r}")
    return float(value)


def _finite(name: str, value: float, owner: str) -> float:
    if not _is_number(value):
        raise ValueError(f"{owner}.{name} must be a finite number, got {value!r}")
    return float(value)


def _passes(value, owner: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)) \
            or not float(value).is_integer() or value < 0:
        raise ValueError(f"{owner}.passes must be an integer >= 0 (0: the application "
                         f"file's default), got {value!r}")
    return int(value)


def _choice(name: str, value, options: tuple[str, ...], owner: str) -> str:
    if value not in options:
        raise ValueError(f"{owner}.{name}: unknown {value!r}; choose one of {list(options)}")
    return value


def _points(value, owner: str) -> np.ndarray:
    """``value`` as an (n >= 3, 2) array of finite points, else ValueError naming it."""
    try:
        v = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        v = np.empty((0,))
    if v.ndim != 2 or v.shape[1] != 2 or len(v) < 3 or not np.all(np.isfinite(v)):
        raise ValueError(f"{owner} must be >= 3 finite [x, y] pairs (m), got {value!r}")
    return v
