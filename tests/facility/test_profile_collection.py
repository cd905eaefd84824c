"""The IPython profile collection: ``ipython --profile-dir=profile_collection -c ...``."""

from __future__ import annotations

import subprocess

from fibsem_ophyd.storage import load_images, open_catalog

from .conftest import PROFILE_DIR, REPO, bin_path, facility_env


def run_ipython(code: str, env: dict, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run(
        [bin_path("ipython"), f"--profile-dir={PROFILE_DIR.relative_to(REPO)}", "-c", code],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )


def test_take_reference_images_from_ipython(tmp_path, small_config):
    env = facility_env(tmp_path, small_config)
    proc = subprocess.run(
        [bin_path("ipython"), "--profile-dir=profile_collection", "-c",
         "RE(take_reference_images(microscope))"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert "exit_status='success'" in proc.stdout, proc.stdout

    catalog = open_catalog(tmp_path)
    runs = list(catalog)
    assert len(runs) == 1
    run = catalog[runs[0]]
    assert run.start["plan_name"] == "take_reference_images"
    assert run.stop["exit_status"] == "success"
    (sem,) = load_images(run, "electron")
    (fib,) = load_images(run, "ion")
    assert sem.data.shape == (256, 384) and fib.data.shape == (256, 384)
    assert sem.data.std() > 0 and fib.data.std() > 0
    assert sem.metadata != fib.metadata


def test_served_embedded_catalog_from_env(tmp_path, small_config):
    """FIBSEM_OPHYD_SERVE=1: the embedded catalog is served from a child process, which
    stops with the session; the runs are in the data directory's catalog afterwards. A
    value that is not a flag is refused by name."""
    env = facility_env(tmp_path, small_config, FIBSEM_OPHYD_SERVE="1")
    code = "; ".join([
        "print('SERVER', type(session.extras.get('catalog_server')).__name__)",
        "print('SERVER_PID', session.extras['catalog_server'].process.pid)",
        "RE(take_reference_images(microscope))",
    ])
    proc = run_ipython(code, env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0 and "Traceback" not in out, out
    assert "SERVER CatalogServer" in out, out
    pid = int(out.split("SERVER_PID ")[1].split()[0])
    catalog = open_catalog(tmp_path)
    (uid,) = list(catalog)
    assert catalog[uid].stop["exit_status"] == "success"
    assert len(load_images(catalog[uid], "electron")) == 1
    import psutil

    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE

    bad = run_ipython("print('STARTED')", facility_env(tmp_path / "b", small_config,
                                                       FIBSEM_OPHYD_SERVE="maybe"))
    assert "FIBSEM_OPHYD_SERVE='maybe'" in bad.stdout + bad.stderr, bad.stdout + bad.stderr


def test_namespace_and_tiled_server_from_env(tiled_postgres, small_config):
    """Everything the issue lists is in the namespace; FIBSEM_OPHYD_TILED_* select the server."""
    code = "; ".join([
        "import inspect, fibsem_ophyd.plans as P",
        "names = ['RE', 'microscope', 'stage', 'electron_beam', 'ion_beam', 'sem', 'fib', "
        "'chamber', 'bp', 'bps', 'bpp', 'catalog', 'bec', 'session', *P.__all__]",
        "missing = [n for n in names if n not in get_ipython().user_ns]",
        "print('MISSING', missing)",
        "print('SAME', stage is microscope.stage and sem is microscope.sem "
        "and fib is microscope.fib and chamber is microscope.chamber)",
        "gens = [n for n in P.__all__ if inspect.isgeneratorfunction(getattr(P, n))]",
        "print('PLANS', len(gens) > 10 and "
        "all(globals()[n].__code__ is getattr(P, n).__code__ for n in gens))",
        "print('PLOTS', bec._plots_enabled)",
        "print('CATALOG', catalog.uri)",
        "print('WORKER', RE_WORKER, 'MAGICS', 'wa' in get_ipython().magics_manager.magics['line'])",
        "uid = RE(take_reference_images(microscope, md={'sample': 'ipython-env'})).plan_result",
        "print('UID', uid)",
    ])
    env = facility_env(tiled_postgres.data_dir, small_config,
                       FIBSEM_OPHYD_TILED_URI=tiled_postgres.uri,
                       FIBSEM_OPHYD_TILED_API_KEY=tiled_postgres.api_key)
    proc = run_ipython(code, env)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "MISSING []" in out, out
    assert "SAME True" in out, out
    assert "PLANS True" in out, out
    assert "PLOTS False" in out, out
    assert f"CATALOG {tiled_postgres.uri}" in out, out
    assert "WORKER False MAGICS True" in out, out
    uid = out.split("UID ", 1)[1].split()[0]
    with tiled_postgres.connected() as catalog:
        run = catalog[uid]
        assert run.start["sample"] == "ipython-env"
        assert len(load_images(run, "electron")) == len(load_images(run, "ion")) == 1
