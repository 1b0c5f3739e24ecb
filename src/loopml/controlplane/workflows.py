"""Advances workflow executions: starts pending ones, fires due timers, starts tasks and feeds
their results to the engine, persisting state and history after every event."""

from __future__ import annotations

from loopml.platform import Platform


class WorkflowRunner:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def tick(self) -> None:
        pass

    def stop(self) -> None:
        pass
