"""The one image-metadata vocabulary of fibsem-ophyd, in OpenFIBSEM's JSON layout.

Every TIFF written by the detectors carries, in its ImageDescription, the dictionary built
by :func:`image_metadata`. Its layout is OpenFIBSEM's ``FibsemImageMetadata.to_dict``
(metadata version ``"v8"``), so ``fibsem.structures.FibsemImage.load`` opens our files::

    {
      "image":             ImageSettings.to_dict()      <- image_settings()
      "version":           "v8"
      "pixel_size":        {"x": m, "y": m}
      "microscope_state":  MicroscopeState.to_dict()    <- microscope_state()
      "user":              FibsemUser.to_dict()
      "experiment":        FibsemExperimentRef.to_dict()
      "system_info":       SystemInfo.to_dict()         <- system_info()["system_info"]
      "hardware_geometry": FibsemHardwareGeometry.to_dict()  <- system_info()[...]
    }

Units
-----
Inputs use the units of :mod:`fibsem_ophyd.backend` (what users type): metres, seconds,
amperes, volts and **degrees** for stage rotation/tilt and scan rotation. OpenFIBSEM
stores stage ``r``/``t`` and beam ``scan_rotation`` in **radians**; the conversion happens
here, once, in the builders, and back in the ``get_*`` readers. Hardware geometry (column
tilts, pre-tilt, rotation references) is stored in degrees, as OpenFIBSEM does.
"""

from __future__ import annotations

import math
import time as _time
from collections.abc import Mapping, Sequence
from typing import Any

from .. import backend as _backend
from ..backend import STAGE_AXES, STATE_SECTIONS

__all__ = [
    "METADATA_VERSION",
    "BEAMS",
    "microscope_state",
    "read_state",
    "state_metadata",
    "image_settings",
    "image_metadata",
    "system_info",
    "get_stage_position",
    "get_pixel_size",
    "get_beam",
    "get_hfw",
    "get_resolution",
    "get_timestamp",
    "get_image_settings",
    "get_beam_settings",
    "get_detector_settings",
    "get_hardware_geometry",
]

#: OpenFIBSEM metadata version whose layout :func:`image_metadata` writes
METADATA_VERSION = "v8"
#: our beam names, and OpenFIBSEM's ``BeamType`` member names for them
BEAMS = {beam: beam.upper() for beam in _backend.BEAMS}
_BEAM_FROM_TYPE = {v: k for k, v in BEAMS.items()}

_STAGE_AXES = STAGE_AXES
_INFO_KEYS = (
    "name", "ip_address", "manufacturer", "model", "serial_number",
    "hardware_version", "software_version",
)
_USER_KEYS = ("name", "email", "organization", "hostname")
_EXPERIMENT_KEYS = ("id", "name", "date", "item_id", "item_name", "task_id", "task_name")
_RECT_KEYS = ("left", "top", "width", "height")


# --------------------------------------------------------------------------- helpers
def _float(value: Any) -> float | None:
    """``None`` stays ``None``; anything numeric becomes a plain Python float."""
    return None if value is None else float(value)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _radians(deg: Any) -> float | None:
    return None if deg is None else math.radians(float(deg))


def _degrees(rad: Any) -> float | None:
    return None if rad is None else math.degrees(float(rad))


def _point(value: Any) -> dict | None:
    """``[x, y]`` or ``{"x", "y"}`` -> OpenFIBSEM ``Point.to_dict`` (``{"x", "y"}``)."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return {"x": float(value["x"]), "y": float(value["y"])}
    x, y = value
    return {"x": float(x), "y": float(y)}


def _beam_name(beam: str) -> str:
    """Normalise ``"electron"``/``"ELECTRON"``/``"Ion"``... to ``"electron"``/``"ion"``."""
    key = str(beam).lower()
    if key not in BEAMS:
        raise ValueError(f"beam must be 'electron' or 'ion', got {beam!r}")
    return key


def _reduced_area(value: Any) -> dict | None:
    """Normalised ``{left, top, width, height}`` (fractions 0..1 of the full frame)."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        rect = {k: float(value[k]) for k in _RECT_KEYS}
    elif isinstance(value, Sequence) and len(value) == 4:
        rect = dict(zip(_RECT_KEYS, (float(v) for v in value), strict=True))
    else:
        raise ValueError(
            f"reduced_area must be None, a {{left, top, width, height}} mapping or a "
            f"4-sequence of fractions, got {value!r}"
        )
    left, top, width, height = (rect[k] for k in _RECT_KEYS)
    if not (
        0 <= left and 0 <= top and 0 < width and 0 < height
        and left + width <= 1 + 1e-12 and top + height <= 1 + 1e-12
    ):
        raise ValueError(f"reduced_area must lie inside the unit square, got {rect}")
    return rect


