"""The simulated dual-beam microscope: a :class:`fibsem_ophyd.backend.MicroscopeBackend`.

The backend facade: every request is validated here, then written to the simulator's state
(:class:`~fibsem_ophyd.sim.state.SimState`) or handed to the model that carries it out:
frames to :mod:`~fibsem_ophyd.sim.imaging`, milling to :mod:`~fibsem_ophyd.sim.milling` and
:mod:`~fibsem_ophyd.sim.cuts`, the GIS and sputter coater to
:mod:`~fibsem_ophyd.sim.deposition`, the needle to :mod:`~fibsem_ophyd.sim.manipulator`.
Ground truth (:class:`~fibsem_ophyd.sim.truth.Truth`, ``sim.truth``) reads the same state.

Faults (:meth:`SimulatedMicroscope.inject_fault`):

``"stage_stall"``
    the next stage move stops half way (every requested axis at the midpoint, the clock
    advanced by the time spent) and raises :class:`~fibsem_ophyd.backend.BackendError`; one-shot.
``"beam_trip"``
    the beam (``beam=`` one of them, default both) turns off; imaging raises until it is turned
    on again (``set("on", True, beam)``) or :meth:`~SimulatedMicroscope.clear_faults`. A
    milling in progress fails at the next pass (``BackendError`` naming the pass and the beam
    trip), keeping what the passes before removed.
``"vacuum_loss"``
    the chamber becomes ``"vented"`` (1e5 Pa); imaging raises until :meth:`pump` or
    :meth:`~SimulatedMicroscope.clear_faults`.
``"detector_failure"``
    the next acquisition raises; one-shot.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from .. import validate
from ..backend import (
    BEAM_KEYS,
    CHAMBER_KEYS,
    DETECTOR_KEYS,
    GIS_KEYS,
    IMAGE_SETTING_KEYS,
    MANIPULATOR_KEYS,
    MANIPULATOR_LIMITS,
    SPUTTER_CURRENT_LIMITS,
    STAGE_AXES,
    STAGE_KEYS,
    STATE_BEAM_KEYS,
    STOPPABLE,
    BackendError,
    MissingSubsystemError,
    StoppedError,
    describe_beam_key,
    describe_value,
)
from ..config import load_config
from ..geometry import ELECTRON, ION
from ..milling import sputter_rate
from .chamber_camera import render_chamber
from .clock import CURRENT_CHANGE, PUMP_TIME, VENT_TIME, VOLTAGE_CHANGE, SimClock
from .cuts import BeamCut, make_cut
from .deposition import GisModel
from .erosion import ImagingErosion
from .imaging import ImagingModel
from .manipulator import AXIS as NEEDLE_AXIS
from .manipulator import MAX_PENETRATION, SAVED_POSITIONS, NeedleModel
from .milling import PASSES, mill_shapes, milling_charge
from .objects_liftout import LiftoutObjects
from .optics import spot_size
from .render import RenderStats
from .state import (
    ATMOSPHERE,
    BEAMS,
    DETECTOR_MODES,
    DETECTOR_TYPES,
    HIGH_VACUUM,
    Drift,
    SimState,
    check_number,
)
from .truth import Truth

__all__ = ["SimulatedMicroscope", "FAULTS"]

_NEEDLE_KEYS = ("manipulator_inserted", "manipulator_contact")
FAULTS = ("stage_stall", "beam_trip", "vacuum_loss", "detector_failure")

_MAX_RESOLUTION = 8192

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
        cfg = load_config(config)
        #: pose, beams, chamber, faults, clock and scene (:mod:`fibsem_ophyd.sim.state`)
        self.world = SimState(cfg, seed)
        self.config = cfg
        self.geometry = self.world.geometry
        self.seed = self.world.seed
        self.clock = self.world.clock
        self.scene = self.world.scene
        self.motion = self.world.motion
        #: every milling's beam-parallel cut (:mod:`fibsem_ophyd.sim.cuts`), in order
        self.cuts: list[BeamCut] = []
        #: erosion of the fields the ion beam imaged (:mod:`fibsem_ophyd.sim.erosion`)
        self.erosion = ImagingErosion()
        #: gas injection system and sputter coater (:mod:`fibsem_ophyd.sim.deposition`)
        self.gis = GisModel(self.world)
        #: the manipulator needle (:mod:`fibsem_ophyd.sim.manipulator`)
        self.needle = NeedleModel(
            self.world, bool((cfg.data.get("manipulator") or {}).get("enabled", True)))
        #: lamellae, landing posts, copper adaptor, volume block (:mod:`.objects_liftout`)
        self.liftout = LiftoutObjects(self.world.scene, lambda: self.world.offset, self.needle)
        #: frames of both beams (:mod:`fibsem_ophyd.sim.imaging`)
        self.imaging = ImagingModel(self.world, self.gis, self.needle, self.erosion,
                                    self.liftout)
        self.truth = Truth(self.world, self.cuts, self.erosion, self._checked_frame,
                           objects=(self.needle, self.liftout))

    def close(self) -> None:
        """End the simulator's threads (its noise thread; a later frame starts it again).
        ``setup_session`` calls it when it closes a session it made the simulator for."""
        self.imaging.close()

    @property
    def last_render(self) -> RenderStats:
        """Diagnostics of the last render (raster size, parallax, blur)."""
        return self.imaging.last_render

    @property
    def _drift(self) -> Drift:
        return self.world.drift

    # ================================================================== validation helpers
    @staticmethod
    def _check_beam(beam: Any) -> str:
        if beam not in BEAMS:
            raise ValueError(f"unknown beam {beam!r}; expected one of {list(BEAMS)}")
        return beam

    _number = staticmethod(check_number)

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
                return self.world.vacuum
            if key == "pressure":
                return self.world.pressure
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
        if key not in self.world.beams[beam]:
            raise ValueError(f"unknown {beam} key {key!r}; expected one of "
                             f"{list(BEAM_KEYS) + list(DETECTOR_KEYS)}")
        v = self.world.beams[beam][key]
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
        st = self.world.beams[beam]
        lim = self.world.limits[beam]
        if key in ("on", "blanked"):
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{name} must be a bool, got {value!r}")
            new: Any = bool(value)
            if key == "on" and new:
                self.world.tripped.discard(beam)
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
            return list(DETECTOR_TYPES[beam])
        if key == "detector_mode":
            return list(DETECTOR_MODES[beam])
        if key == "current":
            cfg = self.config.data[beam].get("available_currents")
            vals = cfg if cfg else _CURRENTS[beam]
            lo, hi = self.world.limits[beam]["current"]
            return [float(v) for v in vals if lo <= v <= hi]
        if key == "voltage":
            lo, hi = self.world.limits[beam]["voltage"]
            return [float(v) for v in _VOLTAGES[beam] if lo <= v <= hi]
        if key == "resolution":
            return [list(r) for r in _RESOLUTIONS]
        raise ValueError(f"{beam} key {key!r} has no enumerated values")

    # ================================================================== stage
    def get_stage_position(self) -> dict[str, float]:
        """Stage position: x, y, z (m); r, t (deg)."""
        return dict(self.world.stage)

    def move_stage_absolute(self, position: Mapping[str, float]) -> None:
        """Move the given axes; all are validated (axis names, finiteness, limits) first."""
        if not isinstance(position, Mapping):
            raise ValueError(f"stage position must be a mapping of axes, got {position!r}")
        target = dict(self.world.stage)
        validate.known_keys("the stage position", position, STAGE_AXES, what="stage axis")
        for ax, v in position.items():
            unit = "deg" if ax in ("r", "t") else "m"
            target[ax] = validate.in_range(f"stage.{ax}", v, self.world.stage_limits[ax],
                                           units=unit, limits_name="the limit", exact=True)
        start = dict(self.world.stage)
        if self.needle.inserted:
            # the sample must not be driven into the inserted needle (end pose checked)
            self.world.stage = target
            try:
                gap = self.needle.gap(self.needle.tip())
            finally:
                self.world.stage = start
            if gap < -MAX_PENETRATION:
                raise BackendError(
                    f"stage move to {dict(position)} refused: the inserted manipulator's tip "
                    f"would be {-gap * 1e6:.2f} um inside the sample; retract it or move it "
                    "up first")
        if "stage_stall" in self.world.pending:
            self.world.pending.discard("stage_stall")
            mid = {ax: 0.5 * (start[ax] + target[ax]) for ax in STAGE_AXES}
            self.clock.advance(SimClock.stage_move_time(start, mid))
            self.world.stage = mid
            self._after_move(start)
            raise BackendError(f"stage stalled half way to {dict(position)} (now at {mid})")
        self.motion.begin("stage")

        def apply(pos):
            self.world.stage = {**start, **pos}

        try:
            self.motion.travel("stage", start, target, SimClock.stage_move_time(start, target),
                               apply)
        finally:
            self._after_move(start)

    def _after_move(self, start: dict) -> None:
        self.needle.update_contact()
        self.world.stage_moved(start)

    # ================================================================== chamber
    def pump(self) -> None:
        """Pump to high vacuum (:data:`~.clock.PUMP_TIME` of simulated time if vented); the
        chamber is "pumped" once there. ``stop("chamber")`` ends it part way (still
        "vented", at the pressure reached; :class:`StoppedError`)."""
        if self.world.vacuum != "pumped":
            self._pressure_ramp(HIGH_VACUUM, PUMP_TIME, "pump")
        self.world.vacuum = "pumped"
        self.world.pressure = HIGH_VACUUM
        self.world.vacuum_lost = False

    def vent(self) -> None:
        """Vent the chamber (:data:`~.clock.VENT_TIME`); it is "vented" from the start
        (imaging then raises). ``stop("chamber")`` ends it part way, at the pressure
        reached."""
        if self.world.vacuum != "vented" or self.world.pressure < ATMOSPHERE:
            self.world.vacuum = "vented"
            self._pressure_ramp(ATMOSPHERE, VENT_TIME, "vent")
        self.world.vacuum = "vented"
        self.world.pressure = ATMOSPHERE

    def _pressure_ramp(self, target: float, duration: float, what: str) -> None:
        """Pressure from where it is to ``target`` in ``duration`` simulated s, stepped
        (log-linear) so that a stop ends it part way."""
        self.motion.begin("chamber")

        def apply(pos):
            self.world.pressure = float(10.0 ** pos["log_p"])

        try:
            self.motion.travel("chamber", {"log_p": math.log10(self.world.pressure)},
                               {"log_p": math.log10(target)}, duration, apply)
        except StoppedError:
            self.world.vacuum = "vented"  # not at high vacuum
            raise StoppedError(f"{what} stopped at {self.world.pressure:.3g} Pa") from None

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
        :mod:`fibsem_ophyd.sim.milling`). ``progress(fraction)`` is called per pass; each
        pass adds its share of the beam time to the clock (sleeping it with a real-time
        factor). Before each pass a stop (``StoppedError``), the ion beam off or tripped, or
        a vented chamber (``BackendError`` naming the pass) ends the milling; what the
        passes before removed stays milled (the scene and the cut hold those passes).
        """
        validate.positive("milling current", current, units="A", rule="a number > 0 A")
        shapes = list(shapes)
        if not shapes:
            raise ValueError("nothing to mill: no shapes")
        rate = sputter_rate(application_file)
        if self.world.vacuum != "pumped":
            raise BackendError(f"cannot mill: the chamber is {self.world.vacuum}")
        if not self.world.beams["ion"]["on"]:
            raise BackendError("cannot mill: the ion beam is off")
        hfw = float(self.world.beams["ion"]["hfw"] if hfw is None else hfw)
        bounds = np.array([s.bounds for s in shapes])
        box = (bounds[:, 0].min(), bounds[:, 1].min(), bounds[:, 2].max(), bounds[:, 3].max())

        def depth_at(u, v):
            out = np.zeros(np.broadcast(u, v).shape)
            for shape in shapes:
                np.maximum(out, shape.depth_at(u, v), out=out)
            return out

        self.motion.begin("milling")
        view = self.world.view("ion", self._checked_frame("ion", {"hfw": hfw}))
        cut = make_cut(self.world, view, depth_at, box, float(current), float(voltage), rate,
                       spot_size("ion", float(current), float(voltage)))
        beam_time = milling_charge(depth_at, box, rate) / float(current)
        done = [0]

        def before_pass(k):
            # what ends a milling on hardware, noticed at the start of the next pass: a stop,
            # the ion beam going off (a trip), the chamber venting
            self.motion.check("milling", f"milling (after pass {k} of {PASSES})")
            why = None
            if not self.world.beams["ion"]["on"]:
                trip = " (beam trip)" if "ion" in self.world.tripped else ""
                why = f"the ion beam went off{trip}"
            elif self.world.vacuum != "pumped":
                why = f"the chamber is {self.world.vacuum}"
            if why is not None:
                raise BackendError(f"milling failed at pass {k + 1} of {PASSES}: {why}; "
                                   f"{k} of {PASSES} passes were milled")

        def pass_done(fraction):
            self.clock.advance(beam_time / PASSES)  # the pass's beam time
            done[0] += 1
            if progress is not None:
                progress(fraction)

        try:
            mill_shapes(self.world, view, depth_at, box, float(current), rate,
                        passes=PASSES, progress=pass_done, before_pass=before_pass)
        except BaseException:
            if done[0]:  # the passes milled before the end stay cut
                self.cuts.append(replace(cut, depth=cut.depth * (done[0] / PASSES)))
            raise
        self.cuts.append(cut)
        return beam_time

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

    # ================================================================== contract
    def describe(self, key: str, beam: str | None = None) -> dict:
        """Units, limits or allowed values and read-only-ness of ``key`` (from the
        configuration and the simulator's tables)."""
        if beam is None:
            if key in STAGE_KEYS:
                ax = key[len("stage_"):]
                return describe_value("deg" if ax in ("r", "t") else "m",
                                      self.world.stage_limits[ax])
            if key in MANIPULATOR_KEYS:
                return describe_value("m", MANIPULATOR_LIMITS)
            if key == "vacuum_state":
                return describe_value(choices=["pumped", "vented"], read_only=True)
            if key == "pressure":
                return describe_value("Pa", read_only=True)
            if key in ("gis_position", "gis_gas"):
                return describe_value(choices=self.gis.available_values(key))
            if key == "sputter_current":
                return describe_value("A", SPUTTER_CURRENT_LIMITS)
            if key in _NEEDLE_KEYS:
                return describe_value(read_only=True)
            if key in BEAM_KEYS or key in DETECTOR_KEYS:
                raise ValueError(f"{key!r} is a beam setting: pass beam='electron' or 'ion'")
            raise ValueError(f"unknown chamber key {key!r}; expected one of "
                             f"{list(CHAMBER_KEYS + GIS_KEYS + _NEEDLE_KEYS + STAGE_KEYS)} "
                             f"or {list(MANIPULATOR_KEYS)}")
        beam = self._check_beam(beam)
        return describe_beam_key(key, beam, self.world.limits[beam], _MAX_RESOLUTION,
                                 lambda k: self.available_values(k, beam))

    def missing(self) -> dict[str, str]:
        """Subsystems this simulated microscope lacks (by configuration), with why."""
        out = {}
        if not self.needle.enabled:
            out["manipulator"] = "manipulator.enabled is false in the configuration"
            out["manipulator_stop"] = out["manipulator"]
        if not self.gis.enabled:
            out["gis"] = "gis.enabled is false in the configuration"
        if not self.gis.coater:
            out["sputter_coater"] = "gis.sputter_coater is false in the configuration"
        return out

    def stop(self, subsystem: str) -> None:
        """Stop the stage, the needle, the milling or a pump or vent (see the contract); with
        ``real_time_factor = 0`` moves take no wall time, so only a milling between passes
        can be caught."""
        if subsystem not in STOPPABLE:
            raise ValueError(f"cannot stop {subsystem!r}; stoppable: {list(STOPPABLE)}")
        if subsystem == "manipulator" and not self.needle.enabled:
            raise MissingSubsystemError("manipulator", self.missing()["manipulator"])
        self.motion.stop(subsystem)

    def state(self) -> dict:
        """Stage, both beams and both detectors in one read (see the contract)."""
        out = {"timestamp": self.clock.now(), "stage": dict(self.world.stage)}
        for beam in BEAMS:
            st = self.world.beams[beam]
            out[f"{beam}_beam"] = {k: (list(st[k]) if isinstance(st[k], list) else st[k])
                                   for k in STATE_BEAM_KEYS}
            out[f"{beam}_detector"] = {k: st[k] for k in DETECTOR_KEYS}
        return out

    def acquire_chamber_image(self) -> np.ndarray:
        """The chamber camera's view of the stage, needle and GIS nozzle
        (:mod:`fibsem_ophyd.sim.chamber_camera`); no clock time."""
        d = self.config.data
        tip = self.needle.tip() if self.needle.inserted else None
        pos = self.gis.state["gis_position"]
        nozzle = None if pos == "retracted" else self.gis.nozzle()
        return render_chamber(dict(self.world.stage), self.world.eucentric_z,
                              float(d["stage"]["shuttle_pre_tilt"]),
                              float(d["ion"]["column_tilt"]), tip, NEEDLE_AXIS, nozzle)

    # ================================================================== faults
    def inject_fault(self, kind: str, beam: str | None = None) -> None:
        """Inject a fault (see the module docstring for :data:`FAULTS` and their effects)."""
        if kind not in FAULTS:
            raise ValueError(f"unknown fault {kind!r}; expected one of {list(FAULTS)}")
        if kind == "beam_trip":
            beams = BEAMS if beam is None else (self._check_beam(beam),)
            for b in beams:
                self.world.beams[b]["on"] = False
                self.world.tripped.add(b)
        elif kind == "vacuum_loss":
            self.world.vacuum = "vented"
            self.world.pressure = ATMOSPHERE
            self.world.vacuum_lost = True
        else:
            self.world.pending.add(kind)

    def clear_faults(self) -> None:
        """Drop pending faults and undo the state changes of beam trips and vacuum loss."""
        self.world.pending.clear()
        for b in self.world.tripped:
            self.world.beams[b]["on"] = True
        self.world.tripped.clear()
        if self.world.vacuum_lost:
            self.world.vacuum = "pumped"
            self.world.pressure = HIGH_VACUUM
            self.world.vacuum_lost = False

    @property
    def active_faults(self) -> tuple[str, ...]:
        """Pending one-shot faults and standing ones (``beam_trip:<beam>``, ``vacuum_loss``)."""
        out = sorted(self.world.pending) + [f"beam_trip:{b}" for b in sorted(self.world.tripped)]
        if self.world.vacuum_lost:
            out.append("vacuum_loss")
        return tuple(out)

    # ================================================================== imaging
    def _frame_settings(self, beam: str, settings: Mapping | None) -> dict:
        """Validated per-frame settings merged over the beam state."""
        st = self.world.beams[beam]
        lim = self.world.limits[beam]
        s = dict(settings or {})
        validate.known_keys("the image settings", s, IMAGE_SETTING_KEYS, what="image setting")
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
            out[k] = validate.integer(k, v, minimum=1, rule="an integer in [1, 1024]")
            if out[k] > 1024:
                raise ValueError(f"{k} must be an integer in [1, 1024], got {v!r}")
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

    def _checked_frame(self, beam: Any, settings: Mapping | None = None) -> dict:
        """Validated beam and per-frame settings (what :class:`Truth` views are built from)."""
        return self._frame_settings(self._check_beam(beam), settings)

    def render_clean(self, beam: str, settings: Mapping | None = None) -> np.ndarray:
        """Noise-free yield image (float32, SE per primary) of the current pose and settings
        (``reduced_area`` crops); no clock time, no faults checked."""
        beam = self._check_beam(beam)
        return self.imaging.render_clean(beam, self._frame_settings(beam, settings))

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
        return self.imaging.acquire(beam, self._frame_settings(beam, settings))
