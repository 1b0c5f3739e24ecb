"""Model monitors, their runs, ground-truth labels and alerts.

One transaction for each thing that must not be half-written: a run row and its job row; a run's
outcome and the monitor's cursor; a run's violations and the alerts they open, bump or resolve.
At most one OPEN alert per (monitor, key): alert transactions lock the monitor's row first
(serialising them on PostgreSQL; SQLite serialises writers anyway) and the unique
``(monitor, open_key)`` constraint is the backstop (``open_key`` is NULL once resolved).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Callable, Iterable

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from loopml.core.errors import Conflict, NotFound
from loopml.core.jobstatus import TERMINAL as JOB_TERMINAL
from loopml.core.timeutil import iso, utcnow
from loopml.store import records
from loopml.store import tables as t
from loopml.store.db import MetadataStore
from loopml.store.names import missing
from loopml.core.jobstatus import QUEUED as JOB_QUEUED
from loopml.store.jobs_repo import new_job_id

ACTIVE, PAUSED = "active", "paused"
QUEUED, RUNNING, SUCCEEDED, FAILED, INSUFFICIENT = "queued", "running", "succeeded", "failed", "insufficient"
RUN_TERMINAL = (SUCCEEDED, FAILED, INSUFFICIENT)
OPEN, RESOLVED = "open", "resolved"
_CHUNK = 500  # ids per IN (...) query / rows per insert


def new_run_id() -> str:
    return "run-" + uuid.uuid4().hex[:10]


def new_alert_id() -> str:
    return "alert-" + uuid.uuid4().hex[:10]


def monitor_record(m: t.Monitor) -> dict[str, Any]:
    return {"name": m.name, "endpoint": m.endpoint, "variant": m.variant, "schedule": m.schedule, "tz": m.tz,
            "window_s": m.window_s, "min_samples": m.min_samples, "thresholds": dict(m.thresholds or {}),
            "webhooks": list(m.webhooks or []), "status": m.status, "cursor": iso(m.cursor),
            "next_run_at": iso(m.next_run_at), "created_at": iso(m.created_at), "updated_at": iso(m.updated_at)}


def run_record(r: t.MonitorRun) -> dict[str, Any]:
    return {"id": r.id, "monitor": r.monitor, "job_id": r.job_id, "status": r.status, "source": r.source,
            "since": iso(r.since), "until": iso(r.until), "rows": r.rows, "malformed": r.malformed,
            "violations": r.violations or [], "summary": r.summary, "report_key": r.report_key,
            "error": r.error, "created_at": iso(r.created_at), "started_at": iso(r.started_at),
            "ended_at": iso(r.ended_at)}


def alert_record(a: t.Alert) -> dict[str, Any]:
    return {"id": a.id, "monitor": a.monitor, "key": a.key, "status": a.status, "severity": a.severity,
            "statistic": a.statistic, "message": a.message, "count": a.count, "run_id": a.run_id,
            "notifications": a.notifications or [], "first_at": iso(a.first_at), "last_at": iso(a.last_at),
            "resolved_at": iso(a.resolved_at), "acked_at": iso(a.acked_at), "acked_by": a.acked_by,
            "resolved_by": a.resolved_by}


class MonitorRepo:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    # -- monitors ------------------------------------------------------------------------------
    @staticmethod
    def _row(s, name: str, *, lock: bool = False) -> t.Monitor:
        row = s.get(t.Monitor, name, with_for_update=lock)
        if row is None:
            raise missing(s, t.Monitor, "monitor", name)
        return row

    @staticmethod
    def _lock(s, name: str) -> None:
        """Serialise writers of one monitor: a no-op UPDATE of its row as the transaction's first
        statement takes SQLite's write lock (before anything is read) and PostgreSQL's row lock."""
        if not s.execute(update(t.Monitor).where(t.Monitor.name == name).values(name=t.Monitor.name)).rowcount:
            raise missing(s, t.Monitor, "monitor", name)

    def create(self, name: str, *, endpoint: str, variant: str | None, schedule: str | None, tz: str,
               window_s: int, min_samples: int, thresholds: dict[str, Any], webhooks: list[str],
               next_run_at: datetime | None) -> dict[str, Any]:
        try:
            with self.store.session() as s:
                if s.get(t.Monitor, name) is not None:
                    raise Conflict(f"monitor {name!r} already exists; delete it first to change it")
                now = utcnow()
                row = t.Monitor(name=name, endpoint=endpoint, variant=variant, schedule=schedule, tz=tz,
                                window_s=window_s, min_samples=min_samples, thresholds=thresholds,
                                webhooks=webhooks, status=ACTIVE, cursor=None, next_run_at=next_run_at,
                                created_at=now, updated_at=now)
                s.add(row)
                s.flush()
                return monitor_record(row)
        except IntegrityError:
            raise Conflict(f"monitor {name!r} already exists") from None

    def get(self, name: str) -> dict[str, Any]:
        with self.store.session() as s:
            return monitor_record(self._row(s, name))

    def list(self, *, status: str | None = None, endpoint: str | None = None) -> list[dict[str, Any]]:
        with self.store.session() as s:
            query = select(t.Monitor).order_by(t.Monitor.name)
            if status:
                query = query.where(t.Monitor.status == status)
            if endpoint:
                query = query.where(t.Monitor.endpoint == endpoint)
            return [monitor_record(m) for m in s.execute(query).scalars()]

    def set_status(self, name: str, status: str, *, next_run_at: datetime | None = None) -> dict[str, Any]:
        with self.store.session() as s:
            row = self._row(s, name, lock=True)
            row.status, row.next_run_at, row.updated_at = status, next_run_at, utcnow()
            s.flush()
            return monitor_record(row)

    def delete(self, name: str) -> None:
        """The monitor with its runs, labels and alerts (reports stay in the artifact store)."""
        with self.store.session() as s:
            s.delete(self._row(s, name, lock=True))
            for table in (t.MonitorRun, t.MonitorLabel, t.Alert):
                s.execute(delete(table).where(table.monitor == name))

    def due(self, now: datetime) -> list[str]:
        """Active scheduled monitors whose next run time has come."""
        with self.store.session() as s:
            return list(s.execute(select(t.Monitor.name).where(
                t.Monitor.status == ACTIVE, t.Monitor.schedule.is_not(None), t.Monitor.next_run_at.is_not(None),
                t.Monitor.next_run_at <= now).order_by(t.Monitor.next_run_at)).scalars())

    # -- runs ------------------------------------------------------------------------------------
    @staticmethod
    def _active_run(s, name: str) -> t.MonitorRun | None:
        return s.execute(select(t.MonitorRun).where(t.MonitorRun.monitor == name,
                                                    t.MonitorRun.status.in_([QUEUED, RUNNING]))
                         .order_by(t.MonitorRun.created_at.desc()).limit(1)).scalar_one_or_none()

    @staticmethod
    def _add_run(s, name: str, source: str) -> tuple[dict[str, Any], dict[str, Any]]:
        run_id, now = new_run_id(), utcnow()
        job = t.Job(id=new_job_id(), kind="monitor", status=JOB_QUEUED,
                    spec={"monitor": name, "run_id": run_id}, created_at=now)
        s.add(job)
        s.flush()
        s.add(t.JobEvent(job_id=job.id, status=JOB_QUEUED, message=f"monitor {name} run {run_id}", at=now))
        run = t.MonitorRun(id=run_id, monitor=name, job_id=job.id, status=QUEUED, source=source, created_at=now)
        s.add(run)
        s.flush()
        return run_record(run), records.job(job)

    def create_run(self, name: str, *, source: str = "manual") -> tuple[dict[str, Any], dict[str, Any]]:
        """A queued run and its "monitor" job, in one transaction; Conflict while one is in progress."""
        with self.store.session() as s:
            self._lock(s, name)
            active = self._active_run(s, name)
            if active is not None:
                raise Conflict(f"monitor {name!r} has a run in progress ({active.id}, {active.status}); "
                               "wait for it to finish", run_id=active.id)
            return self._add_run(s, name, source)

    def schedule_run(self, name: str, now: datetime,
                     next_run_at: Callable[[t.Monitor], datetime | None]) -> dict[str, Any] | None:
        """The scheduler's step for one due monitor, one transaction: queue a run unless one is in
        progress, and move ``next_run_at`` on (missed times collapse into this one run)."""
        with self.store.session() as s:
            try:
                self._lock(s, name)
            except NotFound:
                return None
            row = s.get(t.Monitor, name)
            if row is None or row.status != ACTIVE or row.next_run_at is None or _aware(row.next_run_at) > now:
                return None  # paused, deleted or handled by someone else meanwhile
            row.next_run_at = next_run_at(row)
            if self._active_run(s, name) is not None:
                return None
            run, _job = self._add_run(s, name, "schedule")
            return run

    def get_run(self, name: str, run_id: str) -> dict[str, Any]:
        with self.store.session() as s:
            run = s.get(t.MonitorRun, run_id)
            if run is None or run.monitor != name:
                raise NotFound(f"run {run_id!r} of monitor {name!r} not found")
            return run_record(run)

    def run_by_id(self, run_id: str) -> dict[str, Any]:
        with self.store.session() as s:
            run = s.get(t.MonitorRun, run_id)
            if run is None:
                raise NotFound(f"monitor run {run_id!r} not found")
            return run_record(run)

    def runs(self, name: str, limit: int = 50) -> list[dict[str, Any]]:
        with self.store.session() as s:
            self._row(s, name)
            rows = s.execute(select(t.MonitorRun).where(t.MonitorRun.monitor == name)
                             .order_by(t.MonitorRun.created_at.desc(), t.MonitorRun.id.desc()).limit(limit))
            return [run_record(r) for r in rows.scalars()]

    def start_run(self, run_id: str, *, since: datetime | None, until: datetime | None) -> bool:
        with self.store.session() as s:
            return bool(s.execute(update(t.MonitorRun).where(t.MonitorRun.id == run_id,
                                                             t.MonitorRun.status.in_([QUEUED, RUNNING]))
                                  .values(status=RUNNING, since=since, until=until, started_at=utcnow())).rowcount)

    def finish_run(self, run_id: str, status: str, *, rows: int | None = None, malformed: int | None = None,
                   violations: list[Any] | None = None, summary: dict[str, Any] | None = None,
                   report_key: str | None = None, error: str | None = None,
                   cursor: datetime | None = None) -> dict[str, Any]:
        """The run's outcome and (when given) the monitor's new cursor, in one transaction."""
        with self.store.session() as s:
            run = s.get(t.MonitorRun, run_id, with_for_update=True)
            if run is None:
                raise NotFound(f"monitor run {run_id!r} not found")
            run.status, run.rows, run.malformed = status, rows, malformed
            run.violations, run.summary, run.report_key, run.error = violations, summary, report_key, error
            run.ended_at = utcnow()
            if cursor is not None:
                monitor = s.get(t.Monitor, run.monitor, with_for_update=True)
                if monitor is not None and (monitor.cursor is None or _aware(monitor.cursor) < cursor):
                    monitor.cursor = cursor
            s.flush()
            return run_record(run)

    def update_summary(self, run_id: str, extra: dict[str, Any]) -> dict[str, Any]:
        """Merge ``extra`` into a finished run's summary (e.g. the alerts it opened/resolved)."""
        with self.store.session() as s:
            run = s.get(t.MonitorRun, run_id, with_for_update=True)
            if run is None:
                raise NotFound(f"monitor run {run_id!r} not found")
            run.summary = {**(run.summary or {}), **extra}
            s.flush()
            return run_record(run)

    def fail_orphaned_runs(self) -> list[str]:
        """Runs still queued/running whose job has ended (a worker killed before it could record
        the run's outcome): failed with the job's reason, so the monitor can run again."""
        with self.store.session() as s:
            rows = s.execute(select(t.MonitorRun, t.Job.status, t.Job.reason)
                             .join(t.Job, t.Job.id == t.MonitorRun.job_id)
                             .where(t.MonitorRun.status.in_([QUEUED, RUNNING]),
                                    t.Job.status.in_(JOB_TERMINAL))).all()
            for run, job_status, reason in rows:
                run.status, run.ended_at = FAILED, utcnow()
                run.error = run.error or f"job {run.job_id} {job_status}" + (f": {reason}" if reason else "")
            return [run.id for run, _status, _reason in rows]

    # -- labels ---------------------------------------------------------------------------------
    def upsert_labels(self, name: str, labels: Iterable[tuple[str, str]]) -> int:
        """Insert or replace (monitor, inference_id) → label; returns the rows written."""
        items = list(dict(labels).items())  # the last label of a repeated id wins
        now = utcnow()
        with self.store.session() as s:
            self._row(s, name)
            if s.bind.dialect.name == "postgresql":
                from sqlalchemy.dialects.postgresql import insert
            else:
                from sqlalchemy.dialects.sqlite import insert
            for start in range(0, len(items), _CHUNK):
                chunk = [{"monitor": name, "inference_id": i, "label": lab, "uploaded_at": now}
                         for i, lab in items[start:start + _CHUNK]]
                stmt = insert(t.MonitorLabel).values(chunk)
                s.execute(stmt.on_conflict_do_update(
                    index_elements=["monitor", "inference_id"],
                    set_={"label": stmt.excluded.label, "uploaded_at": stmt.excluded.uploaded_at}))
        return len(items)

    def labels_for(self, name: str, inference_ids: Iterable[str]) -> dict[str, str]:
        ids = list(dict.fromkeys(i for i in inference_ids if i))
        found: dict[str, str] = {}
        with self.store.session() as s:
            for start in range(0, len(ids), _CHUNK):
                rows = s.execute(select(t.MonitorLabel.inference_id, t.MonitorLabel.label).where(
                    t.MonitorLabel.monitor == name, t.MonitorLabel.inference_id.in_(ids[start:start + _CHUNK])))
                found.update({i: label for i, label in rows})
        return found

    def count_labels(self, name: str) -> int:
        with self.store.session() as s:
            return s.execute(select(func.count()).select_from(t.MonitorLabel)
                             .where(t.MonitorLabel.monitor == name)).scalar_one()

    # -- alerts ---------------------------------------------------------------------------------
    def record_alerts(self, name: str, run_id: str, violations: list[dict[str, Any]], *,
                      checked: Iterable[str] | None = None) -> dict[str, list[dict[str, Any]]]:
        """One run's findings: each violation ``{key, severity, statistic, message}`` opens an alert
        or bumps the open one; an open alert whose key was ``checked`` by this run (None: every key)
        and is not violated now is resolved. Returns {"opened", "updated", "resolved"} records."""
        checked_keys = None if checked is None else set(checked)
        for attempt in range(2):
            try:
                return self._record_alerts(name, run_id, violations, checked=checked_keys)
            except IntegrityError:  # another writer opened the same key meanwhile: bump it instead
                if attempt:
                    raise
        raise AssertionError("unreachable")

    def _record_alerts(self, name: str, run_id: str, violations: list[dict[str, Any]], *,
                       checked: set[str] | None) -> dict[str, list[dict[str, Any]]]:
        now = utcnow()
        out: dict[str, list[dict[str, Any]]] = {"opened": [], "updated": [], "resolved": []}
        with self.store.session() as s:
            self._lock(s, name)
            open_rows = {a.key: a for a in s.execute(select(t.Alert).where(
                t.Alert.monitor == name, t.Alert.status == OPEN).with_for_update()).scalars()}
            seen: set[str] = set()
            for v in violations:
                key = str(v["key"])[:255]
                if key in seen:
                    continue
                seen.add(key)
                row = open_rows.get(key)
                if row is not None:
                    row.count += 1
                    row.last_at, row.run_id = now, run_id
                    row.statistic, row.message = v.get("statistic") or {}, str(v.get("message") or row.message)
                    row.severity = str(v.get("severity") or row.severity)
                    out["updated"].append(row)
                else:
                    row = t.Alert(id=new_alert_id(), monitor=name, key=key, open_key=key, status=OPEN,
                                  severity=str(v.get("severity") or "warning"), statistic=v.get("statistic") or {},
                                  message=str(v.get("message") or key), count=1, run_id=run_id,
                                  notifications=[], first_at=now, last_at=now)
                    s.add(row)
                    out["opened"].append(row)
            for key, row in open_rows.items():
                if key not in seen and (checked is None or key in checked):
                    row.status, row.open_key, row.resolved_at, row.run_id = RESOLVED, None, now, run_id
                    out["resolved"].append(row)
            s.flush()
            return {k: [alert_record(a) for a in rows] for k, rows in out.items()}

    def ack_alert(self, alert_id: str, actor: str | None = None) -> dict[str, Any]:
        """Acknowledge an open alert: it stays open (a recovery still resolves it) and is shown as
        acked. Acknowledging it again keeps the first acknowledgement."""
        monitor = self.alert(alert_id)["monitor"]
        with self.store.session() as s:
            row = self._alert_row(s, alert_id, monitor)
            if row.status != OPEN:
                raise Conflict(f"alert {alert_id} is {row.status}: only an open alert can be acknowledged")
            if row.acked_at is None:
                row.acked_at, row.acked_by = utcnow(), actor
            s.flush()
            return alert_record(row)

    def resolve_alert(self, alert_id: str, actor: str | None = None) -> dict[str, Any]:
        """Close an open alert by hand: the next violation of its key opens a new alert."""
        monitor = self.alert(alert_id)["monitor"]
        with self.store.session() as s:
            row = self._alert_row(s, alert_id, monitor)
            if row.status != OPEN:
                raise Conflict(f"alert {alert_id} is already {row.status} (at {iso(row.resolved_at)})")
            row.status, row.open_key, row.resolved_at, row.resolved_by = RESOLVED, None, utcnow(), actor or "hand"
            s.flush()
            return alert_record(row)

    def _alert_row(self, s, alert_id: str, monitor: str) -> t.Alert:
        """The alert, after serialising its monitor's writers (a run may resolve it meanwhile)."""
        self._lock(s, monitor)
        row = s.get(t.Alert, alert_id)
        if row is None:
            raise NotFound(f"alert {alert_id!r} not found")
        return row

    def set_notifications(self, alert_id: str, notifications: list[dict[str, Any]]) -> None:
        with self.store.session() as s:
            s.execute(update(t.Alert).where(t.Alert.id == alert_id).values(notifications=notifications))

    def alert(self, alert_id: str) -> dict[str, Any]:
        with self.store.session() as s:
            row = s.get(t.Alert, alert_id)
            if row is None:
                raise NotFound(f"alert {alert_id!r} not found")
            return alert_record(row)

    def alerts(self, *, open: bool | None = None, monitor: str | None = None,
               limit: int = 200) -> list[dict[str, Any]]:
        with self.store.session() as s:
            query = select(t.Alert).order_by(t.Alert.last_at.desc(), t.Alert.id).limit(limit)
            if open is not None:
                query = query.where(t.Alert.status == (OPEN if open else RESOLVED))
            if monitor:
                query = query.where(t.Alert.monitor == monitor)
            return [alert_record(a) for a in s.execute(query).scalars()]


def _aware(dt: datetime) -> datetime:
    """SQLite hands back naive datetimes (stored as UTC)."""
    from datetime import timezone

    return dt if dt.tzinfo is not None else dt.replace(tzinfo=timezone.utc)
