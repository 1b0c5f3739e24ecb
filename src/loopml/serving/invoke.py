"""The invocation core: what every protocol's request goes through, once.

    pick a variant → predict (one swap-retry) → finish: observe (metrics) → capture
    (sampled, write-ahead) → shadow copy → [the codec sends the answer]

The SageMaker route (serving/app.py) and the Open Inference Protocol route (serving/oip.py) are
codecs around this: they parse the request into RAW rows, encode the answer and map the errors
raised here (typed ``core.errors``) through their own error table. Nothing here logs per request
or copies a body: the capture and the shadow keep the caller's bytes by reference.

Per-request state is one ``Call`` (slots); per-process state (the endpoint table, metrics, the
capture writer, shadow copies in flight, the inference-id counter) is one ``Invoker``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import random
import time
from typing import Any, Callable, Protocol

import numpy as np

from loopml.core.errors import EndpointFailed, LoopMLError, NotFound
from loopml.serving.batcher import BatcherClosed
from loopml.serving.capture import CaptureWriter
from loopml.serving.codecs import encode_predictions
from loopml.serving.host import ModelHost
from loopml.serving.live import LiveEndpoint, Variant
from loopml.serving.metrics import ServingMetrics

__all__ = ["Call", "Invoker", "Endpoints", "Router", "predict",
           "EndpointNotFound", "EndpointLoading"]

log = logging.getLogger(__name__)

MAX_SHADOW_TASKS = 1000
MAX_SHADOW_BYTES = 256 * 2**20  # bodies held by shadow copies in flight


class EndpointNotFound(NotFound):
    """No endpoint of that name (a variant or model not found is a plain NotFound)."""


class EndpointLoading(LoopMLError):
    code = "endpoint_loading"
    status = 503


class Endpoints(Protocol):
    """What the core needs of the endpoint table (serving.manager.EndpointManager)."""

    def get(self, name: str) -> LiveEndpoint | None: ...
    def loading(self, name: str) -> bool: ...
    def failure(self, name: str) -> str | None: ...
    def ready(self) -> bool: ...
    async def target_model(self, ep: LiveEndpoint, ref: str) -> Variant: ...


class Router(Protocol):
    """What a protocol codec routes through: the data plane's ``Invoker``."""

    def route(self, name: str, version: str | None) -> Variant: ...
    def lookup(self, name: str, version: str | None) -> ModelHost: ...
    def ready(self) -> bool: ...
    def new_id(self) -> str | None: ...


class Call:
    """One request on its way through the core (filled by the codec and ``predict``)."""

    __slots__ = ("name", "t0", "ep", "variant", "raw", "proba", "inference_id", "status")

    def __init__(self, name: str, t0: float) -> None:
        self.name, self.t0 = name, t0
        self.ep: LiveEndpoint | None = None
        self.variant: Variant | None = None
        self.raw: Any = None
        self.proba: np.ndarray | None = None
        self.inference_id: str | None = None
        self.status = 500


async def predict(variant: Variant, raw: Any, *, again: Callable[[], Variant] | None = None,
                  redecode: Callable[[ModelHost], Any] | None = None,
                  announced: bool = False) -> tuple[Variant, Any, np.ndarray]:
    """Predict on ``variant``; if its host was closed (the version swapped out while the request
    arrived), once more on ``again()`` — the endpoint's current generation — with the rows
    re-decoded for that host when ``redecode`` is given. Zero failed requests on a switch."""
    host = variant.host
    try:
        if not getattr(host, "loaded", True):
            if announced:
                host.batcher.withdraw()
            raise BatcherClosed(f"model {variant.model or variant.name!r} is not ready")
        return variant, raw, await host.predict_raw(raw, announced=announced)
    except BatcherClosed:
        fresh = again() if again is not None else variant
        if fresh.host is host:
            raise
        if redecode is not None:
            raw = redecode(fresh.host)
        return fresh, raw, await fresh.host.predict_raw(raw)


