"""Real model versions for endpoint tests, without running training jobs.

Two tiny digits CNNs (8×8 images, 10 classes) are trained in-process once per session and
saved as bundles; ``register`` uploads one to a platform's artifact store and records it as
the next version of a model, exactly as a training job's registration does.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="session")
def digits_data() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    data = load_digits()
    return data.images.astype(np.float32), data.target


def train_bundle(folder: Path, content, template: str, params: dict, *, seed: int | None = None) -> Path:
    """A real Keras ``template`` model trained in-process on ``content`` (a DatasetContent),
    saved as a bundle in ``folder``."""
    import keras

    from loopml.models.bundle import save_bundle
    from loopml.models.features import fit_features
    from loopml.models.hparams import validate_hparams
    from loopml.models.templates import build_model

    if seed is not None:
        keras.utils.set_random_seed(seed)
    classes = sorted(set(content.labels.tolist()))
    schema = {"kind": content.kind, "rows": len(content.labels), "classes": classes}
    hp = validate_hparams(template, params)
    features = fit_features(content, hp)
    model = build_model(template, hp, schema, features)
    y = np.array([classes.index(x) for x in content.labels], dtype=np.int64)
    raw = content.images if content.kind == "image" else content.frame
    model.fit(features.transform(raw), y, epochs=hp["epochs"], batch_size=hp["batch_size"], verbose=0)
    save_bundle(folder, model, features, {"label_names": classes, "template": template, "hparams": hp})
    return folder


def _train(folder: Path, images: np.ndarray, target: np.ndarray, seed: int, epochs: int) -> Path:
    from loopml.datasets.content import DatasetContent

    labels = np.array([str(t) for t in target], dtype=object)
    content = DatasetContent(kind="image", images=images[..., np.newaxis], labels=labels)
    return train_bundle(folder, content, "cnn", {"epochs": epochs, "filters": 8, "dense_units": 32,
                                                 "batch_size": 32}, seed=seed)


@pytest.fixture(scope="session")
def digit_bundles(tmp_path_factory, digits_data) -> list[Path]:
    """Two different versions of a digits CNN (v1 barely trained, v2 better)."""
    images, target = digits_data
    root = tmp_path_factory.mktemp("digit-bundles")
    return [_train(root / "v1", images, target, seed=1, epochs=1),
            _train(root / "v2", images, target, seed=2, epochs=4)]


def register(platform, name: str, folder: Path, *, trusted: bool = False) -> dict:
    """Upload ``folder`` and record it as the next version of model ``name``."""
    version = platform.models.next_version(name)
    prefix = f"models/{name}/v{version}"
    platform.artifacts.upload_dir(folder, prefix)
    return platform.models.add_version(
        name, version, dataset="digits:1", kind="image", template="cnn", hparams={},
        metrics={}, lineage={}, runtimes=["onnx", "keras"], trusted=trusted,
        artifact_prefix=prefix)


class Hammer:
    """Background clients sending requests in a loop; records every status code."""

    def __init__(self, url: str, body: bytes, *, threads: int = 4,
                 headers: dict[str, str] | None = None) -> None:
        self.url, self.body = url, body
        self.headers = {"content-type": "application/json", **(headers or {})}
        self.codes: list[int] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        self._lock = threading.Lock()

    def _run(self) -> None:
        import httpx

        # 60 s: a request timed out by the client may still be answered (and captured) by the
        # server; on a loaded machine a 20 s answer happens
        with httpx.Client(timeout=60) as client:
            while not self._stop.is_set():
                try:
                    r = client.post(self.url, content=self.body, headers=self.headers)
                    with self._lock:
                        self.codes.append(r.status_code)
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.errors.append(f"{type(exc).__name__}: {exc}")

    def __enter__(self) -> "Hammer":
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(90)  # longer than a request's timeout: no code is added after this
