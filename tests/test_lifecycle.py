"""Issue 10 items 12-13: the lifecycle of models and data over REST, SDK and CLI — delete
(refused while in use, files removed with the record, crash-safe), import, download, compare."""

from __future__ import annotations

import pytest

from loopml.api.app import create_app
from loopml.core.errors import Conflict, InvalidInput
from loopml.sdk.client import Client
from tests.asgi_server import serve_asgi
from tests.surface_support import assert_error, cli_runner, write_csv


@pytest.fixture
def quiet_server(settings, platform):
    """The API over ``platform`` without the control loop: queued jobs stay queued."""
    with serve_asgi(create_app(settings, platform=platform, start_loop=False)) as url:
        yield url


def fake_version(platform, name: str, dataset: str) -> dict:
    """A registry entry with a file under its prefix (training is tested elsewhere)."""
    version = platform.models.next_version(name)
    prefix = f"models/{name}/v{version}"
    platform.artifacts.put_bytes(f"{prefix}/loopml.json", b"{}")
    return platform.models.add_version(name, version, dataset=dataset, kind="tabular", template="mlp", hparams={},
                                       metrics={}, lineage={}, runtimes=["keras"], artifact_prefix=prefix)


def one_line(result) -> str:
    lines = [ln for ln in (result.stdout + (result.stderr or "")).splitlines() if ln.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def test_delete_refusals_and_deletions_over_rest_sdk_and_cli(quiet_server, platform, monkeypatch, tmp_path):
    import httpx

    c, run = Client(quiet_server), cli_runner(quiet_server, monkeypatch)
    ds = c.add_dataset("iris", write_csv(tmp_path / "iris.csv"), label="species")
    c.add_dataset("iris", write_csv(tmp_path / "iris2.csv", rows=50), label="species")
    assert platform.artifacts.list(ds["artifact_prefix"])
    mv = fake_version(platform, "flowers", dataset="iris:1")
    c.set_alias("flowers", "production", 1)

    # a dataset version with registered models: 409 / exit 2, one line naming them and --force
    assert_error(httpx.delete(f"{quiet_server}/datasets/iris/versions/1"), 409, "conflict",
                 "model version flowers:1", "--force")
    result = run("datasets", "delete", "iris:1")
    assert result.exit_code == 2 and "model version flowers:1 (trained on it)" in one_line(result)
    # a model version behind an alias: refused, nothing deleted
    result = run("models", "delete", "flowers:1")
    assert result.exit_code == 2 and "alias flowers@production" in one_line(result)
    with pytest.raises(Conflict, match="alias flowers@production"):
        c.delete_model("flowers")
    assert c.model_version("flowers", 1)["ref"] == "flowers:1"
    assert platform.artifacts.list(mv["artifact_prefix"])
    # mistakes
    assert_error(httpx.delete(f"{quiet_server}/models/flowers/versions/latest"), 400, "invalid_input",
                 "deleting needs a version number")
    result = run("models", "delete", "flowers@production")
    assert result.exit_code == 2 and "by number" in one_line(result)
    result = run("datasets", "delete", "nope:1")
    assert result.exit_code == 2 and "dataset 'nope' not found" in one_line(result)

    # once nothing uses it, the version and its files go; the number is not reused
    c.delete_alias("flowers", "production")
    result = run("models", "delete", "flowers:1")
    assert result.exit_code == 0, result.output
    assert "deleted flowers:1" in result.stdout
    assert platform.artifacts.list(mv["artifact_prefix"]) == []
    assert fake_version(platform, "flowers", dataset="iris:2")["version"] == 2

    # --force deletes a dataset version the models were trained on; the models stay
    fake_version(platform, "flowers", dataset="iris:1")
    assert c.delete_dataset("iris:1", force=True)["deleted"] == ["iris:1"]
    assert platform.artifacts.list(ds["artifact_prefix"]) == []
    assert [v["version"] for v in c.dataset_versions("iris")] == [2]
    assert [v["version"] for v in c.model("flowers")["versions"]] == [2, 3]

    # jobs: a queued one is refused; an ended one goes with its logs and files
    job = c.train("iris", params={"epochs": 1}, register_as="flowers")
    result = run("jobs", "delete", job["id"])
    assert result.exit_code == 2 and f"job {job['id']} is queued; cancel it first" in one_line(result)
    c.cancel(job["id"])
    platform.artifacts.put_bytes(f"jobs/{job['id']}/checkpoints/model.keras", b"x")
    result = run("jobs", "delete", job["id"], "--json")
    assert result.exit_code == 0 and f"jobs/{job['id']}" in result.stdout
    assert platform.artifacts.list(f"jobs/{job['id']}") == []
    assert_error(httpx.get(f"{quiet_server}/jobs/{job['id']}"), 404, "not_found")

    # a whole model, then a whole dataset
    assert c.delete_model("flowers")["deleted"] == ["flowers:2", "flowers:3"]
    assert c.models() == []
    result = run("datasets", "delete", "iris")
    assert result.exit_code == 0 and "deleted iris:2" in result.stdout
    assert c.list_datasets() == [] and platform.artifacts.list("datasets") == []
    # the names come back and continue numbering: "flowers:1" / "iris:1" never mean two things
    assert c.add_dataset("iris", write_csv(tmp_path / "iris.csv"), label="species")["version"] == 3
    assert fake_version(platform, "flowers", dataset="iris:3")["ref"] == "flowers:4"
    assert [m["name"] for m in c.models()] == ["flowers"]


def test_a_deletion_interrupted_after_its_commit_is_finished_at_the_next_start(platform, settings):
    """The crash window: records deleted (one transaction, outbox written), files not yet removed."""
    from loopml.controlplane.loop import ControlLoop

    mv = fake_version(platform, "crashy", dataset="x:1")
    platform.deletions.delete_model_version("crashy", 1)  # the process "dies" before purge()
    assert platform.artifacts.list(mv["artifact_prefix"])  # files still there, record gone
    assert [p["what"] for p in platform.deletions.pending()] == ["model crashy:1"]

    loop = ControlLoop(platform)  # the next control-plane start: its first tick sweeps
    try:
        loop.tick()
    finally:
        loop.stop()
    assert platform.artifacts.list(mv["artifact_prefix"]) == [] and platform.deletions.pending() == []


# ------------------------------------------------------------------ import (item 12)


@pytest.fixture(scope="module")
def digits_models(tmp_path_factory):
    """A small real Keras model trained on scikit-learn digits, saved as .keras and exported to .onnx,
    plus a Lambda-layer model that Keras safe mode refuses."""
    import keras
    import numpy as np
    from sklearn.datasets import load_digits

    data = load_digits()
    x, y = (data.images / 16.0).astype(np.float32)[..., None], data.target
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(32, activation="relu"), keras.layers.Dense(10, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=5, batch_size=64, verbose=0)
    root = tmp_path_factory.mktemp("byo")
    model.save(root / "digits.keras")
    model.export(str(root / "digits.onnx"), format="onnx", verbose=False)
    model.export(str(root / "digits_savedmodel"), format="tf_saved_model", verbose=False)
    unsafe = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                               keras.layers.Lambda(lambda t: t * 2.0), keras.layers.Dense(10, activation="softmax")])
    unsafe.save(root / "unsafe.keras")
    expected = np.asarray(model(x[:20], training=False)).argmax(axis=1)
    return {"keras": root / "digits.keras", "onnx": root / "digits.onnx", "unsafe": root / "unsafe.keras",
            "savedmodel": root / "digits_savedmodel",
            "x": x[:20], "expected": [str(int(i)) for i in expected], "root": root}


