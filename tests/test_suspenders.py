"""A vacuum loss or a beam trip during a plan suspends it; it resumes when the fault clears,
with every frame taken exactly once. A fault that does not clear ends with RE.abort."""

import threading
from pathlib import Path

import numpy as np
import pytest
import tifffile
from bluesky.utils import FailedStatus, RunEngineInterrupted

from fibsem_ophyd import setup_session
from fibsem_ophyd.plans import acquire_series
from fibsem_ophyd.storage import iter_backup, load_images

from ._catalog import count_runs

TINY = {"electron": {"resolution": [128, 96]}, "ion": {"resolution": [128, 96]}}
N = 20


@pytest.fixture
def session(tmp_path):
    s = setup_session(config=TINY, data_dir=tmp_path / "data", seed=3)
    yield s
    s.backend.clear_faults()
    s.close()


def _fault_after(session, frames: int, kind: str, beam, hold: float, seen: dict):
    """Inject ``kind`` from another thread once ``frames`` primary events exist; clear it
    after ``hold`` s (never if ``hold`` is None). ``seen``: events at injection and at
    clearing, and the suspension records as they are emitted."""
    reached = threading.Event()
    seen.update(events=0, suspensions=[], at_inject=None, at_clear=None)
    descriptors = {}

    def on_doc(name, doc):
        if name == "descriptor":
            descriptors[doc["uid"]] = doc["name"]
        elif name == "event":
            stream = descriptors[doc["descriptor"]]
            if stream == "primary":
                seen["events"] += 1
                if seen["events"] == frames:
                    reached.set()
            elif stream == "suspensions":
                seen["suspensions"].append(doc["data"]["suspension_event"])

    token = session.RE.subscribe(on_doc)

    def fault():
        reached.wait(60)
        session.backend.inject_fault(kind, beam=beam)
        seen["at_inject"] = seen["events"]
        if hold is None:
            return
        threading.Event().wait(hold)
        seen["at_clear"] = seen["events"]
        session.backend.clear_faults()

    thread = threading.Thread(target=fault)
    thread.start()
    return thread, token


@pytest.mark.parametrize("kind, beam", [("vacuum_loss", None), ("beam_trip", "electron")])
def test_fault_suspends_and_every_frame_is_taken_once(session, kind, beam):
    seen: dict = {}
    thread, token = _fault_after(session, 5, kind, beam, hold=0.6, seen=seen)
    try:
        result = session.RE(acquire_series(session.microscope.sem, num=N))
    finally:
        thread.join()
        session.RE.unsubscribe(token)
    assert result.exit_status == "success"
    uid = result.run_start_uids[0]
    run = session.catalog[uid]
    assert run.metadata["stop"]["exit_status"] == "success"
    assert run.metadata["stop"]["num_events"] == {"primary": N, "suspensions": 2}
    # the run was suspended while the fault lasted: at most the frame in flight went on
    assert seen["at_clear"] - seen["at_inject"] <= 1
    assert seen["suspensions"] == ["suspended", "resumed"]
    reasons = run["suspensions"]["suspension_reason"].read()
    expected = "vacuum lost" if kind == "vacuum_loss" else "electron beam tripped"
    assert all(expected in r for r in reasons)
    # the documents: N events, seq_num 1..N, distinct uids; frames 0..N-1, one file each
    docs = list(iter_backup(session.writer.backup_path(uid)))
    desc = {d["uid"] for n, d in docs if n == "descriptor" and d["name"] == "primary"}
    events = [d for n, d in docs if n == "event" and d["descriptor"] in desc]
    assert [e["seq_num"] for e in events] == list(range(1, N + 1))
    assert len({e["uid"] for e in events}) == N
    assert [e["data"]["microscope_sem_frame_number"] for e in events] == list(range(N))
    times = [e["data"]["microscope_sem_acquisition_time"] for e in events]
    assert all(b > a for a, b in zip(times, times[1:], strict=False))
    datums = [d for n, d in docs if n == "stream_datum"]
    covered = [i for d in datums for i in range(d["indices"]["start"], d["indices"]["stop"])]
    assert covered == list(range(N))  # each frame announced once, none skipped
    images = load_images(run, "primary")
    assert len(images) == N and len({img.path for img in images}) == N
    folder = Path(images[0].path).parent
    assert len(list(folder.glob("*.tif*"))) == N  # no frame of the fault left behind
    stored = run["primary"]["microscope_sem_image"].read()
    for i in (0, 4, 5, 6, N - 1):  # around the fault too: the file is the frame of event i
        assert np.array_equal(tifffile.imread(images[i].path), stored[i])


