"""Milling through the device and plan on the simulator: time and depth that dose x yield
predict, the beam left safe, bad stages refused before the beam turns on."""

import numpy as np
import pytest

from fibsem_ophyd.plans import mill_stages
from fibsem_ophyd.storage import load_images

from .._catalog import count_runs
from ._helpers import BOX, height_at, silicon_under_ion_beam


def test_box_in_silicon_depth_and_time_follow_dose(session, microscope):
    sim = session.backend
    c = silicon_under_ion_beam(session)
    h0 = height_at(sim, c)
    imaging_current = microscope.ion_beam.current.get()
    uid = session.RE(mill_stages(microscope, [BOX])).plan_result
    depth = h0 - height_at(sim, c)
    assert depth == pytest.approx(2e-6, rel=0.05)  # the scene's measured depth
    run = session.catalog[uid]
    table = run["ion"].read()
    assert list(np.asarray(table["microscope_milling_state"])) == ["ready", "done"]
    assert float(np.asarray(table["microscope_milling_milling_time"])[1]) == pytest.approx(
        370.4, rel=0.05)  # 10 x 5 x 2 um^3 / (1 nA x 0.27 um^3/nC)
    assert run.metadata["start"]["estimated_time"]["box"]["milling"] == pytest.approx(370.4,
                                                                                        rel=1e-3)
    # the beam is back at the imaging current and blanked
    assert microscope.ion_beam.current.get() == pytest.approx(imaging_current)
    assert microscope.ion_beam.blanked.get() is True
    # the box is visible in the ion image after, where the pattern was, and nowhere else
    before, after = (img.data.astype(float) for img in load_images(run, "ion"))
    h, w = after.shape
    px = 80e-6 / w
    rows = slice(int(h / 2 - 2.5e-6 / px) + 2, int(h / 2 + 2.5e-6 / px) - 2)
    cols = slice(int(w / 2 - 5e-6 / px) + 2, int(w / 2 + 5e-6 / px) - 2)
    # compare region means: shot noise averages out, a milled floor does not
    inside = abs(after[rows, cols].mean() - before[rows, cols].mean())
    outside = abs(after[: h // 4].mean() - before[: h // 4].mean())
    assert inside > 10.0, inside  # grey levels
    assert outside < 0.2 * inside, (inside, outside)


@pytest.mark.parametrize(
    "change, match",
    [
        ({"pattern": {**BOX["pattern"], "depth": 0.0}}, "depth must be > 0"),
        ({"milling": {**BOX["milling"], "material": "Au"}}, "unknown material 'Au'"),
        ({"milling": {**BOX["milling"], "milling_current": -1e-9}}, "milling_current must be > 0"),
        ({"pattern": {**BOX["pattern"], "centre_x": 39e-6}}, "outside the field of view"),
        ({"pattern": {"name": "Spiral"}}, "unknown pattern type 'Spiral'"),
    ],
)
def test_bad_stage_refused_before_the_beam_turns_on(session, microscope, change, match):
    sim = session.backend
    t0, current = sim.time(), microscope.ion_beam.current.get()
    n_runs = count_runs(session.catalog)
    with pytest.raises(ValueError, match=match):
        session.RE(mill_stages(microscope, [{**BOX, **change}]))
    assert sim.time() == t0  # no simulated second passed: nothing was milled or changed
    assert microscope.ion_beam.current.get() == current
    assert count_runs(session.catalog) == n_runs  # refused before a run was opened


@pytest.mark.session_kwargs(suspenders=False)  # with them the run waits for the vacuum
def test_failed_run_is_closed_fail_and_beam_left_safe(session, microscope):
    silicon_under_ion_beam(session)
    imaging_current = microscope.ion_beam.current.get()
    session.backend.inject_fault("vacuum_loss")
    with pytest.raises(Exception):  # noqa: B017 - a FailedStatus wrapping the BackendError
        session.RE(mill_stages(microscope, [BOX]))
    run = session.catalog.values().last()
    assert run.metadata["stop"]["exit_status"] == "fail"
    assert "the chamber is vented" in run.metadata["stop"]["reason"]
    assert microscope.ion_beam.current.get() == pytest.approx(imaging_current)


def test_milling_failure_and_abort_restore_the_beam(session, microscope):
    from fibsem_ophyd.devices import MillingAborted

    silicon_under_ion_beam(session)
    imaging_current = microscope.ion_beam.current.get()
    # abort: stop() before the first pass completes
    status = microscope.milling.set(BOX)
    microscope.milling.stop()
    with pytest.raises(MillingAborted):
        status.wait(60)
    assert microscope.milling.state.get() == "aborted"
    assert microscope.ion_beam.current.get() == pytest.approx(imaging_current)
    assert microscope.ion_beam.blanked.get() is True
    # failure inside milling: the ion beam trips
    session.backend.inject_fault("beam_trip", beam="ion")
    status = microscope.milling.set(BOX)
    with pytest.raises(Exception, match="ion beam is off"):
        status.wait(60)
    assert microscope.milling.state.get() == "failed"
    assert microscope.ion_beam.current.get() == pytest.approx(imaging_current)


def test_supervised_stage_pauses_and_mills_where_the_person_moved_it(session, microscope):
    from bluesky.utils import RunEngineInterrupted

    from fibsem_ophyd.plans import mill_stages

    RE, sim = session.RE, session.backend
    box = {"name": "box", "milling": {"milling_current": 1e-9, "hfw": 80e-6, "material": "ice"},
           "pattern": {"name": "Rectangle", "width": 3e-6, "height": 2e-6, "depth": 0.3e-6}}
    with pytest.raises(RunEngineInterrupted):
        RE(mill_stages(microscope, [box], supervised=True))
    assert RE.state == "paused" and not sim.cuts  # stopped before the beam touched anything
    microscope.milling.pattern_offset_x.put(1.5e-6)
    microscope.milling.pattern_offset_y.put(-0.5e-6)
    uid = RE.resume().plan_result
    (cut,) = sim.cuts
    # milled with the field shifted by the offset: the box sits 1.5 um right, 0.5 um down
    assert list(cut.view.shift) == pytest.approx([1.5e-6, -0.5e-6])
    assert microscope.ion_beam.shift.get() == [0.0, 0.0]  # restored after the stage
    ion = session.catalog[uid]["ion"].read()
    assert float(ion["microscope_milling_pattern_offset_x"][1]) == pytest.approx(1.5e-6)
    assert float(ion["microscope_milling_pattern_offset_y"][1]) == pytest.approx(-0.5e-6)
    assert microscope.milling.pattern_offset_x.get() == 0.0


def test_mill_fiducial_cuts_an_x_where_asked(session, microscope):
    from fibsem_ophyd.plans import mill_fiducial

    sim = session.backend
    microscope.ion_beam.hfw.set(80e-6).wait()
    uid = session.RE(mill_fiducial(microscope, centre_x=-20e-6, centre_y=5e-6, height=6e-6,
                                   width=1e-6, depth=0.5e-6, milling_current=1e-9,
                                   material="ice")).plan_result
    run = session.catalog[uid]
    assert run.metadata["start"]["section"] == "fiducial"
    t = float(run["ion"].read()["microscope_milling_milling_time"][1])
    # two 6 x 1 um bars crossing in a 1 x 1 um square, 0.5 um deep in ice at 1 nA
    assert t == pytest.approx((2 * 6 * 1 - 1) * 0.5 / 3.0, rel=0.05)
    (cut,) = sim.cuts
    view = cut.view
    col = (np.arange(cut.depth.shape[1]) * cut.spacing + cut.u0)
    row = (np.arange(cut.depth.shape[0]) * cut.spacing + cut.v0)
    j, i = np.unravel_index(np.argmax(cut.depth), cut.depth.shape)
    # the probe spreads dose from both bars onto their crossing: deepest at the asked centre
    assert (col[i], row[j]) == pytest.approx((-20e-6, 5e-6), abs=0.3e-6)
    assert view.beam == "ion"


def test_a_paused_run_holds_the_milling_and_resuming_finishes_it_once(session, microscope):
    """The RunEngine pauses mid-milling: the device holds at the end of a pass (beam
    blanked, progress frozen); on resume the replayed set continues that milling, not a new
    one: one cut, the dose-predicted beam time."""
    import threading
    import time

    from bluesky.utils import RunEngineInterrupted

    from fibsem_ophyd.plans import mill_stages

    RE, sim = session.RE, session.backend
    silicon_under_ion_beam(session)
    held = threading.Event()

    def on_progress(value, **kwargs):
        if 30.0 <= value < 100.0 and not held.is_set():
            held.set()
            RE.request_pause(defer=False)  # as Ctrl-C would, mid-milling

    token = microscope.milling.progress.subscribe(on_progress, run=False)
    try:
        with pytest.raises(RunEngineInterrupted):
            RE(mill_stages(microscope, [BOX]))
        assert RE.state == "paused"
        deadline = time.monotonic() + 10
        while microscope.milling.state.get() != "paused":
            assert time.monotonic() < deadline, microscope.milling.state.get()
            time.sleep(0.02)
        frozen = microscope.milling.progress.get()
        assert 30.0 <= frozen < 100.0
        assert microscope.ion_beam.blanked.get() is True
        time.sleep(0.3)
        assert microscope.milling.progress.get() == frozen  # nothing mills while paused
        uid = RE.resume().plan_result
    finally:
        microscope.milling.progress.unsubscribe(token)
    assert len(sim.cuts) == 1  # milled once
    table = session.catalog[uid]["ion"].read()
    states = list(np.asarray(table["microscope_milling_state"]))
    # the RunEngine re-takes what it recorded since its last checkpoint; the milling is
    # still the one held, not a second one
    assert states[0] == "ready" and states[-1] == "done", states
    assert float(np.asarray(table["microscope_milling_milling_time"])[-1]) == pytest.approx(
        370.4, rel=0.05)
