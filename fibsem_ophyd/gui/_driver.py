"""Drivers: how the widgets reach a microscope. One interface, two ways.

* :class:`InProcessDriver` runs plans on a session's RunEngine on a worker thread (the Qt
  event loop stays free while a plan runs; see ``benchmarks/bench_viewer.py``) and shows each
  frame as the detector produces it.
* :class:`RemoteDriver` (``fibsem_ophyd.gui._remote``) submits the same plans to a queue
  server and reads the frames from the Tiled server as they land.

Plans are named as in :mod:`fibsem_ophyd.plans` and called with device *names* as the queue
server takes them (``"microscope"``, ``"sem"``, ``"fib"``), so a widget builds one call for
both drivers. Every signal is delivered on Qt's thread.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

from qtpy.QtCore import QObject, Signal

__all__ = ["Call", "Driver", "InProcessDriver", "Frame", "DEVICE_NAMES"]

#: device names the widgets use, as the profile collection (and so the queue server) has them
DEVICE_NAMES = ("microscope", "sem", "fib", "stage", "electron_beam", "ion_beam")


@dataclass(frozen=True)
class Call:
    """One plan call: ``plan`` from :mod:`fibsem_ophyd.plans`, device arguments by name."""

    plan: str
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Frame:
    """A frame to show: the pixels and where they sit in the beam's field.

    ``pixel_size`` in m; ``centre`` the image-frame position (m, +y up) of the frame's centre
    in the beam's full field (not zero for a reduced area); ``acquired`` the wall-clock time
    (``time.time()``) the detector produced it.
    """

    beam: str
    data: Any
    pixel_size: float
    centre: tuple[float, float] = (0.0, 0.0)
    acquired: float = 0.0
    run_uid: str | None = None


class Driver(QObject):
    """What every driver offers the widgets.

    Signals
    -------
    frame(Frame)
        A new frame of one beam.
    state(str)
        "idle", "running" or "paused" (a plan stopped at a checkpoint, e.g. supervision).
    finished(str, object, object)
        A call ended: plan name, result (or ``None``), exception (or ``None``).
    progress(float)
        Milling progress, 0..1.
    message(str)
        Something to tell the user (refusals, errors).
    positions_changed(dict)
        The saved stage positions changed: all of them, ``{name: {x, y, z, r, t}}``.
    overview(dict)
        An overview read back from the catalog
        (:func:`fibsem_ophyd.plans.stored_runs.overview_of`: ``mosaic``, ``mapping``,
        ``sites``), the newest stored one (queue server).
    """

    frame = Signal(object)
    state = Signal(str)
    finished = Signal(str, object, object)
    progress = Signal(float)
    message = Signal(str)
    positions_changed = Signal(object)
    overview = Signal(object)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._state = "idle"

    @property
    def current_state(self) -> str:
        return self._state

    def _set_state(self, state: str) -> None:
        self._state = state
        self.state.emit(state)

    # -- to implement ---------------------------------------------------------------------
    def submit(self, calls: list[Call]) -> bool:
        """Run ``calls`` in order; ``False`` (and a message) if a plan is running already."""
        raise NotImplementedError

    def pause(self) -> None:
        raise NotImplementedError

    def resume(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    def image_settings(self, beam: str) -> dict:
        """Current image settings of ``beam`` (resolution [w, h] px, hfw m, dwell_time s)."""
        raise NotImplementedError

    def stage_position(self) -> dict:
        """``{x, y, z (m), r, t (deg)}``."""
        raise NotImplementedError

    def positions(self) -> dict:
        """Saved stage positions by name."""
        raise NotImplementedError

    def set_pattern_offset(self, x: float, y: float) -> None:
        """Tell a paused supervised milling where the person moved the patterns (m, +y up)."""
        raise NotImplementedError

    def pattern_offset_limit(self) -> float:
        """Largest pattern offset (m) the milling device accepts along each axis."""
        return 20e-6

    def checkpoint(self) -> dict:
        """What a paused plan waits for: ``{"plan": name, "stage_name": milling stage}``."""
        raise NotImplementedError

    def paused_detection(self):
        """The supervised detection the paused plan waits on
        (:class:`~fibsem_ophyd.gui._keypoints.PausedDetection`, read from the catalog), or
        ``None``."""
        return None

    def correct_keypoints(self, corrections: dict) -> None:
        """Enter keypoint corrections ``{feature: (x, y) px}`` (x right, y down) into the
        paused supervised detection (:func:`fibsem_ophyd.plans.correct_keypoint`); all are
        checked before any is entered. Resume to store them."""
        raise NotImplementedError

    def batch_state(self, batch: str) -> dict:
        """:func:`fibsem_ophyd.plans.stored_runs.batch_state` of the catalog the plans write to."""
        from ..plans.stored_runs import batch_state

        return batch_state(self.catalog, batch)

    def close(self) -> None:
        """Stop listening (frames, progress)."""

    # -- convenience ----------------------------------------------------------------------
    def run(self, plan: str, *args, **kwargs) -> bool:
        """Submit one plan call."""
        return self.submit([Call(plan, args, kwargs)])


class _WaitDuringTask:
    """While the worker thread waits for the RunEngine: just wait (never spin an event loop
    off Qt's thread, which bluesky's default would do if matplotlib's Qt backend is active)."""

    def block(self, event: threading.Event) -> None:
        event.wait()


def _beam_frame(detector, frame, acquired: float) -> Frame:
    """Where a just-acquired frame of ``detector`` sits (its settings, read as it was taken)."""
    w, h = (int(v) for v in detector.resolution.get())
    px = float(detector.hfw.get()) / w
    area = detector.reduced_area.get()
    centre = (0.0, 0.0)
    if area is not None:
        left, top, aw, ah = (float(v) for v in area)
        centre = ((left + aw / 2 - 0.5) * w * px, (0.5 - top - ah / 2) * h * px)
    return Frame(detector.beam, frame, px, centre, acquired)


class InProcessDriver(Driver):
    """Runs plans on ``session.RE`` on a worker thread; frames straight from the detectors.

    While one of its plans runs, the session's RunEngine installs no Ctrl-C handler (signals
    belong to the main thread) and blocks only the worker thread; at the end both are as
    they were, so the same session keeps working from IPython.
    """

    def __init__(self, session, parent=None):
        super().__init__(parent)
        self.session = session
        self.microscope = session.microscope
        self.catalog = session.catalog
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._subs: list[tuple[Any, int]] = []
        #: the uid of the newest run the session's RunEngine opened (the paused one's)
        self.run_uid: str | None = None
        self._start_token = session.RE.subscribe(self._on_start, "start")
        for det in (self.microscope.sem, self.microscope.fib):
            cid = det.last_frame.subscribe(self._frame_callback(det), run=False)
            self._subs.append((det.last_frame, cid))
        milling = getattr(self.microscope, "milling", None)
        if milling is not None:
            cid = milling.progress.subscribe(self._on_progress, run=False)
            self._subs.append((milling.progress, cid))
        saved = self.microscope.stage.positions
        cid = saved.subscribe(self._on_positions, run=False)
        self._subs.append((saved, cid))

    # -- devices ---------------------------------------------------------------------------
    def device(self, name: str):
        """The device a plan argument names (``"microscope"``, ``"sem"``, ``"fib"``, ...)."""
        if name == "microscope":
            return self.microscope
        if name in DEVICE_NAMES:
            return getattr(self.microscope, name)
        raise ValueError(f"unknown device name {name!r}; known: {list(DEVICE_NAMES)}")

    def _resolve(self, value):
        if isinstance(value, str) and value in DEVICE_NAMES:
            return self.device(value)
        return value

    def _plan(self, call: Call):
        from .. import plans

        if call.plan not in plans.__all__:
            raise ValueError(f"unknown plan {call.plan!r}; see fibsem_ophyd.plans.__all__")
        func = getattr(plans, call.plan)
        args = [self._resolve(a) for a in call.args]
        kwargs = {k: self._resolve(v) for k, v in call.kwargs.items()}
        return func(*args, **kwargs)

    # -- frames and progress (called on the detector / milling threads) ----------------------
    def _frame_callback(self, det):
        def callback(value=None, **_):
            if value is not None:
                self.frame.emit(_beam_frame(det, value, time.time()))

        return callback

    def _on_start(self, name, doc) -> None:
        self.run_uid = doc.get("uid")

    def _on_positions(self, value=None, **_):
        if value is not None:
            self.positions_changed.emit(dict(value))

    def _on_progress(self, value=None, **_):
        if value is not None:
            self.progress.emit(float(value) / 100.0)

    # -- running -----------------------------------------------------------------------------
    def _busy(self) -> bool:
        return (self._thread is not None and self._thread.is_alive()) \
            or self.session.RE.state != "idle"

    def submit(self, calls: list[Call]) -> bool:
        calls = list(calls)
        with self._lock:
            if self._busy():
                what = "paused" if self.session.RE.state == "paused" else "running"
                self.message.emit(f"a plan is {what}: resume or abort it first "
                                  f"(refused: {', '.join(c.plan for c in calls)})")
                return False
            try:  # build every plan now: bad arguments are refused before anything moves
                plans = [(c.plan, self._plan(c)) for c in calls]
            except Exception as exc:  # noqa: BLE001 -- reported to the user, nothing ran
                self.message.emit(f"{calls[0].plan if calls else '?'}: {exc}")
                self.finished.emit(calls[0].plan if calls else "", None, exc)
                return False
            self._start(lambda: self._run_plans(plans))
        return True

    def _start(self, target) -> None:
        self._set_state("running")
        self._thread = threading.Thread(target=target, daemon=True, name="fibsem-gui-RE")
        self._thread.start()

    def _with_worker_settings(self, func):
        RE = self.session.RE
        saved = RE.context_managers, RE._during_task
        RE.context_managers, RE._during_task = [], _WaitDuringTask()
        try:
            return func()
        finally:
            RE.context_managers, RE._during_task = saved

    def _run_plans(self, plans) -> None:
        from bluesky.utils import RunEngineInterrupted

        for name, plan in plans:
            try:
                result = self._with_worker_settings(lambda p=plan: self.session.RE(p))
            except RunEngineInterrupted:
                # paused (a checkpoint asked for a person, or the pause button): the rest of
                # the calls wait for resume
                self._pending = (name, plans[plans.index((name, plan)) + 1:])
                self._set_state("paused")
                return
            except Exception as exc:  # noqa: BLE001 -- shown to the user
                self.message.emit(f"{name} failed: {exc}")
                self.finished.emit(name, None, exc)
                self._set_state("idle")
                return
            self.finished.emit(name, getattr(result, "plan_result", result), None)
        self._set_state("idle")

    def _continue(self, how: str) -> None:
        from bluesky.utils import RunEngineInterrupted

        name, rest = getattr(self, "_pending", ("", []))
        RE = self.session.RE
        try:
            result = self._with_worker_settings(RE.resume if how == "resume" else RE.abort)
        except RunEngineInterrupted:
            self._set_state("paused")
            return
        except Exception as exc:  # noqa: BLE001
            self.message.emit(f"{name} failed: {exc}")
            self.finished.emit(name, None, exc)
            self._set_state("idle")
            return
        self.finished.emit(name, getattr(result, "plan_result", result), None)
        if how == "resume" and rest:
            self._run_plans(rest)
        else:
            self._set_state("idle")

    def pause(self) -> None:
        """Pause the running plan now (it stops at its last checkpoint)."""
        if self.session.RE.state == "running":
            self.session.RE.request_pause(defer=False)

    def resume(self) -> None:
        """Resume a paused plan (and the calls queued after it)."""
        with self._lock:
            if self.session.RE.state != "paused":
                self.message.emit(f"nothing to resume (RunEngine {self.session.RE.state})")
                return
            if self._thread is not None and self._thread.is_alive():
                self._thread.join(5.0)
            self._start(lambda: self._continue("resume"))

    def abort(self) -> None:
        """Abort the running or paused plan (the run is closed as aborted). Returns at once:
        a running plan is paused first (a milling holds at the end of a pass), off Qt's
        thread."""
        threading.Thread(target=self._abort, daemon=True, name="fibsem-gui-abort").start()

    def _abort(self) -> None:
        RE = self.session.RE
        if RE.state == "running":
            try:
                RE.request_pause(defer=False)
            except Exception as exc:  # noqa: BLE001 -- it finished meanwhile
                self.message.emit(f"abort: {exc}")
        worker = self._thread
        if worker is not None and worker is not threading.current_thread():
            worker.join(60)  # the plan's thread ends once the RunEngine has paused
        with self._lock:
            if RE.state != "paused":
                return
            self._pending = (getattr(self, "_pending", ("", []))[0], [])
            self._set_state("running")
            self._thread = threading.current_thread()
        self._continue("abort")

    def wait(self, timeout: float = 60.0) -> None:
        """Block until the worker thread ends (tests, scripts); Qt signals queue meanwhile."""
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise TimeoutError(f"the plan still runs after {timeout} s")

    # -- reading ----------------------------------------------------------------------------
    def image_settings(self, beam: str) -> dict:
        det = self.microscope.sem if beam == "electron" else self.microscope.fib
        return det.image_settings()

    def stage_position(self) -> dict:
        st = self.microscope.stage
        return {ax: float(getattr(st, ax).position) for ax in ("x", "y", "z", "r", "t")}

    def positions(self) -> dict:
        return dict(self.microscope.stage.positions.get() or {})

    def set_pattern_offset(self, x: float, y: float) -> None:
        milling = self.microscope.milling
        milling.pattern_offset_x.put(milling.pattern_offset_x.check_value(float(x)))
        milling.pattern_offset_y.put(milling.pattern_offset_y.check_value(float(y)))

    def pattern_offset_limit(self) -> float:
        lo, hi = self.microscope.milling.pattern_offset_x.limits
        return float(min(-lo, hi))

    def checkpoint(self) -> dict:
        milling = self.microscope.milling
        return {"plan": getattr(self, "_pending", ("", []))[0],
                "stage_name": milling.stage_name.get(), "milling_state": milling.state.get()}

    def paused_detection(self):
        from ._keypoints import paused_detection

        if self.session.RE.state != "paused" or self.run_uid is None:
            return None
        return paused_detection(self.catalog[self.run_uid])

    def correct_keypoints(self, corrections: dict) -> None:
        from ..detection import check_keypoint
        from ..plans import correct_keypoint

        checked = [check_keypoint(n, *xy) for n, xy in corrections.items()]
        for name, x, y in checked:
            correct_keypoint(name, x, y)

    def close(self) -> None:
        for sig, cid in self._subs:
            sig.unsubscribe(cid)
        self._subs = []
        if self._start_token is not None:
            self.session.RE.unsubscribe(self._start_token)
            self._start_token = None