def test_imported_keras_and_onnx_models_are_served_by_an_endpoint(live_server, settings, digits_models,
                                                                  monkeypatch, tmp_path):
    c, run = Client(live_server, timeout=120), cli_runner(live_server, monkeypatch)
    names = [f"digit-{i}" for i in range(10)]
    (tmp_path / "labels.txt").write_text("\n".join(names) + "\n")

    result = run("models", "import", str(digits_models["keras"]), "--name", "digits",
                 "--labels-file", str(tmp_path / "labels.txt"))
    assert result.exit_code == 0, result.output
    assert "imported digits:1 (image, 10 labels, input (8, 8, 1), runtimes onnx, keras)" in result.stdout
    v1 = c.model_version("digits", 1)
    assert v1["lineage"]["source"] == "imported" and v1["lineage"]["file"] == "digits.keras"
    assert v1["job_id"] is None and v1["dataset"] is None and v1["template"] == "imported"
    assert v1["kind"] == "image" and v1["runtimes"] == ["onnx", "keras"]

    v2 = c.import_model(digits_models["onnx"], "digits")  # labels inferred from the output width
    assert v2["ref"] == "digits:2" and v2["label_names"] == [str(i) for i in range(10)]
    assert v2["runtimes"] == ["onnx"] and v2["input"]["shape"] == [None, 8, 8, 1]

    result = run("endpoints", "create", "byo", "--model", "digits:1", "--variant", "onnx=digits:2:0", "--wait")
    assert result.exit_code == 0, result.output
    rows = digits_models["x"].tolist()
    got = [p["label"] for p in c.invoke("byo", instances=rows)["predictions"]]
    assert got == [f"digit-{i}" for i in digits_models["expected"]]
    got = [p["label"] for p in c.invoke("byo", instances=rows, variant="onnx")["predictions"]]
    assert got == digits_models["expected"]

    # served: its version cannot be deleted
    result = run("models", "delete", "digits:2")
    assert result.exit_code == 2 and "endpoint byo" in one_line(result)
    c.delete_endpoint("byo")

    # compare on the same rows: an evaluate job; the .keras import and its .onnx export agree
    c.add_dataset("digits", "sample:digits")
    result = run("models", "compare", "digits:1", "digits:2", "--dataset", "digits:test", "--json")
    assert result.exit_code == 0, result.output
    import json

    cmp = json.loads(result.stdout)
    assert cmp["source"] == "evaluated" and cmp["dataset"] == "digits:1" and cmp["split"] == "test"
    a, b = cmp["a"], cmp["b"]
    assert (a["ref"], b["ref"]) == ("digits:1", "digits:2") and a["metrics"]["rows"] == b["metrics"]["rows"] > 0
    # v1's labels are digit-N: none matches the dataset's classes, so it gets nothing right
    assert a["metrics"]["accuracy"] == 0.0 and b["metrics"]["accuracy"] > 0.3
    assert set(b["per_class"]) == {str(i) for i in range(10)} and len(b["confusion_matrix"]) == 10
    shown = run("models", "compare", "digits:2", "digits:2", "--dataset", "digits")
    assert shown.exit_code == 0 and "evaluated on digits:1:test" in shown.stdout
    assert "Confusion matrix of digits:2" in shown.stdout and "+0" in shown.stdout
    result = run("models", "compare", "digits:1", "digits:2", "--dataset", "nope:test")
    assert result.exit_code == 2 and "dataset 'nope' not found" in one_line(result)

    # monitoring an imported version: its baseline needs rows, from a dataset given at submission
    jobs_before = len(c.jobs())
    result = run("monitors", "baseline", "digits:1")
    assert result.exit_code == 2 and "records no dataset" in one_line(result) and "--dataset" in one_line(result)
    result = run("monitors", "baseline", "digits:2", "--dataset", "digits")  # ONNX only: no layers to embed
    assert result.exit_code == 2 and "has no Keras model" in one_line(result)
    result = run("monitors", "baseline", "digits:1", "--dataset", "digitz")
    assert result.exit_code == 2 and "did you mean 'digits'" in one_line(result)
    assert len(c.jobs()) == jobs_before  # nothing queued
    result = run("monitors", "baseline", "digits:1", "--dataset", "digits", "--wait")
    assert result.exit_code == 0, result.output
    assert c.job(c.jobs(kind="baseline")[0]["id"])["status"] == "succeeded"


