"""Opening catalogs: layout, exporter registration, re-opening, the served variant."""

from __future__ import annotations

import numpy as np
from bluesky import RunEngine
from bluesky.plans import count

from fibsem_ophyd.storage import (
    CatalogWriter,
    backup_dir,
    images_dir,
    load_images,
    open_catalog,
    search_runs,
    serialization_registry,
    serve_catalog,
)
from fibsem_ophyd.storage.catalog import CATALOG_FILE, TABLES_FILE, _stamped_revision

from ._device import TiffDetector, expected_frame


def test_layout_and_reopen_empty(data_dir):
    c = open_catalog(data_dir)
    assert len(c) == 0
    assert (data_dir / CATALOG_FILE).is_file()
    assert (data_dir / "images").is_dir() and (data_dir / "data").is_dir()
    assert images_dir(data_dir) == (data_dir / "images").resolve()
    assert _stamped_revision(data_dir / CATALOG_FILE) is not None
    again = open_catalog(data_dir)  # an initialised catalog is not re-initialised
    assert len(again) == 0


def test_exporter_is_registered():
    from bluesky_tiled_plugins.exporters import json_seq_exporter
    from tiled.media_type_registration import default_serialization_registry

    reg = serialization_registry()
    assert reg.dispatch("BlueskyRun", "application/json-seq") is json_seq_exporter
    # the global registry is not modified
    assert "application/json-seq" not in default_serialization_registry.media_types(
        "BlueskyRun"
    )


def test_served_catalog_end_to_end(tmp_path):
    """The same data directory served from a child process: write, read, replay, reopen."""
    data = tmp_path / "served"
    with serve_catalog(data) as server:
        client = server.client()
        try:
            RE = RunEngine({}, call_returns_result=False)
            writer = CatalogWriter(client, backup_dir(data), latency=0.1)
            RE.subscribe(writer)
            det = TiffDetector(images_dir(data), shape=(32, 40), seed=5)
            (uid,) = RE(count([det], 3), sample="S1")
            assert writer.wait(timeout=60) == []
            writer.close()
            run = client[uid]
            assert run.metadata["stop"]["exit_status"] == "success"
            arr = run["primary"]["sem_image"].read()
            assert np.array_equal(arr[2, 0], expected_frame(5, 2, (32, 40)))
            assert [img.metadata == det.metadata_for(i)
                    for i, img in enumerate(load_images(run))] == [True] * 3
            assert [n for n, _ in run.documents()][-1] == "stop"
            assert list(search_runs(client, sample="S1")) == [uid]
        finally:
            client.context.close()  # its pooled connections to the server
    assert server.process.poll() is not None  # the child is gone
    assert (data / TABLES_FILE).is_file()
    reopened = open_catalog(data)  # later, in-process, same files
    try:
        assert uid in reopened
        assert reopened[uid].metadata["start"]["sample"] == "S1"
    finally:
        reopened.context.close()
