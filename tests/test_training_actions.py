"""Training-side workflow actions end to end: unregistered training, evaluation of challenger vs
champion, late registration, growing datasets (zip of PNGs, local and s3://). Real workers run
by a real ControlLoop over real stores; one pair of short trainings is shared by the module."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest

from loopml.controlplane import ControlLoop
from loopml.core.errors import Conflict, InvalidInput, NotFound
from loopml.core.settings import Settings
from loopml.datasets.service import load_version, register
from loopml.platform import Platform
from loopml.registry.registration import register_trained
from loopml.store.jobs_repo import JobRepo
from loopml.training.service import submit_evaluation, submit_training
from tests.process_support import wait_job

pytest_plugins = ("tests.backends",)


def succeeded(plat: Platform, job_id: str) -> dict:
    job = wait_job(plat, job_id, timeout=300.0)
    logs = "\n".join(line["text"] for line in plat.jobs.logs(job_id))
    assert job["status"] == "succeeded", f"{job['reason']}\n{logs}"
    return job


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """digits:1, an unregistered challenger (job A) and a registered champion digits-cnn:1 (job B)
    with alias production. Both trainings run at once, one epoch each."""
    home = tmp_path_factory.mktemp("actions")
    plat = Platform(Settings(home=home, reconcile_interval_s=0.2, max_concurrent_jobs=2))
    register(plat, "digits", "sample:digits")
    loop = ControlLoop(plat)
    loop.start()
    try:
        params = {"epochs": 1, "batch_size": 64}
        a = submit_training(plat, dataset="digits", model="cnn", params=params, register=False, job_id="job-actions-a")
        b = submit_training(plat, dataset="digits", model="cnn", params=params)
        jobs = {"a": succeeded(plat, a["id"]), "b": succeeded(plat, b["id"])}
        plat.models.set_alias("digits-cnn", "production", 1)
        yield plat, jobs
    finally:
        loop.stop()
        plat.close()


# ------------------------------------------------------------------ training without registering


def test_unregistered_training_uploads_the_bundle_and_says_how_to_register_it(world):
    plat, jobs = world
    a = jobs["a"]
    assert a["id"] == "job-actions-a" and a["spec"]["register"] is False
    result = a["result"]
    assert result["registered"] is False and result["model_ref"] == "job:job-actions-a"
    assert result["dataset"] == "digits:1" and 0.0 <= result["metrics"]["test_accuracy"] <= 1.0
    assert result["artifact_prefix"] == "models/digits-cnn/job-actions-a"
    names = {k.rsplit("/", 1)[-1] for k in plat.artifacts.list(result["artifact_prefix"])}
    assert {"model.keras", "model.onnx", "loopml.json"} <= names
    reg = result["registration"]
    assert reg["lineage"]["job_id"] == "job-actions-a" and reg["dataset"] == "digits:1" and "onnx" in reg["runtimes"]
    assert "model" not in result
    assert [v["job_id"] for v in plat.models.versions("digits-cnn")] == [jobs["b"]["id"]]
    assert [e["status"] for e in plat.jobs.events(a["id"])] == ["queued", "running", "succeeded"]


def test_registered_training_result_names_the_version(world):
    _, jobs = world
    result = jobs["b"]["result"]
    assert result["registered"] is True and result["model_ref"] == "digits-cnn:1"
    assert result["dataset"] == "digits:1" and "test_accuracy" in result["metrics"]
    assert result["model"] == {"name": "digits-cnn", "version": 1, "ref": "digits-cnn:1"}


def test_a_chosen_job_id_is_used_once(world):
    plat, _ = world
    with pytest.raises(Conflict, match="job-actions-a"):
        submit_training(plat, dataset="digits", model="cnn", params={"epochs": 1}, job_id="job-actions-a")
    with pytest.raises(InvalidInput, match="job id"):
        submit_training(plat, dataset="digits", model="cnn", job_id="../escape")
    with pytest.raises(InvalidInput, match="register"):
        submit_training(plat, dataset="digits", model="cnn", register="no")  # type: ignore[arg-type]


def test_duplicate_job_ids_are_a_conflict_on_every_backend(metadata_store):
    jobs = JobRepo(metadata_store)
    jobs.create("train", {"x": 1}, job_id="job-dup")
    with pytest.raises(Conflict, match="job-dup"):
        jobs.create("train", {"x": 2}, job_id="job-dup")
    assert jobs.get("job-dup")["spec"] == {"x": 1} and len(jobs.events("job-dup")) == 1


# ------------------------------------------------------------------ evaluation


def test_evaluate_challenger_against_champion_on_the_same_rows(world):
    plat, jobs = world
    job = submit_evaluation(plat, models={"challenger": "job:job-actions-a", "champion": "digits-cnn@production",
                                          "newest": "digits-cnn", "staging": "digits-cnn@staging"},
                            dataset="digits", min_improvement=0.0, job_id="job-eval-1")
    assert job["kind"] == "evaluate" and job["status"] == "queued"
    done = succeeded(plat, job["id"])
    result = done["result"]
    test_rows = plat.datasets.get("digits")["splits"]["counts"]["test"]
    assert result["dataset"] == "digits:1" and result["split"] == "test" and result["rows"] == test_rows
    assert result["metric"] == "accuracy"
    ch, cp = result["results"]["challenger"], result["results"]["champion"]
    assert ch["ref"] == "job:job-actions-a" and ch["job_id"] == "job-actions-a"
    assert cp["ref"] == "digits-cnn@production" and cp["version"] == 1 and cp["resolved"] == "digits-cnn:1"
    # an alias that is not set (a first deployment has no champion) is recorded, not refused
    assert result["results"].pop("staging") == {"ref": "digits-cnn@staging",
                                                "missing": "alias staging of digits-cnn is not set"}
    for r in result["results"].values():
        assert r["rows"] == test_rows and 0.0 <= r["accuracy"] <= 1.0 and 0.0 <= r["macro_f1"] <= 1.0
        assert r["runtime"] == "onnx"
    # the champion's accuracy here is the one its training measured on the same test split
    assert cp["accuracy"] == pytest.approx(jobs["b"]["result"]["metrics"]["test_accuracy"], abs=1e-3)
    assert result["improvement"] == pytest.approx(ch["accuracy"] - cp["accuracy"], abs=1e-6)
    assert result["promote"] is (result["improvement"] >= 0)
    assert ("promote" if result["promote"] else "keep champion") in result["reason"]
    logs = "\n".join(line["text"] for line in plat.jobs.logs(job["id"]))
    assert "challenger: job:job-actions-a (onnx) accuracy" in logs and result["reason"] in logs


def test_the_promote_decision():
    from loopml.registry.champion import decide

    same = {"challenger": {"ref": "job:a", "macro_f1": 0.9}, "champion": {"ref": "m@production", "macro_f1": 0.9}}
    verdict = decide(same, "macro_f1", 0.005)
    assert verdict["improvement"] == 0.0 and verdict["promote"] is False
    assert "(+0 < 0.005): keep champion" in verdict["reason"]
    better = {"challenger": {"ref": "job:a", "accuracy": 0.981}, "champion": {"ref": "m:2", "accuracy": 0.975}}
    assert decide(better, "accuracy", 0.005) == {
        "promote": True, "improvement": 0.006,
        "reason": "challenger accuracy 0.981 vs champion 0.975 (+0.006 ≥ 0.005): promote"}
    lower_loss = {"challenger": {"ref": "job:a", "loss": 0.2}, "champion": {"ref": "m:2", "loss": 0.3}}
    assert decide(lower_loss, "loss", 0.0)["promote"] is True  # for a loss, lower is better
    no_champion = {"challenger": {"ref": "job:a", "accuracy": 0.9},
                   "champion": {"ref": "m@production", "missing": "alias production of m is not set"}}
    verdict = decide(no_champion, "accuracy", 0.005)
    assert verdict["promote"] is True and verdict["improvement"] is None
    assert verdict["reason"] == ("no champion (alias production of m is not set): "
                                 "promote challenger (accuracy 0.9)")
    assert decide({"a": {"ref": "x", "accuracy": 1.0}}, "accuracy", 0.0)["promote"] is False


def test_bad_evaluation_requests_are_refused_before_queueing(world):
    plat, jobs = world
    before = len(plat.jobs.list(kind="evaluate", limit=1000))
    ok = {"challenger": "job:job-actions-a"}
    cases = [
        ({"models": {"challenger": "no-such-model:1"}}, "no-such-model"),
        ({"models": {"challenger": "digits-cnn:9"}}, "no version 9"),
        ({"models": {"challenger": "digits-cnn:x"}}, "must be a number"),
        ({"models": {"challenger": "job:job-nope"}}, "job-nope"),
        ({"models": {"challenger": ""}}, "reference is required"),
        ({"models": {}}, "models must map"),
        ({"models": {"bad label!": "digits-cnn"}}, "label"),
        ({"models": ok, "dataset": "nope"}, "nope"),
        ({"models": ok, "split": "holdout"}, "split"),
        ({"models": ok, "metric": "auc"}, "metric"),
        ({"models": ok, "min_improvement": "a lot"}, "min_improvement"),
    ]
    for overrides, fragment in cases:
        kwargs = {"dataset": "digits", **overrides}
        with pytest.raises(InvalidInput, match=fragment):
            submit_evaluation(plat, **kwargs)
    # a job that is not a succeeded training job has no model to evaluate
    evaluate_job = plat.jobs.list(kind="evaluate", limit=1)
    if evaluate_job:
        with pytest.raises(InvalidInput, match="not a training job"):
            submit_evaluation(plat, models={"challenger": f"job:{evaluate_job[0]['id']}"}, dataset="digits")
    register(plat, "penguins", "sample:penguins")
    with pytest.raises(InvalidInput, match="image model"):
        submit_evaluation(plat, models={"challenger": "digits-cnn:1"}, dataset="penguins")
    assert len(plat.jobs.list(kind="evaluate", limit=1000)) == before


# ------------------------------------------------------------------ late registration


def test_register_trained_is_idempotent_and_records_the_training_fields(world):
    plat, jobs = world
    record = register_trained(plat, "job-actions-a", name="digits-challenger")
    assert record["ref"] == "digits-challenger:1" and record["job_id"] == "job-actions-a"
    assert record["dataset"] == "digits:1" and record["kind"] == "image" and record["template"] == "cnn"
    assert record["lineage"]["job_id"] == "job-actions-a" and "onnx" in record["runtimes"]
    assert record["metrics"] == jobs["a"]["result"]["metrics"]
    assert record["artifact_prefix"] == "models/digits-cnn/job-actions-a"
    again = register_trained(plat, "job-actions-a", name="digits-challenger")
    assert again["ref"] == record["ref"] and again["created_at"] == record["created_at"]
    assert register_trained(plat, "job-actions-a")["ref"] == "digits-challenger:1"
    assert len(plat.models.versions("digits-challenger")) == 1
    with pytest.raises(Conflict, match="digits-challenger:1"):
        register_trained(plat, "job-actions-a", name="other-name")
    result = plat.jobs.get("job-actions-a")["result"]
    assert result["registered"] is True and result["model_ref"] == "digits-challenger:1"
    # the registered version loads like any other (an evaluation resolves it)
    job = submit_evaluation(plat, models={"v": "digits-challenger:1", "job": "job:job-actions-a"}, dataset="digits")
    out = succeeded(plat, job["id"])["result"]
    assert out["results"]["v"]["accuracy"] == out["results"]["job"]["accuracy"]
    assert out["promote"] is False and "both needed" in out["reason"]


def test_register_trained_refuses_what_is_not_a_succeeded_training_job(world):
    plat, jobs = world
    assert register_trained(plat, jobs["b"]["id"])["ref"] == "digits-cnn:1"  # registered while training
    with pytest.raises(NotFound):
        register_trained(plat, "job-nope")
    evaluation = plat.jobs.list(kind="evaluate", limit=1)[0]
    with pytest.raises(InvalidInput, match="not a training job"):
        register_trained(plat, evaluation["id"])
    queued = plat.jobs.create("train", {"register": False}, job_id="job-actions-queued")
    plat.jobs.request_cancel(queued["id"])
    with pytest.raises(Conflict, match="cancelled"):
        register_trained(plat, queued["id"])
    with pytest.raises(InvalidInput, match="model name"):
        register_trained(plat, "job-actions-a", name="Bad Name")


# ------------------------------------------------------------------ datasets that grow


def png_zip(classes: dict[str, int], size: int = 8, seed: int = 0, wrap: str | None = None) -> bytes:
    """A zip of grayscale PNGs in class folders (``7/img-001.png``), as a labelling team delivers."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for label, count in classes.items():
            for i in range(count):
                png = io.BytesIO()
                Image.fromarray(rng.integers(0, 17, (size, size), dtype=np.uint8), mode="L").save(png, format="PNG")
                prefix = f"{wrap}/" if wrap else ""
                zf.writestr(f"{prefix}{label}/img-{i:03d}.png", png.getvalue())
    return buf.getvalue()