def test_import_mistakes_are_400_and_register_nothing(quiet_server, platform, digits_models, monkeypatch, tmp_path):
    import httpx

    c, run = Client(quiet_server, timeout=120), cli_runner(quiet_server, monkeypatch)
    not_a_model = tmp_path / "weights.keras"
    not_a_model.write_bytes(b"this is not a zip archive")
    result = run("models", "import", str(not_a_model), "--name", "bad")
    assert result.exit_code == 2 and "weights.keras is not a Keras model file" in one_line(result)
    assert str(tmp_path) not in result.output and "upload-" not in result.output  # no temporary paths

    with pytest.raises(InvalidInput, match="3 labels given but digits.onnx has 10 outputs"):
        c.import_model(digits_models["onnx"], "bad", labels=["a", "b", "c"])
    result = run("models", "import", str(digits_models["unsafe"]), "--name", "bad")
    assert result.exit_code == 2 and "unsafe.keras was refused by Keras safe mode" in one_line(result)

    with open(digits_models["onnx"], "rb") as f:
        resp = httpx.post(f"{quiet_server}/models/import", data={"name": "bad", "input_shape": "4,4,1"},
                          files={"file": ("digits.onnx", f)}, timeout=120)
    assert_error(resp, 400, "invalid_input", "--input-shape 4,4,1 does not match digits.onnx's input shape (8, 8, 1)")
    resp = httpx.post(f"{quiet_server}/models/import", data={"name": "bad"},
                      files={"file": ("notes.txt", b"hello")})
    assert_error(resp, 400, "invalid_input", "'notes.txt' is not a model file LoopML imports")
    result = run("models", "import", str(digits_models["keras"]), "--name", "Bad Name")
    assert result.exit_code == 2 and "model name 'Bad Name' is not valid" in one_line(result)
    result = run("models", "import", str(tmp_path / "missing.keras"), "--name", "bad")
    assert result.exit_code == 2 and "does not exist" in one_line(result)

    assert c.models() == [] and platform.artifacts.list("models") == []


