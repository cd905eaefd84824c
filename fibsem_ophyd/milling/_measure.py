"""Lamella thickness measured on an ion image (pure numpy)."""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

__all__ = ["measure_lamella_thickness", "blank_frame", "LEVEL", "MIN_WIDTH", "MAX_WIDTH",
           "MIN_CONTRAST", "BLANK_RANGE"]

#: where an edge is placed between the grey level just inside it (the lamella's bright
#: edge) and the trench floor just outside it: half way, the middle of the blurred step
LEVEL = 0.5
#: the thinnest and thickest lamella looked for, as fractions of the expected thickness.
#: Not thinner than half: in the 8-site batch at 1536x1024 (``bench_overnight.py --frames``)
#: a quarter let bright streaks 0.36-0.55 x the trench gap beside the lamella win over it
#: (2 of 8 sites read 569 and 734 nm after the 1600 nm thinning, the other 6 1573-1583 nm;
#: with a half, those two read 1574 and 1591 nm). A lamella milled to under half the gap
#: is reported as not found, with the reason, rather than measured.
MIN_WIDTH, MAX_WIDTH = 0.5, 4.0
#: how far the lamella's middle must stand above the trench floors beyond its edges, as a
#: fraction of the frame's grey range (1st-99th percentile): polished lamellae at 1536x1024
#: stand at 14-22 %; a frame that shows only a trench (the lamella drifted out of view)
#: offers "strips" of 1 % among curtaining streaks (``benchmarks/bench_overnight.py``)
MIN_CONTRAST = 0.05
#: a frame whose grey levels (1st-99th percentile) span no more than this fraction of the full
#: scale (255 for uint8, 65535 for uint16, a float frame's largest magnitude) shows nothing
#: to measure: the beam blanked, or nothing imaged. Such a frame of the simulator (1536x1024,
#: brightness and contrast 0.5) is grey 63-65 (1 level, 0.4 %); frames of polished lamellae
#: span 120-200 levels (``benchmarks/bench_overnight.py --frames``)
BLANK_RANGE = 0.01


def _nan(reason: str, contrast: float = math.nan) -> dict:
    return {"thickness": math.nan, "top": math.nan, "bottom": math.nan,
            "contrast": contrast, "reason": reason}


def _grey_range(img: np.ndarray) -> tuple[float, float, float]:
    """(1st, 99th percentile, full scale) of a frame's grey levels."""
    p1, p99 = (float(v) for v in np.percentile(img, [1, 99]))
    if np.issubdtype(img.dtype, np.integer):
        full = float(np.iinfo(img.dtype).max)
    else:
        full = max(abs(p1), abs(p99), float(np.max(np.abs(img))))
    return p1, p99, full


def _blank_reason(img: np.ndarray, p1: float, p99: float, full: float) -> str:
    if p99 - p1 > BLANK_RANGE * full:
        return ""
    return (f"blank frame: uniform grey {float(np.mean(img)):.1f} (1st-99th percentile "
            f"{p1:g}-{p99:g}, {100 * (p99 - p1) / max(full, 1e-300):.1f} % of the full scale "
            f"{full:g}; {100 * BLANK_RANGE:g} % or less is blank): nothing imaged, nothing "
            "measured (beam blanked, or nothing in view)")


def blank_frame(image: np.ndarray) -> str:
    """Why ``image`` shows nothing to measure: its grey levels (1st-99th percentile) span at
    most :data:`BLANK_RANGE` of the full scale; "" when it shows something."""
    img = np.asarray(image)
    if img.size == 0:
        return "blank frame: no pixels"
    return _blank_reason(img, *_grey_range(img))


def _crossing(p: np.ndarray, r: int, level: float, step: int, stop: int) -> float:
    """Row (fractional) where ``p`` crosses ``level`` walking from row ``r`` by ``step``."""
    above = p[r] > level
    i = r
    while i != stop and (p[i + step] > level) == above:
        i += step
    if i == stop:
        return float(r)
    a, b = p[i] - level, p[i + step] - level
    return i + step * (a / (a - b) if a != b else 0.5)


