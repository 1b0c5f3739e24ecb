"""The Executor protocol: how the control loop starts, stops and watches job workers.

``LocalExecutor`` (subprocesses on this host) and ``RayExecutor`` (detached actors on a Ray
cluster, jobs/ray_executor.py) implement it; jobs.executors picks one from LOOPML_EXECUTOR.
The loop never asks where or how a worker runs, only these questions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass
class Exited:
    job_id: str
    returncode: int | None
    output_tail: str = ""


@dataclass(frozen=True)
class Placement:
    """Where a worker runs: recorded on the job so a restarted control plane can find it."""

    host: str
    pid: int | None


@runtime_checkable
class Executor(Protocol):
    host: str
    """This executor's host name: a running job placed on it whose worker is gone has died
    (a job on another host is judged by its heartbeat instead)."""

    def free_slots(self) -> int:
        """How many more workers may start now."""

    def submit(self, job_id: str) -> Placement:
        """Start a worker for ``job_id`` (already marked running)."""

    def cancel(self, job_id: str) -> None:
        """Stop the worker (politely first); its exit shows up in ``poll``."""

    def poll(self) -> list[Exited]:
        """Workers that have ended since the last poll."""

    def owns(self, job_id: str) -> bool:
        """Whether this executor watches the worker of ``job_id``."""

    def adopt(self, job_id: str, host: str | None, pid: int | None) -> bool:
        """Re-attach a worker started before a control-plane restart; False if it is gone."""

    def shutdown(self) -> None:
        """Stop watching (workers keep running: a restarted control plane re-attaches them)."""
