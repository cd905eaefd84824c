"""Fixtures for the facility tests: the profile collection, the queue server, a PostgreSQL
Tiled server and 0MQ document streaming, each run as real subprocesses.

Every test here is marked ``facility`` (run in CI; deselect with ``-m "not facility"``).
Services (Redis on 127.0.0.1:6379, PostgreSQL on 127.0.0.1:5432) that are not reachable make
the tests that need them skip with the reason.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROFILE_DIR = REPO / "profile_collection"
STARTUP_DIR = PROFILE_DIR / "startup"
EXISTING_PLANS = STARTUP_DIR / "existing_plans_and_devices.yaml"
PERMISSIONS = STARTUP_DIR / "user_group_permissions.yaml"

REDIS_HOST, REDIS_PORT = "127.0.0.1", 6379
PG_HOST, PG_PORT = "127.0.0.1", 5432

#: small frames keep the simulator fast
SMALL_CONFIG = "electron:\n  resolution: [384, 256]\nion:\n  resolution: [384, 256]\n"


def pytest_collection_modifyitems(config, items):
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.facility)
            # one xdist worker runs all of them, in order: they share Redis and PostgreSQL
            item.add_marker(pytest.mark.xdist_group("facility"))


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "facility: profile collection / queue server / Tiled server tests "
        "(subprocesses, Redis, PostgreSQL)"
    )


def bin_path(name: str) -> str:
    """A console script of this environment (next to the interpreter), else from PATH."""
    candidate = Path(sys.executable).with_name(name)
    if candidate.exists():
        return str(candidate)
    found = shutil.which(name)
    if found is None:
        pytest.skip(f"{name} is not installed")
    return found


def port_open(host: str, port: int, timeout: float = 1.0) -> bool:
    with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=timeout):
        return True
    return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def unique(prefix: str) -> str:
    return f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"


def facility_env(data_dir: Path, config: Path | None = None, **extra: str) -> dict:
    """The environment of a profile-collection process writing into ``data_dir``."""
    env = dict(os.environ)
    for key in ("FIBSEM_OPHYD_TILED_URI", "FIBSEM_OPHYD_TILED_API_KEY", "FIBSEM_OPHYD_BACKEND",
                "DISPLAY", "WAYLAND_DISPLAY"):
        env.pop(key, None)
    env["FIBSEM_OPHYD_DATA_DIR"] = str(data_dir)
    if config is not None:
        env["FIBSEM_OPHYD_CONFIG"] = str(config)
    env["MPLBACKEND"] = "Agg"
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra)
    return env


@pytest.fixture
def small_config(tmp_path) -> Path:
    path = tmp_path / "microscope.yaml"
    path.write_text(SMALL_CONFIG)
    return path


def stop_process(proc: subprocess.Popen, timeout: float = 15.0, sig=signal.SIGINT) -> None:
    """Stop a process we started (and its process group if it leads one)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
    try:
        proc.wait(timeout)
        return
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
    proc.wait(10)


