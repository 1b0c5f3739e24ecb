"""Job-independent first-use work of a training job, done by a spare worker before it has a job.

A spare (jobs/warm.py) calls ``warm_up()`` after its imports: it runs what a train job runs
before and in its first batch (features, the seed CNN template, the pre-fit build, the
architecture save, ``fit`` from numpy arrays) on 8 made-up 8x8 images, then clears Keras's global
state. What stays is what every job would pay for first: TensorFlow's and Keras's lazily
initialised machinery (thread pools, op and kernel registries, autograph's conversions of Keras's
own step and data functions, tf.data, the saving code). Measured on the seed CNN (mnist): ~0.3 s
CPU less from dispatch to the first batch, for ~1.3 s CPU in the spare while nothing waits on it.
What comes after the first batch (validation, predict, summaries) is left out: it would cost the
spare more than it saves the job's start.

The job's own model, trace and data are its own: layer names, seeds and weights start as in a
fresh process (``keras.backend.clear_session``; every job sets its seed itself), so training
results are the same (tests/test_warm_workers.py).
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

import numpy as np

from loopml.datasets.content import DatasetContent

_ROWS, _SIDE, _CLASSES = 8, 8, 2


def warm_up() -> None:
    """Build, save and train (one batch) the seed CNN on random 8x8 images; then forget it all."""
    import keras

    from loopml.models.features import fit_features
    from loopml.models.hparams import validate_hparams
    from loopml.models.templates import build_model
    from loopml.training.train_runner import ARCH_FILE, _build_before_fit

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(_ROWS, _SIDE, _SIDE, 1), dtype=np.uint8)
    labels = np.arange(_ROWS) % _CLASSES
    content = DatasetContent(kind="image", labels=labels.astype(str).astype(object), images=images)
    schema: dict[str, Any] = {"kind": "image", "classes": [str(c) for c in range(_CLASSES)]}
    try:
        hp = validate_hparams("cnn", {"epochs": 1, "batch_size": 8, "filters": 2, "dense_units": 4})
        features = fit_features(content, hp, schema)
        model = build_model("cnn", hp, schema, features)
        x = features.transform(images)
        _build_before_fit(model, x, labels, 8)
        with tempfile.TemporaryDirectory(prefix="loopml-warmup-") as tmp:
            model.save(os.path.join(tmp, ARCH_FILE))
        model.fit(x, labels, epochs=1, batch_size=8, verbose=0)
    finally:
        keras.backend.clear_session()
