"""Site selection on an overview: squares found, bare film rejected, sites saved at the
coincidence point, every decision in the stored run (checked against the simulator's truth)."""

import numpy as np
import pytest

from fibsem_ophyd.alignment.sites import find_squares
from fibsem_ophyd.plans import select_sites

from .._catalog import count_runs


def _square_under_beam(sim):
    """The truth square (and the sample point) under the electron beam's centre."""
    p = sim.truth.surface_point("electron")
    pitch = sim.scene.params.pitch
    region = (p[0] - pitch, p[0] + pitch, p[1] - pitch, p[1] + pitch)
    sq = min(sim.truth.features("square", region), key=lambda f: np.hypot(f.x - p[0],
                                                                          f.y - p[1]))
    return sq, p


def test_sites_are_on_iced_squares_at_the_coincidence_point(session, microscope):
    sim = session.backend
    res = session.RE(select_sites(microscope, n_sites=9, rows=4, cols=3,
                                  md={"grid": "g1"})).plan_result
    squares = session.catalog[res["decisions"]]["square"].read()
    names = list(np.asarray(squares["square_site"]))
    bare = np.asarray(squares["square_bare"]).astype(bool)
    assert len(names) == 9 and np.asarray(squares["square_whole"]).all()  # 3 x 3 squares
    assert bare.sum() == 1 and names[int(np.argmax(bare))] == ""  # the bare one not taken
    assert sorted(res["sites"]) == [f"site-{i}" for i in range(1, 9)]
    # the run's square centres, checked against the truth: bare = carbon film, else ice
    for k in range(9):
        sim.move_stage_absolute({"x": float(squares["square_stage_x"][k]),
                                 "y": float(squares["square_stage_y"][k]),
                                 "z": float(squares["square_stage_z"][k])})
        sq, p = _square_under_beam(sim)
        assert sq.material == ("C" if bare[k] else "ice")
        assert max(abs(p[0] - sq.x), abs(p[1] - sq.y)) < 5e-6  # the centre, within 5 um
    # each saved site: inside an iced square, clear of its bars, near the eucentric height
    half = (sim.scene.params.pitch - sim.scene.params.bar_width) / 2
    for name, pos in res["sites"].items():
        sim.move_stage_absolute(pos)
        sq, p = _square_under_beam(sim)
        assert sq.material == "ice", name
        assert max(abs(p[0] - sq.x), abs(p[1] - sq.y)) < half - 10e-6, name
        # coincidence was found on a feature near the centre, then the stage moved back in
        # the sample plane: the height is the feature's, within the local relief (< 1 um)
        assert pos["z"] == pytest.approx(sim.truth.eucentric_z(), abs=1e-6), name
    # the most even squares first
    rough = np.asarray(squares["square_roughness"])
    order = [rough[names.index(f"site-{i}")] for i in range(1, 9)]
    assert order == sorted(order)
    assert session.catalog[res["decisions"]].start["overview"] == res["overview"]
    assert session.catalog[res["decisions"]].start["grid"] == "g1"


@pytest.mark.parametrize("kwargs, match", [
    ({"n_sites": 0}, r"n_sites must be an integer in \[1, 100000\], got 0"),
    ({"prefix": " "}, "prefix must be a non-empty string"),
    ({"bare_fraction": 1.5}, r"bare_fraction must be a fraction in \(0, 1\], got 1\.5"),
    ({"hfw": -1.0}, "hfw"),
])
def test_bad_site_selection_refused_before_anything(session, microscope, kwargs, match):
    sim = session.backend
    t0, n_runs = sim.time(), count_runs(session.catalog)
    with pytest.raises(ValueError, match=match):
        session.RE(select_sites(microscope, **kwargs))
    assert sim.time() == t0 and count_runs(session.catalog) == n_runs


def test_find_squares_on_a_drawn_grid():
    """Bright 10-px bars every 60 px: 4 x 4 squares of 50 px, grey 100 (one at 70: bare
    film); the blank border from column 200 cuts the right column to 10 px."""
    img = np.full((250, 250), 100.0, np.float32)
    for k in range(0, 250, 60):
        img[k:k + 10, :] = 200.0
        img[:, k:k + 10] = 200.0
    img[70:120, 130:180] = 70.0      # one square of bare film
    img[:, 200:] = 0.0               # outside the tiles
    squares = find_squares(img, 1e-6, min_size=20e-6, margin=3e-6, smooth=1e-6)
    whole = [s for s in squares if s.complete]
    assert len(whole) == 12  # 4 rows x 3 columns; the cut column is not complete
    assert len(squares) == 16 and all(s.col > 190 for s in squares if not s.complete)
    (b,) = [s for s in squares if s.bare]
    assert (b.col, b.row) == pytest.approx((154.5, 94.5))
    assert all(abs(s.size - 50e-6) < 2e-6 for s in whole)
    with pytest.raises(ValueError, match="blank"):
        find_squares(np.zeros((50, 50)), 1e-6)
