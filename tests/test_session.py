"""The whole stack through setup_session: documents valid, replayable, searchable, backed up;
determinism from the seed; the demo command."""

import subprocess
import sys

import numpy as np
import pytest
from tifffile import TiffFile

from fibsem_ophyd import ConfigError, setup_session
from fibsem_ophyd.plans import take_reference_images
from fibsem_ophyd.storage import iter_backup, load_images, search_runs, validate_document

from .conftest import SMALL


def test_every_document_validates_and_replays(session, microscope):
    uid = session.RE(take_reference_images(microscope, md={"sample": "grid-3"})).plan_result
    backup = list(iter_backup(session.writer.backup_path(uid)))
    names = [n for n, _ in backup]
    assert names[0] == "start" and names[-1] == "stop"
    assert names.count("stream_resource") == 2 and names.count("event") == 2
    for name, doc in backup:
        validate_document(name, doc)
    replayed = list(session.catalog[uid].documents())
    assert [n for n, _ in replayed][0] == "start"
    assert {n for n, _ in replayed} >= {"start", "descriptor", "stream_resource",
                                        "stream_datum", "event", "stop"}
    for name, doc in replayed:
        validate_document(name, doc)
    start = dict(replayed[0][1])
    assert start["uid"] == uid and start["sample"] == "grid-3"


def test_search_by_metadata(session, microscope):
    session.RE(take_reference_images(microscope, md={"sample": "A", "lamella": "L1"}))
    uid_b = session.RE(take_reference_images(microscope, md={"sample": "B"})).plan_result
    found = search_runs(session.catalog, sample="B")
    assert list(found) == [uid_b]
    assert len(search_runs(session.catalog, plan_name="take_reference_images")) == 2


def test_tiff_metadata_is_openfibsem_layout(session, microscope):
    uid = session.RE(take_reference_images(microscope, hfw=120e-6)).plan_result
    img = load_images(session.catalog[uid], "ion")[0]
    md = img.metadata
    assert set(md) >= {"image", "pixel_size", "microscope_state", "version"}
    assert md["image"]["beam_type"] == "ION"
    assert md["pixel_size"]["x"] == pytest.approx(120e-6 / 384)
    state = md["microscope_state"]
    assert state["stage_position"]["t"] == pytest.approx(np.radians(35.0))  # radians on disk
    assert state["ion_beam"]["beam_type"] == "ION"
    with TiffFile(img.path) as tif:  # the metadata lives in the TIFF's ImageDescription
        assert '"microscope_state"' in tif.pages[0].description


def test_same_seed_same_images(tmp_path):
    frames = []
    for i in range(2):
        s = setup_session(config=SMALL, data_dir=tmp_path / f"d{i}", seed=7)
        try:
            uid = s.RE(take_reference_images(s.microscope)).plan_result
            frames.append(load_images(s.catalog[uid], "electron")[0].data)
        finally:
            s.close()
    assert np.array_equal(frames[0], frames[1])


def test_reopened_catalog_sees_earlier_runs(tmp_path):
    s = setup_session(config=SMALL, data_dir=tmp_path / "d", seed=0)
    uid = s.RE(take_reference_images(s.microscope)).plan_result
    s.close()
    s2 = setup_session(config=SMALL, data_dir=tmp_path / "d", seed=0)
    try:
        assert uid in s2.catalog
        assert load_images(s2.catalog[uid], "electron")[0].data.shape == (256, 384)
    finally:
        s2.close()


def test_malformed_config_is_refused_before_anything_starts(tmp_path):
    bad = tmp_path / "scope.yaml"
    bad.write_text("stage: {shuttle_pre_tilt: [35\n")
    with pytest.raises(ConfigError, match="malformed YAML"):
        setup_session(config=bad, data_dir=tmp_path / "d")
    assert not (tmp_path / "d").exists()


def test_unknown_backend(tmp_path):
    with pytest.raises(ValueError, match="unknown backend 'autoscript'"):
        setup_session(backend="autoscript", data_dir=tmp_path / "d")


def test_demo_command(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "fibsem_ophyd.cli", "demo", "--data-dir", str(tmp_path / "demo"),
         "--resolution", "384x256", "--seed", "3"],
        capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert "Stored 4 runs" in out.stdout
    sheet = tmp_path / "demo" / "demo_contact_sheet.png"
    assert sheet.stat().st_size > 10_000
    from fibsem_ophyd.storage import open_catalog

    cat = open_catalog(tmp_path / "demo")
    steps = sorted(run.metadata["start"]["step"] for run in cat.values())
    assert steps == ["after_stable_move", "after_vertical_move", "flat_to_ion", "initial"]


def test_served_session_stores_every_frame_before_returning(tmp_path):
    """serve=True: the catalog runs in a child process; RE(...) returns with every frame
    readable and the stop written; no close_stream requests to the embedded catalog; the
    child exits on close."""
    from bluesky.plans import count

    s = setup_session(config=SMALL, data_dir=tmp_path / "d", seed=0, serve=True)
    server = s.extras["catalog_server"]
    try:
        assert s.writer.close_streams is False
        (uid,) = s.RE(count([s.microscope.sem], num=5)).run_start_uids
        run = s.catalog[uid]
        assert run.metadata["stop"]["exit_status"] == "success"
        assert run["primary"][s.microscope.sem.image_key].shape == (5, 256, 384)
        assert s.writer.pending == 0 and s.writer.errors == []
    finally:
        s.close()
    assert server.process.poll() is not None
