"""Monitoring data: reading captured traffic (local + S3), decoding it back into model rows,
penultimate-layer embeddings, and model-version baselines (at registration and by backfill).

Real components: capture files written by serving.capture.CaptureWriter, real Keras models
trained for one epoch on small samples of the bundled datasets, a real ControlLoop with workers.
"""

from __future__ import annotations

import io
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from loopml.artifacts.store import ArtifactStore
from loopml.core.errors import InvalidInput, NotFound
from loopml.models.signature import InputSignature
from loopml.monitoring.capture_reader import capture_files, read_window
from loopml.monitoring.decode import decode_window
from loopml.serving.capture import CaptureWriter
from loopml.serving.codecs import encode_predictions
from tests.process_support import wait_job

pytest_plugins = ("tests.backends",)
UTC = timezone.utc
T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
PENGUIN_COLUMNS = ["island", "bill_length_mm", "bill_depth_mm", "flipper_length_mm", "body_mass_g", "sex", "year"]
SPECIES = ["Adelie", "Chinstrap", "Gentoo"]
PENGUIN = InputSignature(kind="tabular", columns=tuple(PENGUIN_COLUMNS), class_names=tuple(SPECIES))


def _answer(n: int, labels: list[str] = SPECIES, seed: int = 0) -> tuple[bytes, np.ndarray]:
    proba = np.random.default_rng(seed).dirichlet(np.ones(len(labels)), size=n).astype(np.float32)
    return encode_predictions(proba, labels), proba


def _penguin(i: int) -> dict:
    return {"island": ["Biscoe", "Dream", "Torgersen"][i % 3], "bill_length_mm": 39.0 + i,
            "bill_depth_mm": 18.5, "flipper_length_mm": 180 + i, "body_mass_g": 3700,
            "sex": "male" if i % 2 else None, "year": 2008}


def _capture(store: ArtifactStore, records: list[dict], prefix: str = "capture") -> None:
    """Write records through the real CaptureWriter (one file per endpoint/variant/hour)."""
    with CaptureWriter(store, prefix, flush_interval_s=3600) as writer:
        for r in records:
            assert writer.record(r.get("endpoint", "ep"), r.get("variant", "primary"),
                                 input_body=r["body"], input_content_type=r.get("content_type", "application/json"),
                                 output_body=r.get("out") or _answer(1)[0], inference_id=r.get("id"),
                                 model="m", model_version=r.get("version", 1),
                                 event_time=r["time"].timestamp(), shadow=r.get("shadow", False))


def _hourly(n_hours: int, per_hour: int = 3, variants=("primary",)) -> list[dict]:
    out = []
    for h in range(n_hours):
        for k in range(per_hour):
            for v in variants:
                i = len(out)
                out.append({"time": T0 + timedelta(hours=h, minutes=10 * k), "variant": v,
                            "body": orjson.dumps({"instances": [_penguin(i)]}), "id": f"req-{i}",
                            "shadow": v == "shadow"})
    return out


class CountingStore(ArtifactStore):
    """A real local store that records which keys were read and which prefixes were listed."""

    def __init__(self, uri: str) -> None:
        super().__init__(uri)
        self.read: list[str] = []
        self.listed: list[str] = []

    def get_bytes(self, key: str) -> bytes:
        self.read.append(key)
        return super().get_bytes(key)

    def list(self, prefix: str = "") -> list[str]:
        self.listed.append(prefix)
        return super().list(prefix)


# ------------------------------------------------------------------------------------ reading


