"""Segmentation scores."""

from __future__ import annotations

import numpy as np

__all__ = ["iou_per_class"]


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
