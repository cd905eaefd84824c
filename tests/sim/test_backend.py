"""The simulator honours the backend contract: settings, validation, stage, chamber, faults."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest

from fibsem_ophyd.backend import (
    BEAM_KEYS,
    CHAMBER_KEYS,
    DETECTOR_KEYS,
    BackendError,
    MicroscopeBackend,
)
from fibsem_ophyd.sim import FAULTS, SimulatedMicroscope
from fibsem_ophyd.sim.clock import CURRENT_CHANGE, FRAME_OVERHEAD, STAGE_SETTLE

from ._helpers import SMALL, small_sim


def test_implements_protocol_and_reads_every_key():
    sim = SimulatedMicroscope()
    assert isinstance(sim, MicroscopeBackend)
    for beam in ("electron", "ion"):
        for key in BEAM_KEYS + DETECTOR_KEYS:
            assert sim.get(key, beam) is not None, key
    for key in CHAMBER_KEYS:
        assert sim.get(key) is not None
    assert sim.get("column_tilt", "ion") == 52.0
    assert sim.get("working_distance", "electron") == sim.config["electron"]["eucentric_height"]
    assert sim.get("vacuum_state") == "pumped"


@pytest.mark.parametrize(
    ("key", "value"),
    [("hfw", 1.0e-4), ("voltage", 5000.0), ("working_distance", 0.0071), ("dwell_time", 3e-7),
     ("scan_rotation", 180.0), ("shift", [1e-6, -2e-6]), ("stigmation", [0.1, -0.2]),
     ("resolution", [384, 256]), ("brightness", 0.3), ("contrast", 0.7), ("blanked", True),
     ("detector_type", "TLD"), ("detector_mode", "BackscatterElectrons"), ("on", False)],
)
def test_set_then_get_round_trips(key, value):
    sim = SimulatedMicroscope()
    sim.set(key, value, "electron")
    assert sim.get(key, "electron") == value


@pytest.mark.parametrize(
    ("key", "value", "needle"),
    [
        ("hfw", 5.0, "limit"),                   # out of range
        ("hfw", float("nan"), "finite"),
        ("hfw", "wide", "number"),               # wrong type
        ("hfw", True, "number"),                 # bool is not a number here
        ("current", 1.0, "limit"),
        ("shift", [1.0, 0.0], "limit"),
        ("shift", [0.0], "2 elements"),
        ("stigmation", "xy", "pair"),
        ("resolution", [768.0, 512], "integers"),
        ("resolution", [0, 512], "limit"),
        ("brightness", 1.5, "limit"),
        ("on", 1, "bool"),
        ("detector_type", "XYZ", "not one of"),
        ("column_tilt", 10.0, "read-only"),
        ("focus_mode", 1.0, "unknown"),
    ],
)
def test_invalid_set_raises_before_any_change(key, value, needle):
    sim = SimulatedMicroscope()
    before = {k: sim.get(k, "electron") for k in BEAM_KEYS + DETECTOR_KEYS}
    t0 = sim.time()
    with pytest.raises(ValueError, match=needle):
        sim.set(key, value, "electron")
    assert {k: sim.get(k, "electron") for k in BEAM_KEYS + DETECTOR_KEYS} == before
    assert sim.time() == t0


def test_error_names_key_value_and_limit():
    sim = SimulatedMicroscope()
    with pytest.raises(ValueError) as exc:
        sim.set("hfw", 5.0, "ion")
    msg = str(exc.value)
    assert "ion.hfw" in msg and "5.0" in msg and "0.0009" in msg


def test_unknown_beam_and_misplaced_keys():
    sim = SimulatedMicroscope()
    with pytest.raises(ValueError, match="unknown beam"):
        sim.get("hfw", "proton")
    with pytest.raises(ValueError, match="unknown beam"):
        sim.set("hfw", 1e-4, "proton")
    with pytest.raises(ValueError, match="beam setting"):
        sim.get("hfw")
    with pytest.raises(ValueError, match="chamber key"):
        sim.get("pressure", "electron")
    with pytest.raises(ValueError, match="read-only"):
        sim.set("pressure", 1.0)
    with pytest.raises(ValueError, match="unknown beam"):
        sim.acquire_image("proton")
    with pytest.raises(ValueError, match="unknown image setting"):
        sim.acquire_image("electron", {"gamma": 2})


def test_available_values():
    sim = SimulatedMicroscope()
    assert {"ETD", "TLD", "ICE"} <= set(sim.available_values("detector_type", "electron"))
    assert sim.available_values("detector_mode", "electron") == [
        "SecondaryElectrons", "BackscatterElectrons"]
    currents = sim.available_values("current", "ion")
    assert currents == sorted(currents) and 2e-11 in currents and 2e-9 in currents
    lo, hi = sim.config.beam_limits("ion")["current"]
    assert all(lo <= c <= hi for c in currents)
    assert sim.available_values("vacuum_state") == ["pumped", "vented"]
    with pytest.raises(ValueError):
        sim.available_values("hfw", "electron")


def test_stage_moves_and_validates_all_axes_first():
    sim = SimulatedMicroscope()
    start = sim.get_stage_position()
    assert start == {"x": 0.0, "y": 0.0, "z": 0.004, "r": 0.0, "t": 35.0}
    sim.move_stage_absolute({"x": 1e-4, "t": 20.0})
    assert sim.get_stage_position() == {**start, "x": 1e-4, "t": 20.0}
    here = sim.get_stage_position()
    for bad, needle in [({"x": 2e-4, "z": 0.5}, "stage.z"), ({"x": 2e-4, "y": math.nan}, "finite"),
                        ({"x": 2e-4, "q": 1.0}, "unknown stage axis"),
                        ({"x": 2e-4, "t": "flat"}, "number"), ({"t": 61.0}, r"\[-15.0, 60.0\]")]:
        with pytest.raises(ValueError, match=needle):
            sim.move_stage_absolute(bad)
        assert sim.get_stage_position() == here
    with pytest.raises(ValueError):
        sim.move_stage_absolute([0.0, 0.0])


def test_chamber_and_beam_state_gate_imaging():
    sim = small_sim()
    sim.vent()
    assert sim.get("vacuum_state") == "vented" and sim.get("pressure") > 1e4
    with pytest.raises(BackendError, match="vented"):
        sim.acquire_image("electron")
    sim.set("vacuum_state", "pumped")
    assert sim.get("pressure") < 1e-2
    assert sim.acquire_image("electron").shape == (SMALL[1], SMALL[0])
    sim.set("on", False, "ion")
    with pytest.raises(BackendError, match="off"):
        sim.acquire_image("ion")
    # a blanked beam images the detector offset only: dark and featureless
    sim.set("blanked", True, "electron")
    dark = sim.acquire_image("electron")
    assert dark.mean() < 0.3 * 255 and dark.std() < 3


def test_faults():
    sim = small_sim()
    assert set(FAULTS) == {"stage_stall", "beam_trip", "vacuum_loss", "detector_failure"}
    with pytest.raises(ValueError, match="unknown fault"):
        sim.inject_fault("meteor")
    # stage stall: the move stops half way and raises; it is one-shot
    sim.inject_fault("stage_stall")
    with pytest.raises(BackendError, match="stall"):
        sim.move_stage_absolute({"x": 2e-4, "t": 25.0})
    pos = sim.get_stage_position()
    assert pos["x"] == pytest.approx(1e-4) and pos["t"] == pytest.approx(30.0)
    sim.move_stage_absolute({"x": 2e-4})
    assert sim.get_stage_position()["x"] == 2e-4
    # beam trip: the beam turns off until turned on again
    sim.inject_fault("beam_trip", beam="ion")
    assert sim.get("on", "ion") is False
    with pytest.raises(BackendError, match="trip"):
        sim.acquire_image("ion")
    sim.acquire_image("electron")
    sim.set("on", True, "ion")
    sim.acquire_image("ion")
    # vacuum loss: vented until pumped (or faults cleared)
    sim.inject_fault("vacuum_loss")
    assert sim.get("vacuum_state") == "vented"
    with pytest.raises(BackendError):
        sim.acquire_image("electron")
    sim.inject_fault("beam_trip")
    assert set(sim.active_faults) == {"vacuum_loss", "beam_trip:electron", "beam_trip:ion"}
    sim.clear_faults()
    assert sim.active_faults == () and sim.get("vacuum_state") == "pumped"
    assert sim.get("on", "electron") and sim.get("on", "ion")
    # detector failure: one frame fails
    sim.inject_fault("detector_failure")
    with pytest.raises(BackendError, match="detector"):
        sim.acquire_image("electron")
    sim.acquire_image("electron")


def test_clock_accumulates_hardware_time():
    sim = small_sim()
    assert sim.time() == 0.0
    sim.acquire_image("electron", {"dwell_time": 1e-6, "line_integration": 2})
    expected = 1e-6 * SMALL[0] * SMALL[1] * 2 + FRAME_OVERHEAD
    assert sim.time() == pytest.approx(expected)
    t0 = sim.time()
    sim.move_stage_absolute({"x": 1e-3, "r": 20.0})       # 1 mm at 1 mm/s, 20 deg at 10 deg/s
    assert sim.time() - t0 == pytest.approx(STAGE_SETTLE + 1.0 + 2.0)
    t0 = sim.time()
    sim.set("current", 1e-9, "ion")
    assert sim.time() - t0 == pytest.approx(CURRENT_CHANGE)
    t0 = sim.time()
    sim.set("current", 1e-9, "ion")                      # unchanged: no aperture change
    sim.acquire_image("electron", {"reduced_area": (0.25, 0.25, 0.5, 0.5), "dwell_time": 1e-6})
    assert sim.time() - t0 == pytest.approx(1e-6 * SMALL[0] * SMALL[1] / 4 + FRAME_OVERHEAD)


def test_real_time_factor_sleeps():
    sim = SimulatedMicroscope({"sim": {"real_time_factor": 0.05}})
    t0 = time.perf_counter()
    sim.move_stage_absolute({"x": 1e-3})                  # 2 s of hardware time -> 0.1 s
    assert time.perf_counter() - t0 >= 0.09
    with pytest.raises(ValueError, match="real_time_factor"):
        SimulatedMicroscope({"sim": {"real_time_factor": -1}})


def test_deterministic_from_seed():
    def frames(seed):
        sim = small_sim(seed)
        a = sim.acquire_image("electron")
        sim.move_stage_absolute({"x": 3e-6})
        b = sim.acquire_image("ion")
        return a, b

    a1, b1 = frames(7)
    a2, b2 = frames(7)
    a3, _ = frames(8)
    assert np.array_equal(a1, a2) and np.array_equal(b1, b2)
    assert not np.array_equal(a1, a3)
    # the noise differs frame to frame (a fresh draw), the scene does not
    sim = small_sim(7)
    f1, f2 = sim.acquire_image("electron"), sim.acquire_image("electron")
    assert not np.array_equal(f1, f2)
    assert abs(float(f1.mean()) - float(f2.mean())) < 1.0


def test_acquire_settings_validation():
    sim = small_sim()
    for bad in [{"dwell_time": 1.0}, {"hfw": -1.0}, {"line_integration": 0},
                {"reduced_area": (0.8, 0.0, 0.5, 0.5)}, {"autocontrast": "yes"},
                {"resolution": [10, 10, 10]}]:
        with pytest.raises(ValueError):
            sim.acquire_image("electron", bad)
    img = sim.acquire_image("electron", {"resolution": [384, 256], "hfw": 5e-5})
    assert img.shape == (256, 384) and img.dtype == np.uint8
    assert sim.get("resolution", "electron") == SMALL     # per-frame override only
