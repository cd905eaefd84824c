"""Physically modelled dual-beam FIB-SEM simulator (the default backend).

``SimulatedMicroscope(config=None, seed=0)`` implements
:class:`fibsem_ophyd.backend.MicroscopeBackend`: a procedural cryo-EM grid (:class:`Scene`)
rendered per beam from the true stage pose, with shot noise, detector transfer, defocus, a
simulated clock (:class:`SimClock`), ground truth (``sim.truth``, :class:`Truth`) and fault
injection (:data:`FAULTS`). The state the models and the truth share is :class:`SimState`
(``sim.state``).
"""

from __future__ import annotations

from .clock import SimClock
from .materials import MATERIAL_IDS, MATERIALS, Material
from .microscope import FAULTS, SimulatedMicroscope
from .scene import HeightPatch, Scene, SceneParameters
from .state import SimState
from .truth import Feature, Truth
from .view import BeamView

__all__ = [
    "SimulatedMicroscope",
    "FAULTS",
    "Scene",
    "SceneParameters",
    "HeightPatch",
    "SimClock",
    "SimState",
    "Truth",
    "Feature",
    "BeamView",
    "Material",
    "MATERIALS",
    "MATERIAL_IDS",
]
