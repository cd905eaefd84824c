"""The facility driver: plans go to a bluesky queue server, frames come from the Tiled server.

A poller thread asks the queue server for its state and the catalog for new frames a few
times a second and hands them to Qt's thread as signals; the window never waits on the
network. The worker's devices are not in this process: the saved stage positions and the
overview mosaic are what the stored runs say (:mod:`fibsem_ophyd.plans.stored_runs`), read
again whenever a run closes.
"""

from __future__ import annotations

import threading
import time

from ..qserver import close_manager
from ._driver import Call, Driver, Frame

__all__ = ["RemoteDriver"]

_STATES = {"idle": "idle", "paused": "paused"}


class RemoteDriver(Driver):
    """Drives a queue server (``bluesky_queueserver_api`` ``REManagerAPI``) and shows the
    frames the runs store in ``catalog`` (a Tiled client of the server the worker writes to).

    Parameters
    ----------
    manager : REManagerAPI or None
        Connected to the queue server (zmq); its environment is opened if it is closed.
        ``None``: watch the catalog only (frames as they land; no plans).
    catalog : tiled client
        The catalog the queue server's worker writes to.
    period : float
        Seconds between polls of the queue server and the catalog.
    """

    def __init__(self, manager, catalog, period: float = 0.1, parent=None):
        super().__init__(parent)
        self.manager = manager
        self.catalog = catalog
        self.period = float(period)
        self._seen: dict[tuple[str, str], int] = {}
        # runs stored before we started are not shown
        self._closed: set[str] = set(self._last_runs(20))
        self._pending: list[Call] = []
        self._submitted: list[str] = []
        self._stage: dict = {}
        #: the saved positions as the newest run that changed them recorded, and its uid
        self._positions: dict = {}
        self._positions_uid: str | None = None
        #: the uid of the overview (or site selection) run last shown
        self._overview_uid: str | None = None
        self._records_due = True  # read them at the first poll
        self._settings = {b: {"resolution": [1536, 1024], "hfw": 150e-6, "dwell_time": 1e-6}
                          for b in ("electron", "ion")}
        self._owned = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._poll_loop, daemon=True,
                                        name="fibsem-gui-poll")
        self._thread.start()

    @classmethod
    def connect(cls, zmq_address: str, tiled_uri: str, api_key: str | None = None):
        """From addresses: the queue server's control socket and the Tiled server."""
        from bluesky_queueserver_api.zmq import REManagerAPI

        from ..storage import open_remote_catalog

        if not tiled_uri:
            raise ValueError("a queue server needs the Tiled server it writes to (tiled_uri)")
        rm = REManagerAPI(zmq_control_addr=zmq_address)
        try:
            catalog = open_remote_catalog(tiled_uri, api_key=api_key)
        except BaseException:
            close_manager(rm)
            raise
        driver = cls(rm, catalog)
        driver._owned = True  # made here, so closed with the driver
        return driver

    # -- running ------------------------------------------------------------------------------
    def submit(self, calls: list[Call]) -> bool:
        from bluesky_queueserver_api import BPlan

        if self.manager is None:
            self.message.emit("watching the catalog only: no queue server to run plans")
            return False
        status = self.manager.status()
        if status["manager_state"] != "idle" or status["items_in_queue"]:
            self.message.emit(f"the queue server is {status['manager_state']} "
                              f"(refused: {', '.join(c.plan for c in calls)})")
            return False
        if not status["worker_environment_exists"]:
            self.manager.environment_open()
            self.manager.wait_for_idle(timeout=120)
        uids = []
        for c in calls:
            res = self.manager.item_add(BPlan(c.plan, *c.args, **c.kwargs))
            if not res.get("success", False):
                self.message.emit(f"{c.plan} refused by the queue server: {res.get('msg')}")
                return False
            uids.append(res["item"]["item_uid"])
        self._pending, self._submitted = list(calls), uids
        self.manager.queue_start()
        self._set_state("running")
        return True

    def pause(self) -> None:
        if self.manager is not None:
            self.manager.re_pause(option="immediate")

    def resume(self) -> None:
        if self.manager is not None:
            self.manager.re_resume()

    def abort(self) -> None:
        if self.manager is None:
            return
        if self.manager.status()["manager_state"] == "executing_queue":
            self.manager.re_pause(option="immediate")
            self.manager.wait_for_idle_or_paused(timeout=60)
        self.manager.re_abort()

    def set_pattern_offset(self, x: float, y: float) -> None:
        limit = self.pattern_offset_limit()
        if abs(x) > limit or abs(y) > limit:
            raise ValueError(f"pattern offset ({x * 1e6:.2f}, {y * 1e6:.2f}) um is beyond the "
                             f"milling device's limit +-{limit * 1e6:.1f} um")
        # the worker is paused: a background script sets the offset the plan then applies
        self._background_script(
            f"microscope.milling.pattern_offset_x.put({float(x)!r})\n"
            f"microscope.milling.pattern_offset_y.put({float(y)!r})\n", "the pattern offset")

    def correct_keypoints(self, corrections: dict) -> None:
        from ..detection import check_keypoint

        checked = [check_keypoint(n, *xy) for n, xy in corrections.items()]
        if checked:  # the worker is paused: a background script enters them, as IPython would
            self._background_script("".join(f"correct_keypoint({n!r}, {x!r}, {y!r})\n"
                                            for n, x, y in checked), "the keypoint corrections")

    def _background_script(self, script: str, what: str) -> None:
        """Run ``script`` in the worker's namespace while its plan is paused; raise if the
        queue server refuses it or it fails."""
        if self.manager is None:
            raise RuntimeError(f"watching the catalog only: no queue server to send {what} to")
        res = self.manager.script_upload(script, run_in_background=True)
        if not res.get("success", False):
            raise RuntimeError(f"the queue server refused {what}: {res.get('msg')}")
        self.manager.wait_for_completed_task(res["task_uid"], timeout=30)
        result = self.manager.task_result(res["task_uid"])["result"]
        if not result.get("success", False):
            raise RuntimeError(f"sending {what} failed: {result.get('msg')}")

    def paused_detection(self):
        """The newest run, if it is a supervised detection waiting for corrections (whoever
        submitted it)."""
        from ._keypoints import paused_detection

        if self.current_state != "paused":
            return None
        run = self._latest_run()
        return None if run is None else paused_detection(run)

    def checkpoint(self) -> dict:
        call = self._pending[0] if self._pending else None
        info = {"plan": call.plan if call else "", "stage_name": "", "milling_state": ""}
        if call is None or call.plan != "mill_stages" or not call.kwargs.get("supervised"):
            return info
        # a supervised milling pauses before each enabled stage: the next one is the first
        # whose "done" image the run has not stored yet
        stages = [s for s in call.kwargs.get("stages", []) if s.get("enabled", True)]
        done = 0
        run = self._latest_run()
        if run is not None and "ion" in run:
            try:
                states = run["ion"].read()["microscope_milling_state"].values
                done = int(sum(str(v) == "done" for v in states))
            except Exception:  # noqa: BLE001 -- nothing stored yet
                done = 0
        if done < len(stages):
            info.update(stage_name=str(stages[done].get("name", "")), milling_state="ready")
        return info

    # -- reading -------------------------------------------------------------------------------
    def image_settings(self, beam: str) -> dict:
        return dict(self._settings[beam])

    def stage_position(self) -> dict:
        """The stage position at the last frame shown (the worker's devices are not ours)."""
        if not self._stage:
            raise RuntimeError("no frame yet: the stage position comes with the frames")
        return dict(self._stage)

    def positions(self) -> dict:
        """The saved stage positions as the newest run that changed them stored them
        (``save_position``, ``import_experiment``; the catalog's, whoever ran them)."""
        return {name: dict(pos) for name, pos in self._positions.items()}

    def close(self) -> None:
        """Stop polling; a driver made by :meth:`connect` also closes the queue-server
        client and the catalog's connections it opened (given ones stay the caller's)."""
        self._stop.set()
        self._thread.join(5)
        if self._owned:
            self._owned = False
            if self.manager is not None:
                close_manager(self.manager)
            self.catalog.context.close()

    # -- polling (own thread) -------------------------------------------------------------------
    def _last_runs(self, n: int) -> list[str]:
        try:
            return list(self.catalog.keys().tail(n))
        except Exception:  # noqa: BLE001 -- the server may be briefly unreachable
            return []

    def _latest_run(self):
        keys = self._last_runs(1)
        return self.catalog[keys[-1]] if keys else None

    def _poll_loop(self) -> None:
        while not self._stop.wait(self.period):
            try:
                if self._poll_frames():
                    self._records_due = True
                if self._records_due:
                    self._poll_records()
                if self.manager is not None:
                    self._poll_state()
            except Exception as exc:  # noqa: BLE001 -- keep polling; tell the user once
                self.message.emit(f"remote: {exc}")
                self._stop.wait(1.0)

    def _poll_state(self) -> None:
        status = self.manager.status()
        state = _STATES.get(status["manager_state"], "running")
        if state == "idle" and (status["items_in_queue"] or status["running_item_uid"]):
            state = "running"
        if state == self.current_state:
            return
        if state == "idle" and self._submitted:
            self._report_history()
        self._set_state(state)

    def _report_history(self) -> None:
        items = {i.get("item_uid"): i for i in self.manager.history_get()["items"]}
        for call, uid in zip(self._pending, self._submitted, strict=False):
            item = items.get(uid)
            if item is None:
                continue
            result = item.get("result", {})
            runs = result.get("run_uids") or []
            error = None
            if result.get("exit_status") != "completed":
                error = RuntimeError(f"{call.plan}: {result.get('exit_status')} "
                                     f"{result.get('msg', '')}".strip())
                self.message.emit(str(error))
            self.finished.emit(call.plan, runs[-1] if runs else None, error)
        self._pending, self._submitted = [], []

    def _poll_records(self) -> None:
        """The saved positions and the overview, from the newest runs that closed with
        success (two searches; a run is read only when it is not the one shown)."""
        from ..plans.stored_runs import (
            newest_run,
            overview_of,
            overview_query,
            positions_of,
            positions_query,
        )

        uid, run = newest_run(self.catalog, positions_query())
        if uid is not None and uid != self._positions_uid:
            self._positions = positions_of(run)
            self._positions_uid = uid
            self.positions_changed.emit(self.positions())
        uid, run = newest_run(self.catalog, overview_query())
        if uid is not None and uid != self._overview_uid:
            overview = overview_of(self.catalog, run)
            self._overview_uid = uid
            self.overview.emit(overview)
        self._records_due = False

    def _poll_frames(self) -> bool:
        """Show the new frames; ``True`` if a run closed since the last poll."""
        from ..storage import image_keys, load_images

        ended = False
        # one request per poll while nothing happens: the newest run keys; a run is read
        # only while it is new or still open, and never again once closed and shown
        for uid in self._last_runs(3):
            if uid in self._closed:
                continue
            run = self.catalog[uid]
            closed = bool(run.metadata.get("stop"))
            for stream in [s for s in ("primary", "electron", "ion") if s in set(run)]:
                try:
                    keys = image_keys(run, stream)
                    if not keys:
                        continue
                    times = run[stream].read(variables=["time"])["time"].values
                except Exception:  # noqa: BLE001 -- the stream is still being created
                    closed = False
                    continue
                key = (uid, stream)
                if self._seen.get(key, 0) >= len(times):
                    continue
                try:
                    images = load_images(run, stream, key=keys[0])  # no second key lookup
                except Exception:  # noqa: BLE001 -- the files are still being registered
                    closed = False
                    continue
                if not images:
                    continue
                self._seen[key] = len(images)
                closed = closed and len(images) >= len(times)
                # the event's time: when the RunEngine read the detector, right after the frame
                self._show(images[-1], uid, float(times[len(images) - 1]))
            if closed:
                self._closed.add(uid)
                ended = True
        return ended

    def _show(self, image, uid: str, acquired: float) -> None:
        beam = image.beam
        self._stage = dict(image.stage_position)
        h, w = image.shape
        self._settings[beam] = {**self._settings[beam], "resolution": [w, h],
                                "hfw": float(image.hfw)}
        self.frame.emit(Frame(beam, image.data, float(image.pixel_size), (0.0, 0.0),
                              acquired, uid))

    def wait(self, timeout: float = 60.0) -> None:
        """Block until the queue is idle (tests, scripts)."""
        deadline = time.monotonic() + timeout
        while self.current_state != "idle" or self._submitted:
            if time.monotonic() > deadline:
                raise TimeoutError(f"the queue server still runs after {timeout} s")
            time.sleep(0.05)
