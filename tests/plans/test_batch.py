"""The lamella batch: sections across sites, an interruption resumed from the stored
documents, a lost site skipped and reported, every lamella at its target thickness."""

import copy

import pytest

from fibsem_ophyd.plans import mill_lamellae, move_to_milling_angle, save_position, stable_move
from fibsem_ophyd.plans.stored_runs import batch_state

from .._catalog import count_runs

ICE = {"milling_current": 2e-10, "hfw": 80e-6, "material": "ice"}
PROTOCOL = {"milling": {
    "mill_rough": [{
        "name": "rough", "milling": {**ICE, "milling_current": 7.4e-10},
        "pattern": {"name": "Trench", "width": 8e-6, "upper_trench_height": 3e-6,
                    "lower_trench_height": 3e-6, "spacing": 2e-6, "depth": 1.5e-6}}],
    "mill_polishing": [{
        "name": "polish", "milling": {**ICE, "milling_current": 6e-11},
        "pattern": {"name": "Trench", "width": 7e-6, "upper_trench_height": 0.7e-6,
                    "lower_trench_height": 0.7e-6, "spacing": 0.5e-6, "depth": 1.5e-6}}],
}}


class Interrupt(RuntimeError):
    pass


def test_batch_resumes_skips_a_lost_site_and_leaves_target_lamellae(session, microscope):
    RE, sim, scope = session.RE, session.backend, microscope
    scope.fib.hfw.set(80e-6).wait()
    RE(move_to_milling_angle(scope, 15.0))
    for k, site in enumerate(("A", "B", "C")):
        if k:
            RE(stable_move(scope, 120e-6, 0.0, "ion"))
        RE(save_position(scope, site))
    intended = {}

    def trouble(name, doc):
        if name == "start" and doc.get("role") == "reference":
            # where the lamella should go: the view of the site's reference (ground truth)
            intended[doc["lamella"]] = sim.truth.surface_point("ion")
        if name != "start" or doc.get("plan_name") != "mill_stages":
            return
        if (doc["lamella"], doc["section"]) == ("C", "mill_rough"):
            # the stage loses site C: its saved position is now 40 um off
            pos = copy.deepcopy(scope.stage.positions.get()["C"])
            pos["x"] += 40e-6
            scope.stage.positions.put({"C": pos})
        if (doc["lamella"], doc["section"]) == ("B", "mill_polishing"):
            raise Interrupt("the batch is stopped (power cut, crash, an operator)")

    token = RE.subscribe(trouble)
    with pytest.raises(Interrupt):
        RE(mill_lamellae(scope, ["A", "B", "C"], PROTOCOL, batch="night-1"))
    RE.unsubscribe(token)

    # what the documents say: A finished, B and C rough only, nobody skipped yet
    state = batch_state(session.catalog, "night-1")
    assert state["A"]["done"] == ["mill_rough", "mill_polishing"]
    assert state["B"]["done"] == state["C"]["done"] == ["mill_rough"]
    assert all(state[s]["reference"] and state[s]["skipped"] is None for s in "ABC")
    n_runs = count_runs(session.catalog)

    res = RE(mill_lamellae(scope, ["A", "B", "C"], PROTOCOL, batch="night-1",
                           resume=True)).plan_result
    assert res["done"] == {"A": ["mill_rough", "mill_polishing"],
                           "B": ["mill_rough", "mill_polishing"], "C": ["mill_rough"]}
    assert set(res["skipped"]) == {"C"} and res["skipped"]["C"]["section"] == "mill_polishing"
    assert "AlignmentError" in res["skipped"]["C"]["reason"]
    # only what was missing ran: B polish (drift run + mill run), C's refused drift run,
    # its skip record and the summary
    new = [session.catalog[u].metadata["start"] for u in list(session.catalog)[n_runs:]]
    mills = [(s["lamella"], s["section"]) for s in new if s["plan_name"] == "mill_stages"]
    assert mills == [("B", "mill_polishing")]
    state = batch_state(session.catalog, "night-1")
    assert state["C"]["skipped"]["section"] == "mill_polishing"
    assert set(state) == {"A", "B", "C"}
    summary = session.catalog[res["summary"]]["site"].read()
    assert list(summary["site_status"].values) == ["done", "done", "skipped"]

    # ground truth: the finished lamellae are 500 nm thick (+-20) where the sites pointed,
    # and the thickness measured on the ion image agrees with it within 50 nm (2.5 px)
    for site in "AB":
        slab = sim.truth.lamella(intended[site], depth=0.75e-6)
        assert slab["bounded"] and slab["thickness"] == pytest.approx(500e-9, abs=20e-9), site
        assert abs(slab["centre_offset"]) < 25e-9, site
        assert res["thickness"][site] == pytest.approx(slab["thickness"], abs=50e-9), site
        assert state[site]["thickness"] == pytest.approx(res["thickness"][site]), site
    assert float(summary["site_thickness"][0]) == pytest.approx(res["thickness"]["A"])
    # C was measured after its rough trench only: far thicker (the measurement is made for
    # thin lamellae; on a 2 um rough gap it over-reads, the trench walls show at this angle)
    assert res["thickness"]["C"] > 1.5e-6
    # C kept its rough trench: 2 um wide, not thinned
    assert sim.truth.lamella(intended["C"], depth=0.75e-6)["thickness"] > 1.5e-6


