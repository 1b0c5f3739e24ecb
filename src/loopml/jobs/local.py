"""LocalExecutor: each job in its own subprocess (Keras keeps global state), at most N at once.

Workers start in their own session so they survive a control-plane restart and can be
re-attached by pid; their stdout/stderr go to a file under LOOPML_HOME/workers as a fallback
record for failures before the worker's own log capture starts. A worker's settings come in
its environment (``Settings.child_env("worker")``); its command line is only the job id.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from loopml.core.settings import Settings
from loopml.jobs.executor import Exited, Placement

KILL_GRACE_S = 10.0


def _pid_runs_job(pid: int, job_id: str) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
            return False
    except OSError:
        return True  # no /proc (macOS): the pid exists, trust it
    return job_id.encode() in cmdline


class LocalExecutor:  # implements loopml.jobs.executor.Executor
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.host = socket.gethostname()
        self.log_dir = settings.home / "workers"
        self._procs: dict[str, subprocess.Popen] = {}
        self._adopted: dict[str, int] = {}
        self._kill_at: dict[str, float] = {}

    def free_slots(self) -> int:
        return max(0, self.settings.max_concurrent_jobs - len(self._procs) - len(self._adopted))

    @staticmethod
    def command(job_id: str) -> list[str]:
        return [sys.executable, "-m", "loopml.jobs.worker", job_id]

    def submit(self, job_id: str) -> Placement:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_dir / f"{job_id}.out", "ab") as out:
            proc = subprocess.Popen(self.command(job_id), stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, env=self.settings.child_env("worker"),
                                    start_new_session=True)
        self._procs[job_id] = proc
        return Placement(self.host, proc.pid)

    def cancel(self, job_id: str) -> None:
        pid = self._procs[job_id].pid if job_id in self._procs else self._adopted.get(job_id)
        if pid is None:
            return
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            return
        self._kill_at.setdefault(job_id, time.monotonic() + KILL_GRACE_S)

    def _tail(self, job_id: str, limit: int = 2000) -> str:
        try:
            data = (self.log_dir / f"{job_id}.out").read_bytes()[-limit:]
        except OSError:
            return ""
        return data.decode("utf-8", "replace")

    def poll(self) -> list[Exited]:
        done: list[Exited] = []
        for job_id, proc in list(self._procs.items()):
            rc = proc.poll()
            if rc is not None:
                del self._procs[job_id]
                self._kill_at.pop(job_id, None)
                done.append(Exited(job_id, rc, self._tail(job_id)))
        for job_id, pid in list(self._adopted.items()):
            if not _pid_runs_job(pid, job_id):
                del self._adopted[job_id]
                self._kill_at.pop(job_id, None)
                done.append(Exited(job_id, None, self._tail(job_id)))
        now = time.monotonic()
        for job_id, deadline in list(self._kill_at.items()):  # SIGTERM ignored: escalate
            if now > deadline:
                pid = self._procs[job_id].pid if job_id in self._procs else self._adopted.get(job_id)
                if pid is not None:
                    try:
                        os.killpg(pid, signal.SIGKILL)
                    except (ProcessLookupError, PermissionError):
                        pass
                del self._kill_at[job_id]
        return done

    def owns(self, job_id: str) -> bool:
        return job_id in self._procs or job_id in self._adopted

    def adopt(self, job_id: str, host: str | None, pid: int | None) -> bool:
        if host != self.host or not pid or not _pid_runs_job(pid, job_id):
            return False
        self._adopted[job_id] = pid
        return True

    def shutdown(self) -> None:
        """Leave workers running: they finish their jobs and a restarted control plane re-attaches."""
        self._procs.clear()
        self._adopted.clear()
