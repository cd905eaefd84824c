"""Movement plans end to end: images stored in Tiled, read back, shifts predicted by geometry."""

import math

import numpy as np
import pytest
import yaml
from bluesky import plan_stubs as bps

from fibsem_ophyd.alignment import register
from fibsem_ophyd.plans import (
    acquire_image,
    go_to_position,
    move_flat_to_beam,
    move_to_milling_angle,
    safe_absolute_move,
    save_position,
    stable_move,
    vertical_move,
)
from fibsem_ophyd.storage import load_images

HFW = 100e-6  # 384 px -> 260 nm pixels


def _run(session, plan):
    """Run a plan and return what the plan returned (a uid, a state...)."""
    return session.RE(plan).plan_result


def _image(session, det, **kw):
    uid = _run(session, acquire_image(det, hfw=HFW, dwell_time=3e-6, **kw))
    (img,) = load_images(session.catalog[uid], "primary")
    return img


#: the three stage frames (``stage.type``) with the column and holder they come with
STAGES = {
    "shuttle": {},
    "tescan": {"stage": {"type": "tescan"}, "ion": {"column_tilt": 55.0}},
    "compustage": {"stage": {"type": "compustage", "shuttle_pre_tilt": 0.0,
                             "limits": {"t": [-195.0, 30.0]},
                             "initial_position": {"t": 0.0}}},
}


@pytest.fixture(params=list(STAGES))
def staged(request, tmp_path):
    """A simulator session configured as each stage type, flat to the electron beam."""
    from fibsem_ophyd import setup_session

    cfg = {"electron": {"resolution": [384, 256]}, "ion": {"resolution": [384, 256]}}
    for key, value in STAGES[request.param].items():
        cfg[key] = {**cfg.get(key, {}), **value}
    s = setup_session(config=cfg, data_dir=tmp_path / "data", seed=1)
    s.RE(move_flat_to_beam(s.microscope, "electron"))
    yield s, request.param
    s.close()


def test_stage_type_reaches_the_plans(staged):
    session, stage_type = staged
    assert session.microscope.stage.stage_type.get() == stage_type
    read = session.microscope.stage.read_configuration()
    assert read[session.microscope.stage.stage_type.name]["value"] == stage_type


@pytest.mark.parametrize("beam", ["electron", "ion"])
def test_stable_and_vertical_moves_for_each_stage_type(staged, beam):
    """Each stage frame: a stable move in ``beam``'s view shifts that image by d / pixel, at
    the electron-flat pose and at a 15 deg milling angle; a vertical move then shifts the FIB
    image by the asked h and leaves the SEM image still."""
    session, stage_type = staged
    microscope = session.microscope
    det = microscope.sem if beam == "electron" else microscope.fib
    for _ in ("flat", "milling"):
        ref = _image(session, det)
        d = (4e-6, -3e-6)
        session.RE(stable_move(microscope, *d, beam))
        reg = register(ref.data, _image(session, det).data)
        assert (reg.dx, reg.dy) == pytest.approx((d[0] / ref.pixel_size, d[1] / ref.pixel_size),
                                                 abs=0.3), stage_type
        sem0, fib0 = _image(session, microscope.sem), _image(session, microscope.fib)
        h = 3e-6  # ion-image shift asked for: a chamber-vertical h / sin(ion tilt)
        session.RE(vertical_move(microscope, h))
        rs = register(sem0.data, _image(session, microscope.sem).data)
        rf = register(fib0.data, _image(session, microscope.fib).data)
        assert (rs.dx, rs.dy) == pytest.approx((0.0, 0.0), abs=0.3), stage_type
        assert (rf.dx, rf.dy) == pytest.approx((0.0, h / fib0.pixel_size), abs=0.3), stage_type
        session.RE(move_to_milling_angle(microscope, 15.0))


