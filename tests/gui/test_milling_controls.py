"""Pause and Stop pressed in the milling widget while a milling runs (the GUI session's
simulator runs at 1/100 of real time: ``sim: real_time_factor``, so the 370 s milling below
takes ~4 s of wall time, eight passes of ~0.46 s). Pause: the RunEngine pauses, the milling
holds at the end of its pass with the beam blanked and nothing moves; Resume finishes it, the
simulator's cut where the pattern is. Stop: the run is aborted, the simulator's cut is the
passes milled so far (shallower than the full one), the ion beam is back at its imaging
current, blanked. Ground truth: the simulator's cuts and clock, the stored run."""

from __future__ import annotations

import numpy as np
import pytest
from qtpy.QtCore import Qt
from qtpy.QtTest import QTest

from fibsem_ophyd.milling import MillingStage, RectanglePattern

from .conftest import REAL_TIME, run_and_wait
from .test_patterns import _cut_centre

#: simulated passes of a milling (fibsem_ophyd.sim.milling.PASSES)
PASSES = 8
#: 10 x 5 x 2 um of silicon at 1 nA: 370 s of beam time
BEAM_TIME = 370.4


def _press(button):
    QTest.mouseClick(button, Qt.MouseButton.LeftButton)


def _box(name: str, x: float, y: float) -> MillingStage:
    return MillingStage(name, RectanglePattern(width=10e-6, height=5e-6, depth=2e-6,
                                               centre_x=x, centre_y=y),
                        milling_current=1e-9, hfw=80e-6, material="Si")


def _start_and_wait_mid_way(qtbot, mv, scope, stage):
    """Run the milling from the widget; return once the device reports 25-60 % done."""
    milling = mv.widgets["milling"]
    milling.supervised.setChecked(False)
    mv.patterns.set_stages([stage])
    _press(milling.run_button)
    qtbot.waitUntil(lambda: 25.0 <= scope.milling.progress.get() <= 60.0, timeout=120_000)


def test_pause_and_stop_pressed_during_a_milling(qtbot, mv, gui_session):
    sim, scope, RE = gui_session.backend, gui_session.microscope, gui_session.RE
    milling, supervision = mv.widgets["milling"], mv.widgets["supervision"]
    assert milling.pause_button.text() == "Pause" and milling.stop_button.text() == "Stop"
    imaging = scope.ion_beam.current.get()
    n = len(sim.cuts)

    # -- Pause: the RunEngine pauses, the milling holds, nothing moves -------------------------
    _start_and_wait_mid_way(qtbot, mv, scope, _box("paused", -6e-6, 2e-6))
    _press(milling.pause_button)
    qtbot.waitUntil(lambda: mv.driver.current_state == "paused"
                    and scope.milling.state.get() == "paused", timeout=30_000)
    assert RE.state == "paused" and scope.milling.in_progress
    assert supervision.resume_button.isEnabled() and "is paused" in supervision.asked.text()
    held = {"clock": sim.time(), "progress": scope.milling.progress.get(),
            "stage": mv.driver.stage_position(), "cuts": len(sim.cuts)}
    assert 25.0 <= held["progress"] < 100.0
    assert scope.ion_beam.blanked.get() is True
    assert scope.ion_beam.current.get() == pytest.approx(1e-9)  # held at the milling current
    pass_wall = BEAM_TIME / PASSES * REAL_TIME
    qtbot.wait(int(2500 * pass_wall))  # two and a half passes' wall time
    assert {"clock": sim.time(), "progress": scope.milling.progress.get(),
            "stage": mv.driver.stage_position(), "cuts": len(sim.cuts)} == held
    assert scope.milling.state.get() == "paused"
    # Resume finishes the same milling: one cut, full, where the pattern is
    done = run_and_wait(qtbot, mv, lambda: _press(supervision.resume_button), timeout=120_000)
    plan, uid, error = done[-1]
    assert plan == "mill_stages" and error is None
    assert len(sim.cuts) == n + 1
    full = sim.cuts[-1]
    assert _cut_centre(full) == pytest.approx((-6e-6, 2e-6), abs=0.15e-6)
    run = gui_session.catalog[uid]
    assert run.metadata["stop"]["exit_status"] == "success"
    assert scope.milling.state.get() == "done"
    assert float(np.asarray(run["ion"].read()["microscope_milling_milling_time"])[-1]) == \
        pytest.approx(BEAM_TIME, rel=0.05)
    assert scope.ion_beam.current.get() == pytest.approx(imaging)

    # -- Stop: the milling ends part way, the run is aborted, the beam is safe ------------------
    _start_and_wait_mid_way(qtbot, mv, scope, _box("stopped", 6e-6, -2e-6))
    done = run_and_wait(qtbot, mv, lambda: _press(milling.stop_button), timeout=120_000)
    assert done[-1][0] == "mill_stages"
    run = gui_session.catalog[mv.driver.run_uid]
    assert run.metadata["start"]["plan_name"] == "mill_stages"
    assert run.metadata["stop"]["exit_status"] == "abort"  # bluesky's word for RE.abort()
    assert RE.state == "idle" and mv.driver.current_state == "idle"
    assert scope.milling.state.get() == "aborted" and not scope.milling.in_progress
    assert scope.ion_beam.current.get() == pytest.approx(imaging)
    assert scope.ion_beam.blanked.get() is True
    # the simulator kept the passes milled before the stop: a cut where the pattern is,
    # shallower than the full one by the passes not milled
    assert len(sim.cuts) == n + 2
    partial = sim.cuts[-1]
    assert _cut_centre(partial) == pytest.approx((6e-6, -2e-6), abs=0.15e-6)
    ratio = float(partial.depth.max() / full.depth.max())
    assert 0.0 < ratio < 1.0
    # whole passes: k of the eight (the pass the stop came in counts, as it was milled)
    k = ratio * PASSES
    assert k == pytest.approx(round(k), abs=0.05) and 2 <= round(k) <= PASSES - 1
    mv.patterns.set_stages([])
