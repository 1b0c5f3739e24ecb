"""TuningSupervisor: advances every active tuning job each tick (tuning/advance.py does the work).

Each tuning job in its own exception boundary; a failed step drops that job's cached study, so the
next tick rebuilds it from the store. Optuna is imported on the first tick that finds an active
tuning job, never at server start.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from loopml.platform import Platform

log = logging.getLogger("loopml.controlplane.tuning")


class TuningSupervisor:
    def __init__(self, platform: Platform, on_queued: Callable[[], None] | None = None) -> None:
        self.platform = platform
        self.on_queued = on_queued  # trials were queued: the loop dispatches them without waiting a tick
        self._advancer: Any = None

    def tick(self) -> None:
        names = self.platform.tuning.active_names()
        if not names:
            return
        if self._advancer is None:
            from loopml.tuning.advance import Advancer

            self._advancer = Advancer(self.platform)
        for name in names:
            try:
                if self._advancer.step(name) and self.on_queued is not None:
                    self.on_queued()
            except Exception:  # noqa: BLE001 - one tuning job never stops the others
                log.exception("advancing tuning job %s failed", name)
                self._advancer.forget(name)

    def stop(self) -> None:
        """Nothing to stop: the studies are rebuilt from the store by the next control plane."""
