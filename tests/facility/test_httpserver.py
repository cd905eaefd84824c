"""bluesky-httpserver in front of the queue server, with the facility configuration
(``profile_collection/httpserver/config.yml``): no key -> refused; each user's queue-server
group comes from the server's table, never from the client."""

from __future__ import annotations

import os
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from fibsem_ophyd.access import UserGroups

from .conftest import PROFILE_DIR, bin_path, free_port, stop_process, wait_for

CONFIG = PROFILE_DIR / "httpserver" / "config.yml"
PASSWORDS = {"alice": uuid.uuid4().hex, "olga": uuid.uuid4().hex, "mallory": uuid.uuid4().hex}


def _server_config(tmp_path: Path) -> Path:
    """The committed facility configuration; only the login provider differs (PAM needs
    system accounts): bluesky-httpserver's dictionary authenticator, same users."""
    config = yaml.safe_load(CONFIG.read_text())
    assert config["authentication"]["allow_anonymous_access"] is False
    config["authentication"]["providers"] = [{
        "provider": "facility",
        "authenticator": "bluesky_httpserver.authenticators:DictionaryAuthenticator",
        "args": {"users_to_passwords": PASSWORDS},
    }]
    path = tmp_path / "httpserver.yml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def http_server(tmp_path, queue_server):
    port = free_port()
    log = tmp_path / "httpserver.log"
    env = {
        "QSERVER_HTTP_SERVER_CONFIG": str(_server_config(tmp_path)),
        "QSERVER_ZMQ_CONTROL_ADDRESS": queue_server.control_addr,
        "QSERVER_ZMQ_INFO_ADDRESS": queue_server.info_addr,
        "QSERVER_HTTP_SERVER_SERVER_SECRET_KEYS": uuid.uuid4().hex,
        "QSERVER_HTTP_SERVER_DATABASE_URI": f"sqlite:///{tmp_path / 'httpserver.sqlite'}",
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [bin_path("start-bluesky-httpserver"), "--host", "127.0.0.1", "--port", str(port)],
            env={**os.environ, **env}, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    uri = f"http://127.0.0.1:{port}"

    def up():
        try:
            return httpx.get(f"{uri}/api", timeout=2).status_code < 500
        except httpx.HTTPError:
            return False

    try:
        wait_for(up, 60, "bluesky-httpserver", proc, log)
        yield uri, queue_server
    finally:
        stop_process(proc)


def _api_key(uri: str, user: str) -> str:
    """Log in as ``user`` and make an API key, as a user does once."""
    r = httpx.post(f"{uri}/api/auth/provider/facility/token",
                   data={"username": user, "password": PASSWORDS[user]}, timeout=10)
    r.raise_for_status()
    token = r.json()["access_token"]
    r = httpx.post(f"{uri}/api/auth/apikey", json={"expires_in": 3600},
                   headers={"Authorization": f"Bearer {token}"}, timeout=10)
    r.raise_for_status()
    return r.json()["secret"]


def _add(uri, key, name, *args, user_group=None, **kwargs):
    body = {"item": {"item_type": "plan", "name": name, "args": list(args), "kwargs": kwargs}}
    if user_group is not None:  # what a client may claim; the server must ignore it
        body["user_group"] = user_group
    headers = {"Authorization": f"ApiKey {key}"} if key else {}
    return httpx.post(f"{uri}/api/queue/item/add", json=body, headers=headers, timeout=30)


def _queue(uri, key):
    r = httpx.get(f"{uri}/api/queue/get", headers={"Authorization": f"ApiKey {key}"},
                  timeout=10)
    r.raise_for_status()
    return [(item["name"], item["user"], item["user_group"]) for item in r.json()["items"]]


def test_keys_and_groups(http_server):
    uri, qs = http_server
    # no key, a made-up key, a wrong password: refused, nothing queued
    assert _add(uri, None, "acquire_image", "sem").status_code == 401
    assert _add(uri, uuid.uuid4().hex, "acquire_image", "sem").status_code == 401
    r = httpx.post(f"{uri}/api/auth/provider/facility/token",
                   data={"username": "alice", "password": "guess"}, timeout=10)
    assert r.status_code == 401

    alice, olga = _api_key(uri, "alice"), _api_key(uri, "olga")
    assert _queue(uri, alice) == []

    # the observer: imaging yes; moving, milling, saving positions no -- also when the
    # client claims the primary group
    r = _add(uri, olga, "acquire_image", "sem")
    assert r.status_code == 200 and r.json()["success"], r.text
    for name, args, kwargs in [("stable_move", ["microscope"], {"dx": 1e-6, "dy": 0.0}),
                               ("save_position", ["microscope", "site-1"], {}),
                               ("mill_stages", ["microscope"], {"stages": []})]:
        for claimed in (None, "primary"):
            r = _add(uri, olga, name, *args, user_group=claimed, **kwargs)
            refused = r.status_code != 200 or not r.json()["success"]
            assert refused, (name, claimed, r.text)
            assert f"Plan '{name}' is not in the list of allowed plans" in r.text, r.text
    # the observer may not start the queue (an observer's item runs when a primary user
    # runs the queue)
    r = httpx.post(f"{uri}/api/queue/start", headers={"Authorization": f"ApiKey {olga}"},
                   timeout=10)
    assert r.status_code == 401 and "Requires scopes ['write:queue:control']" in r.text, r.text

    # the primary user: moves and saved positions are accepted
    r = _add(uri, alice, "save_position", "microscope", "site-1")
    assert r.status_code == 200 and r.json()["success"], r.text
    # a user with a valid password whom the API table does not list cannot even log in
    r = httpx.post(f"{uri}/api/auth/provider/facility/token",
                   data={"username": "mallory", "password": PASSWORDS["mallory"]}, timeout=10)
    assert r.status_code == 401 and "not authorized" in r.text, r.text

    # the queue holds the two accepted items, each with the group the server gave its user
    assert _queue(uri, alice) == [("acquire_image", "olga", "observers"),
                                  ("save_position", "alice", "primary")]
    assert qs.api.status(reload=True)["items_in_queue"] == 2

def test_user_groups_policy():
    policy = UserGroups(users={"alice": "primary"})
    assert policy.get_resource_group("alice") == "primary"
    assert policy.get_resource_group("eve") == "observers"
    assert UserGroups(default_group="nobody").get_resource_group("eve") == "nobody"
    with pytest.raises(ValueError, match=r"group 'prim ary' of user 'alice'"):
        UserGroups(users={"alice": "prim ary"})
    with pytest.raises(ValueError, match=r"user name 'a/b'"):
        UserGroups(users={"a/b": "primary"})
    with pytest.raises(ValueError, match=r"default_group ''"):
        UserGroups(default_group="")
    with pytest.raises(ValueError, match="users must map"):
        UserGroups(users=["alice"])  # type: ignore[arg-type]
