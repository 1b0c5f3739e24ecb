"""One loaded model version behind a micro-batcher: what an endpoint serves.

``features.transform`` runs on the request path (per request, on the event loop, before
``submit``): a bad request fails alone with ``InvalidInput`` and never reaches a batch. The
batcher coalesces the TRANSFORMED tensors and its worker thread calls ``runtime.predict``.
``warmup()`` calls the runtime once per bucket size so no request pays a first-call cost.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from loopml.core.errors import CorruptArtifact, InvalidInput
from loopml.models.bundle import ModelBundle, load_bundle
from loopml.models.signature import InputSignature
from loopml.serving.batcher import Batcher

__all__ = ["ModelHost"]

# a lone request is predicted on the event loop only for models this fast at batch 1
INLINE_MAX_PREDICT_S = 0.002


class ModelHost:
    """A model bundle + its Batcher. Build with ``ModelHost.load(folder)``."""

    def __init__(self, bundle: ModelBundle, *, max_batch_size: int = 64,
                 max_delay_ms: float = 2.0, name: str = "") -> None:
        self.bundle = bundle
        self.name = name or bundle.path.name
        self.label_names: list[str] = list(bundle.label_names)
        # what a request's rows look like (codecs and OIP read it): built once per loaded version
        self.signature = InputSignature.from_manifest(bundle.meta, kind=bundle.kind)
        self.batcher = Batcher(bundle.runtime.predict, max_batch_size=max_batch_size,
                               max_delay_ms=max_delay_ms, name=self.name,
                               wait_only_for_announced=True, pipeline=True)
        self._closed = False
        # registry identity (set by the model cache; OIP metadata and captured data name it)
        self.model_name: str = self.name
        self.model_version: str = "1"

    @classmethod
    def load(cls, folder: str | Path, *, max_batch_size: int = 64, max_delay_ms: float = 2.0,
             runtime: str = "auto", name: str = "", warmup: bool = True,
             trusted: bool = False) -> "ModelHost":
        bundle = load_bundle(folder, runtime=runtime, intra_op_threads=1, trusted=trusted)
        host = cls(bundle, max_batch_size=max_batch_size, max_delay_ms=max_delay_ms, name=name)
        if warmup:
            host.warmup()
        return host

    @property
    def kind(self) -> str:
        return self.signature.kind

    @property
    def loaded(self) -> bool:
        return not self._closed and not self.batcher.closed

    def warmup(self) -> None:
        """Run the runtime once per bucket size (synchronously, before serving)."""
        n_classes = len(self.label_names)
        for size in self.batcher.buckets:
            batch = self.bundle.features.example_batch(size)
            t0 = time.perf_counter()
            out = self.bundle.runtime.predict(batch)
            if size == 1:  # second call: the first one pays one-off setup
                t0 = time.perf_counter()
                self.bundle.runtime.predict(batch)
                self.batcher.allow_inline(time.perf_counter() - t0 < INLINE_MAX_PREDICT_S)
            if np.shape(out) != (size, n_classes):
                raise CorruptArtifact(f"model {self.name!r} returned shape {np.shape(out)} for a "
                                      f"warm-up batch of {size}; expected ({size}, {n_classes})")

    async def predict_raw(self, raw: Any, *, announced: bool = False) -> np.ndarray:
        """RAW rows (as ``codecs.decode`` returns them) → (N, n_classes) probabilities.

        ``announced``: the caller called ``batcher.announce()`` when the request started."""
        try:
            x = self.bundle.features.transform(raw)
            if len(x) == 0:
                raise InvalidInput("a request needs at least one row")
        except BaseException:
            if announced:
                self.batcher.withdraw()
            raise
        return await self.batcher.submit(x, announced=announced)

    def stats(self) -> dict[str, Any]:
        return {"runtime": self.bundle.runtime_name, **self.batcher.stats()}

    async def close(self, drain: bool = True) -> None:
        self._closed = True
        await self.batcher.close(drain=drain)
