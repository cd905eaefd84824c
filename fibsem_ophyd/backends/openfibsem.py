"""The OpenFIBSEM bridge: any ``fibsem.microscope.FibsemMicroscope`` as a
:class:`fibsem_ophyd.backend.MicroscopeBackend`.

``connect(config_path)`` reads an OpenFIBSEM ``microscope-configuration.yaml``, builds the
microscope its ``info.manufacturer`` names (``Demo``, ``ThermoFisher``, ``Tescan``,
``Odemis``) and connects to it as OpenFIBSEM's ``setup_session`` does (ThermoFisher on port
7520, TESCAN on 8300, the Demo on 7520, Odemis through its own back end), without
OpenFIBSEM's logging and session directories. Every failure (``fibsem`` not installed, the
vendor SDK missing, a manufacturer the installed ``fibsem`` cannot drive, connection
refused) is an :class:`OpenFibsemError` raised before any device exists.

What the bridge maps, call by call, only through the generic ``FibsemMicroscope`` API (so the
Thermo, TESCAN and Odemis drivers take the same path as the Demo):

* beam and detector keys: ``get``/``set`` (scan rotation degrees <-> radians, shift and
  stigmation ``[x, y]`` <-> ``Point``, brightness/contrast <-> ``detector_*``); allowed
  currents, voltages and detectors: ``get_available_values``; stage limits:
  ``_get_axis_limits``;
* imaging: our image settings -> ``ImageSettings`` -> ``acquire_image``; the frame comes back
  with its OpenFIBSEM metadata (:attr:`OpenFibsemBackend.last_image`);
* state for a frame's metadata: ``get_microscope_state`` (one call) plus the beams' on and
  blanked flags;
* raw stage moves: ``move_stage_absolute`` (stable, vertical and flat-to-beam moves are
  computed by our geometry and sent as raw moves);
* manipulator: ``insert_manipulator``, ``retract_manipulator``,
  ``move_manipulator_absolute``, ``_get_saved_manipulator_position``;
* GIS: ``cryo_deposition_v2`` (OpenFIBSEM's protocol: insert, heat, open, close, retract);
  sputter coater: ``run_sputter_coater``; chamber: ``pump``, ``vent``; chamber camera:
  ``acquire_chamber_image``;
* milling: ``setup_milling``, our shapes -> ``draw_rectangle/line/circle/polygon/
  bitmap_pattern``, ``run_milling`` with progress from ``milling_progress_signal``,
  ``stop_milling``, ``clear_patterns``.

What it declares missing (:meth:`OpenFibsemBackend.missing`): subsystems the configuration
disables (``is_available``), stopping a stage or manipulator move (``FibsemMicroscope`` has no
such call; a vendor handle with a ``stop`` method is used when the driver exposes one), and on
the Demo its chamber camera (uniform noise) and sputter coater (a wait), which only pretend.
"""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import validate
from ..backend import (
    BEAM_KEYS,
    BEAM_UNITS,
    BEAMS,
    DETECTOR_KEYS,
    IMAGE_SETTING_KEYS,
    MANIPULATOR_AXES,
    MANIPULATOR_KEYS,
    MANIPULATOR_LIMITS,
    STAGE_AXES,
    STAGE_KEYS,
    STOPPABLE,
    BackendError,
    StoppedError,
    check_deposition_time,
    check_subsystem,
    describe_beam_key,
    describe_value,
)
from ..config import MicroscopeConfig, load_config

__all__ = ["OpenFibsemBackend", "OpenFibsemError", "connect", "SUPPORTED_MANUFACTURERS",
           "FIBSEM_VERSION"]

#: the OpenFIBSEM release the bridge is written and tested against
FIBSEM_VERSION = "0.5.3"
#: manufacturers the bridge drives (OpenFIBSEM's canonical spellings) and their ports
SUPPORTED_MANUFACTURERS = {"Demo": 7520, "ThermoFisher": 7520, "Tescan": 8300, "Odemis": None}
_BEAMS = BEAMS
#: our key -> OpenFIBSEM's, where they differ
_THEIR_KEY = {"brightness": "detector_brightness", "contrast": "detector_contrast"}
_RESOLUTIONS = [[384, 256], [768, 512], [1536, 1024], [3072, 2048], [6144, 4096]]
#: the GIS insert position the bridge offers for a single-port GIS (no multichem positions)
_GIS_INSERTED = "inserted"


class OpenFibsemError(RuntimeError):
    """The OpenFIBSEM bridge cannot start (package, SDK, manufacturer or connection)."""


