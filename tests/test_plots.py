"""Plots read stored runs: the drawn shift arrow is the recorded measurement."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
from bluesky import plan_stubs as bps  # noqa: E402

from fibsem_ophyd.plans import acquire_reference, align_beam_shift  # noqa: E402
from fibsem_ophyd.plots import alignment_table, plot_alignment, plot_convergence  # noqa: E402


def test_plot_alignment_shows_the_recorded_shift(session, microscope):
    ref = session.RE(acquire_reference(microscope.sem, hfw=100e-6)).plan_result
    session.RE(bps.mv(microscope.stage, {"x": microscope.stage.x.position + 3e-6}))
    res = session.RE(align_beam_shift(microscope.sem, ref)).plan_result
    run = session.catalog[res["uid"]]
    t = alignment_table(run)
    assert t["dx"][0] == pytest.approx(3e-6, abs=0.1e-6)  # content moved +3 um
    fig = plot_alignment(run)
    arrow = fig.axes[2].texts[0]
    h, w = 256, 384
    p = 100e-6 / 384
    assert arrow.xy[0] == pytest.approx(w / 2 + t["dx"][0] / p)
    assert arrow.xy[1] == pytest.approx(h / 2 - t["dy"][0] / p)
    fig2 = plot_convergence(run)
    (line,) = fig2.axes[0].get_lines()
    assert np.all(np.diff(line.get_ydata()) <= 0)  # the offset shrinks


def test_plot_needs_an_alignment_run(session, microscope):
    from fibsem_ophyd.plans import take_reference_images

    uid = session.RE(take_reference_images(microscope)).plan_result
    with pytest.raises(ValueError, match="no 'alignment' stream"):
        plot_alignment(session.catalog[uid])
