"""The queue server runs the profile collection's plans; user groups are enforced."""

from __future__ import annotations

import pytest
from bluesky_queueserver_api import BPlan

from fibsem_ophyd.storage import load_images, open_catalog

from .conftest import delete_redis_keys


def test_queue_take_reference_images(queue_server):
    RM = queue_server.open_environment(user_group="primary", user="test-primary")
    status = RM.status(reload=True)
    assert status["worker_environment_exists"], queue_server.log.read_text()[-3000:]

    allowed = RM.plans_allowed()["plans_allowed"]
    assert "take_reference_images" in allowed and "stable_move" in allowed

    RM.item_add(BPlan("take_reference_images", "microscope", hfw=120e-6,
                      resolution=[384, 256], md={"sample": "qs-L1"}))
    RM.item_add(BPlan("stable_move", "microscope", dx=2e-6, dy=0.0))
    box = {"name": "qs-box",
           "milling": {"milling_current": 1e-9, "hfw": 80e-6, "material": "ice"},
           "pattern": {"name": "Rectangle", "width": 4e-6, "height": 2e-6, "depth": 0.5e-6}}
    RM.item_add(BPlan("mill_stages", "microscope", stages=[box], md={"lamella": "qs-L1"}))
    # a reference for a later item: the detector keeps it; later items name it or its run
    RM.item_add(BPlan("acquire_reference", "sem"))
    RM.item_add(BPlan("stable_move", "microscope", dx=1e-6, dy=0.0))
    RM.item_add(BPlan("align_beam_shift", "sem"))
    RM.queue_start()
    RM.wait_for_idle(timeout=180)

    history = RM.history_get()["items"]
    assert [h["name"] for h in history] == ["take_reference_images", "stable_move",
                                            "mill_stages", "acquire_reference", "stable_move",
                                            "align_beam_shift"]
    for item in history:
        assert item["result"]["exit_status"] == "completed", item["result"]
    run_uids = history[0]["result"]["run_uids"]
    assert len(run_uids) == 1
    (mill_uid,) = history[2]["result"]["run_uids"]
    (ref_uid,) = history[3]["result"]["run_uids"]
    (align1_uid,) = history[5]["result"]["run_uids"]
    # the reference by the uid of its run, after another view change
    RM.item_add(BPlan("stable_move", "microscope", dx=0.0, dy=-1.5e-6))
    RM.item_add(BPlan("align_beam_shift", "sem", reference=ref_uid, max_iterations=4))
    RM.queue_start()
    RM.wait_for_idle(timeout=120)
    history = RM.history_get()["items"]
    assert history[-1]["result"]["exit_status"] == "completed", history[-1]["result"]
    (align2_uid,) = history[-1]["result"]["run_uids"]

    # a user of the restricted group: imaging yes, movement and milling no
    RM.user_group = "observers"
    RM.user = "test-observer"
    with pytest.raises(RM.RequestFailedError, match="stable_move"):
        RM.item_add(BPlan("stable_move", "microscope", dx=1e-6, dy=0.0))
    with pytest.raises(RM.RequestFailedError, match="safe_absolute_move"):
        RM.item_add(BPlan("safe_absolute_move", "microscope", {"x": 0.0}))
    with pytest.raises(RM.RequestFailedError, match="mill_stages"):
        RM.item_add(BPlan("mill_stages", "microscope", stages=[box]))
    RM.item_add(BPlan("take_reference_images", "microscope", hfw=80e-6))
    # a bad parameter is refused before it reaches the queue
    with pytest.raises(RM.RequestFailedError):
        RM.item_add(BPlan("take_reference_images", "microscope", hfw="wide"))
    RM.queue_start()
    RM.wait_for_idle(timeout=120)
    history = RM.history_get()["items"]
    assert len(history) == 9 and history[-1]["result"]["exit_status"] == "completed"
    run_uids += history[-1]["result"]["run_uids"]

    # the worker holds the embedded catalog: close the environment before reading it here
    RM.environment_close()
    RM.wait_for_idle(timeout=60)

    catalog = open_catalog(queue_server.data_dir)
    assert sorted(catalog) == sorted([*run_uids, mill_uid, ref_uid, align1_uid, align2_uid])
    # each alignment measured the view change made before it and converged
    for uid, (dx, dy) in ((align1_uid, (1e-6, 0.0)), (align2_uid, (0.0, -1.5e-6))):
        al = catalog[uid]["alignment"].read()
        assert float(al["alignment_dx"][0]) == pytest.approx(dx, abs=0.1e-6)
        assert float(al["alignment_dy"][0]) == pytest.approx(dy, abs=0.1e-6)
        assert abs(float(al["alignment_dx"][-1])) < 0.1e-6
        assert abs(float(al["alignment_dy"][-1])) < 0.1e-6
    milled = catalog[mill_uid]
    assert milled.start["lamella"] == "qs-L1" and milled.stop["exit_status"] == "success"
    before, after = load_images(milled, "ion")
    assert before.data.shape == after.data.shape
    times = milled["ion"].read()["microscope_milling_milling_time"]
    # 4 x 2 x 0.5 um^3 of ice at 1 nA and 3 um^3/nC: 1.33 s of beam time
    assert float(times[1]) == pytest.approx(4 * 2 * 0.5 / 3.0, rel=0.05)
    run = catalog[run_uids[0]]
    assert run.start["sample"] == "qs-L1"
    assert run.stop["exit_status"] == "success"
    (sem,) = load_images(run, "electron")
    (fib,) = load_images(run, "ion")
    assert sem.data.shape == fib.data.shape == (256, 384)
    assert sem.pixel_size == pytest.approx(120e-6 / 384)
    (sem2,) = load_images(catalog[run_uids[1]], "electron")
    assert sem2.pixel_size == pytest.approx(80e-6 / 384)
    # the stable move happened between the two runs
    assert sem2.stage_position["x"] != pytest.approx(sem.stage_position["x"], abs=1e-9)