def _fibsem():
    try:
        import fibsem  # noqa: F401
        import fibsem.microscope
        import fibsem.structures
        import fibsem.utils
    except ImportError as exc:
        raise OpenFibsemError(
            f"the OpenFIBSEM bridge needs the 'fibsem' package ({exc}); install it with "
            f"pip install 'fibsem-ophyd[openfibsem]' (fibsem=={FIBSEM_VERSION})") from exc
    return fibsem


def connect(config: str | Path, ip_address: str | None = None,
            manufacturer: str | None = None) -> OpenFibsemBackend:
    """Connect to the microscope an OpenFIBSEM configuration describes.

    Parameters
    ----------
    config : str or Path
        An OpenFIBSEM ``microscope-configuration.yaml``.
    ip_address, manufacturer : str, optional
        Override the configuration's ``info.ip_address`` / ``info.manufacturer``.

    Raises
    ------
    OpenFibsemError
        ``fibsem`` not installed, configuration unreadable, a manufacturer this ``fibsem``
        cannot drive, the vendor SDK missing, or the connection refused.
    """
    fibsem = _fibsem()
    from fibsem import manufacturers
    from fibsem.utils import load_microscope_configuration

    path = Path(config).expanduser()
    if not path.is_file():
        raise OpenFibsemError(f"OpenFIBSEM configuration {path} does not exist")
    try:
        settings = load_microscope_configuration(str(path))
    except Exception as exc:  # noqa: BLE001 -- their loader raises many kinds
        raise OpenFibsemError(f"cannot load OpenFIBSEM configuration {path}: {exc}") from exc
    info = settings.system.info
    if manufacturer:
        info.manufacturer = manufacturers.normalize_manufacturer(manufacturer)
    if ip_address:
        info.ip_address = ip_address
    name = info.manufacturer
    if name not in SUPPORTED_MANUFACTURERS:
        raise OpenFibsemError(
            f"manufacturer {name!r} (info.manufacturer in {path}) cannot be driven by fibsem "
            f"{getattr(fibsem, '__version__', '?')}; supported: {list(SUPPORTED_MANUFACTURERS)}")
    port = SUPPORTED_MANUFACTURERS[name]
    if name == "ThermoFisher":
        import fibsem.microscope as fm

        if not fm.THERMO_API_AVAILABLE:
            raise OpenFibsemError("manufacturer ThermoFisher needs the AutoScript SDK "
                                  "(autoscript_sdb_microscope_client), which is not installed")
        cls = fm.ThermoMicroscope
    elif name == "Tescan":
        try:
            from fibsem.microscopes import tescan
        except ImportError as exc:
            raise OpenFibsemError(f"manufacturer Tescan: cannot import fibsem's TESCAN "
                                  f"driver: {exc}") from exc
        if not tescan.TESCAN_API_AVAILABLE:
            raise OpenFibsemError("manufacturer Tescan needs the TESCAN Automation SDK "
                                  "(tescanautomation), which is not installed")
        cls = tescan.TescanMicroscope
    elif name == "Odemis":
        try:
            from fibsem.microscopes.odemis_microscope import OdemisThermoMicroscope as cls
        except ImportError as exc:
            raise OpenFibsemError(f"manufacturer Odemis needs the odemis package: {exc}") \
                from exc
    else:
        from fibsem.microscopes.simulator import DemoMicroscope as cls
    try:
        scope = cls(settings.system)
        if port is not None:
            scope.connect_to_microscope(ip_address=info.ip_address, port=port)
    except Exception as exc:  # noqa: BLE001 -- SDKs raise their own connection errors
        where = f"{info.ip_address}:{port}" if port else "its back end"
        raise OpenFibsemError(f"cannot connect to the {name} microscope at {where}: "
                              f"{exc}") from exc
    if getattr(scope, "stage_is_compustage", False):
        # its stage frame flips (t - 180 deg, negated dy) are not in our geometry yet
        raise OpenFibsemError(f"{path}: a compustage (sim.is_compustage or an Arctis stage) is "
                              "not supported by the bridge; use a non-compustage configuration")
    return OpenFibsemBackend(scope, config=path)


def _plain(value):
    """Their values -> ours: Points -> [x, y], tuples -> lists, numpy -> python."""
    if hasattr(value, "x") and hasattr(value, "y") and not isinstance(value, Mapping):
        return [float(value.x), float(value.y)]
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, np.generic):
        return value.item()
    return value


