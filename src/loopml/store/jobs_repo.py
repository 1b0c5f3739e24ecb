"""Jobs: spec, status transitions (with their history), progress, metrics and logs."""

from __future__ import annotations

import uuid
from typing import Any, Iterable

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from loopml.core.errors import Conflict, InvalidInput, NotFound
from loopml.core.jobkinds import JOB_KINDS
from loopml.core.jobstatus import CANCELLED, FAILED, QUEUED, RUNNING, TERMINAL
from loopml.core.timeutil import iso, utcnow
from loopml.store import records
from loopml.store import tables as t
from loopml.store.db import MetadataStore



def new_job_id() -> str:
    return "job-" + uuid.uuid4().hex[:10]


class JobRepo:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    def create(self, kind: str, spec: dict[str, Any], job_id: str | None = None) -> dict[str, Any]:
        """Queue a job; a caller-chosen ``job_id`` that already exists raises Conflict (exactly-once dispatch)."""
        if kind not in JOB_KINDS:  # a new kind is a row of core.jobkinds.KINDS, so list filters know it
            raise InvalidInput(f"unknown job kind {kind!r}; add it to loopml.core.jobkinds.KINDS")
        try:
            with self.store.session() as s:
                job = t.Job(id=job_id or new_job_id(), kind=kind, status=QUEUED, spec=spec)
                s.add(job)
                s.flush()
                s.add(t.JobEvent(job_id=job.id, status=QUEUED, at=job.created_at))
                return records.job(job)
        except IntegrityError:
            if job_id is None:
                raise
            raise Conflict(f"job {job_id!r} already exists", job_id=job_id) from None

    def get(self, job_id: str) -> dict[str, Any]:
        with self.store.session() as s:
            job = s.get(t.Job, job_id)
            if job is None:
                raise NotFound(f"job {job_id!r} not found")
            return records.job(job)

    def list(self, *, status: str | None = None, kind: str | None = None, limit: int = 100,
             offset: int = 0) -> list[dict[str, Any]]:
        with self.store.session() as s:
            # id breaks ties: pages must not repeat or skip jobs created in the same instant
            q = select(t.Job).order_by(t.Job.created_at.desc(), t.Job.id.desc()).limit(limit).offset(offset)
            if status:
                q = q.where(t.Job.status == status)
            if kind:
                q = q.where(t.Job.kind == kind)
            return [records.job(j) for j in s.execute(q).scalars()]

    def ids_with_status(self, *statuses: str) -> list[str]:
        with self.store.session() as s:
            return list(s.execute(select(t.Job.id).where(t.Job.status.in_(statuses))
                                  .order_by(t.Job.created_at)).scalars())

    def transition(self, job_id: str, to: str, *, expect: Iterable[str], reason: str | None = None,
                   **fields: Any) -> bool:
        """Move a job to ``to`` only if it is in one of ``expect``; record the event. Returns moved?"""
        now = utcnow()
        # job.reason explains a failure or cancellation; every transition's note goes to its event.
        values: dict[str, Any] = {"status": to, "reason": reason if to in (FAILED, CANCELLED) else None, **fields}
        if to == RUNNING:
            values.setdefault("started_at", now)
            values.setdefault("heartbeat_at", now)
        if to in TERMINAL:
            values["ended_at"] = now
        with self.store.session() as s:
            moved = s.execute(update(t.Job).where(t.Job.id == job_id, t.Job.status.in_(list(expect)))
                              .values(**values)).rowcount
            if moved:
                s.add(t.JobEvent(job_id=job_id, status=to, message=reason, at=now))
            return bool(moved)

    def heartbeat(self, job_id: str, progress: dict[str, Any] | None = None) -> bool:
        """Refresh the heartbeat (and progress); returns whether cancellation was requested."""
        values: dict[str, Any] = {"heartbeat_at": utcnow()}
        if progress is not None:
            values["progress"] = progress
        with self.store.session() as s:
            s.execute(update(t.Job).where(t.Job.id == job_id).values(**values))
            return bool(s.execute(select(t.Job.cancel_requested).where(t.Job.id == job_id)).scalar())

    def set_fields(self, job_id: str, **fields: Any) -> None:
        with self.store.session() as s:
            s.execute(update(t.Job).where(t.Job.id == job_id).values(**fields))

    def note(self, job_id: str, message: str, *, expect: Iterable[str] = (RUNNING,), **fields: Any) -> bool:
        """An event without a status change (where a worker runs, a retry), with ``fields`` set in
        the same transaction; only while the job is in ``expect``. Returns whether it was."""
        with self.store.session() as s:
            job = s.execute(select(t.Job).where(t.Job.id == job_id).with_for_update()).scalar_one_or_none()
            if job is None or job.status not in list(expect):
                return False
            for key, value in fields.items():
                setattr(job, key, value)
            s.add(t.JobEvent(job_id=job_id, status=job.status, message=message, at=utcnow()))
            return True

    def request_cancel(self, job_id: str) -> dict[str, Any]:
        self.get(job_id)
        if not self.transition(job_id, CANCELLED, expect=[QUEUED], reason="cancelled before it started"):
            self.set_fields(job_id, cancel_requested=True)
        return self.get(job_id)

    def events(self, job_id: str) -> list[dict[str, Any]]:
        with self.store.session() as s:
            rows = s.execute(select(t.JobEvent).where(t.JobEvent.job_id == job_id).order_by(t.JobEvent.id)).scalars()
            return [{"status": e.status, "at": iso(e.at), "message": e.message} for e in rows]

    def add_metrics(self, job_id: str, epoch: int, metrics: dict[str, Any]) -> None:
        with self.store.session() as s:
            s.execute(t.JobMetric.__table__.delete().where(t.JobMetric.job_id == job_id, t.JobMetric.epoch == epoch))
            s.add(t.JobMetric(job_id=job_id, epoch=epoch, metrics=metrics))

    def metrics(self, job_id: str) -> list[dict[str, Any]]:
        with self.store.session() as s:
            rows = s.execute(select(t.JobMetric).where(t.JobMetric.job_id == job_id).order_by(t.JobMetric.epoch))
            return [{"epoch": m.epoch, **m.metrics} for m in rows.scalars()]

    def append_logs(self, job_id: str, lines: list[str]) -> None:
        if not lines:
            return
        now = utcnow()
        with self.store.session() as s:
            s.add_all([t.JobLog(job_id=job_id, at=now, text=line) for line in lines])

    def logs(self, job_id: str, after: int = 0, limit: int = 10_000) -> list[dict[str, Any]]:
        with self.store.session() as s:
            rows = s.execute(select(t.JobLog).where(t.JobLog.job_id == job_id, t.JobLog.id > after)
                             .order_by(t.JobLog.id).limit(limit)).scalars()
            return [{"id": r.id, "at": iso(r.at), "text": r.text} for r in rows]
