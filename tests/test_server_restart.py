"""The real `loopml server` process killed mid-job and started again: the job is re-attached."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from loopml.sdk.client import Client


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(home: Path, port: int) -> subprocess.Popen:
    env = {**os.environ, "LOOPML_HOME": str(home), "LOOPML_PORT": str(port), "LOOPML_RECONCILE_INTERVAL_S": "0.2",
           "LOOPML_SERVING_PORT": "0"}  # never the fixed 8081 (another server may hold it)
    proc = subprocess.Popen([sys.executable, "-m", "loopml.cli.main", "server"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = Client(f"http://127.0.0.1:{port}")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            client.health()
            return proc
        except Exception:  # noqa: BLE001 - not up yet
            if proc.poll() is not None:
                pytest.fail(f"loopml server exited with {proc.returncode}")
            time.sleep(0.2)
    proc.kill()
    pytest.fail("loopml server did not start")


def test_killed_control_plane_reattaches_its_running_job(tmp_path):
    port = _free_port()
    client = Client(f"http://127.0.0.1:{port}")
    server = _start(tmp_path, port)
    try:
        client.add_dataset("digits", "sample:digits")
        job = client.train("digits", "cnn", params={"epochs": 6})
        deadline = time.monotonic() + 120
        while (client.job(job["id"]).get("progress") or {}).get("epoch", 0) < 2:
            assert time.monotonic() < deadline, "job never reached epoch 2"
            time.sleep(0.2)
        server.send_signal(signal.SIGKILL)  # no shutdown hooks run
        server.wait(10)
        with pytest.raises(Exception, match="not reachable"):
            client.job(job["id"])

        server = _start(tmp_path, port)
        final = client.wait(job["id"], timeout=240)
        assert final["status"] == "succeeded", final["reason"]
        assert [e["status"] for e in final["events"]] == ["queued", "running", "succeeded"]
        assert client.model_version("digits-cnn")["version"] == 1
    finally:
        server.terminate()
        server.wait(30)
