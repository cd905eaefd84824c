"""The milling device: ``set(stage)`` mills one or more stages and reports progress.

``set`` validates everything (patterns inside the field of view, positive depths and
currents, known materials) before the beam turns on; while milling, the status reports the
fraction done and the time remaining (bluesky's ProgressBar shows it); ``pause()`` holds
the milling at the end of a pass with the beam blanked and ``resume()`` goes on (the
RunEngine calls both when it pauses and resumes; the replayed ``set`` of a paused milling
continues it instead of milling twice); ``stop()`` aborts between passes.
On completion, failure or abort the ion beam is returned to the imaging
current it had before and blanked.
"""

from __future__ import annotations

import threading
import time

from ophyd import Component as Cpt
from ophyd import Device
from ophyd.status import DeviceStatus

from ..backend import StoppedError, check_subsystem
from ..milling import MillingStage, as_stages, check_stages
from ._signals import SettingSignal, find_backend
from ._stage import stop_subsystem

__all__ = ["Milling", "MillingAborted"]


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


class Milling(Device):
    """Mills :class:`~fibsem_ophyd.milling.MillingStage` s with the ion beam.

    Readings (recorded after each ``set``): ``stage_name``, ``estimated_time`` (s, from dose)
    and ``milling_time`` (s, as the microscope reports it), ``state``,
    ``pattern_offset_x``/``_y`` (m: how far a supervisor moved the patterns; the supervised
    milling plans apply them).
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

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._stop = threading.Event()
        self._go = threading.Event()  # cleared while paused
        self._go.set()
        self._active: tuple[list, DeviceStatus] | None = None
        self._held: tuple[list, DeviceStatus] | None = None  # paused by a RunEngine pause

    # -- pause / resume (the RunEngine calls these when it pauses and resumes) ------------
    def pause(self):
        """Hold the milling at the end of the current pass (the beam waits, blanked)."""
        self._go.clear()
        if self._active is not None and not self._active[1].done:
            self._held = self._active

    def resume(self):
        """Go on milling from where :meth:`pause` held it."""
        self._go.set()

    def check(self, stages: list[MillingStage]) -> None:
        """Raise ``ValueError`` for a stage that cannot be milled (nothing is changed)."""
        check_stages(stages)

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
        self._held = None
        if self._active is not None and not self._active[1].done:
            # another milling is held (a paused run that was then stopped): end it first
            self.stop(success=False)
            try:
                self._active[1].wait(30)
            except Exception:  # noqa: BLE001 -- it was aborted on purpose
                pass
        backend = find_backend(self)
        total = sum(s.estimated_time() for s in stages) or 1.0
        status = _MillingStatus(self, total)
        self._active = (key, status)
        self._stop.clear()
        self._go.set()

        def run():
            imaging_current = backend.get("current", "ion")
            done = 0.0
            try:
                self.state.put("running")
                backend.set("blanked", False, "ion")
                for st in stages:
                    est = st.estimated_time()
                    self.stage_name.put(st.name)
                    self.estimated_time.put(est)
                    backend.set("current", st.milling_current, "ion")

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
            try:
                backend.set("current", imaging_current, "ion")
                backend.set("blanked", True, "ion")
            except Exception as exc:  # noqa: BLE001
                error = error or exc
            if error is None:
                self.state.put("done")
                status.set_finished()
            else:
                stopped = isinstance(error, (MillingAborted, StoppedError))
                self.state.put("aborted" if stopped else "failed")
                status.set_exception(error)

        threading.Thread(target=run, daemon=True, name=f"{self.name}-mill").start()
        return status

    def stop(self, *, success: bool = False):
        """``success=False`` (abort, failure): abort between passes. ``success=True`` is what
        the RunEngine sends when it pauses: hold the milling, as :meth:`pause`; sent again
        while held, the run is ending (``RE.abort()``/``RE.stop()`` of the paused run, which
        bluesky also sends with ``success=True``): abort."""
        if success:
            held = self._held is not None and not self._held[1].done and not self._go.is_set()
            if not held:
                self.pause()
                return
        self._stop.set()
        self._go.set()
        if self._active is not None and not self._active[1].done:
            stop_subsystem(self, "milling")  # the microscope ends the pass it is milling
