"""Milling made safe: every way out of a milling leaves the ion beam at its imaging current,
blanked; bad parameters are refused before the beam is touched; a beam trip fails the milling
at the pass it happened; nothing else moves the sample or changes the ion beam while a
milling runs; failed runs say why. A real RunEngine on the simulator throughout."""

import threading
import time

import numpy as np
import pytest
from bluesky import plan_stubs as bps
from bluesky.utils import RunEngineInterrupted

from fibsem_ophyd import setup_session
from fibsem_ophyd.plans import mill_stages

from .._catalog import count_runs
from ..plans._helpers import BOX, silicon_under_ion_beam

SMALL = {"electron": {"resolution": [384, 256]}, "ion": {"resolution": [384, 256]}}
#: the 370 s BOX milling (10 x 5 x 2 um of Si at 1 nA) takes 1.9 s of wall time: 8 passes
#: of 0.23 s, time to interrupt it mid-way
REAL_TIME = 0.005


def _session(tmp_path, real_time_factor: float = 0.0):
    return setup_session(config={**SMALL, "sim": {"real_time_factor": real_time_factor}},
                         data_dir=tmp_path / "data", seed=1)


@pytest.fixture
def slow(tmp_path):
    s = _session(tmp_path, REAL_TIME)
    yield s
    s.close()


def _when(signal, test, action):
    """Call ``action()`` from a new thread the first time ``test(value)`` holds for
    ``signal`` (subscribed); returns the unsubscribe function."""
    fired = threading.Event()

    def cb(value, **kwargs):
        if test(value) and not fired.is_set():
            fired.set()
            threading.Thread(target=action, daemon=True).start()

    token = signal.subscribe(cb, run=False)
    return lambda: signal.unsubscribe(token)


def _wait_until(test, timeout=30.0):
    deadline = time.monotonic() + timeout
    while not test():
        assert time.monotonic() < deadline
        time.sleep(0.02)


# -- 1. every way out leaves the ion beam at its imaging current, blanked ----------------------
@pytest.mark.parametrize("how", ["halt", "pause_then_halt", "abort", "pause_then_abort"])
def test_interrupted_milling_restores_the_imaging_current(slow, how):
    """``RE.halt()`` skips the plan's cleanup: the RunEngine's closing stop holds the milling
    and unstaging the microscope ends it. An abort under a running milling, or after a pause,
    ends it too, as an abort (not a failure). Each time the beam is back at the imaging
    current, blanked, and the next mill_stages returns to that current, not to the milling
    current."""
    RE, scope, sim = slow.RE, slow.microscope, slow.backend
    silicon_under_ion_beam(slow)
    imaging = scope.ion_beam.current.get()
    assert imaging != BOX["milling"]["milling_current"]
    end = RE.halt if how.endswith("halt") else RE.abort
    interrupt = RE.request_pause if how.startswith("pause") else end
    undo = _when(scope.milling.progress, lambda v: 25.0 <= v < 100.0, interrupt)
    try:
        with pytest.raises(RunEngineInterrupted):
            RE(mill_stages(scope, [BOX]))
    finally:
        undo()
    if how.startswith("pause"):
        assert RE.state == "paused"
        assert scope.milling.state.get() in ("running", "paused")
        end()
    assert RE.state == "idle"
    run = slow.catalog.values().last()
    assert run.metadata["stop"]["exit_status"] == "abort"
    assert scope.milling.state.get() == "aborted"
    assert not scope.milling.in_progress
    assert scope.ion_beam.current.get() == pytest.approx(imaging)
    assert scope.ion_beam.blanked.get() is True
    # the next milling starts from and returns to the imaging current
    uid = RE(mill_stages(scope, [BOX])).plan_result
    assert slow.catalog[uid].metadata["stop"]["exit_status"] == "success"
    assert scope.ion_beam.current.get() == pytest.approx(imaging)
    assert scope.ion_beam.blanked.get() is True
    assert len(sim.cuts) == 2


