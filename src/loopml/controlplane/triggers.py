"""Watches object prefixes and cron schedules and fires triggers exactly once per new object /
scheduled time (webhook and alert triggers fire from the API and the monitors).

The polling runs in its own thread (started by the first ``tick``), every
``settings.trigger_poll_interval_s``: a slow S3 listing never stalls the control loop, and
``tick`` stays cheap. Each trigger is polled inside its own exception boundary. Tests call
``poll_once`` directly, with an injectable clock (``now``) for cron schedules.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from typing import Any, Callable

from loopml.core.timeutil import utcnow
from loopml.platform import Platform
from loopml.triggers.objects import Location, ObjectLister
from loopml.triggers.poll import poll_cron, poll_objects

log = logging.getLogger("loopml.controlplane.triggers")


class TriggerPoller:
    def __init__(self, platform: Platform, *, now: Callable[[], datetime] = utcnow,
                 on_fired: Callable[[list[dict[str, Any]]], None] | None = None) -> None:
        self.platform = platform
        self.now = now
        self.on_fired = on_fired  # the control loop starts what fired at once, not at its next tick
        self._listers: dict[str, tuple[Any, ObjectLister]] = {}  # name → (spec it was built for, lister)
        self._errors: dict[str, str] = {}  # last error per trigger, logged once until it changes
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------------------
    def tick(self) -> None:
        """Called by the control loop: makes sure the polling thread runs."""
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._run, name="loopml-trigger-poller", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:  # noqa: BLE001 - the poller must never die (e.g. the database restarts)
                log.exception("trigger poll failed")
            self._stop.wait(self.platform.settings.trigger_poll_interval_s)

    # -- one pass ----------------------------------------------------------------------------------
    def poll_once(self) -> list[dict[str, Any]]:
        """Poll every active object and cron trigger once; returns the firings written."""
        with self._lock:  # the thread and a test never poll at the same time
            written: list[dict[str, Any]] = []
            triggers = self.platform.triggers.active(["objects", "cron"])
            names = {t["name"] for t in triggers}
            for gone in set(self._listers) - names:
                self._listers.pop(gone, None)
            for trigger in triggers:
                if self._stop.is_set() and self._thread is not None:
                    break
                written += self._poll_one(trigger)
        if written and self.on_fired is not None:
            try:
                self.on_fired(written)
            except Exception:  # noqa: BLE001 - a latency shortcut; the next tick starts them anyway
                log.exception("starting fired targets early failed")
        return written

    def _poll_one(self, trigger: dict[str, Any]) -> list[dict[str, Any]]:
        name = trigger["name"]
        try:
            if trigger["kind"] == "objects":
                firings = poll_objects(self.platform, trigger, self._lister(trigger))
            else:
                firings = poll_cron(self.platform, trigger, self.now())
            self._errors.pop(name, None)
            return firings
        except Exception as exc:  # noqa: BLE001 - one bad trigger never stops the others
            message = f"{type(exc).__name__}: {exc}"
            if self._errors.get(name) != message:
                self._errors[name] = message
                log.warning("polling trigger %s failed: %s", name, message)
            return []

    def _lister(self, trigger: dict[str, Any]) -> ObjectLister:
        spec = trigger["spec"]
        cached = self._listers.get(trigger["name"])
        if cached is None or cached[0] != spec:
            lister = ObjectLister(Location.from_spec(spec["location"]), self.platform.settings, spec.get("suffix"))
            cached = (spec, lister)
            self._listers[trigger["name"]] = cached
        return cached[1]

    def errors(self) -> dict[str, str]:
        """The last polling error of each trigger still failing (for diagnostics)."""
        return dict(self._errors)
