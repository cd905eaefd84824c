"""Pump and vent run off the RunEngine's thread: set() returns a status at once, done when the
chamber is there; stop() ends a vent part way."""

import time

import bluesky.plan_stubs as bps
import pytest

from fibsem_ophyd import setup_session
from fibsem_ophyd.backend import StoppedError
from fibsem_ophyd.sim.clock import VENT_TIME
from fibsem_ophyd.sim.state import ATMOSPHERE, HIGH_VACUUM

from ..conftest import SMALL

#: 120 s of simulated venting take 0.6 s of wall time, 180 s of pumping 0.9 s
RTF = 0.005


@pytest.fixture
def slow(tmp_path):
    s = setup_session(config={**SMALL, "sim": {"real_time_factor": RTF}},
                      data_dir=tmp_path / "data", seed=1)
    yield s
    s.close()


def test_vent_does_not_block_and_reads_back(slow):
    chamber = slow.microscope.chamber
    t0 = time.monotonic()
    status = chamber.set("vented")
    returned = time.monotonic() - t0
    assert returned < 0.05  # the status at once, while the vent takes VENT_TIME * RTF
    assert not status.done
    status.wait(10)
    took = time.monotonic() - t0
    assert took >= 0.9 * VENT_TIME * RTF
    assert chamber.vacuum_state.get() == "vented"
    assert chamber.pressure.get() == ATMOSPHERE

    marks = {}

    def pump_while_running():
        t = time.monotonic()
        yield from bps.abs_set(chamber, "pumped", group="pump")
        marks["abs_set"] = time.monotonic() - t
        yield from bps.sleep(0.05)  # the RunEngine goes on while the chamber pumps
        marks["slept"] = time.monotonic() - t
        marks["state_meanwhile"] = yield from bps.rd(chamber.vacuum_state)
        yield from bps.wait("pump")
        marks["done"] = time.monotonic() - t
        return (yield from bps.rd(chamber.vacuum_state))

    result = slow.RE(pump_while_running())
    assert result.plan_result == "pumped"
    assert marks["state_meanwhile"] == "vented"  # read during the pump: not there yet
    pump_wall = 180.0 * RTF
    assert marks["abs_set"] < 0.25 * pump_wall and marks["slept"] < 0.5 * pump_wall
    assert marks["done"] >= 0.9 * pump_wall
    assert chamber.pressure.get() == HIGH_VACUUM
    # the RunEngine's own vent, through bps.mv, reads back too
    slow.RE(bps.mv(chamber, "vented"))
    assert chamber.vacuum_state.get() == "vented"


def test_stop_ends_a_vent_part_way_and_its_status_fails(slow):
    chamber = slow.microscope.chamber
    status = chamber.set("vented")
    time.sleep(0.2)  # about a third of the way
    chamber.stop()
    with pytest.raises(StoppedError, match="vent stopped at"):
        status.wait(10)
    assert chamber.vacuum_state.get() == "vented"  # no longer at high vacuum
    assert HIGH_VACUUM < chamber.pressure.get() < ATMOSPHERE
    chamber.set("pumped").wait(10)
    assert chamber.vacuum_state.get() == "pumped"
    assert slow.microscope.fault_watch.poll() == []  # asked for each time: no fault


def test_bad_chamber_state_is_refused_before_anything_runs(slow):
    chamber = slow.microscope.chamber
    t0 = slow.backend.time()
    with pytest.raises(ValueError, match="'pumped' or 'vented', got 'open'"):
        chamber.set("open")
    assert slow.backend.time() == t0
    assert chamber.vacuum_state.get() == "pumped"