class Invoker:
    """Per-process state of the data plane's invocations; one per ``create_data_plane``."""

    def __init__(self, table: Endpoints, metrics: ServingMetrics,
                 capture: CaptureWriter | None) -> None:
        self.table, self.metrics, self.capture = table, metrics, capture
        self._shadow_tasks: set[asyncio.Task] = set()
        self._shadow_bytes = 0
        # inference ids: a random per-process prefix + a counter (uuid4 per request costs ~5 µs)
        self._id_prefix = os.urandom(6).hex() + "-"
        self._ids = itertools.count(1)

    # ---------------------------------------------------------------- pick

    def get(self, name: str) -> LiveEndpoint | None:
        return self.table.get(name)

    def unavailable(self, name: str) -> LoopMLError:
        """Why ``name`` has no live endpoint: failed to load, loading, or not found."""
        failure = self.table.failure(name)
        if failure is not None:
            return EndpointFailed(f"endpoint {name} failed to load: {failure}")
        if self.table.loading(name):
            return EndpointLoading(f"endpoint {name} is loading; retry shortly")
        return EndpointNotFound(f"Endpoint {name} not found.")

    def route(self, name: str, version: str | None) -> Variant:
        """The variant to answer for ``name``: the one serving ``version``, else weighted."""
        ep = self.table.get(name)
        if ep is None:
            raise self.unavailable(name)
        if version is None:
            return ep.pick()
        for v in ep.variants:
            if str(v.version) == version:
                return v
        raise NotFound(f"endpoint {name!r} has no version {version!r} being served")

    def lookup(self, name: str, version: str | None) -> ModelHost:
        return self.route(name, version).host

    def ready(self) -> bool:
        return self.table.ready()

    async def target_model(self, ep: LiveEndpoint, ref: str) -> Variant:
        return await self.table.target_model(ep, ref)

    def new_id(self) -> str:
        return f"{self._id_prefix}{next(self._ids)}"

    # ---------------------------------------------------------------- finish

    def finish(self, call: Call, body: bytes | None, content_type: str | None,
               out: bytes | None, out_type: str = "application/json") -> None:
        """Once the answer is encoded, BEFORE it is sent (so a captured record is spooled before
        the client sees it): metrics always; on success capture (sampled) and shadow."""
        variant = call.variant
        self.metrics.stats_for(call.name, variant.name if variant is not None else "-").observe(
            call.status, time.perf_counter() - call.t0)
        if call.status != 200 or variant is None or call.proba is None:
            return
        ep = call.ep or self.table.get(call.name)
        if ep is None:
            return
        fraction = ep.capture_fraction
        captured = fraction > 0 and self.capture is not None and (
            fraction >= 1.0 or random.random() < fraction)
        if captured:
            self.capture.record(call.name, variant.name, input_body=body,
                                input_content_type=content_type, output_body=out,
                                output_content_type=out_type, inference_id=call.inference_id,
                                model=variant.model, model_version=variant.version,
                                latency_ms=(time.perf_counter() - call.t0) * 1000.0)
        if ep.shadow is not None:
            self._shadow(ep, call, body, content_type, captured)

    def _shadow(self, ep: LiveEndpoint, call: Call, body: bytes, content_type: str | None,
                captured: bool) -> None:
        """Copy the request to the shadow variant in the background; compare, maybe capture."""
        shadow = ep.shadow
        size = len(body)
        if len(self._shadow_tasks) >= MAX_SHADOW_TASKS or \
                self._shadow_bytes + size > MAX_SHADOW_BYTES:
            return  # a slow shadow never grows memory without bound
        raw, proba, inference_id = call.raw, call.proba, call.inference_id
        metrics, capture = self.metrics, self.capture

        async def go() -> None:
            t0 = time.perf_counter()
            try:
                out = await shadow.host.predict_raw(raw)
            except Exception as exc:  # noqa: BLE001 - shadow failures never reach the caller
                log.debug("shadow of %s failed: %s", ep.name, exc)
                metrics.stats_for(ep.name, shadow.name).observe(500, time.perf_counter() - t0)
                return
            latency = time.perf_counter() - t0
            metrics.stats_for(ep.name, shadow.name).observe(200, latency)
            metrics.count_shadow(ep.name, bool(np.array_equal(out.argmax(axis=1),
                                                              proba.argmax(axis=1))))
            if captured and capture is not None:
                capture.record(ep.name, shadow.name, input_body=body,
                               input_content_type=content_type,
                               output_body=encode_predictions(out, shadow.host.label_names),
                               inference_id=inference_id, model=shadow.model,
                               model_version=shadow.version, latency_ms=latency * 1000.0,
                               shadow=True)

        self._shadow_bytes += size

        def done(task: asyncio.Task) -> None:
            self._shadow_tasks.discard(task)
            self._shadow_bytes -= size

        task = asyncio.get_running_loop().create_task(go())
        self._shadow_tasks.add(task)
        task.add_done_callback(done)

    async def drain(self, timeout: float = 5.0) -> None:
        """Shutdown: let shadow copies in flight finish (up to ``timeout``), then cancel them."""
        if self._shadow_tasks:
            await asyncio.wait(list(self._shadow_tasks), timeout=timeout)
            for task in list(self._shadow_tasks):
                task.cancel()

