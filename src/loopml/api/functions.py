"""/functions: Lambda-like functions — create (upload code), list, show, delete, invoke, logs.

Invocations run in the control plane's FunctionDispatcher, one process each. A synchronous
invoke answers 200 with the finished record even when the function failed (the record's
``status``/``error_type`` say so, like Lambda's X-Amz-Function-Error); async answers 202 with
the queued record.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, Request, Response
from fastapi import UploadFile
from pydantic import BaseModel, ConfigDict, Field

from loopml.api.auth import principal_of, redact_secrets
from loopml.core.errors import Forbidden
from loopml.core.jobstatus import INVOCATION_STATUSES, INVOCATION_TERMINAL
from loopml.functions import service
from loopml.identity.service import check_function_permissions
from loopml.platform import Platform
from loopml.workflows import dependents

router = APIRouter(prefix="/functions", tags=["functions"])

SYNC_GRACE_S = 60.0  # a sync invoke waits the function's timeout plus this (queueing, start-up)
Status = Literal[INVOCATION_STATUSES]  # type: ignore[valid-type]  # the API enum, from core


class Function(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    handler: str = Field(description="MODULE.FUNCTION inside the code")
    code_key: str
    code_sha256: str
    timeout_s: float
    memory_mb: int
    environment: dict[str, str] = Field({}, description="values shown only to callers holding secrets:read")
    description: str | None = None
    permissions: list[str] = Field([], description="the execution role: what each invocation's token may do")
    created_at: str | None = None
    updated_at: str | None = None


class Invocation(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    function: str
    status: str = Field(description="queued | running | succeeded | failed")
    source: str | None = None
    event: Any = None
    result: Any = None
    error_type: str | None = Field(None, description="exception class name, or Function.Timeout, "
                                   "Function.MemoryExceeded, Function.HandlerNotFound, …")
    error_message: str | None = None
    logs: str | None = None
    duration_ms: float | None = None
    max_memory_mb: float | None = None
    created_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None


class InvokeIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    event: Any = Field(None, description="any JSON value, passed to handler(event, context)")
    mode: Literal["sync", "async"] = Field("sync", description="sync: wait for the end; async: queue (202)")
    source: str | None = Field(None, description="who invoked (recorded); default 'api'")


class InvocationLogs(BaseModel):
    id: str
    status: str
    started_at: str | None = None
    ended_at: str | None = None
    error_type: str | None = None
    logs: str | None = None


class Deleted(BaseModel):
    deleted: str
    broken: list[dict[str, Any]] = Field([], description="with force: the dependents now broken")


def _platform(request: Request) -> Platform:
    return request.app.state.platform


def _dispatcher(request: Request) -> Any:
    return getattr(getattr(request.app.state, "control", None), "functions", None)


def _passed(request: Request, permissions: str | None) -> list[str] | None:
    """The execution role given, checked to be held by the caller (who cannot give more)."""
    wanted = service.parse_permissions(permissions)
    return None if wanted is None else check_function_permissions(wanted, by=principal_of(request))


def _may_run_as(request: Request, name: str) -> None:
    """New code (or handler) under a kept execution role runs with that role: whoever changes it must
    hold every permission of it, as if giving it anew (a token scoped to functions:NAME:write would
    otherwise gain the function's datasets:write at its next invocation)."""
    principal = principal_of(request)
    if principal is None:  # auth off
        return
    for p in _platform(request).functions.get(name).get("permissions") or []:
        if not principal.allows(p):
            raise Forbidden(f"{principal.describe()} does not hold {p}, which function {name!r} runs with: new "
                            "code would use it (someone holding it changes the code, or pass the permissions anew)")


def _bool(value: str | bool | None) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


@router.post("", response_model=Function, status_code=201,
             summary="Create a function from a .py file or a zipped folder (replace=true changes one)")
def create_function(
    request: Request,
    name: Annotated[str, Form(description="lowercase letters, digits and '-', at most 63")],
    code: Annotated[UploadFile, File(description="the handler's .py file, or a .zip of a folder")],
    handler: Annotated[str | None, Form(description="MODULE.FUNCTION; default <file stem>.handler")] = None,
    timeout_s: Annotated[float, Form(description="seconds before the invocation is killed")] = 60,
    memory_mb: Annotated[int, Form(description="memory cap of the invocation's process")] = 512,
    environment: Annotated[str | None, Form(description="JSON object of environment variables")] = None,
    description: Annotated[str | None, Form()] = None,
    replace: Annotated[str | None, Form(description="true: replace an existing function")] = None,
    permissions: Annotated[str | None, Form(description='JSON list: the execution role, e.g. '
                                            '["datasets:write", "workflows:retrain:start"]')] = None,
) -> dict[str, Any]:
    data = code.file.read(service.MAX_CODE_BYTES + 1)
    return service.create_function(
        _platform(request), name, filename=code.filename or "handler.py", data=data, handler=handler or None,
        timeout_s=timeout_s, memory_mb=memory_mb, environment=service.parse_environment(environment),
        description=description, replace=_bool(replace), permissions=_passed(request, permissions))


@router.patch("/{name}", response_model=Function,
              summary="Change a function: only the fields given (new code, handler, timeout, memory, "
                      "environment merged: null removes a variable)")
def update_function(
    name: str,
    request: Request,
    code: Annotated[UploadFile | None, File(description="new code (.py or .zip); absent: keep the code")] = None,
    handler: Annotated[str | None, Form(description="MODULE.FUNCTION; absent: keep the handler")] = None,
    timeout_s: Annotated[float | None, Form(description="absent: keep")] = None,
    memory_mb: Annotated[int | None, Form(description="absent: keep")] = None,
    environment: Annotated[str | None, Form(description="JSON object merged into the environment: "
                                            "NAME: value sets, NAME: null removes")] = None,
    description: Annotated[str | None, Form(description="absent: keep; empty: clear")] = None,
    permissions: Annotated[str | None, Form(description="JSON list replacing the execution role "
                                            "(absent: keep; []: none)")] = None,
) -> dict[str, Any]:
    passed = _passed(request, permissions)
    if passed is None and (code is not None or handler):
        _may_run_as(request, name)
    data = code.file.read(service.MAX_CODE_BYTES + 1) if code is not None else None
    return service.update_function(
        _platform(request), name, filename=(code.filename or "handler.py") if code is not None else None, data=data,
        handler=handler or None, timeout_s=timeout_s, memory_mb=memory_mb,
        environment=service.parse_environment(environment), description=description,
        permissions=passed)


@router.get("", response_model=list[Function], summary="Functions, by name")
def list_functions(request: Request) -> list[dict[str, Any]]:
    return [redact_secrets(request, f) for f in _platform(request).functions.list()]


@router.get("/{name}", response_model=Function, summary="One function's configuration")
def get_function(name: str, request: Request) -> dict[str, Any]:
    return redact_secrets(request, _platform(request).functions.get(name))


@router.delete("/{name}", response_model=Deleted, response_model_exclude_unset=True,
               summary="Delete a function (its invocations stay); 409 listing the triggers and workflows "
                       "that use it unless force=true")
def delete_function(name: str, request: Request, force: bool = False) -> dict[str, Any]:
    platform = _platform(request)
    broken = service.delete_function(platform, name, check_unused=dependents.guard(platform, force=force))
    return {"deleted": name, **({"broken": broken} if broken else {})}


@router.post("/{name}/invocations", response_model=Invocation,
             summary="Invoke: sync waits and returns the finished record (200 even when the "
                     "function failed); async queues it (202)")
def invoke_function(name: str, body: InvokeIn, request: Request, response: Response) -> dict[str, Any]:
    platform = _platform(request)
    function = platform.functions.get(name)
    record = platform.functions.enqueue(name, service.check_event(body.event), source=body.source or "api")
    dispatcher = _dispatcher(request)
    if dispatcher is not None:
        dispatcher.run_now(record["id"])
        if body.mode == "sync":
            record = dispatcher.wait(record["id"], float(function["timeout_s"]) + SYNC_GRACE_S)
    if record["status"] not in INVOCATION_TERMINAL:
        response.status_code = 202
    return record


@router.get("/{name}/invocations", response_model=list[Invocation], summary="Invocations, newest first")
def list_invocations(name: str, request: Request, status: Status | None = None,
                     limit: Annotated[int, Query(ge=1, le=1000)] = 50,
                     offset: Annotated[int, Query(ge=0, description="skip this many (paging)")] = 0,
                     ) -> list[dict[str, Any]]:
    platform = _platform(request)
    records = platform.functions.invocations(function=name, status=status, limit=limit, offset=offset)
    if not records:
        platform.functions.get(name)  # 404 for an unknown function (history of a deleted one still shows)
    return records


@router.get("/{name}/invocations/{invocation_id}", response_model=Invocation, summary="One invocation")
def get_invocation(name: str, invocation_id: str, request: Request) -> dict[str, Any]:
    record = _platform(request).functions.invocation(invocation_id)
    if record["function"] != name:
        from loopml.core.errors import NotFound

        raise NotFound(f"invocation {invocation_id!r} of function {name!r} not found")
    return record


@router.get("/{name}/logs", response_model=list[InvocationLogs],
            summary="The logs of the latest invocations, newest first")
def function_logs(name: str, request: Request,
                  limit: Annotated[int, Query(ge=1, le=100)] = 5) -> list[dict[str, Any]]:
    return [{k: r[k] for k in InvocationLogs.model_fields} for r in list_invocations(name, request, None, limit)]
