"""Runs written over HTTP to a Tiled server whose catalog is a PostgreSQL database."""

from __future__ import annotations

import httpx
import pytest

from fibsem_ophyd.storage import iter_backup, load_images, search_runs

from .conftest import SMALL_CONFIG, refused_without_key

SMALL = {"electron": {"resolution": [384, 256]}, "ion": {"resolution": [384, 256]}}
assert "384, 256" in SMALL_CONFIG


@pytest.fixture(scope="module")
def written(tiled_postgres):
    """Three runs written by a session pointed at the server: two samples, two plans."""
    from fibsem_ophyd import setup_session
    from fibsem_ophyd.plans import acquire_image, take_reference_images

    s = setup_session(config=SMALL, data_dir=tiled_postgres.data_dir, seed=3,
                      tiled_uri=tiled_postgres.uri, api_key=tiled_postgres.api_key)
    try:
        uids = {
            "L1": s.RE(take_reference_images(s.microscope, hfw=100e-6,
                                             md={"sample": "L1"})).plan_result,
            "L2": s.RE(take_reference_images(s.microscope, hfw=150e-6,
                                             md={"sample": "L2", "lamella": "pg-lam-7"}))
            .plan_result,
            "L1-sem": s.RE(acquire_image(s.microscope.sem, hfw=50e-6,
                                         md={"sample": "L1"})).plan_result,
        }
    finally:
        s.close()
    return uids


def test_search_by_sample_and_plan(tiled_postgres, pg_catalog, written):
    from tiled.queries import Key

    catalog = pg_catalog
    assert set(written.values()) <= set(catalog)
    l1 = search_runs(catalog, sample="L1")
    assert sorted(l1) == sorted([written["L1"], written["L1-sem"]])
    # (other tests share the server: restrict to this module's runs)
    refs = set(catalog.search(Key("start.plan_name") == "take_reference_images"))
    assert refs & set(written.values()) == {written["L1"], written["L2"]}
    both = search_runs(catalog, sample="L1", plan_name="acquire_image")
    assert list(both) == [written["L1-sem"]]
    assert len(search_runs(catalog, sample="nope")) == 0
    assert list(search_runs(catalog, lamella="pg-lam-7")) == [written["L2"]]


def test_images_read_back(tiled_postgres, pg_catalog, written):
    catalog = pg_catalog
    run = catalog[written["L1"]]
    assert run.stop["exit_status"] == "success"
    (sem,) = load_images(run, "electron")
    (fib,) = load_images(run, "ion")
    assert sem.data.shape == fib.data.shape == (256, 384)
    assert sem.data.std() > 0 and fib.data.std() > 0
    assert sem.pixel_size == pytest.approx(100e-6 / 384)
    (one,) = load_images(catalog[written["L1-sem"]], "primary")
    assert one.pixel_size == pytest.approx(50e-6 / 384)


def test_documents_replay(tiled_postgres, pg_catalog, written):
    """``run.documents()`` needs the json-seq exporter: registered by the server config."""
    catalog = pg_catalog
    uid = written["L2"]
    docs = list(catalog[uid].documents())
    names = [n for n, _ in docs]
    assert names[0] == "start" and names[-1] == "stop"
    assert names.count("descriptor") == 2 and names.count("event") == 2
    assert docs[0][1]["uid"] == uid and docs[0][1]["sample"] == "L2"
    assert docs[-1][1]["exit_status"] == "success"

    # Same run in the writer's JSON-lines backup: same start/stop, same event data keys.
    backup = dict(_first_of_each(iter_backup(tiled_postgres.data_dir / "backup" / f"{uid}.jsonl")))
    assert backup["start"] == docs[0][1]
    assert backup["stop"] == docs[-1][1]

    # The replayed documents drive a callback like live ones.
    from event_model import RunRouter

    seen = []
    router = RunRouter([lambda name, start: ([lambda n, d: seen.append(n)], [])])
    for name, doc in docs:
        router(name, doc)
    assert seen[0] == "start" and seen[-1] == "stop"


def _first_of_each(pairs):
    out = {}
    for name, doc in pairs:
        out.setdefault(name, doc)
        if name == "stop":
            out["stop"] = doc
    return out.items()


def test_refused_without_key(tiled_postgres, written):
    url = f"{tiled_postgres.uri}/api/v1/metadata/"
    assert httpx.get(url, timeout=10).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Apikey wrong"}, timeout=10).status_code == 401
    ok = httpx.get(url, headers={"Authorization": f"Apikey {tiled_postgres.api_key}"},
                   timeout=10)
    assert ok.status_code == 200
    assert "requires API key" in str(refused_without_key(tiled_postgres.uri))