# --------------------------------------------------------------------------- builders
def _stage_position(stage: Mapping) -> dict:
    """Stage mapping (m, deg) -> ``FibsemStagePosition.to_dict`` (m, rad)."""
    return {
        "name": stage.get("name"),
        "x": _float(stage.get("x")),
        "y": _float(stage.get("y")),
        "z": _float(stage.get("z")),
        "r": _radians(stage.get("r")),
        "t": _radians(stage.get("t")),
        "coordinate_system": stage.get("coordinate_system", "RAW"),
    }


def _beam_settings(beam: str, settings: Mapping) -> dict:
    """Backend beam keys -> ``BeamSettings.to_dict`` (radians for scan_rotation)."""
    res = settings.get("resolution")
    return {
        "beam_type": BEAMS[beam],
        "working_distance": _float(settings.get("working_distance")),
        "beam_current": _float(settings.get("current", settings.get("beam_current"))),
        "voltage": _float(settings.get("voltage")),
        "hfw": _float(settings.get("hfw")),
        "resolution": None if res is None else [int(res[0]), int(res[1])],
        "dwell_time": _float(settings.get("dwell_time")),
        "stigmation": _point(settings.get("stigmation")),
        "shift": _point(settings.get("shift")),
        "scan_rotation": _radians(settings.get("scan_rotation")),
        "preset": settings.get("preset"),
    }


def _detector_settings(settings: Mapping) -> dict:
    """Backend detector keys -> ``FibsemDetectorSettings.to_dict``."""
    return {
        "type": settings.get("detector_type", settings.get("type")),
        "mode": settings.get("detector_mode", settings.get("mode")),
        "brightness": _float(settings.get("brightness")),
        "contrast": _float(settings.get("contrast")),
    }


def microscope_state(
    stage: Mapping,
    beams: Mapping[str, Mapping],
    detectors: Mapping[str, Mapping] | None = None,
    timestamp: float | None = None,
    objective_position: float | None = None,
) -> dict:
    """Build a microscope state in OpenFIBSEM's ``MicroscopeState.to_dict`` layout.

    Parameters
    ----------
    stage : Mapping
        Raw stage position: ``x``, ``y``, ``z`` in metres, ``r``, ``t`` in **degrees**
        (optional ``name``, ``coordinate_system``; the latter defaults to ``"RAW"``).
    beams : Mapping[str, Mapping]
        ``{"electron": {...}, "ion": {...}}`` with the keys of
        :data:`fibsem_ophyd.backend.BEAM_KEYS` (``voltage`` V, ``current`` A, ``hfw`` m,
        ``working_distance`` m, ``dwell_time`` s, ``resolution`` [w, h] px,
        ``scan_rotation`` **degrees**, ``shift`` [x, y] m, ``stigmation`` [x, y]).
        A missing beam is stored as ``None``.
    detectors : Mapping[str, Mapping], optional
        ``{"electron": {detector_type, detector_mode, brightness, contrast}, "ion": ...}``
        (brightness/contrast 0..1). A missing detector is stored as ``None``.
    timestamp : float, optional
        POSIX time of the state in seconds; default now.
    objective_position : float, optional
        Objective (fluorescence) position in metres; ``None`` on a FIB-SEM.

    Returns
    -------
    dict
        ``{"timestamp", "stage_position", "electron_beam", "ion_beam",
        "electron_detector", "ion_detector", "objective_position"}`` with stage ``r``/``t``
        and beam ``scan_rotation`` in radians.
    """
    beams = {_beam_name(k): v for k, v in (beams or {}).items()}
    detectors = {_beam_name(k): v for k, v in (detectors or {}).items()}
    out: dict[str, Any] = {
        "timestamp": float(_time.time() if timestamp is None else timestamp),
        "stage_position": _stage_position(stage),
    }
    for beam in BEAMS:
        out[f"{beam}_beam"] = _beam_settings(beam, beams[beam]) if beam in beams else None
    for beam in BEAMS:
        det = detectors.get(beam)
        out[f"{beam}_detector"] = None if det is None else _detector_settings(det)
    out["objective_position"] = _float(objective_position)
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    return value


