"""Training and batch-prediction jobs end to end: real workers, real Keras, real stores."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

from loopml.controlplane import ControlLoop
from loopml.core.errors import InvalidInput, NotFound
from loopml.core.settings import Settings
from loopml.datasets.service import register
from loopml.platform import Platform
from loopml.training.service import submit_prediction, submit_training, upload_user_file
from tests.process_support import wait_job

pytest_plugins = ("tests.backends",)


@pytest.fixture
def plat(tmp_path):
    p = Platform(Settings(home=tmp_path, reconcile_interval_s=0.2, max_concurrent_jobs=2))
    register(p, "digits", "sample:digits")
    yield p
    p.close()


@pytest.fixture
def loop(plat):
    lp = ControlLoop(plat)
    lp.start()
    yield lp
    lp.stop()


def test_cnn_job_records_everything_and_registers_a_version(plat, loop, tmp_path):
    job = submit_training(plat, dataset="digits", model="cnn", params={"epochs": "2", "batch_size": 32})
    assert job["status"] == "queued"
    done = wait_job(plat, job["id"])
    assert done["status"] == "succeeded", done["reason"]

    statuses = [e["status"] for e in plat.jobs.events(job["id"])]
    assert statuses == ["queued", "running", "succeeded"]
    assert done["started_at"] and done["ended_at"] >= done["started_at"]

    epochs = plat.jobs.metrics(job["id"])
    assert [m["epoch"] for m in epochs] == [1, 2]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds", "samples_per_s"):
        assert key in epochs[-1]
    ckpts = plat.artifacts.list(f"jobs/{job['id']}/checkpoints")
    assert [k.rsplit("/", 1)[-1] for k in ckpts] == ["epoch-001.npz", "epoch-002.npz", "model.keras"]

    ev = done["result"]["evaluation"]
    test_rows = plat.datasets.get("digits")["splits"]["counts"]["test"]
    assert np.array(ev["confusion_matrix"]).sum() == test_rows == ev["samples"]
    assert set(ev["per_class"]) == {str(i) for i in range(10)}
    assert 0.0 <= ev["per_class"]["3"]["precision"] <= 1.0
    assert any("test accuracy" in line["text"] for line in plat.jobs.logs(job["id"]))
    # restore_best (default): the version holds the lowest-val_loss epoch's weights
    best = min(epochs, key=lambda m: m["val_loss"])["epoch"]
    assert done["result"]["metrics"]["best_epoch"] == best
    assert any(f"restored the weights of epoch {best}" in line["text"] for line in plat.jobs.logs(job["id"]))

    mv = plat.models.get("digits-cnn")
    assert mv["version"] == 1 and mv["dataset"] == "digits:1" and mv["job_id"] == job["id"]
    assert mv["lineage"]["frameworks"]["keras"] and mv["hparams"]["epochs"] == 2
    assert "onnx" in mv["runtimes"]
    names = {k.rsplit("/", 1)[-1] for k in plat.artifacts.list(mv["artifact_prefix"])}
    assert {"model.keras", "loopml.json", "model.onnx", "reference.json"} <= names

    # Raw pixels through the saved version give what the training process computed.
    from loopml.models.bundle import load_bundle

    folder = plat.artifacts.download_dir(mv["artifact_prefix"], tmp_path / "bundle")
    reference = json.loads((folder / "reference.json").read_text())
    raw = np.asarray(reference["inputs"])
    for runtime in ("onnx", "keras"):
        got = load_bundle(folder, runtime=runtime).predict_proba(raw)
        np.testing.assert_allclose(got, np.asarray(reference["probabilities"]), atol=1e-4)

    # Batch prediction over the held-out split, with the truth beside each answer.
    pj = submit_prediction(plat, model="digits-cnn:1", input="digits:test", limit=7)
    pdone = wait_job(plat, pj["id"])
    assert pdone["status"] == "succeeded", pdone["reason"]
    lines = plat.artifacts.get_bytes(pdone["result"]["output_key"]).decode().splitlines()
    assert lines[0].startswith("row,truth,label,confidence,p_0") and len(lines) == 8


def test_invalid_requests_are_refused_before_queueing(plat):
    with pytest.raises(InvalidInput, match="epochs"):
        submit_training(plat, dataset="digits", model="cnn", params={"epochs": "abc"})
    with pytest.raises(InvalidInput, match="learning_rate"):  # the message lists the valid names
        submit_training(plat, dataset="digits", model="cnn", params={"bogus": 1})
    with pytest.raises(InvalidInput, match="rnn"):
        submit_training(plat, dataset="digits", model="rnn")
    with pytest.raises(NotFound, match="nope"):
        submit_training(plat, dataset="nope", model="cnn")
    with pytest.raises(InvalidInput):
        submit_training(plat, dataset="digits", model="cnn", time_limit_s=-1)
    with pytest.raises(NotFound):
        submit_prediction(plat, model="no-such-model", input="digits:test")
    assert plat.jobs.list() == []


def test_user_model_that_raises_fails_with_reason_and_traceback(plat, loop):
    key = upload_user_file(plat, "broken.py", b"def build_model(hparams, schema):\n    raise ValueError('boom in user code')\n")
    job = submit_training(plat, dataset="digits", model=f"file:{key}", params={"epochs": 1})
    done = wait_job(plat, job["id"])
    assert done["status"] == "failed"
    assert "boom in user code" in done["reason"] and "\n" not in done["reason"]
    assert "build_model in 'broken.py' raised" in done["reason"]  # the user's file, not a temporary copy
    logs = "\n".join(line["text"] for line in plat.jobs.logs(job["id"]))
    assert "Traceback" in logs and "boom in user code" in logs
    with pytest.raises(NotFound):
        plat.models.get("digits-custom")


def test_user_model_file_trains_and_registers(plat, loop):
    code = b'''
import keras
from loopml.models.layers import Standardize

def build_model(hparams, schema):
    inp = keras.Input(shape=tuple(schema["input"]["shape"][1:]))
    x = Standardize(**schema["standardize"])(inp)
    x = keras.layers.Flatten()(x)
    x = keras.layers.Dense(int(hparams.get("width", "16")), activation="relu")(x)
    out = keras.layers.Dense(len(schema["classes"]), activation="softmax")(x)
    return keras.Model(inp, out)
'''
    key = upload_user_file(plat, "tiny.py", code)
    job = submit_training(plat, dataset="digits", model=f"file:{key}", params={"epochs": 2, "width": 8},
                          register_as="digits-tiny")
    done = wait_job(plat, job["id"])
    assert done["status"] == "succeeded", done["reason"]
    assert plat.models.get("digits-tiny")["hparams"]["width"] == "8"


def test_cancel_stops_a_running_job(plat, loop):
    job = submit_training(plat, dataset="digits", model="cnn", params={"epochs": 500})
    wait_job(plat, job["id"], until=("running",), check=lambda j: (j["progress"] or {}).get("epoch", 0) >= 1)
    assert plat.jobs.request_cancel(job["id"])["cancel_requested"]
    done = wait_job(plat, job["id"], timeout=60)
    assert done["status"] == "cancelled"
    with pytest.raises(NotFound):
        plat.models.get("digits-cnn")


def test_cancel_of_a_queued_job_is_immediate(plat):
    job = submit_training(plat, dataset="digits", model="cnn", params={"epochs": 1})
    assert plat.jobs.request_cancel(job["id"])["status"] == "cancelled"


def test_time_limit_fails_then_resume_continues_from_checkpoint(plat, loop):
    # the limit counts from dispatch (process start, imports, data: 10 s, 20+ s when the machine is
    # shared with other suites): 40 s leaves room for whole epochs; a limit reached before epoch 1
    # finishes leaves nothing to resume
    job = submit_training(plat, dataset="digits", model="cnn", params={"epochs": 500, "batch_size": 64},
                          time_limit_s=40)
    done = wait_job(plat, job["id"])
    assert done["status"] == "failed" and "time limit" in done["reason"] and "--resume" in done["reason"]
    ran = len(plat.jobs.metrics(job["id"]))
    assert ran >= 1

    with pytest.raises(InvalidInput, match="continues"):
        submit_training(plat, dataset="digits", model="mlp", resume=job["id"])
    resumed = submit_training(plat, resume=job["id"], params={"epochs": ran + 1})
    assert resumed["spec"]["resume_from"] == job["id"]
    rdone = wait_job(plat, resumed["id"])
    assert rdone["status"] == "succeeded", rdone["reason"]
    assert [m["epoch"] for m in plat.jobs.metrics(resumed["id"])] == [ran + 1]
    assert plat.models.get("digits-cnn")["lineage"]["resumed_from"] == job["id"]


def test_control_plane_restart_reattaches_or_fails_jobs(plat):
    first = ControlLoop(plat)
    first.start()
    alive = submit_training(plat, dataset="digits", model="cnn", params={"epochs": 6})
    doomed = submit_training(plat, dataset="digits", model="cnn", params={"epochs": 500})
    for j in (alive, doomed):
        wait_job(plat, j["id"], until=("running",), check=lambda j: (j["progress"] or {}).get("epoch", 0) >= 1)
    first.stop()  # the control plane goes away; its workers keep running

    pid = plat.jobs.get(doomed["id"])["worker"]["pid"]
    os.killpg(pid, signal.SIGKILL)  # ...and one of them dies while nobody watches
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{pid}").exists():
        time.sleep(0.1)

    second = ControlLoop(plat)  # a new control plane with a new executor
    second.start()
    try:
        failed = wait_job(plat, doomed["id"], timeout=120)
        assert failed["status"] == "failed" and "gone" in failed["reason"]
        ok = wait_job(plat, alive["id"])
        assert ok["status"] == "succeeded", ok["reason"]
    finally:
        second.stop()


def test_prediction_streams_an_uploaded_csv_larger_than_one_chunk(plat, loop):
    from sklearn.datasets import load_digits

    job = submit_training(plat, dataset="digits", model="cnn", params={"epochs": 1})
    assert wait_job(plat, job["id"])["status"] == "succeeded"
    d = load_digits()
    rows = np.vstack([d.data] * 2)[:2500]  # 2,500 rows: three chunks of at most 1,024
    header = ",".join([f"px{i}" for i in range(64)] + ["label"])
    body = "\n".join(",".join(str(int(v)) for v in r) + f",{int(t)}" for r, t in zip(rows, np.tile(d.target, 2)))
    key = upload_user_file(plat, "pixels.csv", (header + "\n" + body + "\n").encode(), kind="input")
    pj = submit_prediction(plat, model="digits-cnn", input=f"upload:{key}")
    done = wait_job(plat, pj["id"])
    assert done["status"] == "succeeded", done["reason"]
    assert done["result"]["rows"] == 2500 and done["result"]["accuracy"] > 0.5
    lines = plat.artifacts.get_bytes(done["result"]["output_key"]).decode().splitlines()
    assert len(lines) == 2501 and lines[-1].startswith("2499,")


def test_a_dataset_with_missing_files_fails_the_job_with_a_clear_reason(plat, loop):
    ds = plat.datasets.get("digits")
    plat.artifacts.delete(ds["artifact_prefix"] + "/splits.npz")
    job = submit_training(plat, dataset="digits", model="cnn", params={"epochs": 1})
    done = wait_job(plat, job["id"])
    assert done["status"] == "failed"
    assert "digits:1 is damaged" in done["reason"] and "splits.npz" not in done["reason"].split("found:")[-1]


def test_early_stopping_stops_before_the_epoch_budget(plat, loop):
    # a learning rate so high that the validation loss soon stops improving
    job = submit_training(plat, dataset="digits", model="cnn",
                          params={"epochs": 40, "patience": 1, "learning_rate": 0.05})
    done = wait_job(plat, job["id"])
    assert done["status"] == "succeeded", done["reason"]
    assert done["result"]["epochs_run"] < 40


def test_a_job_runs_against_postgresql_and_s3(tmp_path, postgres_url, moto_endpoint, s3_bucket):
    """The worker gets only the two store locations: the team setup works like the laptop one."""
    settings = Settings(home=tmp_path, database_url=postgres_url, artifact_uri=f"s3://{s3_bucket}/loopml",
                        s3_endpoint_url=moto_endpoint, reconcile_interval_s=0.2)
    p = Platform(settings)
    lp = ControlLoop(p)
    lp.start()
    try:
        assert register(p, "digits", "sample:digits")["created"]
        assert not register(p, "digits", "sample:digits")["created"]  # same content, same version
        job = submit_training(p, dataset="digits", model="cnn", params={"epochs": 1})
        done = wait_job(p, job["id"])
        assert done["status"] == "succeeded", done["reason"]
        mv = p.models.get("digits-cnn")
        assert mv["artifact_prefix"].startswith("models/digits-cnn/")
        assert p.artifacts.exists(mv["artifact_prefix"] + "/model.onnx")
        from tests.backends import s3_client

        keys = [o["Key"] for o in s3_client(moto_endpoint).list_objects_v2(Bucket=s3_bucket)["Contents"]]
        assert any(k.startswith("loopml/jobs/") and k.endswith("epoch-001.npz") for k in keys)
        # TensorBoard event files are written locally and uploaded into the store (issue 10, item 18)
        board = f"loopml/jobs/{job['id']}/tensorboard/"
        assert any(k.startswith(board + "train/events.out.tfevents.") for k in keys), keys
        assert any(k.startswith(board + "validation/events.out.tfevents.") for k in keys), keys
    finally:
        lp.stop()
        p.close()