# ------------------------------------------------------------------ download (item 12)


def test_download_writes_the_version_files_and_a_savedmodel_imports(quiet_server, digits_models, monkeypatch,
                                                                     tmp_path):
    from loopml.models.bundle import load_bundle

    c, run = Client(quiet_server, timeout=300), cli_runner(quiet_server, monkeypatch)
    v1 = c.import_model(digits_models["keras"], "digits")
    c.set_alias("digits", "production", v1["version"])
    out = tmp_path / "exported"
    result = run("models", "download", "digits:1", str(out))
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in out.iterdir())
    assert {"model.keras", "model.onnx", "loopml.json"} <= set(files) and not any(f.startswith(".") for f in files)
    bundle = load_bundle(out, runtime="keras")  # the files are the version: they load and answer
    assert [r["label"] for r in bundle.predict(digits_models["x"])] == digits_models["expected"]

    # an existing non-empty folder is refused unless --force
    result = run("models", "download", "digits@production", str(out))
    assert result.exit_code == 2 and "is not empty: pass --force" in one_line(result)
    (out / "model.onnx").write_bytes(b"stale")
    result = run("models", "download", "digits@production", str(out), "--force", "--json")
    assert result.exit_code == 0 and '"ref": "digits:1"' in result.stdout
    assert (out / "model.onnx").read_bytes() != b"stale"
    result = run("models", "download", "digits:7", str(tmp_path / "none"))
    assert result.exit_code == 2 and "model 'digits' has no version 7" in one_line(result)
    assert not (tmp_path / "none").exists()  # resolved before the folder is created

    # a SavedModel folder (zipped by the SDK) is converted to ONNX and imported
    v2 = c.import_model(digits_models["savedmodel"], "digits")
    assert v2["version"] == 2 and v2["runtimes"] == ["onnx"] and v2["lineage"]["format"] == "savedmodel"
    c.download_model("digits:2", tmp_path / "sm")
    bundle = load_bundle(tmp_path / "sm")
    assert [r["label"] for r in bundle.predict(digits_models["x"])] == digits_models["expected"]


# ------------------------------------------------------------------ compare (item 12)