def read_state(raw: Mapping) -> dict:
    """The microscope state, from a backend's one-call ``state()``: the one state vocabulary.

    Parameters
    ----------
    raw : Mapping
        ``backend.state()`` (see :meth:`fibsem_ophyd.backend.MicroscopeBackend.state`).

    Returns
    -------
    dict
        ``{"timestamp": s, "stage": {x, y, z (m), r, t (deg)}, "electron_beam": {...},
        "ion_beam": {...}, "electron_detector": {...}, "ion_detector": {...}}``: exactly the
        keys of :data:`fibsem_ophyd.backend.STATE_SECTIONS`, units of the backend, plain
        Python values (tuples and numpy values become lists and scalars). ``KeyError``
        naming a key the backend left out.
    """
    state: dict[str, Any] = {"timestamp": float(raw["timestamp"])}
    for section, keys in STATE_SECTIONS.items():
        part = raw[section]
        missing = [k for k in keys if k not in part]
        if missing:
            raise KeyError(f"the backend's state() has no {missing} in {section!r}")
        state[section] = {k: _plain(part[k]) for k in keys}
    state["stage"] = {k: float(v) for k, v in state["stage"].items()}
    return state


def state_metadata(state: Mapping) -> dict:
    """A :func:`read_state` state in OpenFIBSEM's ``MicroscopeState`` layout (what every
    TIFF stores; see :func:`microscope_state`)."""
    return microscope_state(
        state["stage"],
        {beam: state[f"{beam}_beam"] for beam in BEAMS},
        {beam: state[f"{beam}_detector"] for beam in BEAMS},
        state["timestamp"],
    )


def image_settings(beam: str, settings: Mapping) -> dict:
    """Build image settings in OpenFIBSEM's ``ImageSettings.to_dict`` layout.

    Parameters
    ----------
    beam : str
        ``"electron"`` or ``"ion"`` (stored as ``beam_type`` ``"ELECTRON"``/``"ION"``).
    settings : Mapping
        Keys of :data:`fibsem_ophyd.backend.IMAGE_SETTING_KEYS` and a few more:
        ``resolution`` [width, height] px, ``dwell_time`` s, ``hfw`` m, ``autocontrast``
        bool, ``reduced_area`` ``{left, top, width, height}`` fractions 0..1 (or a
        4-sequence, or ``None`` for the full frame), ``line_integration``,
        ``scan_interlacing``, ``frame_integration`` (int or ``None``),
        ``drift_correction`` bool, ``save`` bool (default ``True``: the image is saved),
        ``path`` (directory, str) and ``filename`` (str, without suffix).

    Returns
    -------
    dict
        ``{"beam_type", "resolution", "dwell_time", "hfw", "autocontrast", "save", "path",
        "filename", "reduced_area", "line_integration", "scan_interlacing",
        "frame_integration", "drift_correction"}``.
    """
    beam = _beam_name(beam)
    res = settings.get("resolution")
    path = settings.get("path")
    filename = settings.get("filename")
    return {
        "beam_type": BEAMS[beam],
        "resolution": None if res is None else [int(res[0]), int(res[1])],
        "dwell_time": _float(settings.get("dwell_time")),
        "hfw": _float(settings.get("hfw")),
        "autocontrast": bool(settings.get("autocontrast", False)),
        "save": bool(settings.get("save", True)),
        "path": None if path is None else str(path),
        "filename": None if filename is None else str(filename),
        "reduced_area": _reduced_area(settings.get("reduced_area")),
        "line_integration": _int(settings.get("line_integration")),
        "scan_interlacing": _int(settings.get("scan_interlacing")),
        "frame_integration": _int(settings.get("frame_integration")),
        "drift_correction": bool(settings.get("drift_correction", False)),
    }


def _fill(keys: Sequence[str], given: Mapping | None) -> dict:
    given = given or {}
    out = {k: given.get(k) for k in keys}
    out.update({k: v for k, v in given.items() if k not in out})
    return out


