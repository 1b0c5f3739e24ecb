"""Inference runtimes for a saved model: ONNX Runtime (preferred) or Keras.

Nothing here imports keras/tensorflow at module level: the ONNX path must work in a serving
process that never loads TensorFlow.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from loopml.core.errors import CorruptArtifact

_ONNX_DTYPES = {"tensor(float)": np.float32, "tensor(int32)": np.int32,
                "tensor(int64)": np.int64, "tensor(double)": np.float64}


class Runtime(Protocol):
    name: str

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Transformed inputs (N, ...) → class probabilities (N, n_classes) float32."""
        ...


class OnnxRuntime:
    """ONNX Runtime session on CPU.

    Measured on 2 cores: 1 intra-op thread gives the best single-request latency, 2 the best
    batch throughput, hence the parameter. ``InferenceSession.run`` is thread-safe.
    """

    name = "onnx"

    def __init__(self, path: str | Path, intra_op_threads: int = 1) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(intra_op_threads)
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # errors only
        try:
            self._session = ort.InferenceSession(str(path), sess_options=options,
                                                 providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own non-exported exception types
            raise CorruptArtifact(f"{path} is not a loadable ONNX model: {exc}") from None
        graph_input = self._session.get_inputs()[0]
        self.input_name: str = graph_input.name
        self._dtype = _ONNX_DTYPES.get(graph_input.type, np.float32)
        self._output_name: str = self._session.get_outputs()[0].name

    def predict(self, batch: np.ndarray) -> np.ndarray:
        feed = {self.input_name: np.ascontiguousarray(batch, dtype=self._dtype)}
        return np.asarray(self._session.run([self._output_name], feed)[0], dtype=np.float32)


class KerasRuntime:
    """A Keras model behind a lock (Keras prediction is not thread-safe).

    Uses ``predict_on_batch`` (one compiled function call) rather than ``model.predict``,
    whose per-call setup dominates latency for small request batches.
    """

    name = "keras"

    def __init__(self, model: Any) -> None:
        self.model = model
        self._lock = threading.Lock()

    @classmethod
    def load(cls, path: str | Path, trusted: bool = False) -> "KerasRuntime":
        return cls(load_keras_model(path, trusted=trusted))

    def predict(self, batch: np.ndarray) -> np.ndarray:
        with self._lock:
            out = self.model.predict_on_batch(batch)
        return np.asarray(out, dtype=np.float32)


def load_keras_model(path: str | Path, trusted: bool = False) -> Any:
    """``keras.saving.load_model`` in safe mode unless the caller vouches for the file.

    Safe mode refuses files that would deserialise Python bytecode (``Lambda`` layers), which
    would otherwise run arbitrary code on load.
    """
    import keras

    import loopml.models.layers  # noqa: F401  (registers Standardize for deserialisation)

    path = Path(path)
    if not path.is_file():
        raise CorruptArtifact(f"model file {path} is missing")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=not trusted)
    except Exception as exc:
        text = str(exc)
        if "safe_mode" in text or "unsafe" in text.lower() or "lambda" in text.lower():
            raise CorruptArtifact(
                f"{path} was refused by Keras safe mode: it contains code that would run "
                f"on load (e.g. a Lambda layer); load it with trusted=True only if you trust "
                f"its author. Keras said: {text.splitlines()[0] if text else exc!r}") from None
        raise CorruptArtifact(f"{path} cannot be loaded by Keras: "
                              f"{type(exc).__name__}: {text}") from None
