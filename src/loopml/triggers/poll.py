"""One poll of an object trigger or a cron trigger (the control plane's TriggerPoller calls these).

Objects: list the location, compare with the seen set (key → etag), fire new keys and keys whose
etag changed, in batches of ``OBJECT_BATCH`` per transaction (seen rows + firings + what they start
commit together: a crash mid-poll neither loses nor repeats an object).
Cron: the scheduled times in (cursor, now] fire once each (dedupe ``cron:{time}``); times missed
while the control plane was down follow the trigger's policy. The cursor moves in the same
transaction as the firings.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from loopml.core.timeutil import iso, parse_iso
from loopml.platform import Platform
from loopml.store.triggers_repo import OBJECT_BATCH, SKIPPED, Firing
from loopml.triggers import cron as cron_mod
from loopml.triggers.events import object_event, scheduled_event
from loopml.triggers.objects import Location, ObjectLister


def poll_objects(platform: Platform, trigger: dict[str, Any], lister: ObjectLister) -> list[dict[str, Any]]:
    """Fire every object under the trigger's location not seen before (or rewritten)."""
    name = trigger["name"]
    listed = lister.list()
    if not listed:
        return []
    seen = platform.triggers.seen(name)
    fresh = sorted((o for key, o in listed.items() if seen.get(key) != o.etag),
                   key=lambda o: (o.time or "", o.key))
    location: Location = lister.location
    written: list[dict[str, Any]] = []
    for start in range(0, len(fresh), OBJECT_BATCH):
        batch = [Firing(object_event(name, location, o), dedupe_key=f"{o.key}#{o.etag}", seen=(o.key, o.etag))
                 for o in fresh[start:start + OBJECT_BATCH]]
        written += platform.triggers.fire(name, batch)
    return written


def poll_cron(platform: Platform, trigger: dict[str, Any], now: datetime) -> list[dict[str, Any]]:
    """Fire the scheduled times that came due since the cursor."""
    name, spec = trigger["name"], trigger["spec"]
    last = (trigger.get("cursor") or {}).get("last")
    if not last:  # never polled (e.g. created by an older LoopML): start from now
        platform.triggers.fire(name, [], cursor={"last": iso(now)})
        return []
    due = cron_mod.due_times(spec["cron"], spec["tz"], parse_iso(last), now)
    if due.last is None:
        return []
    firings: list[Firing] = []
    if due.missed:
        assert due.first_missed is not None and due.last_missed is not None
        count = f"{'at least ' if due.capped else ''}{due.missed}"
        span = (f"{iso(due.first_missed)}" if due.missed == 1
                else f"{iso(due.first_missed)} … {iso(due.last_missed)}")
        event = scheduled_event(name, due.last_missed, due.missed)
        key = f"cron:{iso(due.last_missed)}"
        if spec.get("missed") == "catch-up":
            event["catch_up"] = True
            firings.append(Firing(event, dedupe_key=key))
        else:
            why = (f"{count} scheduled run(s) missed while the control plane was down ({span}); "
                   "policy skip: nothing started (create the trigger with --missed catch-up to run once instead)")
            firings.append(Firing(event, dedupe_key=key, status=SKIPPED, error=why))
    for scheduled in due.on_time:
        firings.append(Firing(scheduled_event(name, scheduled), dedupe_key=f"cron:{iso(scheduled)}"))
    return platform.triggers.fire(name, firings, cursor={"last": iso(due.last)})