def image_metadata(
    image_settings: dict,
    microscope_state: dict,
    pixel_size: float | Sequence[float],
    system: dict | None = None,
    user: dict | None = None,
    experiment: dict | None = None,
) -> dict:
    """Assemble the full per-image metadata (OpenFIBSEM ``FibsemImageMetadata.to_dict``).

    Parameters
    ----------
    image_settings : dict
        From :func:`image_settings`.
    microscope_state : dict
        From :func:`microscope_state`.
    pixel_size : float or (float, float)
        Pixel size in metres; a scalar means square pixels, a pair is (x, y).
    system : dict, optional
        From :func:`system_info`: ``{"system_info": {...}, "hardware_geometry": {...}}``.
        Missing sections are stored as ``{}`` (OpenFIBSEM's "unknown").
    user : dict, optional
        ``{name, email, organization, hostname}``; missing keys are ``None``.
    experiment : dict, optional
        ``{id, name, date, item_id, item_name, task_id, task_name}``; missing keys ``None``.

    Returns
    -------
    dict
        Keys ``image``, ``version``, ``pixel_size``, ``microscope_state``, ``user``,
        ``experiment``, ``system_info``, ``hardware_geometry``. JSON-serialisable.
    """
    if isinstance(pixel_size, (int, float)):
        px = {"x": float(pixel_size), "y": float(pixel_size)}
    else:
        px = _point(pixel_size)
    system = system or {}
    return {
        "image": dict(image_settings),
        "version": METADATA_VERSION,
        "pixel_size": px,
        "microscope_state": dict(microscope_state),
        "user": _fill(_USER_KEYS, user),
        "experiment": _fill(_EXPERIMENT_KEYS, experiment),
        "system_info": dict(system.get("system_info") or {}),
        "hardware_geometry": dict(system.get("hardware_geometry") or {}),
    }


def system_info(config_data: Mapping) -> dict:
    """Instrument provenance and geometry from our configuration dict.

    Parameters
    ----------
    config_data : Mapping
        The configuration in OpenFIBSEM's microscope-configuration layout
        (``MicroscopeConfig.data`` or the config object itself): sections ``info``
        (name, manufacturer, ...), ``stage`` (rotation_reference, rotation_180,
        shuttle_pre_tilt, degrees) and ``electron``/``ion`` (column_tilt, degrees).

    Returns
    -------
    dict
        ``{"system_info": SystemInfo.to_dict() layout, "hardware_geometry":
        FibsemHardwareGeometry.to_dict() layout}``; pass it as ``system=`` to
        :func:`image_metadata`. Angles stay in degrees (as in OpenFIBSEM).
    """
    data = getattr(config_data, "data", config_data)
    info = data.get("info") or {}
    stage = data.get("stage") or {}
    electron = data.get("electron") or {}
    ion = data.get("ion") or {}
    sim = data.get("sim") or {}
    sysinfo: dict[str, Any] = {
        k: (str(info[k]) if info.get(k) is not None else "Unknown") for k in _INFO_KEYS
    }
    sysinfo["fibsem_version"] = info.get("fibsem_version")
    sysinfo["application"] = info.get("application", "fibsem_ophyd")
    sysinfo["fibsem_revision"] = info.get("fibsem_revision")
    geometry = {
        "column_tilt": float(electron.get("column_tilt", 0.0)),
        "fib_column_tilt": float(ion.get("column_tilt", 52.0)),
        "shuttle_pre_tilt": float(stage.get("shuttle_pre_tilt", 0.0)),
        "rotation_reference": float(stage.get("rotation_reference", 0.0)),
        "rotation_180": float(stage.get("rotation_180", 180.0)),
        "is_compustage": bool(stage.get("is_compustage", sim.get("is_compustage", False))),
        "camera_tilt": 0.0,
        "transform": None,
    }
    return {"system_info": sysinfo, "hardware_geometry": geometry}


# --------------------------------------------------------------------------- readers
def _state(md: Mapping) -> Mapping:
    """The microscope-state section, given full image metadata or a state itself."""
    if "microscope_state" in md:
        return md["microscope_state"] or {}
    return md


