"""/triggers: what starts a function or a workflow (new objects, a cron schedule, a webhook, a
monitor alert), their firing history and a manual test fire; and /hooks/{name}, where webhook
triggers are called (authenticated by each hook's own secret, not by the API token)."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from loopml.api.auth import check_server_path, principal_of
from loopml.core.errors import Forbidden
from loopml.api.errors import SafeJSONResponse
from loopml.platform import Platform
from loopml.triggers import service

log = logging.getLogger("loopml.api")
router = APIRouter(prefix="/triggers", tags=["triggers"])
hooks_router = APIRouter(prefix="/hooks", tags=["triggers"])


class TriggerIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="1-63 letters, digits, '-' or '_'", examples=["new-images"])
    kind: str = Field(description="objects | cron | webhook | alert", examples=["objects"])
    objects_uri: str | None = Field(None, description="objects: s3://bucket/prefix/, file:///abs/dir/ or "
                                    "/abs/dir (an existing folder on the server), or a relative key prefix "
                                    "inside LoopML's artifact store (spec.uri says where)")
    suffix: str | None = Field(None, description="objects: only keys ending with this (e.g. .zip)")
    cron: str | None = Field(None, description="cron: minute hour day month weekday", examples=["*/5 * * * *"])
    tz: str | None = Field(None, description="cron: IANA time zone (default UTC)", examples=["Europe/Paris"])
    missed: str | None = Field(None, description="cron: runs missed while the server was down: skip "
                               "(default) | catch-up (one run for the latest)")
    monitor: str | None = Field(None, description="alert: the model monitor whose alerts fire it")
    function: str | None = Field(None, description="start this function (exactly one of function/workflow)")
    workflow: str | None = Field(None, description="start an execution of this workflow")


class TriggerPatch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    function: str | None = Field(None, description="start this function instead")
    workflow: str | None = Field(None, description="start this workflow instead")
    suffix: str | None = Field(None, description="objects: only keys ending with this ('' removes the filter)")
    cron: str | None = Field(None, description="cron: a new schedule (starts from now)")
    tz: str | None = Field(None, description="cron: a new time zone")
    missed: str | None = Field(None, description="cron: skip | catch-up")


class FireIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event: Any = Field(None, description="the event to send (default: a sample of the trigger's shape)")


class RedriveIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    firing: int | None = Field(None, description="this failed firing; default: every failed firing not "
                               "redriven yet")


class Trigger(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    kind: str
    spec: dict[str, Any]
    target: dict[str, Any] = Field(description="{kind: function|workflow, name}")
    status: str = Field(description="active | paused")
    created_at: str | None = None
    last_firing: dict[str, Any] | None = None
    url: str | None = Field(None, description="webhooks: POST here with the secret")
    signatures: bool | None = Field(None, description="webhooks: X-Hub-Signature-256 (HMAC of the body) "
                                    "accepted; false for hooks created before it was supported")


class TriggerCreated(Trigger):
    secret: str | None = Field(None, description="webhooks: only in the answer that made it; shown once")


class Fired(BaseModel):
    model_config = ConfigDict(extra="allow")
    firing: int
    status: str = Field(description="started | failed")
    started: dict[str, Any] | None = Field(None, description="{kind: function|workflow, id}")
    error: str | None = None


class Deleted(BaseModel):
    deleted: str


def _platform(request: Request) -> Platform:
    return request.app.state.platform


def _poke(request: Request, answer: dict[str, Any]) -> None:
    """Cut latency: ask the dispatcher to look now (optional: only when the loop offers it)."""
    started = answer.get("started") or {}
    control = getattr(request.app.state, "control", None)
    part = getattr(control, "functions" if started.get("kind") == "function" else "workflows", None)
    run_now = getattr(part, "run_now", None)
    if started.get("id") and callable(run_now):
        try:
            run_now(started["id"])
        except Exception:  # noqa: BLE001 - the firing is committed; the loop picks it up anyway
            log.warning("could not poke the dispatcher for %s", started["id"], exc_info=True)


def _may_start(request: Request, function: str | None, workflow: str | None) -> None:
    """A trigger starts its target with an event anyone with its secret (or fire) chooses: whoever
    points a trigger at a target, or fires one, must be allowed to start that target directly
    (functions:NAME:invoke, workflows:NAME:start) — triggers:write alone would otherwise invoke any
    function with its execution role."""
    principal = principal_of(request)
    if principal is None:
        return
    needed = [f"functions:{function}:invoke" if function else "", f"workflows:{workflow}:start" if workflow else ""]
    for permission in needed:
        # a name with ':' is no name at all: the service refuses it (400) below
        if permission and permission.count(":") == 2 and not principal.allows(permission):
            raise Forbidden(f"{principal.describe()} lacks the permission {permission}: a trigger may start only "
                            "what its maker may start")


def _may_start_target(request: Request, name: str) -> None:
    target = service.get_trigger(_platform(request), name).get("target") or {}
    _may_start(request, target.get("name") if target.get("kind") == "function" else None,
               target.get("name") if target.get("kind") == "workflow" else None)


@router.post("", response_model=TriggerCreated, status_code=201,
             summary="Create a trigger (a webhook's secret is in this answer only)")
def create_trigger(body: TriggerIn, request: Request) -> dict[str, Any]:
    _may_start(request, body.function, body.workflow)
    if (body.objects_uri or "").strip().startswith(("/", "~", "file://")):
        check_server_path(request, body.objects_uri, "objects_uri",
                          "use a key prefix inside the artifact store (incoming/mnist/) instead")
    fields = body.model_dump(exclude={"name", "kind", "function", "workflow"})
    return service.create_trigger(_platform(request), body.name, body.kind, function=body.function,
                                  workflow=body.workflow, **fields)


@router.get("", response_model=list[Trigger], summary="Triggers, by name")
def list_triggers(request: Request) -> list[dict[str, Any]]:
    return service.list_triggers(_platform(request))


@router.get("/{name}", response_model=Trigger, summary="One trigger with its last firing")
def get_trigger(name: str, request: Request) -> dict[str, Any]:
    return service.get_trigger(_platform(request), name)


@router.patch("/{name}", response_model=Trigger,
              summary="Change the target, an object trigger's suffix or a cron trigger's schedule (absent "
                      "fields keep their value)")
def update_trigger(name: str, body: TriggerPatch, request: Request) -> dict[str, Any]:
    _may_start(request, body.function, body.workflow)
    return service.update_trigger(_platform(request), name, **body.model_dump())


@router.post("/{name}/pause", response_model=Trigger, summary="Stop firing (objects keep arriving)")
def pause_trigger(name: str, request: Request) -> dict[str, Any]:
    return service.pause_trigger(_platform(request), name)


@router.post("/{name}/resume", response_model=Trigger, summary="Fire again")
def resume_trigger(name: str, request: Request) -> dict[str, Any]:
    return service.resume_trigger(_platform(request), name)


@router.delete("/{name}", response_model=Deleted, summary="Delete a trigger and its history")
def delete_trigger(name: str, request: Request) -> dict[str, Any]:
    service.delete_trigger(_platform(request), name)
    return {"deleted": name}


@router.get("/{name}/history", summary="Every firing (newest first) and what it started")
def trigger_history(name: str, request: Request,
                    limit: int = Query(100, ge=1, le=10_000),
                    offset: int = Query(0, ge=0, description="skip this many (paging)")) -> list[dict[str, Any]]:
    return service.history(_platform(request), name, limit=limit, offset=offset)


@router.post("/{name}/fire", response_model=Fired, status_code=202,
             summary="Test fire: start the target now with an event (or a sample one)")
def fire_trigger(name: str, request: Request, body: FireIn | None = None) -> dict[str, Any]:
    _may_start_target(request, name)
    answer = service.fire_manual(_platform(request), name, body.event if body else None)
    _poke(request, answer)
    return answer


@router.post("/{name}/redrive", response_model=list[Fired], status_code=202,
             summary="Start the target again for failed firings (each at most once; recorded as firings "
                     "with redrive_of)")
def redrive_trigger(name: str, request: Request, body: RedriveIn | None = None) -> list[dict[str, Any]]:
    _may_start_target(request, name)
    answers = service.redrive(_platform(request), name, body.firing if body else None)
    for answer in answers:
        _poke(request, answer)
    return answers


async def _capped_body(request: Request, cap: int) -> bytes:
    """At most ``cap`` bytes of the body: /hooks/ is open to the internet (no API token), so an
    anonymous caller must not make the server buffer an unbounded body. A body over the limit
    is refused (after the secret check) by ``fire_webhook``."""
    chunks, size = [], 0
    async for chunk in request.stream():
        chunks.append(chunk[:cap - size])
        size += len(chunks[-1])
        if size >= cap:
            break
    return b"".join(chunks)


@hooks_router.post("/{name}", response_model=Fired, status_code=202,
                   summary="Call a webhook trigger: 'Authorization: Bearer SECRET', "
                           "'X-LoopML-Hook-Secret: SECRET' or GitHub's 'X-Hub-Signature-256: sha256=HMAC' "
                           "(webhooks created before signatures were supported: Bearer only); a JSON body (or none)")
async def call_hook(name: str, request: Request) -> JSONResponse:
    platform = _platform(request)
    secret = request.headers.get("x-loopml-hook-secret")
    if secret is None:
        scheme, _, value = request.headers.get("authorization", "").partition(" ")
        secret = value.strip() if scheme.lower() == "bearer" else None
    signature = request.headers.get("x-hub-signature-256")
    # the secret (or, for a signature, the hook's existence) is checked before any body is read
    await run_in_threadpool(service.check_webhook_secret, platform, name, secret=secret, signature=signature)
    body = await _capped_body(request, service.MAX_WEBHOOK_BODY + 1)
    headers = {k: request.headers[k] for k in ("content-type", "user-agent", "idempotency-key",
                                               "x-github-event", "x-github-delivery") if k in request.headers}
    answer = await run_in_threadpool(service.fire_webhook, platform, name, secret=secret,
                                     body=body, headers=headers, signature=signature)
    _poke(request, answer)
    return SafeJSONResponse(answer, status_code=202)
