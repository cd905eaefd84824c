"""Deposition plans on the simulator: what the run records, the layer the dose then has to
mill through (depth = dose x yield, layer first), and bad input refused before anything."""

import numpy as np
import pytest

from fibsem_ophyd.backend import BackendError
from fibsem_ophyd.plans import cryo_deposition, mill_stages, save_position, sputter_coat
from fibsem_ophyd.sim.deposition import GIS_INSERT_TIME, SPUTTER_OVERHEAD
from fibsem_ophyd.sim.materials import MATERIAL_IDS, MATERIALS
from fibsem_ophyd.storage import load_images

from .._catalog import count_runs
from ._helpers import BOX, height_at, silicon_under_ion_beam

_RATE = {m.name: m.sputter_rate for m in MATERIALS}  # um^3/nC


def _material(sim, xy):
    return int(sim.scene.evaluate(np.array([xy[0]]), np.array([xy[1]]))[1][0])


def test_cryo_deposition_run_records_images_and_the_valve(session, microscope):
    sim = session.backend
    p = sim.truth.surface_point("electron")
    h0 = height_at(sim, p)
    uid = session.RE(cryo_deposition(microscope, time=15.0, md={"sample": "grid-3"})).plan_result
    run = session.catalog[uid]
    start = run.metadata["start"]
    assert run.metadata["stop"]["exit_status"] == "success"
    assert (start["plan_name"], start["gas"], start["deposition_time"], start["sample"]) == (
        "cryo_deposition", "Pt cryo", 15.0, "grid-3")
    dep = run["deposition"].read()
    assert list(np.asarray(dep["microscope_gis_insert_position"])) == ["cryo"]
    assert float(np.asarray(dep["microscope_gis_last_time"])[0]) == 15.0
    for beam in ("electron", "ion"):
        steps = list(np.asarray(run[beam].read()["deposition_record_deposition_step"]))
        assert steps == ["before", "after"]
        assert len(load_images(run, beam)) == 2
    # the needle is out again, and the layer is on the sample: 40 nm/s x 15 s x cos 45
    assert microscope.gis.insert_position.get() == "retracted"
    assert height_at(sim, p) - h0 == pytest.approx(40e-9 * 15 * 0.7071, rel=0.01)


def test_cryo_deposition_takes_an_openfibsem_protocol_and_a_saved_position(session,
                                                                           microscope):
    sim = session.backend
    session.RE(save_position(microscope, "grid-01"))
    start = sim.get_stage_position()
    session.RE(cryo_deposition(microscope, images=False, name="grid-01", protocol={
        "application_file": "cryo_Pt_dep", "gas": "Pt cryo", "position": "cryo",
        "hfw": 3.0e-5, "length": 7.0e-6, "beam_current": 1.0e-8, "time": 30.0}))
    run = session.catalog.values().last()
    assert run.metadata["start"]["deposition_time"] == 30.0
    assert run.metadata["start"]["protocol_not_used"]["beam_current"] == 1.0e-8
    assert sim.get_stage_position() == pytest.approx(start)
    assert list(run) == ["deposition"]
    # valve time plus needle in and out (the stage was already there)
    assert sim.gis.history == [("gis", 30.0)]


def test_sputter_coat_run(session, microscope):
    sim = session.backend
    p = sim.truth.surface_point("electron")
    h0, t0 = height_at(sim, p), sim.time()
    uid = session.RE(sputter_coat(microscope, time=20.0, current=5e-3, images=False)).plan_result
    dep = session.catalog[uid]["deposition"].read()
    assert float(np.asarray(dep["microscope_sputter_coater_last_time"])[0]) == 20.0 + \
        SPUTTER_OVERHEAD
    assert float(np.asarray(dep["microscope_sputter_coater_current"])[0]) == 5e-3
    assert height_at(sim, p) - h0 == pytest.approx(3e-8 * 5e-3 * 20.0, rel=1e-3)  # 3 nm
    assert sim.time() - t0 == pytest.approx(20.0 + SPUTTER_OVERHEAD)
    assert _material(sim, p) == MATERIAL_IDS["Pt"]


def test_milling_goes_through_the_protective_layer_first(session, microscope):
    """A 2 um silicon box under a PtC layer L: the charge first removes L at PtC's rate, the
    rest mills silicon, so the floor ends 2 um - L x R_Si / R_PtC below the old surface, and
    silicon shows there while PtC still covers the rest."""
    sim = session.backend
    c = silicon_under_ion_beam(session)
    h0 = height_at(sim, c)
    session.RE(cryo_deposition(microscope, time=20.0, images=False))
    layer = height_at(sim, c) - h0
    assert layer > 0.2e-6
    t0 = sim.time()
    session.RE(mill_stages(microscope, [BOX]))
    depth = h0 - height_at(sim, c)
    assert depth == pytest.approx(2e-6 - layer * _RATE["Si"] / _RATE["PtC"], rel=0.05)
    assert _material(sim, c) == MATERIAL_IDS["Si"]
    assert _material(sim, (c[0] + 15e-6, c[1])) == MATERIAL_IDS["PtC"]
    # the charge (and so the time) is the one the pattern asks for, layer or not
    assert sim.time() - t0 > 370.0


