"""Penultimate-layer embeddings of a Keras model: what the model "sees" just before it decides.

Monitoring compares their distribution between a version's training rows (the baseline) and
served traffic (a multivariate drift test). The embedding layer is the last layer before the
output head: trailing activation/softmax layers and the output Dense are skipped, and Dropout
(identity at inference) is skipped too, so the seed CNN gives its ``dense`` layer, the seed RNN
``lstm2`` and the MLP ``hidden2``.

Imports keras (inside functions): worker processes only, like the rest of models/ training code.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from loopml.core.errors import InvalidInput

__all__ = ["embed", "embed_transformed", "penultimate_model", "sample_rows", "take_rows"]

_BATCH = 256
_SKIP_AT_END = ("Activation", "Softmax")
_SKIP = ("Dropout", "SpatialDropout1D", "SpatialDropout2D", "GaussianDropout", "GaussianNoise",
         "AlphaDropout")


def sample_rows(n: int, max_rows: int, seed: int = 0) -> np.ndarray:
    """Sorted indices of at most ``max_rows`` of ``n`` rows, chosen with ``seed`` (all when fewer)."""
    if n <= max_rows:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=max_rows, replace=False)).astype(np.int64)


def take_rows(raw: Any, idx: np.ndarray) -> Any:
    """Rows ``idx`` of raw inputs: an array, a DataFrame or a list."""
    if hasattr(raw, "iloc"):
        return raw.iloc[idx].reset_index(drop=True)
    if isinstance(raw, np.ndarray):
        return raw[idx]
    return [raw[int(i)] for i in idx]


def penultimate_model(model: Any) -> Any:
    """A Keras model from ``model``'s inputs to its embedding layer's output."""
    import keras

    layers = list(model.layers)
    i = len(layers) - 1
    while i >= 0 and type(layers[i]).__name__ in _SKIP_AT_END:
        i -= 1
    i -= 1  # the output layer (Dense with softmax, or the Dense before a Softmax)
    while i >= 0 and type(layers[i]).__name__ in _SKIP:
        i -= 1
    if i < 0 or type(layers[i]).__name__ == "InputLayer":
        raise InvalidInput(f"model {model.name!r} has no hidden layer before its output: no embedding")
    layer = layers[i]
    try:
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs  # as the model was built
        return keras.Model(inputs, layer.output, name=f"{model.name}_embedding")
    except Exception as exc:  # a layer used several times / a subclassed model: no single output
        raise InvalidInput(f"cannot take the output of layer {layer.name!r} of model {model.name!r} "
                           f"as its embedding: {type(exc).__name__}: {exc}") from None


def embed_transformed(model: Any, x: np.ndarray) -> np.ndarray:
    """Embeddings (N, D) float32 for already-transformed inputs ``x``, in batches (inference mode)."""
    sub = penultimate_model(model)
    if len(x) == 0:
        dim = int(np.prod([d for d in sub.outputs[0].shape[1:] if d is not None]))
        return np.zeros((0, dim), dtype=np.float32)
    chunks = []
    for start in range(0, len(x), _BATCH):
        out = np.asarray(sub(x[start:start + _BATCH], training=False), dtype=np.float32)
        chunks.append(out.reshape(len(out), -1))
    return np.concatenate(chunks, axis=0)


def embed(bundle_dir: Path | str, raw: Any, *, max_rows: int = 2000, seed: int = 0,
          trusted: bool = False) -> np.ndarray:
    """Penultimate-layer activations (≤ max_rows rows sampled with ``seed``, float32 (n, D)) of the
    bundle's Keras model for RAW inputs (the bundle's feature pipeline is applied first)."""
    from loopml.models.bundle import load_bundle

    bundle = load_bundle(bundle_dir, runtime="keras", trusted=trusted)
    rows = take_rows(raw, sample_rows(len(raw), max_rows, seed))
    x = bundle.features.transform(rows)
    return embed_transformed(bundle.runtime.model, x)  # type: ignore[attr-defined]
