"""Ground truth agrees with the images: features are where ``project`` says, the eucentric
height is the one at which tilting leaves the image centre still."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fibsem_ophyd.alignment import register

from ._helpers import SMALL, small_sim


def _blob_centroid(img: np.ndarray, col: float, row: float, radius: int) -> tuple[float, float]:
    """Centroid of the positive contrast in a window around (col, row)."""
    c0, r0 = int(round(col)), int(round(row))
    win = img[r0 - radius:r0 + radius + 1, c0 - radius:c0 + radius + 1].astype(float)
    w = np.clip(win - np.median(win), 0, None)
    w[w < 0.5 * w.max()] = 0
    rr, cc = np.mgrid[-radius:radius + 1, -radius:radius + 1]
    return c0 + float((w * cc).sum() / w.sum()), r0 + float((w * rr).sum() / w.sum())


def test_particles_appear_where_projected():
    sim = small_sim(seed=2)
    img = sim.render_clean("electron")
    p = sim.truth.pixel_size("electron")
    h, w = img.shape
    sc = sim.scene.params
    flat = (sc.pitch - sc.bar_width) / 2 - sc.bar_edge - 5e-6     # away from the bar walls

    def in_hole(f):
        fx = f.x - round(f.x / sc.pitch) * sc.pitch
        fy = f.y - round(f.y / sc.pitch) * sc.pitch
        return max(abs(fx), abs(fy)) < flat

    parts = [f for f in sim.truth.features("particle") if f.size > 0.9e-6 and in_hole(f)]
    checked = 0
    for f in parts:
        col, row = sim.truth.project(f.position, "electron")
        radius = int(math.ceil(f.size / p)) + 3
        if not (radius < col < w - radius - 1 and radius < row < h - radius - 1):
            continue
        # isolated from the other particles
        if any(g is not f and math.hypot(g.x - f.x, g.y - f.y) < 2.5 * radius * p for g in parts):
            continue
        cx, cy = _blob_centroid(img, col, row, radius)
        assert math.hypot(cx - col, cy - row) < 0.5, (f, cx, cy, col, row)
        checked += 1
    assert checked >= 5


def test_feature_list_and_projection_shapes():
    sim = small_sim(seed=2)
    feats = sim.truth.features()
    kinds = {f.kind for f in feats}
    assert {"particle", "square"} <= kinds
    sq = [f for f in feats if f.kind == "square"]
    assert any(f.x == 0.0 and f.y == 0.0 for f in sq)       # a hole centred at the origin
    pts = np.array([f.position for f in feats[:10]])
    cols, rows = sim.truth.project(pts, "ion")
    assert cols.shape == (len(pts),) and rows.shape == (len(pts),)
    with pytest.raises(ValueError):
        sim.truth.features("unicorn")
    cells = sim.truth.features("cell", region=(-5e-4, 5e-4, -5e-4, 5e-4))
    assert len(cells) > 30
    assert all(5e-6 <= c.size <= 20e-6 and 1e-6 < c.height < 7e-6 for c in cells)


def test_stage_position_for_centres_a_feature_in_both_beams():
    sim = small_sim(seed=3)
    target = max(sim.truth.features("particle"), key=lambda f: f.size)
    pos = sim.truth.stage_position_for((target.x, target.y))
    sim.move_stage_absolute(pos)
    centre = ((SMALL[0] - 1) / 2, (SMALL[1] - 1) / 2)
    for beam in ("electron", "ion"):
        col, row = sim.truth.project([target.x, target.y, target.z], beam)
        assert (col, row) == pytest.approx(centre, abs=1e-3)
        found = sim.truth.feature_at_image_centre(beam)
        assert found is not None and found.id == target.id and found.kind == "particle"
    # and the blob really is there
    img = sim.render_clean("electron")
    radius = int(target.size / sim.truth.pixel_size("electron")) + 3
    cx, cy = _blob_centroid(img, *centre, radius=radius)
    assert math.hypot(cx - centre[0], cy - centre[1]) < 0.75


def test_eucentric_z_is_where_tilting_keeps_the_centre_still():
    sim = small_sim(seed=4, config={"sim": {"sample_height_offset": 30e-6}})
    s = sim.truth.surface_point("electron")
    z_eu = sim.truth.eucentric_z()
    aligned = sim.truth.stage_position_for(s[:2])
    assert aligned["z"] == pytest.approx(z_eu, abs=1e-9)
    p = sim.truth.pixel_size("electron")
    settings = {"dwell_time": 3e-6}

    def tilt_shift():
        pos = sim.get_stage_position()
        a = sim.acquire_image("electron", settings)
        sim.move_stage_absolute({"t": pos["t"] - 4.0})
        b = sim.acquire_image("electron", settings)
        sim.move_stage_absolute({"t": pos["t"]})
        return register(a, b)

    # the point on the SEM axis is (z - z_eu) above the tilt plane, (z - z_eu) / cos t from the
    # tilt axis: a 4 deg tilt moves it by that distance times sin(4 deg) (physics.md)
    off = tilt_shift()
    pos = sim.get_stage_position()
    assert pos["z"] - z_eu == pytest.approx(30e-6 * math.cos(sim.geometry.shuttle_pre_tilt),
                                            rel=0.15)
    rho = (pos["z"] - z_eu) / math.cos(math.radians(pos["t"]))
    assert abs(off.dy) == pytest.approx(rho * math.sin(math.radians(4)) / p, rel=0.05)
    sim.move_stage_absolute(aligned)
    on = tilt_shift()
    assert math.hypot(on.dx, on.dy) < 0.5


def test_focus_truth_matches_the_sharpest_image():
    sim = small_sim(seed=6)
    focus = sim.truth.focus_working_distance("electron")
    assert focus == pytest.approx(sim.config["electron"]["eucentric_height"], abs=20e-6)
    sim.set("working_distance", focus, "electron")
    assert sim.imaging.optics("electron", sim.truth.view("electron")).sigma < 0.5
