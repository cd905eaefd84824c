"""Sputter rates for Ga+ at 30 kV: volume removed per charge (physics notes, section 3)."""

from __future__ import annotations

__all__ = ["SPUTTER_RATES_UM3_PER_NC", "sputter_rate", "MATERIALS"]

#: volume per charge, um^3/nC (the unit application files use). Si is the vendor
#: application-file value; vitreous ice is the notes' default "3, calibrate".
SPUTTER_RATES_UM3_PER_NC = {
    "Si": 0.27,
    "C": 0.18,
    "Pt": 0.25,
    "ice": 3.0,
}
MATERIALS = tuple(SPUTTER_RATES_UM3_PER_NC)

# 1 um^3 / 1 nC = 1e-18 m^3 / 1e-9 C
_UM3_PER_NC_TO_M3_PER_C = 1e-9


def sputter_rate(material: str) -> float:
    """Volume removed per unit charge, m^3/C, for ``material`` ("Si", "C", "Pt", "ice")."""
    try:
        return SPUTTER_RATES_UM3_PER_NC[material] * _UM3_PER_NC_TO_M3_PER_C
    except KeyError:
        raise ValueError(
            f"unknown material {material!r}; known materials: {list(MATERIALS)}"
        ) from None
