"""Shared helpers of the plan tests (no fixtures)."""

import numpy as np

from fibsem_ophyd.plans import move_flat_to_beam
from fibsem_ophyd.sim.materials import MATERIAL_IDS
from fibsem_ophyd.sim.scene import HeightPatch

BOX = {
    "name": "box",
    "milling": {"milling_current": 1e-9, "hfw": 80e-6, "material": "Si"},
    "pattern": {"name": "Rectangle", "width": 10e-6, "height": 5e-6, "depth": 2e-6},
    "alignment": {"enabled": False},
}


def silicon_under_ion_beam(session):
    """Flat to the ion beam, with a silicon block under it; returns the centre point."""
    session.RE(move_flat_to_beam(session.microscope, "ion"))
    sim = session.backend
    c = sim.truth.surface_point("ion")
    n, sp = 201, 0.25e-6
    sim.scene.add_patch(HeightPatch(
        x0=c[0] - 25e-6, y0=c[1] - 25e-6, spacing=sp, dh=np.zeros((n, n)),
        material=np.full((n, n), MATERIAL_IDS["Si"], np.uint8)))
    return c


def height_at(sim, xy):
    return float(sim.scene.height(np.array([xy[0]]), np.array([xy[1]]))[0])
