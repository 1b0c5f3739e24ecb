"""Peer for bench/serving.py: FastAPI + uvicorn calling Keras per request, as people write it.

    python bench/peers/fastapi_plain.py MODEL_KERAS PORT

``POST /predict`` with ``{"instances": [[[28 floats] x 28]]}`` → ``{"predictions": [[10
probabilities]]}``. The usual tutorial shape: a pydantic request model and a plain ``def``
endpoint (FastAPI runs it in its thread pool, so the event loop is not blocked), the body turned
into a numpy array and passed to ``model.predict_on_batch`` (not ``model.predict``, whose per-call
setup costs milliseconds). No batching, no lock (a tf.function is safe to call from several
threads once traced; the startup call traces it). Same uvicorn settings as LoopML's data plane
(uvloop, httptools, no access log) so the difference is the request path, not the server.
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel


class PredictRequest(BaseModel):
    instances: list[list[list[float]]]


def create_app(model_path: str) -> FastAPI:
    model = keras.saving.load_model(model_path, compile=False, safe_mode=True)
    model.predict_on_batch(np.zeros((1, 28, 28, 1), dtype=np.float32))  # trace once
    app = FastAPI()

    @app.post("/predict")
    def predict(request: PredictRequest) -> dict:
        x = np.asarray(request.instances, dtype=np.float32)[..., np.newaxis]
        probabilities = model.predict_on_batch(x)
        return {"predictions": np.asarray(probabilities).tolist()}

    return app


def main() -> None:
    model_path, port = sys.argv[1], int(sys.argv[2])
    uvicorn.run(create_app(model_path), host="127.0.0.1", port=port, loop="uvloop",
                http="httptools", log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
