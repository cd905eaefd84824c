"""Dimensions of the procedural cryo-EM grid and of what grows on it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SceneParameters"]


@dataclass(frozen=True)
class SceneParameters:
    """Dimensions of the procedural grid (metres unless noted)."""

    grid_radius: float = 1.5e-3
    mesh_radius: float = 1.05e-3
    pitch: float = 125e-6               # 200 mesh
    bar_width: float = 35e-6
    bar_height: float = 10e-6           # bar top above the support film
    bar_edge: float = 8e-6              # width of the rounded bar edge (walls ~60 deg)
    rim_edge: float = 20e-6             # width of the grid's outer edge down to the holder
    holder_depth: float = 20e-6         # holder surface below the film, outside the grid
    ice_thickness: tuple[float, float] = (1e-6, 3e-6)
    meniscus_height: float = 1.5e-6
    meniscus_length: float = 8e-6
    bare_fraction: float = 0.15         # holes with bare carbon film (no ice)
    max_cells_per_hole: int = 4
    cell_diameter: tuple[float, float] = (5e-6, 20e-6)
    cell_height: tuple[float, float] = (2e-6, 6e-6)
    particle_spacing: float = 10e-6     # hash lattice of the particles
    particle_probability: float = 0.6
    particle_diameter: tuple[float, float] = (0.3e-6, 1.5e-6)
    frost_spacing: float = 2e-6         # ice-crystal contamination
    frost_probability: float = 0.5
    frost_diameter: tuple[float, float] = (0.06e-6, 0.3e-6)
    waviness_rms: float = 0.5e-6        # large-scale undulation of the whole grid
    waviness_wavelengths: tuple[float, float] = (20e-6, 1.28e-3)
    texture_slope: float = 0.05         # rms slope contributed by each octave of texture
    texture_wavelengths: tuple[float, float] = (20e-9, 20e-6)
    waves_per_octave: int = 8
