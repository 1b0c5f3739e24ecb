"""Data-plane nodes reporting themselves: ``serving_nodes`` (who serves what, where, how loaded).

Every data-plane process — the control plane's embedded one (kind ``embedded``), a standalone
``loopml serve`` node (``node``), a placed replica (``replica``, ``endpoint`` = its replica set) —
registers its row, heartbeats it with the endpoints it has loaded and its load, and marks it
``gone`` on a clean stop. A node that stops heartbeating (kill -9, lost machine) keeps its last
state in the row; readers call it *lost* once its heartbeat is older than a TTL (``lost``).

Times are the DATABASE's clock (as leases: store/leases_repo.py), so ages never depend on which
machine reads them. Each call is one short transaction on the node's own row: nodes never write
one another's rows, so no locking is needed.

Row shape (``node_record``)::

    {"id", "address", "kind", "endpoint", "state", "lost", "started_at" (ISO, UTC),
     "heartbeat_age_s", "endpoints_loaded" (list of endpoint names), "load" (dict), "version"}

``load`` is free-form JSON written by the node; the serving runtime writes
``{"endpoints": {name: {"in_flight", "queue", "rps", "latency_ms"}}, "in_flight", "rps"}``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any, Iterable

from sqlalchemy import delete, select, update

from loopml.core.errors import InvalidInput
from loopml.store import tables as t
from loopml.store.db import MetadataStore, db_now

NODE_KINDS = ("embedded", "node", "replica")
NODE_STATES = ("starting", "ready", "draining", "gone")
DEFAULT_LOST_AFTER_S = 15.0


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def node_record(row: t.ServingNode, now: float, lost_after_s: float = DEFAULT_LOST_AFTER_S) -> dict[str, Any]:
    age = max(0.0, now - row.heartbeat_at)
    return {"id": row.id, "address": row.address, "kind": row.kind, "endpoint": row.endpoint,
            "state": row.state, "lost": row.state != "gone" and age > lost_after_s,
            "started_at": _iso(row.started_at), "heartbeat_age_s": round(age, 3),
            "endpoints_loaded": list(row.endpoints_loaded or []), "load": dict(row.load or {}),
            "version": row.version}


def _check(kind: str | None = None, state: str | None = None) -> None:
    if kind is not None and kind not in NODE_KINDS:
        raise InvalidInput(f"node kind {kind!r} is not one of {', '.join(NODE_KINDS)}")
    if state is not None and state not in NODE_STATES:
        raise InvalidInput(f"node state {state!r} is not one of {', '.join(NODE_STATES)}")


class NodeRepo:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    def register(self, node_id: str, address: str, kind: str, *, endpoint: str | None = None,
                 state: str = "starting", version: str = "", endpoints_loaded: Iterable[str] = (),
                 load: dict[str, Any] | None = None) -> dict[str, Any]:
        """Insert the node's row (or reset it: a restart under the same id starts afresh)."""
        _check(kind, state)
        with self.store.session() as s:
            now = db_now(s)
            row = s.get(t.ServingNode, node_id)
            if row is None:
                row = t.ServingNode(id=node_id)
                s.add(row)
            row.address, row.kind, row.endpoint, row.state = address, kind, endpoint, state
            row.started_at = row.heartbeat_at = now
            row.endpoints_loaded, row.load, row.version = list(endpoints_loaded), dict(load or {}), version
            s.flush()
            return node_record(row, now)

    def heartbeat(self, node_id: str, *, endpoints_loaded: Iterable[str] | None = None,
                  load: dict[str, Any] | None = None, state: str | None = None) -> bool:
        """Refresh the heartbeat (and what is given); False when the row is gone (removed or
        collected): the node registers again."""
        _check(state=state)
        with self.store.session() as s:
            values: dict[str, Any] = {"heartbeat_at": db_now(s)}
            if endpoints_loaded is not None:
                values["endpoints_loaded"] = list(endpoints_loaded)
            if load is not None:
                values["load"] = dict(load)
            if state is not None:
                values["state"] = state
            done = s.execute(update(t.ServingNode).where(t.ServingNode.id == node_id).values(**values)).rowcount
            return done == 1

    def set_state(self, node_id: str, state: str) -> bool:
        """``draining`` before a planned stop, ``gone`` on a clean stop; False when no such row."""
        _check(state=state)
        with self.store.session() as s:
            values: dict[str, Any] = {"state": state, "heartbeat_at": db_now(s)}
            done = s.execute(update(t.ServingNode).where(t.ServingNode.id == node_id).values(**values)).rowcount
            return done == 1

    def get(self, node_id: str, *, lost_after_s: float = DEFAULT_LOST_AFTER_S) -> dict[str, Any] | None:
        with self.store.session() as s:
            row = s.get(t.ServingNode, node_id)
            return node_record(row, db_now(s), lost_after_s) if row is not None else None

    def list(self, live_within_s: float | None = None, *, kind: str | None = None,
             endpoint: str | None = None, serving: str | None = None,
             lost_after_s: float = DEFAULT_LOST_AFTER_S) -> list[dict[str, Any]]:
        """Nodes by id. ``live_within_s``: only those that heartbeat within that many seconds and
        are not gone; ``kind``/``endpoint``: column filters; ``serving``: only nodes whose
        ``endpoints_loaded`` names that endpoint. ``lost`` in each record uses ``lost_after_s``."""
        _check(kind=kind)
        with self.store.session() as s:
            now = db_now(s)
            q = select(t.ServingNode).order_by(t.ServingNode.id)
            if live_within_s is not None:
                q = q.where(t.ServingNode.heartbeat_at >= now - live_within_s, t.ServingNode.state != "gone")
            if kind is not None:
                q = q.where(t.ServingNode.kind == kind)
            if endpoint is not None:
                q = q.where(t.ServingNode.endpoint == endpoint)
            rows = [node_record(r, now, lost_after_s) for r in s.execute(q).scalars()]
        if serving is not None:  # JSON membership, portable across SQLite and PostgreSQL
            rows = [r for r in rows if serving in r["endpoints_loaded"]]
        return rows

    def remove(self, node_id: str) -> bool:
        with self.store.session() as s:
            return s.execute(delete(t.ServingNode).where(t.ServingNode.id == node_id)).rowcount == 1

    def gc(self, older_than_s: float) -> int:
        """Delete the rows of nodes gone or silent for more than ``older_than_s``; returns how many."""
        with self.store.session() as s:
            cutoff = db_now(s) - older_than_s
            return s.execute(delete(t.ServingNode).where(
                t.ServingNode.heartbeat_at < cutoff)).rowcount or 0


__all__ = ["DEFAULT_LOST_AFTER_S", "NODE_KINDS", "NODE_STATES", "NodeRepo", "node_record"]
