"""Parallax along a raster line: exact occlusion and pixel integration of the visible surface.

Node ``j`` of a raster line (a point of the plane at ``h_ref``) with height ``h`` appears at
image row ``V_j = j + kappa (h_j - h_ref)``. Along a ray the point nearest the source has the
largest height, so a node is hidden when a node on its far side projects past it: the running
minimum (``kappa < 0``, from the far end) or maximum (``kappa > 0``) of ``V`` is the visible
envelope ``E``, non-decreasing in ``j`` and flat over hidden nodes.

Along ``E`` the signal is a density, ``rho_j = (S_j + S_j+1) / 2`` on segment
``[E_j, E_j+1]`` (a hidden segment has zero length), and output row ``k`` integrates it over
its extent ``[B_k, B_k + 1]``, ``B_k = top - 1/2 + k``: a foreshortened stretch of surface is
averaged, a magnified one interpolated, a hidden one contributes nothing, and a thin bright
strip (a silhouette at grazing incidence) adds in proportion to its projected width instead
of flickering with the sampling phase.

The work is split in two so the caller shades only the nodes that can reach the frame:
:func:`envelope` needs the heights alone, :func:`visible_nodes` reads from it the range of
nodes whose signal the frame rows can depend on (80-86 % of a block's nodes on the default
1536x1024 ion frame at 52 deg: the parallax margins, 172 of its 1200 raster rows, are sized
for every height the footprint can hold), and :func:`integrate` takes the signal of that
range. :func:`warp` is the composition over whole lines, :func:`project` the one the renderer
calls with a function that shades a node range.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["envelope", "visible_nodes", "integrate", "project", "warp"]


def envelope(hgt: np.ndarray, kappa: float, top: int, h_ref: float = 0.0,
             k0: int = 0) -> np.ndarray:
    """The visible envelope ``E_j - B_k0`` (output rows from the top of row ``k0``) of each
    line of ``hgt`` (``(lines, n)``), float32 ``(lines, n)``.

    The running extremum is a log-step scan (Hillis-Steele: each step one whole-array
    ``minimum``/``maximum``) over the lines laid end to end, each padded with
    ``reach - 1`` neutral values so no step reads across into the next line. A node can only
    be hidden by nodes less than ``|kappa| (h_max - h_min) + 1`` beyond it, so the scan
    covers ``reach`` nodes, not the whole line.
    """
    f32 = np.float32
    nl, n = hgt.shape
    reach = min(n, int(math.ceil(abs(kappa) * float(hgt.max() - hgt.min()))) + 2)
    shifts, cov = [], 1
    while cov < reach:            # shifts 1, 2, 4, ... the last one trimmed to reach
        s = min(cov, reach - cov)
        shifts.append(s)
        cov += s
    pad = cov - 1
    buf = np.empty((nl, n + pad), dtype=f32)
    if kappa < 0:                 # running minimum from the far end: pad after each line
        data, neutral = buf[:, :n], buf[:, n:]
        neutral.fill(np.inf)
    else:                         # running maximum from the start: pad before each line
        data, neutral = buf[:, pad:], buf[:, :pad]
        neutral.fill(-np.inf)
    np.multiply(hgt, f32(kappa), out=data)
    data += (np.arange(n, dtype=np.float64) - (kappa * h_ref + top - 0.5 + k0)).astype(f32)
    if not shifts:
        return data
    src = buf.reshape(-1)
    dst = np.empty_like(src)
    for s in shifts:
        if kappa < 0:
            np.minimum(src[:-s], src[s:], out=dst[:-s])
            dst[-s:] = src[-s:]
        else:
            np.maximum(src[s:], src[:-s], out=dst[s:])
            dst[:s] = src[:s]
        src, dst = dst, src
    out = src.reshape(nl, n + pad)
    return out[:, :n] if kappa < 0 else out[:, pad:]


def visible_nodes(env: np.ndarray, n_rows: int) -> tuple[int, int]:
    """The nodes ``[c0, c1)`` whose signal rows ``0 .. n_rows-1`` of the envelope ``env``
    (from :func:`envelope`) depend on; ``c1 - c0 < 2`` when none.

    Every knot before ``c0`` lies before row 0 on every line, so together they only add the
    density at knot ``c0`` (the jumps telescope: ``S_c0 + S_c0+1``), and knot ``c1 - 1`` lies
    after the last row on every line, so no later node is read.
    """
    n = env.shape[1]
    if n < 2:
        return 0, 0
    entered = env.max(axis=0) >= 0          # some line has reached row 0 (monotone in j)
    if not entered[-1]:
        return 0, 0
    first = int(np.argmax(entered))
    passed = env.min(axis=0) >= n_rows      # every line is past the last row
    last = int(np.argmax(passed)) if passed[-1] else n
    return max(first - 1, 0), min(last + 1, n)


def integrate(env: np.ndarray, sig: np.ndarray, n_rows: int,
              out_rows: np.ndarray | None = None) -> np.ndarray:
    """Rows ``0 .. n_rows-1`` of the signal ``sig`` seen through the envelope ``env`` (both
    ``(lines, m)``: nodes ``[c0, c1)`` of :func:`visible_nodes`, or whole lines): returns
    ``(lines, n_rows)``, or with ``out_rows`` (``(n_rows, lines)``, image orientation)
    writes the result there transposed.

    Written with the density's jumps ``d_j = rho_j - rho_j-1`` at the knots ``E_j`` (``rho``
    is zero outside the nodes), row ``k`` is ``rho(k + 1) - sum over knots in [k, k + 1) of
    d_j (E_j - k)``. ``2 rho(k + 1)`` is the sum of the jumps up to the last knot before
    ``k + 1``, which telescopes to ``S_J + S_J+1`` of that knot ``J``: the knots, laid end to
    end over the lines with their row bins (``-1`` before the rows, ``n_rows`` after), give
    each bin the value of its last knot by one ``np.repeat`` (a bin without a knot takes
    the previous one), exact instead of a running sum's rounding. The correction is one
    histogram of the knots (``np.subtract.at`` into those values, indices sorted).
    """
    f32 = np.float32
    nl, m = sig.shape
    nb = n_rows + 2                       # bins -1 .. n_rows, stored at 0 .. n_rows + 1
    if m < 2:
        if out_rows is None:
            return np.zeros((nl, n_rows), dtype=f32)
        out_rows[...] = 0.0
        return out_rows
    # twice the density after each knot (S_j + S_j+1; 0 after a line's last), preceded by
    # the 0 before the first knot
    after = np.empty(nl * m + 1, dtype=f32)
    after[0] = 0.0
    tail = after[1:].reshape(nl, m)
    np.add(sig[:, :-1], sig[:, 1:], out=tail[:, :-1])
    tail[:, -1] = 0.0
    # knot j lies in row bin floor(E_j) (clipped: -1 before the rows, n_rows after); the
    # correction weighs its position in the bin by twice the density's jump there, the
    # difference of the densities after it and after the knot before it (S_j+1 - S_j-1
    # inside a line, S_0 + S_1 at its first knot, -(S_m-2 + S_m-1) at its last)
    x = np.clip(env, f32(-1.0), f32(n_rows))
    row = np.floor(x)
    frac = np.subtract(x, row, out=x).reshape(-1)
    frac *= np.subtract(after[1:], after[:-1])
    row += (np.arange(nl, dtype=f32) * f32(nb) + f32(1.0))[:, None]
    key = row.astype(np.intp).ravel()
    del row
    # bin q takes the density after the last knot at or before it
    counts = np.empty(nl * m + 1, dtype=np.intp)
    counts[0] = key[0]
    np.subtract(key[1:], key[:-1], out=counts[1:-1])
    counts[-1] = nl * nb - key[-1]
    dens = np.repeat(after, counts)                     # 2 rho at the bins' right edges
    np.subtract.at(dens, key, frac)
    dens = dens.reshape(nl, nb)[:, 1:n_rows + 1]
    if out_rows is None:
        return np.multiply(dens, f32(0.5))
    # written row by row of the output (its rows are contiguous), read across the lines
    np.multiply(dens.T, f32(0.5), out=out_rows)
    return out_rows


def warp(hgt: np.ndarray, sig: np.ndarray, kappa: float, top: int, n_out: int,
         h_ref: float = 0.0, out_rows: np.ndarray | None = None,
         rows: tuple[int, int] | None = None) -> np.ndarray:
    """Parallax with exact occlusion and pixel integration along each raster line.

    ``hgt`` and ``sig`` are ``(lines, n)``: line ``l`` holds the nodes ``j = 0 .. n-1`` of one
    raster column. Returns ``(lines, n_out)``, or the output rows ``rows = (k0, k1)`` of it;
    with ``out_rows`` (``(k1 - k0, lines)``, image orientation) the result is written there
    transposed. The composition of :func:`envelope` and :func:`integrate` over whole lines.
    """
    k0, k1 = (0, n_out) if rows is None else rows
    env = envelope(hgt, kappa, top, h_ref, k0)
    return integrate(env, sig, k1 - k0, out_rows)


def project(hgt: np.ndarray, shade_nodes, kappa: float, top: int, h_ref: float,
            rows: tuple[int, int], out_rows: np.ndarray) -> np.ndarray:
    """Rows ``rows = (k0, k1)`` of the lines of ``hgt`` (``(lines, n)``) seen through the
    parallax, written to ``out_rows`` (``(k1 - k0, lines)``, image orientation), shading only
    the nodes they depend on: ``shade_nodes(c0, c1)`` returns the signal ``(lines, c1 - c0)``
    of nodes ``[c0, c1)`` (:func:`visible_nodes`). Equal to :func:`warp` with the signal of
    every node, bit for bit: a bin's density is the telescoped one after its last knot,
    whatever knots came before.
    """
    k0, k1 = rows
    env = envelope(hgt, kappa, top, h_ref, k0)
    c0, c1 = visible_nodes(env, k1 - k0)
    if c1 - c0 < 2:
        out_rows[...] = 0.0
        return out_rows
    return integrate(env[:, c0:c1], shade_nodes(c0, c1), k1 - k0, out_rows)