def _halt_a_bare_milling(RE, scope) -> None:
    """``RE(bps.mv(milling, BOX))`` halted at 25 % of its progress: the milling is held."""
    undo = _when(scope.milling.progress, lambda v: 25.0 <= v < 100.0, RE.halt)
    try:
        with pytest.raises(RunEngineInterrupted):
            RE(bps.mv(scope.milling, BOX))
    finally:
        undo()
    _wait_until(lambda: scope.milling.state.get() == "paused")


def test_held_milling_of_a_halted_run_returns_to_the_first_imaging_current(slow):
    """A bare ``bps.mv(milling, ...)`` halted mid-way (not staged: the milling is held, the
    beam blanked at the milling current): the device still knows the imaging current; a new
    milling ends the held one and both return the beam to it; so does closing the session."""
    RE, scope = slow.RE, slow.microscope
    silicon_under_ion_beam(slow)
    imaging = scope.ion_beam.current.get()
    _halt_a_bare_milling(RE, scope)
    # held: blanked, at the milling current
    assert scope.ion_beam.current.get() == pytest.approx(1e-9)
    assert scope.ion_beam.blanked.get() is True
    assert scope.milling.imaging_current.get() == pytest.approx(imaging)
    small = {**BOX, "name": "small",
             "pattern": {**BOX["pattern"], "width": 2e-6, "height": 2e-6, "depth": 0.2e-6}}
    status = scope.milling.set(small)  # replaces the held one
    status.wait(60)
    assert scope.milling.state.get() == "done"
    assert scope.ion_beam.current.get() == pytest.approx(imaging)
    assert scope.ion_beam.blanked.get() is True
    # held again, then the session closes
    _halt_a_bare_milling(RE, scope)
    assert scope.ion_beam.current.get() == pytest.approx(1e-9)
    scope.close()
    assert scope.milling.state.get() == "aborted"
    assert slow.backend.get("current", "ion") == pytest.approx(imaging)
    assert slow.backend.get("blanked", "ion") is True


# -- 2. parameters checked before the beam is touched -------------------------------------------
def _bad(milling=None, pattern=None):
    return {**BOX, "milling": {**BOX["milling"], **(milling or {})},
            "pattern": {**BOX["pattern"], **(pattern or {})}}


BAD_STAGES = [
    # (stage, what the error must say: parameter, value, limit)
    (_bad(milling={"milling_current": 1e-6}),
     ["'box'", "milling_current", "1e-06", "ion beam's limits", "6.5e-08"]),
    (_bad(milling={"milling_voltage": 50e3}),
     ["'box'", "milling_voltage", "50000", "ion beam's limits", "30000"]),
    (_bad(milling={"hfw": 2e-3}),
     ["'box'", "hfw", "0.002", "ion beam's limits", "0.0009"]),
    (_bad(pattern={"depth": 200e-6}),
     ["'box'", "depth", "0.0002", "plausible milling depths", "0.0001"]),
    (_bad(pattern={"depth": 0.5e-9}),
     ["'box'", "depth", "5e-10", "plausible milling depths", "1e-09"]),
]


def _untouched(session):
    """What must not change when a milling is refused: clock (frames, current changes, moves
    and milling all take simulated time), ion current and blanking, stage, cuts, runs."""
    sim = session.backend
    return (sim.time(), sim.get("current", "ion"), sim.get("blanked", "ion"),
            sim.get_stage_position(), len(sim.cuts), count_runs(session.catalog))


@pytest.mark.parametrize("stage, words", BAD_STAGES)
def test_bad_milling_parameters_refused_before_the_beam_is_touched(session, stage, words):
    scope = session.microscope
    session.backend.set("blanked", False, "ion")  # as after an ion image
    before = _untouched(session)
    with pytest.raises(ValueError) as plan_err:
        session.RE(mill_stages(scope, [stage]))
    with pytest.raises(ValueError) as device_err:
        scope.milling.set(stage)
    for err in (plan_err, device_err):
        for word in words:
            assert word in str(err.value), (word, str(err.value))
    assert _untouched(session) == before
    assert scope.milling.state.get() == "idle"


