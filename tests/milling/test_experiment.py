"""AutoLamella's experiment.yaml, written and read by OpenFIBSEM's own Experiment, read into a
lamella batch and written back so that OpenFIBSEM reads it."""

import math
import shutil
from pathlib import Path

import pytest
import yaml

from fibsem_ophyd.milling import read_experiment, task_sections, write_experiment

structures = pytest.importorskip("fibsem.applications.autolamella.structures")
fs = pytest.importorskip("fibsem.structures")

TASK_PROTOCOL = Path(fs.__file__).parent / "applications" / "autolamella" / "protocol" / \
    "task-protocol.yaml"
Completed = structures.AutoLamellaTaskStatus.Completed


def _openfibsem_experiment(tmp_path):
    """Two lamellae as AutoLamella saves them: one through rough milling, one failed."""
    exp = structures.Experiment(path=tmp_path, name="grid-7")
    Path(exp.path).mkdir(parents=True)  # AutoLamella makes the folder when it creates one
    for number, (name, x, done, failed) in enumerate(
            [("Lamella-A", 1.5e-4, ["Mill Fiducial", "Rough Milling"], False),
             ("Lamella-B", -2.0e-4, ["Mill Fiducial"], True)], start=1):
        lam = structures.Lamella(path=Path(exp.path) / name, number=number, petname=name)
        lam.poses["MILLING"] = fs.MicroscopeState(stage_position=fs.FibsemStagePosition(
            x=x, y=3e-5, z=4.1e-3, r=math.radians(49.0), t=math.radians(12.0),
            coordinate_system="RAW"))
        lam.task_history = [structures.AutoLamellaTaskState(name=t, status=Completed)
                            for t in done]
        lam.milling_angle = 15.0
        if failed:
            lam.defect = structures.DefectState(state=structures.DefectType.FAILURE,
                                                description="cracked")
        exp.positions.append(lam)
    exp.save()
    shutil.copy(TASK_PROTOCOL, Path(exp.path) / "protocol.yaml")
    return Path(exp.path)


def test_experiment_reads_as_a_batch_and_writes_back_for_openfibsem(tmp_path):
    folder = _openfibsem_experiment(tmp_path)
    assert task_sections(folder / "protocol.yaml") == {
        "Setup Lamella Position": [], "Mill Fiducial": ["fiducial"],
        "Rough Milling": ["mill_rough"], "Polishing": ["mill_polishing"]}
    batch = read_experiment(folder)
    assert batch["name"] == "grid-7" and batch["sites"] == ["Lamella-A", "Lamella-B"]
    # OpenFIBSEM's radians are our degrees
    assert batch["positions"]["Lamella-A"] == pytest.approx(
        {"x": 1.5e-4, "y": 3e-5, "z": 4.1e-3, "r": 49.0, "t": 12.0}, rel=1e-12)
    assert batch["done"] == {"Lamella-A": ["fiducial", "mill_rough"],
                             "Lamella-B": ["fiducial"]}
    assert batch["skipped"] == {"Lamella-B": {"section": "",
                                              "reason": "AutoLamella defect: cracked"}}
    assert batch["milling_angle"] == {"Lamella-A": 15.0, "Lamella-B": 15.0}

    # a batch result (as mill_lamellae returns it) written back: A polished now
    result = {"batch": "grid-7", "sections": ["fiducial", "mill_rough", "mill_polishing"],
              "done": {"Lamella-A": ["fiducial", "mill_rough", "mill_polishing"],
                       "Lamella-B": ["fiducial"]},
              "skipped": {"Lamella-B": batch["skipped"]["Lamella-B"]}}
    out = write_experiment(tmp_path / "export", result, batch["positions"],
                           protocol=folder / "protocol.yaml", milling_angle=15.0)
    again = structures.Experiment.from_dict(yaml.safe_load(out.read_text()))
    a, b = again.positions
    assert (a.name, b.name) == ("Lamella-A", "Lamella-B")
    assert a.completed_tasks == ["Mill Fiducial", "Rough Milling", "Polishing"]
    assert b.completed_tasks == ["Mill Fiducial"] and b.is_failure and not a.is_failure
    assert a.stage_position.x == pytest.approx(1.5e-4)
    assert a.stage_position.t == pytest.approx(math.radians(12.0), rel=1e-12)
    assert a.milling_angle == 15.0
    # and back to the same batch
    assert read_experiment(out, folder / "protocol.yaml")["done"] == result["done"]


def test_bad_experiments_are_refused_by_name(tmp_path):
    folder = _openfibsem_experiment(tmp_path)
    data = yaml.safe_load((folder / "experiment.yaml").read_text())
    data["positions"][0]["task_history"][1]["name"] = "Mill Everything"
    with pytest.raises(ValueError, match=r"positions\[0\] \(Lamella-A\): completed task "
                                         r"'Mill Everything' is not in the protocol's tasks"):
        read_experiment(data, folder / "protocol.yaml")
    data = yaml.safe_load((folder / "experiment.yaml").read_text())
    del data["positions"][1]["poses"]["MILLING"]
    with pytest.raises(ValueError, match=r"positions\[1\] \(Lamella-B\): no MILLING pose"):
        read_experiment(data)
    with pytest.raises(ValueError, match=r"no saved position for site\(s\) \['B'\]"):
        write_experiment(tmp_path / "x", {"done": {"A": [], "B": []}},
                         {"A": {"x": 0, "y": 0, "z": 0, "r": 0, "t": 0}})
