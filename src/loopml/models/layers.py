"""Custom Keras layers of LoopML models.

Importing this module registers them, which ``keras.saving.load_model(..., safe_mode=True)``
needs to rebuild a saved model; ``bundle.py`` imports it before every Keras load.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="loopml")
class Standardize(keras.layers.Layer):
    """``(x - mean) / std`` with fixed statistics computed on the training split.

    Why not ``keras.layers.Normalization``: exported to ONNX from TensorFlow, its mean and
    variance become two extra graph INPUTS that ONNX Runtime then demands at every call.
    Plain non-trainable weights export as initializers (constants) instead.

    ``mean``/``std`` are a scalar (images: one pixel statistic) or a vector broadcast over
    the last axis (tabular: one per feature). A zero std must be replaced by 1 by the caller.
    """

    def __init__(self, mean: Any = None, std: Any = None, stat_shape: list[int] | None = None,
                 **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._initial_mean = None if mean is None else np.asarray(mean, dtype="float32")
        self._initial_std = None if std is None else np.asarray(std, dtype="float32")
        if stat_shape is None:
            stat_shape = [] if self._initial_mean is None else list(self._initial_mean.shape)
        self.stat_shape = [int(d) for d in stat_shape]

    def build(self, input_shape: Any) -> None:
        # On load, from_config gives no statistics: the weights file restores them.
        self.mean = self.add_weight(name="mean", shape=tuple(self.stat_shape),
                                    initializer="zeros", trainable=False)
        self.std = self.add_weight(name="std", shape=tuple(self.stat_shape),
                                   initializer="ones", trainable=False)
        if self._initial_mean is not None:
            self.mean.assign(self._initial_mean)
        if self._initial_std is not None:
            self.std.assign(self._initial_std)
        super().build(input_shape)

    def call(self, inputs: Any) -> Any:
        return (keras.ops.cast(inputs, self.compute_dtype) - self.mean) / self.std

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        config["stat_shape"] = self.stat_shape
        return config
