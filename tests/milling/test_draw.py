"""Patterns outlined over an ion image land on the pixels geometry predicts (+y up -> rows
down), in the drawn patches and in the rendered PNG."""

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.image import imread  # noqa: E402

from fibsem_ophyd.milling import (  # noqa: E402
    CirclePattern,
    RectanglePattern,
    Trench,
    make_pattern,
)
from fibsem_ophyd.plots import draw_pattern  # noqa: E402

UM = 1e-6
SHAPE = (300, 400)  # rows, cols
PX = 50e-9  # a 20 x 15 um field


def _pixel(x, y):
    """Where (x, y) m lands: col = W/2 + x/p - 1/2, row = H/2 - y/p - 1/2 (pixel centres at
    integers, as imshow draws them)."""
    h, w = SHAPE
    return w / 2 + x / PX - 0.5, h / 2 - y / PX - 0.5


def _render(pattern, path):
    """Draw ``pattern`` in red over a black image the exact size of the image; read the PNG."""
    h, w = SHAPE
    fig = Figure(figsize=(w / 100, h / 100), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    patches = draw_pattern(pattern, ax, SHAPE, PX, image=np.zeros(SHAPE), edgecolor="red",
                           linewidth=0.72, antialiased=False)  # 0.72 pt = 1 px at 100 dpi
    fig.savefig(path, dpi=100)
    rgb = imread(path)[..., :3]
    assert rgb.shape[:2] == SHAPE
    red = (rgb[..., 0] > 0.5) & (rgb[..., 1] < 0.3) & (rgb[..., 2] < 0.3)
    return patches, red


def test_outline_vertices_are_the_corners_in_pixels():
    r = RectanglePattern(4 * UM, 2 * UM, 1 * UM, centre_x=3 * UM, centre_y=-2 * UM, rotation=30)
    (ring,) = r.outline_pixels(PX, SHAPE)
    c, s = math.cos(math.radians(30)), math.sin(math.radians(30))
    corners = [(3 * UM + c * u - s * v, -2 * UM + s * u + c * v)
               for u, v in ((-2 * UM, -1 * UM), (2 * UM, -1 * UM), (2 * UM, 1 * UM),
                            (-2 * UM, 1 * UM))]
    assert ring == pytest.approx(np.array([_pixel(x, y) for x, y in corners]), abs=1e-9)
    # +y up is rows down: the top corner (largest y) has the smallest row
    top = max(corners, key=lambda p: p[1])
    assert ring[:, 1].min() == pytest.approx(_pixel(*top)[1])


def test_drawn_outline_lands_where_geometry_puts_it(tmp_path):
    # an axis-aligned box 6 x 4 um at (2, 1) um: columns 400/2 + (-1 .. 5) um / 50 nm,
    # rows 300/2 - (3 .. -1) um / 50 nm
    box = RectanglePattern(6 * UM, 4 * UM, 1 * UM, centre_x=2 * UM, centre_y=1 * UM)
    (patch,), red = _render(box, tmp_path / "box.png")
    verts = patch.get_patch_transform().transform(patch.get_path().vertices)[:4]
    (c0, r1), (c1, r0) = _pixel(-1 * UM, -1 * UM), _pixel(5 * UM, 3 * UM)
    assert sorted(verts[:, 0]) == pytest.approx([c0, c0, c1, c1])
    assert sorted(verts[:, 1]) == pytest.approx([r0, r0, r1, r1])
    rows, cols = np.nonzero(red)
    assert abs(cols.min() - c0) <= 1 and abs(cols.max() - c1) <= 1
    assert abs(rows.min() - r0) <= 1 and abs(rows.max() - r1) <= 1
    # an outline, not a fill: the box's middle stays black; the edges are red along their length
    cc, rc = _pixel(2 * UM, 1 * UM)
    assert not red[int(rc) - 5:int(rc) + 5, int(cc) - 5:int(cc) + 5].any()
    assert red[int(r0) + 10:int(r1) - 10, int(round(c0)) - 1:int(round(c0)) + 2].any(axis=1).all()
    # the outline encloses exactly the pixels the depth map mills (within the edge pixel)
    milled_rows, milled_cols = np.nonzero(box.depth_map(SHAPE, PX))
    assert milled_cols.min() - 1 <= c0 <= milled_cols.min()
    assert milled_rows.max() <= r1 <= milled_rows.max() + 1


def test_annulus_and_trench_draw_every_ring(tmp_path):
    ring = CirclePattern(radius=4 * UM, depth=1 * UM, thickness=1.5 * UM, centre_x=-2 * UM)
    patches, red = _render(ring, tmp_path / "annulus.png")
    assert len(patches) == 2  # outer and inner circles
    cc, rc = _pixel(-2 * UM, 0.0)
    rows, cols = np.nonzero(red)
    dist = np.hypot(cols - cc, rows - rc) * PX
    near_outer = np.abs(dist - 4 * UM) <= 1.5 * PX
    near_inner = np.abs(dist - 2.5 * UM) <= 1.5 * PX
    assert (near_outer | near_inner).all()  # every red pixel is on one of the two circles
    assert near_outer.sum() > 0.8 * 2 * math.pi * 4 * UM / PX  # and both are drawn round
    assert near_inner.sum() > 0.8 * 2 * math.pi * 2.5 * UM / PX

    t = Trench(8 * UM, 2 * UM, 3 * UM, 1 * UM, 1 * UM)
    patches, red = _render(t, tmp_path / "trench.png")
    assert len(patches) == 2
    # rows of the trench edges: y = 2.5, 0.5 (upper cut), -0.5, -3.5 (lower cut) um
    edge_rows = {round(_pixel(0, y * UM)[1]) for y in (2.5, 0.5, -0.5, -3.5)}
    col = int(round(_pixel(0.0, 0.0)[0]))
    drawn_rows = set(np.flatnonzero(red[:, col]))
    assert all(min(abs(r - d) for d in drawn_rows) <= 1 for r in edge_rows)
    assert all(min(abs(r - d) for r in edge_rows) <= 1 for d in drawn_rows)  # and only there
    assert not red[int(_pixel(0, 0)[1]), col]  # the lamella between them is not outlined


def test_every_pattern_outlines_inside_its_bounds():
    for name in ("Trench", "Horseshoe", "HorseshoeVertical", "Undercut", "Fiducial",
                 "MicroExpansion", "SerialSection", "ArrayPattern", "WaffleNotch",
                 "TrapezoidTrench", "Circle", "Line", "Polygon", "Bitmap", "Rectangle"):
        p = make_pattern({"name": name})
        rings = p.outline()
        assert len(rings) >= len(p.shapes())
        pts = np.concatenate(rings)
        x0, y0, x1, y1 = p.bounds
        tol = 1e-12
        assert pts[:, 0].min() >= x0 - tol and pts[:, 0].max() <= x1 + tol, name
        assert pts[:, 1].min() >= y0 - tol and pts[:, 1].max() <= y1 + tol, name


def test_draw_refuses_a_mismatched_image():
    fig = Figure()
    ax = fig.add_subplot()
    with pytest.raises(ValueError, match=r"image shape \(10, 10\) differs"):
        draw_pattern(Trench(), ax, SHAPE, PX, image=np.zeros((10, 10)))
    with pytest.raises(ValueError, match="pixel_size must be > 0 m, got 0"):
        Trench().draw(ax, 0, SHAPE)