def wait_for(predicate, timeout: float, what: str, proc: subprocess.Popen | None = None,
             log: Path | None = None, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            tail = log.read_text()[-4000:] if log is not None and log.exists() else ""
            raise RuntimeError(f"{what}: process exited with {proc.returncode}\n{tail}")
        if time.monotonic() > deadline:
            tail = log.read_text()[-4000:] if log is not None and log.exists() else ""
            raise TimeoutError(f"{what}: not ready within {timeout} s\n{tail}")
        time.sleep(interval)


@contextlib.contextmanager
def sampling_rss(process, period: float = 0.1):
    """Sample ``process``'s resident memory every ``period`` s while the body runs.

    Yields the list of samples (bytes): its first entry is taken before the body, its last
    after it (``process`` is a ``psutil.Process``).
    """
    samples = [process.memory_info().rss]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(period):
            samples.append(process.memory_info().rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield samples
    finally:
        stop.set()
        sampler.join()
        samples.append(process.memory_info().rss)


# --------------------------------------------------------------------------- queue server
class QueueServer:
    """``start-re-manager`` on the profile collection, on unique ports and Redis prefix."""

    def __init__(self, tmp_path: Path, data_dir: Path, config: Path | None = None,
                 **env: str):
        self.control_addr = f"tcp://127.0.0.1:{free_port()}"
        self.info_addr = f"tcp://127.0.0.1:{free_port()}"
        self.redis_prefix = unique("fibsem_ophyd_test")
        self.data_dir = data_dir
        self.log = tmp_path / "re-manager.log"
        cmd = [
            bin_path("start-re-manager"),
            "--startup-dir", str(STARTUP_DIR),
            "--existing-plans-devices", str(EXISTING_PLANS),
            "--user-group-permissions", str(PERMISSIONS),
            "--update-existing-plans-devices", "NEVER",
            "--redis-addr", f"{REDIS_HOST}:{REDIS_PORT}",
            "--redis-name-prefix", self.redis_prefix,
            "--zmq-control-addr", self.control_addr,
            "--zmq-info-addr", self.info_addr,
            "--zmq-publish-console", "OFF",
        ]
        self._log_file = open(self.log, "wb")
        self.process = subprocess.Popen(
            cmd, cwd=tmp_path, env=facility_env(data_dir, config, **env), stdout=self._log_file,
            stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.api = None
        self._manager_pids: set[int] | None = None

    def connect(self, timeout: float = 60.0):
        from bluesky_queueserver_api.zmq import REManagerAPI

        self.api = REManagerAPI(zmq_control_addr=self.control_addr,
                                zmq_info_addr=self.info_addr, timeout_recv=5.0)

        def ready():
            try:
                return self.api.status(reload=True).get("manager_state") == "idle"
            except Exception:
                return False

        wait_for(ready, timeout, "RE Manager", self.process, self.log, interval=0.5)
        import psutil

        # the watchdog (our child) and the manager: the worker is the process added later
        root = psutil.Process(self.process.pid)
        self._manager_pids = {root.pid, *(c.pid for c in root.children(recursive=True))}
        return self.api

    def open_environment(self, timeout: float = 120.0, user_group: str | None = None,
                         user: str | None = None):
        """Open the RE Worker environment (as ``user`` of ``user_group`` when given) and wait
        until the manager is idle again; returns the API."""
        RM = self.api
        if user_group is not None:
            RM.user_group = user_group
        if user is not None:
            RM.user = user
        RM.environment_open()
        RM.wait_for_idle(timeout=timeout)
        return RM

    def worker_process(self):
        """The RE Worker (``psutil.Process``): the process ``environment_open`` started."""
        import psutil

        assert self._manager_pids is not None, "connect() first"
        root = psutil.Process(self.process.pid)
        workers = [c for c in root.children(recursive=True) if c.pid not in self._manager_pids]
        assert len(workers) == 1, f"expected one RE Worker process, found {workers}"
        return workers[0]

    def close(self) -> None:
        try:
            if self.api is not None and self.process.poll() is None:
                with contextlib.suppress(Exception):
                    if self.api.status(reload=True).get("worker_environment_exists"):
                        self.api.environment_close()
                        self.api.wait_for_idle(timeout=30)
                with contextlib.suppress(Exception):
                    self.api.send_request(method="manager_stop", params={"option": "safe_on"})
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.process.wait(15)
        finally:
            stop_process(self.process)
            if self.api is not None:
                from fibsem_ophyd.qserver import close_manager

                with contextlib.suppress(Exception):
                    close_manager(self.api)
            self._log_file.close()
            delete_redis_keys(f"{self.redis_prefix}*")


def delete_redis_keys(pattern: str) -> int:
    """Delete only the keys matching ``pattern`` (never FLUSHALL)."""
    import redis

    assert pattern and pattern != "*"
    r = redis.Redis(host=REDIS_HOST, port=REDIS_PORT)
    try:
        keys = list(r.scan_iter(match=pattern, count=500))
        return r.delete(*keys) if keys else 0
    finally:
        r.close()


@pytest.fixture
def redis_available():
    if not port_open(REDIS_HOST, REDIS_PORT):
        pytest.skip(f"Redis is not reachable on {REDIS_HOST}:{REDIS_PORT}")


@pytest.fixture
def queue_server(tmp_path, small_config, redis_available):
    """A running RE Manager (environment closed) writing into ``tmp_path / "data"``."""
    qs = QueueServer(tmp_path, tmp_path / "data", small_config)
    try:
        qs.connect()
        yield qs
    finally:
        qs.close()


# --------------------------------------------------------------------------- PostgreSQL Tiled
PG_USER = os.environ.get("FIBSEM_TEST_PG_USER", "postgres")


def _pg(statement: str, database: str = "postgres") -> None:
    import asyncio

    import asyncpg

    async def run():
        con = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database=database,
                                    timeout=10)
        try:
            await con.execute(statement)
        finally:
            await con.close()

    asyncio.run(run())


class TiledPostgresServer:
    """A Tiled server on a fresh PostgreSQL catalog database, exporter registered.

    ``command="tiled"``: ``tiled serve config`` on a config from
    :func:`fibsem_ophyd.storage.server.write_server_config`; ``command="fibsem"``:
    ``fibsem-ophyd serve --catalog postgresql://... --data-dir <data_dir> --port 0``.
    """

    def __init__(self, root: Path, command: str = "tiled"):
        assert command in ("tiled", "fibsem"), command
        self.command = command
        self.root = root
        self.data_dir = root / "data"  # setup_session(data_dir=...) of the writers
        self.images_dir = self.data_dir / "images"
        self.images_dir.mkdir(parents=True, exist_ok=True)
        self.database = unique("fibsem_ophyd_test").lower()
        self.catalog_uri = f"postgresql+asyncpg://{PG_USER}@{PG_HOST}:{PG_PORT}/{self.database}"
        self.api_key = uuid.uuid4().hex
        self.port = free_port()
        self.uri = f"http://127.0.0.1:{self.port}"
        self.log = root / "tiled-server.log"
        self.process = None
        self._log_file = None
        self._created = False

    def start(self) -> None:
        _pg(f'CREATE DATABASE "{self.database}"')
        self._created = True
        if self.command == "fibsem":
            self._start_fibsem()
        else:
            self._start_tiled()

        import httpx

        def healthy():
            try:
                return httpx.get(f"{self.uri}/healthz", timeout=1.0).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 90, "tiled server", self.process, self.log)

    def _start_fibsem(self) -> None:
        """``fibsem-ophyd serve`` with the key in the environment and a port it picks."""
        self._log_file = open(self.log, "wb")
        env = dict(os.environ, FIBSEM_OPHYD_TILED_API_KEY=self.api_key)
        env.pop("TILED_SINGLE_USER_API_KEY", None)
        self.process = subprocess.Popen(
            [bin_path("fibsem-ophyd"), "serve",
             "--catalog", f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{self.database}",
             "--data-dir", str(self.data_dir), "--port", "0"],
            cwd=self.root, env=env, stdout=self._log_file, stderr=subprocess.STDOUT,
            start_new_session=True,
        )

        def announced():
            for line in self.log.read_text().splitlines():
                if line.startswith("Serving http://"):
                    return line.split()[1]
            return None

        self.uri = wait_for(announced, 90, "fibsem-ophyd serve", self.process, self.log)
        self.port = int(self.uri.rsplit(":", 1)[1])

    def _start_tiled(self) -> None:
        from fibsem_ophyd.storage.server import (
            catalog_init_command,
            serve_command,
            write_server_config,
        )

        root = self.root
        init = subprocess.run(catalog_init_command(self.catalog_uri), capture_output=True,
                              text=True, timeout=120)
        if init.returncode != 0:
            raise RuntimeError(f"tiled catalog init failed:\n{init.stdout}{init.stderr}")
        config = write_server_config(
            root / "tiled.yml", self.catalog_uri,
            writable_storage=[root / "server-data", f"duckdb:///{root / 'tables.duckdb'}"],
            readable_storage=[self.images_dir],
        )
        self._log_file = open(self.log, "wb")
        env = dict(os.environ, TILED_SINGLE_USER_API_KEY=self.api_key)
        self.process = subprocess.Popen(
            serve_command(config, port=self.port), cwd=root, env=env, stdout=self._log_file,
            stderr=subprocess.STDOUT, start_new_session=True,
        )

    def client(self, **kwargs):
        from fibsem_ophyd.storage import open_remote_catalog

        return open_remote_catalog(self.uri, api_key=self.api_key, **kwargs)

    @contextlib.contextmanager
    def connected(self, **kwargs):
        """A client (:meth:`client`) whose HTTP connections are closed on leaving."""
        catalog = self.client(**kwargs)
        try:
            yield catalog
        finally:
            catalog.context.close()

    def close(self) -> None:
        try:
            if self.process is not None:
                stop_process(self.process, sig=signal.SIGINT)
            if self._log_file is not None:
                self._log_file.close()
        finally:
            if getattr(self, "_created", False):
                _pg(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)')
                self._created = False


@pytest.fixture(scope="session")
def tiled_postgres(tmp_path_factory):
    """A Tiled server on a fresh PostgreSQL database for the test session (dropped after)."""
    if not port_open(PG_HOST, PG_PORT):
        pytest.skip(f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}")
    pytest.importorskip("asyncpg")
    server = TiledPostgresServer(tmp_path_factory.mktemp("tiled_pg"))
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def served_catalog(served_postgres):
    """A client of :func:`served_postgres`, closed after the test."""
    with served_postgres.connected() as catalog:
        yield catalog


@pytest.fixture
def pg_catalog(tiled_postgres):
    """A client of :func:`tiled_postgres`, closed after the test."""
    with tiled_postgres.connected() as catalog:
        yield catalog


def refused_without_key(uri: str) -> Exception:
    """The error of connecting to ``uri`` with no API key (the client's HTTP connections
    closed either way); fails if the connection is accepted."""
    from fibsem_ophyd.storage import open_remote_catalog

    try:
        catalog = open_remote_catalog(uri, api_key=None)
    except Exception as exc:
        return exc
    try:
        list(catalog)
    except Exception as exc:
        return exc
    finally:
        catalog.context.close()
    raise AssertionError(f"{uri} accepted a client without an API key")


@pytest.fixture(scope="session")
def served_postgres(tmp_path_factory):
    """``fibsem-ophyd serve`` on a fresh PostgreSQL database for the test session."""
    if not port_open(PG_HOST, PG_PORT):
        pytest.skip(f"PostgreSQL is not reachable on {PG_HOST}:{PG_PORT}")
    pytest.importorskip("asyncpg")
    server = TiledPostgresServer(tmp_path_factory.mktemp("served_pg"), command="fibsem")
    try:
        server.start()
        yield server
    finally:
        server.close()
