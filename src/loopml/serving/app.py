"""The real-time data plane: one raw ASGI app for every endpoint of a serving process.

    GET  /ping, /healthz, /readyz            health (ping/readyz: 200 once every endpoint is loaded,
                                             503 "draining" while a stopping node drains)
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
(boto3 signs with SigV4 instead, so bearer auth and boto3 clients do not mix). A LoopML API
token (``lml_…``) whose grants hold ``endpoints:NAME:invoke`` is accepted wherever a key is, on
that endpoint's invocation routes (``token_check``: only consulted when the token and keys did not
match, so the usual paths cost nothing more; answers cached for ``TOKEN_CACHE_S``).

Structure: ``DataPlane`` (this app: routing, auth, health, lifespan) holds an ``invoke.Invoker``
(pick → predict → capture → shadow → metrics, shared by both protocols); the SageMaker codec is
``DataPlane.invocations`` with its one error table ``sagemaker_error``; OIP's is ``serving.oip``.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import re
import time
from typing import Any, Awaitable, Callable

from loopml.core.errors import EndpointFailed, InvalidInput, LoopMLError, NotFound, UnsupportedFormat
from loopml.serving import oip
from loopml.serving.batcher import BatcherClosed, QueueFull
from loopml.serving.capture import CaptureWriter
from loopml.serving.codecs import MAX_BODY_BYTES, decode_async, encode_predictions, error_body
from loopml.serving.host import ModelHost
from loopml.serving.invoke import (Call, EndpointLoading, EndpointNotFound, Endpoints, Invoker,
                                   predict)
from loopml.serving.live import LiveEndpoint, Variant
from loopml.serving.metrics import ServingMetrics
from loopml.serving.model_cache import ModelNotReady
from loopml.serving.openapi import OPENAPI_JSON

__all__ = ["create_data_plane", "DataPlane", "MAX_BODY_BYTES", "StaticEndpoints", "Endpoints"]

log = logging.getLogger(__name__)

_INVOKE = re.compile(r"^/endpoints/([^/]+)/invocations$")
_OIP_MODEL = re.compile(r"^/v2/models/([^/]+)")
_JSON = b"application/json"
_HEALTH = ("/ping", "/healthz", "/readyz")
TOKEN_CACHE_S = 2.0  # a revoked API token is refused at most this long after
TokenCheck = Callable[[str, str], bool]  # (API token, endpoint) → may invoke it; blocking (a store read)

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


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

    async def target_model(self, ep: LiveEndpoint, ref: str) -> Variant:
        raise InvalidInput(f"endpoint {ep.name!r} is not a multi-model endpoint")

    async def close(self) -> None:
        for ep in self.live.values():
            for host in ep.hosts():
                try:
                    await host.close()
                except Exception:  # one host failing to close must not block the others
                    log.exception("closing endpoint %r failed", ep.name)


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


def sagemaker_error(exc: BaseException, where: str) -> _HttpError:
    """The SageMaker error table: what the core, decoding or the model raised → the error."""
    if isinstance(exc, _HttpError):
        return exc
    if isinstance(exc, EndpointNotFound):
        return _HttpError(404, "ValidationError", exc.message)
    if isinstance(exc, EndpointLoading):
        return _HttpError(503, "ServiceUnavailable", exc.message, _RETRY)
    if isinstance(exc, EndpointFailed):
        return _HttpError(424, "ModelError", exc.message)
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


def _headers(scope: Scope) -> tuple[str | None, str | None, str | None, str | None, bytes | None]:
    """(content type, target variant, target model, inference id, authorization): one pass."""
    content_type = target_variant = target_model = inference_id = bearer = None
    for key, value in scope["headers"]:
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
    return content_type, target_variant, target_model, inference_id, bearer


class DataPlane:
    """The ASGI app: routes, auth, health, lifespan; invocations through ``self.invoker``."""

    def __init__(self, table: Endpoints, *, token: str | None, metrics: ServingMetrics,
                 capture: CaptureWriter | None,
                 on_shutdown: Callable[[], Awaitable[None]] | None, owns_table: bool,
                 token_check: TokenCheck | None = None) -> None:
        self.endpoints, self.metrics = table, metrics
        self.draining = False  # set on SIGTERM before a node stops accepting (serving.server)
        self._token_check, self._token_cache = token_check, {}
        self.invoker = Invoker(table, metrics, capture)
        self._owns_table, self._on_shutdown = owns_table, on_shutdown
        self._expected_auth = None if token is None else b"Bearer " + token.encode("utf-8")
        metrics.add_source(self._batcher_stats)
        if capture is not None:
            metrics.set_capture_source(capture.stats)

    def _batcher_stats(self):
        seen = set()
        for name, ep in list(getattr(self.endpoints, "live", {}).items()):
            for v in [*ep.variants, *([ep.shadow] if ep.shadow else [])]:
                if id(v.host) in seen:
                    continue
                seen.add(id(v.host))
                yield name, v.name, {**v.host.batcher.stats(),
                                     "max_batch_size": v.host.batcher.max_batch_size}

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.invoker.drain()
                if self._owns_table:
                    await self.endpoints.close()
                if self._on_shutdown is not None:
                    try:
                        await self._on_shutdown()
                    except Exception:
                        log.exception("data plane shutdown hook failed")
                await send({"type": "lifespan.shutdown.complete"})
                return

    # ---------------------------------------------------------------- SageMaker codec

    async def invocations(self, name: str, scope: Scope, receive: Receive, send: Send,
                          request_id: bytes, t0: float) -> None:
        """POST /endpoints/{name}/invocations: SageMaker bodies in, predictions JSON out."""
        invoker = self.invoker
        ep = invoker.get(name)
        content_type, target_variant, target_model, inference_id, bearer = _headers(scope)
        if not self._allowed(bearer, ep) and not await self._token_allows(bearer, name):
            raise _unauthorised()
        if ep is None:
            raise sagemaker_error(invoker.unavailable(name), f"endpoint {name!r}")
        call = Call(name, t0)
        call.ep, call.inference_id = ep, inference_id
        body = out = None
        finished = False
        try:
            if inference_id is not None and not 1 <= len(inference_id) <= 64:
                raise _HttpError(400, "ValidationError",
                                 "X-Amzn-SageMaker-Inference-Id must be 1 to 64 characters")
            variant = (await invoker.target_model(ep, target_model) if target_model
                       else ep.pick(target_variant))
            call.variant = variant
            host = variant.host
            body = await _read_body(scope, receive)
            if body is None:
                call.status = 499
                return  # the client went away (or was too slow: the read deadline's 408)
            # only now: a batch may wait for this request while it decodes (never for a body
            # still on the wire — a stalled client would hold everyone's batch)
            host.batcher.announce()
            announced = True
            try:
                sig = host.signature
                raw, _ = await decode_async(body, content_type, sig.kind, shape=sig.shape,
                                            columns=sig.columns, text_column=sig.text_column)
                announced = False
                # after a version switch: the same variant (or any) of the current generation;
                # a target model stays pinned
                again = None if target_model else \
                    (lambda: (invoker.get(name) or ep).pick(target_variant))
                variant, call.raw, call.proba = await predict(variant, raw, again=again,
                                                              announced=True)
                call.variant = variant
                out = encode_predictions(call.proba, variant.host.label_names)
            finally:
                if announced:
                    host.batcher.withdraw()
            call.status = 200
            finished = True  # captured before the answer leaves: a kill -9 loses no answered one
            invoker.finish(call, body, content_type, out)
            await _respond(send, 200, out, [(b"x-amzn-invoked-production-variant",
                                             variant.name_bytes),
                                            (b"x-amzn-requestid", request_id)])
        except Exception as exc:  # noqa: BLE001 - mapped to the SageMaker error it is
            if finished:
                raise
            error = sagemaker_error(exc, f"endpoint {name!r}")
            call.status = error.status
            raise error from None
        finally:
            if not finished:
                invoker.finish(call, body, content_type, out)

    # ---------------------------------------------------------------- OIP codec

    async def v2(self, scope: Scope, receive: Receive, send: Send, t0: float) -> None:
        body = b""
        if scope["method"] == "POST":
            body = await _read_body(scope, receive)
            if body is None:
                return
        headers = dict(scope["headers"])
        call = Call("", t0) if scope["method"] == "POST" else None  # oip names an inference
        status, extra, out = await oip.handle_v2(scope["method"], scope["path"], headers, body,
                                                 self.invoker, call)
        if call is not None and call.name:  # inferences count, are captured (before the answer
            call.status = status            # leaves: a kill -9 loses none) and shadowed
            out_type = next((v for k, v in extra if k == b"content-type"), _JSON)
            self.invoker.finish(call, body, headers.get(b"content-type", b"").decode("latin-1")
                                or "application/json", out, out_type.decode("latin-1"))
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-length", str(len(out)).encode()), *extra]})
        await send({"type": "http.response.body", "body": out})

    # ---------------------------------------------------------------- auth

    def _allowed(self, bearer: bytes | None, ep: LiveEndpoint | None) -> bool:
        """The data plane's token, or (on the routes of ``ep``) one of its API keys."""
        expected = self._expected_auth
        if bearer is not None and not bearer.startswith(b"Bearer ") and \
                bearer[:7].lower() == b"bearer ":
            bearer = b"Bearer " + bearer[7:]  # RFC 9110: the scheme is case-insensitive
        if expected is not None and bearer is not None and hmac.compare_digest(bearer, expected):
            return True
        if ep is not None and ep.key_hashes:
            return bearer is not None and bearer.startswith(b"Bearer ") and \
                hashlib.sha256(bearer[7:]).hexdigest() in ep.key_hashes
        return expected is None

    async def _token_allows(self, bearer: bytes | None, name: str | None) -> bool:
        """A LoopML API token granting ``endpoints:NAME:invoke`` (checked off the event loop)."""
        if self._token_check is None or name is None or bearer is None or bearer[:11].lower() != b"bearer lml_":
            return False
        key, now = (bearer, name), time.monotonic()
        cached = self._token_cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        try:
            ok = await asyncio.to_thread(self._token_check, bearer[7:].decode("latin-1").strip(), name)
        except Exception:  # noqa: BLE001 - the store is unreachable: refuse, say why in the log
            log.exception("data plane: checking an API token failed")
            return False
        if len(self._token_cache) > 10_000:
            self._token_cache.clear()
        self._token_cache[key] = (now + TOKEN_CACHE_S, ok)
        return ok

    async def _model_token_allows(self, scope: Scope, path: str) -> bool:
        """An API token on an OIP model route (/v2/models/NAME/...), the only others it opens."""
        match = _OIP_MODEL.match(path)
        bearer = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        return match is not None and await self._token_allows(bearer, match.group(1))

    def _authorised(self, scope: Scope, path: str) -> bool:
        """Routes other than invocations (which check inside ``invocations``, after its lookup)."""
        bearer = next((v for k, v in scope["headers"] if k == b"authorization"), None)
        match = _OIP_MODEL.match(path)
        return self._allowed(bearer, self.endpoints.get(match.group(1))
                             if match is not None else None)

    # ---------------------------------------------------------------- routing

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self._lifespan(receive, send)
            return
        if kind != "http":
            return
        t0 = time.perf_counter()
        request_id = self.invoker.new_id().encode()  # the one per-process id sequence
        path, method = scope["path"], scope["method"]
        try:
            try:
                await self._route(scope, receive, send, path, method, request_id, t0)
            except _HttpError as exc:
                await _error(send, exc, request_id)
        except Exception:
            log.exception("data plane: unexpected failure on %s %s", method, path)
            try:
                await _error(send, _HttpError(500, "InternalFailure", "internal failure"),
                             request_id)
            except Exception:
                pass  # the response had already started: nothing more to say

    async def _route(self, scope: Scope, receive: Receive, send: Send, path: str, method: str,
                     request_id: bytes, t0: float) -> None:
        match = _INVOKE.match(path)
        if match is not None:  # the hot path: auth is checked after its one lookup
            if method != "POST":
                raise _HttpError(405, "ValidationError",
                                 f"{method} {path} is not allowed; use POST")
            await self.invocations(match.group(1), scope, receive, send, request_id, t0)
            return
        if path in _HEALTH:
            if method not in ("GET", "HEAD"):
                raise _HttpError(405, "ValidationError", f"{method} {path} is not allowed")
            if path != "/healthz" and self.draining:  # still answering, but take me out
                await _respond(send, 503, b'{"status":"draining"}', [(b"x-amzn-requestid", request_id)])
                return
            ok = path == "/healthz" or self.endpoints.ready()
            await _respond(send, 200 if ok else 503,
                           b'{"status":"ok"}' if ok else b'{"status":"loading"}',
                           [(b"x-amzn-requestid", request_id)])
            return
        if not self._authorised(scope, path) and not await self._model_token_allows(scope, path):
            if path.startswith("/v2"):
                await _respond(send, 401, b'{"error":"missing or invalid bearer token"}',
                               [(b"www-authenticate", b"Bearer")])
                return
            raise _unauthorised()
        if path == "/v2" or path.startswith("/v2/"):
            await self.v2(scope, receive, send, t0)
            return
        if path == "/metrics" and method == "GET":
            body, ctype = self.metrics.render()
            await _respond(send, 200, body, [], ctype.encode())
            return
        if path == "/openapi.json" and method == "GET":
            await _respond(send, 200, OPENAPI_JSON, [])
            return
        raise _HttpError(404, "ValidationError",
                         f"no route for {method} {path} on LoopML's data plane (it serves "
                         "/endpoints/NAME/invocations and /v2); the REST API and the CLI "
                         "use the control plane's port")


def create_data_plane(endpoints: Endpoints | dict[str, ModelHost], *, token: str | None = None,
                      metrics: ServingMetrics | None = None,
                      capture: CaptureWriter | None = None,
                      on_shutdown: Callable[[], Awaitable[None]] | None = None,
                      token_check: TokenCheck | None = None) -> DataPlane:
    """An ASGI app serving ``endpoints`` (an EndpointManager, or a ``name → ModelHost`` dict)."""
    owned = isinstance(endpoints, dict)
    table: Any = StaticEndpoints(endpoints) if owned else endpoints
    return DataPlane(table, token=token, metrics=metrics or ServingMetrics(), capture=capture,
                     on_shutdown=on_shutdown, owns_table=owned, token_check=token_check)
