"""The events triggers hand to what they start, in the shapes AWS users know: an S3 event record,
an EventBridge scheduled event, a webhook envelope, a monitor alert."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from loopml.core.timeutil import iso, utcnow
from loopml.triggers.objects import Location, ObjectInfo


def object_event(trigger: str, location: Location, obj: ObjectInfo) -> dict[str, Any]:
    return {
        "Records": [{
            "eventVersion": "2.1", "eventSource": "loopml:objects", "eventName": "ObjectCreated:Put",
            "eventTime": obj.time or iso(utcnow()),
            "s3": {"bucket": {"name": location.root},
                   "object": {"key": obj.key, "size": obj.size, "eTag": obj.etag}},
        }],
        "trigger": trigger,
        "uri": location.object_uri(obj.key),
    }


def scheduled_event(trigger: str, scheduled: datetime, missed: int = 0) -> dict[str, Any]:
    return {"source": "loopml.schedule", "detail-type": "Scheduled Event", "time": iso(scheduled),
            "trigger": trigger, "missed": missed}


def webhook_event(trigger: str, body: Any, headers: dict[str, str]) -> dict[str, Any]:
    kept = {k: headers[k] for k in ("content-type", "user-agent", "idempotency-key", "x-github-event",
                                    "x-github-delivery") if headers.get(k)}
    return {"source": "loopml.webhook", "trigger": trigger, "body": body, "headers": kept,
            "received_at": iso(utcnow())}


def alert_event(trigger: str, monitor: str, alert: dict[str, Any]) -> dict[str, Any]:
    return {"source": "loopml.monitor", "trigger": trigger, "monitor": monitor, "alert": alert}


def sample_event(trigger: dict[str, Any]) -> dict[str, Any]:
    """What a manual test fire sends when no event is given: the trigger's own shape, marked test."""
    name, kind, spec = trigger["name"], trigger["kind"], trigger["spec"]
    if kind == "objects":
        location = Location.from_spec(spec["location"])
        key = f"{location.prefix}example{spec.get('suffix') or '.txt'}"
        event = object_event(name, location, ObjectInfo(key, 0, "test", iso(utcnow())))
    elif kind == "cron":
        event = scheduled_event(name, utcnow())
    elif kind == "webhook":
        event = webhook_event(name, {}, {})
    else:
        event = alert_event(name, spec.get("monitor", ""), {"id": "test", "message": "test alert"})
    return {**event, "test": True}
