"""loopml.models: hparams, features, templates, bundles and runtimes, with real (tiny) training."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pandas as pd
import pytest

from loopml.core.errors import CorruptArtifact, InvalidInput, NotFound
from loopml.datasets.content import DatasetContent
from loopml.models.features import (ImageFeatures, TabularFeatures, TextFeatures,
                                    features_from_config, fit_features)
from loopml.models.hparams import (HPARAMS, TEMPLATES, check_template_suits, template_for_kind,
                                   validate_hparams)

TOL = 1e-4


# --------------------------------------------------------------------------- data


def _schema(labels: np.ndarray, kind: str) -> dict:
    return {"kind": kind, "rows": len(labels), "classes": sorted(set(labels.tolist()))}


def _int_labels(labels: np.ndarray, schema: dict) -> np.ndarray:
    index = {name: i for i, name in enumerate(schema["classes"])}
    return np.array([index[x] for x in labels], dtype=np.int64)


@pytest.fixture(scope="module")
def digits() -> DatasetContent:
    from sklearn.datasets import load_digits

    data = load_digits()
    return DatasetContent(kind="image", images=data.images[..., np.newaxis].astype(np.float32),
                          labels=np.array([str(t) for t in data.target], dtype=object))


_TOPICS = {
    "sport": ["the team won the match", "a late goal in the final", "the coach praised players",
              "fans cheered the striker", "record win at the stadium", "the league title race"],
    "tech": ["new phone with a faster chip", "software update fixes bugs", "the app crashed",
             "cloud servers and data centres", "a robot learns to walk", "chip makers ship more"],
    "politics": ["the minister announced a vote", "parliament debated the bill",
                 "election results are in", "the party leader resigned",
                 "a new law on taxes", "voters queue at the polls"],
}


@pytest.fixture(scope="module")
def texts() -> DatasetContent:
    rows = [(f"{s}. Café news, report {i}!", topic)
            for topic, sentences in _TOPICS.items() for i in range(4) for s in sentences]
    frame = pd.DataFrame({"body": [r[0] for r in rows]})
    return DatasetContent(kind="text", frame=frame, text_column="body",
                          labels=np.array([r[1] for r in rows], dtype=object))


@pytest.fixture(scope="module")
def table() -> DatasetContent:
    rng = np.random.default_rng(0)
    n = 120
    size = rng.normal(10, 3, n)
    colour = rng.choice(["red", "green", "blue"], n).astype(object)
    weight = size * 2 + rng.normal(0, 1, n)
    weight[::7] = np.nan  # missing numeric values → imputed + indicator
    colour[::11] = None  # missing category → "other" slot
    labels = np.where(size > 10, "big", "small").astype(object)
    frame = pd.DataFrame({"size": size, "weight": weight, "colour": colour,
                          "count": rng.integers(0, 5, n)})
    return DatasetContent(kind="tabular", frame=frame, labels=labels)


# --------------------------------------------------------------------------- hparams


def test_hparams_defaults_and_string_coercion():
    cnn = validate_hparams("cnn", {"epochs": "3", "learning_rate": "1e-3", "optimizer": "SGD",
                                   "dropout": "0.25", "batch_size": 16.0})
    assert cnn["epochs"] == 3 and cnn["learning_rate"] == 1e-3 and cnn["optimizer"] == "sgd"
    assert cnn["dropout"] == 0.25 and cnn["batch_size"] == 16
    assert validate_hparams("CNN", {})["batch_size"] == 64
    rnn = validate_hparams("rnn", {})
    assert (rnn["epochs"], rnn["batch_size"], rnn["units"], rnn["embedding_dim"],
            rnn["max_length"], rnn["vocab_size"]) == (15, 64, 128, 32, 200, 10_000)
    assert rnn["clipnorm"] == 1.0 and rnn["restore_best"] is True and cnn["clipnorm"] == 0.0
    assert rnn["lr_schedule"] == "cosine" and cnn["lr_schedule"] == "constant"
    assert validate_hparams("cnn", {"restore_best": "false"})["restore_best"] is False
    assert validate_hparams("mlp", None)["epochs"] == 50
    assert set(HPARAMS) >= {"epochs", "batch_size", "learning_rate", "optimizer", "filters",
                            "dense_units", "units", "embedding_dim", "dropout", "max_length",
                            "vocab_size", "patience", "seed"}


def test_hparams_refusals_name_the_problem():
    with pytest.raises(InvalidInput, match="valid names: .*batch_size.*epochs"):
        validate_hparams("cnn", {"epoch": 3})
    with pytest.raises(InvalidInput, match=r"epochs='abc' is not a valid int"):
        validate_hparams("cnn", {"epochs": "abc"})
    with pytest.raises(InvalidInput, match="out of range"):
        validate_hparams("rnn", {"epochs": 0})
    with pytest.raises(InvalidInput, match="must be one of adam, sgd, rmsprop, adamw"):
        validate_hparams("mlp", {"optimizer": "nadam"})
    with pytest.raises(InvalidInput, match="only used by rnn"):
        validate_hparams("cnn", {"max_length": 10})
    with pytest.raises(InvalidInput, match="not a valid float"):
        validate_hparams("cnn", {"learning_rate": "nan"})
    with pytest.raises(InvalidInput, match="unknown model"):
        validate_hparams("transformer", {})


def test_user_model_params_pass_through_as_strings():
    params = validate_hparams("file:my_model.py", {"hidden": 16, "epochs": "2", "act": "relu"})
    assert params["hidden"] == "16" and params["act"] == "relu" and params["epochs"] == 2
    assert validate_hparams("models/net.py", {"x": "1"})["x"] == "1"


def test_template_suitability():
    assert TEMPLATES == ("cnn", "rnn", "mlp")
    assert [template_for_kind(k) for k in ("image", "text", "tabular")] == list(TEMPLATES)
    check_template_suits("rnn", "text")
    with pytest.raises(InvalidInput, match="needs a dataset of kind 'image'.*'rnn' for text"):
        check_template_suits("cnn", "text")
    with pytest.raises(InvalidInput):
        template_for_kind("audio")


def test_hparams_module_does_not_import_keras():
    code = ("import sys, loopml.models.hparams; "
            "print(sorted(m for m in ('keras', 'tensorflow') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- features


def test_image_features_accept_shapes_and_refuse_bad_input(digits):
    features = fit_features(digits, {})
    assert isinstance(features, ImageFeatures) and features.input_shape == (8, 8, 1)
    raw = digits.images[:3]
    expected = features.transform(raw)
    assert expected.dtype == np.float32 and expected.shape == (3, 8, 8, 1)
    np.testing.assert_array_equal(features.transform(raw[..., 0]), expected)
    np.testing.assert_array_equal(features.transform(raw.reshape(3, -1).tolist()), expected)
    with pytest.raises(InvalidInput, match=r"shape \(2, 63\); expected \(N, 8, 8, 1\)"):
        features.transform(np.zeros((2, 63)))
    with pytest.raises(InvalidInput, match="NaN"):
        features.transform(np.full((1, 64), np.nan))
    again = features_from_config(json.loads(json.dumps(features.to_config())), {})
    assert again.standardize_stats() == features.standardize_stats()


def test_text_features_vocabulary_padding_and_oov(texts):
    features = fit_features(texts, {"vocab_size": 200, "max_length": 12})
    assert isinstance(features, TextFeatures) and 2 < features.vocab_size <= 200
    ids = features.transform(["The TEAM won!", "a" + " goal" * 40])
    assert ids.dtype == np.int32 and ids.shape == (2, 12)
    assert (ids[0, 3:] == 0).all() and (ids[0, :3] > 1).all()  # the, team, won (punctuation dropped), padding
    assert (ids[1] > 0).all()  # truncated, no padding
    # fed last-to-first (the title and lead end next to the LSTM's output); padding stays right
    tok = features._tokenizer
    assert list(ids[0, :3]) == [tok.token_to_id(w) for w in ("won", "team", "the")]
    assert ids[1, 0] == tok.token_to_id("goal") and ids[1, -1] == tok.token_to_id("a")
    # NFD + lowercase + strip accents: "CAFÉ" is the known token "cafe".
    assert features.transform(["CAFÉ"])[0, 0] == features.transform(["cafe"])[0, 0] > 1
    assert features.oov_rate(["the zebra"]) == 0.5
    assert features.oov_rate([]) == 0.0
    with pytest.raises(InvalidInput, match="list of strings"):
        features.transform("a bare string")
    files = features.files()
    assert list(files) == ["tokenizer.json"]
    again = features_from_config(features.to_config(), files)
    np.testing.assert_array_equal(again.transform(["the team won"]),
                                  features.transform(["the team won"]))


def test_tabular_features_impute_one_hot_and_missing_column(table):
    features = fit_features(table, {})
    assert isinstance(features, TabularFeatures)
    assert features.feature_names == [
        "size", "weight", "weight__missing", "colour=blue", "colour=green", "colour=red",
        "colour=__other__", "count"]
    x = features.transform(table.frame)
    assert x.dtype == np.float32 and x.shape == (120, 8) and np.isfinite(x).all()
    fill = float(np.nanmean(table.frame["weight"]))
    assert x[0, 1] == pytest.approx(fill) and x[0, 2] == 1.0
    records = [{"size": 9.0, "weight": None, "colour": "purple", "count": 2}]
    row = features.transform(records)[0]
    assert row[2] == 1.0 and row[6] == 1.0 and row[3:6].sum() == 0.0
    with pytest.raises(InvalidInput, match="missing column.*colour"):
        features.transform([{"size": 1.0, "weight": 2.0, "count": 1}])
    with pytest.raises(InvalidInput, match="'size' is numeric but got 'big'"):
        features.transform([{"size": "big", "weight": 2.0, "colour": "red", "count": 1}])
    mean, std = features.standardize_stats()
    np.testing.assert_allclose(mean, x.mean(axis=0), atol=1e-5)


# --------------------------------------------------------------------------- templates


def _layer_names(model) -> list[str]:
    return [layer.__class__.__name__ for layer in model.layers]


def test_cnn_layer_sequence_and_tiny_images(digits):
    from loopml.models.templates import build_model

    hp = validate_hparams("cnn", {})
    schema = _schema(digits.labels, "image")
    model = build_model("cnn", hp, schema, fit_features(digits, hp))
    assert _layer_names(model) == [
        "InputLayer", "Standardize", "Conv2D", "MaxPooling2D", "Dropout", "Conv2D",
        "MaxPooling2D", "Dropout", "Flatten", "Dense", "Dropout", "Dense"]
    conv1, conv2 = model.get_layer("conv1"), model.get_layer("conv2")
    assert (conv1.filters, conv2.filters, conv1.kernel_size, conv1.padding) == (32, 64, (3, 3),
                                                                                 "same")
    assert model.get_layer("dense").units == 512 and model.get_layer("dropout_head").rate == 0.5
    assert model.get_layer("dropout1").rate == 0.2 and model.output_shape == (None, 10)
    tiny = DatasetContent(kind="image", images=np.random.rand(4, 3, 3, 3) * 255,
                          labels=np.array(["a", "b", "a", "b"], dtype=object))
    small = build_model("cnn", hp, _schema(tiny.labels, "image"), fit_features(tiny, hp))
    assert small.predict_on_batch(np.zeros((1, 3, 3, 3), np.float32)).shape == (1, 2)


def test_rnn_layer_sequence_masks_padding(texts):
    from loopml.models.templates import build_model

    hp = validate_hparams("rnn", {"vocab_size": 40})
    features = fit_features(texts, hp)
    model = build_model("rnn", hp, _schema(texts.labels, "text"), features)
    assert _layer_names(model) == ["InputLayer", "Embedding", "LSTM", "LSTM", "Dense"]
    embedding = model.get_layer("embedding")
    assert embedding.mask_zero and embedding.output_dim == 32
    assert embedding.input_dim == features.vocab_size == 40
    assert model.get_layer("lstm1").return_sequences and model.get_layer("lstm1").units == 128
    assert not model.get_layer("lstm2").return_sequences
    assert model.input_shape == (None, 200) and model.output_shape == (None, 3)
    assert model.compiled and model.loss == "sparse_categorical_crossentropy"


def test_mlp_layer_sequence(table):
    from loopml.models.templates import build_model

    hp = validate_hparams("mlp", {"units": 16, "optimizer": "rmsprop"})
    model = build_model("mlp", hp, _schema(table.labels, "tabular"), fit_features(table, hp))
    assert _layer_names(model) == ["InputLayer", "Standardize", "Dense", "Dropout", "Dense",
                                   "Dense"]
    assert model.get_layer("hidden2").units == 8 and model.input_shape == (None, 8)
    assert model.optimizer.__class__.__name__ == "RMSprop"


# --------------------------------------------------------------------------- bundles


def _train(template: str, content: DatasetContent, params: dict):
    from loopml.models.templates import build_model

    hp = validate_hparams(template, params)
    schema = _schema(content.labels, content.kind)
    features = fit_features(content, hp)
    model = build_model(template, hp, schema, features)
    raw = content.images if content.kind == "image" else content.frame
    history = model.fit(features.transform(raw), _int_labels(content.labels, schema),
                        epochs=hp["epochs"], batch_size=hp["batch_size"], verbose=0)
    meta = {"label_names": schema["classes"], "hparams": hp, "job_id": "job-1",
            "dataset_version": "ds@1", "metrics": {"loss": history.history["loss"][-1]}}
    return model, features, meta


def _assert_round_trip(folder: Path, model, features, raw, manifest: dict) -> dict:
    """Both runtimes reproduce the in-process probabilities from RAW inputs."""
    from loopml.models.bundle import keras_probabilities, load_bundle

    expected = keras_probabilities(model, features.transform(raw))
    reference = json.loads((folder / "reference.json").read_text())
    diffs = {}
    for runtime in ("onnx", "keras"):
        bundle = load_bundle(folder, runtime=runtime)
        assert bundle.runtime_name == runtime
        got = bundle.predict_proba(raw)
        assert got.dtype == np.float32 and got.shape == expected.shape
        diffs[runtime] = float(np.abs(got - expected).max())
        assert diffs[runtime] <= TOL
        np.testing.assert_allclose(bundle.predict_proba(reference["inputs"]),
                                   reference["probabilities"], atol=TOL)
        assert bundle.reference_max_abs_diff() <= TOL
    assert load_bundle(folder).runtime_name == "onnx"  # auto prefers the verified export
    assert manifest["runtimes"] == ["onnx", "keras"] and manifest["onnx"]["max_abs_diff"] <= TOL
    return diffs


def test_digits_cnn_round_trip(digits, tmp_path):
    from loopml.models.bundle import load_bundle, save_bundle

    model, features, meta = _train("cnn", digits, {"epochs": 1, "filters": 8,
                                                   "dense_units": 32})
    raw = digits.images[:40].reshape(40, -1)  # flat raw pixels, as a client might send
    manifest = save_bundle(tmp_path / "v1", model, features, meta, reference_inputs=raw[:5])
    assert sorted(p.name for p in (tmp_path / "v1").iterdir()) == [
        "loopml.json", "model.keras", "model.onnx", "reference.json"]
    assert manifest["input"] == {"name": "image", "dtype": "float32", "shape": [None, 8, 8, 1]}
    assert manifest["kind"] == "image" and manifest["job_id"] == "job-1"
    assert manifest["label_names"] == [str(i) for i in range(10)]
    assert {"keras", "tensorflow", "onnxruntime", "numpy", "python",
            "keras_backend"} <= set(manifest["frameworks"])
    _assert_round_trip(tmp_path / "v1", model, features, raw, manifest)
    predictions = load_bundle(tmp_path / "v1").predict(digits.images[:2])
    assert set(predictions[0]) == {"label", "confidence", "probabilities"}
    assert predictions[0]["confidence"] == max(predictions[0]["probabilities"].values())
    assert sum(predictions[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


def test_text_rnn_round_trip(texts, tmp_path):
    from loopml.models.bundle import load_bundle, save_bundle

    model, features, meta = _train("rnn", texts, {"epochs": 1, "units": 8, "embedding_dim": 8,
                                                  "max_length": 16, "vocab_size": 60})
    raw = texts.texts[:6] + ["", "zebra quokka", "the team " * 30, "CAFÉ Café cafe"]
    manifest = save_bundle(tmp_path / "t1", model, features, meta, reference_inputs=raw)
    assert (tmp_path / "t1" / "tokenizer.json").is_file()
    assert manifest["input"] == {"name": "tokens", "dtype": "int32", "shape": [None, 16]}
    assert manifest["features"]["tokenizer_file"] == "tokenizer.json"
    _assert_round_trip(tmp_path / "t1", model, features, raw, manifest)
    bundle = load_bundle(tmp_path / "t1")
    assert bundle.features.oov_rate(["zebra the"]) == 0.5
    assert [p["label"] for p in bundle.predict(raw[:2])] == \
        [meta["label_names"][i] for i in model.predict_on_batch(features.transform(raw[:2]))
         .argmax(axis=1)]


def test_tabular_mlp_round_trip(table, tmp_path):
    from loopml.models.bundle import load_bundle, save_bundle

    model, features, meta = _train("mlp", table, {"epochs": 2, "units": 16})
    records = features.raw_to_json(table.frame.iloc[:20])
    records.append({"size": None, "weight": None, "colour": "unseen", "count": 3})
    manifest = save_bundle(tmp_path / "m1", model, features, meta, reference_inputs=records)
    assert manifest["features"]["feature_names"][2] == "weight__missing"
    _assert_round_trip(tmp_path / "m1", model, features, records, manifest)
    with pytest.raises(InvalidInput, match="missing column.*count"):
        load_bundle(tmp_path / "m1").predict([{"size": 1, "weight": 2, "colour": "red"}])


def test_lambda_layer_refused_by_safe_mode(tmp_path, table):
    import keras

    from loopml.models.bundle import load_bundle, save_bundle

    features = TabularFeatures.fit(table.frame[["size", "count"]])
    inputs = keras.Input((2,), name="features")
    doubled = keras.layers.Lambda(lambda x: x * 2.0)(inputs)
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(doubled))
    save_bundle(tmp_path / "lam", model, features, {"label_names": ["big", "small"]})
    for runtime in ("keras", "auto", "onnx"):  # the ONNX path must not bypass it
        with pytest.raises(CorruptArtifact, match="safe mode"):
            load_bundle(tmp_path / "lam", runtime=runtime)
    trusted = load_bundle(tmp_path / "lam", runtime="keras", trusted=True)
    assert trusted.predict_proba([{"size": 1.0, "count": 2}]).shape == (1, 2)


def test_user_model_file_round_trip(digits, tmp_path):
    from loopml.models.bundle import load_bundle, save_bundle
    from loopml.models.templates import build_model, load_user_builder

    source = tmp_path / "my_model.py"
    source.write_text(textwrap.dedent("""
        import keras
        from loopml.models.layers import Standardize

        def build_model(hparams, schema):
            inputs = keras.Input(tuple(schema["input"]["shape"][1:]), name="image")
            x = Standardize(**schema["standardize"])(inputs)
            x = keras.layers.Flatten()(x)
            x = keras.layers.Dense(int(hparams["hidden"]), activation="relu")(x)
            outputs = keras.layers.Dense(len(schema["classes"]), activation="softmax")(x)
            return keras.Model(inputs, outputs)  # not compiled: LoopML compiles it
    """))
    hp = validate_hparams(f"file:{source}", {"hidden": "16", "epochs": "1"})
    assert hp["hidden"] == "16"
    schema = _schema(digits.labels, "image")
    features = fit_features(digits, hp)
    model = build_model(f"file:{source}", hp, schema, features)
    assert model.compiled and _layer_names(model)[1] == "Standardize"
    model.fit(features.transform(digits.images), _int_labels(digits.labels, schema), epochs=1,
              verbose=0)
    manifest = save_bundle(tmp_path / "u1", model, features,
                           {"label_names": schema["classes"], "hparams": hp},
                           reference_inputs=digits.images[:4])
    _assert_round_trip(tmp_path / "u1", model, features, digits.images[:30], manifest)

    with pytest.raises(InvalidInput, match="does not exist"):
        load_user_builder(str(tmp_path / "nope.py"))
    (tmp_path / "empty.py").write_text("x = 1\n")
    with pytest.raises(InvalidInput, match="no build_model"):
        load_user_builder(str(tmp_path / "empty.py"))
    (tmp_path / "broken.py").write_text("def build_model(h, s):\n    raise RuntimeError('boom')\n")
    with pytest.raises(InvalidInput, match="RuntimeError: boom"):
        build_model(str(tmp_path / "broken.py"), hp, schema, features)


def test_onnx_serving_path_imports_no_tensorflow(digits, tmp_path):
    from loopml.models.bundle import save_bundle

    model, features, meta = _train("cnn", digits, {"epochs": 1, "filters": 4,
                                                   "dense_units": 16})
    save_bundle(tmp_path / "s1", model, features, meta, reference_inputs=digits.images[:3])
    code = textwrap.dedent(f"""
        import json, sys
        from loopml.models.bundle import load_bundle
        bundle = load_bundle({str(tmp_path / 's1')!r}, runtime="onnx")
        diff = bundle.reference_max_abs_diff()
        bundle.predict([[0.0] * 64])
        print(json.dumps({{"diff": diff, "loaded": [m for m in ("tensorflow", "keras")
                                                    if m in sys.modules]}}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["loaded"] == [] and result["diff"] <= TOL


def test_load_bundle_refuses_broken_folders(tmp_path):
    from loopml.models.bundle import load_bundle

    with pytest.raises(NotFound):
        load_bundle(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CorruptArtifact, match=r"empty has no loopml.json"):
        load_bundle(tmp_path / "empty")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "loopml.json").write_text("{not json")
    with pytest.raises(CorruptArtifact, match="loopml.json in .*bad is not valid JSON"):
        load_bundle(tmp_path / "bad")
