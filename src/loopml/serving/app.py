"""The real-time data plane: one raw ASGI app for every endpoint of a serving process.

    GET  /ping, /healthz, /readyz            health (ping/readyz: 200 once every endpoint is loaded)
    GET  /metrics                            Prometheus text format
    GET  /openapi.json                       this API, for clients and fuzzers
    POST /endpoints/{name}/invocations       the SageMaker runtime contract (boto3 works unmodified)
    /v2/...                                  the Open Inference Protocol v2 (tritonclient works)

Raw ASGI (no framework, no middleware) keeps the per-request overhead at the transport floor
(docs/benchmarks.md). Errors follow SageMaker: the HTTP status, header
``x-amzn-ErrorType: <Code>`` and JSON ``{"message": ...}``, so boto3 raises its modelled
exceptions (ValidationError, ModelError, ModelNotReadyException, ServiceUnavailable).

With ``token`` set every route but the health checks needs ``Authorization: Bearer <token>``;
an endpoint with API keys (``key_hashes``) needs one of them (or the token) on its own routes
(boto3 signs with SigV4 instead, so bearer auth and boto3 clients do not mix).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
import re
import itertools
import os
import time
from typing import Any, Awaitable, Callable, Protocol

import numpy as np

from loopml.core.errors import InvalidInput, LoopMLError, NotFound, UnsupportedFormat
from loopml.serving import oip
from loopml.serving.batcher import BatcherClosed, QueueFull
from loopml.serving.capture import CaptureWriter
from loopml.serving.codecs import decode_async, encode_predictions, error_body
from loopml.serving.host import ModelHost
from loopml.serving.live import LiveEndpoint, Variant
from loopml.serving.metrics import ServingMetrics
from loopml.serving.model_cache import ModelNotReady
from loopml.serving.openapi import OPENAPI_JSON

__all__ = ["create_data_plane", "MAX_BODY_BYTES", "StaticEndpoints"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 6_291_456  # SageMaker's synchronous invocation limit
_INVOKE = re.compile(r"^/endpoints/([^/]+)/invocations$")
_OIP_MODEL = re.compile(r"^/v2/models/([^/]+)")
_OIP_INFER = re.compile(r"^/v2/models/([^/]+)(?:/versions/[^/]+)?/infer$")
_JSON = b"application/json"
_HEALTH = ("/ping", "/healthz", "/readyz")
_MAX_SHADOW_TASKS = 1000
_MAX_SHADOW_BYTES = 256 * 2**20  # bodies held by shadow copies in flight

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class Endpoints(Protocol):
    """What the app needs of the endpoint table (serving.manager.EndpointManager)."""

    def get(self, name: str) -> LiveEndpoint | None: ...
    def loading(self, name: str) -> bool: ...
    def failure(self, name: str) -> str | None: ...
    def ready(self) -> bool: ...
    def lookup(self, name: str, version: str | None) -> ModelHost: ...
    async def target_model(self, ep: LiveEndpoint, ref: str) -> Variant: ...


class StaticEndpoints:
    """A fixed ``name → ModelHost`` table (one variant ``AllTraffic`` each): for embedding a
    data plane without a metadata store (tests, benchmarks)."""

    def __init__(self, hosts: dict[str, ModelHost]) -> None:
        from loopml.serving.spec import validate_name

        self.live = {}
        for name, host in hosts.items():
            validate_name(name)
            variant = Variant(name="AllTraffic", host=host, weight=1.0, model=host.model_name,
                              version=int(host.model_version))
            self.live[name] = LiveEndpoint(name=name, generation=1, variants=[variant])

    def get(self, name: str) -> LiveEndpoint | None:
        return self.live.get(name)

    def loading(self, name: str) -> bool:
        return False

    def failure(self, name: str) -> str | None:
        return None

    def ready(self) -> bool:
        return all(h.loaded for ep in self.live.values() for h in ep.hosts())

    def lookup(self, name: str, version: str | None) -> ModelHost:
        ep = self.live.get(name)
        if ep is None:
            raise NotFound(f"model {name!r} not found")
        return ep.variants[0].host

    async def target_model(self, ep: LiveEndpoint, ref: str) -> Variant:
        raise InvalidInput(f"endpoint {ep.name!r} is not a multi-model endpoint")

    async def close(self) -> None:
        for ep in self.live.values():
            for host in ep.hosts():
                try:
                    await host.close()
                except Exception:  # one host failing to close must not block the others
                    log.exception("closing endpoint %r failed", ep.name)


class _Tracking:
    """An OIP backend that remembers the host it handed out (metrics and capture name the
    variant that answered)."""

    __slots__ = ("table", "host")

    def __init__(self, table: Any) -> None:
        self.table, self.host = table, None

    def lookup(self, name: str, version: str | None) -> ModelHost:
        self.host = self.table.lookup(name, version)
        return self.host

    def ready(self) -> bool:
        return self.table.ready()


class _HttpError(Exception):
    def __init__(self, status: int, code: str, message: str,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or []


_RETRY = [(b"retry-after", b"1")]


def _unauthorised() -> "_HttpError":
    return _HttpError(401, "AccessDeniedException", "missing or invalid bearer token",
                      [(b"www-authenticate", b"Bearer")])


async def _respond(send: Send, status: int, body: bytes, headers: list[tuple[bytes, bytes]],
                   content_type: bytes = _JSON) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", content_type),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


# on every error: lets the CLI/SDK tell "pointed at the data plane" from a control-plane 404
PLANE_HEADER = (b"x-loopml-plane", b"data")


async def _error(send: Send, exc: _HttpError, request_id: bytes) -> None:
    await _respond(send, exc.status, error_body(exc.message),
                   [(b"x-amzn-errortype", exc.code.encode()), (b"x-amzn-requestid", request_id),
                    PLANE_HEADER, *exc.headers])


async def _read_body(scope: Scope, receive: Receive) -> bytes | None:
    """The request body, refused past MAX_BODY_BYTES (Content-Length first, then counted)."""
    for key, value in scope["headers"]:
        if key == b"content-length":
            try:
                declared = int(value)
            except ValueError:
                raise _HttpError(400, "ValidationError", "invalid Content-Length header") from None
            if declared > MAX_BODY_BYTES:
                raise _HttpError(413, "ValidationError",
                                 f"request body of {declared} bytes exceeds the limit of "
                                 f"{MAX_BODY_BYTES} bytes")
            break
    chunks: list[bytes] = []
    total = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        if chunk:
            total += len(chunk)
            if total > MAX_BODY_BYTES:
                raise _HttpError(413, "ValidationError",
                                 f"request body exceeds the limit of {MAX_BODY_BYTES} bytes")
            chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def _model_error(exc: BaseException, where: str) -> _HttpError:
    """Map what decoding or the model raised to the SageMaker error it is."""
    if isinstance(exc, UnsupportedFormat):
        return _HttpError(415, "ValidationError", exc.message)
    if isinstance(exc, (InvalidInput, NotFound)):
        return _HttpError(400, "ValidationError", exc.message)
    if isinstance(exc, ModelNotReady):
        return _HttpError(429, "ModelNotReadyException", exc.message, _RETRY)
    if isinstance(exc, (QueueFull, BatcherClosed)):
        return _HttpError(503, "ServiceUnavailable", exc.message, _RETRY)
    if isinstance(exc, LoopMLError):
        log.warning("%s: model error: %s", where, exc.message)
        return _HttpError(424, "ModelError", f"{where} failed: {exc.message}")
    log.error("%s: model failure", where, exc_info=exc)
    return _HttpError(424, "ModelError", f"{where} failed: {type(exc).__name__}")


def create_data_plane(endpoints: Endpoints | dict[str, ModelHost], *, token: str | None = None,
                      metrics: ServingMetrics | None = None,
                      capture: CaptureWriter | None = None,
                      on_shutdown: Callable[[], Awaitable[None]] | None = None):
    """An ASGI app serving ``endpoints`` (an EndpointManager, or a ``name → ModelHost`` dict)."""
    owned_static = isinstance(endpoints, dict)
    table: Any = StaticEndpoints(endpoints) if owned_static else endpoints
    metrics = metrics or ServingMetrics()
    expected_auth = None if token is None else b"Bearer " + token.encode("utf-8")
    shadow_tasks: set[asyncio.Task] = set()
    shadow_bytes = [0]
    # request ids: a random per-process prefix + a counter (uuid4 per request costs ~5 µs)
    id_prefix = os.urandom(6).hex() + "-"
    id_counter = itertools.count(1)

    def batcher_stats():
        seen = set()
        for name, ep in list(getattr(table, "live", {}).items()):
            for v in [*ep.variants, *([ep.shadow] if ep.shadow else [])]:
                if id(v.host) in seen:
                    continue
                seen.add(id(v.host))
                yield name, v.name, {**v.host.batcher.stats(),
                                     "max_batch_size": v.host.batcher.max_batch_size}

    metrics.add_source(batcher_stats)
    if capture is not None:
        metrics.set_capture_source(capture.stats)

    async def lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if shadow_tasks:
                    await asyncio.wait(list(shadow_tasks), timeout=5)
                    for task in list(shadow_tasks):
                        task.cancel()
                if owned_static:
                    await table.close()
                if on_shutdown is not None:
                    try:
                        await on_shutdown()
                    except Exception:
                        log.exception("data plane shutdown hook failed")
                await send({"type": "lifespan.shutdown.complete"})
                return

    def run_shadow(ep: LiveEndpoint, raw: Any, proba: np.ndarray, body: bytes,
                   content_type: str | None, inference_id: str | None, captured: bool) -> None:
        shadow = ep.shadow
        if shadow is None or len(shadow_tasks) >= _MAX_SHADOW_TASKS or \
                shadow_bytes[0] + len(body) > _MAX_SHADOW_BYTES:
            return  # a slow shadow never grows memory without bound

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

        size = len(body)
        shadow_bytes[0] += size

        def done(task: asyncio.Task) -> None:
            shadow_tasks.discard(task)
            shadow_bytes[0] -= size

        task = asyncio.get_running_loop().create_task(go())
        shadow_tasks.add(task)
        task.add_done_callback(done)

    async def invoke(name: str, scope: Scope, receive: Receive, send: Send,
                     request_id: bytes, t0: float) -> None:
        ep = table.get(name)
        content_type = target_variant = target_model = inference_id = bearer = None
        for key, value in scope["headers"]:  # one pass over the headers
            if key == b"content-type":
                content_type = value.decode("latin-1")
            elif key == b"x-amzn-sagemaker-target-variant":
                target_variant = value.decode("latin-1")
            elif key == b"x-amzn-sagemaker-target-model":
                target_model = value.decode("latin-1")
            elif key == b"x-amzn-sagemaker-inference-id":
                inference_id = value.decode("latin-1")
            elif key == b"authorization":
                bearer = value
        if not allowed(bearer, ep):
            raise _unauthorised()
        if ep is None:
            failure = table.failure(name)
            if failure is not None:
                raise _HttpError(424, "ModelError", f"endpoint {name} failed to load: {failure}")
            if table.loading(name):
                raise _HttpError(503, "ServiceUnavailable",
                                 f"endpoint {name} is loading; retry shortly", _RETRY)
            raise _HttpError(404, "ValidationError", f"Endpoint {name} not found.")
        variant_name = "-"  # until a variant is chosen (a made-up name must not become a label)
        status = 500
        try:
            if inference_id is not None and not 1 <= len(inference_id) <= 64:
                raise _HttpError(400, "ValidationError",
                                 "X-Amzn-SageMaker-Inference-Id must be 1 to 64 characters")
            try:
                variant = (await table.target_model(ep, target_model) if target_model
                           else ep.pick(target_variant))
            except Exception as exc:  # noqa: BLE001 - mapped to the SageMaker error it is
                raise _model_error(exc, f"endpoint {name!r}") from None
            variant_name = variant.name
            host = variant.host
            host.batcher.announce()  # the batch may wait for this request while its body arrives
            announced = True
            try:
                body = await _read_body(scope, receive)
                if body is None:
                    status = 499
                    return  # the client went away
                raw, _ = await decode_async(body, content_type, host.kind, shape=host.shape,
                                            columns=host.columns, text_column=host.text_column)
                announced = False
                try:
                    proba = await host.predict_raw(raw, announced=True)
                except BatcherClosed:
                    # the version was swapped out while this request was arriving: use the
                    # endpoint's current generation once (zero failed requests on a switch)
                    ep = table.get(name) or ep
                    variant = ep.pick(variant.name if target_variant else None) \
                        if not target_model else variant
                    variant_name, host = variant.name, variant.host
                    proba = await host.predict_raw(raw)
                out = encode_predictions(proba, host.label_names)
            except _HttpError:
                raise
            except Exception as exc:  # noqa: BLE001 - mapped to the SageMaker error it is
                raise _model_error(exc, f"endpoint {name!r}") from None
            finally:
                if announced:
                    host.batcher.withdraw()
            status = 200
            await _respond(send, 200, out, [(b"x-amzn-invoked-production-variant",
                                             variant.name_bytes),
                                            (b"x-amzn-requestid", request_id)])
            captured = ep.capture_fraction > 0 and capture is not None and (
                ep.capture_fraction >= 1.0 or random.random() < ep.capture_fraction)
            if captured:
                capture.record(name, variant.name, input_body=body,
                               input_content_type=content_type, output_body=out,
                               inference_id=inference_id, model=variant.model,
                               model_version=variant.version,
                               latency_ms=(time.perf_counter() - t0) * 1000.0)
            if ep.shadow is not None:
                run_shadow(ep, raw, proba, body, content_type, inference_id, captured)
        except _HttpError as exc:
            status = exc.status
            raise
        finally:
            metrics.stats_for(name, variant_name).observe(status, time.perf_counter() - t0)

    async def v2(scope: Scope, receive: Receive, send: Send, t0: float) -> None:
        body = b""
        if scope["method"] == "POST":
            body = await _read_body(scope, receive)
            if body is None:
                return
        headers = dict(scope["headers"])
        infer = _OIP_INFER.match(scope["path"]) if scope["method"] == "POST" else None
        backend = _Tracking(table) if infer is not None else table
        status, extra, out = await oip.handle_v2(scope["method"], scope["path"], headers, body,
                                                 backend)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-length", str(len(out)).encode()), *extra]})
        await send({"type": "http.response.body", "body": out})
        if infer is not None:  # inference traffic counts and is captured like invocations
            name = infer.group(1)
            ep = table.get(name)
            variant = None
            if ep is not None and backend.host is not None:
                variant = next((v for v in ep.variants if v.host is backend.host), None)
            metrics.stats_for(name, variant.name if variant else "-").observe(
                status, time.perf_counter() - t0)
            if status == 200 and variant is not None and capture is not None and \
                    ep.capture_fraction > 0 and (ep.capture_fraction >= 1.0
                                                 or random.random() < ep.capture_fraction):
                out_type = next((v for k, v in extra if k == b"content-type"), _JSON)
                capture.record(name, variant.name, input_body=body,
                               input_content_type=headers.get(b"content-type", b"").decode(
                                   "latin-1") or "application/json",
                               output_body=out, output_content_type=out_type.decode("latin-1"),
                               model=variant.model, model_version=variant.version,
                               latency_ms=(time.perf_counter() - t0) * 1000.0)

    def allowed(bearer: bytes | None, ep: LiveEndpoint | None) -> bool:
        """The data plane's token, or (on the routes of ``ep``) one of its API keys."""
        if expected_auth is not None and bearer is not None and \
                hmac.compare_digest(bearer, expected_auth):
            return True
        if ep is not None and ep.key_hashes:
            return bearer is not None and bearer.startswith(b"Bearer ") and \
                hashlib.sha256(bearer[7:]).hexdigest() in ep.key_hashes
        return expected_auth is None

    def authorised(scope: Scope, path: str) -> bool:
        """Routes other than invocations (which check inside ``invoke``, after its lookup)."""
        bearer = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        match = _OIP_MODEL.match(path)
        return allowed(bearer, table.get(match.group(1)) if match is not None else None)

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await lifespan(receive, send)
            return
        if kind != "http":
            return
        t0 = time.perf_counter()
        request_id = f"{id_prefix}{next(id_counter)}".encode()
        path, method = scope["path"], scope["method"]
        try:
            try:
                if path in _HEALTH:
                    if method not in ("GET", "HEAD"):
                        raise _HttpError(405, "ValidationError", f"{method} {path} is not allowed")
                    ok = path == "/healthz" or table.ready()
                    await _respond(send, 200 if ok else 503,
                                   b'{"status":"ok"}' if ok else b'{"status":"loading"}',
                                   [(b"x-amzn-requestid", request_id)])
                    return
                match = _INVOKE.match(path)
                if match is not None:  # the hot path: auth is checked after its one lookup
                    if method != "POST":
                        raise _HttpError(405, "ValidationError",
                                         f"{method} {path} is not allowed; use POST")
                    await invoke(match.group(1), scope, receive, send, request_id, t0)
                    return
                if not authorised(scope, path):
                    if path.startswith("/v2"):
                        await _respond(send, 401, b'{"error":"missing or invalid bearer token"}',
                                       [(b"www-authenticate", b"Bearer")])
                        return
                    raise _unauthorised()
                if path == "/v2" or path.startswith("/v2/"):
                    await v2(scope, receive, send, t0)
                    return
                if path == "/metrics" and method == "GET":
                    body, ctype = metrics.render()
                    await _respond(send, 200, body, [], ctype.encode())
                    return
                if path == "/openapi.json" and method == "GET":
                    await _respond(send, 200, OPENAPI_JSON, [])
                    return
                raise _HttpError(404, "ValidationError",
                                 f"no route for {method} {path} on LoopML's data plane (it serves "
                                 "/endpoints/NAME/invocations and /v2); the REST API and the CLI "
                                 "use the control plane's port")
            except _HttpError as exc:
                await _error(send, exc, request_id)
        except Exception:
            log.exception("data plane: unexpected failure on %s %s", method, path)
            try:
                await _error(send, _HttpError(500, "InternalFailure", "internal failure"),
                             request_id)
            except Exception:
                pass  # the response had already started: nothing more to say

    app.endpoints = table  # type: ignore[attr-defined]
    app.metrics = metrics  # type: ignore[attr-defined]
    return app
