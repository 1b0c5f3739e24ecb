"""MonitorScheduler: queues a run of every scheduled monitor whose time has come.

Each tick (in the control loop): monitors that are active, scheduled and due (``next_run_at`` ≤
now) get one queued run — unless one is still queued or running — and their ``next_run_at``
moves to the first scheduled time after now, in the same transaction. Times missed while the
control plane was down collapse into that one run (a monitor run reads everything since its
cursor anyway). Runs whose job ended without recording them (a killed worker) are failed here,
so a monitor never stays blocked behind a run nobody will finish. Nothing is kept in memory.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Callable

from loopml.core.timeutil import utcnow
from loopml.platform import Platform
from loopml.triggers import cron as cron_mod

log = logging.getLogger("loopml.controlplane.monitors")


class MonitorScheduler:
    def __init__(self, platform: Platform, now: Callable[[], datetime] = utcnow,
                 on_queued: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.platform = platform
        self.now = now
        self.on_queued = on_queued

    def tick(self) -> list[dict[str, Any]]:
        """Queue the due runs; returns the runs queued."""
        repo = self.platform.monitors
        for run_id in repo.fail_orphaned_runs():
            log.warning("monitor run %s failed: its job ended without recording the run", run_id)
        now = self.now()
        queued = []
        for name in repo.due(now):
            try:
                run = repo.schedule_run(name, now, lambda row: self._next(row, now))
            except Exception:  # noqa: BLE001 - one monitor never stops the others
                log.exception("scheduling a run of monitor %s failed", name)
                continue
            if run is not None:
                log.info("monitor %s: queued scheduled run %s (job %s)", name, run["id"], run["job_id"])
                queued.append(run)
        if queued and self.on_queued is not None:
            for run in queued:
                self.on_queued(run)
        return queued

    @staticmethod
    def _next(row: Any, now: datetime) -> datetime | None:
        try:
            return cron_mod.next_time(row.schedule, row.tz or "UTC", now)
        except Exception:  # noqa: BLE001 - validated at creation; a schedule gone bad stops, it never loops
            log.exception("monitor %s: schedule %r has no next time; it stops", row.name, row.schedule)
            return None

    def stop(self) -> None:
        """Nothing to stop (no thread, no state); here for the control loop's symmetry."""
