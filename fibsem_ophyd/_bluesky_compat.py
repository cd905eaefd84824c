"""A measured fix for a bluesky hot spot, applied by :func:`fibsem_ophyd.setup_session`.

bluesky 1.15 wraps every plan stub call (``bps.trigger``, ``bps.read``...) in
``bluesky.utils.Plan``, whose ``__init__`` runs ``traceback.format_stack()`` so that it can
warn "plan was never iterated, did you mean to use ``yield from``?". Formatting looks up the
source line of every frame (``linecache.checkcache`` stats each file), and at the RunEngine's
stack depth that cost ~7 ms per event in ``RE(count([sem]))`` on a 2-core machine: a third of a
1536x1024 frame's render time. :class:`LazyStackPlan` records each frame's file, line and
function only (~20 us at the RunEngine's depth) and formats the stack, source lines
included, only when the warning is actually issued, so the warning and its text are
unchanged.
"""

from __future__ import annotations

import sys
import traceback
import warnings

import bluesky.utils as _bu

__all__ = ["LazyStackPlan", "install", "installed", "uninstall"]

_ORIGINAL = _bu.Plan


class LazyStackPlan(_ORIGINAL):
    """``bluesky.utils.Plan`` whose creation stack is formatted only if it must be shown."""

    __slots__ = ()

    def __init__(self, f, *args, **kwargs) -> None:
        self._iter = f(*args, **kwargs)
        # skip this frame and bluesky's `plan` wrapper, as bluesky's [:-2] does. Only
        # (file, line, function) per frame: ~5x cheaper than StackSummary.extract, which
        # also registers every frame's module with linecache and stats its files.
        stack = []
        frame = sys._getframe(2)
        while frame is not None:
            code = frame.f_code
            stack.append((code.co_filename, frame.f_lineno, code.co_name, None))
            frame = frame.f_back
        self._stack = (stack, f.__name__)

    def __del__(self) -> None:
        if self._stack:
            summary, name = self._stack
            frames = traceback.StackSummary.from_list(list(reversed(summary)))
            message = "\n" + "".join(frames.format()) + (
                f"RuntimeWarning: plan `{name}` was never iterated, did you mean to use "
                "`yield from`?"
            )
            warnings.warn(message, RuntimeWarning, stacklevel=1)


def install() -> bool:
    """Make bluesky's ``@plan`` decorator build :class:`LazyStackPlan` objects.

    Returns False (and changes nothing) if bluesky's ``Plan`` is not the shape this fix was
    written for.
    """
    if _bu.Plan is LazyStackPlan:
        return True
    if getattr(_ORIGINAL, "__slots__", None) != ("_iter", "_stack"):
        return False
    _bu.Plan = LazyStackPlan
    return True


def installed() -> bool:
    """Whether bluesky's ``@plan`` builds :class:`LazyStackPlan` objects now."""
    return _bu.Plan is LazyStackPlan


def uninstall() -> None:
    """Give bluesky its own ``Plan`` back (what :func:`install` changed; nothing if it did
    not)."""
    if _bu.Plan is LazyStackPlan:
        _bu.Plan = _ORIGINAL
