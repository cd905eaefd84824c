"""The milling device: ``set(stage)`` mills one or more stages and reports progress.

``set`` validates everything (patterns inside the field of view, depths between 1 nm and
100 um, known materials, the milling current, voltage and field width within the ion beam's
limits) before the beam is touched, and sets the milling current with the beam blanked,
unblanking only then; while milling, the status reports the
fraction done and the time remaining (bluesky's ProgressBar shows it); ``pause()`` holds
the milling at the end of a pass with the beam blanked and ``resume()`` goes on (the
RunEngine calls both when it pauses and resumes; the replayed ``set`` of a paused milling
continues it instead of milling twice); ``stop()`` aborts between passes and returns once
the milling has ended (at most :attr:`Milling.end_timeout`). A new ``set`` while a milling is
held ends it first; if it does not end in time, ``TimeoutError`` and nothing new starts.
A failure the microscope reports (a beam trip, a vented chamber) fails the status with the
microscope's error, the state "failed".

The ion beam's way back: the device remembers the ion current the beam had before the first
milling began (``imaging_current``) until a milling has put the beam back to it. Every way
out of a milling (done, failed, aborted, stopped, a halted run, which the RunEngine ends by
unstaging the microscope, a new milling replacing a held one, ``close()``) leaves the ion beam
at that current, blanked; a milling started while an earlier one had not restored the beam
returns to the earlier imaging current, not to the milling current it finds.

The interlock (:mod:`~fibsem_ophyd.devices._interlock`): from ``set`` until the beam is
restored the microscope is marked as milling; a stage or needle move, a change of the ion
beam's current, voltage, field width, shift or scan rotation, unblanking it, an ion image,
venting, or a second milling from another thread or plan is refused with
:class:`~fibsem_ophyd.devices.InterlockError` naming the milling. A held milling (paused)
still counts. The device changes the beam itself through the backend, so its own current
changes go through.
"""

from __future__ import annotations

import logging
import threading
import time

from ophyd import Component as Cpt
from ophyd import Device, Signal
from ophyd.status import DeviceStatus

from ..backend import StoppedError, check_subsystem
from ..milling import MillingStage, as_stages, check_stages
from ._interlock import check_no_milling, mark_milling
from ._signals import SettingSignal, find_backend
from ._stage import stop_subsystem

__all__ = ["Milling", "MillingAborted"]

_log = logging.getLogger(__name__)


class MillingAborted(RuntimeError):
    """Milling was stopped before it finished."""


class _MillingStatus(DeviceStatus):
    def __init__(self, device, total: float, **kwargs):
        self.total = total
        self.start_time = time.monotonic()
        super().__init__(device, **kwargs)

    def report(self, done: float) -> None:
        """``done``: estimated seconds of milling done so far."""
        elapsed = time.monotonic() - self.start_time
        remaining = max(self.total - done, 0.0)
        for w in list(self._watchers):
            w(name=self.device.name, current=done, initial=0.0, target=self.total, unit="s",
              precision=0, fraction=remaining / self.total if self.total else 0.0,
              time_elapsed=elapsed, time_remaining=remaining)


class _ImagingCurrent(Signal):
    """The ion current (A) the beam returns to when the milling in progress ends: the current
    before the first milling began while one has not yet restored the beam, else the ion
    beam's present current (read-only)."""

    def get(self, **kwargs):
        milling = self.parent
        value = milling._imaging_current
        if value is None:
            value = float(find_backend(self).get("current", "ion"))
        self._readback = value
        return value

    def put(self, value, **kwargs):
        raise ValueError(f"{self.name} is read-only")

    def describe(self):
        return {self.name: {"source": f"milling:{self.name}", "dtype": "number", "shape": [],
                            "dtype_numpy": "<f8", "units": "A"}}