def test_read_window_returns_the_records_in_the_half_open_window(tmp_path):
    store = ArtifactStore(str(tmp_path / "art"))
    _capture(store, _hourly(4, variants=("primary", "shadow")))
    since, until = T0 + timedelta(minutes=10), T0 + timedelta(hours=2, minutes=10)  # (since, until]
    win = read_window(store, "capture", "ep", None, since=since, until=until)
    times = win.inference_times.to_list()
    assert times == sorted(times) and all(since < t <= until for t in times)
    assert len(win) == 2 * 6  # 10:20, hour 11 (3), 12:00 and 12:10 — both variants
    assert set(win.variants) == {"primary", "shadow"}
    assert [s for s, v in zip(win.shadow, win.variants) if v == "shadow"] == [True] * 6
    assert not any(s for s, v in zip(win.shadow, win.variants) if v == "primary")
    assert win.last_time == until and win.malformed == 0
    assert set(win.input_encodings) == {"JSON"} and set(win.model_versions) == {1}
    assert orjson.loads(win.input_data[0])["instances"][0]["island"] in ("Biscoe", "Dream", "Torgersen")
    assert all(e and len(e) == 36 for e in win.event_ids)

    one = read_window(store, "capture", "ep", "primary", since=since, until=until)
    assert len(one) == 6 and set(one.variants) == {"primary"}
    assert one.inference_ids.to_list() == [i for i, v in zip(win.inference_ids, win.variants) if v == "primary"]
    everything = read_window(store, "capture", "ep", None, since=None, until=None)
    assert len(everything) == 24 and everything.files == 8
    nothing = read_window(store, "capture", "no-such-endpoint", None, since=None, until=None)
    assert len(nothing) == 0 and nothing.last_time is None and nothing.files == 0

    # the next run continues from the cursor without repeating or losing a record
    rest = read_window(store, "capture", "ep", None, since=win.last_time, until=None)
    assert len(rest) + len(win) + len(read_window(store, "capture", "ep", None, since=None, until=since)) == 24


def test_only_the_hours_of_the_window_are_listed_and_read(tmp_path):
    store = CountingStore(str(tmp_path / "art"))
    records = _hourly(2)
    # months of older capture, and capture in the future of the window
    for day in range(1, 40, 3):
        records.append({"time": T0 - timedelta(days=day), "body": b"[]", "id": f"old-{day}"})
    records.append({"time": T0 + timedelta(days=400), "body": b"[]", "id": "later"})
    _capture(store, records)
    since, until = T0 - timedelta(minutes=5), T0 + timedelta(minutes=55)
    store.read.clear()
    store.listed.clear()
    win = read_window(store, "capture", "ep", "primary", since=since, until=until)
    assert len(win) == 3 and win.files == 1
    assert [k.split("/")[3:7] for k in store.read] == [["2026", "03", "01", "10"]]
    # hour 09 of the same day overlaps (since is 09:55) — listed but holds no file; older days never
    assert all("/2026/03/01/" in p for p in store.listed), store.listed
    assert len(capture_files(store, "capture", "ep", None)) == 2 + 13 + 1


