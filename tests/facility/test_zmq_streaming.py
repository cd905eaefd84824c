"""Live documents through ``bluesky-0MQ-proxy`` to a consumer in another process."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from .conftest import SMALL_CONFIG, bin_path, free_port, stop_process, wait_for

CONSUMER = Path(__file__).with_name("_zmq_consumer.py")
SMALL = {"electron": {"resolution": [384, 256]}, "ion": {"resolution": [384, 256]}}
assert "384, 256" in SMALL_CONFIG


@pytest.fixture
def proxy(tmp_path):
    in_port, out_port = free_port(), free_port()
    log = tmp_path / "proxy.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [bin_path("bluesky-0MQ-proxy"), "--in-address", str(in_port),
             "--out-address", str(out_port)],
            stdout=fh, stderr=subprocess.STDOUT, start_new_session=True,
        )
    try:
        time.sleep(0.5)
        if proc.poll() is not None:
            raise RuntimeError(f"bluesky-0MQ-proxy exited: {log.read_text()}")
        yield f"localhost:{in_port}", f"localhost:{out_port}"
    finally:
        stop_process(proc, timeout=5)


def test_consumer_process_receives_run(tmp_path, proxy):
    from bluesky.callbacks.zmq import Publisher

    from fibsem_ophyd import setup_session
    from fibsem_ophyd.plans import take_reference_images

    in_addr, out_addr = proxy
    out_file = tmp_path / "received.jsonl"
    consumer_log = tmp_path / "consumer.log"
    with open(consumer_log, "w") as fh:
        consumer = subprocess.Popen(
            [sys.executable, str(CONSUMER), out_addr, str(out_file), "1"],
            stdout=fh, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        )
    s = setup_session(config=SMALL, data_dir=tmp_path / "data", seed=2)
    try:
        wait_for(lambda: "READY" in consumer_log.read_text(), 60, "consumer", consumer,
                 consumer_log)
        publisher = Publisher(in_addr)
        s.RE.subscribe(publisher)
        time.sleep(1.0)  # 0MQ slow joiner: let both subscriptions reach the proxy
        uid = s.RE(take_reference_images(s.microscope, md={"sample": "zmq"})).plan_result
        consumer.wait(60)
        assert consumer.returncode == 0, consumer_log.read_text()
        publisher.close()
    finally:
        stop_process(consumer, timeout=5)
        s.close()

    received = [json.loads(line) for line in out_file.read_text().splitlines()]
    names = [n for n, _ in received]
    assert names[0] == "start" and names[-1] == "stop", names
    assert received[0][1]["uid"] == uid and received[0][1]["sample"] == "zmq"
    assert names.count("descriptor") == 2 and names.count("event") == 2
    assert "stream_resource" in names and "stream_datum" in names
    assert received[-1][1]["exit_status"] == "success"
    # the streamed run is the stored run
    stored = s.catalog[uid]
    assert stored.start["uid"] == uid
    # the documents are the ones stored in the JSON-lines backup, in the same order
    from fibsem_ophyd.storage import iter_backup

    backup = list(iter_backup(tmp_path / "data" / "backup" / f"{uid}.jsonl"))
    assert [n for n, _ in backup] == names
