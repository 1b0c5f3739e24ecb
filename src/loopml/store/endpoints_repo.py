"""Real-time endpoints: desired spec, resolved versions, and what the serving process reports.

Writers: the API (create/update/delete), the control plane (alias moves → ``re_resolve``,
serving-process restarts → ``reset_served``) and the serving process (``report``). Every
write that depends on a generation is conditional on it, so a slow serving process can never
mark a newer spec as served.
"""

from __future__ import annotations

import uuid
from typing import Any, Iterator

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

from loopml.core.errors import Conflict
from loopml.core.timeutil import iso, utcnow
from loopml.store import tables as t
from loopml.store.db import MetadataStore
from loopml.store.names import missing

CREATING, UPDATING, IN_SERVICE, FAILED = "Creating", "Updating", "InService", "Failed"


def model_refs(spec: dict[str, Any] | None) -> Iterator[dict[str, Any]]:
    """The model references an endpoint's spec (or its resolved form) holds: its variants, then
    its shadow. The one reader of that shape for everything that asks "who uses this model"."""
    spec = spec or {}
    yield from spec.get("variants") or []
    if spec.get("shadow"):
        yield spec["shadow"]


def endpoint_record(e: t.Endpoint) -> dict[str, Any]:
    return {"name": e.name, "uid": e.uid, "spec": e.spec, "resolved": e.resolved, "generation": e.generation,
            "status": e.status, "message": e.message, "served_generation": e.served_generation,
            "served": e.served,
            "ready": e.status == IN_SERVICE and e.served_generation == e.generation,
            "created_at": iso(e.created_at), "updated_at": iso(e.updated_at)}


class EndpointRepo:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    def _row(self, s, name: str, *, lock: bool = False) -> t.Endpoint:
        row = s.get(t.Endpoint, name, with_for_update=lock)
        if row is None:
            raise missing(s, t.Endpoint, "endpoint", name)
        return row

    def create(self, name: str, spec: dict[str, Any], resolved: dict[str, Any]) -> dict[str, Any]:
        try:
            with self.store.session() as s:
                if s.get(t.Endpoint, name) is not None:
                    raise Conflict(f"endpoint {name!r} already exists; use `loopml endpoints "
                                   "update` to change it")
                now = utcnow()
                row = t.Endpoint(name=name, uid=uuid.uuid4().hex, spec=spec, resolved=resolved, generation=1,
                                 status=CREATING, served_generation=0, created_at=now,
                                 updated_at=now)
                s.add(row)
                s.flush()
                return endpoint_record(row)
        except IntegrityError:
            raise Conflict(f"endpoint {name!r} already exists") from None

    def get(self, name: str) -> dict[str, Any]:
        with self.store.session() as s:
            return endpoint_record(self._row(s, name))

    def list(self) -> list[dict[str, Any]]:
        with self.store.session() as s:
            rows = s.execute(select(t.Endpoint).order_by(t.Endpoint.name)).scalars()
            return [endpoint_record(e) for e in rows]

    def generations(self) -> dict[str, tuple[str, int]]:
        """name → (uid, generation): the serving process's cheap poll."""
        with self.store.session() as s:
            rows = s.execute(select(t.Endpoint.name, t.Endpoint.uid, t.Endpoint.generation))
            return {name: (uid, gen) for name, uid, gen in rows}

    def update(self, name: str, spec: dict[str, Any], resolved: dict[str, Any],
               message: str | None = None) -> dict[str, Any]:
        with self.store.session() as s:
            row = self._row(s, name, lock=True)
            row.spec, row.resolved = spec, resolved
            row.generation += 1
            row.status, row.message, row.updated_at = UPDATING, message, utcnow()
            s.flush()
            return endpoint_record(row)

    def re_resolve(self, name: str, generation: int, resolved: dict[str, Any],
                   message: str) -> bool:
        """The control plane saw an alias move: new resolved versions, if nobody changed the
        endpoint meanwhile. Returns whether it applied."""
        with self.store.session() as s:
            return bool(s.execute(
                update(t.Endpoint).where(t.Endpoint.name == name,
                                         t.Endpoint.generation == generation)
                .values(resolved=resolved, generation=generation + 1, status=UPDATING,
                        message=message, updated_at=utcnow())).rowcount)

    def delete(self, name: str) -> None:
        with self.store.session() as s:
            s.delete(self._row(s, name))

    def report(self, name: str, generation: int, *, ok: bool, served: dict[str, Any] | None,
               message: str | None = None, uid: str | None = None) -> bool:
        """The serving process: ``generation`` is loaded (ok) or failed to load. Applies only
        while that generation (of that incarnation ``uid``) is still the desired one."""
        values: dict[str, Any] = {"updated_at": utcnow(), "message": message}
        if ok:
            values.update(status=IN_SERVICE, served_generation=generation, served=served)
        else:
            values.update(status=FAILED)
        with self.store.session() as s:
            query = update(t.Endpoint).where(t.Endpoint.name == name,
                                             t.Endpoint.generation == generation)
            if uid is not None:
                query = query.where(t.Endpoint.uid == uid)
            return bool(s.execute(query.values(**values)).rowcount)

    def reset_served(self, message: str) -> None:
        """The serving process (re)started: nothing is served until it reports again."""
        with self.store.session() as s:
            s.execute(update(t.Endpoint).where(t.Endpoint.served_generation != 0)
                      .values(served_generation=0, status=UPDATING, message=message,
                              updated_at=utcnow()))
