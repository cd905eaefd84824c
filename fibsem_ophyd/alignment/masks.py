"""Registration masks and band-pass for alignment (pure numpy/scipy, no I/O).

Image-frame coordinates are metres from the frame centre, +x right, +y up; masks are
registration weights (1 = use, 0 = ignore) of the frame's shape.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .. import validate
from .registration import DEFAULT_BANDPASS

__all__ = ["alignment_bandpass", "check_boxes", "exclusion_mask", "shifted_mask"]


def check_boxes(exclude: Any) -> list[tuple[float, float, float, float]]:
    """Validate image-frame boxes ``[[x0, y0, x1, y1], ...]`` (m); ``None`` -> ``[]``.

    Raises
    ------
    ValueError
        A box that is not four finite numbers with x1 > x0 and y1 > y0.
    """
    if exclude is None:
        return []
    rule = "[x0, y0, x1, y1], four finite numbers in metres with x1 > x0 and y1 > y0"
    if isinstance(exclude, (str, bytes)) or not hasattr(exclude, "__iter__"):
        raise ValueError(f"exclude must be a list of boxes {rule}, got {validate.show(exclude)}")
    boxes: list[tuple[float, float, float, float]] = []
    for i, box in enumerate(exclude):
        ok = isinstance(box, (list, tuple)) and len(box) == 4 and \
            all(validate.is_real(v) and math.isfinite(v) for v in box)
        if not ok or box[2] <= box[0] or box[3] <= box[1]:
            raise ValueError(f"exclude[{i}] must be {rule}, got {validate.show(box)}")
        boxes.append((float(box[0]), float(box[1]), float(box[2]), float(box[3])))
    return boxes


def exclusion_mask(shape: tuple[int, int], pixel: float, boxes) -> np.ndarray | None:
    """Registration weights that ignore image-frame boxes (m, +y up; e.g. freshly milled
    patterns, which the reference does not show), with 2 px soft edges; ``None`` if none.

    Parameters
    ----------
    shape : (int, int)
        Frame rows, columns.
    pixel : float
        Pixel size, metres.
    boxes : list of (x0, y0, x1, y1)
        As :func:`check_boxes` returns, metres.
    """
    if not boxes:
        return None
    h, w = shape
    col = (np.arange(w) + 0.5 - w / 2) * pixel
    row = (h / 2 - (np.arange(h) + 0.5)) * pixel
    keep = np.ones((h, w), dtype=bool)
    for x0, y0, x1, y1 in boxes:
        inside_c = (col >= x0) & (col <= x1)
        inside_r = (row >= y0) & (row <= y1)
        keep &= ~(inside_r[:, None] & inside_c[None, :])
    if keep.mean() < 0.2:
        raise ValueError("the excluded regions cover more than 80 % of the field of view: "
                         "nothing left to align on")
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(keep.astype(np.float32), 2.0)


def alignment_bandpass(shape: tuple[int, int]) -> tuple[float, float]:
    """Registration band-pass (px) for a frame of ``shape``: the default (2, 32) px up to 768
    px wide, scaled with the width above, so the band covers the same fraction of the field
    (finer pixels carry more shot noise per pixel, not more structure to align on)."""
    k = max(1.0, shape[1] / 768.0)
    return DEFAULT_BANDPASS[0] * k, DEFAULT_BANDPASS[1] * k


def shifted_mask(mask: np.ndarray, dx: float, dy: float) -> np.ndarray:
    """``mask`` moved with image content that shifted by (``dx``, ``dy``) px (+x right, +y
    up); what comes in from outside is kept (weight 1)."""
    from scipy.ndimage import shift

    return shift(mask, (-dy, dx), order=1, mode="constant", cval=1.0)
