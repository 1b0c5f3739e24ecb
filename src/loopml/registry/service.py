"""Registering a trained model version: files first, then one transaction for the record and the
job's success, so a version is never half-registered and a job never succeeds without it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from loopml.core.timeutil import utcnow
from loopml.platform import Platform
from loopml.store import records
from loopml.store import tables as t
from loopml.store.jobs_repo import RUNNING, SUCCEEDED


def register_job_result(platform: Platform, job_id: str, name: str, *, fields: dict[str, Any],
                        result: dict[str, Any]) -> dict[str, Any]:
    """Insert model version ``name``:<next> and mark the job succeeded, atomically."""
    for _attempt in range(5):  # concurrent registrations of one name: retry with the next number
        try:
            with platform.meta.session() as s:
                model = s.execute(select(t.Model).where(t.Model.name == name)).scalar()
                if model is None:
                    model = t.Model(name=name)
                    s.add(model)
                    s.flush()
                top = s.execute(select(func.max(t.ModelVersion.version))
                                .where(t.ModelVersion.model_id == model.id)).scalar()
                row = t.ModelVersion(model_id=model.id, version=(top or 0) + 1, job_id=job_id, **fields)
                s.add(row)
                s.flush()
                record = records.model_version(row, name, [])
                now = utcnow()
                full = {**result, "model": {"name": name, "version": row.version, "ref": record["ref"]}}
                moved = s.execute(update(t.Job).where(t.Job.id == job_id, t.Job.status == RUNNING)
                                  .values(status=SUCCEEDED, ended_at=now, result=full, reason=None)).rowcount
                if not moved:  # cancelled or failed meanwhile: do not register behind its back
                    raise _JobNoLongerRunning()
                s.add(t.JobEvent(job_id=job_id, status=SUCCEEDED, at=now,
                                 message=f"registered {record['ref']}"))
                return record
        except IntegrityError:
            continue
    raise RuntimeError(f"could not allocate a version number for model {name!r}")


class _JobNoLongerRunning(Exception):
    pass


JobNoLongerRunning = _JobNoLongerRunning
