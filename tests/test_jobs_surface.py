"""Jobs through the real CLI against a live control plane: exit codes of followed jobs, every job
kind in `jobs list --kind`, time limits, unregistered training, epoch metrics and TensorBoard
event files, which epoch the model holds, and prediction inputs checked before queueing."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.surface_support import assert_error, cli_runner

# build_model sleeps past the job's time limit before the first epoch starts: the limit trips
# deterministically, whatever the machine's speed
SLOW_MODEL = """
import time

import keras
from loopml.models.layers import Standardize


def build_model(hparams, schema):
    time.sleep(2)
    inputs = keras.Input(tuple(schema["input"]["shape"][1:]))
    x = Standardize(**schema["standardize"])(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(len(schema["classes"]), activation="softmax")(x)
    return keras.Model(inputs, outputs)
"""


@pytest.fixture
def run(live_server, monkeypatch):
    return cli_runner(live_server, monkeypatch)


def ok_json(result):
    assert result.exit_code == 0, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    return json.loads(result.stdout)


def one_line_error(result, code: int, *fragments: str) -> str:
    assert result.exit_code == code, f"exit {result.exit_code}\nstdout: {result.stdout}\nstderr: {result.stderr}"
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _tabular(run, tmp_path: Path) -> None:
    np.savez(tmp_path / "t.npz", x=np.random.default_rng(0).normal(size=(60, 4)), y=np.arange(60) % 3)
    ok_json(run("datasets", "add", "tab", str(tmp_path / "t.npz"), "--json"))


# ------------------------------------------------------------------ item 2: follow exits like --wait


def test_a_followed_job_that_fails_exits_1_and_so_does_following_its_logs(run, tmp_path):
    _tabular(run, tmp_path)
    broken = tmp_path / "broken.py"
    broken.write_text("def build_model(hparams, schema):\n    raise RuntimeError('deliberately broken')\n")

    followed = run("train", "--dataset", "tab", "--model", str(broken))  # no --wait: follow mode
    assert followed.exit_code == 1, followed.output
    job_id = followed.stdout.split("submitted job ", 1)[1].split()[0]
    assert f"job {job_id} failed" in followed.stdout and "deliberately broken" in followed.stdout

    as_json = run("train", "--dataset", "tab", "--model", str(broken), "--json")
    assert as_json.exit_code == 1 and json.loads(as_json.stdout)["status"] == "failed"

    logs = run("jobs", "logs", "-f", job_id)  # reattaching follows the job to its end: same exit status
    assert logs.exit_code == 1 and "RuntimeError" in logs.stdout and f"job {job_id} failed" in logs.stdout
    assert run("jobs", "logs", job_id).exit_code == 0  # printing the log is not following the job

    helptext = " ".join(run("train", "--help").stdout.split())
    assert "1 when it fails or is cancelled, with or without --wait" in helptext
    assert "Ctrl-C detaches with exit 0" in helptext and "Ctrl-C exits 130" in helptext


def test_ctrl_c_detaches_a_followed_job_with_exit_0_and_a_hint(live_server, tmp_path):
    from loopml.sdk.client import Client

    env = {**os.environ, "LOOPML_API_URL": live_server, "LOOPML_CONFIG": str(tmp_path / "none.toml")}
    cmd = [sys.executable, "-m", "loopml.cli.main"]
    subprocess.run([*cmd, "datasets", "add", "digits", "sample:digits"], env=env, check=True, timeout=300,
                   capture_output=True)
    proc = subprocess.Popen([*cmd, "train", "--dataset", "digits", "--model", "cnn", "--epochs", "200"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    first = proc.stdout.readline()  # "submitted job …": the command is following the job now
    assert first.startswith("submitted job "), first
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    job_id = first.split()[2]
    assert proc.returncode == 0, (out, err)
    assert f"detached; job {job_id} keeps running" in err and f"loopml jobs logs -f {job_id}" in err
    with Client(live_server) as c:
        assert c.job(job_id)["status"] in ("queued", "running")
        c.cancel(job_id)


# ------------------------------------------------------------------ item 8: every job kind


def test_jobs_list_filters_by_every_job_kind(run, live_server, settings):
    from loopml.core.jobkinds import JOB_KINDS
    from loopml.platform import Platform

    plat = Platform(settings, create_schema=False)
    try:  # a monitor run and a baseline job as their services queue them (kind + spec), never dispatched:
        for kind, spec in (("monitor", {"monitor": "m1", "run_id": 7}), ("baseline", {"model": "m", "version": 1})):
            job = plat.jobs.create(kind, spec)
            plat.jobs.transition(job["id"], "cancelled", expect=["queued"], reason="test")
    finally:
        plat.close()
    monitor = ok_json(run("jobs", "list", "--kind", "monitor", "--json"))
    assert [j["kind"] for j in monitor] == ["monitor"]
    assert "m1" in run("jobs", "list", "--kind", "monitor").stdout  # what it works on: the monitor
    assert [j["kind"] for j in ok_json(run("jobs", "list", "--kind", "baseline", "--json"))] == ["baseline"]
    for kind in JOB_KINDS:
        assert run("jobs", "list", "--kind", kind).exit_code == 0
        assert httpx.get(f"{live_server}/jobs", params={"kind": kind}).status_code == 200
    assert_error(httpx.get(f"{live_server}/jobs", params={"kind": "bogus"}), 400, "invalid_input", "kind")
    bad = run("jobs", "list", "--kind", "bogus")
    assert bad.exit_code == 2 and "monitor" in bad.stderr
    helptext = " ".join(run("jobs", "list", "--help").stdout.split())
    assert "train, predict, evaluate, monitor, baseline" in helptext
    with pytest.raises(ValueError, match="JOB_KINDS"):
        Platform(settings, create_schema=False).jobs.create("labelled", {})


# ------------------------------------------------------------------ items 7 and 12: time limit, --no-register


def test_a_time_limited_job_that_ran_all_its_epochs_succeeds_and_no_register_keeps_it_unregistered(run, tmp_path):
    ok_json(run("datasets", "add", "digits", "sample:digits", "--json"))
    slow = tmp_path / "slow.py"
    slow.write_text(SLOW_MODEL)
    # one batch per epoch; the limit (1 s) has passed before epoch 1 begins (build_model sleeps 2 s)
    done = run("train", "--dataset", "digits", "--model", str(slow), "-p", "epochs=1", "-p", "batch_size=4096",
               "--time-limit", "1", "--no-register", "--json")
    job = ok_json(done)
    assert job["status"] == "succeeded", job["reason"]
    assert job["result"]["registered"] is False and job["result"]["model_ref"] == f"job:{job['id']}"
    assert ok_json(run("models", "list", "--json")) == []
    registered = ok_json(run("jobs", "register", job["id"], "--name", "digits-slow", "--json"))
    assert registered["ref"] == "digits-slow:1" and registered["job_id"] == job["id"]

    # two epochs: the limit stops it after the first one, which is what a time limit is for
    cut = run("train", "--dataset", "digits", "--model", str(slow), "-p", "epochs=2", "-p", "batch_size=4096",
              "--time-limit", "1", "--json")
    assert cut.exit_code == 1
    stopped = json.loads(cut.stdout)
    assert stopped["status"] == "failed" and "time limit of 1 s reached after epoch 1" in stopped["reason"]