def test_milling_current_is_set_before_the_beam_is_unblanked(session):
    """The beam reaches the sample only at the milling current: the device blanks, changes
    the current, then unblanks (each stage)."""
    sim, scope = session.backend, session.microscope
    silicon_under_ion_beam(session)
    sim.set("blanked", False, "ion")
    calls = []
    real_set = sim.set

    def recording_set(key, value, beam=None):  # the real backend, its calls recorded
        if beam == "ion" and key in ("blanked", "current"):
            calls.append((key, value))
        return real_set(key, value, beam)

    sim.set = recording_set
    try:
        small = _bad(pattern={"width": 2e-6, "height": 2e-6, "depth": 0.2e-6})
        second = {**small, "name": "second",
                  "milling": {**small["milling"], "milling_current": 2e-9}}
        scope.milling.set([small, second]).wait(60)
    finally:
        sim.set = real_set
    unblanked = [i for i, c in enumerate(calls) if c == ("blanked", False)]
    assert len(unblanked) == 2
    for i, current in zip(unblanked, (1e-9, 2e-9), strict=True):
        # blanked, then the current, then unblanked
        assert calls[i - 1] == ("current", current), calls
        assert calls[i - 2] == ("blanked", True), calls


@pytest.mark.parametrize("reference, words", [
    (np.zeros((64, 64)), ["(64, 64)", "(256, 384)"]),
    (np.full((256, 384), 7.0), ["uniform"]),
])
def test_bad_alignment_reference_refused_before_any_frame(session, reference, words):
    scope = session.microscope
    before = _untouched(session)
    with pytest.raises(ValueError) as err:
        session.RE(mill_stages(scope, [BOX], align=True, reference=reference))
    for word in words:
        assert word in str(err.value)
    assert _untouched(session) == before


# -- 3. a beam trip fails the milling at the pass it happened ----------------------------------
# without suspenders: their poll may see the trip before the milling's next pass does, and a
# suspended run waits for the beam to come back; this is about the milling's own failure
@pytest.mark.session_kwargs(suspenders=False)
def test_beam_trip_mid_milling_fails_it_at_that_pass(session):
    """The ion beam trips after pass 3 of 8: the milling fails at pass 4 (state "failed", the
    run's stop document "fail" naming the trip), and the sample holds the 3 passes milled:
    3/8 of the 2 um asked for, by the scene's ground truth."""
    from ..plans._helpers import height_at

    sim, scope = session.backend, session.microscope
    c = silicon_under_ion_beam(session)
    h0 = height_at(sim, c)
    imaging = scope.ion_beam.current.get()

    def trip(value, **kwargs):  # runs in the milling thread, between passes
        if value >= 37.5 and not sim.active_faults:
            sim.inject_fault("beam_trip", beam="ion")

    token = scope.milling.progress.subscribe(trip, run=False)
    try:
        with pytest.raises(Exception) as err:  # noqa: PT011 -- the message is checked below
            session.RE(mill_stages(scope, [BOX]))
    finally:
        scope.milling.progress.unsubscribe(token)
    assert "beam trip" in str(err.value.__cause__ or err.value)
    assert scope.milling.state.get() == "failed"
    stop = session.catalog.values().last().metadata["stop"]
    assert stop["exit_status"] == "fail"
    assert "pass 4 of 8: the ion beam went off (beam trip)" in stop["reason"]
    depth = h0 - height_at(sim, c)
    assert depth == pytest.approx(3 / 8 * 2e-6, rel=0.1)
    (cut,) = sim.cuts
    assert scope.ion_beam.current.get() == pytest.approx(imaging)
    assert scope.ion_beam.blanked.get() is True
    # the beam stays off until it is switched on again
    assert sim.get("on", "ion") is False


