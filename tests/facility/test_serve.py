"""``fibsem-ophyd serve``: a Tiled catalog of runs on PostgreSQL (or SQLite), API key required."""

from __future__ import annotations

import subprocess

import httpx
import numpy as np
import pytest

from fibsem_ophyd.storage import load_images, read_tiff, search_runs

from .conftest import (
    PG_HOST,
    PG_PORT,
    SMALL_CONFIG,
    bin_path,
    facility_env,
    refused_without_key,
    stop_process,
    wait_for,
)

SMALL = {"electron": {"resolution": [384, 256]}, "ion": {"resolution": [384, 256]}}
assert "384, 256" in SMALL_CONFIG


def _pg_fetch(database: str, query: str, *args):
    import asyncio

    import asyncpg

    from .conftest import PG_USER

    async def run():
        con = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER,
                                    database=database, timeout=10)
        try:
            return await con.fetch(query, *args)
        finally:
            await con.close()

    return asyncio.run(run())


@pytest.fixture(scope="module")
def written(served_postgres):
    """A session writing over HTTP to the served PostgreSQL catalog: a series and a pair."""
    from fibsem_ophyd import setup_session
    from fibsem_ophyd.plans import acquire_series, take_reference_images

    s = setup_session(config=SMALL, data_dir=served_postgres.data_dir, seed=5,
                      tiled_uri=served_postgres.uri, api_key=served_postgres.api_key)
    try:
        uids = {
            "series": s.RE(acquire_series(s.microscope.sem, num=4, hfw=90e-6,
                                          md={"sample": "serve-S1"})).plan_result,
            "refs": s.RE(take_reference_images(s.microscope, hfw=120e-6,
                                               md={"sample": "serve-S1"})).plan_result,
        }
        assert not s.writer.errors, s.writer.errors
    finally:
        s.close()
    return uids


def test_runs_are_stored_in_postgres_and_read_back(served_postgres, served_catalog, written):
    catalog = served_catalog
    series = catalog[written["series"]]
    assert series.stop["exit_status"] == "success"
    imgs = load_images(series)
    assert len(imgs) == 4
    for img in imgs:
        assert img.data.shape == (256, 384) and img.pixel_size == pytest.approx(90e-6 / 384)
        assert np.array_equal(img.data, read_tiff(img.path).data)
    # the same frames through Tiled's array endpoint (what a remote reader without the
    # files gets)
    arrays = load_images(series, method="array")
    assert all(np.array_equal(a.data, b.data) for a, b in zip(arrays, imgs, strict=True))
    assert sorted(search_runs(catalog, sample="serve-S1")) == sorted(written.values())
    # documents replay: the exporter is registered by the serve command
    names = [n for n, _ in catalog[written["refs"]].documents()]
    assert names[0] == "start" and names[-1] == "stop" and names.count("event") == 2

    # the catalog is the PostgreSQL database, not a SQLite file under the data directory
    rows = _pg_fetch(served_postgres.database, "SELECT key FROM nodes WHERE key = ANY($1)",
                     list(written.values()))
    assert sorted(r["key"] for r in rows) == sorted(written.values())
    assert not (served_postgres.data_dir / "catalog.db").exists()


def test_requests_without_the_key_are_refused(served_postgres, written):
    url = f"{served_postgres.uri}/api/v1/metadata/{written['series']}"
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Apikey wrong"}, timeout=10).status_code \
        == 401
    ok = httpx.get(url, headers={"Authorization": f"Apikey {served_postgres.api_key}"},
                   timeout=10)
    assert ok.status_code == 200
    assert "requires API key" in str(refused_without_key(served_postgres.uri))


def test_bad_api_key_is_refused_before_serving(tmp_path):
    proc = subprocess.run(
        [bin_path("fibsem-ophyd"), "serve", "--data-dir", str(tmp_path), "--api-key",
         "not a key!"], capture_output=True, text=True, timeout=120,
        env=facility_env(tmp_path),
    )
    assert proc.returncode == 2
    assert "letters and digits" in proc.stderr
    assert not (tmp_path / "catalog.db").exists()


def test_default_catalog_is_the_data_directory_sqlite(tmp_path):
    """Without ``--catalog`` the server serves ``<data-dir>/catalog.db``: runs stored by an
    embedded session before are served, and a generated key is printed."""
    from fibsem_ophyd import setup_session
    from fibsem_ophyd.plans import acquire_image
    from fibsem_ophyd.storage import open_remote_catalog

    data = tmp_path / "data"
    s = setup_session(config=SMALL, data_dir=data, seed=2)
    try:
        uid = s.RE(acquire_image(s.microscope.fib, hfw=70e-6)).plan_result
    finally:
        s.close()

    log = tmp_path / "serve.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [bin_path("fibsem-ophyd"), "serve", "--data-dir", str(data), "--port", "0"],
            env=facility_env(data), stdout=fh, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        def announced():
            text = log.read_text()
            if "Serving http://" not in text or "api_key=" not in text:
                return None
            url = text.split("Serving ", 1)[1].split()[0]
            key = text.split("api_key='", 1)[1].split("'", 1)[0]
            return url, key

        url, key = wait_for(announced, 90, "fibsem-ophyd serve", proc, log)
        assert f"catalog sqlite+aiosqlite:///{data / 'catalog.db'}" in log.read_text()

        def healthy():
            try:
                return httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 90, "served SQLite catalog", proc, log)
        assert httpx.get(f"{url}/api/v1/metadata/{uid}", timeout=10).status_code == 401
        catalog = open_remote_catalog(url, api_key=key)
        try:
            (img,) = load_images(catalog[uid])
        finally:
            catalog.context.close()
        assert img.beam == "ion" and img.pixel_size == pytest.approx(70e-6 / 384)
    finally:
        stop_process(proc)
    assert proc.returncode is not None


def test_catalog_uris_and_redaction(tmp_path):
    from fibsem_ophyd.storage.server import catalog_database_uri, redact_uri

    assert catalog_database_uri("postgresql://u:pw@db:5432/runs") == \
        "postgresql+asyncpg://u:pw@db:5432/runs"
    assert catalog_database_uri(tmp_path / "c.db") == f"sqlite+aiosqlite:///{tmp_path}/c.db"
    assert redact_uri("postgresql+asyncpg://u:s3cret@db:5432/runs") == \
        "postgresql+asyncpg://u:***@db:5432/runs"
    assert redact_uri("postgresql://u@db/runs") == "postgresql://u@db/runs"
