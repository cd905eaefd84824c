"""Segmentation scores on masks whose IoU is known by construction."""

import warnings

import numpy as np
import pytest

from fibsem_ophyd.detection import iou_per_class, mean_iou_per_class


def _masks():
    """A 4x4 truth with class 1 in the left half; the prediction has class 1 in the left
    three columns (IoU 8/12) and class 2 in one pixel the truth leaves at 0 (IoU 0)."""
    truth = np.zeros((4, 4), int)
    truth[:, :2] = 1
    pred = np.zeros((4, 4), int)
    pred[:, :3] = 1
    pred[0, 3] = 2
    return pred, truth


def test_iou_per_class_counts_pixels():
    pred, truth = _masks()
    iou = iou_per_class(pred, truth, num_classes=4)
    # class 0: truth 8 px, prediction 3 px, all inside the truth's
    assert iou[0] == pytest.approx(3 / 8)
    assert iou[1] == pytest.approx(8 / 12)
    assert iou[2] == 0.0
    assert np.isnan(iou[3])                  # in neither mask


def test_mean_over_frames_skips_absent_classes_without_warning():
    pred, truth = _masks()
    first = iou_per_class(pred, truth, num_classes=4)
    second = iou_per_class(truth, truth, num_classes=4)      # perfect; class 2 absent
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        mean = mean_iou_per_class([first, second])
    assert mean[0] == pytest.approx((3 / 8 + 1) / 2)
    assert mean[1] == pytest.approx((8 / 12 + 1) / 2)
    assert mean[2] == 0.0                    # only the frame where it appeared counts
    assert np.isnan(mean[3])                 # in no frame: no mean, and no warning


def test_mean_needs_frames_by_classes():
    with pytest.raises(ValueError, match="frames x classes"):
        mean_iou_per_class([0.5, 0.5])
