"""LocalExecutor: each job in its own subprocess (Keras keeps global state), at most N at once.

Workers start in their own session so they survive a control-plane restart and can be
re-attached by pid; their stdout/stderr go to a file under LOOPML_HOME/workers as a fallback
record for failures before the worker's own log capture starts. A worker's settings come in
its environment (``Settings.child_env("worker")``); its command line is only the job id.

Warm start (``Settings.warm_workers`` > 0): ``settings.warm_workers`` spare processes wait with
TensorFlow/Keras and the runners already imported (jobs/spares.py, jobs/warm.py); ``submit``
hands the job id and the job's environment to one and starts its replacement, so a job skips the
~8 s import. A spare serves one job and ends with it; with no live spare the worker starts cold.
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
from loopml.jobs.logtail import read_tail
from loopml.jobs.spares import SparePool, pid_file, pid_file_names

KILL_GRACE_S = 10.0


def _pid_runs_job(pid: int, job_id: str, log_dir: Path | None = None) -> bool:
    """Whether process ``pid`` is the worker of ``job_id``: a cold worker names the job on its
    command line; a warm one (a spare that took the job) is named by the pid file written at
    handover, with the process's start time so a reused pid is not mistaken for it."""
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return False
    except OSError:
        return True  # no /proc (macOS): the pid exists, trust it
    if job_id.encode() in cmdline:
        return True
    return log_dir is not None and b"loopml.jobs.warm" in cmdline and pid_file_names(log_dir, job_id, pid)


class LocalExecutor:  # implements loopml.jobs.executor.Executor
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.host = socket.gethostname()
        self.log_dir = settings.home / "workers"
        self._procs: dict[str, subprocess.Popen] = {}
        self._adopted: dict[str, int] = {}
        self._kill_at: dict[str, float] = {}
        # a subclass running another worker command (a test's stand-in) gets no spares: they run the real worker
        warm = settings.warm_workers if type(self).command is LocalExecutor.command else 0
        self.spares = SparePool(warm, self.log_dir, lambda: self.settings.child_env("worker"))
        self.spares.remove_stale_files()
        self.spares.refill()  # ready before the first job needs it

    def free_slots(self) -> int:
        return max(0, self.settings.max_concurrent_jobs - len(self._procs) - len(self._adopted))

    @staticmethod
    def command(job_id: str) -> list[str]:
        return [sys.executable, "-m", "loopml.jobs.worker", job_id]

    def submit(self, job_id: str) -> Placement:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = self.settings.child_env("worker")  # computed now: the job's settings, not the spare's
        proc = self.spares.take(job_id, env, self.log_dir / f"{job_id}.out") if self.spares.count else None
        if proc is None:
            with open(self.log_dir / f"{job_id}.out", "ab") as out:
                proc = subprocess.Popen(self.command(job_id), stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, env=env, start_new_session=True)
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
        return read_tail(self.log_dir / f"{job_id}.out", limit)

    def poll(self) -> list[Exited]:
        done: list[Exited] = []
        for job_id, proc in list(self._procs.items()):
            rc = proc.poll()
            if rc is not None:
                del self._procs[job_id]
                self._kill_at.pop(job_id, None)
                pid_file(self.log_dir, job_id).unlink(missing_ok=True)
                done.append(Exited(job_id, rc, self._tail(job_id)))
        for job_id, pid in list(self._adopted.items()):
            if not _pid_runs_job(pid, job_id, self.log_dir):
                del self._adopted[job_id]
                self._kill_at.pop(job_id, None)
                pid_file(self.log_dir, job_id).unlink(missing_ok=True)
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
        self.spares.refill()  # a spare that died (killed, out of memory) is replaced here
        return done

    def owns(self, job_id: str) -> bool:
        return job_id in self._procs or job_id in self._adopted

    def adopt(self, job_id: str, host: str | None, pid: int | None) -> bool:
        if host != self.host or not pid or not _pid_runs_job(pid, job_id, self.log_dir):
            return False
        self._adopted[job_id] = pid
        return True

    def shutdown(self) -> None:
        """Leave workers running: they finish their jobs and a restarted control plane re-attaches.
        Idle spares end (a spare left behind would only wait for a handover that never comes)."""
        self.spares.shutdown()
        self._procs.clear()
        self._adopted.clear()
