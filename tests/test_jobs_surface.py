"""Jobs through the real CLI against a live control plane: exit codes of followed jobs, every job
kind in `jobs list --kind`, time limits, unregistered training, epoch metrics and TensorBoard
event files, which epoch the model holds, and prediction inputs checked before queueing."""

from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.surface_support import assert_error, cli_runner
from tests.test_cli import ok_json, one_line_error

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


def _words(text: str) -> str:
    """Rich help as plain words: box borders gone, wrapped lines joined."""
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


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

    helptext = _words(run("train", "--help").stdout)
    assert "1 when it fails or is cancelled, with or without --wait" in helptext
    assert "Ctrl-C detaches with exit 0" in helptext and "Ctrl-C exits 130" in helptext


def test_ctrl_c_detaches_a_followed_job_with_exit_0_and_a_hint(live_server, tmp_path):
    from loopml.sdk.client import Client

    env = {**os.environ, "LOOPML_API_URL": live_server, "LOOPML_CONFIG": str(tmp_path / "none.toml")}
    cmd = [sys.executable, "-m", "loopml.cli.main"]
    subprocess.run([*cmd, "datasets", "add", "digits", "sample:digits"], env=env, check=True, timeout=300,
                   capture_output=True)
    for flags, code in (((), 0), (("--wait",), 130)):  # --wait: a detach is not an outcome
        proc = subprocess.Popen([*cmd, "train", "--dataset", "digits", "--model", "cnn", "--epochs", "200", *flags],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        first = proc.stdout.readline()  # "submitted job …": the command is following the job now
        assert first.startswith("submitted job "), first
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        job_id = first.split()[2]
        assert proc.returncode == code, (out, err)
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
    helptext = _words(run("jobs", "list", "--help").stdout)
    assert "train, predict, evaluate, monitor, baseline" in helptext
    from loopml.core.errors import InvalidInput

    with pytest.raises(InvalidInput, match="core.jobkinds.KINDS"):  # the store refuses a kind not in the table
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


def test_an_epoch_cut_short_by_the_time_limit_is_not_counted_as_done(run, settings, tmp_path):
    ok_json(run("datasets", "add", "digits", "sample:digits", "--json"))
    slow = tmp_path / "slow.py"
    slow.write_text(SLOW_MODEL)
    # 23 batches per epoch; the limit (1 s) has passed before epoch 1 begins: Keras runs one batch
    cut = run("train", "--dataset", "digits", "--model", str(slow), "-p", "epochs=1", "-p", "batch_size=64",
              "--time-limit", "1", "--json")
    assert cut.exit_code == 1
    job = json.loads(cut.stdout)
    assert job["status"] == "failed", job["reason"]
    assert "reached during epoch 1 (batch 1 of 23)" in job["reason"] and "after epoch" not in job["reason"]
    assert "--resume" not in job["reason"] and "no epoch finished" in job["reason"]
    assert ok_json(run("jobs", "metrics", job["id"], "--json")) == []  # one batch is not an epoch
    board = Path(settings.resolved_artifact_uri) / "jobs" / job["id"] / "tensorboard"
    assert "epoch_loss" not in _events(board / "train")  # nor a TensorBoard point
    # nothing to resume: a model trained on one batch is never registered as if the epoch had run
    again = run("train", "--resume", job["id"])
    assert again.exit_code == 2 and "has no checkpoint to resume from" in again.stderr
    assert ok_json(run("models", "list", "--json")) == []


# ------------------------------------------------------------------ items 11, 18, 6, 14: one trained digits model


def _events(folder: Path) -> dict[str, dict[int, float]]:
    """tag -> {step: value} from the TensorBoard event files under ``folder`` (TensorFlow's own reader)."""
    import tensorflow as tf

    found: dict[str, dict[int, float]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                if value.tag.startswith("epoch_"):
                    found.setdefault(value.tag, {})[event.step] = float(tf.make_ndarray(value.tensor))
    return found


def _csv_rows(text: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(text)))


def test_epoch_metrics_tensorboard_files_model_epoch_and_checked_prediction_inputs(run, live_server, settings,
                                                                                   tmp_path):
    from PIL import Image

    ok_json(run("datasets", "add", "digits", "sample:digits", "--json"))
    trained = run("train", "--dataset", "digits", "--model", "cnn", "--epochs", "3", "-p", "learning_rate=0.003")
    assert trained.exit_code == 0, trained.output
    job = ok_json(run("jobs", "show", trained.stdout.split("submitted job ", 1)[1].split()[0], "--json"))
    assert job["status"] == "succeeded", job["reason"]
    job_id, best = job["id"], job["result"]["metrics"]["best_epoch"]
    assert best in (1, 2, 3)
    assert f"registered model digits-cnn:1 (epoch {best} of 3, best val_loss)" in " ".join(trained.stdout.split())

    # item 18: jobs metrics as CSV, JSON (= REST = SDK) and a table
    rows = _csv_rows(run("jobs", "metrics", job_id, "--csv").stdout)
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert list(rows[0])[:5] == ["epoch", "loss", "accuracy", "val_loss", "val_accuracy"]
    as_json = ok_json(run("jobs", "metrics", job_id, "--json"))
    assert as_json == httpx.get(f"{live_server}/jobs/{job_id}/metrics").json() == job["metrics"]
    assert float(rows[2]["val_loss"]) == pytest.approx(as_json[2]["val_loss"])
    assert "val_accuracy" in run("jobs", "metrics", job_id).stdout
    assert_error(httpx.get(f"{live_server}/jobs/job-nope/metrics"), 404, "not_found", "job-nope")

    # item 18: TensorBoard event files in the artifact store, readable with TensorFlow's reader
    board = Path(settings.resolved_artifact_uri) / "jobs" / job_id / "tensorboard"
    train_events, val_events = _events(board / "train"), _events(board / "validation")
    assert sorted(train_events["epoch_loss"]) == [1, 2, 3]
    for m in as_json:
        assert train_events["epoch_loss"][m["epoch"]] == pytest.approx(m["loss"], abs=1e-5)
        assert val_events["epoch_accuracy"][m["epoch"]] == pytest.approx(m["val_accuracy"], abs=1e-5)

    # items 11 and 18: which epoch the registered model holds, and the job's hyperparameters
    shown = " ".join(run("jobs", "show", job_id).stdout.split())
    assert f"digits-cnn:1 (epoch {best} of 3, best val_loss)" in shown
    assert "Hyperparameters" in shown and "learning_rate 0.0030" in shown and "<- best" in shown

    # item 6: mistakes refused before a job is queued (API 400 / CLI exit 2), no job row left
    np.savez(tmp_path / "t.npz", x=np.random.default_rng(0).normal(size=(60, 4)), y=np.arange(60) % 3)
    ok_json(run("datasets", "add", "tab", str(tmp_path / "t.npz"), "--json"))
    wrong_csv = tmp_path / "wrong.csv"
    wrong_csv.write_text("a,b,c\n1,2,3\n")
    notes = tmp_path / "notes.txt"
    notes.write_text("hello\n")
    before = len(ok_json(run("jobs", "list", "--json")))
    one_line_error(run("predict", "digits-cnn", "tab:test"), 2, "digits-cnn:1 takes 8x8 images", "tab:1 is tabular")
    one_line_error(run("predict", "digits-cnn", str(wrong_csv)), 2, "'wrong.csv' has 3 pixel columns", "64 values")
    one_line_error(run("predict", "digits-cnn", str(notes)), 2, "'notes.txt'", ".png")
    (tmp_path / "bad.png").write_bytes(b"not a png")
    one_line_error(run("predict", "digits-cnn", str(tmp_path / "bad.png")), 2, "'bad.png' is not a readable image")
    one_line_error(run("predict", "digits-cnn", "digits:test", "--output", str(tmp_path / "no" / "p.csv")), 2,
                   "does not exist")
    assert_error(httpx.post(f"{live_server}/jobs/predict", json={"model": "digits-cnn", "input": "tab:test"}),
                 400, "invalid_input", "tab:1 is tabular")
    assert len(ok_json(run("jobs", "list", "--json"))) == before

    # item 14: a PNG, a flat folder (other size, RGB: greyscaled and resized) and a zip of images

    pixels = _digit_pixels(settings)
    Image.fromarray(pixels[0]).save(tmp_path / "one.png")
    npz = tmp_path / "same.npz"
    np.savez(npz, x=pixels[:1].reshape(1, 8, 8, 1))
    expected = _csv_rows(_predict_csv(run, tmp_path, str(npz)))[0]["label"]
    single = _csv_rows(_predict_csv(run, tmp_path, str(tmp_path / "one.png")))
    assert [(r["file"], r["label"]) for r in single] == [("one.png", expected)]

    folder = tmp_path / "batch"
    folder.mkdir()
    for i, suffix in enumerate(("png", "png", "jpg")):
        big = np.kron(pixels[i], np.ones((2, 2), dtype=np.uint8))
        Image.fromarray(big).convert("RGB").save(folder / f"d{i}.{suffix}")
    flat = _csv_rows(_predict_csv(run, tmp_path, str(folder)))
    assert [r["file"] for r in flat] == ["d0.png", "d1.png", "d2.jpg"] and "truth" not in flat[0]

    import zipfile

    with zipfile.ZipFile(tmp_path / "imgs.zip", "w") as z:
        for i in range(2):
            z.write(folder / f"d{i}.png", f"d{i}.png")
    zipped = _csv_rows(_predict_csv(run, tmp_path, str(tmp_path / "imgs.zip")))
    assert [r["file"] for r in zipped] == ["d0.png", "d1.png"]
    table = run("predict", "digits-cnn", str(tmp_path / "one.png"))
    assert table.exit_code == 0 and "one.png" in table.stdout


def _digit_pixels(settings) -> np.ndarray:
    """The first test digits as uint8 8x8 greyscale pixels, read back from the registered dataset."""
    from loopml.datasets.service import load_version
    from loopml.platform import Platform

    plat = Platform(settings, create_schema=False)
    try:
        content, splits = load_version(plat, plat.datasets.get("digits"))
        return np.asarray(content.images[splits["test"][:3]], dtype=np.uint8).reshape(3, 8, 8)
    finally:
        plat.close()


def _predict_csv(run, tmp_path: Path, source: str) -> str:
    out = tmp_path / "preds.csv"
    result = run("predict", "digits-cnn", source, "--output", str(out))
    assert result.exit_code == 0, result.output
    return out.read_text()


def test_prediction_inputs_for_a_tabular_model_are_checked_before_queueing(run, live_server, tmp_path):
    from PIL import Image

    from loopml.core.errors import InvalidInput
    from loopml.sdk.client import Client

    _tabular(run, tmp_path)
    ok_json(run("datasets", "add", "digits", "sample:digits", "--json"))
    job = ok_json(run("train", "--dataset", "tab", "--model", "mlp", "--epochs", "1", "--json"))
    assert job["status"] == "succeeded", job["reason"]
    (tmp_path / "few.csv").write_text("f0,f1\n0.1,0.2\n")
    Image.new("L", (8, 8)).save(tmp_path / "x.png")
    before = len(ok_json(run("jobs", "list", "--json")))

    one_line_error(run("predict", "tab-mlp", str(tmp_path / "few.csv")), 2, "'few.csv' lacks column(s) f2, f3",
                   "columns f0, f1, f2, f3")
    one_line_error(run("predict", "tab-mlp", str(tmp_path / "x.png")), 2, "'x.png' is an image")
    one_line_error(run("predict", "tab-mlp", str(tmp_path / "t.npz")), 2, "'t.npz' is a npz file", ".csv")
    one_line_error(run("predict", "tab-mlp", "digits:test"), 2, "digits:1 is image")
    with Client(live_server) as c, pytest.raises(InvalidInput, match="lacks column"):
        c.predict("tab-mlp", tmp_path / "few.csv")
    assert len(ok_json(run("jobs", "list", "--json"))) == before

    (tmp_path / "ok.csv").write_text("f0,f1,f2,f3\n0.1,0.2,0.3,0.4\n")
    good = ok_json(run("predict", "tab-mlp", str(tmp_path / "ok.csv"), "--json"))
    assert good["job"]["status"] == "succeeded" and len(good["predictions"]) == 1


# ------------------------------------------------- items 14 and 6: batch images fit like endpoint bodies


def test_batch_images_follow_the_endpoints_fitting_rule_and_a_folder_is_named_as_given(run, live_server, tmp_path):
    from PIL import Image

    from loopml.core.errors import InvalidInput
    from loopml.datasets.formats import read_images_as
    from loopml.serving.image_files import decode_image_file

    ok_json(run("datasets", "add", "digits", "sample:digits", "--json"))
    job = ok_json(run("train", "--dataset", "digits", "--model", "cnn", "--epochs", "1", "--json"))
    assert job["status"] == "succeeded", job["reason"]
    before = len(ok_json(run("jobs", "list", "--json")))
    expected = "8×8 greyscale images (input shape (8, 8, 1))"
    Image.new("L", (32, 16)).save(tmp_path / "wide.png")
    one_line_error(run("predict", "digits-cnn", str(tmp_path / "wide.png")), 2,
                   "'wide.png' is 32×16", expected)
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    Image.new("L", (16, 16)).save(imgs / "square.png")  # the model's aspect ratio: resized
    Image.new("L", (32, 16)).save(imgs / "wide.png")
    one_line_error(run("predict", "digits-cnn", str(imgs)), 2, "'imgs/wide.png' is 32×16", expected)
    (tmp_path / "empty").mkdir()
    line = one_line_error(run("predict", "digits-cnn", str(tmp_path / "empty")), 2,
                          "folder 'empty/' holds no image files")
    assert ".zip" not in line
    assert len(ok_json(run("jobs", "list", "--json"))) == before

    # the worker (an input the submission check could not read) and the endpoint: the same rule
    with pytest.raises(InvalidInput, match=f"'wide.png' is 32×16; this model expects {re.escape(expected)}"):
        read_images_as([imgs / "wide.png"], (8, 8, 1))
    assert read_images_as([imgs / "square.png"], (8, 8, 1)).shape == (1, 8, 8, 1)
    with pytest.raises(InvalidInput, match=f"PNG image is 32×16; this model expects {re.escape(expected)}"):
        decode_image_file((imgs / "wide.png").read_bytes(), "image/png", (8, 8, 1))