@pytest.fixture
def plat(settings):
    p = Platform(settings)
    yield p
    p.close()


def test_a_zip_of_pngs_is_a_source_and_extend_appends_its_rows(plat, tmp_path):
    first = tmp_path / "batch-0.zip"
    first.write_bytes(png_zip({"3": 6, "7": 6}, wrap="delivery"))
    v1 = register(plat, "ink", str(first))
    assert v1["created"] and v1["rows"] == 12 and v1["kind"] == "image" and v1["format"] == "images"
    assert v1["schema"]["classes"] == ["3", "7"]

    batch = tmp_path / "batch-1.zip"
    batch.write_bytes(png_zip({"7": 4, "3": 1}, seed=1))
    v2 = register(plat, "ink", str(batch), extend=True)
    assert v2["created"] and v2["version"] == 2 and v2["rows"] == 17
    assert v2["source"] == f"ink:1 + {batch}"
    c1, s1 = load_version(plat, plat.datasets.get("ink", 1))
    c2, s2 = load_version(plat, plat.datasets.get("ink", 2))
    np.testing.assert_array_equal(c2.images[:12], c1.images)  # the old rows first, unchanged
    for split in ("train", "validation", "test"):  # and in the split they were in
        np.testing.assert_array_equal(s2[split][s2[split] < 12], s1[split])
    assert sum(len(v) for v in s2.values()) == 17
    # the same batch again is new rows again (a trigger dedupes deliveries, not this function)
    assert register(plat, "ink", str(batch), extend=True)["version"] == 3
    # extending a dataset that does not exist yet starts it
    assert register(plat, "fresh", str(batch), extend=True)["version"] == 1


