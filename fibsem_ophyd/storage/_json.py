"""JSON encoding that accepts numpy scalars/arrays, paths, enums, sets and datetimes."""

from __future__ import annotations

import datetime as _dt
import enum
import json
import os
from typing import Any

import numpy as np

__all__ = ["json_default", "dumps"]


def json_default(obj: Any) -> Any:
    """``default=`` hook for :func:`json.dumps`: numpy -> Python, paths -> str, ..."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if isinstance(obj, enum.Enum):
        return obj.value
    if isinstance(obj, (set, frozenset, tuple)):
        return list(obj)
    if isinstance(obj, (_dt.datetime, _dt.date)):
        return obj.isoformat()
    if isinstance(obj, bytes):
        return obj.decode("utf-8", errors="replace")
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def dumps(obj: Any) -> str:
    """Compact, numpy-safe :func:`json.dumps` (one line, no spaces after separators)."""
    return json.dumps(obj, default=json_default, separators=(",", ":"))
