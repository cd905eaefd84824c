"""Contrast: the yield of each surface node from its normal, material, detector and edges."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..geometry import ELECTRON
from .materials import (
    MATERIAL_IDS,
    MATERIALS,
    kanaya_okayama_range,
    material_table,
    universal_yield,
)
from .optics import gaussian_blur
from .scene import RasterGrid
from .view import BeamView

__all__ = ["Shading", "shade", "halo"]


# detector directionality (coefficient of n.d) and chamber direction towards the detector
_DETECTORS = {
    "ETD": (0.35, (-0.6, 0.3, 0.74)),
    "TLD": (0.08, (0.0, 0.0, 1.0)),
    "ICE": (0.15, (0.5, -0.3, 0.81)),
    "CDEM": (0.2, (0.6, 0.3, 0.74)),
}
_BETA_SE = 2.5          # SE2 from backscattered electrons: delta (1 + beta eta)
_ICE = MATERIAL_IDS["ice"]
_AU = MATERIAL_IDS["Au"]


@dataclass(frozen=True)
class Shading:
    """Contrast model of one beam/detector setting (per-material lookup tables)."""

    beam: str
    mode: str               # "SE", "BSE" (electron) or "ISE" (ion-induced SE)
    base: np.ndarray        # yield at normal incidence, per material
    exponent: np.ndarray    # angular exponent per material
    k_det: float
    det_dir: tuple[float, float, float]
    k_edge: float
    edge_sigma: float       # m
    reference: float        # yield that maps to mid-grey at brightness = contrast = 0.5

    @classmethod
    def build(cls, beam: str, detector_type: str, detector_mode: str, voltage: float) -> Shading:
        k_det, det = _DETECTORS.get(detector_type, _DETECTORS["ETD"])
        v = np.array(det) / np.linalg.norm(det)
        z = material_table("z")
        if beam == ELECTRON and detector_mode == "BackscatterElectrons":
            base = np.array([m.eta if m.name != "vacuum" else 0.0 for m in MATERIALS],
                            dtype=np.float32)
            # Arnal: eta(theta) = (1 + cos)^(-9/sqrt Z), written relative to normal incidence
            expo = (9.0 / np.sqrt(np.maximum(z, 1.0))).astype(np.float32)
            return cls(beam, "BSE", base, expo, 0.0, tuple(v), 0.12, 20e-9,
                       reference=5.0 * float(base[_ICE]))
        if beam == ELECTRON:
            eta = np.array([max(m.eta, 0.0) for m in MATERIALS], dtype=np.float32)
            fv = universal_yield(voltage) / universal_yield(2000.0)
            base = material_table("se_yield") * np.float32(fv) * (1 + _BETA_SE * eta)
            expo = material_table("sec_exponent")
            sigma = max(0.3 * kanaya_okayama_range(MATERIALS[_ICE], voltage), 2e-9)
            return cls(beam, "SE", base.astype(np.float32), expo, k_det, tuple(v), 0.6, sigma,
                       reference=2.85 * float(base[_ICE]))
        fv = math.sqrt(max(voltage, 500.0) / 30000.0)
        base = material_table("ion_se_yield") * np.float32(fv)
        expo = material_table("sec_exponent") + np.float32(0.3)
        return cls(beam, "ISE", base.astype(np.float32), expo.astype(np.float32), k_det,
                   tuple(v), 0.8, 10e-9, reference=2.2 * float(base[_AU]))


def _facing(vec, hx: np.ndarray, hy: np.ndarray, inv_norm: np.ndarray,
            scratch: np.ndarray | None = None) -> np.ndarray:
    """``|vec|`` times the cos of the angle between the local normal ``(-Hx, -Hy, 1)/|.|``
    and ``vec`` (sample frame); ``scratch`` (the shape of ``hx``) may be overwritten."""
    v = np.asarray(vec, dtype=np.float32)
    out = None
    for comp, grad in ((v[0], hx), (v[1], hy)):
        if abs(comp) > 1e-7:
            if out is None:
                out = np.multiply(grad, -comp)
            else:
                out -= np.multiply(grad, comp, out=scratch)
    if out is None:
        return np.multiply(inv_norm, v[2])
    out += v[2]
    out *= inv_norm
    return out


def halo(grid: RasterGrid, shading: Shading) -> int:
    """Nodes of neighbourhood the shading of a node reads: the gradient's and the edge
    high-pass's (one node, or ~4 sigma of their Gaussians) and the material smoothing's."""
    sp_i = math.hypot(*grid.di)
    sp_j = math.hypot(*grid.dj)
    sig_m = max(shading.edge_sigma, min(sp_i, sp_j))
    s_edge = max(sig_m / sp_i, sig_m / sp_j, 0.7)
    r = 1 if s_edge <= 1.5 else int(math.ceil(4.0 * s_edge)) + 1
    s_mat = max(shading.edge_sigma / sp_i, shading.edge_sigma / sp_j)
    if s_mat > 1.0:
        r = max(r, int(math.ceil(4.0 * s_mat)) + 1)
    return r


def shade(hgt: np.ndarray, neg_expo: np.ndarray, y0: np.ndarray, hal: int, grid: RasterGrid,
           view: BeamView, shading: Shading) -> np.ndarray:
    """Yield of the interior of a block from the local normal, material and edges.

    ``hgt`` and the material maps (``neg_expo``: minus the angular exponent, ``y0``: the
    yield at normal incidence; anti-aliased blends of the materials, from
    :meth:`RasterPlan.block`) cover the block with a halo of ``hal`` nodes on every side (the
    interior is ``hgt[hal:-hal, hal:-hal]``).
    """
    f32 = np.float32
    nb, ni = hgt.shape[0] - 2 * hal, hgt.shape[1] - 2 * hal
    rows, cols = slice(hal, hal + nb), slice(hal, hal + ni)
    # central differences per node; the 1/2 is folded into the metric below
    hi = np.subtract(hgt[rows, hal + 1:hal + ni + 1], hgt[rows, hal - 1:hal + ni - 1])
    hj = np.subtract(hgt[hal + 1:hal + nb + 1, cols], hgt[hal - 1:hal + nb - 1, cols])
    # sample-frame gradient (Hx, Hy) = J^-T (Hi, Hj)
    m = 0.5 * np.linalg.inv(grid.jacobian()).T
    tiny = 1e-12 * float(np.abs(m).max())
    if abs(m[0, 1]) <= tiny and abs(m[1, 0]) <= tiny:
        hx, hy = hi, hj
        hx *= f32(m[0, 0])
        hy *= f32(m[1, 1])
    elif abs(m[0, 0]) <= tiny and abs(m[1, 1]) <= tiny:
        hx, hy = hj, hi
        hx *= f32(m[0, 1])
        hy *= f32(m[1, 0])
    else:
        hx = f32(m[0, 0]) * hi + f32(m[0, 1]) * hj
        hy = f32(m[1, 0]) * hi + f32(m[1, 1]) * hj
        del hi, hj
    tmp = np.multiply(hy, hy)
    inv_norm = np.multiply(hx, hx)
    inv_norm += tmp
    inv_norm += 1.0
    np.sqrt(inv_norm, out=inv_norm)
    np.divide(1.0, inv_norm, out=inv_norm)          # 1 / |(-Hx, -Hy, 1)|

    _, _, d_s = view.sample_axes()
    cos_b = _facing(d_s, hx, hy, inv_norm, tmp)
    np.clip(cos_b, 0.1, 1.0, out=cos_b)
    if shading.mode == "BSE":
        # (1+cos)/2 raised to -9/sqrt(Z): 1 at normal incidence, rising towards grazing
        cos_b += 1.0
        cos_b *= 0.5
    y = np.log(cos_b, out=cos_b)
    y *= neg_expo[rows, cols]
    np.exp(y, out=y)                               # sec^n (or the Arnal BSE factor)
    y *= _material_map(y0, grid, shading)[rows, cols]
    if shading.k_det:
        det = view.rotation.T @ np.array(shading.det_dir) * shading.k_det
        cos_d = _facing(det, hx, hy, inv_norm, tmp)  # k_det cos(normal, detector)
        cos_d += 1.0
        y *= cos_d
    del hx, hy, inv_norm, tmp
    y *= _edge_factor(hgt, hal, grid, shading)
    return y


def _material_map(y0: np.ndarray, grid: RasterGrid, shading: Shading) -> np.ndarray:
    """Smooth the material yield map over the interaction range when it spans > 1 node.

    Material contrast is generated over the electron (ion) interaction range, so at high
    magnification a boundary is a ramp of that width. Below one node the boundaries are
    already anti-aliased by the scene's coverage layers and nothing is done.
    """
    sp_i = math.hypot(*grid.di)
    sp_j = math.hypot(*grid.dj)
    si = shading.edge_sigma / sp_i
    sj = shading.edge_sigma / sp_j
    if max(si, sj) <= 1.0:
        return y0
    return gaussian_blur(y0, np.diag([max(si, 0.3) ** 2, max(sj, 0.3) ** 2]))


def _edge_factor(hgt: np.ndarray, hal: int, grid: RasterGrid, shading: Shading) -> np.ndarray:
    """``1 + k tanh((h - G*h) / sigma)`` on the interior of a haloed block: bright rims and
    peaks, dark valleys.

    The Gaussian is isotropic in the sample frame (sigma in nodes per axis, at least 0.7 node).
    Up to ~1.5 nodes the high-pass ``h - G*h`` is its second-order expansion
    ``-(sigma_i^2 h_ii + sigma_j^2 h_jj) / 2`` (two slice passes instead of a blur).
    """
    f32 = np.float32
    nb, ni = hgt.shape[0] - 2 * hal, hgt.shape[1] - 2 * hal
    rows, cols = slice(hal, hal + nb), slice(hal, hal + ni)
    sp_i = math.hypot(*grid.di)
    sp_j = math.hypot(*grid.dj)
    sig_m = max(shading.edge_sigma, min(sp_i, sp_j))
    si = max(sig_m / sp_i, 0.7)
    sj = max(sig_m / sp_j, 0.7)
    scale = 1.0 / max(shading.edge_sigma, math.sqrt(sp_i * sp_j))
    c = hgt[rows, cols]
    if max(si, sj) <= 1.5:
        # second-order high-pass a (h_E + h_W - 2 h) + b (h_N + h_S - 2 h)
        a = f32(-0.5 * si * si * scale)
        b = f32(-0.5 * sj * sj * scale)
        hp = np.add(hgt[rows, hal + 1:hal + ni + 1], hgt[rows, hal - 1:hal + ni - 1])
        if a == b:
            hp += hgt[hal + 1:hal + nb + 1, cols]
            hp += hgt[hal - 1:hal + nb - 1, cols]
            hp -= np.multiply(c, f32(4.0))
            hp *= a
        else:
            t = np.add(hgt[hal + 1:hal + nb + 1, cols], hgt[hal - 1:hal + nb - 1, cols])
            t -= np.multiply(c, f32(2.0))
            t *= b / a
            hp -= np.multiply(c, f32(2.0))
            hp += t
            hp *= a
            del t
    else:
        # about a reference level: the high-pass of metres of relief keeps its nanometres
        ref = f32(hgt[hal, hal])
        hp = gaussian_blur(hgt - ref, np.diag([si * si, sj * sj]))[rows, cols]
        hp -= c
        hp += ref
        hp *= f32(-scale)
    np.tanh(hp, out=hp)
    hp *= f32(shading.k_edge)
    hp += 1.0
    return hp
