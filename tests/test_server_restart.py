"""The real `loopml server` process killed mid-job and started again: the job is re-attached."""

from __future__ import annotations

import signal
import time

import pytest

from loopml.sdk.client import Client
from tests.process_support import free_port, start_server


def test_killed_control_plane_reattaches_its_running_job(tmp_path):
    port, log = free_port(), tmp_path / "server.log"
    client = Client(f"http://127.0.0.1:{port}")
    server = start_server(tmp_path, port, log)
    try:
        client.add_dataset("digits", "sample:digits")
        job = client.train("digits", "cnn", params={"epochs": 6})
        deadline = time.monotonic() + 300  # a cold worker on a loaded machine: TensorFlow's import
        while (client.job(job["id"]).get("progress") or {}).get("epoch", 0) < 2:
            assert time.monotonic() < deadline, "job never reached epoch 2"
            time.sleep(0.2)
        server.send_signal(signal.SIGKILL)  # no shutdown hooks run
        server.wait(10)
        with pytest.raises(Exception, match="not reachable"):
            client.job(job["id"])

        server = start_server(tmp_path, port, log)
        final = client.wait(job["id"], timeout=240)
        assert final["status"] == "succeeded", final["reason"]
        assert [e["status"] for e in final["events"]] == ["queued", "running", "succeeded"]
        assert client.model_version("digits-cnn")["version"] == 1
    finally:
        server.terminate()
        server.wait(30)
