"""Lamella thickness measured on an ion image (pure numpy)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["measure_lamella_thickness", "LEVEL"]

#: where between the trench (0) and lamella (1) grey levels an edge is placed: low, because
#: the lamella's top is shaded unevenly (its grey level slopes across it, down to ~half the
#: contrast near an edge) while its edges are bright and the trench floors flat
LEVEL = 0.25


def measure_lamella_thickness(image: np.ndarray, pixel_size: float, spacing: float,
                              band: float = 0.5) -> dict:
    """Thickness of the lamella at the centre of an ion image viewed along the milling
    direction (the lamella a horizontal strip, trenches above and below).

    The image rows are averaged over the central ``band`` of the columns; the lamella is
    looked for within half a ``spacing`` (the expected thickness, m) of the centre (it may
    have drifted since the last alignment): the run of ``spacing / 3`` rows that differs most
    from the trench level. Its grey level is the median over its middle third, the
    trenches' the median over 0.5-1.5 ``spacing`` beyond its expected edges; each edge is
    where the profile, walking out from the centre, first falls to :data:`LEVEL` of the way
    from the trench to the lamella level (linear between rows): bright edges stay inside the
    lamella, noise in the trenches outside it.

    Returns
    -------
    dict
        ``thickness`` (m, nan if no contrast), ``top``/``bottom`` (m, +y up, from the image
        centre), ``contrast`` (lamella - trench grey level).
    """
    img = np.asarray(image, dtype=float)
    if img.ndim != 2 or not (math.isfinite(pixel_size) and pixel_size > 0) or \
            not (math.isfinite(spacing) and spacing > 0):
        raise ValueError("a 2-D image, a positive pixel size and a positive spacing are needed")
    h, w = img.shape
    c0, c1 = int(w * (0.5 - band / 2)), int(w * (0.5 + band / 2))
    prof = img[:, c0:max(c1, c0 + 1)].mean(axis=1)
    y = (h / 2 - (np.arange(h) + 0.5)) * pixel_size  # row centres, +y up
    mid = np.abs(y) <= spacing / 6
    out = (np.abs(y) >= spacing) & (np.abs(y) <= 2 * spacing)
    if mid.sum() < 1 or out.sum() < 2:
        raise ValueError(f"the image ({h} rows of {pixel_size * 1e9:.0f} nm) does not show "
                         f"the lamella and its trenches: use a field of at least "
                         f"{4 * spacing * 1e6:.1f} um")
    # the lamella may sit off the centre (drift since the last alignment): centre on the
    # run of ``spacing / 3`` rows within +-``spacing / 2`` that differs most from the trenches
    trench = float(np.median(prof[out]))
    k = max(1, int(round(spacing / 3 / pixel_size)))
    smooth = np.convolve(prof - trench, np.ones(k) / k, mode="same")
    near = np.flatnonzero(np.abs(y) <= spacing / 2)
    y_lam = float(y[near[int(np.argmax(np.abs(smooth[near])))]])
    y = y - y_lam
    mid = np.abs(y) <= spacing / 6
    out = (np.abs(y) >= spacing) & (np.abs(y) <= 2 * spacing)
    if mid.sum() < 1 or out.sum() < 2:
        return {"thickness": math.nan, "top": math.nan, "bottom": math.nan,
                "contrast": math.nan}
    lam, trench = float(np.median(prof[mid])), float(np.median(prof[out]))
    contrast = lam - trench
    nan = {"thickness": math.nan, "top": math.nan, "bottom": math.nan, "contrast": contrast}
    if abs(contrast) < 1e-9:
        return nan
    half = trench + LEVEL * contrast
    above = (prof - half) * np.sign(contrast) > 0  # lamella-like rows
    centre = int(np.argmin(np.abs(y)))
    if not above[centre]:
        return nan

    def edge(step: int) -> float:
        r = centre
        while 0 <= r + step < h and above[r + step]:
            r += step
        n = r + step  # the first row out of the lamella
        if not 0 <= n < h:
            return math.nan
        a, b = prof[r] - half, prof[n] - half
        f = a / (a - b) if a != b else 0.5
        return float(y[r] + f * (y[n] - y[r]))

    top, bottom = edge(-1), edge(+1)
    return {"thickness": top - bottom, "top": top + y_lam, "bottom": bottom + y_lam,
            "contrast": contrast}
