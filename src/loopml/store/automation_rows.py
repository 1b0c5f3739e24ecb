"""The rows every starter of work creates the same way: a queued function invocation and a
pending workflow execution. Used by the functions and workflows repositories and by triggers,
which add them in the same transaction as the firing that started them (exactly once)."""

from __future__ import annotations

import uuid
from typing import Any

from loopml.core.jobstatus import INVOCATION_STATUSES
from loopml.core.timeutil import utcnow
from loopml.store import tables as t

INVOCATION_QUEUED = INVOCATION_STATUSES[0]
EXECUTION_PENDING = "PENDING"


def new_invocation_id() -> str:
    return "inv-" + uuid.uuid4().hex[:16]


def new_execution_id(workflow: str) -> str:
    return f"{workflow}-{utcnow():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"


def queued_invocation(function: str, event: Any, *, source: str | None,
                      invocation_id: str | None = None) -> t.FunctionInvocation:
    """A queued invocation of ``function``; the control plane's FunctionDispatcher runs it."""
    return t.FunctionInvocation(id=invocation_id or new_invocation_id(), function=function,
                                status=INVOCATION_QUEUED, source=source, event=event, created_at=utcnow())


def pending_execution(workflow: t.Workflow, input: Any, *, source: str | None,
                      execution_id: str | None = None) -> t.WorkflowExecution:
    """A pending execution of ``workflow`` (its definition snapshotted now); the control plane's
    WorkflowRunner starts it."""
    now = utcnow()
    return t.WorkflowExecution(id=execution_id or new_execution_id(workflow.name), workflow=workflow.name,
                               status=EXECUTION_PENDING, definition=workflow.definition, input=input,
                               revision=0, stop_requested=False, source=source, created_at=now,
                               updated_at=now)
