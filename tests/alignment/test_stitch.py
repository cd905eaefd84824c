"""Stitching a 3x3 grid of tiles cut from one texture at known positions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from fibsem_ophyd.alignment.stitch import blend, grid_pairs, stitch_tiles

H, W = 128, 192
STEP = (172, 115)  # col, row: ~10 % overlap


def _scene(rng, shape=(3 * 128, 3 * 192)):
    fine = ndimage.gaussian_filter(rng.standard_normal(shape), 1.5)
    coarse = ndimage.gaussian_filter(rng.standard_normal(shape), 8.0)
    return 100 + 20 * fine / fine.std() + 20 * coarse / coarse.std()


def _cut(scene, true, rng, noise=2.0):
    tiles = []
    for pc, pr in true:
        t = ndimage.shift(scene, (-pr, -pc), order=3, mode="nearest")[:H, :W]
        tiles.append(t + noise * rng.standard_normal(t.shape))
    return tiles


def _grid(rows=3, cols=3):
    return np.array([[j * STEP[0], i * STEP[1]] for i in range(rows) for j in range(cols)],
                    dtype=float) + 10.0


def test_grid_pairs():
    assert grid_pairs(2, 2) == [(0, 1), (0, 2), (1, 3), (2, 3)]
    assert len(grid_pairs(3, 3)) == 12


def test_refinement_recovers_true_positions():
    rng = np.random.default_rng(0)
    scene = _scene(rng)
    nominal = _grid()
    err = rng.uniform(-2.5, 2.5, nominal.shape)
    err -= err.mean(axis=0)  # the prior keeps the mean: give it a zero-mean error
    true = nominal + err
    tiles = _cut(scene, true, rng)
    m = stitch_tiles(tiles, nominal, 3, 3)
    assert all(p.used for p in m.pairs) and len(m.pairs) == 12
    got = m.positions - np.array(m.shift)
    assert np.abs(got - true).max() < 0.25
    # nominal-only placement is off by the errors
    m0 = stitch_tiles(tiles, nominal, 3, 3, refine=False)
    assert np.abs(m0.positions - np.array(m0.shift) - true).max() > 1.0
    # the mosaic reproduces the scene where covered: scene pixel (r, c) is mosaic
    # pixel (r + shift_row, c + shift_col)
    sc, sr = m.shift
    rr, cc = np.mgrid[30:2 * STEP[1] + H - 10, 30:2 * STEP[0] + W - 10].astype(float)
    mos = ndimage.map_coordinates(m.image, [rr + sr, cc + sc], order=1)
    ref = scene[30:2 * STEP[1] + H - 10, 30:2 * STEP[0] + W - 10]
    assert np.corrcoef(mos.ravel(), ref.ravel())[0, 1] > 0.98
    assert np.abs(mos - ref).mean() < 3.0


def test_unmatchable_pairs_fall_back_to_nominal():
    rng = np.random.default_rng(1)
    tiles = [rng.standard_normal((H, W)) for _ in range(4)]  # unrelated noise
    nominal = _grid(2, 2)
    m = stitch_tiles(tiles, nominal, 2, 2)
    assert not any(p.used for p in m.pairs)
    assert np.allclose(m.positions - np.array(m.shift), nominal, atol=1e-9)


def test_blend_is_seamless_on_a_constant():
    tiles = [np.full((H, W), 7.0)] * 4
    img = blend(tiles, _grid(2, 2) - 10.0 + 0.3, (20, 13))
    inner = img[5:STEP[1] + H - 5, 5:STEP[0] + W - 5]
    assert np.allclose(inner, 7.0, atol=1e-4)


def test_bad_input():
    with pytest.raises(ValueError, match="rows \\* cols"):
        stitch_tiles([np.zeros((8, 8))] * 3, np.zeros((3, 2)), 2, 2)
    with pytest.raises(ValueError, match="one shape"):
        stitch_tiles([np.zeros((8, 8)), np.zeros((9, 8))], np.zeros((2, 2)), 1, 2)
    with pytest.raises(ValueError, match="nominal"):
        stitch_tiles([np.zeros((8, 8))] * 2, np.zeros((3, 2)), 1, 2)