def measure_lamella_thickness(image: np.ndarray, pixel_size: float, spacing: float,
                              band: float = 0.5, width: float | None = None,
                              search: float | None = None) -> dict:
    """Thickness of the lamella in an ion image viewed along the milling direction (the
    lamella a horizontal strip, trenches above and below).

    The lamella's top surface is a bright strip: at the milling angle it is seen at glancing
    incidence (more secondaries than the trench floors and walls, which face the beam) and its
    edges are brighter still (edge effect); at each edge the signal falls into a trench. So:

    1. the row profile is the median over the central columns (``band`` of the frame, or
       60 % of the trench ``width`` if smaller: beyond the trenches is unmilled surface;
       the median ignores bright debris and vertical streaks);
    2. edge candidates are the steepest rises and falls of the profile (smoothed over
       1/40 of ``spacing``); the lamella is the pair of edges, a fall above (walking up, out
       of the lamella) and a fall below, ``MIN_WIDTH``-``MAX_WIDTH`` x ``spacing`` apart,
       centred within ``search`` of the image centre (it may have drifted since the last
       alignment), whose whole middle is brighter than the grey level beyond both edges by
       at least :data:`MIN_CONTRAST` of the frame's grey range; of those, the one with the
       strongest weaker edge;
    3. each edge is where the profile crosses :data:`LEVEL` of the way from the trench
       floor just outside it to the brightest grey level just inside it (linear between
       rows): the middle of the step, whatever the brightness inside the lamella.

    Parameters
    ----------
    image : ndarray
        2-D ion image, rows top to bottom.
    pixel_size : float
        m per pixel.
    spacing : float
        The expected thickness (the trench gap), m.
    band : float
        Fraction of the frame's columns at most that the profile uses (centred).
    width : float, optional
        Width of the trenches, m (limits the columns used).
    search : float, optional
        How far from the image centre the lamella's middle may be, m (default 2.5 x
        ``spacing``, within the frame).

    Returns
    -------
    dict
        ``thickness`` (m), ``top``/``bottom`` (m, +y up, from the image centre),
        ``contrast`` (grey level of the lamella's middle minus that beyond its edges) and
        ``reason``: "" when measured, else why not (the lengths then nan); a frame that
        shows nothing (:func:`blank_frame`) is not searched, its reason starts with
        "blank frame".
    """
    raw = np.asarray(image)
    img = raw.astype(float)
    if img.ndim != 2 or not (math.isfinite(pixel_size) and pixel_size > 0) or \
            not (math.isfinite(spacing) and spacing > 0):
        raise ValueError("a 2-D image, a positive pixel size and a positive spacing are needed")
    h, w = img.shape
    if h * pixel_size < 2.5 * spacing:
        raise ValueError(f"the image ({h} rows of {pixel_size * 1e9:.0f} nm) does not show "
                         f"the lamella and its trenches: use a field at least "
                         f"{2.5 * spacing * 1e6:.2f} um high")
    if width is not None and not (math.isfinite(width) and width > 0):
        raise ValueError(f"width must be a positive length (m), got {width!r}")
    p1, p99, full = _grey_range(raw)
    blank = _blank_reason(raw, p1, p99, full)
    if blank:
        return _nan(blank)
    cols = band * w if width is None else min(band * w, 0.6 * width / pixel_size)
    c0 = int(round(w / 2 - max(cols, 1) / 2))
    prof = np.median(img[:, c0:max(int(round(w / 2 + cols / 2)), c0 + 1)], axis=1)
    sigma = max(1.0, spacing / 40 / pixel_size)
    smooth = ndimage.gaussian_filter1d(prof, sigma, mode="nearest")
    fine = ndimage.gaussian_filter1d(prof, 1.0, mode="nearest")
    g = np.gradient(smooth)  # per row; rows go down (-y): a top edge rises, a bottom falls
    y = (h / 2 - (np.arange(h) + 0.5)) * pixel_size  # row centres, +y up
    search = 2.5 * spacing if search is None else float(search)

    noise = 1.4826 * float(np.median(np.abs(g - np.median(g)))) + 1e-12
    ext = (g[1:-1] >= g[:-2]) & (g[1:-1] >= g[2:])
    tops = np.flatnonzero(ext & (g[1:-1] > 3 * noise)) + 1
    ext = (g[1:-1] <= g[:-2]) & (g[1:-1] <= g[2:])
    bottoms = np.flatnonzero(ext & (g[1:-1] < -3 * noise)) + 1
    lo, hi = MIN_WIDTH * spacing / pixel_size, MAX_WIDTH * spacing / pixel_size
    margin = int(math.ceil(3 * sigma))
    need = MIN_CONTRAST * (p99 - p1)
    best, best_score, best_contrast = None, 0.0, math.nan
    faint = -math.inf  # the best contrast among strips too faint to count
    for r0 in tops:
        for r1 in bottoms[(bottoms - r0 >= lo) & (bottoms - r0 <= hi)]:
            if abs(0.5 * (y[r0] + y[r1])) > search:
                continue
            n = r1 - r0
            flank = max(3, n // 2)
            a0, a1 = r0 - margin - flank, r1 + margin + flank
            if a0 < 0 or a1 >= h:
                continue  # an edge's outside is not in the frame
            middle = smooth[r0 + n // 5:r1 - n // 5 + 1]
            beyond = max(float(np.median(smooth[a0:r0 - margin])),
                         float(np.median(smooth[r1 + margin + 1:a1 + 1])))
            contrast = float(np.percentile(middle, 20)) - beyond
            score = min(g[r0], -g[r1])
            if 0 < contrast < need or (contrast > 0 and need <= 0):
                faint = max(faint, contrast)
            elif contrast > 0 and score > best_score:
                best, best_score, best_contrast = (r0, r1), score, contrast
    if best is None:
        why = ""
        if faint > -math.inf:
            why = (f" (the brightest stands {100 * faint / max(p99 - p1, 1e-12):.1f} % of the "
                   f"frame's grey range above the trenches, {100 * MIN_CONTRAST:.0f} % needed)")
        return _nan(f"no lamella: no bright strip {MIN_WIDTH * spacing * 1e9:.0f}-"
                    f"{MAX_WIDTH * spacing * 1e9:.0f} nm wide between two edges falling "
                    f"into trenches within {search * 1e9:.0f} nm of the image centre{why}",
                    contrast=faint if faint > -math.inf else math.nan)
    r0, r1 = best
    reach = max(3, int(round(0.15 * (r1 - r0))))

    def edge(r: int, out: int) -> float:
        inside = fine[min(r, r - out * reach):max(r, r - out * reach) + 1]
        outside = fine[min(r, r + out * reach):max(r, r + out * reach) + 1]
        floor, peak = float(outside.min()), float(inside.max())
        level = floor + LEVEL * (peak - floor)
        # from the brightest row inside, walk out to the crossing
        start = int(np.argmax(fine[min(r, r - out * reach):max(r, r - out * reach) + 1])) \
            + min(r, r - out * reach)
        row = _crossing(fine, start, level, out, 0 if out < 0 else h - 1)
        return (h / 2 - (row + 0.5)) * pixel_size

    top, bottom = edge(r0, -1), edge(r1, +1)
    return {"thickness": top - bottom, "top": top, "bottom": bottom,
            "contrast": best_contrast, "reason": ""}
