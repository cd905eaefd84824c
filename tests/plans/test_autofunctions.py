"""Autofocus and auto contrast/brightness against the simulator's ground truth."""

from __future__ import annotations

import numpy as np
import pytest

from fibsem_ophyd.plans import auto_contrast_brightness, autofocus

HFW = 30e-6  # 384 px wide: 78 nm pixels
ALPHA = {"electron": 5e-3, "ion": 1e-3}  # the simulator's probe semi-angles (rad)


def _depth_of_field(beam: str) -> float:
    return HFW / 384 / ALPHA[beam]


@pytest.mark.parametrize("metric, error", [("tenengrad", 60e-6), ("laplacian", -60e-6)])
def test_autofocus_lands_within_the_depth_of_field(session, microscope, metric, error):
    sim, RE = session.backend, session.RE
    microscope.sem.hfw.put(HFW)
    focus = sim.truth.focus_working_distance("electron")
    microscope.electron_beam.working_distance.put(focus + error)
    res = RE(autofocus(microscope.sem, metric=metric)).plan_result
    focus = sim.truth.focus_working_distance("electron")
    wd = microscope.electron_beam.working_distance.get()
    assert wd == pytest.approx(res["working_distance"])
    assert res["initial_working_distance"] == pytest.approx(focus + error, abs=1e-9)
    dof = _depth_of_field("electron")  # 15.6 um
    assert abs(wd - focus) < dof / 4, (wd - focus, dof)
    # the sharpness at the set WD beats the start
    assert res["score"] > min(s for _, s in res["coarse"])
    # every (wd, score) is an event; the frames are one stream of the run
    run = session.catalog[res["uid"]]
    af = run["autofocus"].read()
    n = len(res["coarse"]) + len(res["fine"])
    assert len(af["autofocus_score"]) == n + 1
    assert list(af["autofocus_sweep"].values[:9]) == ["coarse"] * 9
    assert af["autofocus_action"].values[-1] == "set"
    assert float(af["autofocus_working_distance"][-1]) == pytest.approx(wd)
    assert np.allclose(af["autofocus_working_distance"].values[:n],
                       [w for w, _ in res["coarse"] + res["fine"]])
    frames = run["electron"].read()
    assert len(frames["microscope_sem_working_distance"]) == n + 1


def test_autofocus_recentres_a_missed_sweep_and_restores_on_failure(session, microscope):
    sim, RE = session.backend, session.RE
    microscope.sem.hfw.put(HFW)
    focus = sim.truth.focus_working_distance("electron")
    microscope.electron_beam.working_distance.put(focus + 150e-6)  # outside +-100 um
    res = RE(autofocus(microscope.sem)).plan_result
    assert len(res["coarse"]) == 18  # one re-centred coarse sweep
    err = microscope.electron_beam.working_distance.get() - sim.truth.focus_working_distance(
        "electron")
    assert abs(err) < _depth_of_field("electron") / 4
    # a failing frame: the run fails, the working distance goes back to where it was
    wd = microscope.electron_beam.working_distance.get()
    sim.inject_fault("detector_failure")
    with pytest.raises(Exception):  # noqa: B017 (FailedStatus of the frame)
        RE(autofocus(microscope.sem))
    assert microscope.electron_beam.working_distance.get() == pytest.approx(wd)


def test_autofocus_ion(session, microscope):
    sim, RE = session.backend, session.RE
    microscope.fib.hfw.put(HFW)
    focus = sim.truth.focus_working_distance("ion")
    microscope.ion_beam.working_distance.put(focus - 150e-6)
    res = RE(autofocus(microscope.fib, coarse_range=200e-6, coarse_steps=7, fine_range=60e-6,
                       fine_steps=7)).plan_result
    err = res["working_distance"] - sim.truth.focus_working_distance("ion")
    assert abs(err) < _depth_of_field("ion") / 2  # 78 um depth of field


_AF_BAD = [
    ({"coarse_range": -1e-6}, "coarse_range"),
    ({"fine_range": 0.0}, "fine_range"),
    ({"coarse_steps": 2}, "coarse_steps"),
    ({"fine_steps": 4.5}, "fine_steps"),
    ({"coarse_steps": True}, "coarse_steps"),
    ({"metric": "brenner"}, "unknown sharpness metric"),
]


def test_autofocus_bad_input_moves_nothing(session, microscope):
    wd = microscope.electron_beam.working_distance.get()
    for kwargs, match in _AF_BAD:
        with pytest.raises(ValueError, match=match):
            session.RE(autofocus(microscope.sem, **kwargs))
        assert microscope.electron_beam.working_distance.get() == wd
    assert len(list(session.catalog)) == 0


@pytest.mark.parametrize("det, starts", [("sem", [(0.9, 0.9), (0.0, 1.0)]),
                                         ("fib", [(0.9, 0.9), (0.05, 0.1)])])
def test_auto_contrast_brightness(session, microscope, det, starts):
    detector = getattr(microscope, det)
    for start in starts:
        detector.brightness.put(start[0])
        detector.contrast.put(start[1])
        res = session.RE(auto_contrast_brightness(detector)).plan_result
        assert res["converged"], res["history"]
        assert res["iterations"] <= 8
        assert abs(res["mean"] - 0.5) <= 0.05
        assert res["saturation"] <= 0.005
        assert detector.brightness.get() == pytest.approx(res["brightness"])
        assert detector.contrast.get() == pytest.approx(res["contrast"])
        # an independent frame at the final settings agrees
        frame = session.backend.acquire_image(detector.beam, detector.image_settings())
        assert abs(frame.mean() / 255 - 0.5) <= 0.06
        assert np.count_nonzero(frame == 255) / frame.size <= 0.01
        run = session.catalog[res["uid"]]
        cb = run["contrast_brightness"].read()
        assert len(cb["contrast_brightness_mean"]) == res["iterations"]
        assert cb["contrast_brightness_action"].values[-1] == "converged"
        assert float(cb["contrast_brightness_brightness"][0]) == pytest.approx(start[0])


_ACB_BAD = [
    ({"target_mean": 1.5}, "target_mean"),
    ({"max_saturation": -0.1}, "max_saturation"),
    ({"max_iterations": 0}, "max_iterations"),
    ({"mean_tolerance": 0.0}, "mean_tolerance"),
]


def test_auto_contrast_brightness_bad_input(session, microscope):
    b = microscope.sem.brightness.get()
    for kwargs, match in _ACB_BAD:
        with pytest.raises(ValueError, match=match):
            session.RE(auto_contrast_brightness(microscope.sem, **kwargs))
        assert microscope.sem.brightness.get() == b
    assert len(list(session.catalog)) == 0
