"""A lamella protocol on the simulator: sections in order, trenches milled, lamella left."""

import numpy as np
import pytest

from fibsem_ophyd.geometry import image_to_pixel
from fibsem_ophyd.plans import mill_lamella

ICE = {"milling_current": 2e-10, "hfw": 80e-6, "material": "ice"}
PROTOCOL = {
    "milling": {
        "mill_rough": [{
            "name": "rough", "milling": {**ICE, "milling_current": 7.4e-10},
            "pattern": {"name": "Trench", "width": 10e-6, "upper_trench_height": 3.5e-6,
                        "lower_trench_height": 3.5e-6, "spacing": 2e-6, "depth": 1.5e-6},
        }],
        "mill_polishing": [{
            "name": "polish", "milling": {**ICE, "milling_current": 6e-11},
            "pattern": {"name": "Trench", "width": 9e-6, "upper_trench_height": 0.7e-6,
                        "lower_trench_height": 0.7e-6, "spacing": 0.6e-6, "depth": 1.5e-6},
        }],
        "microexpansion": {
            "name": "stress relief", "milling": ICE,
            "pattern": {"name": "MicroExpansion", "width": 0.5e-6, "height": 12e-6,
                        "distance": 8e-6, "depth": 1e-6},
        },
        "fiducial": {
            "name": "fiducial", "milling": ICE,
            "pattern": {"name": "Fiducial", "height": 6e-6, "width": 1e-6, "depth": 0.5e-6,
                        "point": {"x": -25e-6, "y": 0.0}},
        },
    }
}


def _surface_z(sim, x_img, y_img):
    view = sim.truth.view("ion")
    col, row = image_to_pixel(x_img, y_img, (view.height, view.width), view.pixel)
    p = sim.truth.surface_point("ion", float(col), float(row))
    return p


def test_lamella_sections_in_order_trenches_milled_lamella_left(session, microscope):
    sim = session.backend
    microscope.fib.hfw.set(80e-6).wait()
    microscope.ion_beam.hfw.set(80e-6).wait()
    res = session.RE(mill_lamella(microscope, PROTOCOL, lamella="L1", milling_angle=15.0)) \
        .plan_result
    assert microscope.stage.t.position == pytest.approx(12.0)
    assert res["sections"] == ["fiducial", "microexpansion", "mill_rough", "mill_polishing"]
    for i, name in enumerate(res["sections"]):
        start = session.catalog[res["runs"][name]].metadata["start"]
        assert (start["lamella"], start["section"], start["section_index"]) == ("L1", name, i)
    assert set(res["drift"]) == {"microexpansion", "mill_rough", "mill_polishing"}
    # sample-frame heights: trenches went down about their depth, the lamella did not
    view = sim.truth.view("ion")
    lamella = sim.truth.surface_point("ion")
    upper = _surface_z(sim, 0.0, 1.0e-6 + 1.75e-6)
    assert lamella is not None and upper is not None
    heights = sim.scene.height(np.array([lamella[0], upper[0]]),
                               np.array([lamella[1], upper[1]]))
    assert view is not None
    assert heights[1] < heights[0] - 1.0e-6  # the rough trench is >= 1 um deep
    sim_time = sim.time()
    assert sim_time > 0
