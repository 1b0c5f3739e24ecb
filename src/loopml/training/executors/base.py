"""The Executor protocol: how the control plane starts, stops and watches job workers.

Local subprocesses now; a Ray executor later implements the same four methods.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass
class Exited:
    job_id: str
    returncode: int | None
    output_tail: str = ""


class Executor(Protocol):
    def free_slots(self) -> int: ...

    def submit(self, job_id: str) -> dict:
        """Start a worker for ``job_id``; returns where it runs ({"host", "pid"})."""

    def cancel(self, job_id: str) -> None: ...

    def poll(self) -> list[Exited]:
        """Workers that have ended since the last poll."""

    def adopt(self, job_id: str, host: str | None, pid: int | None) -> bool:
        """Re-attach a worker started before a control-plane restart; False if it is gone."""
