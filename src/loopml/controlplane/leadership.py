"""Which control plane leads: one leader runs the reconcile loop, the others serve the API.

On PostgreSQL several ``loopml server`` processes may share one metadata store. The one holding
the ``control`` lease (store/leases_repo.py: holder, fencing epoch, expiry by the database's
clock) runs every background loop; the others answer the API, write queued rows and wake the
leader with a PostgreSQL ``NOTIFY``. The lease lives ``TTL_S`` seconds and is renewed every
``RENEW_S``; a follower (trying every ``FOLLOW_S``) takes it when it has expired (a leader killed
with ``kill -9``) or at once when it was released (a clean stop sends a notification).

Fencing: while the loop runs a tick as leader, every transaction that tick's thread commits
first checks — in that same transaction, holding a SHARE lock on the lease row until the commit —
that this process still holds the lease at its epoch (``fenced``). A paused ex-leader that wakes
after a takeover therefore commits nothing: its transaction raises ``Fenced`` and rolls back.
Besides, the leader stops acting on its own once its local deadline (the renewal's send time +
``TTL_S - RENEW_S``, always before the database's expiry) passes without a renewal.

On SQLite nothing changes: ``SoleLeader`` (the server's flock makes it the only process).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import time
import uuid
from typing import Callable, Iterator, Protocol

from loopml.platform import Platform
from loopml.store.leases_repo import LeaseRepo

log = logging.getLogger("loopml.controlplane.leadership")

LEASE = "control"
TTL_S = 4.0  # a dead leader is replaced within TTL_S + FOLLOW_S (plus the new leader's first tick)
RENEW_S = 1.0  # the leader renews; it stops acting TTL_S - RENEW_S after its last renewal was sent
FOLLOW_S = 0.5  # a follower tries to take the lease this often (one indexed UPDATE-or-nothing)
CHANNEL = "loopml_control"  # NOTIFY payloads: "wake" (work was queued), "released" (the lease is free)


class Leadership(Protocol):
    @property
    def epoch(self) -> int | None: ...

    def try_lead(self) -> bool: ...  # one attempt to take or renew the lease; returns leading()

    def leading(self) -> bool: ...

    def fenced(self) -> contextlib.AbstractContextManager[None]: ...

    def notify(self) -> None: ...  # wake the leader (from a follower's API)

    def start(self, on_change: Callable[[], None]) -> None: ...

    def stop(self) -> None: ...


class SoleLeader:
    """SQLite: this process is the only control plane; nothing to fence."""

    epoch = None

    def try_lead(self) -> bool:
        return True

    def leading(self) -> bool:
        return True

    def fenced(self) -> contextlib.AbstractContextManager[None]:
        return contextlib.nullcontext()

    def notify(self) -> None:
        pass

    def start(self, on_change: Callable[[], None]) -> None:
        pass

    def stop(self) -> None:
        pass


class LeaseLeadership:
    """The ``control`` lease in PostgreSQL, renewed by a thread that also LISTENs for wakes."""

    def __init__(self, platform: Platform, *, ttl_s: float = TTL_S, renew_s: float = RENEW_S,
                 follow_s: float = FOLLOW_S, holder: str | None = None,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.platform = platform
        self.repo = platform.leases
        self.ttl_s, self.renew_s, self.follow_s = ttl_s, renew_s, follow_s
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._monotonic = monotonic
        self._epoch: int | None = None
        self._following = False  # "following" logged (once per term)
        self._deadline = 0.0  # local: leading until then (the database's expiry is later)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._on_change: Callable[[], None] = lambda: None

    @property
    def epoch(self) -> int | None:
        return self._epoch

    def leading(self) -> bool:
        return self._epoch is not None and self._monotonic() < self._deadline

    def try_lead(self) -> bool:
        """Renew the lease we hold, or take it if it is free; returns whether we lead now."""
        with self._lock:
            was, sent = self.leading(), self._monotonic()
            try:
                if self._epoch is not None and self.repo.renew(LEASE, self.holder, self._epoch, self.ttl_s):
                    self._deadline = sent + self.ttl_s - self.renew_s
                else:
                    if self._epoch is not None:
                        log.warning("control plane: lost the lease (epoch %s); following", self._epoch)
                        self._epoch = None
                    epoch = self.repo.acquire(LEASE, self.holder, self.ttl_s)
                    if epoch is not None:
                        self._epoch, self._deadline = epoch, sent + self.ttl_s - self.renew_s
                        self._following = False
                        log.warning("control plane: leading (lease epoch %s, holder %s)", epoch, self.holder)
                    elif not self._following:
                        self._following = True
                        lease = self.repo.get(LEASE) or {}
                        log.warning("control plane: following %s (epoch %s): this server answers the API and "
                                    "takes over if the leader stops", lease.get("holder"), lease.get("epoch"))
            except Exception as exc:  # noqa: BLE001 - the database is away: the deadline decides
                log.warning("control plane: lease renewal failed: %s", exc)
            now = self.leading()
        if now != was:
            self._on_change()
        return now

    @contextlib.contextmanager
    def fenced(self) -> Iterator[None]:
        """Every transaction this thread commits inside the block checks the lease's epoch."""
        epoch = self._epoch
        if epoch is None:
            yield
            return
        with self.repo.fenced(LEASE, self.holder, epoch):
            yield

    def notify(self, payload: str = "wake") -> None:
        try:
            self.repo.notify(CHANNEL, payload)
        except Exception:  # noqa: BLE001 - the leader's next tick (≤ reconcile interval) picks it up anyway
            log.warning("could not notify the leading control plane", exc_info=True)

    # -- the lease thread -------------------------------------------------------------------------
    def start(self, on_change: Callable[[], None]) -> None:
        self._on_change = on_change
        self._thread = threading.Thread(target=self._run, name="loopml-leadership", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        with self._lock:
            epoch, self._epoch = self._epoch, None
        if epoch is not None:
            try:
                if self.repo.release(LEASE, self.holder, epoch):
                    self.notify("released")  # a follower takes over now, not after the TTL
            except Exception:  # noqa: BLE001 - it expires by itself
                log.warning("could not release the control-plane lease", exc_info=True)

    def _run(self) -> None:
        listener = None
        next_renewal = 0.0
        while not self._stop.is_set():
            if self._monotonic() >= next_renewal:
                start = self._monotonic()
                next_renewal = start + (self.renew_s if self.try_lead() else self.follow_s)
            if listener is None:
                listener = self._listen()
            wait = max(0.0, next_renewal - self._monotonic())
            if listener is None:
                self._stop.wait(wait)
                continue
            try:
                for note in listener.notifies(timeout=wait, stop_after=1):
                    if note.payload == "released" and not self.leading():
                        next_renewal = 0.0  # take it now
                    elif self.leading():
                        self._on_change()  # the loop ticks now
            except Exception:  # noqa: BLE001 - reconnect at the next turn
                log.debug("lease listener connection lost", exc_info=True)
                with contextlib.suppress(Exception):
                    listener.close()
                listener = None
        if listener is not None:
            with contextlib.suppress(Exception):
                listener.close()

    def _listen(self):  # -> psycopg.Connection | None
        try:
            return self.repo.listener(CHANNEL)
        except Exception:  # noqa: BLE001 - without it, wakes wait for the next tick
            log.debug("cannot LISTEN for control-plane wakes", exc_info=True)
            return None


def leadership_for(platform: Platform) -> Leadership:
    """A lease on PostgreSQL (several servers may share it); the sole leader on SQLite."""
    if platform.meta.engine.dialect.name == "postgresql":
        return LeaseLeadership(platform)
    return SoleLeader()
