"""Faults a running plan can wait out: a vacuum loss and a beam trip.

``Chamber.vacuum_lost`` and ``Beam.tripped`` are :class:`FaultSignal` s: True while the
microscope is not in the state the devices were last asked for (the chamber vented while it
should be pumped, a beam off while it should be on). A deliberate ``Chamber.set("vented")``
or ``beam.on.put(False)`` is no fault, nor is a chamber on its way to the state it was asked
for; a state restored by other means (the vendor's user interface, the simulator's
``clear_faults``) is expected from then on.

A backend reports nothing by itself, so :class:`FaultWatch` polls these signals on a thread
and runs their subscriptions when they change: bluesky suspenders subscribed to them
(``setup_session`` installs them) then suspend a running plan while a fault lasts.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ophyd import Signal

from ._signals import BackendSignal, find_backend

__all__ = ["FaultSignal", "FaultWatch", "WatchedSignal"]

_log = logging.getLogger(__name__)


class FaultSignal(Signal):
    """Read-only bool: the sibling signal ``source`` reads other than ``good`` although the
    devices expect ``good`` (see the module docstring).

    Parameters
    ----------
    source : str
        Attribute name of the watched sibling (a :class:`BackendSignal`).
    good : object
        Its healthy value ("pumped", True).
    """

    def __init__(self, *args, source: str, good: Any, **kwargs):
        super().__init__(*args, value=False, **kwargs)
        self._source_attr = source
        self._good = good
        self._expect_good: bool | None = None  # unknown until first read
        self._busy = 0  # requests in progress: a transition, not a fault
        self._lock = threading.Lock()
        self._reported: bool | None = None

    @property
    def source(self):
        return getattr(self.parent, self._source_attr)

    def request(self, value: Any) -> None:
        """A state change to ``value`` was requested and is under way."""
        with self._lock:
            self._expect_good = value == self._good
            self._busy += 1

    def request_done(self, ok: bool = True) -> None:
        """The requested change ended. If it failed, what is read next is expected."""
        with self._lock:
            self._busy = max(0, self._busy - 1)
            if not ok and self._busy == 0:
                self._expect_good = None  # re-learnt from the next read

    def get(self, **kwargs) -> bool:
        value = find_backend(self).get(self.source._key, self.source._beam)
        good = value == self._good
        with self._lock:
            if self._expect_good is None or (good and not self._busy):
                self._expect_good = good
            fault = bool(self._expect_good and not good and not self._busy)
        self._readback = fault
        self._metadata["timestamp"] = time.time()
        return fault

    def put(self, value, **kwargs):
        raise ValueError(f"{self.name} is read-only (it reports a fault of the microscope)")

    def poll(self) -> bool:
        """Read; run the subscriptions if the value changed since the last poll."""
        fault = self.get()
        old, self._reported = self._reported, fault
        if fault != old:
            self._run_subs(sub_type=self.SUB_VALUE, old_value=old, value=fault,
                           timestamp=self._metadata["timestamp"])
        return fault

    def describe(self):
        return {self.name: {"source": f"fault:{self.source.name}", "dtype": "boolean",
                            "shape": [], "dtype_numpy": "|b1"}}


class WatchedSignal(BackendSignal):
    """A :class:`BackendSignal` whose writes are requests the sibling :class:`FaultSignal`
    ``fault`` expects (so turning a beam off is not a trip)."""

    def __init__(self, *args, fault: str, **kwargs):
        self._fault_attr = fault
        super().__init__(*args, **kwargs)

    def put(self, value, **kwargs):
        fault = getattr(self.parent, self._fault_attr)
        fault.request(value)
        try:
            super().put(value, **kwargs)
        except Exception:
            fault.request_done(ok=False)
            raise
        fault.request_done()


class FaultWatch:
    """Polls :class:`FaultSignal` s every ``period`` seconds on a daemon thread.

    ``hold_failures`` (set by ``setup_session`` when it installs suspenders): a frame that
    fails while a fault is present is not reported as a failure at once; the detector waits
    up to ``grace`` s for the suspension that will take the frame again (see
    :meth:`fault_present`).

    Parameters
    ----------
    signals : list of FaultSignal
    period : float
        Seconds between polls (each poll is one backend read per signal).
    """

    def __init__(self, signals, period: float = 0.1, grace: float = 2.0):
        if not period > 0:
            raise ValueError(f"fault poll period must be > 0 s, got {period!r}")
        self.signals = list(signals)
        self.period = float(period)
        self.grace = float(grace)
        self.hold_failures = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def poll(self) -> list[str]:
        """Poll every signal now (subscribers see changes); the names of those at fault."""
        with self._lock:
            out = []
            for sig in self.signals:
                try:
                    if sig.poll():
                        out.append(sig.name)
                except Exception as exc:  # noqa: BLE001 -- a read error must not end the watch
                    _log.warning("fault watch: reading %s failed: %s", sig.name, exc)
            return out

    def fault_present(self) -> bool:
        """True if failures are held (suspenders installed) and a fault is present now
        (polled now, so the suspension is requested before the caller reports anything)."""
        return self.hold_failures and bool(self.poll())

    def start(self) -> None:
        if self._thread is not None:
            return
        self.poll()
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, daemon=True, name="fibsem-fault-watch")
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self.period):
            self.poll()

    def stop(self) -> None:
        """End the thread (waits for it)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
