"""Ion imaging erodes the field it scans by dose x yield x rate, slightly; electrons do not."""

from __future__ import annotations

import pytest

from fibsem_ophyd.sim.erosion import FLUSH_DEPTH
from fibsem_ophyd.sim.materials import material_table
from fibsem_ophyd.sim.milling import yamamura

from ._helpers import small_sim


def test_ion_frames_erode_by_dose_times_yield():
    sim = small_sim(seed=5)
    sim.move_stage_absolute({"t": 52.0})  # flat to the ion column: normal incidence
    sim.set("hfw", 10e-6, "ion")
    sim.set("current", 1e-9, "ion")
    centre = sim.truth.surface_point("ion")
    h0 = float(sim.scene.height([centre[0]], [centre[1]])[0])
    n = 10
    for _ in range(n):
        sim.acquire_image("ion")
    for _ in range(n):
        sim.acquire_image("electron")  # electrons sputter nothing
    w, h = sim.get("resolution", "ion")
    dwell = sim.get("dwell_time", "ion")
    area = 10e-6 * (10e-6 * h / w)
    view = sim.truth.view("ion")
    _, mat = sim.scene.evaluate([centre[0]], [centre[1]])
    rate = float(material_table("sputter_rate")[int(mat[0])]) * 1e-9
    expected = n * 1e-9 * dwell * w * h / area * float(yamamura(view.incidence_cos())) * rate
    assert expected > 10 * FLUSH_DEPTH  # nanometres: written to the scene
    h1 = float(sim.scene.height([centre[0]], [centre[1]])[0])
    assert h0 - h1 == pytest.approx(expected, rel=0.05)
    assert sim.truth.imaging_erosion(centre) == pytest.approx(expected, rel=1e-6)
    # outside the imaged field nothing changed
    far = centre[0] + 20e-6
    assert sim.truth.imaging_erosion([far, centre[1]]) == 0.0


def test_imaging_current_erosion_is_slight_and_blanked_beam_none():
    sim = small_sim(seed=5)
    sim.set("blanked", True, "ion")
    sim.acquire_image("ion")
    assert not sim.erosion.fields
    sim.set("blanked", False, "ion")
    sim.acquire_image("ion")  # the default imaging current over the default field
    (field,) = sim.erosion.fields.values()
    assert 0 < field["pending"] < 0.1e-9  # hundredths of a nanometre
