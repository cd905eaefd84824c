"""The metadata vocabulary: OpenFIBSEM layout, unit conversions, readers."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from fibsem_ophyd.config import load_config
from fibsem_ophyd.storage import metadata as md

GOLDEN = Path(__file__).parent / "data" / "openfibsem_0.5.3_metadata.json"

ELECTRON = {
    "on": True, "blanked": False, "voltage": 2000, "current": 5e-11, "hfw": 1.5e-4,
    "working_distance": 4e-3, "dwell_time": 1e-6, "resolution": [96, 64],
    "scan_rotation": 90.0, "shift": [1e-6, -2e-6], "stigmation": [0.1, -0.2],
    "column_tilt": 0.0,
}
ION = {
    "voltage": 30000, "current": 2e-11, "hfw": 1.5e-4, "working_distance": 16.5e-3,
    "dwell_time": 1e-6, "resolution": [96, 64], "scan_rotation": 0.0, "shift": [0, 0],
    "stigmation": [0, 0],
}
DETECTORS = {
    "electron": {"detector_type": "ETD", "detector_mode": "SecondaryElectrons",
                 "brightness": 0.4, "contrast": 0.6},
    "ion": {"detector_type": "ETD", "detector_mode": "SecondaryElectrons",
            "brightness": 0.5, "contrast": 0.5},
}
STAGE = {"x": 1e-3, "y": -2e-3, "z": 4e-3, "r": 30.0, "t": 52.0}


def full_metadata() -> dict:
    """The same inputs as the golden file (written by OpenFIBSEM 0.5.3 from our TIFF)."""
    state = md.microscope_state(STAGE, {"electron": ELECTRON, "ion": ION}, DETECTORS,
                                timestamp=1.7e9)
    settings = md.image_settings("ion", {
        "resolution": [96, 64], "dwell_time": 1e-6, "hfw": 1.5e-4,
        "reduced_area": {"left": 0.25, "top": 0.25, "width": 0.5, "height": 0.5},
        "path": "/tmp/fibcheck", "filename": "ours", "line_integration": 2,
    })
    return md.image_metadata(
        settings, state, 1.5e-4 / 96, system=md.system_info(load_config()),
        user={"name": "tester"}, experiment={"id": "exp-1", "name": "E"},
    )


def test_matches_openfibsem_to_dict_exactly():
    """OpenFIBSEM 0.5.3 loaded our TIFF and its ``to_dict()`` gave this golden file."""
    golden = json.loads(GOLDEN.read_text())
    ours = json.loads(json.dumps(full_metadata()))
    assert ours == golden


def test_top_level_layout_and_version():
    m = full_metadata()
    assert list(m) == [
        "image", "version", "pixel_size", "microscope_state", "user", "experiment",
        "system_info", "hardware_geometry",
    ]
    assert m["version"] == md.METADATA_VERSION == "v8"
    assert m["pixel_size"] == {"x": 1.5e-4 / 96, "y": 1.5e-4 / 96}


def test_angles_are_radians_inside_and_degrees_outside():
    state = md.microscope_state(STAGE, {"electron": ELECTRON}, timestamp=0.0)
    assert state["stage_position"]["r"] == pytest.approx(math.radians(30.0))
    assert state["stage_position"]["t"] == pytest.approx(math.radians(52.0))
    assert state["electron_beam"]["scan_rotation"] == pytest.approx(math.pi / 2)
    back = md.get_stage_position(state)
    for k, v in STAGE.items():
        assert back[k] == pytest.approx(v, abs=1e-12)
    beam = md.get_beam_settings(state, "electron")
    assert beam["scan_rotation"] == pytest.approx(90.0)
    assert beam["current"] == 5e-11 and beam["voltage"] == 2000.0
    assert beam["shift"] == (1e-6, -2e-6) and beam["stigmation"] == (0.1, -0.2)
    assert beam["resolution"] == (96, 64)


def test_beam_settings_layout_and_types():
    state = md.microscope_state(STAGE, {"electron": ELECTRON}, timestamp=1.0)
    eb = state["electron_beam"]
    assert list(eb) == [
        "beam_type", "working_distance", "beam_current", "voltage", "hfw", "resolution",
        "dwell_time", "stigmation", "shift", "scan_rotation", "preset",
    ]
    assert eb["beam_type"] == "ELECTRON"
    assert eb["beam_current"] == 5e-11  # "current" renamed
    assert eb["stigmation"] == {"x": 0.1, "y": -0.2}
    assert type(eb["voltage"]) is float  # OpenFIBSEM asserts float/int, not numpy
    assert state["ion_beam"] is None and state["ion_detector"] is None
    assert state["electron_detector"] is None  # no detectors given
    assert state["stage_position"]["coordinate_system"] == "RAW"


def test_numpy_inputs_become_plain_python():
    state = md.microscope_state(
        {k: np.float64(v) for k, v in STAGE.items()},
        {"ion": {**ION, "voltage": np.float32(30000), "resolution": np.array([96, 64])}},
        timestamp=np.float64(5.0),
    )
    json.dumps(state)  # no numpy left
    assert state["ion_beam"]["resolution"] == [96, 64]
    assert type(state["ion_beam"]["resolution"][0]) is int


def test_image_settings_layout_and_reduced_area():
    s = md.image_settings("ELECTRON", {"resolution": (1536, 1024), "dwell_time": 1e-6,
                                       "hfw": 1e-4, "reduced_area": (0.1, 0.2, 0.3, 0.4)})
    assert list(s) == [
        "beam_type", "resolution", "dwell_time", "hfw", "autocontrast", "save", "path",
        "filename", "reduced_area", "line_integration", "scan_interlacing",
        "frame_integration", "drift_correction",
    ]
    assert s["beam_type"] == "ELECTRON" and s["resolution"] == [1536, 1024]
    assert s["reduced_area"] == {"left": 0.1, "top": 0.2, "width": 0.3, "height": 0.4}
    assert md.image_settings("ion", {"hfw": 1e-4})["reduced_area"] is None
    with pytest.raises(ValueError, match="unit square"):
        md.image_settings("ion", {"reduced_area": (0.8, 0.0, 0.5, 0.5)})
    with pytest.raises(ValueError, match="beam"):
        md.image_settings("neutron", {})


def test_system_info_from_packaged_config():
    cfg = load_config()
    sysd = md.system_info(cfg)  # the config object or its .data both work
    assert sysd == md.system_info(cfg.data)
    info, geom = sysd["system_info"], sysd["hardware_geometry"]
    assert info["name"] == cfg["info"]["name"]
    assert info["manufacturer"] == cfg["info"]["manufacturer"]
    assert info["model"] == "Unknown"
    assert geom["fib_column_tilt"] == cfg["ion"]["column_tilt"] == 52
    assert geom["column_tilt"] == cfg["electron"]["column_tilt"]
    assert geom["shuttle_pre_tilt"] == cfg["stage"]["shuttle_pre_tilt"]  # degrees
    assert geom["rotation_180"] == cfg["stage"]["rotation_180"]
    assert geom["is_compustage"] is False and geom["transform"] is None


def test_readers():
    m = full_metadata()
    assert md.get_beam(m) == "ion"
    assert md.get_pixel_size(m) == pytest.approx(1.5e-4 / 96)
    assert md.get_hfw(m) == 1.5e-4
    assert md.get_resolution(m) == (96, 64)
    assert md.get_timestamp(m) == 1.7e9
    assert md.get_stage_position(m)["t"] == pytest.approx(52.0)
    assert md.get_beam_settings(m)["voltage"] == 30000.0  # default: the image's beam
    assert md.get_detector_settings(m, "electron") == DETECTORS["electron"]
    assert md.get_hardware_geometry(m)["fib_column_tilt"] == 52.0
    s = md.get_image_settings(m)
    assert s["beam"] == "ion" and s["line_integration"] == 2 and s["resolution"] == (96, 64)


def test_missing_sections_default_like_openfibsem():
    m = md.image_metadata(md.image_settings("electron", {"hfw": 1e-4}),
                          md.microscope_state(STAGE, {}, timestamp=0.0), (1e-9, 2e-9))
    assert m["system_info"] == {} and m["hardware_geometry"] == {}
    assert m["user"] == {"name": None, "email": None, "organization": None, "hostname": None}
    assert m["experiment"]["id"] is None
    assert m["pixel_size"] == {"x": 1e-9, "y": 2e-9}
