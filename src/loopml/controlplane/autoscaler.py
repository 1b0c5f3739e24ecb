"""The autoscaler: the leader's part that keeps each autoscaled endpoint's desired replica count.

Every ``autoscale_interval_s`` per endpoint (by the loop's clock, so a test drives it with a fake
one): read the endpoint's load (a ``LoadSource``: the data-plane replicas' heartbeats), run the
pure policy (serving/autoscaling.py), store the new state and — when the count moves — one
decision row with the metric's value and the reason, in one transaction (fenced: only the
leader's tick commits it), then tell the actuator (``Scaler.scale_to``).

The actuator is a seam: the default ``StoredDesired`` does nothing, because a replica controller
reads the count from the store (``platform.scaling.desired(endpoint)``, None when the endpoint is
not autoscaled). A scale-in is carried out by draining the removed replica first (``/readyz``
503 so the load balancer stops sending, in-flight to 0, then stopped); while a replica drains the
policy scales in no further.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Callable, Protocol

from loopml.core.timeutil import utcnow
from loopml.platform import Platform
from loopml.serving.autoscaling import Load, Policy, State, decide

log = logging.getLogger("loopml.controlplane.autoscaler")


class Scaler(Protocol):
    """Carries out a desired replica count (idempotent: called again with the same count after a
    restart or a failover)."""

    def scale_to(self, endpoint: str, replicas: int) -> None: ...


class LoadSource(Protocol):
    def load(self, endpoint: str) -> Load | None: ...  # None: nothing reports this endpoint


class StoredDesired:
    """The count is in the store; replica controllers read ``platform.scaling.desired``."""

    def scale_to(self, endpoint: str, replicas: int) -> None:
        pass


def policy_of(row: dict) -> Policy:
    return Policy(row["min_replicas"], row["max_replicas"], row["metric"], row["target"],
                  row["scale_out_cooldown_s"], row["scale_in_cooldown_s"])


def state_of(row: dict) -> State:
    return State(row["desired"], row["last_scale_out_at"], row["last_scale_in_at"], row["below_since"])


class Autoscaler:
    def __init__(self, platform: Platform, *, now: Callable[[], datetime] = utcnow,
                 load: LoadSource | None = None, scaler: Scaler | None = None,
                 interval_s: float | None = None) -> None:
        self.platform = platform
        self._now = now
        self.load_source: LoadSource = load or default_load_source(platform)
        self.scaler: Scaler = scaler or StoredDesired()
        self.interval_s = platform.settings.autoscale_interval_s if interval_s is None else interval_s
        self._synced = False  # the actuator was told every count this term

    def tick(self) -> None:
        now = self._now().timestamp()
        for row in self.platform.scaling.all():
            try:
                self._evaluate(row, now)
            except Exception:  # noqa: BLE001 - one endpoint never stops the others
                log.exception("autoscaling endpoint %s failed", row["endpoint"])
        self._synced = True

    def _evaluate(self, row: dict, now: float) -> None:
        name = row["endpoint"]
        last = row["last_evaluated_at"]
        if last is not None and 0 <= now - last < self.interval_s:
            if not self._synced:
                self.scaler.scale_to(name, row["desired"])
            return
        policy = policy_of(row)
        decision = decide(policy, state_of(row), self.load_source.load(name), now)
        st = decision.state
        state = {"desired": st.desired, "last_scale_out_at": st.last_scale_out_at,
                 "last_scale_in_at": st.last_scale_in_at, "below_since": st.below_since}
        record = decision.record(now, policy.target) if decision.changed else None
        if not self.platform.scaling.evaluated(name, state, at=now, reason=decision.reason,
                                               value=decision.value, decision=record):
            return  # autoscaling turned off meanwhile
        if decision.changed:
            log.info("endpoint %s: %d -> %d replicas (%s)", name, decision.from_replicas,
                     decision.to_replicas, decision.reason)
        if decision.changed or not self._synced:
            self.scaler.scale_to(name, st.desired)

    def stop(self) -> None:
        pass


class NodesLoad:
    """The endpoint's load from the data-plane heartbeats (store/nodes_repo.py, serving/node.py):
    over every live node that has the endpoint loaded or belongs to its replica set, ``queue`` sums
    the rows in flight in its batchers (queued ones included) and ``rps`` sums req/s;
    ``replicas`` counts the ready ones and ``draining`` those draining."""

    def __init__(self, platform: Platform) -> None:
        self.nodes = platform.nodes
        self.live_within_s = platform.settings.node_lost_after_s  # a lost node's load no longer counts

    def load(self, endpoint: str) -> Load | None:
        rows = {r["id"]: r for r in self.nodes.list(self.live_within_s, serving=endpoint)}
        rows.update({r["id"]: r for r in self.nodes.list(self.live_within_s, endpoint=endpoint)})
        if not rows:
            return None
        ready = draining = 0
        queue = rps = 0.0
        for row in rows.values():
            if row["state"] == "draining":
                draining += 1
            elif row["state"] == "ready":
                ready += 1
            entry = ((row.get("load") or {}).get("endpoints") or {}).get(endpoint) or {}
            # rows a node's batchers hold (serving/node.py: in_flight_rows includes queue_rows)
            queue += max(float(entry.get("in_flight_rows", entry.get("in_flight")) or 0),
                         float(entry.get("queue_rows", entry.get("queue")) or 0))
            rps += float(entry.get("rps") or 0)
        return Load(replicas=ready, draining=draining, queue=queue, rps=rps)


def default_load_source(platform: Platform) -> LoadSource:
    return NodesLoad(platform)
