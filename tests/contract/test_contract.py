"""The hardware contract, asserted the same way on both backends (see ``conftest.py``)."""

import math

import numpy as np
import pytest
from bluesky import plan_stubs as bps
from bluesky.plans import count

from fibsem_ophyd.backend import (
    DESCRIPTION_FIELDS,
    MicroscopeBackend,
    MissingSubsystemError,
)
from fibsem_ophyd.devices import BackendSignal
from fibsem_ophyd.plans import (
    acquire_image,
    cryo_deposition,
    insert_manipulator,
    mill_stages,
    restore_state,
    retract_manipulator,
    snapshot_state,
    sputter_coat,
    stable_move,
    vertical_move,
)
from fibsem_ophyd.storage import read_metadata

#: a small box in silicon (the Demo snaps 1 nA to its nearest aperture, 1.000005 nA)
BOX = {
    "name": "box",
    "milling": {"milling_current": 1e-9, "hfw": 80e-6, "material": "Si"},
    "pattern": {"name": "Rectangle", "width": 10e-6, "height": 5e-6, "depth": 0.5e-6},
    "alignment": {"enabled": False},
}


def _setting_signals(microscope):
    for dev in (microscope.electron_beam, microscope.ion_beam, microscope.sem, microscope.fib):
        for name in dev.component_names:
            sig = getattr(dev, name)
            if isinstance(sig, BackendSignal):
                yield sig


