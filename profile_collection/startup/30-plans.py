"""The public fibsem-ophyd plans (every name in ``fibsem_ophyd.plans.__all__``).

New public plans appear here (and, after regenerating ``existing_plans_and_devices.yaml``, in
the queue server) without editing this file.

The queue server describes a plan from ``inspect.signature``: annotations left as strings
(``from __future__ import annotations`` in the plan's module) would be published as quoted
strings (``"'Readable'"``), without type validation and without mapping ``Readable`` to the
list of devices. Each plan is therefore exposed here as a copy whose annotations are
evaluated (``typing.get_type_hints``); the package's own functions are left untouched, and a
plan with real annotations is used as is.
"""

import functools as _functools
import inspect as _inspect
import types as _types
import typing as _typing

import fibsem_ophyd.plans as _fibsem_plans
from fibsem_ophyd.storage import load_images, search_runs  # noqa: F401


def _with_evaluated_annotations(func):
    if not _inspect.isgeneratorfunction(func):
        return func  # e.g. an exception class exported with the plans
    if not any(isinstance(a, str) for a in getattr(func, "__annotations__", {}).values()):
        return func
    copy = _types.FunctionType(func.__code__, func.__globals__, func.__name__,
                               func.__defaults__, func.__closure__)
    copy.__kwdefaults__ = func.__kwdefaults__
    copy.__dict__.update(func.__dict__)
    copy.__doc__ = func.__doc__
    copy.__module__ = func.__module__
    copy.__qualname__ = func.__qualname__
    copy.__annotations__ = _typing.get_type_hints(func)
    return copy


def _plain(value):
    """A plan result as plain data (dicts, lists, numbers, strings, numpy arrays); any other
    object becomes the name of its type."""
    import numpy as _np

    if value is None or isinstance(value, (bool, int, float, str, _np.ndarray)):
        return value
    if isinstance(value, _np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    return f"<{type(value).__module__}.{type(value).__qualname__}>"


def _with_plain_result(func):
    """In the queue server's worker: the plan's return value as plain data. The worker hands
    it to the manager, a process that unpickles it and need not (and, within the 0.5 s the
    manager waits for the report, cannot always) import this package: a `detect` returning
    its `DetectedFeatures` failed the first time as "Internal RE Manager error" while the
    manager imported the package's detection modules. The runs are what the queue server
    keeps; the plan results stay whole in IPython."""
    if not _inspect.isgeneratorfunction(func):
        return func

    @_functools.wraps(func)
    def plan(*args, **kwargs):
        return _plain((yield from func(*args, **kwargs)))

    return plan


for _name in _fibsem_plans.__all__:
    globals()[_name] = _with_evaluated_annotations(getattr(_fibsem_plans, _name))
    if RE_WORKER:  # noqa: F821 -- from 00-base.py
        globals()[_name] = _with_plain_result(globals()[_name])
del _name