# -- 4. a previous milling that does not end is not milled beside -------------------------------
def test_new_milling_refused_while_the_previous_one_does_not_end(tmp_path):
    """A held milling in a 2.3 s pass (real time 0.05: the simulator notices a stop at the
    end of the pass) is told to stop by a new ``set``, which waits ``end_timeout`` (0.5 s):
    a ``TimeoutError`` names it, and no second milling thread starts."""
    s = _session(tmp_path, 0.05)
    try:
        sim, milling = s.backend, s.microscope.milling
        silicon_under_ion_beam(s)
        milling.end_timeout = 0.5
        first = milling.set(BOX)
        _wait_until(lambda: milling.state.get() == "running")
        milling.pause()  # held: a RunEngine pause of a run then stopped
        other = {**BOX, "name": "other"}
        t0 = time.monotonic()
        with pytest.raises(TimeoutError) as err:
            milling.set(other)
        assert 0.5 <= time.monotonic() - t0 < 2.0
        assert "did not end within 0.5 s" in str(err.value) and "'box'" in str(err.value)
        threads = [t for t in threading.enumerate() if t.name == f"{milling.name}-mill"]
        assert len(threads) == 1
        assert milling.stage_name.get() == "box"
        # the first milling ends at the end of its pass, as the stop asked; nothing else milled
        with pytest.raises(Exception, match="stopped"):
            first.wait(30)
        assert milling.state.get() == "aborted"
        assert len(sim.cuts) <= 1
        assert not milling.in_progress
        _wait_until(lambda: not any(t.name == f"{milling.name}-mill"
                                    for t in threading.enumerate()), timeout=5)
    finally:
        s.close()


# -- 5. interlocks: nothing else acts on the sample or the ion beam while a milling runs --------
def test_interlocks_refuse_moves_current_changes_and_ion_images_while_milling(tmp_path):
    """A milling runs in its thread (real time 0.05: 18.5 s of wall time); from the test's
    thread and from plans, a stage move, a needle move, an ion current change, unblanking,
    an ion image and a second milling are each refused with ``InterlockError`` naming the
    milling; nothing moved or changed. Electron images go on. The milling's own current
    change went through; stopped, it puts the beam back and the interlock lifts."""
    from fibsem_ophyd.devices import InterlockError
    from fibsem_ophyd.plans import acquire_image, insert_manipulator

    s = _session(tmp_path, 0.05)
    try:
        RE, sim, scope = s.RE, s.backend, s.microscope
        silicon_under_ion_beam(s)
        imaging = scope.ion_beam.current.get()
        status = scope.milling.set(BOX)
        _wait_until(lambda: scope.milling.progress.get() > 0 or status.done)
        assert not status.done
        # the milling set its own current while the interlock was on
        assert sim.get("current", "ion") == pytest.approx(1e-9)
        stage0, needle0 = sim.get_stage_position(), sim.get_manipulator_position()
        inserted0 = sim.get("manipulator_inserted")
        attempts = {
            "stage axis set": lambda: scope.stage.x.set(stage0["x"] + 10e-6),
            "stage move plan": lambda: RE(bps.mv(scope.stage, {"x": stage0["x"] + 10e-6,
                                                               "t": stage0["t"] + 1.0})),
            "needle set": lambda: scope.manipulator.set("PARK"),
            "needle plan": lambda: RE(insert_manipulator(scope, "PARK")),
            "ion current put": lambda: scope.ion_beam.current.put(2e-9),
            "ion current plan": lambda: RE(bps.mv(scope.ion_beam.current, 2e-9)),
            "ion unblank": lambda: scope.ion_beam.blanked.put(False),
            "ion image plan": lambda: RE(acquire_image(scope.fib)),
            "second milling": lambda: scope.milling.set({**BOX, "name": "other"}),
        }
        for what, attempt in attempts.items():
            assert scope.milling.in_progress, what  # still milling: the refusal is the lock's
            with pytest.raises(InterlockError) as err:
                attempt()
            assert "the milling of 'box' is in progress" in str(err.value), what
        assert scope.milling.in_progress
        # the ion image run was refused at its trigger: no event, the reason recorded
        stop = s.catalog.values().last().metadata["stop"]
        assert stop["exit_status"] == "fail" and not stop["num_events"]
        assert "milling of 'box'" in stop["reason"]
        # blanking and electron images are allowed
        uid = RE(acquire_image(scope.sem)).plan_result
        assert s.catalog[uid].metadata["stop"]["exit_status"] == "success"
        # nothing moved, nothing changed
        assert sim.get_stage_position() == stage0
        assert sim.get_manipulator_position() == needle0
        assert sim.get("manipulator_inserted") == inserted0
        assert sim.get("current", "ion") == pytest.approx(1e-9)
        assert scope.milling.stage_name.get() == "box"
        scope.milling.stop()
        assert scope.milling.state.get() == "aborted"
        assert not scope.milling.in_progress
        assert scope.ion_beam.current.get() == pytest.approx(imaging)
        # the interlock is lifted
        scope.stage.x.set(stage0["x"] + 10e-6).wait(30)
        assert sim.get_stage_position()["x"] == pytest.approx(stage0["x"] + 10e-6)
    finally:
        s.close()