def _target(sig, d, current):
    """A value other than ``current`` that ``describe()`` allows."""
    if d["choices"] is not None:
        others = [c for c in d["choices"] if c != current] or [current]
        return others[len(others) // 2]
    if sig._vtype == "bool":
        return not current
    lo, hi = d["limits"]
    if sig._vtype == "intpair":
        return [768, 512]
    if sig._vtype == "pair":
        return [lo + 0.3 * (hi - lo), lo + 0.6 * (hi - lo)]
    return lo + 0.37 * (hi - lo)


def test_backend_implements_the_contract(session):
    be = session.backend
    assert isinstance(be, MicroscopeBackend)
    state = be.state()
    assert set(state) == {"timestamp", "stage", "electron_beam", "ion_beam",
                          "electron_detector", "ion_detector"}
    assert state["stage"] == pytest.approx(be.get_stage_position(), abs=1e-12)
    for key in ("voltage", "current", "hfw", "dwell_time"):
        assert state["ion_beam"][key] == pytest.approx(be.get(key, "ion"))


def test_describe_gives_units_limits_and_read_only(session, microscope):
    be = session.backend
    for sig in _setting_signals(microscope):
        d = be.describe(sig._key, sig._beam)
        assert set(d) == set(DESCRIPTION_FIELDS)
        desc = sig.describe()[sig.name]
        if d["limits"] is not None:
            lo, hi = d["limits"]
            assert desc["limits"]["control"] == {"low": lo, "high": hi}, sig.name
        if d["units"] is not None:
            assert desc["units"] == d["units"], sig.name
        if d["read_only"]:
            with pytest.raises(ValueError, match="read-only"):
                sig.check_value(sig.get())
    for key in ("voltage", "current", "hfw", "working_distance", "dwell_time", "shift"):
        d = be.describe(key, "ion")
        assert d["units"] in ("V", "A", "m", "s") and d["limits"] is not None, key
    for ax in ("x", "y", "z", "r", "t"):
        d = be.describe(f"stage_{ax}")
        assert d["units"] == ("deg" if ax in "rt" else "m")
        assert tuple(getattr(microscope.stage, ax).limits) == d["limits"]
    # the whole microscope describes itself as ophyd does, units and limits included
    full = microscope.electron_beam.describe_configuration()
    assert full["microscope_electron_beam_current"]["units"] == "A"
    assert "limits" in full["microscope_electron_beam_current"]


def test_every_setting_round_trips_within_its_limits(session, microscope):
    be = session.backend
    for sig in _setting_signals(microscope):
        d = be.describe(sig._key, sig._beam)
        if d["read_only"]:
            continue
        before = sig.get()
        target = _target(sig, d, before)
        sig.set(target).wait(30)
        got = sig.get()
        if isinstance(target, (bool, str)):
            assert got == target, sig.name
        else:
            assert np.allclose(got, target, rtol=1e-9, atol=0), (sig.name, got, target)
        sig.set(before).wait(30)
        assert np.all(np.asarray(sig.get()) == np.asarray(before)), sig.name


def test_out_of_limit_values_are_refused_before_anything_changes(session, microscope):
    be = session.backend
    for beam, dev in (("electron", microscope.electron_beam), ("ion", microscope.ion_beam)):
        for key in ("current", "hfw", "working_distance", "dwell_time"):
            lo, hi = be.describe(key, beam)["limits"]
            before = be.get(key, beam)
            with pytest.raises(ValueError, match="limit"):
                getattr(dev, key).set(hi * 2)
            with pytest.raises(ValueError):
                getattr(dev, key).set(float("nan"))
            assert be.get(key, beam) == before
    pos = be.get_stage_position()
    lo, hi = be.describe("stage_t")["limits"]
    with pytest.raises(ValueError, match="limit"):
        microscope.stage.t.set(hi + 1.0)
    with pytest.raises(ValueError, match="unknown stage axis"):
        microscope.stage.set({"w": 1.0})
    assert be.get_stage_position() == pos
    with pytest.raises(ValueError):
        microscope.gis.gas.set("no such gas")


def test_stage_axes_round_trip_within_limits(session, microscope):
    be = session.backend
    start = be.get_stage_position()
    for ax, delta in (("x", 20e-6), ("y", -15e-6), ("z", 10e-6), ("r", 5.0), ("t", 2.0)):
        lo, hi = be.describe(f"stage_{ax}")["limits"]
        target = min(max(start[ax] + delta, lo), hi)
        getattr(microscope.stage, ax).set(target).wait(30)
        assert be.get_stage_position()[ax] == pytest.approx(target, abs=1e-9)
    microscope.stage.set(start).wait(30)
    assert be.get_stage_position() == pytest.approx(start, abs=1e-9)


@pytest.mark.parametrize("det", ["sem", "fib"])
def test_images_land_in_tiled_with_openfibsem_metadata(session, microscope, det):
    fibsem_structures = pytest.importorskip("fibsem.structures")
    detector = getattr(microscope, det)
    uid = session.RE(acquire_image(detector, resolution=[384, 256], hfw=100e-6)).plan_result
    run = session.catalog[uid]
    frames = np.asarray(run["primary"][detector.image_key].read())
    assert frames.shape == (1, 256, 384)
    loaded = fibsem_structures.FibsemImage.load(str(detector.last_file))
    assert np.array_equal(loaded.data, frames[0])
    md = loaded.metadata
    assert md.pixel_size.x == pytest.approx(100e-6 / 384)
    assert md.image_settings.beam_type.name == ("ELECTRON" if det == "sem" else "ION")
    pos = session.backend.get_stage_position()
    assert md.microscope_state.stage_position.x == pytest.approx(pos["x"], abs=1e-12)
    assert math.degrees(md.microscope_state.stage_position.t) == pytest.approx(pos["t"])
    assert read_metadata(detector.last_file)["image"]["hfw"] == pytest.approx(100e-6)


def test_movement_plans_move_as_geometry_predicts(session, microscope):
    be = session.backend
    p0 = be.get_stage_position()
    session.RE(stable_move(microscope, dx=5e-6, dy=0.0, beam="electron"))
    p1 = be.get_stage_position()
    assert abs(p1["x"] - p0["x"]) == pytest.approx(5e-6, rel=1e-6)
    assert p1["y"] == pytest.approx(p0["y"], abs=1e-12)
    session.RE(vertical_move(microscope, dy=4e-6))
    p2 = be.get_stage_position()
    m = 4e-6 / math.sin(math.radians(be.config["ion"]["column_tilt"]))
    t = math.radians(p2["t"])
    assert math.hypot(p2["y"] - p1["y"], p2["z"] - p1["z"]) == pytest.approx(m, rel=1e-6)
    assert abs(p2["z"] - p1["z"]) == pytest.approx(m * math.cos(t), rel=1e-6)
    microscope.stage.set(p0).wait(30)


def test_state_snapshot_and_restore(session, microscope):
    be = session.backend
    state = session.RE(snapshot_state(microscope)).plan_result
    lo, hi = be.describe("hfw", "electron")["limits"]
    session.RE(bps.mv(microscope.electron_beam.hfw, lo + 0.25 * (hi - lo)))
    session.RE(bps.mv(microscope.stage.x, state["stage"]["x"] + 30e-6))
    session.RE(restore_state(microscope, state))
    assert be.get("hfw", "electron") == pytest.approx(state["electron_beam"]["hfw"])
    assert be.get_stage_position()["x"] == pytest.approx(state["stage"]["x"], abs=1e-12)


def test_a_milling_stage_runs_and_leaves_the_beam_safe(session, microscope):
    be = session.backend
    imaging = be.get("current", "ion")
    session.RE(mill_stages(microscope, [BOX]))
    assert microscope.milling.state.get() == "done"
    assert microscope.milling.milling_time.get() > 0
    assert be.get("current", "ion") == pytest.approx(imaging)
    assert be.get("blanked", "ion") is True
    session.RE(bps.mv(microscope.ion_beam.blanked, False))


def test_deposition(session, microscope):
    be = session.backend
    gas = be.describe("gis_gas")["choices"][0]
    where = [p for p in be.describe("gis_position")["choices"] if p != "retracted"][0]
    session.RE(cryo_deposition(microscope, time=2.0, gas=gas, insert_position=where,
                               images=False))
    assert microscope.gis.last_time.get() == pytest.approx(2.0)
    assert be.get("gis_position") == "retracted"
    if "sputter_coater" in be.missing():
        with pytest.raises(MissingSubsystemError, match="sputter_coater"):
            session.RE(sputter_coat(microscope, time=1.0, images=False))
    else:
        session.RE(sputter_coat(microscope, time=1.0, images=False))
        assert microscope.sputter_coater.last_time.get() >= 1.0


def test_manipulator(session, microscope):
    be = session.backend
    saved = microscope.manipulator.saved_positions()
    session.RE(bps.mv(microscope.stage.t, 0.0))  # flat, as OpenFIBSEM advises
    session.RE(insert_manipulator(microscope, "PARK"))
    assert microscope.manipulator.inserted.get() is True
    tip = be.get_manipulator_position()
    assert tip == pytest.approx(saved["PARK"], abs=1e-12)
    session.RE(bps.mv(microscope.manipulator, {"z": tip["z"] + 20e-6}))
    assert be.get_manipulator_position()["z"] == pytest.approx(tip["z"] + 20e-6, abs=1e-12)
    with pytest.raises(ValueError, match="limit"):
        microscope.manipulator.set({"x": 1.0})
    # the needle is readable in a run; contact sensing only where the backend has it
    uid = session.RE(count([microscope.manipulator])).run_start_uids[0]
    keys = set(session.catalog[uid]["primary"].keys())
    assert "microscope_manipulator_z" in keys
    assert ("microscope_manipulator_contact" in keys) == \
        ("manipulator_contact" not in be.missing())
    session.RE(retract_manipulator(microscope))
    assert microscope.manipulator.inserted.get() is False


def test_chamber_camera(session, microscope):
    be = session.backend
    if "chamber_camera" in be.missing():
        with pytest.raises(MissingSubsystemError, match="chamber_camera"):
            microscope.chamber_camera.stage()
            try:
                microscope.chamber_camera.trigger()
            finally:
                microscope.chamber_camera.unstage()
        return
    uid = session.RE(acquire_image(microscope.chamber_camera)).plan_result
    run = session.catalog[uid]
    frames = np.asarray(run["primary"][microscope.chamber_camera.image_key].read())
    assert frames.shape[0] == 1 and frames.ndim == 3
    meta = read_metadata(microscope.chamber_camera.last_file)
    pos = be.get_stage_position()
    assert meta["microscope_state"]["stage_position"]["x"] == pytest.approx(pos["x"])
