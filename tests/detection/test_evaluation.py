"""Keypoint evaluation from an OpenFIBSEM ground-truth CSV and from items; the plots draw
what they are given."""

import csv

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tifffile  # noqa: E402

from fibsem_ophyd.detection import (  # noqa: E402
    detect_features_in_mask,
    evaluate_keypoints,
    get_objects,
    plot_bounding_boxes,
    plot_detection,
    plot_detections,
    plot_segmentations,
)


def test_items_errors_and_accuracy():
    items = [
        {"image": None, "keypoints": {"NeedleTip": (10.0, 10.0)},
         "prediction": {"NeedleTip": (13.0, 14.0)}},             # 5 px
        {"image": None, "keypoints": {"NeedleTip": (10.0, 10.0)},
         "prediction": {"NeedleTip": (40.0, 50.0)}},             # 50 px
        {"image": None, "keypoints": {"NeedleTip": (10.0, 10.0)}, "prediction": {}},
    ]
    ev = evaluate_keypoints(items, thresholds=(100, 50, 10))
    (row,) = ev.table()
    assert row["n"] == 3 and row["detected"] == 2
    assert row["mean"] == pytest.approx(27.5) and row["median"] == pytest.approx(27.5)
    assert row["accuracy_100"] == pytest.approx(200 / 3)
    assert row["accuracy_50"] == pytest.approx(100 / 3)     # 50 is not under 50
    assert row["accuracy_10"] == pytest.approx(100 / 3)
    assert "NeedleTip" in str(ev)
    fig = ev.plot()
    assert len(fig.axes) == 2
    with pytest.raises(ValueError, match="thresholds must be px > 0"):
        evaluate_keypoints(items, thresholds=(10, -1))


class _MaskModel:
    """A 'model' that returns a fixed mask: the evaluation re-detects on it."""

    num_classes = 6
    checkpoint = "fixed-mask"

    def __init__(self, mask):
        self.mask = mask

    def inference(self, image, rgb=False):
        return self.mask


def test_openfibsem_csv(tmp_path):
    mask = np.zeros((100, 150), np.uint8)
    mask[40:60, 30:90] = 1                      # lamella centre (59.5, 49.5)
    tifffile.imwrite(tmp_path / "img_a.tif", np.zeros((100, 150), np.uint8))
    with open(tmp_path / "data.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["filename", "feature", "px.x", "px.y", "pixelsize", "corrected"])
        w.writerow(["img_a", "LamellaCentre", 62.5, 53.5, 1e-8, True])     # 5 px off
    ev = evaluate_keypoints(tmp_path / "data.csv", model=_MaskModel(mask),
                            thresholds=(10, 4))
    (row,) = ev.table()
    assert row["mean"] == pytest.approx(5.0)
    assert row["accuracy_10"] == 100.0 and row["accuracy_4"] == 0.0
    with pytest.raises(ValueError, match="pass a model"):
        evaluate_keypoints(tmp_path / "data.csv")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="missing columns"):
        evaluate_keypoints(tmp_path / "bad.csv", model=_MaskModel(mask))
    with pytest.raises(FileNotFoundError, match="no ground-truth CSV"):
        evaluate_keypoints(tmp_path / "none.csv", model=_MaskModel(mask))


def test_plots_draw_the_features():
    img = np.zeros((100, 150), np.uint8)
    mask = np.zeros((100, 150), np.uint8)
    mask[40:60, 30:90] = 1
    det = detect_features_in_mask(img, mask, ["LamellaCentre", "ImageCentre"], 1e-8)
    fig = plot_detection(det)
    marks = {(float(line.get_xdata()[0]), float(line.get_ydata()[0]))
             for line in fig.axes[0].lines if len(line.get_xdata()) == 1}
    assert marks == {(59.5, 49.5), (75.0, 50.0)}
    assert len(plot_detections([det, det], ["model", "user"]).axes) == 2
    assert len(plot_segmentations([img], [mask]).axes) == 1
    fig = plot_bounding_boxes(img, mask, get_objects(mask))
    assert len(fig.axes[0].patches) == 1
    with pytest.raises(ValueError, match="one title per detection"):
        plot_detections([det], ["a", "b"])