# -- 6. a failed run says why, in the microscope's words ----------------------------------------
def _stage_move_run(scope, dx):
    from bluesky import preprocessors as bpp

    x = scope.stage.x.position
    return bpp.run_wrapper(bps.mv(scope.stage.x, x + dx), md={"plan_name": "move"})


# without suspenders: with them a vacuum loss or a beam trip suspends the run (until it clears)
# rather than failing it, and this is about the words of a failed run
@pytest.mark.session_kwargs(suspenders=False)
@pytest.mark.parametrize("fault, plan, words", [
    ("beam_trip", "mill", ["microscope_milling", "BackendError",
                           "milling failed at pass 4 of 8", "the ion beam went off (beam trip)"]),
    ("stage_stall", "move", ["microscope_stage", "BackendError", "stage stalled half way"]),
    ("detector_failure", "image", ["microscope_sem", "BackendError",
                                   "electron detector failed to return a frame"]),
    # a vented chamber: mill_stages fails at its first ion image, before any milling
    ("vacuum_loss", "mill", ["microscope_fib", "BackendError", "the chamber is vented"]),
])
def test_failed_run_stop_reason_is_the_microscopes_error(session, fault, plan, words):
    """Whatever device fails, the run's stop document says why (the device, the error and
    the microscope's message), not ``DeviceStatus(device=..., success=False)``; the error
    raised is still a ``FailedStatus`` (a batch skips a lost site on it), chained from the
    microscope's error."""
    from bluesky.utils import FailedStatus

    from fibsem_ophyd.backend import BackendError
    from fibsem_ophyd.plans import acquire_image

    sim, scope = session.backend, session.microscope
    silicon_under_ion_beam(session)
    plans = {"mill": lambda: mill_stages(scope, [BOX]),
             "move": lambda: _stage_move_run(scope, 20e-6),
             "image": lambda: acquire_image(scope.sem)}
    token = None
    if fault == "beam_trip":  # mid-milling, after pass 3: the simulator notices at pass 4
        def trip(value, **kwargs):
            if value >= 37.5 and not sim.active_faults:
                sim.inject_fault("beam_trip", beam="ion")

        token = scope.milling.progress.subscribe(trip, run=False)
    else:
        sim.inject_fault(fault)
    try:
        with pytest.raises(FailedStatus) as err:
            session.RE(plans[plan]())
    finally:
        if token is not None:
            scope.milling.progress.unsubscribe(token)
    assert isinstance(err.value.__cause__, BackendError)
    reason = session.catalog.values().last().metadata["stop"]["reason"]
    assert session.catalog.values().last().metadata["stop"]["exit_status"] == "fail"
    for word in words:
        assert word in reason, (word, reason)
    assert "DeviceStatus" not in reason and "success=False" not in reason
