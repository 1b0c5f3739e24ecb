"""Functions and their invocations (tables ``functions``, ``function_invocations``).

Writers: the API (create/replace/delete functions, enqueue invocations), triggers and workflows
(enqueue, through ``automation_rows.queued_invocation``) and the control plane's
FunctionDispatcher (every status change, each one a compare-and-set on the current status so
an invocation is never run twice nor finished twice).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Iterable

from sqlalchemy import delete, or_, select, update
from sqlalchemy.exc import IntegrityError

from loopml.core.errors import Conflict, InvalidInput, NotFound
from loopml.core.jobstatus import INVOCATION_STATUSES, INVOCATION_TERMINAL
from loopml.core.timeutil import iso, utcnow
from loopml.store import tables as t
from loopml.store.automation_rows import INVOCATION_QUEUED, queued_invocation
from loopml.store.db import MetadataStore
from loopml.store.names import missing

QUEUED, RUNNING, SUCCEEDED, FAILED = INVOCATION_QUEUED, *INVOCATION_STATUSES[1:]
STATUSES, TERMINAL = INVOCATION_STATUSES, INVOCATION_TERMINAL


def function_record(f: t.Function) -> dict[str, Any]:
    return {"name": f.name, "handler": f.handler, "code_key": f.code_key, "code_sha256": f.code_sha256,
            "timeout_s": f.timeout_s, "memory_mb": f.memory_mb, "environment": dict(f.environment or {}),
            "description": f.description, "permissions": list(f.permissions or []),
            "created_at": iso(f.created_at), "updated_at": iso(f.updated_at)}


def invocation_record(i: t.FunctionInvocation) -> dict[str, Any]:
    return {"id": i.id, "function": i.function, "status": i.status, "source": i.source, "event": i.event,
            "result": i.result, "error_type": i.error_type, "error_message": i.error_message, "logs": i.logs,
            "duration_ms": i.duration_ms, "max_memory_mb": i.max_memory_mb, "worker_host": i.worker_host,
            "worker_pid": i.worker_pid, "created_at": iso(i.created_at), "started_at": iso(i.started_at),
            "ended_at": iso(i.ended_at), "attempt": i.attempt or 1, "not_before": iso(i.not_before)}


class FunctionRepo:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    # -- functions ----------------------------------------------------------------------------
    def create(self, name: str, *, handler: str, code_key: str, code_sha256: str, timeout_s: float,
               memory_mb: int, environment: dict[str, str] | None = None, description: str | None = None,
               replace: bool = False, permissions: list[str] | None = None) -> dict[str, Any]:
        """A new function, or (``replace=True``) new code and configuration for an existing one."""
        fields = {"handler": handler, "code_key": code_key, "code_sha256": code_sha256,
                  "timeout_s": float(timeout_s), "memory_mb": int(memory_mb),
                  "environment": dict(environment or {}), "description": description,
                  "permissions": list(permissions or [])}
        try:
            with self.store.session() as s:
                now = utcnow()
                row = s.get(t.Function, name, with_for_update=True)
                if row is not None and not replace:
                    raise Conflict(f"function {name!r} already exists; use --replace (or "
                                   "`loopml functions update`) to change it")
                if row is None:
                    row = t.Function(name=name, created_at=now, updated_at=now, **fields)
                    s.add(row)
                else:
                    for key, value in fields.items():
                        setattr(row, key, value)
                    row.updated_at = now
                s.flush()
                return function_record(row)
        except IntegrityError:
            raise Conflict(f"function {name!r} already exists") from None

    def update(self, name: str, fields: dict[str, Any], env_patch: dict[str, str | None]) -> dict[str, Any]:
        """Set ``fields`` and merge ``env_patch`` (a None value removes the variable), in one
        transaction on the locked row: what is not given keeps its value."""
        with self.store.session() as s:
            row = s.get(t.Function, name, with_for_update=True)
            if row is None:
                raise missing(s, t.Function, "function", name)
            for key, value in fields.items():
                setattr(row, key, value)
            if env_patch:
                env = dict(row.environment or {})
                for key, value in env_patch.items():
                    if value is None:
                        if key not in env:
                            raise InvalidInput(f"environment variable {key} is not set on function {name!r} "
                                               f"(it has: {', '.join(sorted(env)) or 'none'})")
                        env.pop(key)
                    else:
                        env[key] = value
                row.environment = env
            row.updated_at = utcnow()
            s.flush()
            return function_record(row)

    def get(self, name: str) -> dict[str, Any]:
        with self.store.session() as s:
            row = s.get(t.Function, name)
            if row is None:
                raise missing(s, t.Function, "function", name)
            return function_record(row)

    def list(self) -> list[dict[str, Any]]:
        with self.store.session() as s:
            return [function_record(f) for f in s.execute(select(t.Function).order_by(t.Function.name)).scalars()]

    def delete(self, name: str) -> dict[str, Any]:
        """Remove the function (its invocation history stays). Returns the removed record."""
        with self.store.session() as s:
            row = s.get(t.Function, name)
            if row is None:
                raise missing(s, t.Function, "function", name)
            record = function_record(row)
            s.delete(row)
            return record

    # -- invocations --------------------------------------------------------------------------
    def enqueue(self, name: str, event: Any, *, source: str | None,
                invocation_id: str | None = None) -> dict[str, Any]:
        """A queued invocation of function ``name`` (NotFound when there is no such function)."""
        try:
            with self.store.session() as s:
                if s.get(t.Function, name) is None:
                    raise missing(s, t.Function, "function", name)
                row = queued_invocation(name, event, source=source, invocation_id=invocation_id)
                s.add(row)
                s.flush()
                return invocation_record(row)
        except IntegrityError:
            raise Conflict(f"invocation {invocation_id!r} already exists") from None

    def invocation(self, invocation_id: str) -> dict[str, Any]:
        with self.store.session() as s:
            row = s.get(t.FunctionInvocation, invocation_id)
            if row is None:
                raise NotFound(f"invocation {invocation_id!r} not found")
            return invocation_record(row)

    def invocations(self, function: str | None = None, status: str | None = None,
                    limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """Newest first; ``offset`` skips that many (paging)."""
        with self.store.session() as s:
            q = select(t.FunctionInvocation).order_by(t.FunctionInvocation.created_at.desc(),
                                                      t.FunctionInvocation.id.desc()).limit(limit).offset(offset)
            if function is not None:
                q = q.where(t.FunctionInvocation.function == function)
            if status is not None:
                q = q.where(t.FunctionInvocation.status == status)
            return [invocation_record(i) for i in s.execute(q).scalars()]

    def ids_with_status(self, status: str) -> list[str]:
        """Oldest first (the dispatcher's queue order)."""
        with self.store.session() as s:
            return list(s.execute(select(t.FunctionInvocation.id)
                                  .where(t.FunctionInvocation.status == status)
                                  .order_by(t.FunctionInvocation.created_at, t.FunctionInvocation.id)).scalars())

    def runnable_ids(self, now: datetime | None = None) -> list[str]:
        """Queued invocations that may start now (a retry waits out its backoff), oldest first."""
        now = now or utcnow()
        with self.store.session() as s:
            return list(s.execute(select(t.FunctionInvocation.id)
                                  .where(t.FunctionInvocation.status == QUEUED,
                                         or_(t.FunctionInvocation.not_before.is_(None),
                                             t.FunctionInvocation.not_before <= now))
                                  .order_by(t.FunctionInvocation.created_at, t.FunctionInvocation.id)).scalars())

    def retry(self, invocation_id: str, *, not_before: datetime, error_type: str, error_message: str) -> bool:
        """Running → queued again for its next attempt (not before ``not_before``); False when it
        was not running (someone else recorded it meanwhile)."""
        with self.store.session() as s:
            return bool(s.execute(update(t.FunctionInvocation)
                                  .where(t.FunctionInvocation.id == invocation_id,
                                         t.FunctionInvocation.status == RUNNING)
                                  .values(status=QUEUED, attempt=t.FunctionInvocation.attempt + 1,
                                          not_before=not_before, worker_pid=None, worker_host=None,
                                          started_at=None, error_type=error_type,
                                          error_message=error_message)).rowcount)

    def transition(self, invocation_id: str, to: str, *, expect: Iterable[str], **fields: Any) -> bool:
        """Move an invocation to ``to`` only if it is in one of ``expect`` (and set ``fields``).
        ``started_at`` / ``ended_at`` are stamped on entering running / a terminal status."""
        now = utcnow()
        values: dict[str, Any] = {"status": to, **fields}
        if to == RUNNING:
            values.setdefault("started_at", now)
        if to in TERMINAL:
            values.setdefault("ended_at", now)
        with self.store.session() as s:
            return bool(s.execute(update(t.FunctionInvocation)
                                  .where(t.FunctionInvocation.id == invocation_id,
                                         t.FunctionInvocation.status.in_(list(expect)))
                                  .values(**values)).rowcount)

    def set_fields(self, invocation_id: str, **fields: Any) -> None:
        """Bookkeeping that does not change the status (e.g. the worker pid once it started)."""
        with self.store.session() as s:
            s.execute(update(t.FunctionInvocation).where(t.FunctionInvocation.id == invocation_id)
                      .values(**fields))

    def delete_invocations(self, function: str) -> int:
        """Forget a function's finished invocations (its history). Returns how many."""
        with self.store.session() as s:
            return s.execute(delete(t.FunctionInvocation)
                             .where(t.FunctionInvocation.function == function,
                                    t.FunctionInvocation.status.in_(list(TERMINAL)))).rowcount