def test_batch_bad_input_moves_nothing(session, microscope):
    x0 = microscope.stage.x.position
    with pytest.raises(ValueError, match="unknown site position"):
        session.RE(mill_lamellae(microscope, ["nowhere"], PROTOCOL))
    with pytest.raises(ValueError, match="non-empty list"):
        session.RE(mill_lamellae(microscope, [], PROTOCOL))
    bad = copy.deepcopy(PROTOCOL)
    bad["milling"]["mill_rough"][0]["pattern"]["depth"] = -1.0
    assert count_runs(session.catalog) == 0
    session.RE(save_position(microscope, "A"))  # the one run: the saved position recorded
    assert count_runs(session.catalog) == 1
    with pytest.raises(ValueError, match="depth"):
        session.RE(mill_lamellae(microscope, ["A"], bad))
    assert microscope.stage.x.position == x0
    assert count_runs(session.catalog) == 1


def test_batch_coats_the_grid_once_before_the_references(session, microscope):
    """The coats run first (sputter, then cryo GIS), each a run of the batch with ``section:
    "coating"``; the sites' references are taken on the coated sample; a resumed batch
    reads the coats back and does not coat again."""
    import json

    from fibsem_ophyd.plans.stored_runs import batch_coating

    RE, sim, scope = session.RE, session.backend, microscope
    protocol = json.loads(json.dumps(PROTOCOL).replace('"ice"', '"Si"'))  # dose for the coat
    scope.fib.hfw.set(80e-6).wait()
    RE(move_to_milling_angle(scope, 15.0))
    RE(save_position(scope, "A"))
    site = sim.truth.surface_point("ion")
    coating = {"sputter_time": 10.0, "gis_time": 5.0}
    res = RE(mill_lamellae(scope, ["A"], protocol, batch="coated",
                           coating=coating)).plan_result
    assert res["done"] == {"A": ["mill_rough", "mill_polishing"]}
    runs = [session.catalog[u].metadata["start"] for u in session.catalog]
    order = [(s["plan_name"], s.get("section"), s.get("role")) for s in runs
             if s.get("batch") == "coated"]
    assert order[:3] == [("sputter_coat", "coating", None), ("cryo_deposition", "coating", None),
                         ("acquire_reference", "mill_rough", "reference")]
    assert batch_coating(session.catalog, "coated") == ["cryo", "sputter"]
    assert [k for k, _ in sim.gis.history] == ["sputter", "gis"]
    # resumed: nothing left to coat (nor to mill)
    res = RE(mill_lamellae(scope, ["A"], protocol, batch="coated", coating=coating,
                           resume=True)).plan_result
    assert [k for k, _ in sim.gis.history] == ["sputter", "gis"]
    assert res["done"] == {"A": ["mill_rough", "mill_polishing"]}
    # the lamella under the coat has the polish spacing (ground truth)
    slab = sim.truth.lamella(site, depth=0.75e-6)
    assert slab["bounded"] and slab["thickness"] == pytest.approx(0.5e-6, abs=30e-9)


@pytest.mark.parametrize("coating, match", [
    ({"gis_time": -1.0}, "coating gis_time must be a time"),
    ({"sputter_time": 5.0, "sputter_current": 1.0}, "outside its limits"),
    ({"gas": "Pt cryo"}, "needs sputter_time and/or gis_time"),
    ({"gis_time": 5.0, "insert_position": "retracted"}, "where the GIS needle goes in"),
    ({"gis_time": 5.0, "position": "nowhere"}, "unknown coating position 'nowhere'"),
    ({"gis_time": 5.0, "colour": "gold"}, "unknown coating key"),
])
def test_batch_bad_coating_moves_nothing(session, microscope, coating, match):
    RE, sim = session.RE, session.backend
    RE(save_position(microscope, "A"))
    t0, n_runs = sim.time(), count_runs(session.catalog)
    with pytest.raises(ValueError, match=match):
        RE(mill_lamellae(microscope, ["A"], PROTOCOL, batch="bad", coating=coating))
    assert sim.time() == t0 and count_runs(session.catalog) == n_runs and not sim.scene.patches
