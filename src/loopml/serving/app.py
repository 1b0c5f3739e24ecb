"""The real-time data plane: a raw ASGI app speaking the SageMaker runtime contract.

    GET  /ping                              200 when every host is loaded, else 503
    POST /endpoints/{name}/invocations      body → codecs.decode → ModelHost → encode_predictions

Raw ASGI (no framework, no middleware) keeps the per-request overhead at the transport floor
(docs: ../shared/design/dependency-notes.md "HTTP serving"). Errors follow SageMaker: the HTTP
status, header ``x-amzn-ErrorType: <Code>`` and JSON ``{"message": ...}`` so boto3 raises its
modelled exceptions (ValidationError, ModelError, InternalFailure, ServiceUnavailable).

With ``token`` set every route but ``/ping`` needs ``Authorization: Bearer <token>`` (boto3
signs with SigV4 instead, so token auth and boto3 clients do not mix). ``/ping`` stays open for
load-balancer health checks. The app closes its hosts' batchers on lifespan shutdown.
"""

from __future__ import annotations

import hmac
import logging
import re
import uuid
from typing import Any, Awaitable, Callable

from loopml.core.errors import InvalidInput, LoopMLError, UnsupportedFormat
from loopml.serving.batcher import BatcherClosed, QueueFull
from loopml.serving.codecs import decode, encode_predictions, error_body
from loopml.serving.host import ModelHost

__all__ = ["create_data_plane", "MAX_BODY_BYTES"]

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 6_291_456  # SageMaker's synchronous invocation limit
_INVOKE = re.compile(r"^/endpoints/([^/]+)/invocations$")
_NAME = re.compile(r"^[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}$")
_JSON = b"application/json"
_VARIANT = b"AllTraffic"

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


class _HttpError(Exception):
    def __init__(self, status: int, code: str, message: str,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or []


async def _respond(send: Send, status: int, body: bytes,
                   headers: list[tuple[bytes, bytes]]) -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", _JSON),
                            (b"content-length", str(len(body)).encode()), *headers]})
    await send({"type": "http.response.body", "body": body})


async def _error(send: Send, exc: _HttpError, request_id: bytes) -> None:
    await _respond(send, exc.status, error_body(exc.message),
                   [(b"x-amzn-errortype", exc.code.encode()), (b"x-amzn-requestid", request_id),
                    *exc.headers])


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


def create_data_plane(hosts: dict[str, ModelHost], *, token: str | None = None):
    """An ASGI app serving ``hosts`` (endpoint name → loaded ModelHost)."""
    hosts = dict(hosts)
    for name in hosts:
        if not _NAME.match(name):
            raise InvalidInput(f"endpoint name {name!r} is invalid: letters, digits and "
                               "hyphens, starting and ending alphanumeric, at most 63 chars")
    expected_auth = None if token is None else b"Bearer " + token.encode("utf-8")

    async def lifespan(receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for host in hosts.values():
                    try:
                        await host.close()
                    except Exception:  # one host failing to close must not block the others
                        log.exception("closing endpoint %r failed", host.name)
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def invoke(name: str, scope: Scope, receive: Receive, send: Send,
                     request_id: bytes) -> None:
        host = hosts.get(name)
        if host is None:
            raise _HttpError(404, "ValidationError", f"Endpoint {name} not found.")
        body = await _read_body(scope, receive)
        if body is None:
            return  # the client went away
        content_type = None
        for key, value in scope["headers"]:
            if key == b"content-type":
                content_type = value.decode("latin-1")
                break
        try:
            raw, _ = decode(body, content_type, host.kind, shape=host.shape,
                            columns=host.columns, text_column=host.text_column)
            proba = await host.predict_raw(raw)
            out = encode_predictions(proba, host.label_names)
        except UnsupportedFormat as exc:
            raise _HttpError(415, "ValidationError", exc.message) from None
        except InvalidInput as exc:
            raise _HttpError(400, "ValidationError", exc.message) from None
        except (QueueFull, BatcherClosed) as exc:
            raise _HttpError(503, "ServiceUnavailable", exc.message,
                             [(b"retry-after", b"1")]) from None
        except LoopMLError as exc:
            log.warning("endpoint %r: model error: %s", name, exc.message)
            raise _HttpError(424, "ModelError", f"model {name!r} failed: {exc.message}") from None
        except Exception as exc:
            log.exception("endpoint %r: model failure", name)
            raise _HttpError(424, "ModelError",
                             f"model {name!r} failed: {type(exc).__name__}") from None
        await _respond(send, 200, out, [(b"x-amzn-invoked-production-variant", _VARIANT),
                                         (b"x-amzn-requestid", request_id)])

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await lifespan(receive, send)
            return
        if kind != "http":
            return
        request_id = str(uuid.uuid4()).encode()
        path, method = scope["path"], scope["method"]
        try:
            try:
                if path == "/ping":
                    if method not in ("GET", "HEAD"):
                        raise _HttpError(405, "ValidationError", f"{method} /ping is not allowed")
                    ready = all(h.loaded for h in hosts.values())
                    await _respond(send, 200 if ready else 503,
                                   b'{"status":"ok"}' if ready else b'{"status":"loading"}',
                                   [(b"x-amzn-requestid", request_id)])
                    return
                if expected_auth is not None:
                    got = b""
                    for key, value in scope["headers"]:
                        if key == b"authorization":
                            got = value
                            break
                    if not hmac.compare_digest(got, expected_auth):
                        raise _HttpError(401, "AccessDeniedException",
                                         "missing or invalid bearer token",
                                         [(b"www-authenticate", b"Bearer")])
                match = _INVOKE.match(path)
                if match is None:
                    raise _HttpError(404, "ValidationError", f"no route for {path}")
                if method != "POST":
                    raise _HttpError(405, "ValidationError", f"{method} {path} is not allowed; "
                                                             "use POST")
                await invoke(match.group(1), scope, receive, send, request_id)
            except _HttpError as exc:
                await _error(send, exc, request_id)
        except Exception:
            log.exception("data plane: unexpected failure on %s %s", method, path)
            try:
                await _error(send, _HttpError(500, "InternalFailure", "internal failure"),
                             request_id)
            except Exception:
                pass  # the response had already started: nothing more to say

    app.hosts = hosts  # type: ignore[attr-defined]
    return app
