"""TIFF write/read with metadata; interoperability with files saved by OpenFIBSEM."""

from __future__ import annotations

import json
import statistics
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile

from fibsem_ophyd.storage import FibImage, read_metadata, read_tiff, write_tiff

from .test_metadata import full_metadata

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_roundtrip_pixels_and_metadata(tmp_path, dtype):
    rng = np.random.default_rng(3)
    data = rng.integers(0, np.iinfo(dtype).max, size=(64, 96), dtype=dtype)
    meta = full_metadata()
    path = write_tiff(tmp_path / "a.tif", data, meta)
    img = read_tiff(path)
    assert img.data.dtype == dtype and np.array_equal(img.data, data)
    assert img.metadata == json.loads(json.dumps(meta))
    assert read_metadata(path) == img.metadata
    assert img.path == path
    # properties in our units
    assert img.beam == "ion"
    assert img.pixel_size == pytest.approx(1.5e-4 / 96)
    assert img.hfw == 1.5e-4
    assert img.stage_position["r"] == pytest.approx(30.0)
    assert img.stage_position["x"] == 1e-3
    assert img.shape == (64, 96)


def test_file_is_plain_uncompressed_tiff_with_json_description(tmp_path):
    data = np.zeros((8, 8), np.uint8)
    write_tiff(tmp_path / "b.tif", data, {"a": np.float32(1.5), "b": np.arange(3)})
    with tifffile.TiffFile(tmp_path / "b.tif") as tif:
        page = tif.pages.first
        assert page.compression == tifffile.COMPRESSION.NONE
        assert json.loads(page.description) == {"a": 1.5, "b": [0, 1, 2]}
        assert len(tif.pages) == 1


def test_fibimage_save_load_eq(tmp_path):
    img = FibImage(np.full((4, 5), 7, np.uint16), {"x": 1})
    img.save(tmp_path / "c.tif")
    assert img.path == tmp_path / "c.tif"
    back = FibImage.load(tmp_path / "c.tif")
    assert back == img
    assert back != FibImage(np.full((4, 5), 8, np.uint16), {"x": 1})


def test_no_metadata(tmp_path):
    write_tiff(tmp_path / "d.tif", np.ones((3, 3), np.uint8), None)
    img = read_tiff(tmp_path / "d.tif")
    assert img.metadata is None
    with pytest.raises(ValueError, match="no metadata"):
        _ = img.pixel_size
    tifffile.imwrite(tmp_path / "e.tif", np.ones((3, 3), np.uint8))  # tifffile's own JSON
    assert read_tiff(tmp_path / "e.tif").metadata is None


@pytest.mark.parametrize("bad", [np.zeros((2, 3, 4), np.uint8), np.zeros((4, 4), np.float32),
                                 np.zeros(4, np.uint8)])
def test_rejects_non_images(tmp_path, bad):
    with pytest.raises(ValueError, match="2-D uint8 or uint16"):
        write_tiff(tmp_path / "f.tif", bad, {})


def test_accepts_singleton_frame_axis(tmp_path):
    write_tiff(tmp_path / "g.tif", np.ones((1, 3, 4), np.uint8), {})
    assert read_tiff(tmp_path / "g.tif").data.shape == (3, 4)


def test_reads_a_tiff_saved_by_openfibsem():
    """``FibsemImage.save`` (OpenFIBSEM 0.5.3) writes tifffile's shaped JSON; we read it."""
    img = read_tiff(DATA / "openfibsem_0.5.3_saved.tif")
    golden = json.loads((DATA / "openfibsem_0.5.3_metadata.json").read_text())
    assert img.metadata == golden  # the extra "shape" key is dropped
    assert img.data.shape == (64, 96) and img.beam == "ion"
    assert img.stage_position["t"] == pytest.approx(52.0)


def test_write_overhead_is_small(tmp_path):
    """Metadata costs a JSON encoding, not a different write path (generous bound)."""
    data = np.random.default_rng(0).integers(0, 255, (1024, 1536), dtype=np.uint8)
    meta = full_metadata()

    def best(fn, n=7):
        times = []
        for i in range(n):
            t = time.perf_counter()
            fn(i)
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    raw = best(lambda i: tifffile.imwrite(tmp_path / f"raw{i}.tif", data))
    ours = best(lambda i: write_tiff(tmp_path / f"ours{i}.tif", data, meta))
    assert ours < raw * 1.5 + 0.002, (raw, ours)
