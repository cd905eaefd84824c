"""move_based_on_detection against the simulator's truth: the needle tip lands on the lamella
edge (corrected manipulator move), the lamella centre on the image centre (stable move)."""

import math

import pytest

from fibsem_ophyd.detection import DetectedFeatures
from fibsem_ophyd.plans import move_based_on_detection


def _detection(sim, beam, names):
    """A detect() result whose positions are the truth's keypoints."""
    feats = {n: sim.truth.keypoint(n, beam) for n in names}
    det = DetectedFeatures([], None, None, None, sim.truth.pixel_size(beam))
    return {"features": feats, "corrected": {}, "detection": det}


def test_needle_tip_to_lamella_edge_and_lamella_to_centre(session, microscope):
    sim, RE = session.backend, session.RE
    sim.move_stage_absolute({"z": sim.get_stage_position()["z"] - 40e-6})
    c = sim.truth.surface_point("ion")
    sim.liftout.add_lamella((c[0] + 8e-6, c[1]), width=20e-6, depth=6e-6, thickness=3e-6)
    sim.insert_manipulator("PARK")
    sim.move_manipulator_absolute({"x": 25e-6, "y": 20e-6, "z": 30e-6})
    for beam in ("ion", "electron"):
        target = sim.truth.keypoint("LamellaLeftEdge", beam)
        d = _detection(sim, beam, ["NeedleTip", "LamellaLeftEdge"])
        RE(move_based_on_detection(microscope, getattr(microscope, "fib" if beam == "ion"
                                                       else "sem"), d, "NeedleTip",
                                   "LamellaLeftEdge"))
        tip = sim.truth.keypoint("NeedleTip", beam)
        assert math.hypot(tip[0] - target[0], tip[1] - target[1]) < 0.5
        sim.move_manipulator_absolute({"z": sim.get_manipulator_position()["z"] + 20e-6})
    d = _detection(sim, "ion", ["ImageCentre", "LamellaCentre"])
    RE(move_based_on_detection(microscope, microscope.fib, d, "ImageCentre", "LamellaCentre"))
    lc = sim.truth.keypoint("LamellaCentre", "ion")
    ic = sim.truth.keypoint("ImageCentre", "ion")
    assert math.hypot(lc[0] - ic[0], lc[1] - ic[1]) < 1.5


def test_missing_feature_is_refused(session, microscope):
    det = DetectedFeatures([], None, None, None, 1e-7)
    d = {"features": {"NeedleTip": None, "LamellaCentre": (1.0, 2.0)}, "detection": det}
    with pytest.raises(ValueError, match="NeedleTip was not detected"):
        session.RE(move_based_on_detection(microscope, microscope.fib, d, "NeedleTip",
                                           "LamellaCentre"))
