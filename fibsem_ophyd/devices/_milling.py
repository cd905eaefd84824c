"""The milling device: ``set(stage)`` mills one or more stages and reports progress.

``set`` validates everything (patterns inside the field of view, positive depths and
currents, known materials) before the beam turns on; while milling, the status reports the
fraction done and the time remaining (bluesky's ProgressBar shows it); ``stop()`` aborts
between passes. On completion, failure or abort the ion beam is returned to the imaging
current it had before and blanked.
"""

from __future__ import annotations

import threading
import time

from ophyd import Component as Cpt
from ophyd import Device
from ophyd.status import DeviceStatus

from ..milling import MillingStage, as_stages, check_patterns
from ._signals import SettingSignal, find_backend

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
                choices=("idle", "ready", "running", "done", "failed", "aborted"))
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

    def check(self, stages: list[MillingStage]) -> None:
        """Raise ``ValueError`` for a stage that cannot be milled (nothing is changed)."""
        for st in stages:
            try:
                check_patterns(st.pattern, st.hfw)
            except ValueError as exc:
                raise ValueError(f"stage {st.name!r}: {exc}") from None

    def set(self, value, **kwargs):
        stages = [s for s in as_stages(value) if s.enabled]
        self.check(stages)
        backend = find_backend(self)
        total = sum(s.estimated_time() for s in stages) or 1.0
        status = _MillingStatus(self, total)
        self._stop.clear()

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
                self.state.put("aborted" if isinstance(error, MillingAborted) else "failed")
                status.set_exception(error)

        threading.Thread(target=run, daemon=True, name=f"{self.name}-mill").start()
        return status

    def stop(self, *, success: bool = False):
        self._stop.set()
