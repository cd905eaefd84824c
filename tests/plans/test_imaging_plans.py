"""Imaging plans: stored images, metadata, failed runs, state snapshot/restore."""

import numpy as np
import pytest
import tifffile
from bluesky import plan_stubs as bps
from bluesky import preprocessors as bpp

from fibsem_ophyd import BeamType
from fibsem_ophyd.plans import (
    acquire_image,
    acquire_series,
    restore_state,
    snapshot_state,
    stable_move,
    take_reference_images,
)
from fibsem_ophyd.storage import load_images

from .._catalog import count_runs


def _run(session, plan):
    """Run a plan and return what the plan returned (a uid, a state...)."""
    return session.RE(plan).plan_result


def test_acquire_image_stores_tiff_and_catalog_entry(session, microscope):
    uid = _run(session, acquire_image(microscope.sem, hfw=80e-6, dwell_time=2e-6,
                                   md={"sample": "grid-7"}))
    run = session.catalog[uid]
    assert run.metadata["stop"]["exit_status"] == "success"
    assert run.metadata["start"]["sample"] == "grid-7"
    arr = run["primary"]["microscope_sem_image"].read()
    assert arr.shape == (1, 256, 384)
    (img,) = load_images(run, "primary")
    assert np.array_equal(img.data, arr[0])
    assert img.pixel_size == pytest.approx(80e-6 / 384)
    assert img.beam == "electron"
    # the file on disk is the same frame with the metadata inside
    path = microscope.sem.last_file
    assert np.array_equal(tifffile.imread(path), arr[0])


def test_acquire_series_one_run_num_frames(session, microscope):
    uid = _run(session, acquire_series(microscope.fib, num=5, hfw=60e-6, md={"sample": "s5"}))
    run = session.catalog[uid]
    assert run.start["plan_name"] == "acquire_series" and run.start["num_points"] == 5
    assert run.start["sample"] == "s5"
    assert run.stop["exit_status"] == "success"
    assert run.stop["num_events"] == {"primary": 5}
    imgs = load_images(run, "primary")
    assert len(imgs) == 5
    assert len({img.path for img in imgs}) == 5  # one file per frame
    assert all(img.beam == "ion" and img.hfw == pytest.approx(60e-6) for img in imgs)
    # ion imaging erodes the sample a little and shot noise differs: no two frames equal
    assert not np.array_equal(imgs[0].data, imgs[1].data)


def test_acquire_series_refuses_bad_counts(session, microscope):
    n_before = count_runs(session.catalog)
    with pytest.raises(ValueError, match=r"num must be an integer in \[1, 100000\], got 0"):
        session.RE(acquire_series(microscope.sem, num=0))
    with pytest.raises(ValueError, match="delay"):
        session.RE(acquire_series(microscope.sem, num=2, delay=-1.0))
    assert count_runs(session.catalog) == n_before


def test_take_reference_images_one_event_per_beam(session, microscope):
    uid = _run(session, take_reference_images(microscope, hfw=200e-6))
    run = session.catalog[uid]
    for stream, beam in (("electron", "electron"), ("ion", "ion")):
        imgs = load_images(run, stream)
        assert len(imgs) == 1
        assert imgs[0].beam == beam
        assert imgs[0].hfw == pytest.approx(200e-6)
    e, i = load_images(run, "electron")[0].data, load_images(run, "ion")[0].data
    assert not np.array_equal(e, i)


def test_reduced_area_image(session, microscope):
    uid = _run(session, acquire_image(microscope.fib, reduced_area=[0.25, 0.25, 0.5, 0.5]))
    arr = session.catalog[uid]["primary"]["microscope_fib_image"].read()
    assert arr.shape == (1, 128, 192)


def test_bad_image_setting_fails_run_and_keeps_earlier_images(session, microscope):
    md = {"plan_name": "two_images"}

    @bpp.stage_decorator([microscope.sem])
    @bpp.run_decorator(md=md)
    def plan():
        yield from bps.trigger_and_read([microscope.sem])
        yield from stable_move(microscope, 1.0, 0.0)  # 1 m: far outside the stage limits
        yield from bps.trigger_and_read([microscope.sem])

    with pytest.raises(ValueError, match="outside its limits"):
        session.RE(plan())
    run = session.catalog.values().last()
    assert run.metadata["stop"]["exit_status"] == "fail"
    assert "outside its limits" in run.metadata["stop"]["reason"]
    assert run["primary"]["microscope_sem_image"].read().shape == (1, 256, 384)


def test_bad_hfw_is_refused_before_the_run_opens(session, microscope):
    n_before = count_runs(session.catalog)
    with pytest.raises(ValueError, match="hfw = 0.1 m is outside its limits"):
        _run(session, acquire_image(microscope.fib, hfw=0.1))
    assert count_runs(session.catalog) == n_before  # checked before the open_run: no run at all


def test_snapshot_and_restore_state(session, microscope):
    state = _run(session, snapshot_state(microscope))
    assert state["stage"]["t"] == pytest.approx(35.0)
    assert set(state) == {"stage", "electron_beam", "ion_beam", "electron_detector",
                          "ion_detector"}
    session.RE(bps.mv(microscope.ion_beam.current, 1e-9, microscope.sem.brightness, 0.7,
                      microscope.stage, {"x": 1e-4, "r": 180.0, "t": 17.0}))
    session.RE(restore_state(microscope, state))
    assert microscope.ion_beam.current.get() == pytest.approx(state["ion_beam"]["current"])
    brightness = state["electron_detector"]["brightness"]
    assert microscope.sem.brightness.get() == pytest.approx(brightness)
    assert microscope.stage.position == pytest.approx(state["stage"])


def test_restore_state_rejects_bad_values_before_writing(session, microscope):
    state = _run(session, snapshot_state(microscope))
    state["ion_beam"]["current"] = 5.0  # 5 A
    before = microscope.electron_beam.hfw.get()
    state["electron_beam"]["hfw"] = 50e-6
    with pytest.raises(ValueError, match="current = 5 A is outside"):
        session.RE(restore_state(microscope, state))
    assert microscope.electron_beam.hfw.get() == before


def test_beamtype_accepted(session, microscope):
    session.RE(stable_move(microscope, 1e-6, 0.0, BeamType.ION))
