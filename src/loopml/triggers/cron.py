"""Cron schedules in a time zone: validation, and which scheduled times are due.

A scheduled time is *on time* when the poller sees it within ``MISSED_GRACE_S``; older ones were
missed (the control plane was down, or the trigger was created long ago and never polled) and
follow the trigger's missed-run policy: ``skip`` (recorded, nothing starts) or ``catch-up`` (one
run for the latest missed time).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from loopml.core.errors import InvalidInput

MISSED_POLICIES = ("skip", "catch-up")
MISSED_GRACE_S = 60.0
MAX_ENUMERATED = 10_000  # counting missed times stops here (an every-minute schedule down for a week)


def zone(name: str | None) -> ZoneInfo:
    name = name or "UTC"
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: "Europe" is a folder, an overlong name
        raise InvalidInput(f"tz: unknown time zone {name!r} (use an IANA name such as Europe/Paris or UTC)") from None


def validate(expr: str | None, tz: str | None, missed: str | None) -> dict[str, str]:
    """The stored spec of a cron trigger; InvalidInput naming the field."""
    from croniter import croniter

    expr = (expr or "").strip()
    if not expr:
        raise InvalidInput("cron: give a cron expression such as '*/5 * * * *'")
    if not croniter.is_valid(expr):
        raise InvalidInput(f"cron: {expr!r} is not a valid cron expression (minute hour day month weekday)")
    tzinfo = zone(tz)
    try:  # e.g. '0 0 31 2 *' is valid syntax but never comes: refuse it now, not at every poll
        croniter(expr, datetime.now(timezone.utc).astimezone(tzinfo)).get_next(datetime)
    except Exception:  # noqa: BLE001 - croniter's CroniterBadDateError and friends
        raise InvalidInput(f"cron: {expr!r} never fires (no such date)") from None
    missed = missed or "skip"
    if missed not in MISSED_POLICIES:
        raise InvalidInput(f"missed: {missed!r} is not a policy; use skip or catch-up")
    return {"cron": expr, "tz": tz or "UTC", "missed": missed}


@dataclass(frozen=True)
class Due:
    on_time: list[datetime]  # fire each normally
    missed: int  # how many scheduled times were missed (at least, when ``capped``)
    first_missed: datetime | None
    last_missed: datetime | None
    capped: bool  # stopped counting at MAX_ENUMERATED
    last: datetime | None  # the newest scheduled time handled now (the new cursor)


def due_times(expr: str, tz: str, after: datetime, now: datetime) -> Due:
    """Scheduled times in (after, now], in UTC, split into on-time and missed."""
    from croniter import croniter

    tzinfo = zone(tz)
    cutoff = now - timedelta(seconds=MISSED_GRACE_S)
    it = croniter(expr, after.astimezone(tzinfo))
    missed, first, last_missed, capped = 0, None, None, False
    on_time: list[datetime] = []
    while True:
        nxt = it.get_next(datetime).astimezone(timezone.utc)
        if nxt > now:
            break
        if nxt >= cutoff:
            on_time.append(nxt)
            continue
        missed += 1
        first = first or nxt
        last_missed = nxt
        if missed >= MAX_ENUMERATED:  # a long outage: jump to the newest missed time
            capped = True
            last_missed = croniter(expr, cutoff.astimezone(tzinfo)).get_prev(datetime).astimezone(timezone.utc)
            it = croniter(expr, last_missed.astimezone(tzinfo))
            missed = max(missed, MAX_ENUMERATED)
            while True:
                nxt = it.get_next(datetime).astimezone(timezone.utc)
                if nxt > now:
                    break
                if nxt >= cutoff:
                    on_time.append(nxt)
            break
    newest = on_time[-1] if on_time else last_missed
    return Due(on_time, missed, first, last_missed, capped, newest)


def next_time(expr: str, tz: str, after: datetime) -> datetime:
    from croniter import croniter

    return croniter(expr, after.astimezone(zone(tz))).get_next(datetime).astimezone(timezone.utc)
