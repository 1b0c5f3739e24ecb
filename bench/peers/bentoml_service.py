"""Peer for bench/serving.py: BentoML with adaptive batching, calling Keras per batch.

Runs in its own venv (/work/bench-venvs/bentoml: bentoml + keras + tensorflow-cpu, no loopml),
started by the bench as

    LOOPML_BENCH_PEER_MODEL=/path/model.keras \
        bentoml serve bentoml_service:Mnist --host 127.0.0.1 --port PORT   (cwd: bench/peers)

``POST /predict`` with ``{"instances": [[[28 floats] x 28]]}`` → ``[[10 probabilities]]``.
``batchable=True``: BentoML's dispatcher concatenates the requests' ``instances`` along axis 0
(at most ``max_batch_size`` rows, waiting at most what its latency model allows under
``max_latency_ms``), and splits the output back per request. The batch is padded to the next
bucket size (powers of two up to 32, last row repeated) before ``predict_on_batch``, so the
traced Keras function only ever sees 6 shapes — what LoopML's batcher does too. One worker
process (``workers=1``), like LoopML's one serving process.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import bentoml
import numpy as np

BUCKETS = (1, 2, 4, 8, 16, 32)
# A loose bound on purpose: BentoML answers 503 to requests it predicts will miss
# max_latency_ms, and the bench compares throughput at equal error rates (zero).
MAX_LATENCY_MS = int(os.environ.get("LOOPML_BENCH_BENTO_MAX_LATENCY_MS", "1000"))


def pad_to_bucket(x: np.ndarray) -> np.ndarray:
    n = len(x)
    size = next((b for b in BUCKETS if b >= n), n)
    if size == n:
        return x
    return np.concatenate([x, np.repeat(x[-1:], size - n, axis=0)])


@bentoml.service(workers=1, traffic={"timeout": 60})
class Mnist:
    def __init__(self) -> None:
        import keras

        self.model = keras.saving.load_model(os.environ["LOOPML_BENCH_PEER_MODEL"],
                                             compile=False, safe_mode=True)
        for size in BUCKETS:  # trace every bucket shape before the first request
            self.model.predict_on_batch(np.zeros((size, 28, 28, 1), dtype=np.float32))

    @bentoml.api(batchable=True, max_batch_size=32, max_latency_ms=MAX_LATENCY_MS)
    def predict(self, instances: np.ndarray) -> np.ndarray:
        x = np.asarray(instances, dtype=np.float32)
        if x.ndim == 3:
            x = x[..., np.newaxis]
        n = len(x)
        return np.asarray(self.model.predict_on_batch(pad_to_bucket(x)))[:n]
