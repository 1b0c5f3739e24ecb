"""Who is calling, may they, and what did they change: one ASGI middleware, outermost.

For each request: the route's entry in identity.permissions.ROUTES (method + path template) →
the permission it needs → the principal of its bearer token (identity.service.resolve) → 401
(no/unknown/expired/revoked token: JSON ``{code, message}`` + ``WWW-Authenticate: Bearer``) or
403 (naming the missing permission) or on to the app with ``request.state.principal`` set. A
mutating call (POST/PUT/PATCH/DELETE) is written to the audit log once its status is known,
before the client sees the response. Every response carries ``X-Request-Id`` (the caller's, if
sane, else a new one), which the audit row keeps. Plain ASGI: streamed bodies stay streamed.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from loopml.api.errors import _send_json, error_body
from loopml.core.errors import Forbidden
from loopml.identity import service
from loopml.identity.permissions import AUTHENTICATED, EVERYTHING, MUTATING, PUBLIC, match
from loopml.identity.principal import Principal

log = logging.getLogger("loopml.api")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,64}")
AUTH_ON_CACHE_S = 5.0
_UNAUTHORIZED = [(b"www-authenticate", b'Bearer realm="loopml"')]


def principal_of(request: Any) -> Principal | None:
    """The principal a request acts as (None on public routes)."""
    return getattr(request.state, "principal", None)


def _header(scope: Scope, name: bytes) -> bytes:
    for key, value in scope.get("headers") or []:
        if key == name:
            return value
    return b""


def _bearer(scope: Scope) -> str | None:
    scheme, _, value = _header(scope, b"authorization").decode("latin-1").strip().partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


class AuthMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        # "auth is on" is cached briefly (one store read per request otherwise); "off" never is, so
        # the first user created turns auth on at once, and deleting the last one errs on the safe side
        self._auth_on_until = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        platform = scope["app"].state.platform
        bootstrap = scope["app"].state.settings.token
        method, path = scope["method"], scope["path"]
        route, params = match(method, path)
        needed = route.required(params) if route is not None else EVERYTHING
        given = _header(scope, b"x-request-id").decode("latin-1")
        request_id = given if _REQUEST_ID.fullmatch(given) else uuid.uuid4().hex[:16]
        action = f"{method} {route.path if route is not None else path}"
        mutating = method in MUTATING

        async def deny(status: int, message: str, principal: Principal | None = None) -> None:
            if principal is not None and mutating:
                await self._audit(platform, principal, action, path, status, request_id)
            headers = [(b"x-request-id", request_id.encode())] + (_UNAUTHORIZED if status == 401 else [])
            await _send_json(send, status, error_body("unauthorized" if status == 401 else "forbidden", message),
                             headers=headers)

        principal: Principal | None = None
        if needed != PUBLIC:
            try:
                enabled = time.monotonic() < self._auth_on_until or \
                    await run_in_threadpool(service.auth_enabled, platform, bootstrap)
                if enabled:
                    self._auth_on_until = time.monotonic() + AUTH_ON_CACHE_S
                bearer = _bearer(scope) if enabled else None
                principal = (service.anonymous() if not enabled
                             else await run_in_threadpool(service.resolve, platform, bearer, bootstrap=bootstrap) if bearer
                             else None)
            except Exception:  # noqa: BLE001 - the store failed: answer, never hang or leak a traceback
                log.exception("resolving the caller of %s %s failed", method, path)
                await _send_json(send, 500, error_body("error", "internal server error (details are in the server log)"))
                return
            if principal is None:
                await deny(401, "invalid API token: unknown, wrong, expired or revoked (CLI/SDK: `loopml login` or "
                           "LOOPML_TOKEN)"
                           if _header(scope, b"authorization") else
                           "missing API token: send 'Authorization: Bearer <token>' (CLI/SDK: `loopml login` "
                           "or LOOPML_TOKEN)")
                return
            if needed != AUTHENTICATED and not principal.allows(needed):
                await deny(403, f"{principal.describe()} lacks the permission {needed} that {method} "
                                f"{route.path if route is not None else path} needs", principal)
                return
        scope.setdefault("state", {})
        scope["state"]["principal"] = principal
        scope["state"]["request_id"] = request_id
        # webhooks check their own secret: audited once they got in (a 401/404 there is noise)
        hook = route is not None and route.path == "/hooks/{name}"

        async def tracked_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status = message["status"]
                if mutating and (not hook or status < 400):
                    await self._audit(platform, principal, action, path, status, request_id,
                                      actor=f"webhook:{params.get('name')}" if hook else None)
                message = {**message, "headers": [*message.get("headers", []),
                                                  (b"x-request-id", request_id.encode())]}
            await send(message)

        await self.app(scope, receive, tracked_send)

    @staticmethod
    async def _audit(platform: Any, principal: Principal | None, action: str, path: str, status: int,
                     request_id: str, actor: str | None = None) -> None:
        try:
            await run_in_threadpool(service.record_audit, platform, principal, action=action, object=path,
                                    status=status, request_id=request_id, actor=actor)
        except Exception:  # noqa: BLE001 - a failed audit write must not turn a done change into an error
            log.exception("could not write the audit record of %s", action)


REDACTED = "***"


def redact_secrets(request: Any, function: dict[str, Any]) -> dict[str, Any]:
    """A function record as the caller may see it: environment values only with secrets:read
    (a viewer sees which variables are set, not their values)."""
    principal = principal_of(request)
    if principal is None or principal.allows("secrets:read"):
        return function
    return {**function, "environment": dict.fromkeys(function.get("environment") or {}, REDACTED)}


def _allowed_roots(settings: Any) -> list[str]:
    """Folders whose files any caller may name: the local artifact store and LOOPML_SERVER_PATHS."""
    roots = [p.strip() for p in (settings.server_paths or "").split(",") if p.strip()]
    store = settings.resolved_artifact_uri
    if not store.startswith(("s3://", "s3a://")):
        roots.append(store[len("file://"):] if store.startswith("file://") else store)
    return [os.path.realpath(os.path.expanduser(r)) for r in roots]


def check_server_path(request: Any, source: str | None, what: str,
                      instead: str = "upload the file instead (the CLI and SDK upload local files)") -> None:
    """A path on the control plane's own disk (a dataset source, an object trigger's folder) is read
    with the server's rights: its database, its loopml.toml (the bootstrap token), /proc/self/environ.
    Once auth is on, only an admin may name any; other tokens only paths inside the local artifact
    store or a folder of LOOPML_SERVER_PATHS (403 naming the setting). ``source``: a local path
    (relative to the server's folder) or file:// URI; the caller tells it from s3:// and the like."""
    principal = principal_of(request)
    if principal is None or principal.allows("*") or not source:
        return
    source = source.strip()
    path = source[len("file://"):] if source.startswith("file://") else source
    real = os.path.realpath(os.path.expanduser(path))
    for root in _allowed_roots(request.app.state.settings):
        if real == root or real.startswith(root.rstrip(os.sep) + os.sep):
            return
    raise Forbidden(f"{what} {source!r} is a path on the server, read with the server's rights: "
                    f"{principal.describe()} may name only files inside the artifact store or a folder of "
                    f"LOOPML_SERVER_PATHS (an admin may name any); {instead}")


def acting_as(request: Any, claimed: str | None) -> str:
    """The "who" of alias history and alert acks: the authenticated user once auth is on (a
    client's X-LoopML-Actor is only believed while auth is off, as before)."""
    principal = principal_of(request)
    if principal is not None and principal.kind != "anonymous":
        return principal.name
    return claimed or "api"