def test_a_shallow_cut_stays_in_the_layer(session, microscope):
    sim = session.backend
    c = silicon_under_ion_beam(session)
    session.RE(cryo_deposition(microscope, time=20.0, images=False))
    h1 = height_at(sim, c)
    shallow = {**BOX, "pattern": {**BOX["pattern"], "depth": 0.1e-6}}
    session.RE(mill_stages(microscope, [shallow]))
    # 0.1 um of silicon's worth of charge takes 0.1 x R_PtC / R_Si of PtC
    assert h1 - height_at(sim, c) == pytest.approx(0.1e-6 * _RATE["PtC"] / _RATE["Si"],
                                                   rel=0.05)
    assert _material(sim, c) == MATERIAL_IDS["PtC"]


@pytest.mark.parametrize("kwargs, match", [
    ({"time": -5.0}, "time must be a time in"),
    ({"time": float("nan")}, "time must be a time in"),
    ({"time": 900.0}, "time must be a time in"),
    ({"gas": "W(CO)6"}, "unknown value 'W\\(CO\\)6'"),
    ({"insert_position": "park"}, "unknown value 'park'"),
    ({"insert_position": "retracted"}, "not 'retracted'"),
    ({"protocol": {"time": 10.0, "dwell": 1e-6}}, "unknown GIS protocol key"),
    ({"name": "nowhere"}, "unknown position 'nowhere'"),
])
def test_bad_deposition_refused_before_anything(session, microscope, kwargs, match):
    sim = session.backend
    t0, n_runs = sim.time(), count_runs(session.catalog)
    with pytest.raises(ValueError, match=match):
        session.RE(cryo_deposition(microscope, **kwargs))
    assert sim.time() == t0 and not sim.scene.patches
    assert microscope.gis.insert_position.get() == "retracted"
    assert count_runs(session.catalog) == n_runs
    with pytest.raises(ValueError, match="outside its limits"):
        session.RE(sputter_coat(microscope, current=1.0))


@pytest.mark.session_kwargs(suspenders=False)  # with them the run waits for the vacuum
def test_a_failed_deposition_closes_the_run_fail_and_keeps_the_before_images(session,
                                                                            microscope):
    sim = session.backend
    p = sim.truth.surface_point("electron")
    original = sim.acquire_image

    def vent_after_the_before_images(beam, settings=None):
        frame = original(beam, settings)
        if beam == "ion":  # the chamber vents once both "before" frames are taken
            sim.vent()
        return frame

    sim.acquire_image = vent_after_the_before_images
    t0, h0 = sim.time(), height_at(sim, p)
    with pytest.raises(BackendError, match="vented"):
        session.RE(cryo_deposition(microscope, time=5.0))
    run = session.catalog.values().last()
    assert run.metadata["stop"]["exit_status"] == "fail"
    assert "cannot deposit: the chamber is vented" in run.metadata["stop"]["reason"]
    assert not sim.scene.patches and height_at(sim, p) == h0
    # the needle went in and came out again (the vent took its time), nothing was deposited
    assert sim.time() - t0 >= 2 * GIS_INSERT_TIME
    assert microscope.gis.insert_position.get() == "retracted"
    for beam in ("electron", "ion"):  # what was taken before the failure reads back
        (image,) = load_images(run, beam)
        assert image.data.shape == (256, 384)


@pytest.mark.parametrize("material", ["ice", "Si"])
def test_a_coated_lamella_needs_a_protocol_with_dose_for_the_coat(session, microscope,
                                                                  material):
    """After a sputter coat and 5 s of cryo GIS (~0.14 um PtC here), a protocol whose depths
    are ice depths spends its dose in the layer (0.14 um of PtC takes the charge of 1.4 um of
    ice), so no slab is cut 0.75 um down; the same protocol in silicon units (as vendor
    application files are calibrated: ~11x the charge in ice) cuts through and leaves the
    polish spacing (600 nm)."""
    import json

    from fibsem_ophyd.plans import mill_lamella, move_to_milling_angle

    from .test_mill_lamella import PROTOCOL

    sim = session.backend
    protocol = json.loads(json.dumps(PROTOCOL).replace('"ice"', f'"{material}"'))
    session.RE(sputter_coat(microscope, images=False))
    session.RE(cryo_deposition(microscope, time=5.0, images=False))
    for det in (microscope.fib, microscope.ion_beam):
        det.hfw.set(80e-6).wait()
    session.RE(move_to_milling_angle(microscope, 15.0))
    site = sim.truth.surface_point("ion")
    (_, pt), (_, ptc) = sim.scene.layers_at(site[0], site[1])  # bottom first
    assert 0.1e-6 < float(ptc) < 0.2e-6 and float(pt) == pytest.approx(3e-9, rel=1e-3)
    session.RE(mill_lamella(microscope, protocol, lamella="L1"))
    slab = sim.truth.lamella(site, depth=0.75e-6)
    if material == "ice":
        assert not slab["bounded"]
    else:
        assert slab["inside"] and slab["bounded"]
        assert slab["thickness"] == pytest.approx(600e-9, abs=50e-9)
