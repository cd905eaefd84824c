"""Stoppable simulated motion: a move advances the clock in steps and can be stopped between
them, ending where it is (as a real stage or needle does when told to stop).

With ``real_time_factor = 0`` (the default) a move is one step: it takes no wall time, so there
is nothing to stop part way. With a real-time factor a move takes
``duration * real_time_factor`` wall seconds, in steps of about :data:`STEP_WALL_TIME`, and
:meth:`Motion.stop` ends it at the position reached (the clock holds the time spent).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable, Mapping

from ..backend import STOPPABLE, BackendError, StoppedError

__all__ = ["Motion", "STEP_WALL_TIME"]

#: wall-clock seconds per step of a move in real time: how soon a stop takes effect
STEP_WALL_TIME = 0.02


class Motion:
    """Stop flags of the stage, the manipulator and the milling, and the stepped move."""

    def __init__(self, clock):
        self._clock = clock
        self._flags = {name: threading.Event() for name in STOPPABLE}

    def stop(self, subsystem: str) -> None:
        """Ask ``subsystem`` (one of :data:`~fibsem_ophyd.backend.STOPPABLE`) to stop."""
        if subsystem not in self._flags:
            raise ValueError(f"cannot stop {subsystem!r}; stoppable: {list(STOPPABLE)}")
        self._flags[subsystem].set()

    def begin(self, subsystem: str) -> None:
        """A new operation starts: an earlier stop request does not apply to it."""
        self._flags[subsystem].clear()

    def check(self, subsystem: str, what: str) -> None:
        """Raise :class:`~fibsem_ophyd.backend.StoppedError` if ``subsystem`` was stopped."""
        if self._flags[subsystem].is_set():
            self._flags[subsystem].clear()
            raise StoppedError(f"{what} stopped")

    def travel(self, subsystem: str, start: Mapping[str, float], target: Mapping[str, float],
               duration: float, apply: Callable[[dict], None]) -> None:
        """Go from ``start`` to ``target`` (same axes) in ``duration`` simulated seconds,
        calling ``apply(position)`` at every step; a stop ends it where it is, with
        :class:`~fibsem_ophyd.backend.StoppedError` naming that position."""
        if not math.isfinite(duration) or duration < 0:
            raise BackendError(f"invalid move duration {duration!r} s")
        rtf = self._clock.real_time_factor
        steps = 1 if rtf == 0 else max(1, math.ceil(duration * rtf / STEP_WALL_TIME))
        for i in range(1, steps + 1):
            self._clock.advance(duration / steps)
            # checked after the step's time: once stop() returns, the position stays put
            if self._flags[subsystem].is_set():
                self._flags[subsystem].clear()
                pos = {ax: round(float(v), 12) for ax, v in _between(start, target,
                                                                      (i - 1) / steps).items()}
                raise StoppedError(f"{subsystem} move stopped at {pos}")
            apply(_between(start, target, i / steps))


def _between(start: Mapping[str, float], target: Mapping[str, float], f: float) -> dict:
    return {ax: start[ax] + (target[ax] - start[ax]) * f for ax in target}
