"""Feature rules on masks whose answer is known by construction (a drawn needle, lamellae,
posts), OpenFIBSEM's output shapes, and the objects of a mask."""

import numpy as np
import pytest

from fibsem_ophyd.detection import (
    DetectedFeatures,
    LamellaCentre,
    NeedleTip,
    Point,
    detect_features_in_mask,
    get_objects,
)

H, W = 200, 300


def _needle(tip, from_right=True, half_width=0.2):
    """A wedge from the frame edge to ``tip`` (col, row), widening away from it."""
    m = np.zeros((H, W), dtype=np.uint8)
    cc, rr = np.meshgrid(np.arange(W), np.arange(H))
    along = (cc - tip[0]) if from_right else (tip[0] - cc)
    m[(along >= 0) & (np.abs(rr - tip[1]) <= half_width * along + 1.0)] = 2
    return m


@pytest.mark.parametrize("from_right", [True, False])
def test_needle_tip_from_either_side(from_right):
    tip = (120, 80) if from_right else (180, 120)
    mask = _needle(tip, from_right)
    det = detect_features_in_mask(np.zeros((H, W), np.uint8), mask, ["NeedleTip"], 1e-7)
    f = det.features[0]
    assert abs(f.px.x - tip[0]) <= 1 and abs(f.px.y - tip[1]) <= 1
    # metres from the image centre, +y up
    assert f.feature_m.x == pytest.approx((f.px.x - W // 2) * 1e-7)
    assert f.feature_m.y == pytest.approx((H // 2 - f.px.y) * 1e-7)


def test_lamella_features_and_distance():
    mask = _needle((100, 60))
    mask[120:140, 40:90] = 1             # lamella A, centre (64.5, 129.5)
    mask[20:40, 200:280] = 1             # lamella B (farther from the centre)
    det = detect_features_in_mask(np.zeros((H, W), np.uint8), mask,
                                  ["NeedleTip", "LamellaCentre", "LamellaLeftEdge",
                                   "LamellaRightEdge", "LamellaTopEdge"], 1e-7)
    assert isinstance(det, DetectedFeatures)
    c = det.get_feature("LamellaCentre").px
    assert (c.x, c.y) == (64.5, 129.5)
    assert det.get_feature("LamellaLeftEdge").px.x == 40
    assert det.get_feature("LamellaRightEdge").px.x == 89
    assert det.get_feature("LamellaTopEdge").px.y == 120
    # distance: second feature minus first, metres, +y up
    tip = det.features[0].px
    d = det.distance
    assert d.x == pytest.approx((c.x - tip.x) * 1e-7)
    assert d.y == pytest.approx(-(c.y - tip.y) * 1e-7)
    # the other lamella when the reference point is near it; both with filter=False
    det2 = detect_features_in_mask(np.zeros((H, W), np.uint8), mask, [LamellaCentre()], 1e-7,
                                   point=Point(250, 25))
    assert (det2.features[0].px.x, det2.features[0].px.y) == (239.5, 29.5)
    det3 = detect_features_in_mask(np.zeros((H, W), np.uint8), mask, ["LamellaCentre"], 1e-7,
                                   filter=False)
    assert len(det3.features) == 2
    d = det.to_dict()
    assert d["features"][1]["name"] == "LamellaCentre" and d["pixelsize"] == 1e-7


def test_absent_feature_is_none_and_distance_says_so():
    mask = np.zeros((H, W), np.uint8)
    det = detect_features_in_mask(np.zeros((H, W), np.uint8), mask,
                                  [NeedleTip(), "ImageCentre"], 1e-7)
    assert det.features[0].px is None
    assert (det.features[1].px.x, det.features[1].px.y) == (W // 2, H // 2)
    with pytest.raises(ValueError, match="NeedleTip was not detected"):
        _ = det.distance


def test_landing_post_nearest_the_centre_and_objects():
    mask = np.zeros((H, W), np.uint8)
    mask[110:190, 130:170] = 3           # post below the centre
    mask[110:190, 10:50] = 3
    mask[5:8, 5:8] = 1                   # 9 px: noise, ignored
    det = detect_features_in_mask(np.zeros((H, W), np.uint8), mask, ["LandingPost"], 1e-7)
    p = det.features[0].px
    assert (p.x, p.y) == (150, 110)
    objs = get_objects(mask, min_pixels=50)
    assert sorted((o["class"], o["instance"]) for o in objs) == [(3, 1), (3, 2)]
    o = next(o for o in objs if o["bbox"][0][1] == 130)
    assert o["bbox"] == [(110, 130), (190, 170)]
    assert (o["keypoints"]["centre"].x, o["keypoints"]["centre"].y) == (149.5, 149.5)
    with pytest.raises(ValueError, match="must be 2-D"):
        get_objects(np.zeros((2, 3, 4)))


def test_mask_and_pixelsize_checks():
    img = np.zeros((H, W), np.uint8)
    with pytest.raises(ValueError, match="mask shape"):
        detect_features_in_mask(img, np.zeros((H, W + 1), np.uint8), ["NeedleTip"], 1e-7)
    with pytest.raises(ValueError, match="pixelsize must be > 0 m, got -1"):
        detect_features_in_mask(img, np.zeros((H, W), np.uint8), ["NeedleTip"], -1)
