"""The simulator's state as data: stage pose, drift, clock, beams, chamber, faults and scene.

One :class:`SimState` per simulated microscope. The models (:mod:`~fibsem_ophyd.sim.imaging`,
:mod:`~fibsem_ophyd.sim.deposition`, :mod:`~fibsem_ophyd.sim.manipulator`,
:mod:`~fibsem_ophyd.sim.cuts`, :mod:`~fibsem_ophyd.sim.erosion`,
:mod:`~fibsem_ophyd.sim.milling`) and the read-only :class:`~fibsem_ophyd.sim.truth.Truth`
take it; the microscope (the backend facade) validates requests and writes it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from .. import validate
from ..backend import BEAMS, STAGE_AXES
from ..geometry import ELECTRON, ION, stage_axes
from .clock import SimClock
from .motion import Motion
from .scene import Scene
from .view import BeamView, intersect_surface

__all__ = ["SimState", "Drift", "BEAMS", "HIGH_VACUUM", "ATMOSPHERE", "DETECTOR_TYPES",
           "DETECTOR_MODES", "is_number", "check_number", "sim_number"]

HIGH_VACUUM = 1e-4          # Pa
ATMOSPHERE = 1.0e5          # Pa

DETECTOR_TYPES = {ELECTRON: ["ETD", "TLD", "ICE"], ION: ["ETD", "ICE", "CDEM"]}
DETECTOR_MODES = {ELECTRON: ["SecondaryElectrons", "BackscatterElectrons"],
                  ION: ["SecondaryElectrons"]}


is_number = validate.is_real


def check_number(name: str, value: Any, limits: tuple[float, float] | None = None) -> float:
    """``value`` as a float; ``ValueError`` naming ``name``, the value and the limit if it is
    not a finite number within ``limits``."""
    return validate.in_range(name, value, limits, limits_name="the limit", exact=True)


def sim_number(sim: Mapping, key: str, default: float, lo: float = -math.inf,
               hi: float = math.inf) -> float:
    """The number ``sim[key]`` of the config's ``sim:`` section (``default`` if absent);
    ``ValueError`` naming the key, value and range if it is not a finite number in it."""
    v = sim.get(key, default)
    return validate.in_range(f"sim.{key}", default if v is None else v, (lo, hi),
                             rule=f"a finite number in [{lo}, {hi}]")


class Drift:
    """Sample drift in the chamber frame (m): constant velocity plus settling after stage moves."""

    def __init__(self, spec: Any):
        self.enabled = bool(spec)
        d = spec if isinstance(spec, Mapping) else {}
        self.velocity = np.array(d.get("velocity", [0.4e-9, -0.25e-9, 0.0]), dtype=float)
        self.amplitude = float(d.get("settle_amplitude", 50e-9))
        self.tau = float(d.get("settle_tau", 30.0))
        if self.velocity.shape != (3,) or not np.all(np.isfinite(self.velocity)):
            raise ValueError(
                f"sim.drift.velocity must be 3 finite numbers (m/s), got {self.velocity}")
        if not (math.isfinite(self.amplitude) and math.isfinite(self.tau) and self.tau > 0):
            raise ValueError("sim.drift.settle_amplitude must be finite and settle_tau > 0")
        self._base = np.zeros(3)
        self._dir = np.zeros(3)
        self._t_move = 0.0

    def _settle(self, t: float) -> np.ndarray:
        return self.amplitude * self._dir * (1.0 - math.exp(-max(t - self._t_move, 0.0) / self.tau))

    def offset(self, t: float) -> np.ndarray:
        """Drift (m, chamber frame) at clock time ``t`` (s)."""
        if not self.enabled:
            return np.zeros(3)
        return self.velocity * t + self._base + self._settle(t)

    def moved(self, t: float, direction: np.ndarray) -> None:
        """A stage move ended at ``t``: freeze the old creep, start a new one along the move."""
        if not self.enabled:
            return
        self._base = self._base + self._settle(t)
        n = float(np.linalg.norm(direction))
        self._dir = direction / n if n > 0 else np.zeros(3)
        self._t_move = t


class SimState:
    """Everything a simulated microscope is at one moment.

    Parameters
    ----------
    config : fibsem_ophyd.config.Config
        The loaded configuration (stage, beams, ``sim:`` section).
    seed : int
        Seed of the scene.

    Attributes
    ----------
    stage : dict
        True stage position: x, y, z (m); r, t (deg).
    beams : dict
        Per beam, its settings (units as in :mod:`fibsem_ophyd.backend`).
    limits, stage_limits : dict
        Limits of the beam settings and stage axes, from the configuration.
    offset : float
        True height (m) of the sample surface above its nominal position.
    eucentric_z : float
        Stage z (m) of the eucentric height.
    collection, excess_noise : float
        Detector collection efficiency and PMT excess-noise factor.
    drift : Drift
    clock : SimClock
    scene : Scene
    vacuum : str
        "pumped" or "vented"; ``pressure`` in Pa.
    pending, tripped : set of str
        Faults as data: pending one-shot faults, and the beams a beam trip turned off;
        ``vacuum_lost`` whether the vent was a fault.
    """

    def __init__(self, config, seed: int = 0):
        self.config = config
        self.geometry = config.geometry()
        self.seed = int(seed)
        sim = config.data.get("sim") or {}
        if not isinstance(sim, Mapping):
            raise ValueError(f"sim section must be a mapping, got {sim!r}")
        #: the config's ``sim:`` section
        self.options: Mapping = sim
        self.offset = sim_number(sim, "sample_height_offset", 0.0)
        self.collection = sim_number(sim, "collection_efficiency", 0.3, lo=1e-6, hi=1.0)
        self.excess_noise = sim_number(sim, "excess_noise", 1.3, lo=1.0, hi=10.0)
        rtf = sim_number(sim, "real_time_factor", 0.0, lo=0.0, hi=1e6)
        self.drift = Drift(sim.get("drift", False))
        self.clock = SimClock(rtf)
        #: stop flags and stepped moves of the stage, needle and milling (``stop()``)
        self.motion = Motion(self.clock)
        self.scene = Scene(seed)
        d = config.data
        self.eucentric_z = float(d["stage"]["eucentric_z"])
        self.stage = {ax: float(d["stage"]["initial_position"][ax]) for ax in STAGE_AXES}
        self.stage_limits = config.stage_limits()
        self.beams: dict[str, dict[str, Any]] = {}
        self.limits: dict[str, dict[str, tuple[float, float]]] = {}
        for beam in BEAMS:
            c = d[beam]
            self.limits[beam] = config.beam_limits(beam)
            self.beams[beam] = {
                "on": True,
                "blanked": False,
                "voltage": float(c["voltage"]),
                "current": float(c["current"]),
                "hfw": float(c["hfw"]),
                "working_distance": float(c["eucentric_height"]),
                "dwell_time": float(c["dwell_time"]),
                "resolution": [int(c["resolution"][0]), int(c["resolution"][1])],
                "scan_rotation": 0.0,
                "shift": [0.0, 0.0],
                "stigmation": [0.0, 0.0],
                "detector_type": str(c.get("detector_type", "ETD")),
                "detector_mode": str(c.get("detector_mode", "SecondaryElectrons")),
                "brightness": 0.5,
                "contrast": 0.5,
            }
            if self.beams[beam]["detector_type"] not in DETECTOR_TYPES[beam]:
                self.beams[beam]["detector_type"] = DETECTOR_TYPES[beam][0]
            if self.beams[beam]["detector_mode"] not in DETECTOR_MODES[beam]:
                self.beams[beam]["detector_mode"] = DETECTOR_MODES[beam][0]
        self.vacuum = "pumped"
        self.pressure = HIGH_VACUUM
        self.pending: set[str] = set()
        self.tripped: set[str] = set()
        self.vacuum_lost = False
        self._last_ray: tuple | None = None

    # ------------------------------------------------------------------ geometry
    def view(self, beam: str, frame: Mapping | None = None, t: float | None = None) -> BeamView:
        """The :class:`BeamView` of ``beam`` with the frame's ``resolution`` and ``hfw`` (default
        the beam's), at clock time ``t`` (s; default now) for the drift."""
        st = self.beams[beam]
        w, h = (frame or {}).get("resolution") or st["resolution"]
        hfw = (frame or {}).get("hfw") or st["hfw"]
        drift = self.drift.offset(self.clock.now() if t is None else t)
        return BeamView.build(beam, self.stage, self.eucentric_z, self.geometry, w, h, hfw,
                              st["scan_rotation"], tuple(st["shift"]), self.offset, tuple(drift))

    def surface_point(self, view: BeamView, a1: float, a2: float) -> np.ndarray | None:
        """First surface point (sample frame, m) on the ray of ``view`` at chamber (right, up)
        = (a1, a2) m; ``None`` if the beam cannot reach the sample side.

        The last ray is remembered with everything it depends on (the view's pose and scan,
        the ray, the scene's version): an ion frame asks for its centre twice, for the focus
        and for the field it sputters, and the second answer is the first (a ray cast is 387
        height evaluations). Any other ray, pose or scene casts anew.
        """
        key = (view.beam, view.pixel, view.scan_rotation, view.shift, view.offset,
               view.rotation.tobytes(), view.translation.tobytes(), view.right.tobytes(),
               view.up.tobytes(), view.source.tobytes(), float(a1), float(a2),
               self.scene.version, id(self.scene))
        last = self._last_ray
        if last is not None and last[0] == key:
            return None if last[1] is None else last[1].copy()
        point = intersect_surface(self.scene, view, a1, a2, spacing=view.pixel)
        self._last_ray = (key, None if point is None else point.copy())
        return point

    def focus_working_distance(self, view: BeamView) -> float:
        """In-focus working distance (m) for the surface at the image centre of ``view``."""
        a1, a2 = view.image_to_qperp(0.0, 0.0)
        s = self.surface_point(view, float(a1), float(a2))
        if s is None:
            s = np.zeros(3)
        q = view.sample_to_chamber(s)
        wd0 = float(self.config.data[view.beam]["eucentric_height"])
        if view.beam == ELECTRON:
            return wd0 - float(q[2])
        return wd0 - float(q @ view.source)

    def drift_in_stage(self) -> np.ndarray:
        """Current drift (m) expressed in the (tilted) stage axes."""
        t = math.radians(self.stage["t"])
        return np.linalg.solve(stage_axes(t, self.geometry), self.drift.offset(self.clock.now()))

    def stage_moved(self, start: Mapping[str, float]) -> None:
        """The stage went from ``start`` to :attr:`stage`: restart the drift's settling."""
        d = np.array([self.stage[a] - start[a] for a in ("x", "y", "z")])
        if np.any(d):
            self.drift.moved(self.clock.now(),
                             stage_axes(math.radians(self.stage["t"]), self.geometry) @ d)
