"""Shared helpers for the simulator tests (no fixtures at the top level of ``tests/``)."""

from __future__ import annotations

import numpy as np

from fibsem_ophyd.sim import SimulatedMicroscope

#: small frames keep the test module fast; physics does not depend on the frame size
SMALL = [768, 512]


def small_sim(seed: int = 1, config=None) -> SimulatedMicroscope:
    """A simulator with 768 x 512 frames on both beams."""
    sim = SimulatedMicroscope(config, seed=seed)
    for beam in ("electron", "ion"):
        sim.set("resolution", list(SMALL), beam)
    return sim


def laplacian_variance(img: np.ndarray) -> float:
    """Variance of the 4-neighbour Laplacian (a focus metric, OpenFIBSEM's family)."""
    a = img.astype(np.float64)
    lap = a[1:-1, 2:] + a[1:-1, :-2] + a[2:, 1:-1] + a[:-2, 1:-1] - 4 * a[1:-1, 1:-1]
    return float(lap.var())