def test_queue_deposition_and_needle(queue_server):
    """Deposition and manipulator plans through the queue: their parameters (an OpenFIBSEM
    GIS protocol dict, a beam name) pass the queue's validation, the runs are stored, and
    observers may neither deposit nor move the needle."""
    RM = queue_server.open_environment(user_group="primary", user="test-primary")
    protocol = {"gas": "Pt cryo", "position": "cryo", "time": 10.0, "beam_current": 1e-8}
    RM.item_add(BPlan("sputter_coat", "microscope", time=5.0, images=False,
                      md={"sample": "qs-coat"}))
    RM.item_add(BPlan("cryo_deposition", "microscope", protocol=protocol, images=False,
                      md={"sample": "qs-coat"}))
    RM.item_add(BPlan("insert_manipulator", "microscope", name="PARK"))
    RM.item_add(BPlan("move_manipulator_corrected", "microscope", dy=-5e-6, beam="ion"))
    RM.item_add(BPlan("retract_manipulator", "microscope"))
    RM.queue_start()
    RM.wait_for_idle(timeout=120)
    history = RM.history_get()["items"]
    assert [h["result"]["exit_status"] for h in history] == ["completed"] * 5, history
    coat_uids = [u for h in history[:2] for u in h["result"]["run_uids"]]

    RM.user_group = "observers"
    RM.user = "test-observer"
    for name, kwargs in (("cryo_deposition", {"time": 5.0}), ("insert_manipulator", {}),
                         ("move_manipulator_corrected", {"dy": 1e-6})):
        with pytest.raises(RM.RequestFailedError, match=name):
            RM.item_add(BPlan(name, "microscope", **kwargs))

    RM.environment_close()
    RM.wait_for_idle(timeout=60)
    catalog = open_catalog(queue_server.data_dir)
    sputter, cryo = (catalog[u] for u in coat_uids)
    assert sputter.start["plan_name"] == "sputter_coat"
    assert cryo.start["deposition_time"] == 10.0
    assert cryo.start["protocol_not_used"] == {"beam_current": 1e-8}
    dep = cryo["deposition"].read()
    assert list(dep["microscope_gis_insert_position"].values) == ["cryo"]


def test_redis_cleanup_is_scoped(redis_available):
    import redis

    r = redis.Redis(host="127.0.0.1", port=6379)
    try:
        r.set("fibsem_ophyd_keep_me", b"1")
        r.set("fibsem_ophyd_scoped_x1", b"1")
        assert delete_redis_keys("fibsem_ophyd_scoped_*") == 1
        assert r.get("fibsem_ophyd_keep_me") == b"1"
    finally:
        r.delete("fibsem_ophyd_keep_me", "fibsem_ophyd_scoped_x1")
        r.close()
