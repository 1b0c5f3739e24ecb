"""Triggers: create / update / list / pause / resume / delete / redrive, and every way a trigger fires.

What the API calls (and the poller, and the model monitors through ``fire_alert``). Each firing
and what it starts are written in one transaction by ``TriggerRepo.fire`` (see store/triggers_repo).
A target that no longer exists does not stop anything: the firing is recorded ``failed`` with
``"function 'x' not found"``, and for an object that object is still marked seen (it would
otherwise fail again on every poll forever): ``redrive`` re-starts it, once, when the target exists again.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from datetime import datetime
from typing import Any, Callable

from loopml.core.errors import Conflict, InvalidInput, LoopMLError, NotFound, Unauthorized
from loopml.core.jsonutil import NotStrictJSON, loads_strict
from loopml.core.names import trigger_name
from loopml.core.timeutil import iso, utcnow
from loopml.platform import Platform
from loopml.store.triggers_repo import ACTIVE, FAILED, PAUSED, REDRIVE_PREFIX, Firing
from loopml.triggers import cron as cron_mod
from loopml.triggers.events import alert_event, sample_event, webhook_event
from loopml.triggers.objects import ObjectLister, parse_location

KINDS = ("objects", "cron", "webhook", "alert")
TARGET_KINDS = ("function", "workflow")
MAX_WEBHOOK_BODY = 1024 * 1024
_KIND_FIELDS = {"objects": ("objects_uri", "suffix"), "cron": ("cron", "tz", "missed"),
                "webhook": (), "alert": ("monitor",)}


def hash_secret(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


# -- create / read / change ----------------------------------------------------------------------

def _spec(platform: Platform, kind: str, fields: dict[str, Any]) -> dict[str, Any]:
    for other, names in _KIND_FIELDS.items():
        for field in names:
            if other != kind and fields.get(field) is not None:
                raise InvalidInput(f"{field}: only for {other} triggers, not {kind}")
    unknown = set(fields) - {f for names in _KIND_FIELDS.values() for f in names}
    if unknown:
        raise InvalidInput(f"{sorted(unknown)[0]}: not a trigger field")
    if kind == "objects":
        location = parse_location(fields.get("objects_uri") or "", platform.settings)
        suffix = fields.get("suffix") or None
        return {"objects_uri": fields.get("objects_uri"), "uri": location.uri,
                "location": location.to_spec(), "suffix": suffix}
    if kind == "cron":
        return cron_mod.validate(fields.get("cron"), fields.get("tz"), fields.get("missed"))
    if kind == "alert":
        monitor = (fields.get("monitor") or "").strip()
        if not monitor:
            raise InvalidInput("monitor: name the model monitor whose alerts fire this trigger")
        try:
            platform.monitors.get(monitor)
        except NotFound:
            raise InvalidInput(f"monitor: monitor {monitor!r} not found (see `loopml monitors list`)") from None
        return {"monitor": monitor}
    return {}


def create_trigger(platform: Platform, name: str, kind: str, *, function: str | None = None,
                   workflow: str | None = None, now: Callable[[], datetime] = utcnow,
                   **fields: Any) -> dict[str, Any]:
    """A new active trigger. ``fields``: objects_uri, suffix (objects); cron, tz, missed (cron);
    monitor (alert). A webhook's record carries its ``secret``: returned here only, once."""
    trigger_name(name)
    if kind not in KINDS:
        raise InvalidInput(f"kind: {kind!r} is not one of {', '.join(KINDS)}")
    if (function is None) == (workflow is None):
        raise InvalidInput("target: give exactly one of function or workflow")
    target_kind, target = ("function", function) if function is not None else ("workflow", workflow)
    spec = _spec(platform, kind, fields)
    secret = cursor = None
    seen: list[tuple[str, str]] = []
    if kind == "webhook":
        secret = secrets.token_urlsafe(32)
    elif kind == "cron":
        cursor = {"last": iso(now())}  # the first run is the first scheduled time after creation
    elif kind == "objects":
        seen = [(o.key, o.etag) for o in _list(platform, spec, settled_only=False).values()]
    record = platform.triggers.create(name, kind, spec, target_kind, str(target),
                                      secret_hash=hash_secret(secret) if secret else None,
                                      hook_secret=secret, cursor=cursor, seen=seen)
    if secret:
        record["secret"] = secret
    return record


