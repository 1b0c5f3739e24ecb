"""Triggers, the objects they have seen, and their firings.

Exactly once: a firing row, the row of what it starts (a queued invocation or a pending
execution, ``store.automation_rows``) and, for object triggers, the seen-object row are written in
ONE transaction. ``trigger_firings`` is unique on (trigger, dedupe_key), so a second attempt at the
same object / scheduled time / idempotency key / alert is refused by the database and skipped.
Every firing transaction starts by updating its trigger's row (only while it is active), which
takes the write lock on SQLite and the row lock on PostgreSQL: firings of one trigger are
serialised, and a trigger deleted or paused meanwhile fires nothing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError

from loopml.core.errors import Conflict, InvalidInput, NotFound
from loopml.core.timeutil import iso, utcnow
from loopml.store import tables as t
from loopml.store.automation_rows import pending_execution, queued_invocation
from loopml.store.db import MetadataStore
from loopml.store.names import missing

ACTIVE, PAUSED = "active", "paused"
STARTED, FAILED, SKIPPED = "started", "failed", "skipped"
OBJECT_BATCH = 100  # objects per firing transaction: a crash loses nothing and repeats nothing
REDRIVE_PREFIX = "redrive:"  # dedupe key of a redrive: "redrive:<firing id>", so at most one each


@dataclass
class Firing:
    """One firing to write: what happened (event), its dedupe key, and for objects the seen row."""

    event: Any
    dedupe_key: str | None = None
    seen: tuple[str, str] | None = None  # (key, etag) recorded with the firing
    status: str = STARTED  # started: start the target; skipped / failed: record only
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def redrive_of(dedupe_key: str | None) -> int | None:
    """The firing a redrive re-drove (its dedupe key is exactly ``redrive:<id>``), else None."""
    if dedupe_key and dedupe_key.startswith(REDRIVE_PREFIX) and dedupe_key[len(REDRIVE_PREFIX):].isdigit():
        return int(dedupe_key[len(REDRIVE_PREFIX):])
    return None


def firing_record(f: t.TriggerFiring) -> dict[str, Any]:
    return {"id": f.id, "trigger": f.trigger, "at": iso(f.at), "status": f.status,
            "dedupe_key": f.dedupe_key, "target": {"kind": f.target_kind, "name": f.target},
            "started_id": f.started_id, "error": f.error, "event": f.event,
            "redrive_of": redrive_of(f.dedupe_key)}


def trigger_record(row: t.Trigger, last: t.TriggerFiring | None = None,
                   objects_seen: int | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {
        "name": row.name, "kind": row.kind, "spec": row.spec,
        "target": {"kind": row.target_kind, "name": row.target}, "status": row.status,
        "cursor": row.cursor, "created_at": iso(row.created_at), "updated_at": iso(row.updated_at),
        "last_firing": firing_record(last) if last is not None else None,
    }
    if row.kind == "webhook":
        record["url"] = f"/hooks/{row.name}"
        record["signatures"] = row.hook_secret is not None  # X-Hub-Signature-256 accepted
    if objects_seen is not None:
        record["objects_seen"] = objects_seen
    return record


class TriggerRepo:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    # -- records -------------------------------------------------------------------------
    @staticmethod
    def _row(s, name: str) -> t.Trigger:
        row = s.get(t.Trigger, name)
        if row is None:
            raise missing(s, t.Trigger, "trigger", name)
        return row

    @staticmethod
    def _target_missing(s, target_kind: str, target: str) -> str | None:
        table = t.Function if target_kind == "function" else t.Workflow
        return None if s.get(table, target) is not None else f"{target_kind} {target!r} not found"

    @staticmethod
    def _last_firing(s, name: str) -> t.TriggerFiring | None:
        return s.execute(select(t.TriggerFiring).where(t.TriggerFiring.trigger == name)
                         .order_by(t.TriggerFiring.id.desc()).limit(1)).scalar_one_or_none()

    def create(self, name: str, kind: str, spec: dict[str, Any], target_kind: str, target: str, *,
               secret_hash: str | None = None, hook_secret: str | None = None,
               cursor: dict[str, Any] | None = None, seen: Iterable[tuple[str, str]] = ()) -> dict[str, Any]:
        """A new active trigger; ``seen`` (key, etag) are the objects already there (never fired)."""
        try:
            with self.store.session() as s:
                if s.get(t.Trigger, name) is not None:
                    raise Conflict(f"trigger {name!r} already exists; delete it first to change it")
                gone = self._target_missing(s, target_kind, target)
                if gone:
                    raise InvalidInput(f"{target_kind}: {gone}")
                now = utcnow()
                row = t.Trigger(name=name, kind=kind, spec=spec, target_kind=target_kind, target=target,
                                status=ACTIVE, secret_hash=secret_hash, hook_secret=hook_secret,
                                cursor=cursor, created_at=now,
                                updated_at=now)
                s.add(row)
                s.flush()
                objects = [{"trigger": name, "key": key, "etag": etag, "seen_at": now} for key, etag in seen]
                for start in range(0, len(objects), 1000):
                    s.execute(t.TriggerObject.__table__.insert(), objects[start:start + 1000])
                return trigger_record(row, None, len(objects) if kind == "objects" else None)
        except IntegrityError:
            raise Conflict(f"trigger {name!r} already exists") from None

    def get(self, name: str) -> dict[str, Any]:
        with self.store.session() as s:
            row = self._row(s, name)
            seen = None
            if row.kind == "objects":
                seen = s.execute(select(func.count()).select_from(t.TriggerObject)
                                 .where(t.TriggerObject.trigger == name)).scalar_one()
            return trigger_record(row, self._last_firing(s, name), seen)

    def list(self, *, kind: str | None = None, status: str | None = None) -> list[dict[str, Any]]:
        with self.store.session() as s:
            query = select(t.Trigger).order_by(t.Trigger.name)
            if kind:
                query = query.where(t.Trigger.kind == kind)
            if status:
                query = query.where(t.Trigger.status == status)
            rows = list(s.execute(query).scalars())
            last_ids = {name: last for name, last in s.execute(
                select(t.TriggerFiring.trigger, func.max(t.TriggerFiring.id)).group_by(t.TriggerFiring.trigger))}
            lasts = {f.trigger: f for f in s.execute(
                select(t.TriggerFiring).where(t.TriggerFiring.id.in_(list(last_ids.values())))).scalars()}
            return [trigger_record(r, lasts.get(r.name)) for r in rows]

    def secret_hash(self, name: str) -> tuple[str, str, str | None, str | None]:
        """(kind, status, secret_hash, hook_secret) of a trigger: what the webhook route checks
        (``hook_secret``: None for webhooks created before signatures were supported)."""
        with self.store.session() as s:
            row = self._row(s, name)
            return row.kind, row.status, row.secret_hash, row.hook_secret

    def update(self, name: str, *, spec: dict[str, Any] | None = None, target: tuple[str, str] | None = None,
               cursor: dict[str, Any] | None = None, seen: Iterable[tuple[str, str]] = ()) -> dict[str, Any]:
        """Change a trigger's spec / target (which must exist) / cursor in one transaction; ``seen``
        (key, etag) are objects newly in scope that are already there (recorded, never fired)."""
        with self.store.session() as s:
            row = s.get(t.Trigger, name, with_for_update=True)
            if row is None:
                raise missing(s, t.Trigger, "trigger", name)
            if target is not None:
                gone = self._target_missing(s, *target)
                if gone:
                    raise InvalidInput(f"{target[0]}: {gone}")
                row.target_kind, row.target = target
            if spec is not None:
                row.spec = spec
            if cursor is not None:
                row.cursor = cursor
            row.updated_at = now = utcnow()
            known = set(s.execute(select(t.TriggerObject.key).where(t.TriggerObject.trigger == name)).scalars())
            s.add_all(t.TriggerObject(trigger=name, key=key, etag=etag, seen_at=now)
                      for key, etag in seen if key not in known)
            s.flush()
            return trigger_record(row, self._last_firing(s, name))

    def set_status(self, name: str, status: str, *, cursor: dict[str, Any] | None = None) -> dict[str, Any]:
        with self.store.session() as s:
            row = self._row(s, name)
            row.status, row.updated_at = status, utcnow()
            if cursor is not None:
                row.cursor = cursor
            s.flush()
            return trigger_record(row, self._last_firing(s, name))

    def delete(self, name: str) -> None:
        with self.store.session() as s:
            self._row(s, name)
            s.execute(delete(t.TriggerObject).where(t.TriggerObject.trigger == name))
            s.execute(delete(t.TriggerFiring).where(t.TriggerFiring.trigger == name))
            s.execute(delete(t.Trigger).where(t.Trigger.name == name))

    def firings(self, name: str, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        """Every firing of ``name``, newest first; ``offset`` skips that many (paging)."""
        with self.store.session() as s:
            self._row(s, name)
            rows = s.execute(select(t.TriggerFiring).where(t.TriggerFiring.trigger == name)
                             .order_by(t.TriggerFiring.id.desc()).limit(max(1, limit))
                             .offset(max(0, offset))).scalars()
            return [firing_record(f) for f in rows]

    def count_firings(self, name: str, status: str | None = None) -> int:
        with self.store.session() as s:
            query = select(func.count()).select_from(t.TriggerFiring).where(t.TriggerFiring.trigger == name)
            if status:
                query = query.where(t.TriggerFiring.status == status)
            return s.execute(query).scalar_one()

    def firing(self, name: str, firing_id: int) -> dict[str, Any]:
        with self.store.session() as s:
            self._row(s, name)
            row = s.get(t.TriggerFiring, firing_id)
            if row is None or row.trigger != name:
                raise NotFound(f"trigger {name!r} has no firing {firing_id}")
            return firing_record(row)

    def failed_firings(self, name: str) -> list[dict[str, Any]]:
        """Failed firings of ``name``, oldest first, each with ``redriven_by`` (the id of the
        firing that re-drove it, or None)."""
        with self.store.session() as s:
            self._row(s, name)
            redrives = {redrive_of(key): firing_id for key, firing_id in s.execute(
                select(t.TriggerFiring.dedupe_key, t.TriggerFiring.id).where(
                    t.TriggerFiring.trigger == name, t.TriggerFiring.dedupe_key.like(REDRIVE_PREFIX + "%")))}
            rows = s.execute(select(t.TriggerFiring).where(t.TriggerFiring.trigger == name,
                                                           t.TriggerFiring.status == FAILED)
                             .order_by(t.TriggerFiring.id)).scalars()
            return [{**firing_record(f), "redriven_by": redrives.get(f.id)} for f in rows]

    def target_missing(self, name: str) -> str | None:
        """"function 'x' not found" when the trigger's target does not exist (else None)."""
        with self.store.session() as s:
            row = self._row(s, name)
            return self._target_missing(s, row.target_kind, row.target)

    def firing_by_dedupe(self, name: str, dedupe_key: str) -> dict[str, Any] | None:
        with self.store.session() as s:
            row = s.execute(select(t.TriggerFiring).where(t.TriggerFiring.trigger == name,
                                                          t.TriggerFiring.dedupe_key == dedupe_key)
                            ).scalar_one_or_none()
            return firing_record(row) if row is not None else None

    def dead_letter(self, invocation_id: str, error: str) -> dict[str, Any] | None:
        """Mark the firing that started function invocation ``invocation_id`` failed with ``error``
        (its retries are used up): ``triggers redrive`` replays it. Returns the firing (None when no
        trigger started that invocation)."""
        with self.store.session() as s:
            row = s.execute(select(t.TriggerFiring).where(t.TriggerFiring.target_kind == "function",
                                                          t.TriggerFiring.started_id == invocation_id)
                            ).scalar_one_or_none()
            if row is None:
                return None
            row.status, row.error = FAILED, error
            s.flush()
            return firing_record(row)

    # -- polling state -------------------------------------------------------------------------
    def active(self, kinds: Iterable[str]) -> list[dict[str, Any]]:
        """Active triggers of these kinds (name, kind, spec, cursor): the poller's cheap read."""
        with self.store.session() as s:
            rows = s.execute(select(t.Trigger.name, t.Trigger.kind, t.Trigger.spec, t.Trigger.cursor)
                             .where(t.Trigger.status == ACTIVE, t.Trigger.kind.in_(list(kinds)))
                             .order_by(t.Trigger.name))
            return [{"name": n, "kind": k, "spec": sp, "cursor": c} for n, k, sp, c in rows]

    def seen(self, name: str) -> dict[str, str]:
        """key → etag of every object the trigger has seen."""
        with self.store.session() as s:
            rows = s.execute(select(t.TriggerObject.key, t.TriggerObject.etag)
                             .where(t.TriggerObject.trigger == name))
            return {key: etag for key, etag in rows}

    # -- firing (one transaction each) ---------------------------------------------------------
    def fire(self, name: str, firings: list[Firing], *, cursor: dict[str, Any] | None = None,
             require_active: bool = True) -> list[dict[str, Any]]:
        """Write ``firings`` (and the new ``cursor``) in one transaction; returns the firings
        written. Firings whose dedupe key was already used, and objects already seen with the same
        etag, are skipped silently. A trigger that is gone (or paused, with ``require_active``)
        fires nothing. If another writer raced us to a dedupe key, the batch is retried one firing
        per transaction so the others still fire."""
        if not firings and cursor is None:
            return []
        try:
            return self._fire_tx(name, firings, cursor, require_active)
        except IntegrityError:
            if len(firings) <= 1:
                return []  # the one firing was written by someone else: already fired
        written: list[dict[str, Any]] = []
        for one in firings:
            try:
                written += self._fire_tx(name, [one], None, require_active)
            except IntegrityError:
                continue
        if cursor is not None:
            self._fire_tx(name, [], cursor, require_active)
        return written

    def _fire_tx(self, name: str, firings: list[Firing], cursor: dict[str, Any] | None,
                 require_active: bool) -> list[dict[str, Any]]:
        now = utcnow()
        with self.store.session() as s:
            values: dict[str, Any] = {"updated_at": now}
            if cursor is not None:
                values["cursor"] = cursor
            lock = update(t.Trigger).where(t.Trigger.name == name)
            if require_active:
                lock = lock.where(t.Trigger.status == ACTIVE)
            if not s.execute(lock.values(**values)).rowcount:
                return []
            row = s.get(t.Trigger, name)
            assert row is not None
            keys = [f.dedupe_key for f in firings if f.dedupe_key is not None]
            used = set(s.execute(select(t.TriggerFiring.dedupe_key).where(
                t.TriggerFiring.trigger == name, t.TriggerFiring.dedupe_key.in_(keys))).scalars()) if keys else set()
            object_keys = [f.seen[0] for f in firings if f.seen]
            seen = {key: etag for key, etag in s.execute(select(t.TriggerObject.key, t.TriggerObject.etag).where(
                t.TriggerObject.trigger == name, t.TriggerObject.key.in_(object_keys)))} if object_keys else {}
            missing: str | None | bool = False  # looked up once per transaction, when needed
            written: list[t.TriggerFiring] = []
            for f in firings:
                if f.seen is not None:
                    key, etag = f.seen
                    if seen.get(key) == etag:
                        continue  # already fired for this content
                    if key in seen:
                        s.execute(update(t.TriggerObject).where(t.TriggerObject.trigger == name,
                                                                t.TriggerObject.key == key)
                                  .values(etag=etag, seen_at=now))
                    else:
                        s.add(t.TriggerObject(trigger=name, key=key, etag=etag, seen_at=now))
                    seen[key] = etag
                if f.dedupe_key is not None:
                    if f.dedupe_key in used:
                        continue  # e.g. an object overwritten back to content already fired
                    used.add(f.dedupe_key)
                status, error, started_id = f.status, f.error, None
                if status == STARTED:
                    if missing is False:
                        missing = self._target_missing(s, row.target_kind, row.target)
                    if missing:
                        status, error = FAILED, missing  # e.g. "function 'x' not found"
                    elif row.target_kind == "function":
                        inv = queued_invocation(row.target, f.event, source=f"trigger:{name}")
                        s.add(inv)
                        started_id = inv.id
                    else:
                        workflow = s.get(t.Workflow, row.target)
                        execution = pending_execution(workflow, f.event, source=f"trigger:{name}")
                        s.add(execution)
                        started_id = execution.id
                firing = t.TriggerFiring(trigger=name, dedupe_key=f.dedupe_key, event=f.event,
                                         target_kind=row.target_kind, target=row.target,
                                         started_id=started_id, status=status, error=error, at=now)
                s.add(firing)
                written.append(firing)
            s.flush()
            return [firing_record(f) for f in written]
