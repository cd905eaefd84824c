"""An AutoLamella experiment imported into a lamella batch: its positions saved, its finished
sections not milled again, its failed lamella left out; the batch exported back."""

import pytest

from fibsem_ophyd.milling import read_experiment, write_experiment
from fibsem_ophyd.plans import import_experiment, mill_lamellae, move_to_milling_angle

from .._catalog import count_runs
from .test_batch import PROTOCOL


def test_experiment_imports_into_a_batch_and_exports_back(session, microscope, tmp_path):
    RE, scope = session.RE, microscope
    scope.fib.hfw.set(80e-6).wait()
    RE(move_to_milling_angle(scope, 15.0))
    here = {k: float(getattr(scope.stage, k).position) for k in "xyzrt"}
    # three lamellae as AutoLamella left them: A rough-milled, B untouched, C failed
    positions = {name: {**here, "x": here["x"] + dx}
                 for name, dx in (("A", 0.0), ("B", 120e-6), ("C", -120e-6))}
    exp = write_experiment(tmp_path / "grid", {
        "batch": "grid", "sites": ["A", "B", "C"],
        "done": {"A": ["mill_rough"], "B": [], "C": []},
        "skipped": {"C": {"section": "", "reason": "AutoLamella defect: cracked"}}}, positions)

    batch = RE(import_experiment(scope, exp)).plan_result
    saved = scope.stage.positions.get()
    for name in "ABC":
        assert saved[name] == pytest.approx(positions[name], abs=1e-12)
    assert batch["done"] == {"A": ["mill_rough"], "B": [], "C": []}

    n_runs = count_runs(session.catalog)
    res = RE(mill_lamellae(scope, batch["sites"], PROTOCOL, batch=batch["name"],
                           imported=batch)).plan_result
    new = [session.catalog[u].metadata["start"] for u in list(session.catalog)[n_runs:]]
    mills = [(s["lamella"], s["section"]) for s in new if s["plan_name"] == "mill_stages"]
    # A's rough milling is not repeated; C is never visited
    assert mills == [("B", "mill_rough"), ("A", "mill_polishing"), ("B", "mill_polishing")]
    assert res["done"] == {"A": ["mill_rough", "mill_polishing"],
                           "B": ["mill_rough", "mill_polishing"], "C": []}
    assert set(res["skipped"]) == {"C"}

    out = write_experiment(tmp_path / "after", {**res, "sites": batch["sites"]},
                           scope.stage.positions.get())
    back = read_experiment(out)
    assert back["done"] == res["done"] and set(back["skipped"]) == {"C"}
    assert back["positions"]["B"] == pytest.approx(positions["B"], abs=1e-12)

    with pytest.raises(ValueError, match="imported must be what import_experiment returns"):
        RE(mill_lamellae(scope, ["A"], PROTOCOL, batch="x", imported={"done": ["A"]}))
