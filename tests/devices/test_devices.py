"""Ophyd devices on the simulator: limits, units, validation before motion, stream assets."""

import math

import numpy as np
import pytest
from bluesky import plan_stubs as bps

from fibsem_ophyd.devices import make_microscope


def _numeric_signals(device):
    for name in device.component_names:
        child = getattr(device, name)
        if hasattr(child, "component_names"):
            yield from _numeric_signals(child)
        else:
            yield child


def test_every_numeric_signal_declares_units(microscope):
    missing = []
    signals = list(_numeric_signals(microscope)) + list(_numeric_signals(microscope.stage))
    assert any(s.name == "microscope_stage_x" for s in signals)
    for sig in signals:
        desc = sig.describe()[sig.name]
        if desc["dtype"] in ("number", "integer") and "units" not in desc:
            missing.append(sig.name)
    # brightness/contrast are unitless fractions and declare limits instead
    assert set(missing) <= {
        "microscope_sem_brightness", "microscope_sem_contrast",
        "microscope_fib_brightness", "microscope_fib_contrast",
        "microscope_sem_line_integration", "microscope_sem_frame_integration",
        "microscope_fib_line_integration", "microscope_fib_frame_integration",
    }, missing


def test_stage_limits_from_config(microscope):
    assert microscope.stage.t.limits == (-15.0, 60.0)
    desc = microscope.stage.x.describe()["microscope_stage_x"]
    assert desc["units"] == "m"
    assert desc["limits"]["control"] == {"low": -0.025, "high": 0.025}


@pytest.mark.parametrize(
    "target, match",
    [
        ({"x": 0.03}, r"stage.x = 0.03 m is outside its limits \[-0.025, 0.025\] m"),
        ({"t": float("nan")}, "stage.t must be finite"),
        ({"x": 0.0, "q": 1.0}, "unknown stage axis"),
        ({"z": "high"}, "stage.z must be a number"),
    ],
)
def test_bad_stage_target_raises_before_moving(session, microscope, target, match):
    before = microscope.stage.position
    with pytest.raises(ValueError, match=match):
        microscope.stage.set(target)
    assert microscope.stage.position == before


def test_bad_stage_target_in_plan_fails_cleanly(session, microscope):
    before = microscope.stage.position
    with pytest.raises(Exception, match="outside its limits"):
        session.RE(bps.mv(microscope.stage, {"x": 0.001, "t": 75.0}))
    assert microscope.stage.position == before  # x did not move either


def test_stage_move_round_trip(session, microscope):
    session.RE(bps.mv(microscope.stage, {"x": 1e-4, "r": 90.0}))
    pos = microscope.stage.position
    assert pos["x"] == pytest.approx(1e-4)
    assert pos["r"] == pytest.approx(90.0)
    assert session.backend.get_stage_position()["x"] == pytest.approx(1e-4)


@pytest.mark.parametrize(
    "signal, value, match",
    [
        ("hfw", 5e-3, r"hfw = 0.005 m is outside its limits \[1e-06, 0.002\] m"),
        ("current", -1e-9, "current = -1e-09 A is outside its limits"),
        ("dwell_time", float("nan"), "dwell_time must be finite"),
        ("voltage", "2 kV", "voltage must be a number in V"),
        ("column_tilt", 40.0, "read-only"),
    ],
)
def test_beam_signal_validation(session, microscope, signal, value, match):
    sig = getattr(microscope.electron_beam, signal)
    before = sig.get()
    with pytest.raises(ValueError, match=match):
        sig.set(value)
    assert sig.get() == before


def test_beam_settings_reach_backend(session, microscope):
    microscope.ion_beam.current.set(1e-9).wait()
    assert session.backend.get("current", "ion") == pytest.approx(1e-9)
    assert microscope.ion_beam.column_tilt.get() == pytest.approx(52.0)


def test_detector_settings_validate(microscope):
    with pytest.raises(ValueError, match="dwell_time = -1e-06 s is outside"):
        microscope.sem.dwell_time.set(-1e-6)
    with pytest.raises(ValueError, match="must lie inside the frame"):
        microscope.sem.reduced_area.set([0.5, 0.5, 0.8, 0.2])
    with pytest.raises(ValueError, match="resolution must have 2 elements"):
        microscope.fib.resolution.set([512])


