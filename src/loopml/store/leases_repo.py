"""Leases with a fencing epoch: which control plane leads (``controlplane/leadership.py``).

Every time is the DATABASE's clock (``clock_timestamp()`` on PostgreSQL), so two servers with
skewed clocks still agree on who holds a lease. Rules, each one transaction:

* ``acquire``: only a free or expired lease is taken; the taker gets ``epoch + 1`` (epochs never
  go back, also across holders), so a write fenced on an older epoch can be told apart;
* ``renew``: only by the holder of the current epoch (nobody took over since);
* ``check`` (inside a caller's transaction): the lease is still held at that epoch and has not
  expired; on PostgreSQL it takes a SHARE lock on the lease row, so a takeover (an UPDATE of the
  row) waits until the caller's transaction has committed or rolled back — the check and the
  caller's writes are atomic with respect to a new leader;
* ``release``: a clean stop hands the lease over at once (expires now).

``fenced(name, holder, epoch)`` makes every transaction the calling thread commits run ``check``
first (a ``before_commit`` hook, so the check and the writes share one transaction).
``notify`` / ``listener`` carry wake-ups between servers (PostgreSQL ``NOTIFY`` / ``LISTEN``).
"""

from __future__ import annotations

import contextlib
import threading
from typing import Any, Iterator

from sqlalchemy import event, select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from loopml.core.errors import Fenced
from loopml.store import tables as t
from loopml.store.db import MetadataStore, db_now


__all__ = ["Fenced", "LeaseRepo"]  # Fenced lives in core.errors (one error hierarchy); re-exported


def lease_record(row: t.Lease, now: float) -> dict[str, Any]:
    return {"name": row.name, "holder": row.holder, "epoch": int(row.epoch),
            "expires_in_s": round(row.expires_at - now, 3), "held": row.expires_at > now,
            "held_for_s": round(now - row.acquired_at, 3)}


class _Fence:
    def __init__(self, repo: LeaseRepo, name: str, holder: str, epoch: int) -> None:
        self.repo, self.name, self.holder, self.epoch = repo, name, holder, epoch


_local = threading.local()


@event.listens_for(Session, "before_commit")
def _check_fence(session: Session) -> None:
    """Runs before the commit's flush, inside the transaction: the SHARE lock ``check`` takes on
    the lease row holds until the commit, so no takeover commits in between."""
    fence: _Fence | None = getattr(_local, "fence", None)
    if fence is None or session.get_bind() is not fence.repo.store.engine:
        return
    fence.repo.check(session, fence.name, fence.holder, fence.epoch)


class LeaseRepo:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    def acquire(self, name: str, holder: str, ttl_s: float) -> int | None:
        """Take the lease if it is free or expired; returns the new epoch, None when held."""
        try:
            with self.store.session() as s:
                now = db_now(s)
                row = s.get(t.Lease, name, with_for_update=True)
                if row is None:
                    s.add(t.Lease(name=name, holder=holder, epoch=1, expires_at=now + ttl_s, acquired_at=now))
                    s.flush()
                    return 1
                if row.expires_at > now:
                    return None
                row.holder, row.epoch = holder, int(row.epoch) + 1
                row.expires_at, row.acquired_at = now + ttl_s, now
                return int(row.epoch)
        except IntegrityError:  # another server created the row first
            return None

    def renew(self, name: str, holder: str, epoch: int, ttl_s: float) -> bool:
        """Extend the lease; False when another holder took it (or it is gone)."""
        with self.store.session() as s:
            now = db_now(s)
            done = s.execute(update(t.Lease).where(t.Lease.name == name, t.Lease.holder == holder,
                                                   t.Lease.epoch == epoch)
                             .values(expires_at=now + ttl_s)).rowcount
            return done == 1

    def release(self, name: str, holder: str, epoch: int) -> bool:
        """Give the lease up now (a clean stop): the next server takes it without waiting."""
        with self.store.session() as s:
            now = db_now(s)
            done = s.execute(update(t.Lease).where(t.Lease.name == name, t.Lease.holder == holder,
                                                   t.Lease.epoch == epoch)
                             .values(expires_at=now)).rowcount
            return done == 1

    @staticmethod
    def check(s: Session, name: str, holder: str, epoch: int) -> None:
        """Inside the caller's transaction ``s``: raise Fenced unless ``holder`` still holds
        ``name`` at ``epoch``. Locks the lease row (SHARE) until that transaction ends."""
        row = s.execute(select(t.Lease.holder, t.Lease.epoch, t.Lease.expires_at)
                        .where(t.Lease.name == name).with_for_update(read=True)).one_or_none()
        now = db_now(s)
        if row is None or row.holder != holder or int(row.epoch) != epoch:
            current = f"epoch {row.epoch} held by {row.holder}" if row is not None else "no lease"
            raise Fenced(f"lease {name!r}: epoch {epoch} of {holder} is stale ({current}); write refused")
        if row.expires_at <= now:
            raise Fenced(f"lease {name!r}: epoch {epoch} of {holder} expired "
                         f"{now - row.expires_at:.1f} s ago; write refused")

    @contextlib.contextmanager
    def fenced(self, name: str, holder: str, epoch: int) -> Iterator[None]:
        """Every transaction this thread commits in the block is refused (Fenced) unless
        ``holder`` still holds ``name`` at ``epoch``."""
        previous = getattr(_local, "fence", None)
        _local.fence = _Fence(self, name, holder, epoch)
        try:
            yield
        finally:
            _local.fence = previous

    def notify(self, channel: str, payload: str) -> None:
        """PostgreSQL NOTIFY (a no-op on SQLite, where one process is all there is)."""
        if self.store.engine.dialect.name != "postgresql":
            return
        with self.store.engine.begin() as conn:
            conn.execute(text("SELECT pg_notify(:channel, :payload)"), {"channel": channel, "payload": payload})

    def listener(self, channel: str):  # -> psycopg.Connection (``.notifies(timeout=, stop_after=)``)
        """A dedicated autocommit connection LISTENing on ``channel`` (PostgreSQL only)."""
        import psycopg

        url = self.store.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
        conn = psycopg.connect(url, autocommit=True, connect_timeout=5)
        try:
            conn.execute(f"LISTEN {channel}")  # a fixed identifier of ours, never user input
        except BaseException:
            conn.close()
            raise
        return conn

    def get(self, name: str) -> dict[str, Any] | None:
        with self.store.session() as s:
            row = s.get(t.Lease, name)
            return lease_record(row, db_now(s)) if row is not None else None
