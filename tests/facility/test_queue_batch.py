"""The overnight batch through the queue server, with drift and shot noise on: an overview,
two sites picked and brought to the coincidence point, the grid coated, two lamellae milled;
every decision in the stored documents."""

from __future__ import annotations

import json
import math

import pytest
from bluesky_queueserver_api import BPlan

from fibsem_ophyd.plans.stored_runs import batch_coating, batch_state, saved_positions
from fibsem_ophyd.storage import open_catalog

from ..plans.test_batch import PROTOCOL as ICE_PROTOCOL

DRIFT_CONFIG = """\
electron:
  resolution: [384, 256]
ion:
  resolution: [384, 256]
sim:
  drift: {velocity: [2.0e-9, 2.0e-9, 1.0e-9], settle_amplitude: 0.0}
"""

#: the batch test's protocol in silicon units: the dose goes through the coat
PROTOCOL = json.loads(json.dumps(ICE_PROTOCOL).replace('"ice"', '"Si"'))


@pytest.fixture
def small_config(tmp_path):
    """The queue server's microscope configuration here: small frames, drift on."""
    path = tmp_path / "microscope.yaml"
    path.write_text(DRIFT_CONFIG)
    return path


def test_overnight_batch_through_the_queue(queue_server):
    qs = queue_server
    RM = qs.open_environment(user_group="primary", user="test-night")
    RM.item_add(BPlan("select_sites", "microscope", n_sites=2, prefix="L", md={"batch": "qs"}))
    RM.item_add(BPlan("mill_lamellae", "microscope", ["L1", "L2"], PROTOCOL, batch="qs-night",
                      milling_angle=15.0, coating={"sputter_time": 10.0, "gis_time": 5.0}))
    RM.queue_start()
    RM.wait_for_idle(timeout=300)
    history = RM.history_get()["items"]
    assert [h["result"]["exit_status"] for h in history] == ["completed"] * 2, \
        history[-1]["result"]
    select_uids = history[0]["result"]["run_uids"]
    batch_uids = history[-1]["result"]["run_uids"]
    RM.environment_close()
    RM.wait_for_idle(timeout=60)

    catalog = open_catalog(qs.data_dir)
    # the site choice: an overview, the decision run, per site a coincidence run and the
    # run that records the site saved as a position
    plans = [catalog[u].start["plan_name"] for u in select_uids]
    assert plans == ["acquire_overview", "select_sites", "find_coincidence", "save_position",
                     "find_coincidence", "save_position"]
    assert sorted(saved_positions(catalog)) == ["L1", "L2"]
    squares = catalog[select_uids[1]]["square"].read()
    assert sorted(n for n in squares["square_site"].values if n) == ["L1", "L2"]
    assert batch_coating(catalog, "qs-night") == ["cryo", "sputter"]
    state = batch_state(catalog, "qs-night")
    for site in ("L1", "L2"):
        assert state[site]["done"] == ["mill_rough", "mill_polishing"], state[site]
        assert state[site]["skipped"] is None
        # the measurement is recorded (NaN when the ion frame shows no lamella contrast, as
        # under a coat it can: README, bench_overnight.py)
        assert isinstance(state[site]["thickness"], float)
    # every decision is in the documents: the drift each site's correction measured, the
    # alignment at each milling current, in the runs of this batch, in order
    starts = [catalog[u].start for u in batch_uids]
    plans = [s["plan_name"] for s in starts]
    assert plans[:2] == ["sputter_coat", "cryo_deposition"]
    assert plans.count("mill_stages") == 4 and plans[-1] == "mill_lamellae"
    # correct_drift at each site's second visit
    drift_runs = [catalog[u] for u, s in zip(batch_uids, starts, strict=True)
                  if s["plan_name"] == "correct_drift"]
    assert [r.start["lamella"] for r in drift_runs] == ["L1", "L2"]
    for run in drift_runs:
        shifts = run["alignment"].read()
        first = math.hypot(float(shifts["alignment_dx"][0]), float(shifts["alignment_dy"][0]))
        last = math.hypot(float(shifts["alignment_dx"][-1]), float(shifts["alignment_dy"][-1]))
        # the drift it found, and the last offset it measured (before its last move)
        assert first > 0.5e-6 and last < 0.2 * first
    summary = catalog[batch_uids[-1]]
    assert list(summary["site"].read()["site_status"].values) == ["done", "done"]
    # the summary replays through any callback
    names = [name for name, _ in summary.documents()]
    assert names[0] == "start" and names[-1] == "stop" and "event" in names
    assert json.dumps(summary.start["coating"])  # the request is stored as given