def test_extend_names_the_mismatch(plat, tmp_path):
    base = tmp_path / "base.zip"
    base.write_bytes(png_zip({"3": 5, "7": 5}))
    register(plat, "ink", str(base))
    bigger = tmp_path / "bigger.zip"
    bigger.write_bytes(png_zip({"3": 3, "7": 3}, size=10))
    with pytest.raises(InvalidInput, match="images are 10x10x1, the dataset's are 8x8x1"):
        register(plat, "ink", str(bigger), extend=True)
    new_class = tmp_path / "new-class.zip"
    new_class.write_bytes(png_zip({"3": 3, "9": 3}))
    with pytest.raises(InvalidInput, match="class.*9.*not in the dataset"):
        register(plat, "ink", str(new_class), extend=True)
    with pytest.raises(InvalidInput, match="cannot extend a image dataset with tabular data"):
        register(plat, "ink", "sample:penguins", extend=True)
    register(plat, "birds", "sample:penguins")
    table = tmp_path / "birds.csv"
    table.write_text("species,bill\nAdelie,1.0\nGentoo,2.0\n")
    with pytest.raises(InvalidInput, match="missing column"):
        register(plat, "birds", str(table), extend=True)
    assert [v["version"] for v in plat.datasets.versions("ink")] == [1]


