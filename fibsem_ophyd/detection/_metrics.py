"""Segmentation scores."""

from __future__ import annotations

import numpy as np

__all__ = ["iou_per_class", "mean_iou_per_class"]


def iou_per_class(pred, truth, num_classes: int = 6) -> np.ndarray:
    """Intersection over union per class of two class masks of one shape; NaN for a class
    absent from both."""
    p, t = np.asarray(pred), np.asarray(truth)
    if p.shape != t.shape:
        raise ValueError(f"masks differ in shape: {p.shape} and {t.shape}")
    out = np.full(num_classes, np.nan)
    for c in range(num_classes):
        a, b = p == c, t == c
        union = np.count_nonzero(a | b)
        if union:
            out[c] = np.count_nonzero(a & b) / union
    return out


def mean_iou_per_class(ious) -> np.ndarray:
    """Mean over frames of each class's IoU (rows of :func:`iou_per_class`), over the frames
    where the class was in the prediction or the truth; NaN for a class in none of them.

    Written out rather than ``np.nanmean(ious, axis=0)``: a class absent from every frame (the
    held-out lift-out scenes have no posts, adaptor or block) is an all-NaN column, for which
    numpy warns "Mean of empty slice"; here its NaN is the stated answer, not a warning.
    """
    a = np.asarray(ious, dtype=float)
    if a.ndim != 2:
        raise ValueError(f"ious must be frames x classes, got shape {a.shape}")
    seen = np.isfinite(a)
    n = seen.sum(axis=0)
    total = np.where(seen, a, 0.0).sum(axis=0)
    out = np.full(a.shape[1], np.nan)
    np.divide(total, n, out=out, where=n > 0)
    return out
