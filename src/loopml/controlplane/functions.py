"""Runs queued function invocations, each in its own process, at most
``settings.function_concurrency`` at once; fails invocations orphaned by a restart."""

from __future__ import annotations

from loopml.platform import Platform


class FunctionDispatcher:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def tick(self) -> None:
        pass

    def stop(self) -> None:
        pass
