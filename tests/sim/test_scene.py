"""The procedural scene: deterministic, consistent between its two evaluation paths, with
structure for registration from 1 mm down to 10 um fields of view, modifiable by patches."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fibsem_ophyd import geometry as G
from fibsem_ophyd.alignment import register
from fibsem_ophyd.sim import MATERIAL_IDS, HeightPatch, Scene
from fibsem_ophyd.sim.scene import RasterGrid
from fibsem_ophyd.sim.scene.patches import apply_patch_grid, apply_patch_points

from ._helpers import small_sim


def test_grid_layout_and_materials():
    sc = Scene(0)
    p = sc.params
    h, m = sc.evaluate([0.0, p.pitch / 2, 1.3e-3, 1.6e-3], [0.0, 0.0, 0.0, 0.0])
    # hole centre: film + ice (or bare film); bar axis and rim: gold at bar height; holder below
    assert m[0] in (MATERIAL_IDS["ice"], MATERIAL_IDS["C"], MATERIAL_IDS["organic"],
                    MATERIAL_IDS["Pt"])
    assert m[1] == m[2] == MATERIAL_IDS["Au"]
    assert h[1] == pytest.approx(p.bar_height, abs=2e-6) and h[2] == pytest.approx(
        p.bar_height, abs=2e-6)
    assert m[3] == MATERIAL_IDS["Cu"] and h[3] < -p.holder_depth / 2
    iced, thick = sc.tem_grid.hole_props(np.arange(-20, 20), np.zeros(40, dtype=int))
    assert 0.7 < iced.mean() <= 1.0
    assert np.all((thick[iced] >= p.ice_thickness[0]) & (thick[iced] <= p.ice_thickness[1]))


def test_deterministic_from_seed():
    x = np.linspace(-3e-4, 3e-4, 500)
    y = np.linspace(-2e-4, 2e-4, 500)
    a, ma = Scene(5).evaluate(x, y)
    b, mb = Scene(5).evaluate(x, y)
    c, _ = Scene(6).evaluate(x, y)
    assert np.array_equal(a, b) and np.array_equal(ma, mb)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("spacing", [2e-7, 1e-8])
def test_raster_matches_point_evaluation(spacing):
    sc = Scene(3)
    grid = RasterGrid((-20e-6, 15e-6), (spacing, 0.0), (0.0, -spacing), 300, 200)
    hr, mr = sc.rasterize(grid)
    rng = np.random.default_rng(0)
    i = rng.integers(0, grid.ni, 400)
    j = rng.integers(0, grid.nj, 400)
    x = grid.origin[0] + i * grid.di[0] + j * grid.dj[0]
    y = grid.origin[1] + i * grid.di[1] + j * grid.dj[1]
    hp, mp = sc.evaluate(x, y, spacing=spacing)
    # same surface up to float32 and the per-axis vs isotropic anti-alias taper
    assert np.median(np.abs(hr[j, i] - hp)) < 0.02 * spacing + 1e-9
    assert np.mean(mr[j, i] == mp) > 0.97


def test_rotated_raster_matches_point_evaluation():
    sc = Scene(4)
    a = math.radians(30)
    sp = 1e-7
    grid = RasterGrid((40e-6, 10e-6), (sp * math.cos(a), sp * math.sin(a)),
                      (sp * math.sin(a), -sp * math.cos(a)), 256, 256)
    hr, mr = sc.rasterize(grid)
    jj, ii = np.mgrid[0:256:17, 0:256:13]
    x = grid.origin[0] + ii * grid.di[0] + jj * grid.dj[0]
    y = grid.origin[1] + ii * grid.di[1] + jj * grid.dj[1]
    hp, mp = sc.evaluate(x, y, spacing=sp)
    assert np.median(np.abs(hr[jj, ii] - hp)) < 5e-9
    assert np.mean(mr[jj, ii] == mp) > 0.97


def test_height_bounds_contain_the_surface():
    sc = Scene(2)
    for bbox in [(-60e-6, 60e-6, -40e-6, 40e-6), (1.45e-3, 1.55e-3, -5e-5, 5e-5),
                 (-5e-6, 5e-6, -3e-6, 3e-6)]:
        lo, hi = sc.height_bounds(bbox)
        xs, ys = np.meshgrid(np.linspace(bbox[0], bbox[1], 120), np.linspace(bbox[2], bbox[3], 90))
        h = sc.height(xs, ys)
        assert lo <= h.min() and h.max() <= hi


def test_patches_modify_height_and_material_and_bump_the_version():
    sc = Scene(1)
    v0 = sc.version
    x, y = np.array([0.0, 20e-6]), np.array([0.0, 0.0])
    h0, _ = sc.evaluate(x, y)
    dh = np.full((11, 11), -1e-6, dtype=np.float32)
    mat = np.full((11, 11), MATERIAL_IDS["Si"], dtype=np.uint8)
    sc.add_patch(HeightPatch(-5e-6, -5e-6, 1e-6, dh, mat))
    assert sc.version == v0 + 1
    h1, m1 = sc.evaluate(x, y)
    assert h1[0] == pytest.approx(h0[0] - 1e-6, abs=1e-12) and m1[0] == MATERIAL_IDS["Si"]
    assert h1[1] == h0[1]                                 # outside the patch
    grid = RasterGrid((-8e-6, 8e-6), (1e-7, 0.0), (0.0, -1e-7), 160, 160)
    hr, mr = sc.rasterize(grid)
    assert mr[80, 80] == MATERIAL_IDS["Si"] and mr[5, 5] != MATERIAL_IDS["Si"]
    with pytest.raises(ValueError):
        HeightPatch(0.0, 0.0, 0.0, dh)


@pytest.mark.parametrize("hfw", [9e-4, 1e-5])
def test_enough_structure_to_register_at_every_scale(hfw):
    """A stable move of 3.3 % x 2.7 % of the field is recovered at 0.9 mm and at 10 um HFW."""
    sim = small_sim(seed=5)
    sim.set("hfw", hfw, "electron")
    p = hfw / 768
    pos = sim.get_stage_position()
    a = sim.acquire_image("electron", {"dwell_time": 2e-6})
    d = (25.3 * p, -20.6 * p)
    dx, dy, dz = G.stable_move_delta(*d, "electron", 0.0, math.radians(pos["t"]), sim.geometry)
    sim.move_stage_absolute({"x": dx, "y": dy, "z": pos["z"] + dz})
    b = sim.acquire_image("electron", {"dwell_time": 2e-6})
    reg = register(a, b)
    assert reg.score > 0.3
    assert reg.dx == pytest.approx(25.3, abs=0.3) and reg.dy == pytest.approx(-20.6, abs=0.3)


@pytest.mark.parametrize("grid", [
    # x along columns, y along rows (the renderer's usual block), overlapping the patch edge
    RasterGrid((-5.3e-6, 4.1e-6), (3.1e-8, 0.0), (0.0, -2.9e-8), 260, 210),
    # x along rows, y along columns (the transposed raster of a view with parallax)
    RasterGrid((-2.2e-6, -6.0e-6), (0.0, 4.3e-8), (3.7e-8, 0.0), 240, 150),
    # a grid finer than the patch's nodes, rows going up
    RasterGrid((0.5e-6, -1.0e-6), (1.1e-8, 0.0), (0.0, 1.3e-8), 300, 180),
])
@pytest.mark.parametrize("uniform", [False, True])
def test_patch_on_an_axis_aligned_grid_matches_the_per_node_interpolation(grid, uniform):
    """The separable (per-row, per-column) bilinear path of a height/material patch gives the
    heights and materials of the per-node path at every node (float32 rounding only); also
    for a deposited layer's single material (its shortcut)."""
    rng = np.random.default_rng(3)
    ny, nx = 110, 95
    material = np.full((ny, nx), 255, np.uint8)
    material[20:70, 15:60] = 1
    material[40:50, 5:30] = 3
    if uniform:
        material[...] = 7
    patch = HeightPatch(x0=-3e-6, y0=-4e-6, spacing=7e-8,
                        dh=rng.normal(0.0, 2e-7, (ny, nx)), material=material)
    h0 = rng.normal(0.0, 1e-7, (grid.nj, grid.ni)).astype(np.float32)
    m0 = rng.integers(0, 3, (grid.nj, grid.ni)).astype(np.uint8)

    h_fast, m_fast = h0.copy(), m0.copy()
    assert (patch.uniform_material is not None) == uniform
    apply_patch_grid(patch, grid, h_fast, m_fast)
    # the per-node reference at every node of the grid
    jj, ii = np.mgrid[0:grid.nj, 0:grid.ni]
    x = grid.origin[0] + ii * grid.di[0] + jj * grid.dj[0]
    y = grid.origin[1] + ii * grid.di[1] + jj * grid.dj[1]
    h_ref, m_ref = apply_patch_points(patch, x.ravel(), y.ravel(),
                                      h0.astype(np.float64).ravel(), m0.ravel())
    touched = h_ref.reshape(h0.shape) != h0
    assert touched.sum() > 1000  # the patch covers part of the grid ...
    assert (~touched).sum() > 1000  # ... and not all of it
    np.testing.assert_allclose(h_fast, h_ref.reshape(h0.shape), rtol=0, atol=1e-12)
    np.testing.assert_array_equal(m_fast, m_ref.reshape(m0.shape))
    assert (m_fast != m0).sum() > 100  # materials were replaced where the patch says so


