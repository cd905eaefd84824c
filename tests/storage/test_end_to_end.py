"""A TIFF detector through the RunEngine into a real embedded Tiled catalog, and back."""

from __future__ import annotations

import bluesky.plan_stubs as bps
import bluesky.preprocessors as bpp
import numpy as np
import pytest
from bluesky.plans import count

from fibsem_ophyd.storage import (
    image_files,
    iter_backup,
    load_images,
    open_catalog,
    replay,
    search_runs,
    validate_document,
)

from ._device import FailingAfter, expected_frame

N = 5


def failing_plan(det, n_before=2):
    @bpp.stage_decorator([det])
    @bpp.run_decorator(md={"sample": "L4", "purpose": "failure"})
    def inner():
        for _ in range(n_before):
            yield from bps.trigger_and_read([det])
        raise FailingAfter("detector exploded")

    return (yield from inner())


@pytest.fixture
def acquired(RE, writer, det, catalog):
    RE.subscribe(writer)
    (uid,) = RE(count([det], N), sample="L3", operator="tester")
    assert writer.wait(timeout=60) == []
    return uid


def test_arrays_read_back_equal(acquired, catalog, det):
    run = catalog[acquired]
    assert run.metadata["stop"]["exit_status"] == "success"
    arr = run["primary"]["sem_image"].read()
    assert arr.shape == (N, 1, *det.shape)
    for i in range(N):
        assert np.array_equal(arr[i, 0], expected_frame(det.seed, i, det.shape))
    # lazy slicing works too
    assert np.array_equal(run["primary"]["sem_image"][3:4][0, 0], arr[3, 0])
    # the scalar readings went into the internal table
    table = run["primary"].base["internal"].read()
    assert list(table["seq_num"]) == list(range(1, N + 1))
    assert np.allclose(table["det_hfw"], det.hfw.get())


def test_load_images_metadata_round_trips(acquired, catalog, det):
    run = catalog[acquired]
    images = load_images(run)
    assert len(images) == N
    assert [p.name for p in image_files(run)] == [f"img_{i:06d}.tif" for i in range(N)]
    for i, img in enumerate(images):
        assert np.array_equal(img.data, expected_frame(det.seed, i, det.shape))
        assert img.metadata == det.metadata_for(i)  # the dict the detector wrote
        assert img.pixel_size == pytest.approx(det.pixel_size())
        assert img.beam == "electron"
        assert img.stage_position["t"] == pytest.approx(det.stage_t.get())
        assert img.stage_position["x"] == pytest.approx(det.stage_x.get())
        assert img.hfw == det.hfw.get()


def test_search_by_start_metadata(acquired, catalog, RE, det, writer):
    (other,) = RE(count([det], 1), sample="L7")
    writer.wait(timeout=60)
    assert list(search_runs(catalog, sample="L3")) == [acquired]
    assert list(search_runs(catalog, sample="L3", operator="tester")) == [acquired]
    assert list(search_runs(catalog, sample="nope")) == []
    assert list(search_runs(catalog, sample="L7")) == [other]


def test_documents_replay(acquired, catalog):
    seen = []
    assert replay(catalog[acquired], lambda name, doc: seen.append((name, doc))) == len(seen)
    names = [n for n, _ in seen]
    assert names[0] == "start" and names[-1] == "stop"
    for needed in ("descriptor", "stream_resource", "stream_datum", "event"):
        assert needed in names
    assert names.count("event") == N
    assert seen[0][1]["uid"] == acquired and seen[0][1]["sample"] == "L3"
    datums = [d for n, d in seen if n == "stream_datum"]
    assert sum(d["indices"]["stop"] - d["indices"]["start"] for d in datums) == N
    for name, doc in seen:
        validate_document(name, doc)


def test_backup_has_every_document_and_all_validate(acquired, writer, RE, det):
    emitted = []
    RE.subscribe(lambda name, doc: emitted.append((name, doc)))
    (uid,) = RE(count([det], 3))
    writer.wait(timeout=60)
    backed = list(iter_backup(writer.backup_path(uid)))
    assert [n for n, _ in backed] == [n for n, _ in emitted]
    assert [d["uid"] if "uid" in d else d for _, d in backed] == [
        d["uid"] if "uid" in d else d for _, d in emitted
    ]
    for name, doc in backed:
        validate_document(name, doc)
    first = list(iter_backup(writer.backup_path(acquired)))
    names = [n for n, _ in first]
    assert names[0] == "start" and names[-1] == "stop"
    assert names.count("event") == N and names.count("stream_datum") == N
    assert names.count("stream_resource") == 1 and names.count("descriptor") == 1


def test_failing_plan_keeps_frames_and_says_fail(RE, writer, det, catalog):
    RE.subscribe(writer)
    uids = []
    RE.subscribe(lambda name, doc: uids.append(doc["uid"]) if name == "start" else None)
    with pytest.raises(FailingAfter):
        RE(failing_plan(det, 2))
    assert writer.wait(timeout=60) == []
    run = catalog[uids[0]]
    assert run.metadata["stop"]["exit_status"] == "fail"
    assert "detector exploded" in run.metadata["stop"]["reason"]
    arr = run["primary"]["sem_image"].read()
    assert arr.shape[0] == 2
    for i in range(2):
        assert np.array_equal(arr[i, 0], expected_frame(det.seed, i, det.shape))
    assert [img.pixel_size for img in load_images(run)] == [det.pixel_size()] * 2
    assert list(search_runs(catalog, purpose="failure")) == [uids[0]]
    backed = [n for n, _ in iter_backup(writer.backup_path(uids[0]))]
    assert backed[-1] == "stop" and backed.count("stream_datum") == 2


def test_reopened_catalog_sees_earlier_runs(acquired, RE, det, data_dir, writer):
    (second,) = RE(count([det], 2), sample="L5")
    writer.wait(timeout=60)
    again = open_catalog(data_dir)  # a second session on the same data directory
    assert {acquired, second} <= set(again)
    run = again[acquired]
    assert run.metadata["start"]["sample"] == "L3"
    assert np.array_equal(run["primary"]["sem_image"][0:1][0, 0],
                          expected_frame(det.seed, 0, det.shape))
    assert len(load_images(again[second])) == 2