def test_an_s3_zip_extends_a_dataset(tmp_path, moto_endpoint, s3_bucket, clean_env):
    from tests.backends import s3_client

    p = Platform(Settings(home=tmp_path / "home", s3_endpoint_url=moto_endpoint))
    try:
        s3 = s3_client(moto_endpoint)
        s3.put_object(Bucket=s3_bucket, Key="incoming/batch-0.zip", Body=png_zip({"3": 5, "7": 5}))
        s3.put_object(Bucket=s3_bucket, Key="incoming/batch-1.zip", Body=png_zip({"3": 2, "7": 2}, seed=3))
        v1 = register(p, "ink", f"s3://{s3_bucket}/incoming/batch-0.zip")
        v2 = register(p, "ink", f"s3://{s3_bucket}/incoming/batch-1.zip", extend=True)
        assert (v1["rows"], v2["rows"]) == (10, 14)
        assert v2["source"] == f"ink:1 + s3://{s3_bucket}/incoming/batch-1.zip"
    finally:
        p.close()


def test_extend_through_the_api_sdk_and_cli(live_server, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from loopml.cli.main import app
    from loopml.sdk.client import Client

    base, more, again = tmp_path / "base.zip", tmp_path / "more.zip", tmp_path / "again.zip"
    base.write_bytes(png_zip({"3": 5, "7": 5}))
    more.write_bytes(png_zip({"3": 2, "7": 1}, seed=5))
    again.write_bytes(png_zip({"7": 2}, seed=6))
    client = Client(live_server)
    assert client.add_dataset("ink", str(base))["rows"] == 10  # a local zip: uploaded
    v2 = client.add_dataset("ink", str(more), extend=True)
    assert v2["version"] == 2 and v2["rows"] == 13 and v2["source"].startswith("ink:1 + ")
    # a server-visible path through POST /datasets
    import httpx

    r = httpx.post(f"{live_server}/datasets", json={"name": "ink", "source": str(again), "extend": True})
    assert r.status_code == 201 and r.json()["rows"] == 15 and r.json()["source"] == f"ink:2 + {again}"
    monkeypatch.setenv("LOOPML_API_URL", live_server)
    out = CliRunner().invoke(app, ["datasets", "add", "ink", str(more), "--extend"])
    assert out.exit_code == 0, out.output
    assert "ink:4" in out.stdout
    bad = tmp_path / "bad.zip"
    bad.write_bytes(png_zip({"3": 2, "5": 2}))
    out = CliRunner().invoke(app, ["datasets", "add", "ink", str(bad), "--extend"])
    assert out.exit_code == 2 and "not in the dataset" in out.stderr and "Traceback" not in out.output
