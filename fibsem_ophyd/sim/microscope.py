"""The simulated dual-beam microscope: a :class:`fibsem_ophyd.backend.MicroscopeBackend`.

State (beams, detectors, stage, chamber) is validated on every write; images are rendered from
the true stage pose by :mod:`fibsem_ophyd.sim.render`, with noise and detector transfer from
:mod:`fibsem_ophyd.sim.detector`. The noise-free image of a pose is cached, so a repeated frame
costs a normal draw and a few array passes.

Faults (:meth:`SimulatedMicroscope.inject_fault`):

``"stage_stall"``
    the next stage move stops half way (every requested axis at the midpoint, the clock
    advanced by the time spent) and raises :class:`~fibsem_ophyd.backend.BackendError`; one-shot.
``"beam_trip"``
    the beam (``beam=`` one of them, default both) turns off; imaging raises until it is turned
    on again (``set("on", True, beam)``) or :meth:`~SimulatedMicroscope.clear_faults`.
``"vacuum_loss"``
    the chamber becomes ``"vented"`` (1e5 Pa); imaging raises until :meth:`pump` or
    :meth:`~SimulatedMicroscope.clear_faults`.
``"detector_failure"``
    the next acquisition raises; one-shot.
"""

from __future__ import annotations

import math
import numbers
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..backend import (
    BEAM_KEYS,
    CHAMBER_KEYS,
    DETECTOR_KEYS,
    GIS_KEYS,
    IMAGE_SETTING_KEYS,
    STAGE_AXES,
    BackendError,
)
from ..config import load_config
from ..geometry import ELECTRON, ION, rx
from ..milling import sputter_rate
from .clock import CURRENT_CHANGE, PUMP_TIME, VENT_TIME, VOLTAGE_CHANGE, SimClock
from .cuts import BeamCut, make_cut
from .deposition import GisModel
from .detector import (
    ELEMENTARY_CHARGE,
    NoiseSource,
    autocontrast_settings,
    draw_frame,
    expose,
)
from .erosion import ImagingErosion
from .manipulator import MAX_PENETRATION, SAVED_POSITIONS, NeedleModel
from .milling import mill_shapes
from .objects_liftout import LiftoutObjects
from .render import BeamView, Optics, RenderStats, Shading, intersect_surface, render_clean
from .scene import Scene
from .truth import Truth

__all__ = ["SimulatedMicroscope", "FAULTS"]

BEAMS = (ELECTRON, ION)
_NEEDLE_KEYS = ("manipulator_inserted", "manipulator_contact")
FAULTS = ("stage_stall", "beam_trip", "vacuum_loss", "detector_failure")

_HIGH_VACUUM = 1e-4          # Pa
_ATMOSPHERE = 1.0e5          # Pa
_MAX_RESOLUTION = 8192
_ACB_TIME = 1.5              # s: a vendor ACB runs a few small probe frames

_DETECTOR_TYPES = {ELECTRON: ["ETD", "TLD", "ICE"], ION: ["ETD", "ICE", "CDEM"]}
_DETECTOR_MODES = {ELECTRON: ["SecondaryElectrons", "BackscatterElectrons"],
                   ION: ["SecondaryElectrons"]}
_CURRENTS = {
    ELECTRON: [1e-12, 3e-12, 1e-11, 2.5e-11, 5e-11, 1e-10, 2e-10, 4e-10, 8e-10, 1.6e-9, 3.2e-9,
               6.4e-9, 1.3e-8, 2.6e-8, 5e-8, 1e-7],
    # Ga aperture strip (OpenFIBSEM's simulator spans 1 pA - 15 nA; TFS up to 65 nA)
    ION: [1e-12, 1e-11, 2e-11, 5e-11, 1e-10, 3e-10, 5e-10, 7.4e-10, 1e-9, 2e-9, 5e-9, 1.5e-8,
          6.5e-8],
}
_VOLTAGES = {ELECTRON: [500, 1000, 2000, 3000, 5000, 10000, 15000, 20000, 30000],
             ION: [500, 2000, 5000, 8000, 16000, 30000]}
_RESOLUTIONS = [[384, 256], [768, 512], [1536, 1024], [3072, 2048], [6144, 4096]]

