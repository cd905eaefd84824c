"""Supervised milling under the queue server: the plan pauses before milling, the manager
reports it paused, `re resume` finishes it, and the stored run shows both stages' images."""

from __future__ import annotations

import time

import pytest
from bluesky_queueserver_api import BPlan

from fibsem_ophyd.storage import open_catalog


def test_supervised_mill_pauses_and_resumes(queue_server):
    RM = queue_server.open_environment(user_group="primary", user="test-primary")
    box = {"name": "box", "milling": {"milling_current": 1e-9, "hfw": 80e-6, "material": "ice"},
           "pattern": {"name": "Rectangle", "width": 3e-6, "height": 2e-6, "depth": 0.3e-6}}
    RM.item_add(BPlan("mill_stages", "microscope", stages=[box], supervised=True,
                      md={"lamella": "sup-1"}))
    RM.queue_start()
    deadline = time.monotonic() + 120
    while RM.status(reload=True)["manager_state"] != "paused":
        assert time.monotonic() < deadline, queue_server.log.read_text()[-3000:]
        assert RM.status()["manager_state"] in ("starting_queue", "executing_queue", "paused")
        time.sleep(0.2)
    # paused before milling: nothing milled yet, the item is still running
    assert RM.status()["running_item_uid"] is not None
    RM.re_resume()
    RM.wait_for_idle(timeout=120)
    (item,) = RM.history_get()["items"]
    assert item["result"]["exit_status"] == "completed", item["result"]
    (uid,) = item["result"]["run_uids"]
    RM.environment_close()
    RM.wait_for_idle(timeout=60)

    run = open_catalog(queue_server.data_dir)[uid]
    assert run.stop["exit_status"] == "success"
    ion = run["ion"].read()
    assert list(ion["microscope_milling_state"].values) == ["ready", "done"]
    # 3 x 2 x 0.3 um^3 of ice at 1 nA and 3 um^3/nC: 0.6 s of beam time
    assert float(ion["microscope_milling_milling_time"][1]) == pytest.approx(0.6, rel=0.05)
    assert float(ion["microscope_milling_pattern_offset_x"][1]) == 0.0
