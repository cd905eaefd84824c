"""``fibsem-ophyd ingest``: TIFFs saved by OpenFIBSEM's Demo microscope become a run in the
catalog, found by a search, their pixels and metadata read back unchanged."""

import math
import os

import numpy as np
import pytest
import tifffile

from fibsem_ophyd.cli import main
from fibsem_ophyd.ingest import INGEST_PLAN_NAME
from fibsem_ophyd.storage import load_images, open_catalog, search_runs

fibsem_utils = pytest.importorskip("fibsem.utils")
fs = pytest.importorskip("fibsem.structures")

#: (beam, hfw m, resolution): two electron images, ion images at two resolutions
SHOTS = [("ELECTRON", 150e-6, (768, 512)), ("ION", 80e-6, (768, 512)),
         ("ELECTRON", 50e-6, (768, 512)), ("ION", 40e-6, (384, 256))]


@pytest.fixture(scope="module")
def demo_folder(tmp_path_factory):
    before = os.environ.get("FIBSEM_SIM_NO_DELAY")
    os.environ["FIBSEM_SIM_NO_DELAY"] = "1"  # the Demo's sleeps, off
    try:
        folder = tmp_path_factory.mktemp("openfibsem")
        microscope, _ = fibsem_utils.setup_session(
            manufacturer="Demo", session_path=str(folder), setup_logging=False)
        for i, (beam, hfw, res) in enumerate(SHOTS):
            settings = fs.ImageSettings(resolution=res, dwell_time=1e-7, hfw=hfw,
                                        beam_type=fs.BeamType[beam], autocontrast=False,
                                        save=False)
            microscope.acquire_image(settings).save(str(folder / f"shot-{i}.tif"))
    finally:
        if before is None:
            os.environ.pop("FIBSEM_SIM_NO_DELAY")
        else:
            os.environ["FIBSEM_SIM_NO_DELAY"] = before
    return folder


def test_ingest_stores_a_demo_folder_as_a_searchable_run(demo_folder, tmp_path, capsys):
    data = tmp_path / "data"
    assert main(["ingest", str(demo_folder), "--data-dir", str(data),
                 "--md", "sample=demo-grid"]) == 0
    assert "run " in capsys.readouterr().out
    catalog = open_catalog(data)
    runs = search_runs(catalog, plan_name=INGEST_PLAN_NAME, sample="demo-grid")
    assert len(runs) == 1
    run = runs.values()[0]
    originals = [fs.FibsemImage.load(str(demo_folder / f"shot-{i}.tif"))
                 for i in range(len(SHOTS))]
    start = run.metadata["start"]
    assert start["files"] == [f"shot-{i}.tif" for i in range(len(SHOTS))]
    assert start["beams"] == ["electron", "ion"] and start["num_images"] == 4
    assert start["user"] == originals[0].metadata.user.name
    assert run.metadata["stop"]["exit_status"] == "success"
    assert sorted(run) == ["electron", "ion_384x256", "ion_768x512"]

    # the pixels and the metadata, unchanged, in acquisition order
    electron = load_images(run, "electron")
    for img, orig in zip(electron, (originals[0], originals[2]), strict=True):
        assert np.array_equal(img.data, orig.data)
        assert img.metadata["pixel_size"]["x"] == orig.metadata.pixel_size.x
    (ion_small,) = load_images(run, "ion_384x256")
    assert np.array_equal(ion_small.data, originals[3].data)

    # the events say what each file's metadata says
    table = run["electron"].read()
    assert list(table["electron_hfw"].values) == [150e-6, 50e-6]
    assert list(table["electron_pixel_size"].values) == pytest.approx([150e-6 / 768,
                                                                        50e-6 / 768])
    assert list(table["electron_file"].values) == ["shot-0.tif", "shot-2.tif"]
    t = originals[0].metadata.microscope_state.stage_position.t
    assert float(table["stage_t"].values[0]) == pytest.approx(math.degrees(t), abs=1e-9)
    assert float(run["ion_768x512"].read()["ion_768x512_current"].values[0]) == \
        pytest.approx(originals[1].metadata.microscope_state.ion_beam.beam_current)


def test_ingest_refuses_a_tiff_without_openfibsem_metadata(demo_folder, tmp_path, capsys):
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "good.tif").write_bytes((demo_folder / "shot-0.tif").read_bytes())
    tifffile.imwrite(folder / "plain.tif", np.zeros((8, 8), np.uint8))
    data = tmp_path / "data"
    assert main(["ingest", str(folder), "--data-dir", str(data)]) == 1
    err = capsys.readouterr().err
    assert "plain.tif: no OpenFIBSEM image metadata" in err
    assert len(open_catalog(data)) == 0  # nothing stored
    assert main(["ingest", str(folder), "--data-dir", str(data), "--md", "oops"]) == 2
