"""Watches object prefixes and cron schedules and fires triggers exactly once per new object /
scheduled time (webhook and alert triggers fire from the API and the monitors)."""

from __future__ import annotations

from loopml.platform import Platform


class TriggerPoller:
    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    def tick(self) -> None:
        pass

    def stop(self) -> None:
        pass