class OpenFibsemBackend:
    """A :class:`~fibsem_ophyd.backend.MicroscopeBackend` over an OpenFIBSEM microscope.

    Parameters
    ----------
    microscope : fibsem.microscope.FibsemMicroscope
        A connected OpenFIBSEM microscope (any manufacturer).
    config : str, Path or mapping, optional
        Our configuration source (an OpenFIBSEM configuration file works: same layout); the
        live microscope's geometry (column tilts, eucentric heights, pre-tilt, rotation
        references) and stage limits override it.

    Attributes
    ----------
    microscope : FibsemMicroscope
        The OpenFIBSEM microscope driven.
    last_image : fibsem.structures.FibsemImage or None
        The last frame as OpenFIBSEM returned it, with its metadata.
    calls : int
        Calls made into the OpenFIBSEM microscope (to count round trips per frame).
    """

    def __init__(self, microscope, config: Any = None):
        _fibsem()
        from fibsem.structures import BeamType

        self.microscope = microscope
        self._BeamType = BeamType
        self.last_image = None
        self.calls = 0
        self._lock = threading.RLock()
        self._gis = {"gis_position": "retracted", "gis_gas": None}
        self._milling_stop = threading.Event()
        self.config = self._make_config(config)
        gases = self.available_values("gis_gas")
        self._gis["gis_gas"] = gases[0] if gases else None

    # ------------------------------------------------------------------ helpers
    def _call(self, name: str, *args, **kwargs):
        """One call into the OpenFIBSEM microscope (counted)."""
        self.calls += 1
        return getattr(self.microscope, name)(*args, **kwargs)

    def _beam_type(self, beam):
        if beam not in _BEAMS:
            raise ValueError(f"unknown beam {beam!r}; expected one of {list(_BEAMS)}")
        return self._BeamType.ELECTRON if beam == "electron" else self._BeamType.ION

    @property
    def manufacturer(self) -> str:
        """OpenFIBSEM's canonical manufacturer name (``Demo``, ``ThermoFisher``...)."""
        return str(self.microscope.system.info.manufacturer)

    def _make_config(self, source) -> MicroscopeConfig:
        scope = self.microscope
        system = scope.system
        data = copy.deepcopy(load_config(source).data)
        info = system.info
        data["info"] = {**data.get("info", {}), "name": str(info.name or "openfibsem"),
                        "manufacturer": self.manufacturer,
                        "ip_address": str(info.ip_address), "model": str(info.model)}
        data["stage"]["shuttle_pre_tilt"] = float(system.stage.shuttle_pre_tilt)
        data["stage"]["rotation_reference"] = float(system.stage.rotation_reference)
        data["stage"]["rotation_180"] = float(system.stage.rotation_180)
        for beam, settings in (("electron", system.electron), ("ion", system.ion)):
            data[beam]["column_tilt"] = float(settings.column_tilt)
            data[beam]["eucentric_height"] = float(settings.eucentric_height)
        limits = self._stage_limits()
        pos = self.get_stage_position()
        data["stage"]["limits"] = {ax: list(limits[ax]) for ax in STAGE_AXES}
        data["stage"]["initial_position"] = {
            ax: min(max(pos[ax], limits[ax][0]), limits[ax][1]) for ax in STAGE_AXES}
        # the sections the devices start from: what the microscope says now
        for beam in _BEAMS:
            for key in ("voltage", "current", "hfw", "dwell_time"):
                value = float(self.get(key, beam))
                lo, hi = data[beam]["limits"][key]
                data[beam]["limits"][key] = [min(lo, value), max(hi, value)]
                data[beam][key] = value
            data[beam]["resolution"] = [int(v) for v in self.get("resolution", beam)]
        data["manipulator"] = {**data.get("manipulator", {}),
                               "enabled": bool(scope.is_available("manipulator"))}
        data["gis"] = {**data.get("gis", {}), "enabled": bool(scope.is_available("gis")),
                       "sputter_coater": "sputter_coater" not in self.missing()}
        return MicroscopeConfig(data)

    def _stage_limits(self) -> dict[str, tuple[float, float]]:
        lim = self._call("_get_axis_limits")
        return {ax: (float(lim[ax].min), float(lim[ax].max)) for ax in STAGE_AXES}

    def _vendor_stop(self, subsystem: str):
        """The driver's own stop call for a stage or needle move, if it exposes one."""
        handle = getattr(self.microscope, subsystem, None)
        if subsystem == "stage" and handle is not None and not callable(handle):
            stop = getattr(handle, "stop", None)
            return stop if callable(stop) else None
        return None

    # ------------------------------------------------------------------ contract: what it is
    def missing(self) -> dict[str, str]:
        """What this microscope lacks through OpenFIBSEM (see the module docstring)."""
        scope = self.microscope
        out = {}
        for sub, flag in (("electron_beam", "electron_beam"), ("ion_beam", "ion_beam"),
                          ("stage", "stage"), ("manipulator", "manipulator"), ("gis", "gis")):
            if not scope.is_available(flag):
                out[sub] = f"disabled in the OpenFIBSEM configuration ({flag})"
        demo = self.manufacturer == "Demo"
        if demo:
            out["sputter_coater"] = ("OpenFIBSEM's Demo microscope only waits in "
                                     "run_sputter_coater: no coating to drive")
            out["chamber_camera"] = ("OpenFIBSEM's Demo microscope returns uniform noise for "
                                     "acquire_chamber_image")
        elif not scope.is_available("gis_sputter_coater"):
            out["sputter_coater"] = "disabled in the OpenFIBSEM configuration (sputter_coater)"
        if "ion_beam" in out:
            out["milling"] = "no ion beam"
        if self._vendor_stop("stage") is None:
            out["stage_stop"] = (f"fibsem {FIBSEM_VERSION} has no call to stop a stage move and "
                                 f"the {self.manufacturer} driver exposes no stage handle with "
                                 "one")
        out["manipulator_stop"] = f"fibsem {FIBSEM_VERSION} has no call to stop a manipulator move"
        out["manipulator_contact"] = f"fibsem {FIBSEM_VERSION} has no touch sensing"
        out["chamber_stop"] = f"fibsem {FIBSEM_VERSION} has no call to stop a pump or vent"
        if "manipulator" in out:
            out["manipulator_stop"] = out["manipulator_contact"] = out["manipulator"]
        return out

    def describe(self, key: str, beam: str | None = None) -> dict:
        """Units, limits or allowed values and read-only-ness of ``key``, from what the
        vendor reports (currents, voltages, detectors, stage limits) and the configuration
        where the generic OpenFIBSEM API reports nothing (field width, working distance,
        dwell, shift, stigmation limits)."""
        if beam is None:
            if key in STAGE_KEYS:
                ax = key[len("stage_"):]
                return describe_value("deg" if ax in ("r", "t") else "m",
                                      self._stage_limits()[ax])
            if key in MANIPULATOR_KEYS:
                return describe_value("m", MANIPULATOR_LIMITS)
            if key == "vacuum_state":
                return describe_value(choices=["pumped", "vented"], read_only=True)
            if key == "pressure":
                return describe_value("Pa", read_only=True)
            if key in ("gis_position", "gis_gas"):
                return describe_value(choices=self.available_values(key))
            if key == "sputter_current":
                return describe_value("A", read_only=True)
            if key in ("manipulator_inserted", "manipulator_contact"):
                return describe_value(read_only=True)
            raise ValueError(f"unknown chamber key {key!r}")
        self._beam_type(beam)
        lim = self.config.beam_limits(beam)
        if key in ("on", "blanked"):
            return describe_value()
        if key in ("current", "voltage"):
            values = self.available_values(key, beam)
            limits = (min(values), max(values)) if values else lim[key]
            return describe_value(BEAM_UNITS[key], limits, values or None)
        return describe_beam_key(key, beam, lim, 6144,
                                 lambda k: self.available_values(k, beam))

    def available_values(self, key: str, beam: str | None = None) -> list:
        """Allowed values of an enumerated setting, as the vendor lists them."""
        if beam is None:
            if key == "vacuum_state":
                return ["pumped", "vented"]
            if key == "gis_position":
                return ["retracted", _GIS_INSERTED]
            if key == "gis_gas":
                ports = self._call("get_available_values", "gis_ports") or []
                return [str(p) for p in ports]
            raise ValueError(f"no enumerated chamber key {key!r}")
        bt = self._beam_type(beam)
        if key == "resolution":
            return [list(r) for r in _RESOLUTIONS]
        values = self._call("get_available_values", key, bt) or []
        if key in ("current", "voltage"):
            return sorted(float(v) for v in values)
        return [str(v) for v in values]

    # ------------------------------------------------------------------ get / set
    def get(self, key: str, beam: str | None = None) -> Any:
        """Read one setting (units as in :mod:`fibsem_ophyd.backend`)."""
        if beam is None:
            if key == "vacuum_state":
                return str(self._call("get", "chamber_state")).lower()
            if key == "pressure":
                return float(self._call("get", "chamber_pressure"))
            if key in ("gis_position", "gis_gas"):
                check_subsystem(self, "gis")
                return self._gis[key]
            if key == "sputter_current":
                check_subsystem(self, "sputter_coater")
                raise BackendError(f"fibsem {FIBSEM_VERSION} cannot read the sputter current")
            if key == "manipulator_inserted":
                check_subsystem(self, "manipulator")
                return bool(self._call("get", "manipulator_state"))
            if key == "manipulator_contact":
                check_subsystem(self, "manipulator_contact")
            raise ValueError(f"unknown chamber key {key!r}")
        bt = self._beam_type(beam)
        if key not in BEAM_KEYS and key not in DETECTOR_KEYS:
            raise ValueError(f"unknown {beam} key {key!r}; expected one of "
                             f"{list(BEAM_KEYS) + list(DETECTOR_KEYS)}")
        value = self._call("get", _THEIR_KEY.get(key, key), bt)
        if key == "scan_rotation":
            return math.degrees(float(value))
        if key == "resolution":
            return [int(v) for v in value]
        if key in ("on", "blanked"):
            return bool(value)
        value = _plain(value)
        return float(value) if isinstance(value, (int, float)) and key not in \
            ("detector_type", "detector_mode") else value

    def _check(self, key: str, value: Any, beam: str | None) -> Any:
        """Validate ``value`` against :meth:`describe` (ValueError naming the limit)."""
        d = self.describe(key, beam)
        name = f"{beam}.{key}" if beam else key
        if d["read_only"]:
            raise ValueError(f"{name} is read-only")
        if key in ("on", "blanked"):
            if not isinstance(value, (bool, np.bool_)):
                raise ValueError(f"{name} must be True or False, got {value!r}")
            return bool(value)
        if d["choices"] is not None and not isinstance(d["choices"][0], (int, float)):
            if value not in d["choices"]:
                raise ValueError(f"{name} = {value!r} is not one of {d['choices']}")
            return value
        pair = key in ("shift", "stigmation", "resolution")
        if pair:
            if isinstance(value, (str, bytes)) or not hasattr(value, "__len__") \
                    or len(value) != 2:
                raise ValueError(f"{name} must be a pair of numbers, got {value!r}")
            values = list(value)
        else:
            values = [value]
        out = []
        for v in values:
            out.append(validate.in_range(name, v, d["limits"], units=d["units"],
                                         limits_name="the limit", exact=True))
        if key in ("current", "voltage") and d["choices"]:
            # the vendor switches to the nearest aperture / high tension it has
            out = [min(d["choices"], key=lambda c: abs(c - out[0]))]
        if key == "resolution":
            return [int(v) for v in out]
        return out if pair else out[0]

    def set(self, key: str, value: Any, beam: str | None = None) -> None:
        """Write one setting; ``ValueError`` (naming the limit) before anything is sent."""
        if beam is None:
            if key == "vacuum_state":
                if value not in ("pumped", "vented"):
                    raise ValueError(f"vacuum_state must be 'pumped' or 'vented', got {value!r}")
                return self.pump() if value == "pumped" else self.vent()
            if key in ("gis_position", "gis_gas"):
                check_subsystem(self, "gis")
                self._gis[key] = self._check(key, value, None)
                return
            if key == "sputter_current":
                check_subsystem(self, "sputter_coater")
            self._check(key, value, None)  # read-only or unknown: raises
            return
        bt = self._beam_type(beam)
        value = self._check(key, value, beam)
        if key == "scan_rotation":
            value = math.radians(value)
        elif key in ("shift", "stigmation"):
            from fibsem.structures import Point

            value = Point(float(value[0]), float(value[1]))
        elif key == "resolution":
            value = (int(value[0]), int(value[1]))
        self._call("set", _THEIR_KEY.get(key, key), value, bt)

    # ------------------------------------------------------------------ state, time
    def state(self) -> dict:
        """One ``get_microscope_state`` plus the beams' on/blanked flags."""
        ms = self._call("get_microscope_state")
        pos = ms.stage_position
        out = {"timestamp": self.time(),
               "stage": {"x": float(pos.x), "y": float(pos.y), "z": float(pos.z),
                         "r": math.degrees(float(pos.r)), "t": math.degrees(float(pos.t))}}
        for beam, bs, ds in (("electron", ms.electron_beam, ms.electron_detector),
                             ("ion", ms.ion_beam, ms.ion_detector)):
            bt = self._beam_type(beam)
            out[f"{beam}_beam"] = {
                "on": bool(self._call("get", "on", bt)),
                "blanked": bool(self._call("get", "blanked", bt)),
                "voltage": float(bs.voltage), "current": float(bs.beam_current),
                "hfw": float(bs.hfw), "working_distance": float(bs.working_distance),
                "dwell_time": float(bs.dwell_time),
                "resolution": [int(v) for v in bs.resolution],
                "scan_rotation": math.degrees(float(bs.scan_rotation or 0.0)),
                "shift": _plain(bs.shift), "stigmation": _plain(bs.stigmation),
            }
            out[f"{beam}_detector"] = {"detector_type": ds.type, "detector_mode": ds.mode,
                                       "brightness": float(ds.brightness),
                                       "contrast": float(ds.contrast)}
        return out

    def time(self) -> float:
        """Wall-clock time of this computer, s (the vendors expose no microscope clock)."""
        return time.time()

    # ------------------------------------------------------------------ imaging
    def _image_settings(self, beam: str, settings: Mapping | None):
        from fibsem.structures import FibsemRectangle, ImageSettings

        s = dict(settings or {})
        unknown = set(s) - set(IMAGE_SETTING_KEYS)
        if unknown:
            raise ValueError(f"unknown image setting(s) {sorted(unknown)}; expected a subset of "
                             f"{list(IMAGE_SETTING_KEYS)}")
        res = self._check("resolution", s["resolution"], beam) if s.get("resolution") \
            is not None else self.get("resolution", beam)
        dwell = self._check("dwell_time", s["dwell_time"], beam) if s.get("dwell_time") \
            is not None else self.get("dwell_time", beam)
        hfw = self._check("hfw", s["hfw"], beam) if s.get("hfw") is not None \
            else self.get("hfw", beam)
        area = s.get("reduced_area")
        rect = None
        if area is not None:
            if isinstance(area, Mapping):
                area = [area[k] for k in ("left", "top", "width", "height")]
            left, top, width, height = (float(v) for v in area)
            if not (0 <= left and 0 <= top and 0 < width and 0 < height
                    and left + width <= 1 + 1e-9 and top + height <= 1 + 1e-9):
                raise ValueError(f"reduced_area {list(area)!r} must lie inside the frame (0..1)")
            rect = FibsemRectangle(left, top, width, height)
        integ = {}
        for k in ("line_integration", "frame_integration"):
            v = s.get(k)
            if v is not None and v != 1:
                n = validate.integer(k, v, minimum=1, rule="an integer in [1, 255]")
                if n > 255:
                    raise ValueError(f"{k} must be an integer in [1, 255], got {v!r}")
                integ[k] = n
        return ImageSettings(resolution=(int(res[0]), int(res[1])), dwell_time=float(dwell),
                             hfw=float(hfw), autocontrast=bool(s.get("autocontrast") or False),
                             beam_type=self._beam_type(beam), save=False, reduced_area=rect,
                             **integ)

    def acquire_image(self, beam: str, settings: Mapping | None = None) -> np.ndarray:
        """One frame through OpenFIBSEM's ``acquire_image``; resolution, dwell and field
        width persist on the beam afterwards (set first, as the Thermo driver does)."""
        image_settings = self._image_settings(beam, settings)
        if self.get("vacuum_state") != "pumped":
            raise BackendError(f"cannot image with the {beam} beam: the chamber is vented")
        with self._lock:
            self._call("set_imaging_settings", image_settings)
            image = self._call("acquire_image", image_settings=image_settings)
        self.last_image = image
        data = np.asarray(image.data)
        if data.ndim != 2:
            raise BackendError(f"OpenFIBSEM returned a {data.ndim}-D {beam} frame")
        return data

    def acquire_chamber_image(self) -> np.ndarray:
        """A frame of the chamber camera (``acquire_chamber_image``)."""
        check_subsystem(self, "chamber_camera")
        return np.asarray(self._call("acquire_chamber_image").data)

    # ------------------------------------------------------------------ stage
    def get_stage_position(self) -> dict[str, float]:
        """Raw stage position: x, y, z m; r, t deg."""
        pos = self._call("get_stage_position")
        return {"x": float(pos.x), "y": float(pos.y), "z": float(pos.z),
                "r": math.degrees(float(pos.r)), "t": math.degrees(float(pos.t))}

    def move_stage_absolute(self, position: Mapping[str, float]) -> None:
        """A raw absolute move of the given axes (others stay); all checked first."""
        from fibsem.structures import FibsemStagePosition

        check_subsystem(self, "stage")
        if not isinstance(position, Mapping):
            raise ValueError(f"stage position must be a mapping of axes, got {position!r}")
        limits = self._stage_limits()
        target = {}
        validate.known_keys("the stage position", position, STAGE_AXES, what="stage axis")
        for ax, v in position.items():
            unit = "deg" if ax in ("r", "t") else "m"
            fv = validate.in_range(f"stage.{ax}", v, limits[ax], units=unit,
                                   limits_name="the limit", exact=True)
            target[ax] = math.radians(fv) if ax in ("r", "t") else fv
        self._call("move_stage_absolute", FibsemStagePosition(
            **{ax: target.get(ax) for ax in STAGE_AXES}, coordinate_system="RAW"))

    # ------------------------------------------------------------------ manipulator
    def _saved(self, name: str):
        return self._call("_get_saved_manipulator_position", name)

    def manipulator_positions(self) -> dict[str, dict[str, float]]:
        """The saved positions PARK and EUCENTRIC (as the driver reports them), m."""
        check_subsystem(self, "manipulator")
        out = {}
        for name in ("PARK", "EUCENTRIC"):
            p = self._saved(name)
            out[name] = {"x": float(p.x), "y": float(p.y), "z": float(p.z)}
        return out

    def get_manipulator_position(self) -> dict[str, float]:
        check_subsystem(self, "manipulator")
        p = self._call("get_manipulator_position")
        return {"x": float(p.x), "y": float(p.y), "z": float(p.z)}

    def insert_manipulator(self, name: str = "PARK") -> None:
        """``insert_manipulator(name)``; if the driver leaves the tip elsewhere (the Demo
        always inserts to 180 um), an absolute move then takes it to the saved position."""
        positions = self.manipulator_positions()
        if name not in positions:
            raise ValueError(f"unknown manipulator position {name!r}; saved positions: "
                             f"{sorted(positions)}")
        self._call("insert_manipulator", name)
        if self.get_manipulator_position() != positions[name]:
            self._move_needle(positions[name])

    def retract_manipulator(self) -> None:
        check_subsystem(self, "manipulator")
        self._call("retract_manipulator")

    def _move_needle(self, target: Mapping[str, float]) -> None:
        from fibsem.structures import FibsemManipulatorPosition

        self._call("move_manipulator_absolute", FibsemManipulatorPosition(
            x=target["x"], y=target["y"], z=target["z"], r=0.0, t=0.0,
            coordinate_system="RAW"))

    def move_manipulator_absolute(self, position: Mapping[str, float]) -> None:
        check_subsystem(self, "manipulator")
        if not self.get("manipulator_inserted"):
            raise BackendError("the manipulator is retracted: insert it first")
        target = self.get_manipulator_position()
        validate.known_keys("the manipulator position", position, MANIPULATOR_AXES,
                            what="manipulator axis")
        for ax, v in position.items():
            target[ax] = validate.in_range(f"manipulator.{ax}", v, MANIPULATOR_LIMITS, units="m",
                                           limits_name="the limit", exact=True)
        self._move_needle(target)

    # ------------------------------------------------------------------ chamber, GIS
    def pump(self) -> None:
        self._call("pump")

    def vent(self) -> None:
        self._call("vent")

    def gis_deposit(self, duration: float) -> float:
        """OpenFIBSEM's ``cryo_deposition_v2`` with the selected gas (port) for ``duration``
        s; it inserts the needle, heats, opens, closes and retracts it again."""
        from fibsem.structures import FibsemGasInjectionSettings

        duration = check_deposition_time("GIS valve time", duration)
        check_subsystem(self, "gis")
        if self._gis["gis_position"] == "retracted":
            raise BackendError("cannot open the GIS valve: the needle is retracted; set "
                               f"gis_position to {_GIS_INSERTED!r} first")
        if self.get("vacuum_state") != "pumped":
            raise BackendError("cannot deposit: the chamber is vented")
        gas = self._gis["gis_gas"]
        self._call("cryo_deposition_v2", FibsemGasInjectionSettings(
            port=gas, gas=gas, duration=duration, insert_position=None))
        return duration

    def sputter_coat(self, duration: float) -> float:
        """``run_sputter_coater(duration)``."""
        duration = check_deposition_time("sputter time", duration)
        check_subsystem(self, "sputter_coater")
        self._call("run_sputter_coater", duration)
        return duration

    # ------------------------------------------------------------------ milling
    def _draw(self, shape) -> None:
        from fibsem.structures import (
            CrossSectionPattern,
            FibsemBitmapSettings,
            FibsemCircleSettings,
            FibsemLineSettings,
            FibsemPolygonSettings,
            FibsemRectangleSettings,
        )

        kind = type(shape).__name__
        if kind == "Rectangle":
            self._call("draw_rectangle", FibsemRectangleSettings(
                width=shape.width, height=shape.height, depth=shape.depth,
                centre_x=shape.centre_x, centre_y=shape.centre_y,
                rotation=math.radians(shape.rotation),
                cleaning_cross_section=shape.cross_section == "CleaningCrossSection",
                scan_direction=shape.scan_direction,
                cross_section=CrossSectionPattern[shape.cross_section], passes=shape.passes))
        elif kind == "Line":
            self._call("draw_line", FibsemLineSettings(
                start_x=shape.start_x, end_x=shape.end_x, start_y=shape.start_y,
                end_y=shape.end_y, depth=shape.depth))
        elif kind == "Circle":
            self._call("draw_circle", FibsemCircleSettings(
                radius=shape.radius, depth=shape.depth, centre_x=shape.centre_x,
                centre_y=shape.centre_y, thickness=shape.thickness))
        elif kind == "Polygon":
            self._call("draw_polygon", FibsemPolygonSettings(
                vertices=np.asarray(shape.vertices, dtype=float), depth=shape.depth))
        elif kind == "Bitmap":
            grey = np.asarray(shape.array, dtype=float)
            points = np.empty((*grey.shape, 2), dtype=object)
            points[:, :, 0] = grey            # dwell multiplier, 0..1
            points[:, :, 1] = (grey == 0).astype(int)  # 1 blanks the point
            self._call("draw_bitmap_pattern", FibsemBitmapSettings(
                width=shape.width, height=shape.height, depth=shape.depth,
                centre_x=shape.centre_x, centre_y=shape.centre_y,
                rotation=math.radians(shape.rotation), scan_direction=shape.scan_direction,
                passes=shape.passes, array=points))
        else:
            raise ValueError(f"the OpenFIBSEM bridge cannot draw a {kind} shape")

    def mill(self, shapes, current: float, voltage: float = 30e3, hfw: float | None = None,
             application_file: str = "Si", progress=None) -> float:
        """Set up, draw and run the milling (``run_milling``, blocking); ``progress`` gets
        the fraction from OpenFIBSEM's progress signal (an exception there stops the
        milling). Returns the milling time the microscope counted, s."""
        from fibsem.structures import FibsemMillingSettings, MillingState

        check_subsystem(self, "milling")
        shapes = list(shapes)
        if not shapes:
            raise ValueError("nothing to mill: no shapes")
        for shape in shapes:
            if type(shape).__name__ not in ("Rectangle", "Line", "Circle", "Polygon", "Bitmap"):
                raise ValueError(f"the OpenFIBSEM bridge cannot draw a "
                                 f"{type(shape).__name__} shape")
        current = self._check("current", current, "ion")
        voltage = self._check("voltage", voltage, "ion")
        hfw = self._check("hfw", hfw, "ion") if hfw is not None else self.get("hfw", "ion")
        apps = self._call("get_available_values", "application_file") or []
        if apps and application_file not in apps:
            raise ValueError(f"application file {application_file!r} is not one of {apps}")
        if self.get("vacuum_state") != "pumped":
            raise BackendError("cannot mill: the chamber is vented")
        if not self.get("on", "ion"):
            raise BackendError("cannot mill: the ion beam is off")
        scope = self.microscope
        self._milling_stop.clear()
        self._call("setup_milling", FibsemMillingSettings(
            milling_current=current, milling_voltage=voltage, hfw=hfw,
            application_file=application_file))
        try:
            for shape in shapes:
                self._draw(shape)
            estimate = float(self._call("estimate_milling_time"))
            report = {"done": 0.0, "error": None}

            def on_progress(msg):
                info = msg.get("progress", {}) if isinstance(msg, Mapping) else {}
                est = float(info.get("estimated_time") or estimate or 0.0)
                remaining = float(info.get("remaining_time", est))
                report["done"] = max(est - remaining, 0.0)
                if report["error"] is not None:
                    return
                try:
                    if progress is not None and est > 0:
                        progress(min(report["done"] / est, 1.0))
                except Exception as exc:  # noqa: BLE001 -- the caller's abort
                    report["error"] = exc
                    scope.stop_milling()

            scope.milling_progress_signal.connect(on_progress)
            try:
                self._call("run_milling", current, voltage, asynch=False)
            finally:
                scope.milling_progress_signal.disconnect(on_progress)
        finally:
            self._call("clear_patterns")
        if report["error"] is not None:
            raise report["error"]
        if self._milling_stop.is_set():
            self._milling_stop.clear()
            raise StoppedError(f"milling stopped after {report['done']:.1f} s of "
                               f"{estimate:.1f} s (state "
                               f"{self._call('get_milling_state').name})")
        if self._call("get_milling_state") is not MillingState.IDLE:
            raise BackendError("milling did not end idle")
        return report["done"] if report["done"] > 0 else estimate

    # ------------------------------------------------------------------ stop
    def stop(self, subsystem: str) -> None:
        """Milling: ``stop_milling`` (the running ``mill`` raises ``StoppedError``). Stage:
        the driver's stage ``stop`` if it exposes one. Manipulator: none in fibsem."""
        if subsystem not in STOPPABLE:
            raise ValueError(f"cannot stop {subsystem!r}; stoppable: {list(STOPPABLE)}")
        if subsystem == "milling":
            check_subsystem(self, "milling")
            self._milling_stop.set()
            self._call("stop_milling")
            return
        check_subsystem(self, f"{subsystem}_stop")
        self._vendor_stop(subsystem)()
