"""The parallax warp against the exact integral it stands for, and the ion frame it renders
against the same frame through a float64 reference warp that shades every node."""

from __future__ import annotations

import numpy as np
import pytest

from fibsem_ophyd.sim import parallax, render

from ._helpers import small_sim

EPS32 = float(np.finfo(np.float32).eps)


def exact_warp(hgt, sig, kappa, top, h_ref, rows):
    """Rows ``rows`` of the warp in float64, straight from its definition: the visible
    envelope is the running extremum of ``V_j = j + kappa (h_j - h_ref)``, the density
    ``(S_j + S_j+1) / 2`` on ``[E_j, E_j+1]``, and row ``k`` its integral over
    ``[top - 1/2 + k, top + 1/2 + k]`` (the integral up to a point interpolated between
    the knots). Returns ``(lines, k1 - k0)``."""
    hgt = np.asarray(hgt, dtype=np.float64)
    sig = np.asarray(sig, dtype=np.float64)
    nl, n = hgt.shape
    v = np.arange(n) + kappa * (hgt - h_ref) - (top - 0.5)
    if kappa < 0:
        env = np.minimum.accumulate(v[:, ::-1], axis=1)[:, ::-1]
    else:
        env = np.maximum.accumulate(v, axis=1)
    cum = np.zeros((nl, n))
    cum[:, 1:] = np.cumsum(0.5 * (sig[:, :-1] + sig[:, 1:]) * np.diff(env, axis=1), axis=1)
    edges = np.arange(rows[0], rows[1] + 1, dtype=np.float64)
    return np.stack([np.diff(np.interp(edges, env[i], cum[i])) for i in range(nl)])


def _lines(kappa, seed=0, nl=37, n=400):
    """Heights with cliffs, ramps and texture (occlusion and magnification both ways) and a
    positive signal."""
    rng = np.random.default_rng(seed)
    j = np.arange(n)
    h = np.zeros((nl, n))
    for line in range(nl):
        a, b = sorted(rng.integers(20, n - 20, 2))
        h[line, a:b] += rng.uniform(2e-6, 6e-6)                      # a mesa with two cliffs
        h[line] += rng.uniform(-1e-8, 1e-8) * (j - n / 2)           # a tilt
    h += rng.normal(0, 5e-8, h.shape)
    sig = rng.uniform(0.2, 3.0, (nl, n))
    return h.astype(np.float32), sig.astype(np.float32)


@pytest.mark.parametrize("kappa", [-8.07e6, -2.3e6, 3.1e6, 9.5e6])
@pytest.mark.parametrize("rows", [None, (7, 301)])
def test_warp_is_the_exact_integral_of_the_visible_density(kappa, rows):
    """Every output row equals the float64 integral of the visible signal over the row, up
    to the float32 rounding of the envelope (a few ulps of the largest row coordinate times
    the signal); occlusion hides signal and magnification spreads it, so rows differ from a
    plain resampling."""
    h, sig = _lines(kappa)
    top, n_out = 60, 330
    h_ref = 3e-6
    k0, k1 = rows or (0, n_out)
    want = exact_warp(h, sig, kappa, top, h_ref, (k0, k1))
    got = parallax.warp(h, sig, kappa, top, n_out, h_ref, rows=rows)
    assert got.shape == want.shape == (h.shape[0], k1 - k0)
    env_max = h.shape[1] + abs(kappa) * float(np.ptp(h)) + top
    tol = 4 * EPS32 * env_max * float(sig.max())
    np.testing.assert_allclose(got, want, rtol=0, atol=tol)
    # the warp is not the identity: cliffs hide nodes and stretch others
    plain = 0.5 * (sig[:, top + k0:top + k1] + sig[:, top + k0 + 1:top + k1 + 1])
    assert np.abs(want - plain).max() > 0.5
    # a tilted view conserves the signal it shows: the rows' sum is the visible integral
    assert got.sum() == pytest.approx(want.sum(), rel=1e-5)


