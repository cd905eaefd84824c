"""Exact class masks and keypoints of the lift-out objects: the mask is the projected object
(checked against the corners projected by ``sim.truth.project`` and a polygon test of their
convex hull), the image changes exactly where the mask says, keypoints sit where geometry
puts them."""

import math

import numpy as np
import pytest
from matplotlib.path import Path
from scipy.spatial import ConvexHull

from fibsem_ophyd.sim.objects_liftout import CLASS_IDS

from ._helpers import small_sim


def _hull_inside(sim, corners_sample, beam, shape):
    """Pixel centres inside the convex hull of the corners projected by the truth's own
    projection (``sim.truth.project``), and their distance band to the hull (px)."""
    col, row = sim.truth.project(corners_sample, beam)
    pts = np.column_stack([col, row])
    hull = pts[ConvexHull(pts).vertices]
    h, w = shape
    cc, rr = np.meshgrid(np.arange(w), np.arange(h))
    grid = np.column_stack([cc.ravel(), rr.ravel()])
    inside = Path(hull).contains_points(grid).reshape(h, w)
    near = np.zeros((h, w), dtype=bool)   # pixel centres within 0.01 px of the outline: ties
    for k in range(len(hull)):
        a, b = hull[k], hull[(k + 1) % len(hull)]
        e = b - a
        t = np.clip(((grid - a) @ e) / (e @ e), 0, 1)
        d = np.hypot(*(grid - (a + t[:, None] * e)).T)
        near |= (d < 0.01).reshape(h, w)
    return inside, near


@pytest.mark.parametrize("beam", ["electron", "ion"])
def test_post_mask_is_the_projected_block(beam):
    sim = small_sim(seed=4)
    sim.set("scan_rotation", 25.0, beam)         # a rotated scan: the mask must follow
    sim.set("shift", [3e-6, -2e-6], beam)
    centre = sim.truth.surface_point(beam)
    posts = sim.liftout.add_landing_grid(centre[:2], posts=2, pitch=50e-6, post_width=20e-6,
                                         post_height=30e-6)
    mask = sim.truth.mask(beam)
    assert mask.shape == (512, 768) and mask.dtype == np.uint8
    expect = np.zeros(mask.shape, dtype=bool)
    ties = np.zeros(mask.shape, dtype=bool)
    for b in posts:
        inside, near = _hull_inside(sim, b.corners(), beam, mask.shape)
        expect |= inside
        ties |= near
    got = mask == CLASS_IDS["landing_post"]
    assert expect.sum() > 2000                  # the posts are in the frame
    assert np.array_equal(got[~ties], expect[~ties])


def test_image_changes_exactly_where_the_mask_is():
    """The block drawn into the noise-free image covers the mask's pixels and nothing
    beyond the blur's reach."""
    sim = small_sim(seed=2)
    beam = "ion"
    before = sim.render_clean(beam)
    c = sim.truth.surface_point(beam)
    sim.liftout.add_volume_block((c[0] + 10e-6, c[1]), size=(30e-6, 12e-6, 8e-6))
    after = sim.render_clean(beam)
    mask = sim.truth.mask(beam) == CLASS_IDS["volume_block"]
    changed = np.abs(after - before) > 1e-6 * float(np.abs(before).max())
    assert mask.sum() > 1000
    # blur reach: 3 sigma of the frame's optics plus the anti-aliasing pixel
    sigma = sim.imaging.optics(beam, sim.truth.view(beam)).max_sigma
    reach = int(math.ceil(3 * sigma)) + 2
    from scipy import ndimage
    grown = ndimage.binary_dilation(mask, iterations=reach)
    core = ndimage.binary_erosion(mask, iterations=reach)
    assert not (changed & ~grown).any()
    assert changed[core].all()


def test_needle_mask_and_tip():
    sim = small_sim(seed=3)
    sim.move_stage_absolute({"z": sim.get_stage_position()["z"] - 60e-6})
    sim.insert_manipulator("PARK")
    sim.move_manipulator_absolute({"x": -20e-6, "y": 5e-6, "z": 0.0})
    for beam in ("electron", "ion"):
        mask = sim.truth.mask(beam)
        col, row = sim.truth.keypoint("NeedleTip", beam)
        needle = np.argwhere(mask == CLASS_IDS["manipulator"])
        assert len(needle) > 500
        # the needle comes from the right: its left-most pixel is the tip, within a pixel
        k = int(np.argmin(needle[:, 1]))
        assert abs(needle[k, 1] - col) <= 1.0
        assert abs(needle[k, 0] - row) <= 2.0
        # the tip is the projected tip position moved back by the apex radius
        c0, r0 = sim.truth.project(sim.truth.view(beam).chamber_to_sample(sim.needle.tip()),
                                   beam)
        px = sim.truth.pixel_size(beam)
        assert math.hypot(col - c0, row - r0) == pytest.approx(0.5e-6 / px, rel=1e-6)
    sim.retract_manipulator()
    assert not (sim.truth.mask("ion") == CLASS_IDS["manipulator"]).any()
    with pytest.raises(ValueError, match="not inserted"):
        sim.truth.keypoint("NeedleTip", "ion")


def test_lamella_keypoints_are_the_projected_slab():
    sim = small_sim(seed=5)
    beam = "ion"
    c = sim.truth.surface_point(beam)
    lam = sim.liftout.add_lamella(c[:2], width=20e-6, depth=6e-6, thickness=3e-6)
    # a projected box is centrally symmetric: its bounding-box centre is its centre's image
    cx, cy = sim.truth.project(np.asarray(lam.centre), beam)
    kx, ky = sim.truth.keypoint("LamellaCentre", beam)
    assert kx == pytest.approx(cx, abs=1e-6) and ky == pytest.approx(cy, abs=1e-6)
    mask = sim.truth.mask(beam) == CLASS_IDS["lamella"]
    lx, ly = sim.truth.keypoint("LamellaLeftEdge", beam)
    rx_, _ = sim.truth.keypoint("LamellaRightEdge", beam)
    cols = np.nonzero(mask[int(round(ly))])[0]
    assert abs(cols.min() - lx) <= 1.0 and abs(cols.max() - rx_) <= 1.0
    # the slab is 20 um wide: its silhouette spans that many pixels (plus the thickness's
    # and depth's projection, at most a few um)
    px = sim.truth.pixel_size(beam)
    assert 20e-6 / px - 2 <= rx_ - lx <= 26e-6 / px
    # the trenches are milled: the surface next to the slab is lower than before
    assert sim.scene.height(np.array([c[0]]), np.array([c[1] + 6e-6]))[0] < c[2] - 5e-6


def test_bad_keypoint_requests():
    sim = small_sim(seed=1)
    with pytest.raises(ValueError, match="unknown keypoint 'Needle'"):
        sim.truth.keypoint("Needle", "ion")
    with pytest.raises(ValueError, match="no lamella"):
        sim.truth.keypoint("LamellaCentre", "ion")
    with pytest.raises(ValueError, match="lamella width"):
        sim.liftout.add_lamella((0.0, 0.0), width=-1.0)
