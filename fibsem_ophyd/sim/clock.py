"""Simulated clock: instant by default, accumulating the time the hardware would take.

Timings (``shared/reference/physics.md`` and OpenFIBSEM ``timing.py``): a frame takes
``dwell * pixels * integrations + 0.2 s``; a stage move ``1 s`` settling plus ``distance / 1 mm/s``
plus rotation/tilt at 10 deg/s; a beam-current change ~20 s (20.5 s measured).
``real_time_factor > 0`` sleeps that fraction of every simulated interval.
"""

from __future__ import annotations

import math
import time as _time

__all__ = ["SimClock", "FRAME_OVERHEAD", "STAGE_SETTLE", "STAGE_SPEED", "STAGE_ANGULAR_SPEED",
           "CURRENT_CHANGE", "VOLTAGE_CHANGE", "PUMP_TIME", "VENT_TIME"]

FRAME_OVERHEAD = 0.2         # s per frame (flyback, readout)
STAGE_SETTLE = 1.0           # s per move
STAGE_SPEED = 1e-3           # m/s
STAGE_ANGULAR_SPEED = 10.0   # deg/s
CURRENT_CHANGE = 20.0        # s (aperture change + settling)
VOLTAGE_CHANGE = 20.0        # s (assumed equal to a current change)
PUMP_TIME = 180.0            # s to high vacuum
VENT_TIME = 120.0            # s


class SimClock:
    """Monotonic simulated time in seconds.

    Parameters
    ----------
    real_time_factor : float
        Wall-clock seconds slept per simulated second (0 = instant).
    start : float
        Initial time (s).
    """

    def __init__(self, real_time_factor: float = 0.0, start: float = 0.0):
        if not (math.isfinite(real_time_factor) and real_time_factor >= 0):
            raise ValueError(f"real_time_factor must be >= 0, got {real_time_factor!r}")
        self.real_time_factor = float(real_time_factor)
        self._t = float(start)

    def now(self) -> float:
        """Current simulated time (s)."""
        return self._t

    def advance(self, seconds: float) -> float:
        """Add ``seconds`` of hardware time (sleeping if real time is on); returns the new time."""
        if not (math.isfinite(seconds) and seconds >= 0):
            raise ValueError(f"cannot advance the clock by {seconds!r} s")
        self._t += seconds
        if self.real_time_factor > 0 and seconds > 0:
            _time.sleep(seconds * self.real_time_factor)
        return self._t

    @staticmethod
    def frame_time(dwell: float, pixels: int, integrations: int = 1) -> float:
        """Acquisition time of one frame (s)."""
        return dwell * pixels * integrations + FRAME_OVERHEAD

    @staticmethod
    def stage_move_time(start: dict, end: dict) -> float:
        """Duration (s) of a stage move between two positions (x, y, z m; r, t deg)."""
        dist = math.sqrt(sum((end[a] - start[a]) ** 2 for a in ("x", "y", "z")))
        dr = abs(end["r"] - start["r"])
        dt = abs(end["t"] - start["t"])
        moved = dist > 0 or dr > 0 or dt > 0
        if not moved:
            return 0.0
        return STAGE_SETTLE + dist / STAGE_SPEED + max(dr, dt) / STAGE_ANGULAR_SPEED
