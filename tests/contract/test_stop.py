"""Stop stops: a RunEngine pause (which stops every device it moved) or abort during a move or
a milling stops the hardware, on both backends, and each says what it could not stop."""

import logging
import os
import threading
import time

import pytest
from bluesky import plan_stubs as bps
from bluesky.utils import FailedStatus, RunEngineInterrupted

from fibsem_ophyd.plans import mill_stages

from .conftest import make_session
from .test_contract import BOX


def _interrupt(RE, plan, under_way):
    """Run ``plan``; once ``under_way()`` says the motion has started, pause the RunEngine
    (which stops what it moved), then abort it."""
    def watch():
        deadline = time.monotonic() + 120
        while not under_way() and time.monotonic() < deadline:
            time.sleep(0.005)
        RE.request_pause()

    threading.Thread(target=watch, daemon=True).start()
    # paused first, or the stopped move's failed status ended the run first: either way
    with pytest.raises((RunEngineInterrupted, FailedStatus)):
        RE(plan)
    if RE.state == "paused":
        RE.abort("stopped by the test")


def test_sim_stage_move_stops_where_it_is(tmp_path):
    # real time at 0.5: the 2 mm move (1 s settling + 2 s travel) takes 1.5 s of wall time
    s = make_session("sim", tmp_path / "data", {"real_time_factor": 0.5})
    try:
        be, stage = s.backend, s.microscope.stage
        x0 = be.get_stage_position()["x"]
        t0 = be.time()
        _interrupt(s.RE, bps.mv(stage.x, x0 + 2e-3),
                   lambda: be.get_stage_position()["x"] > x0 + 0.2e-3)
        x = be.get_stage_position()["x"]
        assert x0 < x < x0 + 2e-3  # stopped part way
        time.sleep(0.5)
        assert be.get_stage_position()["x"] == x  # and stays there
        assert be.time() - t0 < 3.0  # the clock holds the time spent, not the whole move
    finally:
        s.close()


def test_sim_needle_move_stops_where_it_is(tmp_path):
    s = make_session("sim", tmp_path / "data", {"real_time_factor": 0.5})
    try:
        be, needle = s.backend, s.microscope.manipulator
        be.clock.real_time_factor = 0.0  # tilt and insert at once; the move below in real time
        s.RE(bps.mv(s.microscope.stage.t, 0.0))
        be.insert_manipulator("PARK")
        be.clock.real_time_factor = 0.5
        z0 = be.get_manipulator_position()["z"]
        # 500 um at 100 um/s: 5 s simulated, 2.5 s of wall time
        _interrupt(s.RE, bps.mv(needle, {"z": z0 + 500e-6}),
                   lambda: be.get_manipulator_position()["z"] > z0 + 50e-6)
        z = be.get_manipulator_position()["z"]
        assert z0 < z < z0 + 500e-6
    finally:
        s.close()


def test_sim_milling_stops_and_mills_nothing_more(tmp_path):
    s = make_session("sim", tmp_path / "data")
    try:
        be, milling = s.backend, s.microscope.milling
        cuts = len(be.cuts)
        t0 = be.time()
        started = threading.Event()
        real_mill = be.mill

        def mill(*args, progress=None, **kwargs):
            def slow(fraction):
                started.set()
                time.sleep(0.05)  # a pass takes a while, as on hardware
                if progress is not None:
                    progress(fraction)
            return real_mill(*args, progress=slow, **kwargs)

        be.mill = mill
        status = milling.set(BOX)
        assert started.wait(60)
        milling.stop()
        with pytest.raises(Exception, match="stopped"):
            status.wait(60)
        assert milling.state.get() == "aborted"
        # nothing milled after the pass it was stopped in: at most 2 of the 8 passes of the
        # 92.6 s BOX (10 x 5 x 0.5 um^3 / (1 nA x 0.27 um^3/nC)) were milled (and cut),
        # besides the two 20 s current changes
        assert len(be.cuts) <= cuts + 1
        assert be.time() - t0 < 2 * 20.0 + 2 / 8 * 92.6
    finally:
        s.close()


def test_demo_milling_stops_through_stop_milling(tmp_path, monkeypatch):
    pytest.importorskip("fibsem")
    from fibsem.structures import MillingState

    s = make_session("openfibsem", tmp_path / "data")
    try:
        be, milling = s.backend, s.microscope.milling
        # the Demo's own clock: 1 s ticks, 5 s per shape (sleeps on for this test)
        monkeypatch.setenv("FIBSEM_SIM_NO_DELAY", "0")
        ticks = []

        def on_progress(msg):
            ticks.append(msg["progress"])
            if len(ticks) == 1:  # milling is under way: interrupt the run now
                threading.Thread(target=s.RE.request_pause).start()

        be.microscope.milling_progress_signal.connect(on_progress)
        with pytest.raises(RunEngineInterrupted):
            s.RE(mill_stages(s.microscope, [BOX]))
        s.RE.abort("stopped by the test")
        monkeypatch.setenv("FIBSEM_SIM_NO_DELAY", "1")
        assert ticks[0]["milling_state"] is MillingState.RUNNING
        # cut short: the Demo's own count still had time to go when it stopped
        assert ticks[-1]["remaining_time"] > 0
        assert len(ticks) < ticks[0]["estimated_time"]
        assert be.microscope.get_milling_state() is MillingState.IDLE
        # the device's milling thread ends once their mill call returns from its tick
        deadline = time.monotonic() + 10
        while milling.state.get() == "running" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert milling.state.get() == "aborted"
        assert be.get("blanked", "ion") is True  # left safe
    finally:
        os.environ["FIBSEM_SIM_NO_DELAY"] = "1"
        s.close()


def test_demo_stage_stop_is_declared_missing_and_said(tmp_path, caplog):
    s = make_session("openfibsem", tmp_path / "data")
    try:
        be, stage = s.backend, s.microscope.stage
        assert "stage_stop" in be.missing()
        assert "manipulator_stop" in be.missing()
        with caplog.at_level(logging.WARNING):
            stage.stop()
        assert "cannot stop the stage" in caplog.text and "stage_stop" in caplog.text
        # a Demo move is one blocking call: it arrives where it was sent
        x0 = be.get_stage_position()["x"]
        stage.x.set(x0 + 10e-6).wait(30)
        assert be.get_stage_position()["x"] == pytest.approx(x0 + 10e-6)
    finally:
        s.close()