def test_fault_that_does_not_clear_is_ended_by_abort(session):
    seen: dict = {}
    thread, token = _fault_after(session, 3, "vacuum_loss", None, hold=None, seen=seen)
    waited: dict = {}

    def abort_when_suspended():
        thread.join()
        for _ in range(1000):  # recorded once the RunEngine has suspended
            if seen["suspensions"] == ["suspended"]:
                break
            threading.Event().wait(0.01)
        waited["suspensions"] = list(seen["suspensions"])
        threading.Event().wait(0.3)  # still suspended: no frame comes
        waited["events"] = (seen["at_inject"], seen["events"])
        session.RE.abort("the vacuum did not come back")

    aborter = threading.Thread(target=abort_when_suspended)
    aborter.start()
    n_runs = count_runs(session.catalog)
    try:
        with pytest.raises(RunEngineInterrupted):  # bluesky's answer to an abort
            session.RE(acquire_series(session.microscope.sem, num=N))
    finally:
        aborter.join()
        session.RE.unsubscribe(token)
    assert waited["suspensions"] == ["suspended"]
    at_inject, at_abort = waited["events"]
    assert at_abort - at_inject <= 1  # at most the frame in flight when the vacuum went
    assert session.RE.state == "idle"
    assert count_runs(session.catalog) == n_runs + 1
    run = session.catalog.values().last()
    assert run.metadata["stop"]["exit_status"] == "abort"
    assert run.metadata["stop"]["num_events"] == {"primary": at_abort, "suspensions": 1}
    assert len(load_images(run, "primary")) == at_abort


def test_without_suspenders_a_vacuum_loss_fails_the_run(tmp_path):
    s = setup_session(config=TINY, data_dir=tmp_path / "data", seed=3, suspenders=False)
    try:
        assert s.suspenders == [] and s.microscope.fault_watch is None
        s.backend.inject_fault("vacuum_loss")
        with pytest.raises(FailedStatus) as failed:
            s.RE(acquire_series(s.microscope.sem, num=3))
        assert "the chamber is vented" in str(failed.value.__cause__)
        run = s.catalog.values().last()
        assert run.metadata["stop"]["exit_status"] == "fail"
        assert run.metadata["stop"]["num_events"] == {}
    finally:
        s.close()


def test_deliberate_vent_and_beam_off_are_no_faults(session):
    scope = session.microscope
    watch = scope.fault_watch
    assert watch.poll() == []
    scope.ion_beam.on.put(False)
    scope.chamber.set("vented").wait(10)
    assert watch.poll() == []  # asked for: nothing to wait out
    scope.chamber.set("pumped").wait(10)
    scope.ion_beam.on.put(True)
    session.backend.inject_fault("beam_trip", beam="ion")
    assert watch.poll() == ["microscope_ion_beam_tripped"]
    session.backend.clear_faults()
    assert watch.poll() == []


def test_bad_poll_period_is_refused_before_anything_starts(tmp_path):
    with pytest.raises(ValueError, match="fault_poll_period must be > 0 s, got 0"):
        setup_session(config=TINY, data_dir=tmp_path / "data", fault_poll_period=0)
    assert not (tmp_path / "data").exists()
