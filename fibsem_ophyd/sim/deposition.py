"""Simulated gas injection (cryo deposition) and sputter coating.

Both add a deposited layer to the scene (a :class:`~fibsem_ophyd.sim.scene.HeightPatch` with
``layer``), so the surface rises by the layer's thickness, shows the layer's material in both
beams, and milling goes through the layer first at the layer's own sputter rate
(:mod:`fibsem_ophyd.sim.milling`).

Cryo deposition (shared physics notes, section 4): with the GIS needle inserted and the valve
open for ``t`` seconds, the precursor condenses without a beam. The needle is a point source
at a chamber-frame position per insert position; the layer at a surface point ``p`` is

    thickness = rate * t * (d_ref / d)**2 * cos(phi)

with ``d`` the distance from the nozzle to ``p``, ``phi`` the angle between the sample's
surface normal and the direction to the nozzle (no growth on faces turned away), and
``rate`` the growth rate facing the nozzle at ``d_ref``, the distance of the ``"cryo"``
position from the coincidence point (default 40 nm/s: physics notes give 30-60 nm/s;
calibrate). The layer follows the sample's mean plane (local slopes are not shadowed), over
the whole grid. The inserted needle shows in the images as a metal tube (radius
:data:`NOZZLE_RADIUS`) pointing at the coincidence point, drawn like the manipulator
(:func:`~fibsem_ophyd.sim.manipulator.draw_cone`).

Sputter coating (integrated coater, e.g. an Aquilos): a conformal Pt layer of
``rate * current * t`` (default 3e-8 m/(A s): 3 nm for 10 s at 10 mA) over the grid, after
a gas cycle of :data:`SPUTTER_OVERHEAD` seconds.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ..backend import SPUTTER_CURRENT_LIMITS, BackendError, check_deposition_time
from .manipulator import draw_cone
from .materials import MATERIAL_IDS
from .scene import HeightPatch
from .state import SimState, check_number, sim_number

__all__ = [
    "GisModel", "GIS_GASES", "GIS_POSITIONS", "GIS_RATE", "SPUTTER_RATE",
    "SPUTTER_OVERHEAD", "GIS_INSERT_TIME", "NOZZLE_RADIUS",
    "deposition_patch",
]

#: gas -> material of the layer it leaves
GIS_GASES = {"Pt cryo": "PtC"}
#: insert position -> nozzle, chamber frame relative to the coincidence point (m)
GIS_POSITIONS = {
    "cryo": (-2.0e-3, 0.0, 2.0e-3),
    "electron_default": (-0.3e-3, 0.0, 0.3e-3),
}
#: growth rate (m/s) facing the nozzle at the "cryo" position's distance
GIS_RATE = 40e-9
#: sputtered thickness per current and time, m / (A s)
SPUTTER_RATE = 3e-8
#: gas cycle of a sputter run (argon in, plasma stabilising, pump back), s
SPUTTER_OVERHEAD = 60.0
#: needle insertion or retraction, s
GIS_INSERT_TIME = 5.0
#: the inserted GIS needle as drawn in the images: a tube of this radius (m), pointing at
#: the coincidence point from its insert position, of this visible length (m)
NOZZLE_RADIUS = 0.25e-3
NOZZLE_LENGTH = 5e-3
#: node spacing of the layer rasters (m): the layers vary over millimetres
_SPACING = 20e-6


def deposition_patch(state: SimState, thickness_fn, material: str) -> HeightPatch:
    """A layer of ``material`` over the whole grid; ``thickness_fn(x, y, chamber_xyz,
    normal)`` gives its thickness (m) at sample points (arrays), where ``chamber_xyz`` are
    the points of the sample's mean plane in the chamber frame and ``normal`` its normal."""
    r = state.scene.params.grid_radius + 2 * _SPACING
    n = int(math.ceil(2 * r / _SPACING)) + 1
    xs = -r + np.arange(n) * _SPACING
    gx, gy = np.meshgrid(xs, xs)
    view = state.view("electron")
    plane = np.stack([gx, gy, np.full_like(gx, view.offset)], axis=-1)
    q = view.sample_to_chamber(plane)
    normal = view.rotation @ np.array([0.0, 0.0, 1.0])
    th = np.clip(np.asarray(thickness_fn(gx, gy, q, normal), dtype=float), 0.0, None)
    mid = MATERIAL_IDS[material]
    mat = np.where(th > 0, mid, 255).astype(np.uint8)
    return HeightPatch(x0=float(xs[0]), y0=float(xs[0]), spacing=_SPACING,
                       dh=th.astype(np.float32), material=mat, layer=mid)