class Milling(Device):
    """Mills :class:`~fibsem_ophyd.milling.MillingStage` s with the ion beam.

    Readings (recorded after each ``set``): ``stage_name``, ``estimated_time`` (s, from dose)
    and ``milling_time`` (s, as the microscope reports it), ``state``,
    ``pattern_offset_x``/``_y`` (m: how far a supervisor moved the patterns; the supervised
    milling plans apply them). ``imaging_current`` (A, read-only): where the ion beam goes
    back to after the milling.
    """

    state = Cpt(SettingSignal, vtype="str", value="idle", kind="normal",
                choices=("idle", "ready", "running", "paused", "done", "failed", "aborted"))
    stage_name = Cpt(SettingSignal, vtype="str", value="", kind="normal")
    estimated_time = Cpt(SettingSignal, units="s", value=0.0, kind="normal")
    milling_time = Cpt(SettingSignal, units="s", value=0.0, kind="normal")
    progress = Cpt(SettingSignal, units="%", limits=(0.0, 100.0), value=0.0, kind="omitted")
    #: where a supervisor moved the patterns (image metres, +x right, +y up) while a
    #: supervised plan was paused; the plan applies them and records them with the stage
    #: (two scalars: the event tables store 1-D array readings as text)
    pattern_offset_x = Cpt(SettingSignal, units="m", limits=(-20e-6, 20e-6), value=0.0,
                           kind="normal")
    pattern_offset_y = Cpt(SettingSignal, units="m", limits=(-20e-6, 20e-6), value=0.0,
                           kind="normal")
    #: the ion current the beam returns to (:class:`_ImagingCurrent`)
    imaging_current = Cpt(_ImagingCurrent, kind="omitted")

    #: seconds ``stop()`` (and a ``set`` replacing a held milling) wait for the milling to
    #: end once told to stop: on hardware the microscope ends the pass at once
    #: (``stop_milling``), the simulator at the end of the pass it is in
    end_timeout = 30.0

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._stop = threading.Event()
        self._go = threading.Event()  # cleared while paused
        self._go.set()
        self._active: tuple[list, DeviceStatus] | None = None
        self._held: tuple[list, DeviceStatus] | None = None  # paused by a RunEngine pause
        self._thread: threading.Thread | None = None
        self._busy = False  # from set() until the beam is restored, before the status ends
        #: the thread that staged the device (the RunEngine's) and the one that started the
        #: milling in progress: unstaging ends only a milling its own RunEngine started
        self._stager: int | None = None
        self._owner: int | None = None
        self._paused = False  # held by a RunEngine pause (pause() called, not resumed)
        #: the ion current before the first milling began, until a milling restored it
        self._imaging_current: float | None = None

    # -- pause / resume (the RunEngine calls these when it pauses and resumes) ------------
    def _hold(self) -> None:
        self._go.clear()
        if self._active is not None and not self._active[1].done:
            self._held = self._active

    def _is_held(self) -> bool:
        return self._held is not None and not self._held[1].done and not self._go.is_set()

    def pause(self):
        """Hold the milling at the end of the current pass (the beam waits, blanked)."""
        self._paused = True
        self._hold()

    def resume(self):
        """Go on milling from where :meth:`pause` held it."""
        self._paused = False
        self._go.set()

    @property
    def in_progress(self) -> bool:
        """A milling is running or held: from ``set`` until its beam is restored (before its
        status completes)."""
        return self._busy

    def check(self, stages: list[MillingStage]) -> None:
        """Raise ``ValueError`` naming the stage, the parameter, its value and the limit for a
        stage that cannot be milled: a pattern outside the field of view, a depth outside
        :data:`~fibsem_ophyd.milling.DEPTH_RANGE`, a milling current, voltage or field width
        outside the ion beam's limits (the backend's ``describe``). Nothing is changed."""
        backend = find_backend(self)
        limits = {key: backend.describe(key, "ion").get("limits")
                  for key in ("current", "voltage", "hfw")}
        check_stages(stages, limits)

    def set(self, value, **kwargs):
        stages = [s for s in as_stages(value) if s.enabled]
        check_subsystem(find_backend(self), "milling")
        tilted = [s.name for s in stages if s.strategy != "Standard"]
        if tilted:  # the device mills where the stage is; the plan tilts between the cuts
            raise ValueError(f"stage(s) {tilted}: the Overtilt strategy tilts the stage "
                             "between cuts; mill them with the mill_stages plan")
        self.check(stages)
        key = [s.to_dict() for s in stages]
        if self._held is not None and self._held[0] == key:
            # a resumed RunEngine replays the set of the milling it paused: go on with that
            # one (it may have finished already) rather than milling the same stages twice
            _, status = self._held
            self._held = None
            self.resume()
            if status.done and status.success:
                # it finished while the run replayed up to here (and re-set the state)
                self.state.put("done")
            return status
        held = self._is_held()
        self._held = None
        if self.in_progress:
            if not held:  # milling, not held: another thread's or plan's; it goes on
                check_no_milling(self, f"milling of {[s.name for s in stages]}")
            # another milling is held (a paused run that was then stopped): end it first
            self._end_previous()
        backend = find_backend(self)
        if self._imaging_current is None:
            self._imaging_current = float(backend.get("current", "ion"))
        total = sum(s.estimated_time() for s in stages) or 1.0
        status = _MillingStatus(self, total)
        self._active = (key, status)
        self._stop.clear()
        self._go.set()
        self._busy = True
        mark_milling(self, f"the milling of {', '.join(repr(s.name) for s in stages)}")
        self._paused = False
        self._owner = threading.get_ident()

        def run():
            done = 0.0
            try:
                self.state.put("running")
                for st in stages:
                    est = st.estimated_time()
                    self.stage_name.put(st.name)
                    self.estimated_time.put(est)
                    # the current changes (apertures move, ~20 s) with the beam blanked: it
                    # reaches the sample only at the milling current
                    backend.set("blanked", True, "ion")
                    backend.set("current", st.milling_current, "ion")
                    backend.set("blanked", False, "ion")

                    def progress(fraction, _done=done, _est=est, _name=st.name):
                        if not self._go.is_set():
                            backend.set("blanked", True, "ion")
                            self.state.put("paused")
                            while not self._go.wait(0.05):
                                if self._stop.is_set():
                                    break
                            if not self._stop.is_set():
                                backend.set("blanked", False, "ion")
                                self.state.put("running")
                        if self._stop.is_set():
                            raise MillingAborted(f"milling of {_name!r} stopped")
                        self.progress.put(100.0 * fraction)
                        status.report(_done + fraction * _est)

                    t = backend.mill(st.pattern.shapes(), st.milling_current,
                                     voltage=st.milling_voltage, hfw=st.hfw,
                                     application_file=st.material, progress=progress)
                    self.milling_time.put(float(t))
                    done += est
                    status.report(done)
            except StoppedError as exc:
                # the microscope ended it on our stop(): the same abort as between passes
                error = MillingAborted(f"milling stopped: {exc}") if self._stop.is_set() else exc
            except Exception as exc:
                error = exc
            else:
                error = None
            # whatever happened, leave the ion beam safe (imaging current, blanked) before
            # the status completes: the plan may image right after
            error = self._restore_beam(backend) or error
            self._busy = False
            mark_milling(self, None)  # before the status ends: the plan goes on at once
            if error is None:
                self.state.put("done")
                status.set_finished()
            else:
                stopped = isinstance(error, (MillingAborted, StoppedError))
                self.state.put("aborted" if stopped else "failed")
                status.set_exception(error)

        self._thread = threading.Thread(target=run, daemon=True, name=f"{self.name}-mill")
        self._thread.start()
        return status

    def _restore_beam(self, backend) -> Exception | None:
        """The ion beam back at the imaging current, blanked; the error if that failed (the
        imaging current is then kept for the next milling to return to)."""
        try:
            if self._imaging_current is not None:
                backend.set("current", self._imaging_current, "ion")
            backend.set("blanked", True, "ion")
        except Exception as exc:  # noqa: BLE001 -- reported through the status
            return exc
        self._imaging_current = None
        return None

    def _end_previous(self) -> None:
        """Stop the milling in progress and wait for it to end (:attr:`end_timeout`).

        ``TimeoutError`` if it has not ended by then (it is still milling: a second milling
        must not start beside it); an error other than the abort it was stopped with (it
        failed as it ended) is raised too, chained. Only ``MillingAborted``/``StoppedError``,
        the expected end, pass silently."""
        previous = self._active
        self.stop(success=False)
        if self.in_progress:
            name = self.stage_name.get()
            raise TimeoutError(
                f"{self.name}: the previous milling (of {name!r}) did not end within "
                f"{self.end_timeout} s of being stopped; no new milling was started. It is "
                "still in progress: wait for it to end or stop it again "
                f"({self.name}.stop())")
        if previous is not None:
            exc = previous[1].exception(timeout=5.0)  # done: its thread has ended
            if exc is not None and not isinstance(exc, (MillingAborted, StoppedError)):
                raise RuntimeError(f"{self.name}: the previous milling failed as it was "
                                   f"stopped: {type(exc).__name__}: {exc}; no new milling "
                                   "was started") from exc

    def _wait_ended(self, timeout: float) -> bool:
        """Wait until the milling's beam is restored (its thread's end); False on timeout."""
        thread = self._thread
        if thread is None or thread is threading.current_thread():
            return not self._busy
        thread.join(timeout)
        return not self._busy

    def stop(self, *, success: bool = False):
        """``success=False`` (abort, failure): abort between passes and return once the
        milling has ended and the beam is restored (at most :attr:`end_timeout` s).
        ``success=True`` is what the RunEngine sends when it pauses: hold the milling, as
        :meth:`pause`; sent again while held, the run is ending (``RE.abort()``/``RE.stop()``
        of the paused run, which bluesky also sends with ``success=True``): abort."""
        if success and not self._is_held():
            self._hold()
            return
        self._stop.set()
        self._held = None  # ended: a later set of the same stages is a new milling
        self._paused = False
        self._go.set()
        if self.in_progress:
            stop_subsystem(self, "milling")  # the microscope ends the pass it is milling
            if not self._wait_ended(self.end_timeout):
                _log.error("%s: the milling did not end within %s s of being stopped",
                           self.name, self.end_timeout)

    def stage(self):
        self._stager = threading.get_ident()
        return super().stage()

    def unstage(self):
        """The run that staged the microscope is ending: a milling its RunEngine started (in
        the thread that staged the device) must not outlive it.

        The RunEngine, as it closes a run, sends ``stop(success=True)`` (past the point where a
        failed status would turn an abort into a failure), then unstages what is still
        staged. So a milling still running when the plan unstages (an abort or stop under
        it) is held here and ended by that closing ``stop``; one held by a RunEngine pause is
        left to it too; one held by the closing ``stop`` alone (a halt, which skips the plan's
        own unstaging) is ended here. A milling started in another thread goes on."""
        try:
            if self.in_progress and self._owner is not None and self._owner == self._stager:
                if not self._is_held():
                    self._hold()
                elif not self._paused:
                    self.stop(success=False)
        finally:
            self._stager = None
        return super().unstage()

    def close(self) -> None:
        """End a milling in progress (the session's ``close()`` calls it)."""
        if self.in_progress:
            self.stop(success=False)