@pytest.mark.parametrize("kappa", [-8.07e6, 5.2e6])
def test_nodes_outside_the_visible_range_cannot_change_the_rows(kappa):
    """``project`` shades only ``visible_nodes``; poisoning the signal of every other node
    with NaN leaves the rows finite and equal, bit for bit, to the warp of the true signal
    on whole lines."""
    h, sig = _lines(kappa, seed=3, n=600)
    top, rows, h_ref = 80, (40, 400), 2e-6
    env = parallax.envelope(h, kappa, top, h_ref, rows[0])
    c0, c1 = parallax.visible_nodes(env, rows[1] - rows[0])
    assert 0 < c0 and c1 < h.shape[1]          # the range leaves nodes out at both ends
    asked = []

    def shade_nodes(a, b):
        asked.append((a, b))
        poisoned = np.full_like(sig, np.nan)
        poisoned[:, a:b] = sig[:, a:b]
        return poisoned[:, a:b]

    out = np.empty((rows[1] - rows[0], h.shape[0]), dtype=np.float32)
    parallax.project(h, shade_nodes, kappa, top, h_ref, rows, out)
    assert asked == [(c0, c1)]
    assert np.isfinite(out).all()
    full = parallax.warp(h, sig, kappa, top, 700, h_ref, rows=rows)
    np.testing.assert_array_equal(out.T, full)     # bit for bit: a row reads no other node
    # and one node fewer on either side would change them (by the part of its segment
    # that overlaps the first or the last row)
    for a, b in ((c0 + 1, c1), (c0, c1 - 1)):
        lost = sig.copy()
        lost[:, :a] = 0.0
        lost[:, b:] = 0.0
        assert np.abs(parallax.warp(h, lost, kappa, top, 700, h_ref, rows=rows) - full).max() > 1e-5


def _reference_project(hgt, shade_nodes, kappa, top, h_ref, rows, out_rows):
    """The reference path: every node shaded, the float64 warp."""
    sig = shade_nodes(0, hgt.shape[1])
    out_rows[...] = exact_warp(hgt, sig, kappa, top, h_ref, rows).T
    return out_rows


@pytest.mark.parametrize("setup", ["default", "moved", "rotated", "oblique", "milled"])
def test_ion_frame_matches_the_reference_path(setup, monkeypatch):
    """A whole ion frame (52 deg to the surface, ~8 rows of parallax per um) rendered by the
    fast path (nodes shaded only where the rows see them, float32 warp) equals the frame
    rendered with every node shaded and the float64 warp, to float32 rounding."""
    from fibsem_ophyd.milling import Rectangle

    sim = small_sim(seed=4)
    if setup == "moved":
        sim.move_stage_absolute({"x": 3.9e-6, "y": -2.1e-6})
    elif setup == "rotated":            # parallax the other way (kappa > 0)
        sim.set("scan_rotation", 180.0, "ion")
    elif setup == "oblique":            # a raster rotated to the parallax, then resampled
        sim.set("scan_rotation", 30.0, "ion")
    elif setup == "milled":
        sim.mill([Rectangle(width=6e-6, height=3e-6, depth=3e-6, centre_y=2e-6)], current=1e-9)
    fast = sim.render_clean("ion")
    stats = sim.last_render
    assert abs(stats.parallax_px_per_um) > 1.0        # the parallax path, not the plain one
    monkeypatch.setattr(render, "project", _reference_project)
    sim.imaging._clean_cache.clear()
    ref = sim.render_clean("ion")
    assert fast.shape == ref.shape
    scale = float(np.abs(ref).max())
    diff = np.abs(fast.astype(np.float64) - ref)
    assert diff.max() <= 1e-4 * scale
    assert diff.mean() <= 1e-6 * scale
    assert ref.std() > 0.05 * ref.mean()              # a frame with contrast, not a blank