class GisModel:
    """State of the gas injection system and sputter coater of a simulated microscope.

    ``sim`` section keys (optional): ``gis_rate`` (m/s), ``sputter_rate`` (m/(A s)).
    """

    def __init__(self, state: SimState):
        self._state = state
        options = state.options
        self.rate = sim_number(options, "gis_rate", GIS_RATE, lo=0.0, hi=1e-5)
        self.sputter_rate = sim_number(options, "sputter_rate", SPUTTER_RATE, lo=0.0, hi=1e-4)
        gis = state.config.data.get("gis") or {}
        self.enabled = bool(gis.get("enabled", True))
        self.coater = bool(gis.get("sputter_coater", False))
        self.state = {"gis_position": "retracted", "gis_gas": next(iter(GIS_GASES)),
                      "sputter_current": 10e-3}
        #: ``(kind, seconds)`` per deposition ("gis" or "sputter"), in order
        self.history: list[tuple[str, float]] = []

    @property
    def reference_distance(self) -> float:
        return float(np.linalg.norm(GIS_POSITIONS["cryo"]))

    def available_values(self, key: str) -> list:
        if key == "gis_position":
            return ["retracted", *GIS_POSITIONS]
        if key == "gis_gas":
            return list(GIS_GASES)
        raise ValueError(f"no enumerated chamber key {key!r}")

    def get(self, key: str) -> Any:
        return self.state[key]

    def set(self, key: str, value: Any) -> None:
        if key in ("gis_position", "gis_gas"):
            allowed = self.available_values(key)
            if value not in allowed:
                raise ValueError(f"{key} = {value!r} is not one of {allowed}")
            if key == "gis_position":
                self._require("gis")
                if value != self.state[key]:
                    self._state.clock.advance(GIS_INSERT_TIME)
        else:
            self._require("sputter coater")
            lo, hi = SPUTTER_CURRENT_LIMITS
            value = check_number("sputter_current", value, (lo, hi))
        self.state[key] = value

    def _require(self, what: str) -> None:
        if what == "gis" and not self.enabled:
            raise BackendError("this microscope has no gas injection system (gis.enabled)")
        if what != "gis" and not self.coater:
            raise BackendError("this microscope has no sputter coater (gis.sputter_coater)")

    def _pumped(self, what: str) -> None:
        if self._state.vacuum != "pumped":
            raise BackendError(f"cannot {what}: the chamber is {self._state.vacuum}")

    def composite(self, img: np.ndarray, view, shading, optics) -> np.ndarray:
        """``img`` with the inserted GIS needle drawn over it (visible at low magnification:
        the "electron_default" nozzle is 0.42 mm from the coincidence point)."""
        if self.state["gis_position"] == "retracted":
            return img
        tip = self.nozzle()
        return draw_cone(img, view, shading, optics, tip, tip / np.linalg.norm(tip), 0.0,
                         NOZZLE_RADIUS, NOZZLE_LENGTH, MATERIAL_IDS["Cu"])

    # ------------------------------------------------------------------ deposition
    def nozzle(self) -> np.ndarray:
        """The nozzle in the chamber frame (m); ``BackendError`` if retracted."""
        pos = self.state["gis_position"]
        if pos == "retracted":
            raise BackendError("cannot open the GIS valve: the needle is retracted; insert it "
                               f"at one of {list(GIS_POSITIONS)}")
        return np.asarray(GIS_POSITIONS[pos], dtype=float)

    def cryo_thickness(self, chamber_xyz: np.ndarray, normal: np.ndarray, seconds: float):
        """Layer (m) the open valve leaves in ``seconds`` at chamber points on a surface
        of ``normal`` (the module formula)."""
        d = self.nozzle() - chamber_xyz
        dist = np.linalg.norm(d, axis=-1)
        cos_phi = np.clip(d @ normal / dist, 0.0, None)
        return self.rate * seconds * (self.reference_distance / dist) ** 2 * cos_phi

    def deposit(self, seconds: float) -> float:
        """Open the valve for ``seconds``; returns the valve time (s)."""
        seconds = check_deposition_time("GIS valve time", seconds)
        self._require("gis")
        self._pumped("deposit")
        self.nozzle()
        material = GIS_GASES[self.state["gis_gas"]]
        patch = deposition_patch(
            self._state, lambda x, y, q, n: self.cryo_thickness(q, n, seconds), material)
        self._add(patch, "gis", seconds)
        return seconds

    def sputter(self, seconds: float) -> float:
        """Run the sputter coater for ``seconds``; returns the time taken with the gas cycle."""
        seconds = check_deposition_time("sputter time", seconds)
        self._require("sputter coater")
        self._pumped("sputter coat")
        th = self.sputter_rate * self.state["sputter_current"] * seconds
        patch = deposition_patch(self._state, lambda x, y, q, n: np.full(x.shape, th), "Pt")
        self._add(patch, "sputter", seconds + SPUTTER_OVERHEAD)
        return seconds + SPUTTER_OVERHEAD

    def _add(self, patch: HeightPatch, kind: str, seconds: float) -> None:
        self._state.scene.add_patch(patch)
        self._state.clock.advance(seconds)
        self.history.append((kind, seconds))
