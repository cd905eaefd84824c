"""Deposited layers on the simulator: cryo GIS thickness from rate x time x (d_ref/d)^2 x
cos(angle to the nozzle), sputter coats from rate x current x time, the surface material and
the clock."""

import math

import numpy as np
import pytest

from fibsem_ophyd import geometry as G
from fibsem_ophyd.backend import BackendError
from fibsem_ophyd.sim.deposition import GIS_INSERT_TIME, GIS_RATE, SPUTTER_OVERHEAD
from fibsem_ophyd.sim.materials import MATERIAL_IDS, material_table
from fibsem_ophyd.sim.milling import UM3_PER_NC
from fibsem_ophyd.sim.scene import erode_layers

from ._helpers import small_sim


def _rise(sim, deposit):
    """Deposit and return (height rise at the surface point on the electron axis, point)."""
    p = sim.truth.surface_point("electron")
    x, y = np.array([p[0]]), np.array([p[1]])
    h0 = float(sim.scene.height(x, y)[0])
    deposit()
    return float(sim.scene.height(x, y)[0]) - h0, p


def _gis(sim, position, seconds):
    def run():
        sim.set("gis_position", position)
        sim.gis_deposit(seconds)
    return run


@pytest.mark.parametrize("tilt, position, seconds, expected", [
    # flat sample (35 deg stage tilt on the 35 deg pre-tilt), nozzle 45 deg above it, 2.83 mm
    (35.0, "cryo", 20.0, GIS_RATE * 20 * math.cos(math.radians(45))),
    # tilted 20 deg about the stage x axis: the nozzle (in the x-z plane) sees cos 20 of it
    (15.0, "cryo", 20.0,
     GIS_RATE * 20 * math.cos(math.radians(45)) * math.cos(math.radians(20))),
    # the "electron_default" nozzle is 0.42 mm away: (2.83 / 0.42)^2 = 44.4 times the rate
    (35.0, "electron_default", 1.0, GIS_RATE * (2.0 / 0.3) ** 2 * math.cos(math.radians(45))),
])
def test_cryo_layer_follows_rate_time_distance_and_angle(tilt, position, seconds, expected):
    sim = small_sim()
    sim.move_stage_absolute({"t": tilt})
    rise, p = _rise(sim, _gis(sim, position, seconds))
    assert rise == pytest.approx(expected, rel=0.005)
    # what is left is one layer of the gas's material, and the surface shows it
    (mid, th), = sim.scene.layers_at(p[0], p[1])
    assert mid == MATERIAL_IDS["PtC"] and float(th) == pytest.approx(rise, rel=1e-4)
    assert sim.scene.evaluate(np.array([p[0]]), np.array([p[1]]))[1][0] == MATERIAL_IDS["PtC"]


def test_cryo_deposition_takes_its_time_and_needs_the_needle_in():
    sim = small_sim()
    with pytest.raises(BackendError, match="retracted"):
        sim.gis_deposit(10.0)
    t0 = sim.time()
    sim.set("gis_position", "cryo")
    sim.gis_deposit(12.5)
    sim.set("gis_position", "retracted")
    assert sim.time() - t0 == pytest.approx(12.5 + 2 * GIS_INSERT_TIME)
    for bad in (0.0, -1.0, float("nan"), 601.0, "10"):
        with pytest.raises(ValueError, match="GIS valve time"):
            sim.gis_deposit(bad)
    with pytest.raises(ValueError, match="not one of"):
        sim.set("gis_position", "nowhere")
    with pytest.raises(ValueError, match="not one of"):
        sim.set("gis_gas", "W(CO)6")


def test_sputter_coat_is_uniform_and_shows_platinum():
    sim = small_sim()
    sim.set("sputter_current", 15e-3)
    t0 = sim.time()
    rise, p = _rise(sim, lambda: sim.sputter_coat(20.0))
    assert rise == pytest.approx(3e-8 * 15e-3 * 20.0, rel=1e-3)  # 9 nm
    assert sim.time() - t0 == pytest.approx(20.0 + SPUTTER_OVERHEAD)
    # the same thickness 1 mm away, whatever the pose (conformal)
    far = sim.scene.layers_at(p[0] + 1e-3, p[1] - 0.5e-3)[0][1]
    assert float(far) == pytest.approx(rise, rel=1e-3)
    assert sim.scene.evaluate(np.array([p[0]]), np.array([p[1]]))[1][0] == MATERIAL_IDS["Pt"]
    with pytest.raises(ValueError, match="sputter_current"):
        sim.set("sputter_current", 0.5)


