"""Every failure leaves the API as JSON ``{"code", "message"[, "details"]}``.

LoopMLError keeps its own status; request validation becomes 400 ``invalid_input`` with
``"<field>: <problem>"``; unknown routes are 404 JSON; anything unexpected is logged with its
traceback and answered 500 without one. The catch-all is plain ASGI middleware (the token
check too: api/auth.py), since BaseHTTPMiddleware would buffer the streamed prediction output.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loopml.core.errors import LoopMLError
from loopml.core.jsonutil import NotStrictJSON, dumps_safe, loads_strict

log = logging.getLogger("loopml.api")

_HTTP_CODES = {400: "invalid_input", 401: "unauthorized", 403: "forbidden", 404: "not_found",
               405: "method_not_allowed", 409: "conflict", 413: "too_large", 415: "unsupported_media_type"}


def error_body(code: str, message: str, details: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"code": code, "message": message}
    if details:
        body["details"] = details
    return body


def _field(loc: tuple | list) -> str:
    # ("body", "params", "epochs") -> "params.epochs"; the request part is noise for users
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header", "form", "cookie")]
    return ".".join(parts) or str(loc[0] if loc else "request")


def validation_message(exc: RequestValidationError) -> str:
    problems = []
    for err in exc.errors():
        kind = err.get("type", "")
        if kind == "json_invalid":
            problems.append("body: the request body is not valid JSON")
        elif kind == "missing":
            problems.append(f"{_field(err.get('loc', ()))}: field required")
        else:
            problems.append(f"{_field(err.get('loc', ()))}: {err.get('msg', 'invalid value')}")
    return "; ".join(dict.fromkeys(problems)) or "invalid request"


class SafeJSONResponse(JSONResponse):
    """The API's answers: like JSONResponse, but a stored string holding a lone surrogate (from
    before input refused them) is sent as U+FFFD instead of failing the whole list with a 500."""

    def render(self, content: Any) -> bytes:
        return dumps_safe(content, allow_nan=False, indent=None, separators=(",", ":"))


async def _loopml_error(_req: Request, exc: LoopMLError) -> JSONResponse:
    if exc.status >= 500:
        log.error("request failed: %s", exc.message)
    return SafeJSONResponse(exc.to_dict(), status_code=exc.status)


async def _validation_error(_req: Request, exc: RequestValidationError) -> JSONResponse:
    return SafeJSONResponse(error_body("invalid_input", validation_message(exc)), status_code=400)


async def _http_error(req: Request, exc: StarletteHTTPException) -> JSONResponse:
    code = _HTTP_CODES.get(exc.status_code, "error")
    message = str(exc.detail)
    if exc.status_code == 404 and message == "Not Found":
        message = f"no such route: {req.method} {req.url.path}"
    elif exc.status_code == 405:
        message = f"method {req.method} is not allowed on {req.url.path}"
    return SafeJSONResponse(error_body(code, message), status_code=exc.status_code, headers=exc.headers)


def install_handlers(app: FastAPI) -> None:
    app.add_exception_handler(LoopMLError, _loopml_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, _validation_error)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, _http_error)  # type: ignore[arg-type]


async def _send_json(send: Send, status: int, body: dict[str, Any], headers: list | None = None) -> None:
    data = dumps_safe(body)
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"),
                            (b"content-length", str(len(data)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": data})


class CatchAllMiddleware:
    """Unexpected exceptions: log the traceback, answer 500 JSON (never the traceback)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:  # noqa: BLE001 - the last line of defence
            log.exception("unhandled error on %s %s", scope.get("method"), scope.get("path"))
            if not started:  # once streaming began the status is gone; the client sees a cut body
                await _send_json(send, 500, error_body("error", "internal server error (details are in the server log)"))


def _parsed_as_json(scope: Scope) -> bool:
    """Whether FastAPI would parse this request's body as JSON: a JSON content type, or none.
    /hooks/ is left out: open to anyone, it reads its capped body itself after the secret check."""
    if scope["type"] != "http" or scope.get("method") not in ("POST", "PUT", "PATCH"):
        return False
    if str(scope.get("path", "")).startswith("/hooks/"):
        return False
    content_type = dict(scope.get("headers") or []).get(b"content-type")
    return content_type is None or b"json" in content_type


class StrictJSONMiddleware:
    """JSON request bodies must be real JSON: Python's parser (FastAPI's) accepts NaN, Infinity
    and 1e999, which PostgreSQL's json columns then refuse (a 500 after the fact), lone
    surrogates (which break every later answer that includes them) and any nesting (a
    RecursionError at ~1,000 levels). Bodies are checked here (``loads_strict``; large ones on a
    worker thread, never stalling the event loop) and replayed to the app unchanged; other parse
    errors are left to the route's own validation. The largest JSON body any route takes is
    64 MiB (monitor labels): over that is 413."""

    MAX = 64 << 20
    INLINE = 256 << 10  # parsed on the event loop up to this size (well under a millisecond per KiB)

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _parsed_as_json(scope):
            await self.app(scope, receive, send)
            return
        chunks, size, more = [], 0, True
        while more and size <= self.MAX:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            more = message.get("more_body", False)
        body = b"".join(chunks)
        if more:  # larger than any JSON body the API takes
            await _send_json(send, 413, error_body("too_large", f"body: a JSON body is at most {self.MAX} bytes"))
            return
        if body.strip():
            try:
                if size > self.INLINE:
                    await run_in_threadpool(loads_strict, body)
                else:
                    loads_strict(body)
            except NotStrictJSON as exc:
                await _send_json(send, 400, error_body("invalid_input", f"body: {exc}"))
                return
            except ValueError:
                pass  # not JSON at all: the route says so in its own words
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": more}
            return await receive()

        await self.app(scope, replay, send)
