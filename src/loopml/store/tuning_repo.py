"""Tuning jobs and their trials: the whole state of a hyperparameter search.

Nothing about a search lives only in memory: the supervisor rebuilds its Optuna study from these
rows whenever the control plane (re)starts. A trial row is written before its training job is
submitted (the job id is derived from the trial), so a crash in between re-submits the same job.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from loopml.core.errors import Conflict, NotFound
from loopml.core.jobstatus import (TRIAL_RUNNING, TUNING_ACTIVE, TUNING_RUNNING, TUNING_STOPPING,
                                   TUNING_TERMINAL)
from loopml.core.timeutil import iso, utcnow
from loopml.store import tables as t
from loopml.store.db import MetadataStore
from loopml.store.names import missing


def tuning_record(row: t.TuningJob) -> dict[str, Any]:
    return {"name": row.name, "status": row.status, "spec": row.spec, "reason": row.reason, "result": row.result,
            "stop_requested": row.stop_requested, "created_at": iso(row.created_at), "ended_at": iso(row.ended_at)}


def trial_record(row: t.TuningTrial) -> dict[str, Any]:
    return {"number": row.number, "job_id": row.job_id, "params": row.params, "state": row.state,
            "value": row.value, "intermediate": row.intermediate or {}, "system_attrs": row.system_attrs or {},
            "created_at": iso(row.created_at), "ended_at": iso(row.ended_at)}


class TuningRepo:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    # -- tuning jobs ------------------------------------------------------------------------------
    def create(self, name: str, spec: dict[str, Any]) -> dict[str, Any]:
        try:
            with self.store.session() as s:
                row = t.TuningJob(name=name, status=TUNING_RUNNING, spec=spec, stop_requested=False)
                s.add(row)
                s.flush()
                return tuning_record(row)
        except IntegrityError:
            raise Conflict(f"tuning job {name!r} already exists", name=name) from None

    def get(self, name: str) -> dict[str, Any]:
        with self.store.session() as s:
            row = s.get(t.TuningJob, name)
            if row is None:
                raise missing(s, t.TuningJob, "tuning job", name)
            return tuning_record(row)

    def list(self, *, status: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        with self.store.session() as s:
            q = select(t.TuningJob).order_by(t.TuningJob.created_at.desc()).limit(limit)
            if status:
                q = q.where(t.TuningJob.status == status)
            return [tuning_record(r) for r in s.execute(q).scalars()]

    def active_names(self) -> list[str]:
        with self.store.session() as s:
            return list(s.execute(select(t.TuningJob.name).where(t.TuningJob.status.in_(TUNING_ACTIVE))
                                  .order_by(t.TuningJob.created_at)).scalars())

    def request_stop(self, name: str) -> dict[str, Any]:
        """running → stopping (the supervisor stops its trials and ends it); an ended job is left as it is."""
        self.get(name)
        with self.store.session() as s:
            s.execute(update(t.TuningJob).where(t.TuningJob.name == name, t.TuningJob.status == TUNING_RUNNING)
                      .values(status=TUNING_STOPPING, stop_requested=True))
        return self.get(name)

    def delete(self, name: str) -> None:
        """An ended tuning job and its trial rows, in one transaction; Conflict while it is active (the
        supervisor would advance it). Trial jobs are not touched: they are ordinary jobs."""
        with self.store.session() as s:
            row = s.execute(select(t.TuningJob).where(t.TuningJob.name == name).with_for_update()).scalar_one_or_none()
            if row is None:
                raise missing(s, t.TuningJob, "tuning job", name)
            if row.status in TUNING_ACTIVE:
                raise Conflict(f"tuning job {name!r} is {row.status}; stop it first (loopml tuning stop {name}) "
                               "and delete it once it has ended", name=name)
            s.execute(delete(t.TuningTrial).where(t.TuningTrial.tuning_name == name))
            s.delete(row)

    def finish(self, name: str, status: str, *, reason: str | None = None,
               result: dict[str, Any] | None = None) -> bool:
        """An active job → its terminal ``status``; False when it had already ended."""
        if status not in TUNING_TERMINAL:
            raise ValueError(f"{status!r} is not a terminal tuning status")
        with self.store.session() as s:
            return bool(s.execute(update(t.TuningJob)
                                  .where(t.TuningJob.name == name, t.TuningJob.status.in_(TUNING_ACTIVE))
                                  .values(status=status, reason=reason, result=result, ended_at=utcnow())).rowcount)

    def set_result(self, name: str, result: dict[str, Any]) -> None:
        """The running summary (best so far) while the search goes on."""
        with self.store.session() as s:
            s.execute(update(t.TuningJob).where(t.TuningJob.name == name).values(result=result))

    # -- trials ---------------------------------------------------------------------------------
    def add_trial(self, name: str, number: int, job_id: str, params: dict[str, Any],
                  system_attrs: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            with self.store.session() as s:
                if s.get(t.TuningJob, name) is None:
                    raise NotFound(f"tuning job {name!r} not found")
                row = t.TuningTrial(tuning_name=name, number=number, job_id=job_id, params=params,
                                    state=TRIAL_RUNNING, intermediate={}, system_attrs=system_attrs or {})
                s.add(row)
                s.flush()
                return trial_record(row)
        except IntegrityError:
            raise Conflict(f"tuning job {name!r} already has trial {number}") from None

    def trials(self, name: str) -> list[dict[str, Any]]:
        with self.store.session() as s:
            rows = s.execute(select(t.TuningTrial).where(t.TuningTrial.tuning_name == name)
                             .order_by(t.TuningTrial.number)).scalars()
            return [trial_record(r) for r in rows]

    def update_trial(self, name: str, number: int, *, state: str | None = None, value: float | None = None,
                     intermediate: dict[str, Any] | None = None, system_attrs: dict[str, Any] | None = None) -> None:
        values: dict[str, Any] = {}
        if state is not None:
            values["state"] = state
            if state != TRIAL_RUNNING:
                values["ended_at"] = utcnow()
        if value is not None:
            values["value"] = value
        if intermediate is not None:
            values["intermediate"] = intermediate
        if system_attrs is not None:
            values["system_attrs"] = system_attrs
        if not values:
            return
        with self.store.session() as s:
            s.execute(update(t.TuningTrial).where(t.TuningTrial.tuning_name == name, t.TuningTrial.number == number)
                      .values(**values))