def _list(platform: Platform, spec: dict[str, Any], *, settled_only: bool) -> dict[str, Any]:
    from loopml.triggers.objects import Location

    lister = ObjectLister(Location.from_spec(spec["location"]), platform.settings, spec.get("suffix"))
    try:
        return lister.list(settled_only=settled_only)
    except LoopMLError:
        raise
    except Exception as exc:  # noqa: BLE001 - credentials, endpoint, permissions: say which URI
        raise InvalidInput(f"objects_uri: cannot list {spec['uri']}: {type(exc).__name__}: {exc}",
                           field="objects_uri") from None


def get_trigger(platform: Platform, name: str) -> dict[str, Any]:
    return _with_next(platform.triggers.get(name))


def list_triggers(platform: Platform) -> list[dict[str, Any]]:
    return [_with_next(r) for r in platform.triggers.list()]


def _with_next(record: dict[str, Any]) -> dict[str, Any]:
    if record["kind"] == "cron" and record["status"] == ACTIVE and (record.get("cursor") or {}).get("last"):
        from loopml.core.timeutil import parse_iso

        spec = record["spec"]
        try:
            record["next_run"] = iso(cron_mod.next_time(spec["cron"], spec["tz"], parse_iso(record["cursor"]["last"])))
        except Exception:  # noqa: BLE001 - a schedule with no next date must not break list/show
            record["next_run"] = None
    return record


_UPDATABLE = {"objects": ("suffix",), "cron": ("cron", "tz", "missed"), "webhook": (), "alert": ()}


def update_trigger(platform: Platform, name: str, *, function: str | None = None, workflow: str | None = None,
                   suffix: str | None = None, cron: str | None = None, tz: str | None = None,
                   missed: str | None = None, now: Callable[[], datetime] = utcnow) -> dict[str, Any]:
    """Change a trigger's target (function or workflow), an object trigger's ``suffix`` ("" removes
    it) or a cron trigger's ``cron`` / ``tz`` / ``missed``; what is not given is kept.

    A new schedule starts from now (times it would have had before do not fire). Objects that a
    wider suffix brings into scope and that are already there are recorded as seen (like at
    creation); objects in the old scope keep their state, so none is lost or fired twice."""
    current = platform.triggers.get(name)
    kind = current["kind"]
    given = {k: v for k, v in {"suffix": suffix, "cron": cron, "tz": tz, "missed": missed}.items() if v is not None}
    for field in given:
        if field not in _UPDATABLE[kind]:
            raise InvalidInput(f"{field}: only for {'objects' if field == 'suffix' else 'cron'} triggers; "
                               f"trigger {name!r} is a {kind} trigger")
    if function is not None and workflow is not None:
        raise InvalidInput("target: give one of function or workflow, not both")
    target = ("function", function) if function is not None else ("workflow", workflow) if workflow is not None else None
    if not given and target is None:
        raise InvalidInput("nothing to change: give a new target (function or workflow)"
                           + {"objects": ", suffix", "cron": ", cron, tz or missed"}.get(kind, ""))
    spec, cursor, seen = None, None, []
    if kind == "cron" and given:
        old = current["spec"]
        spec = cron_mod.validate(given.get("cron", old["cron"]), given.get("tz", old["tz"]),
                                 given.get("missed", old.get("missed")))
        if (spec["cron"], spec["tz"]) != (old["cron"], old["tz"]):
            cursor = {"last": iso(now())}
    elif kind == "objects" and given:
        old_suffix = current["spec"].get("suffix")
        spec = {**current["spec"], "suffix": given["suffix"] or None}
        seen = [(o.key, o.etag) for o in _list(platform, spec, settled_only=False).values()
                if old_suffix is not None and not o.key.endswith(old_suffix)]
    platform.triggers.update(name, spec=spec, target=target, cursor=cursor, seen=seen)
    return get_trigger(platform, name)


def pause_trigger(platform: Platform, name: str) -> dict[str, Any]:
    return platform.triggers.set_status(name, PAUSED)


def resume_trigger(platform: Platform, name: str, *, now: Callable[[], datetime] = utcnow) -> dict[str, Any]:
    """Objects that arrived while paused fire after resume (the cursor kept them); scheduled times
    that passed while paused are not runs missed by an outage: the schedule restarts from now."""
    current = platform.triggers.get(name)
    cursor = {"last": iso(now())} if current["kind"] == "cron" and current["status"] == PAUSED else None
    return _with_next(platform.triggers.set_status(name, ACTIVE, cursor=cursor))


