"""Parallax along a raster line: exact occlusion and pixel integration of the visible surface."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["warp"]


def _scan(a: np.ndarray, op, reverse: bool = False, span: int | None = None) -> np.ndarray:
    """Inclusive running ``op`` (``np.maximum``, ``np.minimum``) along axis 1, from the end when
    ``reverse``: log2 steps of whole-array operations (Hillis-Steele) instead of a scalar
    loop. With ``span`` each result only covers the ``span`` elements from it (enough for an
    extremum whose influence is bounded). ``a`` is consumed.
    """
    n = a.shape[1]
    lim = n if span is None else min(n, span)
    src, dst = a, np.empty_like(a)
    s = 1
    while s < lim:
        if reverse:
            op(src[:, :-s], src[:, s:], out=dst[:, :-s])
            dst[:, -s:] = src[:, -s:]
        else:
            op(src[:, s:], src[:, :-s], out=dst[:, s:])
            dst[:, :s] = src[:, :s]
        src, dst = dst, src
        s *= 2
    return src


def warp(hgt: np.ndarray, sig: np.ndarray, kappa: float, top: int, n_out: int,
          h_ref: float = 0.0, out_rows: np.ndarray | None = None,
          rows: tuple[int, int] | None = None) -> np.ndarray:
    """Parallax with exact occlusion and pixel integration along each raster line.

    ``hgt`` and ``sig`` are ``(lines, n)``: line ``l`` holds the nodes ``j = 0 .. n-1`` of one
    raster column. Node ``j`` (a point of the plane at ``h_ref``) with height ``h`` appears
    at image row ``V_j = j + kappa (h_j - h_ref)``. Along a ray the point nearest the source
    has the largest height, so a node is hidden when a node on its far side projects past it:
    the running minimum (``kappa < 0``, from the far end) or maximum (``kappa > 0``) of ``V``
    is the visible envelope ``E``, non-decreasing in ``j`` and flat over hidden nodes.

    Along ``E`` the signal is a density, ``rho_j = (S_j + S_j+1) / 2`` on segment
    ``[E_j, E_j+1]`` (a hidden segment has zero length), and output row ``k`` integrates it
    over its extent ``[B_k, B_k + 1]``, ``B_k = top - 1/2 + k``: a foreshortened stretch of
    surface is averaged, a magnified one interpolated, a hidden one contributes nothing, and a
    thin bright strip (a silhouette at grazing incidence) adds in proportion to its projected
    width instead of flickering with the sampling phase. Written with the density's jumps
    ``d_j = rho_j - rho_j-1`` at the knots ``E_j`` (``rho`` is zero outside the line), the
    integral is ``rho(B_k + 1) - sum over knots in [B_k, B_k + 1) of d_j (E_j - B_k)``, and
    ``rho(B_k + 1)`` is the sum of the jumps before ``B_k + 1``: two histograms of the knots
    over the rows and one running sum, no search. Returns ``(lines, n_out)``, or the output
    rows ``rows = (k0, k1)`` of it; with ``out_rows`` (``(k1 - k0, lines)``, image
    orientation) the result is written there transposed.
    """
    nl, n = hgt.shape
    f32 = np.float32
    # the envelope relative to the first boundary: E_j - B_0 = j + kappa (h_j - h_ref) - B_0
    env = np.multiply(hgt, f32(kappa))
    env += np.arange(n, dtype=np.float64).astype(f32) - f32(kappa * h_ref + top - 0.5)
    # a node can only be hidden by one less than |kappa| (h_max - h_min) nodes beyond it
    reach = int(math.ceil(abs(kappa) * float(hgt.max() - hgt.min()))) + 2
    if kappa < 0:
        env = _scan(env, np.minimum, reverse=True, span=reach)
    else:
        env = _scan(env, np.maximum, span=reach)
    # twice the density's jump at each knot: rho_j - rho_j-1 = (S_j+1 - S_j-1) / 2 inside,
    # rho_0 at the first knot and -rho_n-2 at the last (no signal beyond the line)
    jump = np.empty_like(sig)
    np.subtract(sig[:, 2:], sig[:, :-2], out=jump[:, 1:-1])
    np.add(sig[:, 0], sig[:, 1], out=jump[:, 0])
    np.add(sig[:, -2], sig[:, -1], out=jump[:, -1])
    np.negative(jump[:, -1], out=jump[:, -1])
    # knot j lies in row bin floor(E_j - B_0) (clipped: -1 before the frame, n_out after)
    row = np.floor(env)
    frac = np.subtract(env, row, out=env)
    frac *= jump
    np.clip(row, -1, n_out, out=row)
    row += (np.arange(nl, dtype=f32) * f32(n_out + 2) + f32(1.0))[:, None]
    key = row.astype(np.intp).ravel()
    del row
    dens = np.zeros((nl, n_out + 2), dtype=f32)
    np.add.at(dens.reshape(-1), key, jump.reshape(-1))
    np.cumsum(dens, axis=1, out=dens)                # 2 rho at the bins' right edges
    corr = np.zeros((nl, n_out + 2), dtype=f32)
    np.add.at(corr.reshape(-1), key, frac.reshape(-1))
    dens -= corr
    k0, k1 = (0, n_out) if rows is None else rows
    if out_rows is None:
        return np.multiply(dens[:, k0 + 1:k1 + 1], f32(0.5))
    res = np.ascontiguousarray(dens[:, k0 + 1:k1 + 1].T)    # a cache-friendly transpose
    res *= f32(0.5)
    out_rows[...] = res
    return out_rows
