"""RasterGrid: an affine grid of sample points, the lattice every raster is computed on."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = ["RasterGrid"]


@dataclass(frozen=True)
class RasterGrid:
    """Affine grid of sample points: node ``(i, j)`` (column i, row j) is at
    ``origin + i*di + j*dj`` (sample frame, metres); the array shape is ``(nj, ni)``."""

    origin: tuple[float, float]
    di: tuple[float, float]
    dj: tuple[float, float]
    ni: int
    nj: int

    def jacobian(self) -> np.ndarray:
        """2x2 matrix whose columns are ``di`` and ``dj``."""
        return np.array([[self.di[0], self.dj[0]], [self.di[1], self.dj[1]]])

    def bbox(self) -> tuple[float, float, float, float]:
        o = np.array(self.origin)
        corners = [o, o + (self.ni - 1) * np.array(self.di), o + (self.nj - 1) * np.array(self.dj),
                   o + (self.ni - 1) * np.array(self.di) + (self.nj - 1) * np.array(self.dj)]
        c = np.array(corners)
        return (float(c[:, 0].min()), float(c[:, 0].max()),
                float(c[:, 1].min()), float(c[:, 1].max()))

    def spacing(self) -> float:
        """Geometric-mean node spacing (m)."""
        return math.sqrt(math.hypot(*self.di) * math.hypot(*self.dj))
