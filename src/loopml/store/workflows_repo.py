"""Workflows (ASL definitions), their executions and execution histories.

An execution row holds the engine's state and what it waits on (``pending``); ``save`` writes
them together with the new history events in ONE transaction, conditional on ``revision``
(optimistic lock: a concurrent writer makes it return False, the caller reloads and retries).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from loopml.core.errors import Conflict, NotFound
from loopml.core.jobstatus import (EXEC_ABORTED, EXEC_FAILED, EXEC_PENDING, EXEC_RUNNING, EXEC_SUCCEEDED,
                                   EXEC_TIMED_OUT, EXECUTION_ACTIVE, EXECUTION_TERMINAL)
from loopml.core.timeutil import iso, parse_iso, utcnow
from loopml.store import tables as t
from loopml.store.automation_rows import pending_execution
from loopml.store.db import MetadataStore
from loopml.store.names import missing

PENDING, RUNNING, SUCCEEDED, FAILED, TIMED_OUT, ABORTED = (
    EXEC_PENDING, EXEC_RUNNING, EXEC_SUCCEEDED, EXEC_FAILED, EXEC_TIMED_OUT, EXEC_ABORTED)
TERMINAL, ACTIVE = EXECUTION_TERMINAL, EXECUTION_ACTIVE


def workflow_record(w: t.Workflow) -> dict[str, Any]:
    return {"name": w.name, "definition": w.definition, "source": w.source, "description": w.description,
            "created_at": iso(w.created_at), "updated_at": iso(w.updated_at)}


def execution_record(e: t.WorkflowExecution) -> dict[str, Any]:
    state = e.state or {}
    return {"id": e.id, "workflow": e.workflow, "status": e.status, "input": e.input, "output": e.output,
            "error": e.error, "cause": e.cause, "current_state": state.get("current") if e.status == RUNNING else None,
            # the state the execution was in when it failed or timed out (a Parallel/Map names itself)
            "failed_state": state.get("current") if e.status in (FAILED, TIMED_OUT) else None,
            "stop_requested": e.stop_requested, "source": e.source, "revision": e.revision,
            "next_due": iso(e.next_due), "created_at": iso(e.created_at), "started_at": iso(e.started_at),
            "ended_at": iso(e.ended_at), "updated_at": iso(e.updated_at)}


def event_record(ev: t.ExecutionEvent) -> dict[str, Any]:
    return {"seq": ev.seq, "type": ev.type, "state": ev.state, "details": ev.details, "at": iso(ev.at)}


def _as_datetime(value: datetime | str | None) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return parse_iso(value)


class WorkflowRepo:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    # -- workflows ---------------------------------------------------------------------------
    def create(self, name: str, definition: dict[str, Any], *, source: str | None = None,
               description: str | None = None, replace: bool = False) -> dict[str, Any]:
        """A new workflow (Conflict if it exists, unless ``replace``: then its definition changes;
        executions already started keep their snapshot)."""
        now = utcnow()
        try:
            with self.store.session() as s:
                row = s.get(t.Workflow, name, with_for_update=True)
                if row is not None and not replace:
                    raise Conflict(f"workflow {name!r} already exists; use --replace to change its definition")
                if row is None:
                    row = t.Workflow(name=name, created_at=now)
                    s.add(row)
                row.definition, row.source, row.description, row.updated_at = definition, source, description, now
                s.flush()
                return workflow_record(row)
        except IntegrityError:
            raise Conflict(f"workflow {name!r} already exists") from None

    def get(self, name: str) -> dict[str, Any]:
        with self.store.session() as s:
            row = s.get(t.Workflow, name)
            if row is None:
                raise missing(s, t.Workflow, "workflow", name)
            return workflow_record(row)

    def list(self) -> list[dict[str, Any]]:
        with self.store.session() as s:
            return [workflow_record(w) for w in s.execute(select(t.Workflow).order_by(t.Workflow.name)).scalars()]

    def delete(self, name: str) -> None:
        with self.store.session() as s:
            row = s.get(t.Workflow, name)
            if row is None:
                raise missing(s, t.Workflow, "workflow", name)
            s.delete(row)

    # -- executions ---------------------------------------------------------------------------
    def start(self, workflow: str, input: Any, *, name: str | None = None,
              source: str | None = None) -> dict[str, Any]:
        """A PENDING execution of ``workflow`` (the runner starts it at its next tick)."""
        try:
            with self.store.session() as s:
                wf = s.get(t.Workflow, workflow)
                if wf is None:
                    raise missing(s, t.Workflow, "workflow", workflow)
                if name is not None and s.get(t.WorkflowExecution, name) is not None:
                    raise Conflict(f"execution {name!r} already exists; executions names are unique")
                row = pending_execution(wf, input, source=source, execution_id=name)
                s.add(row)
                s.flush()
                return execution_record(row)
        except IntegrityError:
            raise Conflict(f"execution {name!r} already exists") from None

    def _execution(self, s, execution_id: str) -> t.WorkflowExecution:
        row = s.get(t.WorkflowExecution, execution_id)
        if row is None:
            raise NotFound(f"execution {execution_id!r} not found")
        return row

    def execution(self, execution_id: str) -> dict[str, Any]:
        with self.store.session() as s:
            return execution_record(self._execution(s, execution_id))

    def load(self, execution_id: str) -> dict[str, Any]:
        """The record plus what the runner needs: definition, state, pending."""
        with self.store.session() as s:
            row = self._execution(s, execution_id)
            return {**execution_record(row), "definition": row.definition, "state": row.state,
                    "pending": row.pending}

    def executions(self, workflow: str | None = None, status: str | None = None,
                   limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """Newest first; ``offset`` skips that many (paging: the id breaks ties of one instant)."""
        with self.store.session() as s:
            q = (select(t.WorkflowExecution)
                 .order_by(t.WorkflowExecution.created_at.desc(), t.WorkflowExecution.id.desc())
                 .limit(limit).offset(offset))
            if workflow:
                q = q.where(t.WorkflowExecution.workflow == workflow)
            if status:
                q = q.where(t.WorkflowExecution.status == status.upper())
            return [execution_record(e) for e in s.execute(q).scalars()]

    def active(self) -> list[dict[str, Any]]:
        """The runner's cheap scan: id, status, stop flag, next due time and pending work."""
        with self.store.session() as s:
            rows = s.execute(select(t.WorkflowExecution.id, t.WorkflowExecution.status,
                                    t.WorkflowExecution.stop_requested, t.WorkflowExecution.next_due,
                                    t.WorkflowExecution.pending)
                             .where(t.WorkflowExecution.status.in_(ACTIVE))
                             .order_by(t.WorkflowExecution.created_at)).all()
            return [{"id": i, "status": st, "stop_requested": stop, "pending": p,  # SQLite: naive UTC
                     "next_due": due.replace(tzinfo=timezone.utc) if due and due.tzinfo is None else due}
                    for i, st, stop, due, p in rows]

    def history(self, execution_id: str) -> list[dict[str, Any]]:
        with self.store.session() as s:
            self._execution(s, execution_id)
            q = (select(t.ExecutionEvent).where(t.ExecutionEvent.execution_id == execution_id)
                 .order_by(t.ExecutionEvent.seq))
            return [event_record(ev) for ev in s.execute(q).scalars()]

    def save(self, execution_id: str, *, revision: int, state: dict[str, Any] | None,
             pending: dict[str, Any] | None, status: str, next_due: datetime | None = None,
             output: Any = None, error: str | None = None, cause: str | None = None,
             started_at: datetime | None = None, ended_at: datetime | None = None,
             events: list[dict[str, Any]] | None = None) -> bool:
        """Write the state, pending work, status and the NEW events (seq continues) in one
        transaction, only if the row is still at ``revision``. Returns whether it applied.
        An event is ``{"type", "state", "details", "at"}``."""
        now = utcnow()
        values: dict[str, Any] = {"state": state, "pending": pending, "status": status, "next_due": next_due,
                                  "output": output, "error": error, "cause": cause, "revision": revision + 1,
                                  "updated_at": now}
        if started_at is not None:
            values["started_at"] = started_at
        if ended_at is not None:
            values["ended_at"] = ended_at
        with self.store.session() as s:
            moved = s.execute(update(t.WorkflowExecution)
                              .where(t.WorkflowExecution.id == execution_id,
                                     t.WorkflowExecution.revision == revision)
                              .values(**values)).rowcount
            if not moved:
                return False
            if events:
                last = s.execute(select(func.max(t.ExecutionEvent.seq))
                                 .where(t.ExecutionEvent.execution_id == execution_id)).scalar() or 0
                s.execute(insert(t.ExecutionEvent), [
                    {"execution_id": execution_id, "seq": last + i, "type": ev["type"],
                     "state": ev.get("state"), "details": ev.get("details"),
                     "at": _as_datetime(ev.get("at")) or now}
                    for i, ev in enumerate(events, start=1)])
            return True

    def request_stop(self, execution_id: str) -> dict[str, Any]:
        """Ask the runner to stop the execution (Conflict when it has already ended)."""
        with self.store.session() as s:
            row = s.get(t.WorkflowExecution, execution_id, with_for_update=True)
            if row is None:
                raise NotFound(f"execution {execution_id!r} not found")
            if row.status in TERMINAL:
                raise Conflict(f"execution {execution_id!r} has already ended ({row.status})")
            row.stop_requested = True
            s.flush()
            return execution_record(row)

    # -- function invocations started by loopml:function:NAME tasks ---------------------------
    def delete_executions(self, workflow: str) -> int:  # used by tests and housekeeping
        with self.store.session() as s:
            return s.execute(delete(t.WorkflowExecution).where(t.WorkflowExecution.workflow == workflow)).rowcount