def test_malformed_and_truncated_lines_are_counted_and_skipped(tmp_path, caplog):
    store = ArtifactStore(str(tmp_path / "art"))
    _capture(store, _hourly(1, per_hour=2))
    [key] = store.list("capture")
    good = store.get_bytes(key).splitlines()
    no_time = orjson.loads(good[0])
    del no_time["eventMetadata"]["inferenceTime"]
    broken = b"\n".join([good[0], b"{not json", orjson.dumps(no_time), b'"a string"', good[1],
                         good[1][: len(good[1]) // 2]])  # truncated last line, no newline
    store.put_bytes(key, broken)
    bad_types = key.replace(".jsonl", "-b.jsonl")
    odd = orjson.loads(good[0])
    odd["captureData"]["endpointInput"]["data"] = 12  # valid JSON, wrong type
    store.put_bytes(bad_types, orjson.dumps(odd) + b"\n")
    with caplog.at_level("WARNING"):
        win = read_window(store, "capture", "ep", None, since=None, until=None)
    assert len(win) == 2 and win.malformed == 5 and win.files == 2
    assert win.inference_ids.to_list() == ["req-0", "req-1"]
    assert sum("malformed" in r.message for r in caplog.records) == 2  # one warning per file


def test_read_window_over_s3(tmp_path, moto_endpoint, s3_bucket):
    store = ArtifactStore(f"s3://{s3_bucket}/root", s3_endpoint_url=moto_endpoint)
    _capture(store, _hourly(3, variants=("primary", "b")))
    win = read_window(store, "capture", "ep", None, since=T0 + timedelta(hours=1), until=None)
    assert len(win) == 2 * 3 - 2 + 2 * 3  # hour 1 minus its :00 records, and hour 2
    assert win.files == 4 and win.malformed == 0
    decoded = decode_window(win, PENGUIN)
    assert decoded.rows == len(win) and decoded.undecodable == 0


def test_bad_arguments_are_refused():
    store_like = ArtifactStore("/tmp/loopml-test-unused-store")
    with pytest.raises(InvalidInput, match="unknown capture column"):
        read_window(store_like, "capture", "ep", None, since=None, until=None, columns=["bogus"])
    with pytest.raises(InvalidInput, match="since must be a datetime"):
        read_window(store_like, "capture", "ep", None, since="yesterday", until=None)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ decoding


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def test_decode_every_tabular_body_form_with_rows_expanded(tmp_path):
    store = ArtifactStore(str(tmp_path / "art"))
    t = T0 + timedelta(seconds=1)
    three, proba3 = _answer(3, seed=3)
    recs = [
        {"body": orjson.dumps({"instances": [_penguin(0), _penguin(1), _penguin(2)]}), "out": three, "id": "multi"},
        {"body": orjson.dumps([_penguin(3)]), "id": "bare"},
        {"body": orjson.dumps({"inputs": [[_penguin(4)[c] for c in PENGUIN_COLUMNS]]}), "id": "lists"},
        {"body": (",".join(PENGUIN_COLUMNS) + "\nDream,40.5,18,190,3800,female,2009\n").encode(),
         "content_type": "text/csv", "id": "csv"},
        {"body": b'{"instances": [{"island": "Dream"}]}', "out": _answer(2)[0], "id": "count-mismatch"},
        {"body": b'{"instances": "nope"}', "id": "bad-body"},
        {"body": orjson.dumps({"instances": [_penguin(5)]}), "out": b"<html>", "content_type": "application/json",
         "id": "bad-out"},
    ]
    _capture(store, [{**r, "time": t + timedelta(seconds=i)} for i, r in enumerate(recs)])
    win = read_window(store, "capture", "ep", None, since=None, until=None)
    d = decode_window(win, PENGUIN)
    assert d.undecodable == 3
    assert d.rows == 6 and list(d.raw.columns) == PENGUIN_COLUMNS and len(d.raw) == 6
    ids = win.inference_ids.to_list()
    assert [ids[k] for k in d.keep] == ["multi"] * 3 + ["bare", "lists", "csv"]
    assert d.raw["island"].tolist() == ["Biscoe", "Dream", "Torgersen", "Biscoe", "Dream", "Dream"]
    assert d.raw["bill_length_mm"].tolist() == [39.0, 40.0, 41.0, 42.0, 43.0, 40.5]
    assert d.raw["sex"].isna().tolist() == [True, False, True, False, True, False]
    assert d.proba is not None and d.proba.shape == (6, 3)
    np.testing.assert_allclose(d.proba[:3], proba3, atol=1e-6)
    assert d.predicted[:3] == [SPECIES[j] for j in proba3.argmax(axis=1)]
    np.testing.assert_allclose(d.confidence[:3], proba3.max(axis=1), atol=1e-6)
    assert d.records().tolist() == [0, 1, 2, 3]


def test_columnar_and_record_by_record_decoding_agree(tmp_path, monkeypatch):
    """Chunks of plain {"instances": [...]} bodies are read by pyarrow in one go; anything else
    record by record. Both give the same rows, answers and record indices."""
    from loopml.monitoring import decode as decode_module

    store = ArtifactStore(str(tmp_path / "art"))
    recs = []
    for i in range(40):
        n = 1 + i % 3
        recs.append({"body": orjson.dumps({"instances": [_penguin(i + k) for k in range(n)]}),
                     "out": _answer(n, seed=i)[0], "id": f"r{i}", "time": T0 + timedelta(seconds=i)})
    _capture(store, recs)
    win = read_window(store, "capture", "ep", None, since=None, until=None)
    calls = []
    real = decode_module._decode_arrow
    monkeypatch.setattr(decode_module, "_decode_arrow", lambda *a: calls.append(1) or real(*a))
    fast = decode_window(win, PENGUIN)
    monkeypatch.setattr(decode_module, "_decode_arrow", lambda *a: None)
    slow = decode_window(win, PENGUIN)
    assert calls and fast.rows == slow.rows == sum(1 + i % 3 for i in range(40))
    np.testing.assert_array_equal(fast.keep, slow.keep)
    assert fast.predicted == slow.predicted
    np.testing.assert_allclose(fast.proba, slow.proba)
    np.testing.assert_allclose(fast.confidence, slow.confidence)
    pd.testing.assert_frame_equal(fast.raw, slow.raw, check_dtype=False)


def test_decode_images_json_csv_npy_and_oip(tmp_path):
    store = ArtifactStore(str(tmp_path / "art"))
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 17, size=(6, 8, 8)).astype(np.float32)
    labels = [str(i) for i in range(10)]
    oip_in = {"inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 8, 8, 1], "data": imgs[5].ravel().tolist()}]}
    oip_out = {"model_name": "ep", "outputs": [
        {"name": "label", "datatype": "BYTES", "shape": [1], "data": ["7"]},
        {"name": "confidence", "datatype": "FP32", "shape": [1], "data": [0.75]}]}
    recs = [
        {"body": orjson.dumps({"instances": imgs[:2].tolist()}), "out": _answer(2, labels)[0]},          # (N, H, W)
        {"body": ",".join(map(str, imgs[2].ravel().tolist())).encode(), "content_type": "text/csv",
         "out": _answer(1, labels)[0]},
        {"body": _npy(imgs[3:5, :, :, None]), "content_type": "application/x-npy", "out": _answer(2, labels)[0]},
        {"body": orjson.dumps(oip_in), "out": orjson.dumps(oip_out)},
    ]
    _capture(store, [{**r, "time": T0 + timedelta(seconds=i)} for i, r in enumerate(recs)])
    win = read_window(store, "capture", "ep", None, since=None, until=None)
    assert win.input_encodings.to_list() == ["JSON", "CSV", "BASE64", "JSON"]
    d = decode_window(win, InputSignature(kind="image", shape=(8, 8, 1), class_names=tuple(labels)))
    assert d.undecodable == 0 and d.raw.shape == (6, 8, 8, 1) and d.raw.dtype == np.float32
    np.testing.assert_array_equal(d.raw[..., 0], imgs)
    assert d.keep.tolist() == [0, 0, 1, 2, 2, 3]
    assert d.predicted[-1] == "7" and d.confidence[-1] == 0.75
    assert d.proba is None  # the OIP answer carries no full distribution


def test_decode_text_bodies(tmp_path):
    store = ArtifactStore(str(tmp_path / "art"))
    topics = ["business", "sport"]
    recs = [
        {"body": orjson.dumps({"instances": ["shares fell", {"text": "a late goal"}]}), "out": _answer(2, topics)[0]},
        {"body": "the match ended, 2-1".encode(), "content_type": "text/plain", "out": _answer(1, topics)[0]},
        {"body": b'"one, quoted"\ntwo\n', "content_type": "text/csv", "out": _answer(2, topics)[0]},
        {"body": _npy(np.array(["npy text"])), "content_type": "application/x-npy", "out": _answer(1, topics)[0]},
        {"body": b"\xff\xfe not utf-8", "content_type": "text/plain", "out": _answer(1, topics)[0]},
    ]
    _capture(store, [{**r, "time": T0 + timedelta(seconds=i)} for i, r in enumerate(recs)])
    win = read_window(store, "capture", "ep", None, since=None, until=None)
    d = decode_window(win, InputSignature(kind="text", class_names=tuple(topics)))
    assert d.raw == ["shares fell", "a late goal", "the match ended, 2-1", "one, quoted", "two", "npy text"]
    assert d.undecodable == 1 and d.keep.tolist() == [0, 0, 1, 2, 2, 3]
    assert d.proba.shape == (6, 2) and set(d.predicted) <= set(topics)


def test_decode_of_an_empty_window():
    from loopml.monitoring.capture_reader import CaptureWindow

    import pyarrow as pa
    win = CaptureWindow.from_table(pa.table({"inference_times": pa.array([], type=pa.timestamp("ms", tz="UTC"))}))
    d = decode_window(win, PENGUIN)
    assert d.rows == 0 and list(d.raw.columns) == PENGUIN_COLUMNS and d.proba is None and d.undecodable == 0
    d = decode_window(win, InputSignature(kind="image", shape=(8, 8, 1), class_names=tuple(SPECIES)))
    assert d.raw.shape == (0, 8, 8, 1)


# ------------------------------------------------------------------------------------ embeddings


def _train_bundle(folder: Path, sample: str, template: str, params: dict, rows: int) -> tuple[Path, object]:
    """A real Keras model trained 1 epoch on ``rows`` rows of a sample dataset, saved as a bundle."""
    from loopml.datasets.samples import load_sample
    from loopml.datasets.schema import infer_schema
    from loopml.models.bundle import save_bundle
    from loopml.models.features import fit_features
    from loopml.models.hparams import validate_hparams
    from loopml.models.templates import build_model
    from loopml.datasets.content import raw_inputs

    content = load_sample(sample)
    idx = np.random.default_rng(0).permutation(len(content))[:rows]
    content = content.take(np.sort(idx))
    schema = infer_schema(content)
    hp = validate_hparams(template, {"epochs": 1, **params})
    features = fit_features(content, hp, schema)
    model = build_model(template, hp, schema, features)
    y = np.array([schema["classes"].index(str(c)) for c in content.labels])
    model.fit(features.transform(raw_inputs(content)), y, epochs=1, batch_size=32, verbose=0)
    save_bundle(folder, model, features, {"label_names": schema["classes"]})
    return folder, raw_inputs(content)


@pytest.fixture(scope="module")
def bundles(tmp_path_factory):
    root = tmp_path_factory.mktemp("bundles")
    return {
        "cnn": _train_bundle(root / "cnn", "digits", "cnn", {"filters": 8, "dense_units": 16}, 300),
        "rnn": _train_bundle(root / "rnn", "bbc-news", "rnn",
                             {"vocab_size": 2000, "max_length": 60, "units": 8, "embedding_dim": 8}, 200),
        "mlp": _train_bundle(root / "mlp", "penguins", "mlp", {"units": 16}, 200),
    }


@pytest.mark.parametrize("name,dim", [("cnn", 16), ("rnn", 8), ("mlp", 8)])
def test_embed_gives_the_penultimate_layer_deterministically(bundles, name, dim):
    from loopml.models.embeddings import embed

    folder, raw = bundles[name]
    a = embed(folder, raw, max_rows=50, seed=1)
    b = embed(folder, raw, max_rows=50, seed=1)
    c = embed(folder, raw, max_rows=50, seed=2)
    assert a.shape == (50, dim) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)  # another sample of rows
    assert embed(folder, raw, max_rows=10_000).shape == (len(raw), dim)  # fewer rows than the cap: all


def test_penultimate_layer_skips_dropout_and_softmax_heads():
    import keras

    from loopml.models.embeddings import penultimate_model

    inputs = keras.Input((4,))
    x = keras.layers.Dense(5, name="hidden")(inputs)
    x = keras.layers.Dropout(0.3)(x)
    x = keras.layers.Dense(3, name="logits")(x)
    out = keras.layers.Softmax()(x)
    assert penultimate_model(keras.Model(inputs, out)).outputs[0].shape[-1] == 5
    with pytest.raises(InvalidInput, match="no hidden layer"):
        penultimate_model(keras.Model(inputs, keras.layers.Dense(2)(inputs)))


# ------------------------------------------------------------------------------------ baselines


def _wait(plat, job_id: str) -> dict:
    job = wait_job(plat, job_id, timeout=300.0)
    logs = "\n".join(line["text"] for line in plat.jobs.logs(job_id))
    assert job["status"] == "succeeded", f"{job['reason']}\n{logs}"
    return job


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """digits:1 and digits-cnn:1 trained (1 epoch) by a real job through a real ControlLoop."""
    from loopml.controlplane import ControlLoop
    from loopml.core.settings import Settings
    from loopml.datasets.service import register
    from loopml.platform import Platform
    from loopml.training.service import submit_training

    plat = Platform(Settings(home=tmp_path_factory.mktemp("baseline"), reconcile_interval_s=0.2,
                             max_concurrent_jobs=1))
    register(plat, "digits", "sample:digits")
    loop = ControlLoop(plat)
    loop.start()
    try:
        job = submit_training(plat, dataset="digits", model="cnn", params={"epochs": 1, "batch_size": 64})
        yield plat, _wait(plat, job["id"])
    finally:
        loop.stop()
        plat.close()


def test_registration_writes_the_baseline_with_the_bundle(trained):
    from loopml.monitoring.baseline_job import load_baseline

    plat, job = trained
    assert job["result"]["baseline"] is True
    version = plat.models.get("digits-cnn", 1)
    keys = plat.artifacts.list(version["artifact_prefix"])
    assert f"{version['artifact_prefix']}/baseline/profile.json" in keys
    profile, emb = load_baseline(plat, version)
    counts = plat.datasets.get("digits")["splits"]["counts"]
    held_out = counts["validation"] + counts["test"]  # live traffic is unseen data: so is the baseline
    assert profile["source"]["split"] == "validation+test"
    assert profile["kind"] == "image" and profile["rows"] == min(held_out, 5000)
    assert {"mean_intensity", "contrast", "ink_fraction"} <= set(profile["features"])
    assert sum(profile["predictions"]["classes"].values()) == profile["rows"]
    assert profile["schema"]["classes"] == [str(i) for i in range(10)]
    dense = int(version["hparams"]["dense_units"])  # the seed CNN's penultimate layer
    assert emb.dtype == np.float32 and emb.shape == (min(held_out, 2000), dense)
    assert profile["embedding"] == {"dim": dense, "n": emb.shape[0]}
    # the accuracy estimate's map, fit on the same held-out rows with their labels
    calibration = profile["calibration"]
    assert calibration["n"] == profile["rows"] and 0 < calibration["accuracy"] <= 1
    assert sum(k[2] for k in calibration["knots"]) == calibration["n"]
    logs = "\n".join(line["text"] for line in plat.jobs.logs(job["id"]))
    assert "baseline:" in logs and "embedded in" in logs and f"calibrated on {calibration['n']} held-out rows" in logs


def test_backfill_job_recreates_a_missing_baseline(trained):
    from loopml.monitoring.baseline_job import load_baseline, submit_baseline

    plat, _ = trained
    version = plat.models.get("digits-cnn", 1)
    before, emb_before = load_baseline(plat, version)
    plat.artifacts.delete(f"{version['artifact_prefix']}/baseline")
    with pytest.raises(NotFound, match=r"run `loopml monitors baseline digits-cnn:1`"):
        load_baseline(plat, version)

    with pytest.raises(NotFound):
        submit_baseline(plat, "no-such-model:1")
    with pytest.raises(NotFound):
        submit_baseline(plat, "digits-cnn:7")
    with pytest.raises(InvalidInput):
        submit_baseline(plat, "digits-cnn:x")
    with pytest.raises(InvalidInput):
        submit_baseline(plat, "  ")

    from loopml.controlplane import ControlLoop

    job = submit_baseline(plat, "digits-cnn")  # newest version
    assert job["kind"] == "baseline" and job["spec"] == {"model": "digits-cnn", "version": 1}
    loop = ControlLoop(plat)
    loop.start()
    try:
        done = _wait(plat, job["id"])
    finally:
        loop.stop()
    assert done["result"]["model_ref"] == "digits-cnn:1" and done["result"]["embedded_rows"] == emb_before.shape[0]
    after, emb_after = load_baseline(plat, version)
    assert after["rows"] == before["rows"] and after["features"].keys() == before["features"].keys()
    assert done["result"]["calibrated_rows"] == after["calibration"]["n"] == before["calibration"]["n"]
    assert after["calibration"]["accuracy"] == pytest.approx(before["calibration"]["accuracy"], abs=0.01)
    # the same rows and model (ONNX instead of Keras for the probabilities): the same profile
    assert after["features"]["mean_intensity"]["mean"] == pytest.approx(before["features"]["mean_intensity"]["mean"])
    np.testing.assert_allclose(emb_after, emb_before, rtol=1e-4, atol=1e-4)
