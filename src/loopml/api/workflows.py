"""/workflows and /executions: Step Functions-style state machines and their runs.

Routes write definitions and PENDING executions (``loopml.workflows.service``); the control
plane's WorkflowRunner starts and advances them, persisting every event (``/history``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from loopml.api.auth import principal_of
from loopml.core.errors import Forbidden
from loopml.platform import Platform
from loopml.workflows import service

router = APIRouter(prefix="/workflows", tags=["workflows"])
executions_router = APIRouter(prefix="/executions", tags=["workflows"])


class WorkflowIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(description="letters, digits, '-' and '_', at most 63 characters", examples=["retrain"])
    definition: dict[str, Any] | None = Field(None, description="Amazon States Language, as an object")
    source: str | None = Field(None, description="Amazon States Language as JSON or YAML text")
    description: str | None = None
    replace: bool = Field(False, description="replace the definition of an existing workflow")
    template: str | None = Field(None, description="a built-in template (e.g. 'retrain') instead of a definition")
    template_params: dict[str, Any] | None = Field(None, description="the template's parameters")


class Workflow(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    definition: dict[str, Any]
    source: str | None = Field(None, description="the definition as written (or rendered as YAML)")
    description: str | None = None
    created_at: str | None = None
    updated_at: str | None = None


class ExecutionIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: Any = Field(None, description="the execution's input (JSON; default {})")
    name: str | None = Field(None, description="the execution id (unique); default WORKFLOW-TIME-RANDOM")


class ExecutionRecord(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    workflow: str
    status: str = Field(description="PENDING | RUNNING | SUCCEEDED | FAILED | TIMED_OUT | ABORTED")
    input: Any = None
    output: Any = None
    error: str | None = None
    cause: str | None = None
    current_state: str | None = None
    failed_state: str | None = Field(None, description="FAILED / TIMED_OUT: the state it failed in")
    stop_requested: bool = False
    created_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None


class HistoryEvent(BaseModel):
    seq: int
    type: str
    state: str | None = None
    details: Any = None
    at: str | None = None


class Deleted(BaseModel):
    deleted: str
    broken: list[dict[str, Any]] = Field([], description="with force: the triggers now broken")


def _platform(request: Request) -> Platform:
    return request.app.state.platform


@router.post("", response_model=Workflow, status_code=201, summary="Create (or replace) a workflow")
def create_workflow(body: WorkflowIn, request: Request) -> dict[str, Any]:
    principal = principal_of(request)

    def may(state: str, needed: str) -> None:
        # its Tasks run with the control plane's rights whoever starts it: its maker must hold them
        if principal is not None and not principal.allows(needed):
            raise Forbidden(f"{principal.describe()} lacks the permission {needed} that the Task of state "
                            f"{state!r} needs: a workflow may do only what its maker may do")
    return service.create_workflow(_platform(request), body.name, definition=body.definition, source=body.source,
                                   description=body.description, replace=body.replace, template=body.template,
                                   template_params=body.template_params, may=may)


@router.get("", response_model=list[Workflow], summary="Workflows, by name")
def list_workflows(request: Request) -> list[dict[str, Any]]:
    return _platform(request).workflows.list()


@router.get("/{name}", response_model=Workflow, summary="One workflow and its definition")
def get_workflow(name: str, request: Request) -> dict[str, Any]:
    return _platform(request).workflows.get(name)


@router.delete("/{name}", response_model=Deleted, response_model_exclude_unset=True,
               summary="Delete a workflow (running executions continue on their snapshot); 409 listing "
                       "the triggers that start it unless force=true")
def delete_workflow(name: str, request: Request, force: bool = False) -> dict[str, Any]:
    broken = service.delete_workflow(_platform(request), name, force=force)
    return {"deleted": name, **({"broken": broken} if broken else {})}


@router.post("/{name}/executions", response_model=ExecutionRecord, status_code=201,
             summary="Start an execution (PENDING until the control plane picks it up)")
def start_execution(name: str, request: Request, body: ExecutionIn | None = None) -> dict[str, Any]:
    body = body or ExecutionIn()
    return service.start_execution(_platform(request), name, body.input, name=body.name)


@executions_router.get("", response_model=list[ExecutionRecord], summary="Executions, newest first")
def list_executions(request: Request, workflow: str | None = None, status: str | None = None,
                    limit: int = 50,
                    offset: int = Query(0, ge=0, description="skip this many (paging)")) -> list[dict[str, Any]]:
    return _platform(request).workflows.executions(workflow=workflow, status=status, limit=max(1, min(limit, 1000)),
                                                   offset=offset)


@executions_router.get("/{execution_id}", response_model=ExecutionRecord, summary="One execution")
def get_execution(execution_id: str, request: Request) -> dict[str, Any]:
    return _platform(request).workflows.execution(execution_id)


@executions_router.get("/{execution_id}/history", response_model=list[HistoryEvent],
                       summary="The execution's events, in order")
def execution_history(execution_id: str, request: Request) -> list[dict[str, Any]]:
    return _platform(request).workflows.history(execution_id)


@executions_router.post("/{execution_id}/stop", response_model=ExecutionRecord,
                        summary="Stop an execution (ABORTED at the next tick; running jobs are cancelled)")
def stop_execution(execution_id: str, request: Request) -> dict[str, Any]:
    return _platform(request).workflows.request_stop(execution_id)
