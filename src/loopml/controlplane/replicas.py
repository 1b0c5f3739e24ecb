"""Keeps each endpoint's data-plane replicas on the cluster at the desired count (leader only).

On a Ray cluster (LOOPML_EXECUTOR=ray) every endpoint has ``serving.scaling.desired_replicas`` replicas,
each a LoopML serving process inside a Ray actor (jobs/ray_replicas.py, behind the
ReplicaPlacer protocol of jobs/replicas.py). Each tick: what the placer sees → start the slots
that have no replica, drain and stop the slots beyond the count and the replicas of deleted
endpoints. Restarts of a dead replica are Ray's (the actor is restartable); a replica killed for
good (or whose restarts Ray gave up) is placed again here. The replicas keep serving while no
control plane runs; a new leader adopts them by name. A load balancer (HAProxy) in front routes
by each replica's ``/readyz``. On one machine this part does nothing: the control plane's own
serving process serves every endpoint.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import asdict
from functools import partial
from typing import Any, Callable

from loopml.core.resources import job_resources
from loopml.jobs.replicas import DEAD, Replica, ReplicaPlacer, make_replica_placer
from loopml.platform import Platform
from loopml.serving.scaling import desired_replicas

log = logging.getLogger("loopml.controlplane.replicas")


class ReplicaController:
    def __init__(self, platform: Platform, placer: ReplicaPlacer | None = None, *,
                 desired: Callable[[dict[str, Any]], int] | None = None) -> None:
        self.platform = platform
        # THE one place that says how many: the autoscaler's count, else the spec's (default 1)
        self.desired = desired or partial(desired_replicas, platform)
        self._placer = placer
        self._given = placer is not None
        self._seen: dict[str, list[Replica]] = {}  # endpoint → its replicas at the last tick
        self._lock = threading.Lock()

    @property
    def placer(self) -> ReplicaPlacer | None:
        if self._placer is None and not self._given:
            self._placer = make_replica_placer(self.platform)  # None on one machine
            self._given = self._placer is None
        return self._placer

    def tick(self) -> None:
        placer = self.placer
        if placer is None:
            return
        replicas = placer.observe()
        records = {rec["name"]: rec for rec in self.platform.endpoints.list()}
        by_endpoint: dict[str, list[Replica]] = {}
        for r in replicas:
            if r.state == DEAD:
                log.warning("endpoint %s: replica %d is gone (%s); placing a new one", r.endpoint, r.index, r.reason)
                continue
            by_endpoint.setdefault(r.endpoint, []).append(r)
        for name, have in by_endpoint.items():
            if name not in records:  # the endpoint was deleted
                for r in have:
                    placer.remove(r)
        for name, rec in records.items():
            try:
                resources = job_resources("replica", (rec.get("spec") or {}).get("replica_resources"))
                want = max(0, self.desired(rec))
                have = by_endpoint.get(name, [])
                slots = {r.index for r in have}
                for r in have:
                    if r.index >= want:
                        log.warning("endpoint %s: replica %d stops (%d wanted)", name, r.index, want)
                        placer.remove(r)
                for index in range(want):
                    if index not in slots:
                        by_endpoint.setdefault(name, []).append(placer.place(name, index, resources))
            except Exception:  # noqa: BLE001 - one endpoint never stops the others
                log.exception("placing the replicas of endpoint %s failed", name)
        with self._lock:
            self._seen = {name: sorted((r for r in rs if r.index < self.desired(records[name])),
                                       key=lambda r: r.index)
                          for name, rs in by_endpoint.items() if name in records}

    def replicas(self, endpoint: str) -> list[dict[str, Any]]:
        """The endpoint's replicas as the last tick saw them (state, node, address, last loss)."""
        with self._lock:
            return [asdict(r) for r in self._seen.get(endpoint, [])]

    def stop(self) -> None:
        if self._placer is not None:
            self._placer.detach()  # the replicas keep serving: the data plane outlives the control plane
