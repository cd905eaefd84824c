"""Session.close() gives the process back what setup_session changed: bluesky's Plan class,
the switch interval, bluesky's event loop, and every thread the session started."""

import subprocess
import sys
import threading
from pathlib import Path

import bluesky.utils as bu
from bluesky.run_engine import get_bluesky_event_loop

from fibsem_ophyd import setup_session
from fibsem_ophyd._bluesky_compat import LazyStackPlan
from fibsem_ophyd.plans import acquire_series, take_reference_images
from fibsem_ophyd.session import SWITCH_INTERVAL

TINY = {"electron": {"resolution": [128, 96]}, "ion": {"resolution": [128, 96]}}


def _process():
    plan = bu.Plan
    return {"switch": sys.getswitchinterval(), "plan": plan, "plan_attrs": dict(vars(plan)),
            "loop": get_bluesky_event_loop()}


def _threads():
    return {t.ident: t.name for t in threading.enumerate()}


def _left_running(threads: dict, grace: float = 5.0) -> dict:
    """Threads not in ``threads`` that are still alive after ``grace`` seconds: a thread
    told to end may still be on its way out on a loaded machine; one left running is not."""
    for t in threading.enumerate():
        if t.ident not in threads and t is not threading.current_thread():
            t.join(grace)
    return {i: n for i, n in _threads().items() if i not in threads}


def _close_undoes_what_setup_changed(tmp_path):
    old_switch = sys.getswitchinterval()
    sys.setswitchinterval(0.004)  # a value of the user's, above the session's 1 ms
    try:
        before, threads = _process(), _threads()
        assert before["plan"] is not LazyStackPlan
        s = setup_session(config=TINY, data_dir=tmp_path / "data", seed=0)
        # while open: the patched Plan, the shorter switch interval, threads of its own
        assert bu.Plan is LazyStackPlan and sys.getswitchinterval() == SWITCH_INTERVAL
        s.RE(take_reference_images(s.microscope))
        s.RE(acquire_series(s.microscope.sem, num=3))
        started = {i: n for i, n in _threads().items() if i not in threads}
        names = set(started.values())
        assert {"bluesky-run-engine", "fibsem-fault-watch", "fibsem-catalog-writer"} <= names
        assert any(n.startswith("sim-worker") for n in names)
        assert any(n.startswith("microscope_sem-acquire") for n in names)
        s.close()
        s.close()  # idempotent
        assert _process() == before
        left = _left_running(threads)
        assert left == {}, f"threads the session left running: {sorted(left.values())}"
        assert s.RE.loop.is_closed() and s.suspenders == []
    finally:
        sys.setswitchinterval(old_switch)


def _the_last_session_to_close_restores(tmp_path):
    before, threads = _process(), _threads()
    a = setup_session(config=TINY, data_dir=tmp_path / "a", seed=0)
    b = setup_session(config=TINY, data_dir=tmp_path / "b", seed=0)
    a.RE(take_reference_images(a.microscope))
    a.close()
    # b still runs with what the sessions changed
    assert bu.Plan is LazyStackPlan
    assert sys.getswitchinterval() == min(before["switch"], SWITCH_INTERVAL)
    uid = b.RE(take_reference_images(b.microscope)).plan_result
    assert b.catalog[uid].metadata["stop"]["exit_status"] == "success"
    b.close()
    assert _process() == before
    left = _left_running(threads)
    assert left == {}, f"threads the sessions left running: {sorted(left.values())}"


# Each in a fresh interpreter: "the process as it was" means no other session open, and a
# test elsewhere in the same pytest worker may have left one open.
def _in_fresh_interpreter(name: str, tmp_path) -> None:
    code = (f"import pathlib, tests.test_session_close as t; "
            f"t.{name}(pathlib.Path({str(tmp_path)!r}))")
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]


def test_close_undoes_what_setup_changed(tmp_path):
    _in_fresh_interpreter("_close_undoes_what_setup_changed", tmp_path)


def test_the_last_session_to_close_restores(tmp_path):
    _in_fresh_interpreter("_the_last_session_to_close_restores", tmp_path)
