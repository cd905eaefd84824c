"""Reading back: the three load_images paths, queries, JSON-lines backups."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from bluesky import RunEngine
from bluesky.plans import count
from tiled.queries import Comparison

from fibsem_ophyd.storage import (
    CatalogWriter,
    backup_dir,
    image_files,
    image_keys,
    images_dir,
    iter_backup,
    load_images,
    open_catalog,
    replay_backup,
    search_runs,
)

from ._device import TiffDetector, expected_frame


@pytest.fixture(scope="module")
def stored(tmp_path_factory):
    """One run of 3 frames in one catalog, shared by this module's read-only tests."""
    data_dir = tmp_path_factory.mktemp("reader") / "data"
    catalog = open_catalog(data_dir)
    det = TiffDetector(images_dir(data_dir), shape=(48, 64), seed=1)
    RE = RunEngine({}, call_returns_result=False)
    writer = CatalogWriter(catalog, backup_dir(data_dir), latency=0.1)
    RE.subscribe(writer)
    (uid,) = RE(count([det], 3), sample="R1", dose=2.5)
    assert writer.wait(timeout=60) == []
    writer.close()
    return catalog, catalog[uid], det, writer


@pytest.fixture
def run(stored):
    return stored[1]


@pytest.fixture
def det(stored):
    return stored[2]


@pytest.fixture
def catalog(stored):
    return stored[0]


@pytest.fixture
def writer(stored):
    return stored[3]


def test_image_keys(run):
    assert image_keys(run) == ["sem_image"]


@pytest.mark.parametrize("method", ["files", "bytes", "array"])
def test_load_images_paths_agree(run, det, method):
    images = load_images(run, method=method)
    assert len(images) == 3
    for i, img in enumerate(images):
        assert img.data.shape == det.shape
        assert np.array_equal(img.data, expected_frame(det.seed, i, det.shape))
        if method == "array":
            assert img.metadata is None  # pixels only through the array API
        else:
            assert img.metadata == det.metadata_for(i)


def test_load_images_falls_back_when_files_are_not_local(run, det, monkeypatch):
    from fibsem_ophyd.storage import reader

    # as seen from another machine: the paths in the catalog do not exist here
    monkeypatch.setattr(reader, "_path_from_uri", lambda uri: Path("/nonexistent") / uri[-14:])
    images = load_images(run)  # auto: files fail, bytes from the server work
    assert [img.metadata == det.metadata_for(i) for i, img in enumerate(images)] == [True] * 3
    with pytest.raises(FileNotFoundError):
        load_images(run, method="files")


def test_load_images_with_threads(run, det):
    assert [img.data.sum() for img in load_images(run, workers=4)] == [
        expected_frame(det.seed, i, det.shape).sum() for i in range(3)
    ]
    assert all(p.is_file() for p in image_files(run))


def test_search_with_extra_queries(run, catalog):
    assert list(search_runs(catalog, Comparison("gt", "start.dose", 2.0))) == [run.item["id"]]
    assert list(search_runs(catalog, Comparison("gt", "start.dose", 3.0))) == []
    assert list(search_runs(catalog, Comparison("gt", "start.dose", 2.0), sample="R2")) == []


def test_replay_backup_and_truncated_last_line(run, writer, tmp_path):
    path = writer.backup_path(run.item["id"])
    seen = []
    n = replay_backup(path, lambda name, doc: seen.append(name))
    assert n == len(seen) == 3 + 3 * 2 + 1
    broken = tmp_path / "broken.jsonl"
    text = path.read_text()
    broken.write_text(text + '{"name": "event", "doc": {"uid"')  # crash mid-line
    assert len(list(iter_backup(broken))) == n
    bad_middle = tmp_path / "bad.jsonl"
    lines = text.splitlines()
    bad_middle.write_text("\n".join([lines[0], "{oops", *lines[1:]]))
    with pytest.raises(json.JSONDecodeError):
        list(iter_backup(bad_middle))