def get_stage_position(md: Mapping) -> dict:
    """Stage position in our units.

    Parameters
    ----------
    md : Mapping
        Full image metadata, a microscope state, or a ``stage_position`` dict itself.

    Returns
    -------
    dict
        ``{"x", "y", "z"}`` in metres and ``{"r", "t"}`` in degrees (``None`` if unknown).
    """
    pos = _state(md).get("stage_position", md) or {}
    return {
        "x": _float(pos.get("x")),
        "y": _float(pos.get("y")),
        "z": _float(pos.get("z")),
        "r": _degrees(pos.get("r")),
        "t": _degrees(pos.get("t")),
    }


def get_pixel_size(md: Mapping) -> float:
    """Pixel size (x) in metres."""
    return float(md["pixel_size"]["x"])


def get_beam(md: Mapping) -> str:
    """The beam that made the image: ``"electron"`` or ``"ion"``."""
    return _BEAM_FROM_TYPE[str(md["image"]["beam_type"]).upper()]


def get_hfw(md: Mapping) -> float:
    """Horizontal field width of the image in metres."""
    return float(md["image"]["hfw"])


def get_resolution(md: Mapping) -> tuple[int, int]:
    """Scan resolution (width, height) in pixels."""
    w, h = md["image"]["resolution"]
    return int(w), int(h)


def get_timestamp(md: Mapping) -> float:
    """POSIX time (s) at which the microscope state was recorded."""
    return float(_state(md)["timestamp"])


def get_image_settings(md: Mapping) -> dict:
    """Image settings in our units and key names (inverse of :func:`image_settings`).

    Returns
    -------
    dict
        ``beam`` ("electron"/"ion"), ``resolution`` (w, h) px, ``dwell_time`` s, ``hfw`` m,
        ``autocontrast``, ``reduced_area`` (fractions or ``None``), ``line_integration``,
        ``scan_interlacing``, ``frame_integration``, ``drift_correction``, ``save``,
        ``path``, ``filename``.
    """
    img = dict(md["image"])
    out = {"beam": _BEAM_FROM_TYPE[str(img.pop("beam_type")).upper()]}
    out.update(img)
    if out.get("resolution") is not None:
        out["resolution"] = tuple(int(v) for v in out["resolution"])
    return out


def get_beam_settings(md: Mapping, beam: str | None = None) -> dict | None:
    """One beam's settings in backend units and key names (scan_rotation in degrees).

    Parameters
    ----------
    md : Mapping
        Full image metadata or a microscope state.
    beam : str, optional
        ``"electron"`` or ``"ion"``; default the beam that made the image.

    Returns
    -------
    dict or None
        ``voltage`` V, ``current`` A, ``hfw`` m, ``working_distance`` m, ``dwell_time`` s,
        ``resolution`` (w, h), ``scan_rotation`` deg, ``shift`` (x, y) m, ``stigmation``
        (x, y), ``preset``; ``None`` if that beam was not recorded.
    """
    beam = _beam_name(beam) if beam is not None else get_beam(md)
    b = _state(md).get(f"{beam}_beam")
    if b is None:
        return None

    def pair(p):
        return None if p is None else (float(p["x"]), float(p["y"]))

    res = b.get("resolution")
    return {
        "voltage": _float(b.get("voltage")),
        "current": _float(b.get("beam_current")),
        "hfw": _float(b.get("hfw")),
        "working_distance": _float(b.get("working_distance")),
        "dwell_time": _float(b.get("dwell_time")),
        "resolution": None if res is None else (int(res[0]), int(res[1])),
        "scan_rotation": _degrees(b.get("scan_rotation")),
        "shift": pair(b.get("shift")),
        "stigmation": pair(b.get("stigmation")),
        "preset": b.get("preset"),
    }


def get_detector_settings(md: Mapping, beam: str | None = None) -> dict | None:
    """One detector's settings with backend key names.

    Returns
    -------
    dict or None
        ``detector_type``, ``detector_mode``, ``brightness`` (0..1), ``contrast`` (0..1);
        ``None`` if not recorded.
    """
    beam = _beam_name(beam) if beam is not None else get_beam(md)
    d = _state(md).get(f"{beam}_detector")
    if d is None:
        return None
    return {
        "detector_type": d.get("type"),
        "detector_mode": d.get("mode"),
        "brightness": _float(d.get("brightness")),
        "contrast": _float(d.get("contrast")),
    }


def get_hardware_geometry(md: Mapping) -> dict:
    """The hardware geometry section (angles in degrees); ``{}`` if not recorded."""
    return dict(md.get("hardware_geometry") or {})
