"""Materials of the simulated sample and the contrast laws that use them.

Values are the defaults of ``shared/reference/physics.md`` (sections 2 and 3): BSE coefficient
from Z (Reuter), Kanaya-Okayama range, the universal SE-yield curve for the voltage dependence,
sputter rates for later milling. SE/ion-SE yields are calibration defaults, not measurements.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Material",
    "MATERIALS",
    "MATERIAL_IDS",
    "reuter_eta",
    "kanaya_okayama_range",
    "universal_yield",
    "material_table",
]


@dataclass(frozen=True)
class Material:
    """One material of the scene.

    Attributes
    ----------
    name : str
        Short name ("Au", "ice", ...).
    z, a : float
        Effective atomic number and mass (g/mol per atom).
    density : float
        g/cm^3.
    se_yield : float
        Electron-induced SE yield at normal incidence and 2 kV (SE per primary).
    ion_se_yield : float
        Ion-induced SE yield at normal incidence, Ga+ 30 kV (SE per ion). Insulators (ice,
        organics) are low: they charge and image dark in the FIB.
    sputter_rate : float
        Ga+ 30 kV volume removed per charge at normal incidence, um^3/nC (for milling).
    texture : float
        Relative amplitude of the fine surface texture on this material.
    """

    name: str
    z: float
    a: float
    density: float
    se_yield: float
    ion_se_yield: float
    sputter_rate: float
    texture: float = 1.0

    @property
    def eta(self) -> float:
        """Backscatter coefficient at normal incidence (Reuter)."""
        return reuter_eta(self.z)

    @property
    def sec_exponent(self) -> float:
        """Exponent ``n`` of the SE ``sec^n`` law: ~0.8 heavy, ~1.2 light elements."""
        return 1.2 - 0.4 * min(max((self.z - 6.0) / 73.0, 0.0), 1.0)


def reuter_eta(z: float) -> float:
    """Backscatter coefficient eta(Z) at normal incidence (Reuter fit; C 0.06, Pt 0.49)."""
    return -0.0254 + 0.016 * z - 1.86e-4 * z**2 + 8.3e-7 * z**3


def kanaya_okayama_range(material: Material, voltage: float) -> float:
    """Electron range in metres, Kanaya-Okayama, for accelerating ``voltage`` in volts."""
    e_kev = voltage / 1000.0
    r_um = 0.0276 * material.a * e_kev**1.67 / (material.z**0.89 * material.density)
    return r_um * 1e-6


def universal_yield(voltage: float, e_max: float = 600.0) -> float:
    """Relative SE yield delta/delta_max (Lin & Joy universal curve) at ``voltage`` volts.

    ``e_max`` (eV) is the energy of maximum yield; one value for all materials is enough for
    the voltage trend.
    """
    x = max(voltage, 1.0) / e_max
    return 1.28 * x**-0.67 * (1.0 - math.exp(-1.614 * x**1.67))


#: id -> material; ids are the values of the scene's uint8 material map
MATERIALS: tuple[Material, ...] = (
    Material("vacuum", 1.0, 1.0, 1e-3, 0.0, 0.0, 0.0, 0.0),
    Material("Au", 79.0, 197.0, 19.3, 0.9, 2.5, 1.5, 0.35),      # grid bars and rim
    Material("C", 6.0, 12.0, 2.0, 0.35, 0.8, 0.18, 0.25),        # carbon support film
    Material("ice", 7.2, 6.0, 0.93, 0.85, 0.35, 3.0, 1.0),       # vitreous ice (H2O per atom)
    Material("organic", 6.5, 6.5, 1.2, 0.75, 0.45, 2.5, 1.3),    # vitrified cells
    Material("Pt", 78.0, 195.0, 21.4, 0.9, 2.0, 0.25, 0.2),      # bright particles / GIS Pt
    Material("Si", 14.0, 28.1, 2.33, 0.6, 1.5, 0.27, 0.3),
    Material("PtC", 30.0, 60.0, 8.0, 0.7, 1.2, 0.3, 0.5),        # GIS Pt-C deposit
    Material("Cu", 29.0, 63.5, 8.96, 0.7, 3.0, 0.25, 0.6),       # shuttle / holder
    Material("W", 74.0, 183.8, 19.3, 0.9, 2.5, 0.12, 0.2),       # manipulator needle
)
MATERIAL_IDS: dict[str, int] = {m.name: i for i, m in enumerate(MATERIALS)}


def material_table(attribute: str) -> np.ndarray:
    """float32 lookup table ``table[material_id]`` of one material attribute or property."""
    return np.array([float(getattr(m, attribute)) for m in MATERIALS], dtype=np.float32)