def test_no_deposition_in_a_vented_chamber_or_without_the_hardware():
    sim = small_sim()
    sim.vent()
    sim.set("gis_position", "cryo")
    with pytest.raises(BackendError, match="vented"):
        sim.gis_deposit(5.0)
    with pytest.raises(BackendError, match="vented"):
        sim.sputter_coat(5.0)
    assert not sim.scene.patches
    bare = small_sim(config={"gis": {"enabled": False, "sputter_coater": False}})
    with pytest.raises(BackendError, match="no gas injection system"):
        bare.set("gis_position", "cryo")
    with pytest.raises(BackendError, match="no sputter coater"):
        bare.sputter_coat(5.0)


def test_layers_are_milled_top_down_at_their_own_rates():
    """Sputter (Pt) over GIS (PtC): a milling takes the Pt first, then the PtC, then the
    sample; ``layers_at`` replays it from the recorded removal."""
    sim = small_sim()
    p = sim.truth.surface_point("electron")
    sim.set("gis_position", "cryo")
    sim.gis_deposit(10.0)
    sim.sputter_coat(10.0)
    layers = sim.scene.layers_at(p[0], p[1])
    assert [m for m, _ in layers] == [MATERIAL_IDS["PtC"], MATERIAL_IDS["Pt"]]
    pt, ptc = float(layers[1][1]), float(layers[0][1])
    rates = material_table("sputter_rate").astype(float) * UM3_PER_NC
    stack = [(m, np.array([float(t)])) for m, t in layers]
    # the charge (per area) that takes all the Pt and half the PtC
    budget = np.array([pt / rates[MATERIAL_IDS["Pt"]] + 0.5 * ptc / rates[MATERIAL_IDS["PtC"]]])
    removed = erode_layers(stack, budget, rates)
    assert float(removed[0]) == pytest.approx(pt + 0.5 * ptc, rel=1e-9)
    assert float(stack[1][1][0]) == 0.0 and float(stack[0][1][0]) == pytest.approx(0.5 * ptc)
    assert float(budget[0]) == pytest.approx(0.0, abs=1e-6 * float(removed[0]))


def test_a_cryo_layer_stops_ice_imaging_dark_in_the_fib():
    """Ice charges and gives few ion-induced electrons (dark in the FIB); under PtC the same
    field images at PtC's yield: brighter, at the same detector settings."""
    sim = small_sim()
    c = sim.truth.surface_point("ion")
    assert sim.scene.evaluate(np.array([c[0]]), np.array([c[1]]))[1][0] == MATERIAL_IDS["ice"]
    h, w = sim.get("resolution", "ion")[::-1]
    centre = (slice(h // 2 - h // 10, h // 2 + h // 10), slice(w // 2 - w // 10, w // 2 + w // 10))
    before = sim.acquire_image("ion")[centre].mean()
    sim.set("gis_position", "cryo")
    sim.gis_deposit(30.0)
    after = sim.acquire_image("ion")[centre].mean()
    assert after > before + 10.0, (before, after)  # grey levels


def test_the_inserted_gis_needle_shows_at_low_magnification():
    """At 0.9 mm field width the "electron_default" nozzle (0.42 mm from the coincidence
    point, up and to the left, 0.25 mm radius) covers the frame up to x = -0.3 + 0.25 mm in
    the electron image; the "cryo" position (2.8 mm away) is out of the frame."""
    sim = small_sim()
    sim.set("hfw", 0.9e-3, "electron")
    clean = sim.render_clean("electron")
    sim.set("gis_position", "cryo")
    assert np.array_equal(sim.render_clean("electron"), clean)
    sim.set("gis_position", "electron_default")
    inserted = sim.render_clean("electron")
    changed = np.abs(inserted - clean) > 0.05 * clean.mean()
    cols = np.nonzero(changed.any(axis=0))[0]
    h, w = clean.shape
    right_edge, _ = G.image_to_pixel(-0.3e-3 + 0.25e-3, 0.0, (h, w), 0.9e-3 / w)
    assert cols.min() == 0 and cols.max() == pytest.approx(right_edge, abs=2.0)
    sim.set("gis_position", "retracted")
    assert np.array_equal(sim.render_clean("electron"), clean)