def delete_trigger(platform: Platform, name: str) -> None:
    platform.triggers.delete(name)


def history(platform: Platform, name: str, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
    return platform.triggers.firings(name, limit=limit, offset=offset)


# -- firing from outside: tests, webhooks, monitor alerts ----------------------------------------

def _started(firing: dict[str, Any]) -> dict[str, Any]:
    answer = {"firing": firing["id"], "status": firing["status"],
              "started": {"kind": firing["target"]["kind"], "id": firing["started_id"]}
              if firing["started_id"] else None}
    if firing.get("error"):
        answer["error"] = firing["error"]
    return answer


def fire_manual(platform: Platform, name: str, event: Any = None) -> dict[str, Any]:
    """The console's Test button: one firing (no dedupe) with ``event`` or a sample of the trigger's
    own shape; works on a paused trigger too (it is an explicit request)."""
    record = platform.triggers.get(name)
    written = platform.triggers.fire(name, [Firing(sample_event(record) if event is None else event)],
                                     require_active=False)
    if not written:
        raise NotFound(f"trigger {name!r} not found")
    return _started(written[0])


def _redrivable(firing: dict[str, Any]) -> bool:
    """A failed firing whose event is what the source meant (not a webhook body that was not JSON)."""
    return firing["status"] == FAILED and not (firing.get("error") or "").startswith("body:")


def redrive(platform: Platform, name: str, firing_id: int | None = None) -> list[dict[str, Any]]:
    """Start the target again for failed firings, each with its original event (plus
    ``redrive_of``): firing ``firing_id``, or every failed firing not redriven yet, oldest first.
    Each redrive is a firing of its own, deduplicated on ``redrive:<id>``: a firing is redriven at
    most once, however often (or concurrently) this is called. Refused while the target is missing."""
    missing = platform.triggers.target_missing(name)
    if missing:
        raise Conflict(f"trigger {name!r} cannot redrive: its target {missing} (create it, or point the "
                       f"trigger elsewhere with `loopml triggers update {name}`)")
    if firing_id is not None:
        firing = platform.triggers.firing(name, firing_id)
        if not _redrivable(firing):
            raise Conflict(f"firing {firing_id} of trigger {name!r} did not fail ({firing['status']}): "
                           "nothing to redrive" if firing["status"] != FAILED else
                           f"firing {firing_id} of trigger {name!r} failed on its input ({firing['error']}): "
                           "redriving cannot help")
        done = platform.triggers.firing_by_dedupe(name, f"{REDRIVE_PREFIX}{firing_id}")
        if done is not None:
            raise Conflict(f"firing {firing_id} of trigger {name!r} was already redriven by firing {done['id']}")
        todo = [firing]
    else:
        todo = [f for f in platform.triggers.failed_firings(name) if f["redriven_by"] is None and _redrivable(f)]
    answers = []
    for firing in todo:
        event = firing["event"]
        if isinstance(event, dict):
            event = {**event, "redrive_of": firing["id"]}
        written = platform.triggers.fire(name, [Firing(event, dedupe_key=f"{REDRIVE_PREFIX}{firing['id']}")],
                                         require_active=False)
        if written:  # else someone redrove it meanwhile
            answers.append({**_started(written[0]), "redrive_of": firing["id"]})
    if firing_id is not None and not answers:
        raise Conflict(f"firing {firing_id} of trigger {name!r} was already redriven")
    return answers


def _check_signature(name: str, signature: str, hook_secret: str | None, body: bytes) -> None:
    """GitHub's ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``."""
    if hook_secret is None:
        raise Unauthorized(f"webhook {name!r} was created before signatures were supported: send "
                           "'Authorization: Bearer SECRET' (or re-create it to use X-Hub-Signature-256)")
    scheme, _, digest = signature.strip().partition("=")
    if scheme != "sha256" or not digest:
        raise Unauthorized(f"webhook {name!r}: X-Hub-Signature-256 must be 'sha256=<hex digest>'")
    expected = hmac.new(hook_secret.encode(), body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(digest.lower().encode(), expected.encode()):
        if len(body) > MAX_WEBHOOK_BODY:  # only the first bytes were read: it cannot match
            raise InvalidInput(f"body: more than the {MAX_WEBHOOK_BODY} bytes allowed")
        raise Unauthorized(f"X-Hub-Signature-256 does not match the body for webhook {name!r} "
                           "(HMAC-SHA256 of the raw body with the hook's secret)")


def check_webhook_secret(platform: Platform, name: str, *, secret: str | None, signature: str | None = None,
                         body: bytes | None = None) -> str:
    """The hook's status when ``secret`` (or ``signature``, an HMAC of ``body``) opens webhook
    ``name``; else NotFound (the same answer for a missing hook and any other kind of trigger: an
    anonymous caller learns nothing about the others) or Unauthorized. With a signature and
    ``body`` None only the hook's existence is checked: the HMAC needs the body."""
    try:
        kind, status, secret_hash, hook_secret = platform.triggers.secret_hash(name)
    except NotFound:
        kind, secret_hash = None, None
    if kind != "webhook" or not secret_hash:
        raise NotFound(f"no webhook trigger {name!r}") from None
    if secret:
        if not hmac.compare_digest(hash_secret(secret), secret_hash):
            raise Unauthorized(f"wrong secret for webhook {name!r}")
    elif signature:
        if body is not None:
            _check_signature(name, signature, hook_secret, body)
    else:
        raise Unauthorized(f"webhook {name!r} needs its secret: send 'Authorization: Bearer SECRET', "
                           "'X-LoopML-Hook-Secret: SECRET' or a GitHub-style 'X-Hub-Signature-256' "
                           "(HMAC-SHA256 of the body with the secret)")
    return status


def fire_webhook(platform: Platform, name: str, *, secret: str | None, body: bytes,
                 headers: dict[str, str], signature: str | None = None) -> dict[str, Any]:
    """``POST /hooks/{name}``: check the secret (Bearer) or the body's HMAC signature, parse the
    body, fire (once per Idempotency-Key, or GitHub's X-GitHub-Delivery)."""
    status = check_webhook_secret(platform, name, secret=secret, signature=signature, body=body)
    if status != ACTIVE:
        raise Conflict(f"trigger {name!r} is paused: resume it with `loopml triggers resume {name}`")
    problem, parsed = _parse_body(body)
    if problem:
        event = webhook_event(name, None, headers)
        event["raw_body"] = body[:2000].decode("utf-8", "replace")
        platform.triggers.fire(name, [Firing(event, status=FAILED, error=problem)])
        raise InvalidInput(problem)
    key = headers.get("idempotency-key") or headers.get("x-github-delivery") or None
    if key and len(key) > 1000:
        raise InvalidInput("Idempotency-Key: at most 1000 characters")
    if key and key.startswith(REDRIVE_PREFIX):
        raise InvalidInput(f"Idempotency-Key: {REDRIVE_PREFIX!r} is reserved for redrives; use another key")
    written = platform.triggers.fire(name, [Firing(webhook_event(name, parsed, headers), dedupe_key=key)])
    if written:
        return _started(written[0])
    previous = platform.triggers.firing_by_dedupe(name, key) if key else None
    if previous is None:  # paused or deleted between the check and the write
        raise Conflict(f"trigger {name!r} is not active")
    return {**_started(previous), "duplicate": True}


def _parse_body(body: bytes) -> tuple[str | None, Any]:
    if len(body) > MAX_WEBHOOK_BODY:
        return f"body: more than the {MAX_WEBHOOK_BODY} bytes allowed", None
    if not body.strip():
        return None, {}
    try:
        return None, loads_strict(body)
    except NotStrictJSON as exc:  # NaN / Infinity: not JSON, and PostgreSQL's json type refuses them
        return f"body: not valid JSON ({exc})", None
    except UnicodeDecodeError:
        return "body: not UTF-8 text; send JSON", None
    except json.JSONDecodeError as exc:
        return f"body: not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})", None


def fire_alert(platform: Platform, monitor: str, alert: dict[str, Any]) -> list[dict[str, Any]]:
    """Fire every active alert trigger on ``monitor`` once per ``alert["id"]`` (what model monitors
    call). Returns the firings written (none for an alert id already fired)."""
    if not isinstance(alert, dict):
        raise InvalidInput("alert: must be an object with an 'id'")
    alert_id = alert.get("id")
    dedupe = str(alert_id) if alert_id is not None else None
    written: list[dict[str, Any]] = []
    for trigger in platform.triggers.active(["alert"]):
        if trigger["spec"].get("monitor") != monitor:
            continue
        firing = Firing(alert_event(trigger["name"], monitor, alert), dedupe_key=dedupe)
        written += platform.triggers.fire(trigger["name"], [firing])
    return written