def test_compustage_faces_the_ion_beam_by_tilting_180(staged):
    """OpenFIBSEM's Arctis poses: flat to the ion beam at r = 0, t = ion tilt - 180 deg; the
    other stages rotate to rotation_180 and tilt ion tilt - pre-tilt."""
    session, stage_type = staged
    microscope = session.microscope
    session.RE(move_flat_to_beam(microscope, "ion"))
    r, t = microscope.stage.r.position, microscope.stage.t.position
    want = {"shuttle": (180.0, 52.0 - 35.0), "tescan": (180.0, 55.0 - 35.0),
            "compustage": (0.0, 52.0 - 180.0)}[stage_type]
    assert (r, t) == pytest.approx(want)


def test_stable_move_shifts_sem_image_as_geometry_predicts(session, microscope):
    ref = _image(session, microscope.sem)
    d = (6e-6, -4e-6)
    session.RE(stable_move(microscope, *d, "electron"))
    new = _image(session, microscope.sem)
    reg = register(ref.data, new.data)
    p = ref.pixel_size
    assert reg.dx == pytest.approx(d[0] / p, abs=0.3)
    assert reg.dy == pytest.approx(d[1] / p, abs=0.3)


def test_stable_move_in_ion_view_at_milling_tilt(session, microscope):
    session.RE(move_to_milling_angle(microscope, 15.0))
    assert microscope.stage.t.position == pytest.approx(12.0)
    ref = _image(session, microscope.fib)
    session.RE(stable_move(microscope, 0.0, 5e-6, "ion"))
    new = _image(session, microscope.fib)
    reg = register(ref.data, new.data)
    assert reg.dx == pytest.approx(0.0, abs=0.3)
    assert reg.dy == pytest.approx(5e-6 / ref.pixel_size, abs=0.3)


def test_vertical_move_shifts_fib_not_sem(session, microscope):
    sem0, fib0 = _image(session, microscope.sem), _image(session, microscope.fib)
    session.RE(vertical_move(microscope, 4e-6))
    sem1, fib1 = _image(session, microscope.sem), _image(session, microscope.fib)
    rs, rf = register(sem0.data, sem1.data), register(fib0.data, fib1.data)
    assert (rs.dx, rs.dy) == pytest.approx((0.0, 0.0), abs=0.3)
    assert rf.dy == pytest.approx(4e-6 / fib0.pixel_size, abs=0.3)
    assert rf.dx == pytest.approx(0.0, abs=0.3)


def test_move_flat_to_ion_and_back(session, microscope):
    session.RE(move_flat_to_beam(microscope, "ion"))
    assert microscope.stage.r.position == pytest.approx(180.0)
    assert microscope.stage.t.position == pytest.approx(17.0)
    session.RE(move_flat_to_beam(microscope, "ELECTRON"))
    assert microscope.stage.r.position == pytest.approx(0.0)
    assert microscope.stage.t.position == pytest.approx(35.0)


def test_safe_absolute_move_tilts_flat_before_large_rotation(session, microscope):
    sets = []
    session.RE.msg_hook = lambda msg: sets.append(msg.args[0]) if msg.command == "set" else None
    target = {"x": 1e-4, "r": 180.0, "t": 17.0}
    session.RE(safe_absolute_move(microscope, target))
    session.RE.msg_hook = None
    assert sets == [{"t": 0.0}, {"r": 180.0}, {"x": 1e-4, "r": 180.0, "t": 17.0}]
    assert microscope.stage.x.position == pytest.approx(1e-4)


def test_safe_absolute_move_validates_before_first_move(session, microscope):
    before = microscope.stage.position
    with pytest.raises(ValueError, match="stage.x = 1 m is outside"):
        session.RE(safe_absolute_move(microscope, {"r": 180.0, "x": 1.0}))
    assert microscope.stage.position == before


def test_named_positions_round_trip_in_openfibsem_layout(session, microscope):
    session.RE(bps.mv(microscope.stage, {"x": 2e-4, "y": -1e-4, "t": 20.0}))
    session.RE(save_position(microscope, "lamella-01"))
    saved = yaml.safe_load((session.data_dir / "positions.yaml").read_text())
    assert saved[0]["name"] == "lamella-01"
    assert saved[0]["t"] == pytest.approx(math.radians(20.0))  # OpenFIBSEM stores radians
    assert saved[0]["coordinate_system"] == "RAW"
    session.RE(bps.mv(microscope.stage, {"x": 0.0, "y": 0.0, "t": 35.0}))
    session.RE(go_to_position(microscope, "lamella-01"))
    pos = microscope.stage.position
    assert (pos["x"], pos["y"], pos["t"]) == pytest.approx((2e-4, -1e-4, 20.0))