def test_height_bounds_count_only_the_patches_that_reach_the_region():
    """Milled patches elsewhere on the grid do not widen a region's height bounds (they did,
    and after a batch's many millings a zoomed frame's parallax margins overflowed: the frame
    came out blank); one that reaches the region does."""
    scene = Scene(seed=3)
    box = (-2e-6, 2e-6, -2e-6, 2e-6)
    lo0, hi0 = scene.height_bounds(box)
    for k in range(30):  # deep cuts 0.5 mm away
        scene.add_patch(HeightPatch(x0=5e-4 + k * 2e-5, y0=0.0, spacing=1e-6,
                                    dh=np.full((5, 5), -5e-6)))
    assert scene.height_bounds(box) == (lo0, hi0)
    scene.add_patch(HeightPatch(x0=-1e-6, y0=-1e-6, spacing=1e-6, dh=np.full((3, 3), -5e-6)))
    assert scene.height_bounds(box)[0] == pytest.approx(lo0 - 5e-6)


def test_a_zoomed_frame_after_many_cuts_elsewhere_still_shows_the_sample():
    from fibsem_ophyd.sim import SimulatedMicroscope

    sim = SimulatedMicroscope(seed=3)
    sim.set("hfw", 3.6e-6, "ion")
    before = sim.render_clean("ion")
    for k in range(30):
        sim.scene.add_patch(HeightPatch(x0=5e-4 + k * 2e-5, y0=0.0, spacing=1e-6,
                                        dh=np.full((5, 5), -5e-6)))
    after = sim.render_clean("ion")
    assert after.std() > 0.5 * before.std() > 0
    assert np.corrcoef(before.ravel(), after.ravel())[0, 1] > 0.9