def _trained(platform, version: int, accuracy: float, cm: list, units: int) -> None:
    """A version as a training job leaves it: the job's result holds the test evaluation."""
    from loopml.models.metrics import per_class_metrics

    import numpy as np

    job = platform.jobs.create("train", {"dataset": "iris:1"})
    platform.jobs.transition(job["id"], "running", expect=["queued"])
    evaluation = {"accuracy": accuracy, "labels": ["a", "b"], "confusion_matrix": cm,
                  "per_class": per_class_metrics(np.array(cm), ["a", "b"])}
    platform.jobs.transition(job["id"], "succeeded", expect=["running"], result={"evaluation": evaluation})
    platform.models.add_version("flowers", version, job_id=job["id"], dataset="iris:1", kind="tabular",
                                template="mlp", hparams={"units": units, "epochs": 3},
                                metrics={"test_accuracy": accuracy}, lineage={}, runtimes=["keras"],
                                artifact_prefix=f"models/flowers/v{version}")


def test_compare_without_a_dataset_uses_the_recorded_test_metrics(quiet_server, platform, monkeypatch):
    run = cli_runner(quiet_server, monkeypatch)
    _trained(platform, 1, 0.75, [[3, 1], [1, 3]], units=32)
    _trained(platform, 2, 0.875, [[4, 0], [1, 3]], units=64)
    platform.models.set_alias("flowers", "production", 2)

    result = run("models", "compare", "flowers:1", "flowers@production", "--json")
    assert result.exit_code == 0, result.output
    import json

    cmp = json.loads(result.stdout)
    assert cmp["source"] == "recorded" and cmp["job_id"] is None
    assert cmp["a"]["metrics"] == {"test_accuracy": 0.75} and cmp["b"]["ref"] == "flowers:2"
    assert cmp["b"]["confusion_matrix"] == [[4, 0], [1, 3]] and cmp["b"]["per_class"]["a"]["recall"] == 1.0
    assert cmp["a"]["hparams"]["units"] == 32 and cmp["b"]["hparams"]["units"] == 64

    shown = run("models", "compare", "flowers:1", "flowers:2")
    assert shown.exit_code == 0, shown.output
    for text in ("test metrics recorded at training", "test_accuracy", "+0.125", "units", "differs", "Per class",
                 "Confusion matrix of flowers:1", "Confusion matrix of flowers:2"):
        assert text in shown.stdout, (text, shown.stdout)
    result = run("models", "compare", "flowers:1", "flowers:9")
    assert result.exit_code == 2 and "model 'flowers' has no version 9" in one_line(result)


def test_a_text_model_imports_with_its_tokenizer_and_downloads_with_it(quiet_server, tmp_path):
    import keras
    import numpy as np

    from loopml.models.bundle import load_bundle
    from loopml.models.features import TextFeatures

    texts = ["good great fine", "bad awful poor", "great good", "poor bad"] * 10
    features = TextFeatures.fit(texts, vocab_size=50, max_length=6)
    (tmp_path / "tokenizer.json").write_bytes(features.files()["tokenizer.json"])
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,), dtype="int32"), keras.layers.Embedding(features.vocab_size, 8),
                              keras.layers.GlobalAveragePooling1D(), keras.layers.Dense(2, activation="softmax")])
    model.compile("adam", "sparse_categorical_crossentropy")
    model.fit(features.transform(texts), np.array([0, 1] * 20), epochs=30, verbose=0)
    model.save(tmp_path / "sentiment.keras")

    c = Client(quiet_server, timeout=300)
    with pytest.raises(InvalidInput, match="is a text model: pass --tokenizer"):
        c.import_model(tmp_path / "sentiment.keras", "sentiment")
    v = c.import_model(tmp_path / "sentiment.keras", "sentiment", labels=["positive", "negative"],
                       tokenizer=tmp_path / "tokenizer.json")
    assert v["kind"] == "text" and v["input"]["shape"] == [None, 6]
    got = c.download_model("sentiment", tmp_path / "out")
    assert "tokenizer.json" in got["files"] and got["ref"] == "sentiment:1"
    bundle = load_bundle(tmp_path / "out")
    assert [r["label"] for r in bundle.predict(["good great", "awful bad"])] == ["positive", "negative"]
