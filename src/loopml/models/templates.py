"""The built-in model templates (the seed project's architectures) and user model files.

Imported only by training code: it imports keras at module level.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from pathlib import Path
from typing import Any, Callable

import keras

from loopml.core.errors import InvalidInput
from loopml.models.features import Features
from loopml.models.hparams import TEMPLATE_KIND, TEMPLATES, check_model_name, is_user_model, \
    user_model_path
from loopml.models.layers import Standardize

UserBuilder = Callable[[dict[str, Any], dict[str, Any]], Any]

# Dropout before the CNN classifier head: fixed in the seed architecture, not the hparam.
CNN_HEAD_DROPOUT = 0.5


def build_model(template: str, hparams: dict[str, Any], schema: dict[str, Any],
                features: Features) -> keras.Model:
    """A compiled template model whose input is ``features.transform`` output.

    ``hparams`` must come from ``validate_hparams``; integer labels index schema["classes"].
    """
    template = check_model_name(template)
    if is_user_model(template):
        return build_user_model(user_model_path(template), hparams, schema, features)
    if features.kind != TEMPLATE_KIND[template]:
        raise InvalidInput(f"model {template!r} needs {TEMPLATE_KIND[template]} features, "
                           f"got {features.kind}")
    n_classes = _n_classes(schema)
    keras.utils.set_random_seed(int(hparams.get("seed", 42)))
    builders = {"cnn": _cnn, "rnn": _rnn, "mlp": _mlp}
    model = builders[template](hparams, n_classes, features)
    compile_model(model, hparams)
    return model


def _n_classes(schema: dict[str, Any]) -> int:
    classes = schema.get("classes") or []
    if len(classes) < 2:
        raise InvalidInput(f"classification needs at least 2 classes, the dataset has "
                           f"{len(classes)}: {list(classes)}")
    return len(classes)


def _pool_size(height: int, width: int) -> tuple[int, int]:
    # 2x2 as in the seed, but never pool an axis already of size 1 (tiny images, e.g. 8x8
    # digits reach 2x2 after two pools; a 3x3 image would otherwise collapse to 0).
    return (2 if height >= 2 else 1, 2 if width >= 2 else 1)


def _cnn(hp: dict[str, Any], n_classes: int, features: Features) -> keras.Model:
    height, width, channels = features.input_shape
    mean, std = features.standardize_stats()  # type: ignore[misc]
    filters, dropout = int(hp["filters"]), float(hp["dropout"])
    inputs = keras.Input((height, width, channels), name=features.input_name)
    x = Standardize(mean, std, name="standardize")(inputs)
    for block, block_filters in enumerate((filters, filters * 2), start=1):
        x = keras.layers.Conv2D(block_filters, (3, 3), padding="same", activation="relu",
                                name=f"conv{block}")(x)
        pool = _pool_size(height, width)
        x = keras.layers.MaxPooling2D(pool, name=f"pool{block}")(x)
        height, width = height // pool[0], width // pool[1]
        x = keras.layers.Dropout(dropout, name=f"dropout{block}")(x)
    x = keras.layers.Flatten(name="flatten")(x)
    x = keras.layers.Dense(int(hp["dense_units"]), activation="relu", name="dense")(x)
    x = keras.layers.Dropout(CNN_HEAD_DROPOUT, name="dropout_head")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="cnn")


def _rnn(hp: dict[str, Any], n_classes: int, features: Features) -> keras.Model:
    (max_length,) = features.input_shape
    # The tokenizer's actual vocabulary (≤ hparam vocab_size): ids never exceed it.
    vocab_size = int(getattr(features, "vocab_size"))
    units = int(hp["units"])
    inputs = keras.Input((max_length,), dtype="int32", name=features.input_name)
    # mask_zero: padding id 0 is skipped by the LSTMs (measured on BBC news, 15 epochs:
    # 0.89 accuracy with masking vs 0.68 without).
    x = keras.layers.Embedding(vocab_size, int(hp["embedding_dim"]), mask_zero=True,
                               name="embedding")(inputs)
    x = keras.layers.LSTM(units, return_sequences=True, name="lstm1")(x)
    x = keras.layers.LSTM(units, name="lstm2")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="rnn")


def _mlp(hp: dict[str, Any], n_classes: int, features: Features) -> keras.Model:
    mean, std = features.standardize_stats()  # type: ignore[misc]
    units = int(hp["units"])
    inputs = keras.Input(features.input_shape, name=features.input_name)
    x = Standardize(mean, std, name="standardize")(inputs)
    x = keras.layers.Dense(units, activation="relu", name="hidden1")(x)
    x = keras.layers.Dropout(float(hp["dropout"]), name="dropout")(x)
    x = keras.layers.Dense(max(1, units // 2), activation="relu", name="hidden2")(x)
    outputs = keras.layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="mlp")


def make_optimizer(hparams: dict[str, Any]) -> keras.optimizers.Optimizer:
    name = str(hparams.get("optimizer", "adam")).lower()
    rate = float(hparams.get("learning_rate", 1e-3))
    classes = {"adam": keras.optimizers.Adam, "sgd": keras.optimizers.SGD,
               "rmsprop": keras.optimizers.RMSprop, "adamw": keras.optimizers.AdamW}
    if name not in classes:
        raise InvalidInput(f"unknown optimizer {name!r}; expected one of {', '.join(classes)}")
    clipnorm = float(hparams.get("clipnorm", 0.0) or 0.0)
    return classes[name](learning_rate=rate, clipnorm=clipnorm or None)


def compile_model(model: keras.Model, hparams: dict[str, Any]) -> None:
    model.compile(optimizer=make_optimizer(hparams), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])


# --------------------------------------------------------------------------- user models


def load_user_builder(path: str) -> UserBuilder:
    """Import a Python file and return its ``build_model(hparams, schema)``.

    The file runs with the worker's privileges: user model files are trusted code by design.
    """
    file = Path(path)
    if not file.is_file():
        raise InvalidInput(f"model file {path!r} does not exist")
    module_name = f"loopml_user_model_{uuid.uuid4().hex}"
    spec = importlib.util.spec_from_file_location(module_name, file)
    if spec is None or spec.loader is None:
        raise InvalidInput(f"model file {path!r} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses & co. look themselves up here
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        sys.modules.pop(module_name, None)
        raise InvalidInput(f"model file {path!r} failed to import: "
                           f"{type(exc).__name__}: {exc}") from exc
    builder = getattr(module, "build_model", None)
    if not callable(builder):
        raise InvalidInput(f"model file {path!r} defines no build_model(hparams, schema) "
                           "function")
    return builder


def build_user_model(path: str, hparams: dict[str, Any], schema: dict[str, Any],
                     features: Features) -> keras.Model:
    """Call the user's builder; compile the result like the templates if they did not.

    The builder gets the schema plus ``schema["input"]`` (name/dtype/shape of the
    transformed input it will receive) and, for text, ``schema["vocab_size"]``. Images and
    tabular rows arrive unstandardised: ``loopml.models.layers.Standardize`` with
    ``schema["standardize"]`` (mean, std) does what the templates do.
    """
    builder = load_user_builder(path)
    user_schema = dict(schema)
    user_schema["input"] = features.input_signature()
    stats = features.standardize_stats()
    if stats is not None:
        mean, std = stats
        user_schema["standardize"] = {"mean": _jsonable(mean), "std": _jsonable(std)}
    if features.kind == "text":
        user_schema["vocab_size"] = int(getattr(features, "vocab_size"))
    keras.utils.set_random_seed(int(hparams.get("seed", 42)))
    try:
        model = builder(dict(hparams), user_schema)
    except Exception as exc:
        raise InvalidInput(f"build_model in {path!r} raised {type(exc).__name__}: {exc}") \
            from exc
    if not isinstance(model, keras.Model):
        raise InvalidInput(f"build_model in {path!r} must return a keras.Model, "
                           f"got {type(model).__name__}")
    if not model.compiled:
        compile_model(model, hparams)
    return model


def _jsonable(value: Any) -> Any:
    return value.tolist() if hasattr(value, "tolist") else float(value)


__all__ = ["TEMPLATES", "build_model", "build_user_model", "load_user_builder",
           "compile_model", "make_optimizer"]