# probe optics: semi-angle (rad) and spot-size laws
_ALPHA = {ELECTRON: 5e-3, ION: 1e-3}
_STIGMATION_DEFOCUS = 10e-6    # m of astigmatic focal difference per unit of stigmator


def _spot_size(beam: str, current: float, voltage: float) -> float:
    """Probe diameter (m): SEM a few nm; Ga ~ I^0.45 (3 nm @ 1 pA, 60 nm @ 1 nA)."""
    if beam == ELECTRON:
        return 2e-9 * (current / 5e-11) ** 0.4 * math.sqrt(2000.0 / voltage)
    return 8e-9 * (current / 1e-11) ** 0.45 * math.sqrt(30000.0 / voltage)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


class _Drift:
    """Sample drift in the chamber frame: constant velocity plus settling after stage moves."""

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


class SimulatedMicroscope:
    """Physically modelled dual-beam FIB-SEM (see the package docstring).

    Parameters
    ----------
    config : optional
        Anything :func:`fibsem_ophyd.config.load_config` accepts (path, mapping, config,
        ``None`` for the packaged default). The ``sim:`` section sets ``sample_height_offset``
        (m), ``collection_efficiency``, ``drift`` (bool or mapping: ``velocity`` m/s chamber
        frame, ``settle_amplitude`` m, ``settle_tau`` s), ``real_time_factor`` and optionally
        ``excess_noise`` (PMT excess-noise factor).
    seed : int
        Seed of the scene and of the noise: the same seed and operations give identical images.
    """

    def __init__(self, config: Any = None, seed: int = 0):
        self.config = load_config(config)
        self.geometry = self.config.geometry()
        self.seed = int(seed)
        sim = self.config.data.get("sim") or {}
        if not isinstance(sim, Mapping):
            raise ValueError(f"sim section must be a mapping, got {sim!r}")
        self._offset = self._sim_number(sim, "sample_height_offset", 0.0)
        self._collection = self._sim_number(sim, "collection_efficiency", 0.3, lo=1e-6, hi=1.0)
        self._excess = self._sim_number(sim, "excess_noise", 1.3, lo=1.0, hi=10.0)
        rtf = self._sim_number(sim, "real_time_factor", 0.0, lo=0.0, hi=1e6)
        self._drift = _Drift(sim.get("drift", False))
        self.clock = SimClock(rtf)
        self.scene = Scene(seed)
        self._rng = np.random.default_rng(np.random.SeedSequence([self.seed & 0xFFFFFFFF, 0x1A6E]))
        self._noise = NoiseSource(np.random.SeedSequence([self.seed & 0xFFFFFFFF, 0x4E01]))
        d = self.config.data
        self._z0 = float(d["stage"]["eucentric_z"])
        self._stage = {ax: float(d["stage"]["initial_position"][ax]) for ax in STAGE_AXES}
        self._stage_limits = self.config.stage_limits()
        self._beams: dict[str, dict[str, Any]] = {}
        self._limits: dict[str, dict[str, tuple[float, float]]] = {}
        for beam in BEAMS:
            c = d[beam]
            self._limits[beam] = self.config.beam_limits(beam)
            self._beams[beam] = {
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
            if self._beams[beam]["detector_type"] not in _DETECTOR_TYPES[beam]:
                self._beams[beam]["detector_type"] = _DETECTOR_TYPES[beam][0]
            if self._beams[beam]["detector_mode"] not in _DETECTOR_MODES[beam]:
                self._beams[beam]["detector_mode"] = _DETECTOR_MODES[beam][0]
        self._vacuum = "pumped"
        self._pressure = _HIGH_VACUUM
        self._pending: set[str] = set()
        self._tripped: set[str] = set()
        self._vacuum_lost = False
        self._clean_cache: OrderedDict = OrderedDict()
        self._exposure_cache: OrderedDict = OrderedDict()
        #: diagnostics of the last render (raster size, parallax, blur)
        self.last_render = RenderStats()
        #: every milling's beam-parallel cut (:mod:`fibsem_ophyd.sim.cuts`), in order
        self.cuts: list[BeamCut] = []
        #: erosion of the fields the ion beam imaged (:mod:`fibsem_ophyd.sim.erosion`)
        self.erosion = ImagingErosion()
        #: gas injection system and sputter coater (:mod:`fibsem_ophyd.sim.deposition`)
        self.gis = GisModel(self, sim)
        #: the manipulator needle (:mod:`fibsem_ophyd.sim.manipulator`)
        self.needle = NeedleModel(
            self, bool((self.config.data.get("manipulator") or {}).get("enabled", True)))
        #: lamellae, landing posts, copper adaptor, volume block (:mod:`.objects_liftout`)
        self.liftout = LiftoutObjects(self.scene, lambda: self._offset, self.needle)
        self.truth = Truth(self)

    @staticmethod
    def _sim_number(sim: Mapping, key: str, default: float, lo: float = -math.inf,
                    hi: float = math.inf) -> float:
        v = sim.get(key, default)
        if v is None:
            v = default
        if not _is_number(v) or not math.isfinite(float(v)) or not lo <= float(v) <= hi:
            raise ValueError(f"sim.{key} = {v!r} must be a finite number in [{lo}, {hi}]")
        return float(v)

    # ================================================================== validation helpers
    @staticmethod
    def _check_beam(beam: Any) -> str:
        if beam not in BEAMS:
            raise ValueError(f"unknown beam {beam!r}; expected one of {list(BEAMS)}")
        return beam

    @staticmethod
    def _number(name: str, value: Any, limits: tuple[float, float] | None = None) -> float:
        if not _is_number(value):
            raise ValueError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
        v = float(value)
        if not math.isfinite(v):
            raise ValueError(f"{name} must be finite, got {value!r}")
        if limits is not None and not limits[0] <= v <= limits[1]:
            raise ValueError(f"{name} = {v!r} is outside the limit [{limits[0]}, {limits[1]}]")
        return v

    def _pair(self, name: str, value: Any, limits: tuple[float, float] | None) -> list[float]:
        if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
            raise ValueError(f"{name} must be a pair of numbers, got {value!r}")
        if len(value) != 2:
            raise ValueError(f"{name} must have 2 elements, got {value!r}")
        return [self._number(f"{name}[{i}]", v, limits) for i, v in enumerate(value)]

    @staticmethod
    def _resolution(name: str, value: Any) -> list[int]:
        if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
            raise ValueError(f"{name} must be [width, height] integers, got {value!r}")
        if len(value) != 2:
            raise ValueError(f"{name} must be [width, height], got {value!r}")
        out = []
        for v in value:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral):
                raise ValueError(f"{name} must hold integers, got {value!r}")
            if not 1 <= int(v) <= _MAX_RESOLUTION:
                raise ValueError(f"{name} = {list(value)!r} is outside the limit "
                                 f"[1, {_MAX_RESOLUTION}] px")
            out.append(int(v))
        return out

    # ================================================================== get / set
    def get(self, key: str, beam: str | None = None) -> Any:
        """Read one setting (units as in :mod:`fibsem_ophyd.backend`)."""
        if beam is None:
            if key == "vacuum_state":
                return self._vacuum
            if key == "pressure":
                return self._pressure
            if key in GIS_KEYS:
                return self.gis.get(key)
            if key == "manipulator_inserted":
                return self.needle.inserted
            if key == "manipulator_contact":
                return self.needle.contact
            if key in BEAM_KEYS or key in DETECTOR_KEYS:
                raise ValueError(f"{key!r} is a beam setting: pass beam='electron' or 'ion'")
            raise ValueError(f"unknown chamber key {key!r}; expected one of "
                             f"{list(CHAMBER_KEYS + GIS_KEYS + _NEEDLE_KEYS)}")
        beam = self._check_beam(beam)
        if key == "column_tilt":
            return float(self.config.data[beam]["column_tilt"])
        if key in CHAMBER_KEYS:
            raise ValueError(f"{key!r} is a chamber key: call get({key!r}) without a beam")
        if key not in self._beams[beam]:
            raise ValueError(f"unknown {beam} key {key!r}; expected one of "
                             f"{list(BEAM_KEYS) + list(DETECTOR_KEYS)}")
        v = self._beams[beam][key]
        return list(v) if isinstance(v, list) else v

    def set(self, key: str, value: Any, beam: str | None = None) -> None:
        """Write one setting; ``ValueError`` (naming key, value and limit) before any change."""
        if beam is None:
            if key == "vacuum_state":
                if value == "pumped":
                    self.pump()
                elif value == "vented":
                    self.vent()
                else:
                    raise ValueError(f"vacuum_state must be 'pumped' or 'vented', got {value!r}")
                return
            if key == "pressure":
                raise ValueError("pressure is read-only")
            if key in GIS_KEYS:
                return self.gis.set(key, value)
            if key in ("manipulator_inserted", "manipulator_contact"):
                raise ValueError(f"{key} is read-only: use insert_manipulator / "
                                 "retract_manipulator")
            if key in BEAM_KEYS or key in DETECTOR_KEYS:
                raise ValueError(f"{key!r} is a beam setting: pass beam='electron' or 'ion'")
            raise ValueError(f"unknown chamber key {key!r}; expected one of "
                             f"{list(CHAMBER_KEYS + GIS_KEYS + _NEEDLE_KEYS)}")
        beam = self._check_beam(beam)
        name = f"{beam}.{key}"
        st = self._beams[beam]
        lim = self._limits[beam]
        if key in ("on", "blanked"):
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{name} must be a bool, got {value!r}")
            new: Any = bool(value)
            if key == "on" and new:
                self._tripped.discard(beam)
        elif key in ("voltage", "current", "hfw", "working_distance", "dwell_time"):
            new = self._number(name, value, lim.get(key))
        elif key == "scan_rotation":
            new = self._number(name, value)
        elif key in ("shift", "stigmation"):
            new = self._pair(name, value, lim.get(key))
        elif key == "resolution":
            new = self._resolution(name, value)
        elif key == "column_tilt":
            raise ValueError(f"{name} is read-only (set by the column geometry)")
        elif key in ("detector_type", "detector_mode"):
            allowed = self.available_values(key, beam)
            if value not in allowed:
                raise ValueError(f"{name} = {value!r} is not one of {allowed}")
            new = str(value)
        elif key in ("brightness", "contrast"):
            new = self._number(name, value, (0.0, 1.0))
        elif key in CHAMBER_KEYS:
            raise ValueError(f"{key!r} is a chamber key: call set({key!r}, value) without a beam")
        else:
            raise ValueError(f"unknown {beam} key {key!r}; expected one of "
                             f"{list(BEAM_KEYS) + list(DETECTOR_KEYS)}")
        old = st[key]
        if key == "current" and new != old:
            self.clock.advance(CURRENT_CHANGE)
        elif key == "voltage" and new != old:
            self.clock.advance(VOLTAGE_CHANGE)
        st[key] = new

    def available_values(self, key: str, beam: str | None = None) -> list:
        """Allowed values of an enumerated setting."""
        if beam is None:
            if key == "vacuum_state":
                return ["pumped", "vented"]
            return self.gis.available_values(key)
        beam = self._check_beam(beam)
        if key == "detector_type":
            return list(_DETECTOR_TYPES[beam])
        if key == "detector_mode":
            return list(_DETECTOR_MODES[beam])
        if key == "current":
            cfg = self.config.data[beam].get("available_currents")
            vals = cfg if cfg else _CURRENTS[beam]
            lo, hi = self._limits[beam]["current"]
            return [float(v) for v in vals if lo <= v <= hi]
        if key == "voltage":
            lo, hi = self._limits[beam]["voltage"]
            return [float(v) for v in _VOLTAGES[beam] if lo <= v <= hi]
        if key == "resolution":
            return [list(r) for r in _RESOLUTIONS]
        raise ValueError(f"{beam} key {key!r} has no enumerated values")

    # ================================================================== stage
    def get_stage_position(self) -> dict[str, float]:
        """Stage position: x, y, z (m); r, t (deg)."""
        return dict(self._stage)

    def move_stage_absolute(self, position: Mapping[str, float]) -> None:
        """Move the given axes; all are validated (axis names, finiteness, limits) first."""
        if not isinstance(position, Mapping):
            raise ValueError(f"stage position must be a mapping of axes, got {position!r}")
        target = dict(self._stage)
        for ax, v in position.items():
            if ax not in STAGE_AXES:
                raise ValueError(
                    f"unknown stage axis {ax!r}; expected a subset of {list(STAGE_AXES)}")
            unit = "deg" if ax in ("r", "t") else "m"
            lo, hi = self._stage_limits[ax]
            if not _is_number(v):
                raise ValueError(f"stage.{ax} must be a number ({unit}), got {v!r}")
            fv = float(v)
            if not math.isfinite(fv):
                raise ValueError(f"stage.{ax} must be finite, got {v!r}")
            if not lo <= fv <= hi:
                raise ValueError(f"stage.{ax} = {fv!r} {unit} is outside the limit [{lo}, {hi}]")
            target[ax] = fv
        start = dict(self._stage)
        if self.needle.inserted:
            # the sample must not be driven into the inserted needle (end pose checked)
            self._stage = target
            try:
                gap = self.needle.gap(self.needle.tip())
            finally:
                self._stage = start
            if gap < -MAX_PENETRATION:
                raise BackendError(
                    f"stage move to {dict(position)} refused: the inserted manipulator's tip "
                    f"would be {-gap * 1e6:.2f} um inside the sample; retract it or move it "
                    "up first")
        if "stage_stall" in self._pending:
            self._pending.discard("stage_stall")
            mid = {ax: 0.5 * (start[ax] + target[ax]) for ax in STAGE_AXES}
            self.clock.advance(SimClock.stage_move_time(start, mid))
            self._stage = mid
            self._after_move(start)
            raise BackendError(f"stage stalled half way to {dict(position)} (now at {mid})")
        self.clock.advance(SimClock.stage_move_time(start, target))
        self._stage = target
        self._after_move(start)

    def _after_move(self, start: dict) -> None:
        self.needle.update_contact()
        d = np.array([self._stage[a] - start[a] for a in ("x", "y", "z")])
        if np.any(d):
            self._drift.moved(self.clock.now(), rx(math.radians(self._stage["t"])) @ d)

    # ================================================================== chamber
    def pump(self) -> None:
        """Pump to high vacuum (takes simulated time if vented)."""
        if self._vacuum != "pumped":
            self.clock.advance(PUMP_TIME)
        self._vacuum = "pumped"
        self._pressure = _HIGH_VACUUM
        self._vacuum_lost = False

    def vent(self) -> None:
        """Vent the chamber (imaging then raises)."""
        if self._vacuum != "vented":
            self.clock.advance(VENT_TIME)
        self._vacuum = "vented"
        self._pressure = _ATMOSPHERE

    def time(self) -> float:
        """Simulated clock (s)."""
        return self.clock.now()

    # ================================================================== milling
    def mill(self, shapes, current: float, voltage: float = 30e3, hfw: float | None = None,
             application_file: str = "Si", progress=None) -> float:
        """Mill ``shapes`` (``fibsem_ophyd.milling`` primitives, ion image frame, m) at
        ``current`` A; returns the beam time in s (added to the clock).

        The dose each shape asks for (its depth in the ``application_file`` material) erodes
        the scene by the local material's sputter rate and the incidence angle (see
        :mod:`fibsem_ophyd.sim.milling`). ``progress(fraction)`` is called per pass.
        """
        if isinstance(current, bool) or not isinstance(current, (int, float)) \
                or not math.isfinite(current) or current <= 0:
            raise ValueError(f"milling current must be > 0 A, got {current!r}")
        shapes = list(shapes)
        if not shapes:
            raise ValueError("nothing to mill: no shapes")
        rate = sputter_rate(application_file)
        if self._vacuum != "pumped":
            raise BackendError(f"cannot mill: the chamber is {self._vacuum}")
        if not self._beams["ion"]["on"]:
            raise BackendError("cannot mill: the ion beam is off")
        hfw = float(self._beams["ion"]["hfw"] if hfw is None else hfw)
        bounds = np.array([s.bounds for s in shapes])
        box = (bounds[:, 0].min(), bounds[:, 1].min(), bounds[:, 2].max(), bounds[:, 3].max())

        def depth_at(u, v):
            out = np.zeros(np.broadcast(u, v).shape)
            for shape in shapes:
                np.maximum(out, shape.depth_at(u, v), out=out)
            return out

        view = self.truth.view("ion", {"hfw": hfw})
        cut = make_cut(self, view, depth_at, box, float(current), float(voltage), rate,
                       _spot_size("ion", float(current), float(voltage)))
        result = mill_shapes(self, depth_at, box, float(current), rate, hfw, progress=progress)
        self.cuts.append(cut)
        self.clock.advance(result["time"])
        return result["time"]

    # ================================================================== deposition
    def gis_deposit(self, duration: float) -> float:
        """Open the GIS valve for ``duration`` s at the inserted position with the selected
        gas (cryo deposition: no beam); returns the valve time, s (added to the clock)."""
        return self.gis.deposit(duration)

    def sputter_coat(self, duration: float) -> float:
        """Run the sputter coater for ``duration`` s at ``sputter_current``; returns the time
        taken including the gas cycle, s (added to the clock)."""
        return self.gis.sputter(duration)

    # ================================================================== manipulator
    def insert_manipulator(self, name: str = "PARK") -> None:
        """Insert the needle and move it to ``name`` ("PARK" or "EUCENTRIC")."""
        self.needle.insert(name)

    def retract_manipulator(self) -> None:
        """Retract the needle."""
        self.needle.retract()

    def get_manipulator_position(self) -> dict[str, float]:
        """RAW tip position, m (the chamber frame from the coincidence point)."""
        return dict(self.needle.position)

    def move_manipulator_absolute(self, position: Mapping[str, float]) -> None:
        """Move the tip to ``position`` (given axes; others stay)."""
        self.needle.move_absolute(position)

    def manipulator_positions(self) -> dict[str, dict[str, float]]:
        """Saved positions, RAW (m)."""
        return {k: dict(v) for k, v in SAVED_POSITIONS.items()}

    # ================================================================== faults
    def inject_fault(self, kind: str, beam: str | None = None) -> None:
        """Inject a fault (see the module docstring for :data:`FAULTS` and their effects)."""
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; expected one of {list(FAULTS)}")
        if kind == "beam_trip":
            beams = BEAMS if beam is None else (self._check_beam(beam),)
            for b in beams:
                self._beams[b]["on"] = False
                self._tripped.add(b)
        elif kind == "vacuum_loss":
            self._vacuum = "vented"
            self._pressure = _ATMOSPHERE
            self._vacuum_lost = True
        else:
            self._pending.add(kind)

    def clear_faults(self) -> None:
        """Drop pending faults and undo the state changes of beam trips and vacuum loss."""
        self._pending.clear()
        for b in self._tripped:
            self._beams[b]["on"] = True
        self._tripped.clear()
        if self._vacuum_lost:
            self._vacuum = "pumped"
            self._pressure = _HIGH_VACUUM
            self._vacuum_lost = False

    @property
    def active_faults(self) -> tuple[str, ...]:
        """Pending one-shot faults and standing ones (``beam_trip:<beam>``, ``vacuum_loss``)."""
        out = sorted(self._pending) + [f"beam_trip:{b}" for b in sorted(self._tripped)]
        if self._vacuum_lost:
            out.append("vacuum_loss")
        return tuple(out)

    # ================================================================== imaging
    def _frame_settings(self, beam: str, settings: Mapping | None) -> dict:
        """Validated per-frame settings merged over the beam state."""
        st = self._beams[beam]
        lim = self._limits[beam]
        s = dict(settings or {})
        for k in s:
            if k not in IMAGE_SETTING_KEYS:
                raise ValueError(f"unknown image setting {k!r}; expected a subset of "
                                 f"{list(IMAGE_SETTING_KEYS)}")
        out = {
            "resolution": list(st["resolution"]),
            "dwell_time": st["dwell_time"],
            "hfw": st["hfw"],
            "reduced_area": None,
            "line_integration": 1,
            "frame_integration": 1,
            "autocontrast": False,
        }
        if s.get("resolution") is not None:
            out["resolution"] = self._resolution("resolution", s["resolution"])
        if s.get("dwell_time") is not None:
            out["dwell_time"] = self._number(f"{beam}.dwell_time", s["dwell_time"],
                                             lim["dwell_time"])
        if s.get("hfw") is not None:
            out["hfw"] = self._number(f"{beam}.hfw", s["hfw"], lim["hfw"])
        for k in ("line_integration", "frame_integration"):
            v = s.get(k)
            if v is None:
                continue
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral) \
                    or not 1 <= int(v) <= 1024:
                raise ValueError(f"{k} must be an integer in [1, 1024], got {v!r}")
            out[k] = int(v)
        ac = s.get("autocontrast")
        if ac is not None:
            if not isinstance(ac, (bool, np.bool_)):
                raise ValueError(f"autocontrast must be a bool, got {ac!r}")
            out["autocontrast"] = bool(ac)
        if s.get("reduced_area") is not None:
            out["reduced_area"] = self._reduced_area(s["reduced_area"])
        return out

    @staticmethod
    def _reduced_area(ra: Any) -> tuple[float, float, float, float]:
        """(left, top, width, height) fractions of the frame, OpenFIBSEM's FibsemRectangle."""
        if isinstance(ra, Mapping):
            try:
                vals = [ra[k] for k in ("left", "top", "width", "height")]
            except KeyError as exc:
                raise ValueError(f"reduced_area needs left, top, width, height: {ra!r}") from exc
        elif all(hasattr(ra, k) for k in ("left", "top", "width", "height")):
            vals = [getattr(ra, k) for k in ("left", "top", "width", "height")]
        elif isinstance(ra, (Sequence, np.ndarray)) and not isinstance(ra, (str, bytes)) \
                and len(ra) == 4:
            vals = list(ra)
        else:
            raise ValueError(f"reduced_area must be (left, top, width, height), got {ra!r}")
        left, top, width, height = (SimulatedMicroscope._number(f"reduced_area.{n}", v, (0.0, 1.0))
                                    for n, v in zip(("left", "top", "width", "height"), vals,
                                                    strict=True))
        if width <= 0 or height <= 0 or left + width > 1 + 1e-9 or top + height > 1 + 1e-9:
            raise ValueError(
                f"reduced_area {vals!r} must have width, height > 0 and lie in the frame")
        return left, top, width, height

    def _view(self, beam: str, frame: Mapping | None = None, t: float | None = None) -> BeamView:
        st = self._beams[beam]
        w, h = (frame or {}).get("resolution") or st["resolution"]
        hfw = (frame or {}).get("hfw") or st["hfw"]
        drift = self._drift.offset(self.clock.now() if t is None else t)
        return BeamView.build(beam, self._stage, self._z0, self.geometry, w, h, hfw,
                              st["scan_rotation"], tuple(st["shift"]), self._offset, tuple(drift))

    def _optics(self, beam: str, view: BeamView) -> Optics:
        st = self._beams[beam]
        wd_focus = self.truth._focus_wd(beam, view)
        defocus = st["working_distance"] - wd_focus
        alpha = _ALPHA[beam]
        d0 = _spot_size(beam, st["current"], st["voltage"])
        d = math.hypot(d0, 2 * alpha * defocus)
        sigma = d / (2.355 * view.pixel)
        sx, sy = st["stigmation"]
        mag = math.hypot(sx, sy)
        astig = 2 * alpha * _STIGMATION_DEFOCUS * mag / (2.355 * view.pixel)
        return Optics(sigma, astig, 0.5 * math.atan2(sy, sx) if mag else 0.0)

    def _clean(self, beam: str, frame: Mapping, t: float) -> tuple[np.ndarray, Shading]:
        st = self._beams[beam]
        view = self._view(beam, frame, t)
        key = (
            beam, tuple(self._stage[a] for a in STAGE_AXES), tuple(np.round(view.translation, 15)),
            view.width, view.height, view.pixel, st["scan_rotation"], tuple(st["shift"]),
            st["working_distance"], tuple(st["stigmation"]), st["voltage"], st["current"],
            st["detector_type"], st["detector_mode"], self.scene.version, self._offset,
            self.needle.key(), self.gis.state["gis_position"], self.liftout.key(),
        )
        hit = self._clean_cache.get(key)
        if hit is not None:
            self._clean_cache.move_to_end(key)
            return hit
        shading = Shading.build(beam, st["detector_type"], st["detector_mode"], st["voltage"])
        optics = self._optics(beam, view)
        stats = RenderStats()
        img = render_clean(self.scene, view, shading, optics, stats)
        img = self.gis.composite(img, view, shading, optics)
        img = self.liftout.composite(img, view, shading, optics, attached=False)
        img = self.needle.composite(img, view, shading, optics)
        img = self.liftout.composite(img, view, shading, optics, attached=True)
        self.last_render = stats
        self._clean_cache[key] = (img, shading)
        while len(self._clean_cache) > 4:
            self._clean_cache.popitem(last=False)
        return img, shading

    def render_clean(self, beam: str, settings: Mapping | None = None) -> np.ndarray:
        """Noise-free yield image (float32, SE per primary) of the current pose and settings
        (``reduced_area`` crops); no clock time, no faults checked."""
        beam = self._check_beam(beam)
        frame = self._frame_settings(beam, settings)
        img, _ = self._clean(beam, frame, self.clock.now())
        return self._crop(img, frame["reduced_area"])

    @staticmethod
    def _crop(img: np.ndarray, ra) -> np.ndarray:
        if ra is None:
            return img
        h, w = img.shape
        c0 = min(int(round(ra[0] * w)), w - 1)
        r0 = min(int(round(ra[1] * h)), h - 1)
        c1 = min(w, c0 + max(1, int(round(ra[2] * w))))
        r1 = min(h, r0 + max(1, int(round(ra[3] * h))))
        return img[r0:r1, c0:c1]

    def acquire_image(self, beam: str, settings: Mapping | None = None) -> np.ndarray:
        """Acquire one frame: uint8 (height, width), or the reduced-area crop of it.

        Raises
        ------
        ValueError
            Unknown beam or invalid settings (nothing is acquired).
        BackendError
            Chamber vented, beam off (or tripped), or an injected detector failure.
        """
        beam = self._check_beam(beam)
        frame = self._frame_settings(beam, settings)
        st = self._beams[beam]
        if self._vacuum != "pumped":
            raise BackendError(f"cannot image with the {beam} beam: the chamber is {self._vacuum}")
        if not st["on"]:
            why = " (beam trip)" if beam in self._tripped else ""
            raise BackendError(f"cannot image: the {beam} beam is off{why}")
        if "detector_failure" in self._pending:
            self._pending.discard("detector_failure")
            raise BackendError(f"{beam} detector failed to return a frame")
        integrations = frame["line_integration"] * frame["frame_integration"]
        tau = frame["dwell_time"] * integrations
        primaries = st["current"] * tau / ELEMENTARY_CHARGE
        if frame["autocontrast"]:
            img, shading = self._clean(beam, frame, self.clock.now())
            b, c = autocontrast_settings(self._crop(img, frame["reduced_area"]), primaries,
                                         self._collection, shading.reference, self._excess)
            st["brightness"], st["contrast"] = b, c
            self.clock.advance(_ACB_TIME)
        w, h = frame["resolution"]
        n_pix = w * h
        if frame["reduced_area"] is not None:
            ra = frame["reduced_area"]
            n_pix = max(1, round(ra[2] * w)) * max(1, round(ra[3] * h))
        duration = SimClock.frame_time(frame["dwell_time"], n_pix, integrations)
        t_mid = self.clock.now() + 0.5 * duration
        img, shading = self._clean(beam, frame, t_mid)
        ekey = (id(img), frame["reduced_area"], primaries, st["brightness"], st["contrast"],
                st["blanked"])
        exp = self._exposure_cache.get(ekey)
        if exp is None or exp[0] is not img:
            clean = self._crop(img, frame["reduced_area"])
            if st["blanked"]:
                clean = np.zeros_like(clean)
            exp = (img, expose(clean, primaries, self._collection, st["brightness"],
                               st["contrast"], shading.reference, self._excess))
            self._exposure_cache[ekey] = exp
            while len(self._exposure_cache) > 4:
                self._exposure_cache.popitem(last=False)
        else:
            self._exposure_cache.move_to_end(ekey)
        out = draw_frame(exp[1], self._rng, self._noise.take(exp[1].offset.shape))
        if beam == ION and not st["blanked"]:
            # the frame's ions sputter the field it scanned (see sim.erosion)
            view = self._view(beam, frame, t_mid)
            fw, fh = frame["resolution"]
            area = view.pixel * fw * view.pixel * fh
            if frame["reduced_area"] is not None:
                area *= frame["reduced_area"][2] * frame["reduced_area"][3]
            beam_time = frame["dwell_time"] * n_pix * integrations  # beam on the sample
            self.erosion.add_frame(self, view, st["current"], beam_time, area,
                                   frame["reduced_area"])
        self.clock.advance(duration)
        return out

    # ================================================================== helpers for truth
    def _surface_point(self, beam: str, view: BeamView, a1: float, a2: float):
        return intersect_surface(self.scene, view, a1, a2, spacing=view.pixel)