def test_saved_positions_are_recorded_and_read_back_from_the_catalog(session, microscope):
    """Each save_position is a run: the stage's reading and every saved position after it;
    the newest such run is the list (a removal included), also saved inside an open run."""
    import bluesky.preprocessors as bpp

    from fibsem_ophyd.plans._movement import change_positions
    from fibsem_ophyd.plans.stored_runs import saved_positions

    from .._catalog import count_runs

    catalog = session.catalog
    before = saved_positions(catalog)
    session.RE(bps.mv(microscope.stage, {"x": 3e-4, "y": 1e-4, "t": 30.0}))
    uid = session.RE(save_position(microscope, "rec-a")).run_start_uids[0]
    run = catalog[uid]
    assert run.start["plan_name"] == "save_position"
    assert run.start["positions_changed"] == ["rec-a"]
    read = run["primary"].read()
    pos_a = microscope.stage.positions.get()["rec-a"]
    assert {ax: float(read[f"microscope_stage_{ax}"][0]) for ax in "xyzrt"} == pos_a
    assert pos_a == pytest.approx(microscope.stage.position)
    stream = run["positions"].read()
    assert "rec-a" in list(stream["position_label"].values)
    assert saved_positions(catalog) == {**before, "rec-a": pos_a}

    # saved inside a run of the caller's: its own run (run key), the caller's still open
    session.RE(bps.mv(microscope.stage, {"x": -2e-4}))

    def outer():
        yield from bps.mv(microscope.stage, {"y": -3e-4})
        yield from save_position(microscope, "rec-b")

    res = session.RE(bpp.run_wrapper(outer(), md={"plan_name": "outer"}))
    assert len(res.run_start_uids) == 2
    pos_b = microscope.stage.positions.get()["rec-b"]
    assert (pos_b["x"], pos_b["y"]) == pytest.approx((-2e-4, -3e-4))
    assert saved_positions(catalog) == {**before, "rec-a": pos_a, "rec-b": pos_b}

    # a removal is recorded the same way: the list no longer has it
    session.RE(change_positions(microscope, {"rec-a": None}, "remove", {}))
    assert saved_positions(catalog) == {**before, "rec-b": pos_b}
    assert "rec-a" not in microscope.stage.positions.get()

    # a bad name or position opens no run
    n = count_runs(catalog)
    with pytest.raises(ValueError, match="position name must be a non-empty string"):
        session.RE(save_position(microscope, " "))
    with pytest.raises(ValueError, match="stage.x = 1 m is outside"):
        session.RE(change_positions(microscope, {"far": {"x": 1.0}}, "bad", {}))
    assert count_runs(catalog) == n


def test_unknown_position_name(session, microscope):
    with pytest.raises(ValueError, match="unknown position 'nope'"):
        session.RE(go_to_position(microscope, "nope"))


def test_bad_move_inputs(session, microscope):
    before = microscope.stage.position
    with pytest.raises(ValueError, match="dx must be a finite number"):
        session.RE(stable_move(microscope, float("nan"), 0.0))
    with pytest.raises(ValueError, match="unknown beam 'xray'"):
        session.RE(stable_move(microscope, 1e-6, 0.0, "xray"))
    with pytest.raises(ValueError, match="outside its limits"):
        session.RE(stable_move(microscope, 0.5, 0.0))
    assert microscope.stage.position == before


def test_stage_position_recorded_with_each_image(session, microscope):
    session.RE(bps.mv(microscope.stage, {"x": 3e-4}))
    uid = _run(session, acquire_image(microscope.sem))
    table = session.catalog[uid]["primary"].read()
    assert float(np.asarray(table["microscope_stage_x"])[0]) == pytest.approx(3e-4)