def test_detector_describe_has_external_image_and_read_omits_it(microscope):
    desc = microscope.sem.describe()
    key = "microscope_sem_image"
    assert desc[key]["external"] == "STREAM:"
    assert desc[key]["shape"] == [256, 384]
    assert desc[key]["dtype_numpy"] == "|u1"
    assert key not in microscope.sem.read()


def test_trigger_without_staging_is_refused(microscope):
    with pytest.raises(RuntimeError, match="must be staged"):
        microscope.sem.trigger()


def test_detector_stream_assets(microscope):
    det = microscope.sem
    det.stage()
    try:
        for _ in range(3):
            det.trigger().wait(10)
        docs = list(det.collect_asset_docs())
        assert [n for n, _ in docs] == ["stream_resource", "stream_datum"]
        sres, sdat = docs[0][1], docs[1][1]
        assert sres["mimetype"] == "multipart/related;type=image/tiff"
        assert sres["parameters"]["chunk_shape"] == [1, 256, 384]
        assert sdat["indices"] == {"start": 0, "stop": 3}
        assert det.get_index() == 3
        assert det.last_file.exists()
        reading = det.read()
        assert reading["microscope_sem_pixel_size"]["value"] == pytest.approx(150e-6 / 384)
    finally:
        det.unstage()


def test_chamber_pump_vent(session, microscope):
    session.RE(bps.mv(microscope.chamber, "vented"))
    assert microscope.chamber.vacuum_state.get() == "vented"
    session.RE(bps.mv(microscope.chamber, "pumped"))
    assert microscope.chamber.vacuum_state.get() == "pumped"
    with pytest.raises(ValueError, match="'pumped' or 'vented'"):
        microscope.chamber.set("open")


def test_backend_must_implement_protocol(tmp_path):
    with pytest.raises(TypeError, match="MicroscopeBackend"):
        make_microscope(object(), tmp_path)


def test_stage_config_signals(microscope):
    assert microscope.stage.shuttle_pre_tilt.get() == pytest.approx(35.0)
    assert microscope.stage.rotation_180.get() == pytest.approx(180.0)
    with pytest.raises(ValueError, match="read-only"):
        microscope.stage.shuttle_pre_tilt.put(45.0)
    assert math.isfinite(microscope.stage.z.position)


def test_stored_image_refuses_bad_pixels(microscope):
    from fibsem_ophyd.devices import make_stored_image

    dev = make_stored_image("mosaic", microscope.sem)
    with pytest.raises(ValueError, match="NaN"):
        dev.image.set(np.array([[0.0, np.nan]]))
    with pytest.raises(ValueError, match="2-D"):
        dev.image.set(np.zeros(5))
    dev.image.set(np.array([[-3.0, 127.4], [127.6, 300.0]]))
    assert dev.image.get().tolist() == [[0, 127], [128, 255]]
    with pytest.raises(RuntimeError, match="staged"):
        dev.trigger()


def test_a_recorder_takes_nan_without_waiting(session):
    """Recording "no measurement" (NaN) completes at once: ophyd's Signal.set would wait for
    the readback to equal NaN, which it never does (a batch summary hung on it)."""
    import math

    import bluesky.plan_stubs as bps

    from fibsem_ophyd.devices import make_recorder

    rec = make_recorder("probe", {"thickness": ("number", "m"), "status": ("string", None)})
    status = rec.thickness.set(float("nan"))
    assert status.done and status.success
    session.RE(bps.mv(rec.thickness, float("nan"), rec.status, "no lamella"))
    assert math.isnan(rec.thickness.get()) and rec.status.get() == "no lamella"


def test_close_writes_the_frame_in_flight_then_refuses_triggers(microscope):
    """``close()`` ends the acquisition thread only after the frame it holds is on disk."""
    det = microscope.sem
    det.stage()
    try:
        status = det.trigger()
        det.close()
        assert status.done and status.success
        files = list(microscope.images_dir.glob(f"{det.name}_*/img_000000.tif"))
        assert len(files) == 1 and files[0].stat().st_size > det.resolution.get()[0]
        with pytest.raises(RuntimeError, match="closed"):
            det.trigger()
        det.close()  # idempotent
    finally:
        det.unstage()
