"""The batch's summary rebuilt from its stored documents alone, through a callback."""

import copy
import json

import pytest

from fibsem_ophyd.plans import mill_lamellae, move_to_milling_angle, save_position, stable_move
from fibsem_ophyd.plans.stored_runs import BatchSummary, replay_batch

from .test_batch import PROTOCOL


def test_batch_summary_replays_from_the_stored_documents(session, microscope):
    RE, sim, scope = session.RE, session.backend, microscope
    scope.fib.hfw.set(80e-6).wait()
    RE(move_to_milling_angle(scope, 15.0))
    RE(save_position(scope, "A"))
    RE(stable_move(scope, 120e-6, 0.0, "ion"))
    RE(save_position(scope, "B"))
    intended = {}
    live = BatchSummary("replay")

    def lose_b(name, doc):
        if name == "start" and doc.get("role") == "reference":
            intended[doc["lamella"]] = sim.truth.surface_point("ion")
        if name == "start" and (doc.get("plan_name"), doc.get("lamella"),
                                doc.get("section")) == ("mill_stages", "B", "mill_rough"):
            pos = copy.deepcopy(scope.stage.positions.get()["B"])
            pos["x"] += 40e-6  # the stage loses site B: its polish revisit finds no match
            scope.stage.positions.put({"B": pos})

    RE.subscribe(lose_b)
    RE.subscribe(live)
    res = RE(mill_lamellae(scope, ["A", "B"], PROTOCOL, batch="replay")).plan_result
    sites = res["sites"]

    # what the batch did, as it returned it
    assert sites["A"]["status"] == "done" and sites["B"]["status"] == "skipped"
    assert "AlignmentError" in sites["B"]["skipped"]["reason"]
    assert sites["B"]["skipped"]["section"] == "mill_polishing"
    # the refused drift correction is in the record, with the score that refused it
    refused = [a for a in sites["B"]["alignments"] if a["action"] == "refused"]
    assert refused and refused[-1]["section"] == "mill_polishing"
    # A: an alignment at each milling current, a drift correction at the polish revisit
    kinds = {(a["section"], a["kind"]) for a in sites["A"]["alignments"]}
    assert kinds == {("mill_rough", "milling"), ("mill_polishing", "drift"),
                     ("mill_polishing", "milling")}
    assert set(sites["A"]["milling_time"]) == {"mill_rough", "mill_polishing"}
    assert all(t > 0 for t in sites["A"]["milling_time"].values())
    # the measurement the batch records agrees with the ground truth (30 nm)
    truth = sim.truth.lamella(intended["A"], depth=0.75e-6)["thickness"]
    assert sites["A"]["thickness"] == pytest.approx(truth, abs=30e-9)
    assert sites["A"]["thickness_reason"] == ""
    assert [m["section"] for m in sites["A"]["measurements"]] == ["mill_rough",
                                                                  "mill_polishing"]

    # the same summary from the stored documents alone, and from the live documents
    stored = replay_batch(session.catalog, "replay")
    assert json.dumps(stored, sort_keys=True) == json.dumps(sites, sort_keys=True)
    assert json.dumps(live.summary(), sort_keys=True) == json.dumps(sites, sort_keys=True)
