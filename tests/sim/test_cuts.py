"""The lamella ground truth: beam-parallel cuts leave a slab whose thickness geometry and the
probe predict, at any beam incidence, fixed in the sample frame."""

from __future__ import annotations

import numpy as np
import pytest

from fibsem_ophyd.milling import RectanglePattern, Trench
from fibsem_ophyd.sim.cuts import TAIL_WEIGHT
from fibsem_ophyd.sim.milling import yamamura

from ._helpers import small_sim


def _mill(sim, pattern, current=5e-11):
    return sim.mill(pattern.shapes(), current, hfw=40e-6, application_file="ice")


@pytest.mark.parametrize("tilt", [52.0, 25.0])
def test_trench_leaves_a_slab_of_its_spacing(tilt):
    """A trench with a 300 nm gap leaves 300 nm (+- the probe's few nm) at mid-depth, whether
    the ion beam meets the surface head-on (52 deg tilt: flat to the ion column) or 27 deg
    off the normal."""
    sim = small_sim(seed=4)
    sim.move_stage_absolute({"t": tilt})
    sim.set("hfw", 40e-6, "ion")
    top = sim.truth.surface_point("ion")
    _mill(sim, Trench(width=6e-6, upper_trench_height=2e-6, lower_trench_height=2e-6,
                      spacing=300e-9, depth=1e-6))
    slab = sim.truth.lamella(top, depth=0.5e-6)
    assert slab["inside"] and slab["bounded"]
    assert slab["thickness"] == pytest.approx(300e-9, abs=8e-9)
    assert abs(slab["centre_offset"]) < 3e-9
    # deeper than the trench: the material below is intact, the slab is not bounded
    assert not sim.truth.lamella(top, depth=1.3e-6)["bounded"]


def test_column_length_is_dose_times_rate_and_cuts_add_up():
    sim = small_sim(seed=4)
    sim.move_stage_absolute({"t": 52.0})
    sim.set("hfw", 40e-6, "ion")
    top = sim.truth.surface_point("ion")
    box = RectanglePattern(width=4e-6, height=4e-6, depth=0.4e-6)
    _mill(sim, box)
    (cut,) = sim.cuts
    d, below = cut.column(top[None, :])
    # the pattern's depth in the application material (ice on ice): 0.4 um, less the share
    # of the 2 % tail that falls outside a 4 um box
    assert float(d[0]) == pytest.approx(0.4e-6, rel=TAIL_WEIGHT)
    assert float(below[0]) == pytest.approx(0.0, abs=0.1e-6)  # the top is on the plane
    _mill(sim, box)
    # a second pass on the same columns mills on: 0.8 um deep, so 0.6 um down is gone
    assert not sim.truth.lamella(top, depth=0.6e-6)["inside"]


def test_a_stage_move_between_cuts_misplaces_the_second():
    """Cuts are fixed on the sample: moving the stage by 200 nm between the two halves of a
    trench makes the slab 200 nm thinner, as it would on a real sample."""
    sim = small_sim(seed=4)
    sim.move_stage_absolute({"t": 52.0})
    sim.set("hfw", 40e-6, "ion")
    top = sim.truth.surface_point("ion")
    upper, lower = Trench(width=6e-6, upper_trench_height=2e-6, lower_trench_height=2e-6,
                          spacing=500e-9, depth=1e-6).shapes()
    sim.mill([upper], 5e-11, hfw=40e-6, application_file="ice")
    pos = sim.get_stage_position()
    v_before = sim.truth.project(top, "ion")[1]
    sim.move_stage_absolute({"y": pos["y"] + 200e-9})
    # the sample point moved by dv (m, image +v, +y up) in the ion image; the lower cut,
    # placed in the image as before, lands dv lower on the sample: the slab grows by dv
    dv = -(sim.truth.project(top, "ion")[1] - v_before) * sim.truth.pixel_size("ion")
    sim.mill([lower], 5e-11, hfw=40e-6, application_file="ice")
    slab = sim.truth.lamella(top, depth=0.5e-6)
    assert abs(dv) > 150e-9
    assert slab["thickness"] == pytest.approx(500e-9 + dv, abs=10e-9)
    assert abs(slab["thickness"] - 500e-9) > 150e-9


def test_redeposition_raises_a_rim_with_its_share_of_the_volume():
    """5 % of what a box removes lands around it (the floor keeps its depth): the patch's
    raised volume is 5 % of its removed volume, all of it outside the box, within ~2 um."""
    from fibsem_ophyd.sim.milling import REDEPOSITION

    sim = small_sim(seed=4)
    sim.move_stage_absolute({"t": 52.0})
    sim.set("hfw", 40e-6, "ion")
    _mill(sim, RectanglePattern(width=4e-6, height=4e-6, depth=0.5e-6))
    patch = sim.scene.patches[-1]
    dh = patch.dh.astype(float)
    removed, raised = -dh[dh < 0].sum(), dh[dh > 0].sum()
    assert raised == pytest.approx(REDEPOSITION * removed, rel=0.02)
    ny, nx = dh.shape
    ys, xs = np.nonzero(dh > 0.01 * dh.max())
    cx, cy = (nx - 1) / 2, (ny - 1) / 2
    reach = np.hypot(xs - cx, ys - cy).max() * patch.spacing
    assert 2e-6 < reach < 2e-6 * 2 ** 0.5 + 2.5e-6  # beyond the box's half width, not far


def test_a_cut_crosses_a_deposited_layer_first():
    """Under a cryo PtC layer of vertical thickness L, the beam crosses L / cos(beam to
    normal) of PtC at 0.3 um^3/nC x Yamamura's Y(theta)/Y0 (the surface's incidence) before
    the ice at 3: the column is shorter than without the layer by that path x
    (3 / (0.3 Y) - 1)."""
    depths = []
    for coat in (False, True):
        sim = small_sim(seed=4)
        sim.move_stage_absolute({"t": 30.0})
        sim.set("hfw", 40e-6, "ion")
        if coat:
            sim.set("gis_position", "cryo")
            sim.gis_deposit(2.0)
        top = sim.truth.surface_point("ion")
        if coat:
            (_, th), = sim.scene.layers_at(top[0], top[1])  # before the milling takes it
        _mill(sim, RectanglePattern(width=4e-6, height=4e-6, depth=1.5e-6))
        (cut,) = sim.cuts
        depths.append(float(cut.column(top[None, :])[0][0]))
        if coat:
            cos = abs(float(cut.beam[2]))
            path, y = float(th) / cos, float(yamamura(np.array(cos)))
    assert 20e-9 < path < 200e-9 and y > 1.0
    assert depths[1] == pytest.approx(depths[0] - path * (3.0 / (0.3 * y) - 1.0), rel=0.01)
