"""A serving process reporting itself as a data-plane node (``serving_nodes``, store/nodes_repo.py).

Every serving process does it — the control plane's embedded one (kind ``embedded``) and each
``loopml serve`` node (``node``): it registers at start, heartbeats every ``node_heartbeat_s``
with its state (``ready`` once every endpoint is loaded, as ``/readyz``), the endpoints it has
loaded and its load, and marks itself ``gone`` on a clean stop. A node killed outright stops
heartbeating; readers show it lost after ``node_lost_after_s``.

The report is off the request path: counters the data plane keeps anyway (metrics totals,
batcher stats) are read on the event loop once per heartbeat; the store write runs in a thread.
A store that is down costs a warning (at most one per minute), never the serving: the node keeps
answering from what it has loaded and registers again when the store is back.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import time
import uuid
from typing import Any

from loopml.serving.manager import EndpointManager
from loopml.serving.metrics import ServingMetrics
from loopml.store.nodes_repo import NodeRepo

log = logging.getLogger("loopml.serving.node")

_WARN_EVERY_S = 60.0
_GONE_TIMEOUT_S = 5.0
GC_AFTER_S = 3600.0  # rows of nodes gone or silent this long are deleted when a node registers


def new_node_id() -> str:
    """``{hostname}-{pid}-{6 hex}``: unique per process, usable in object and file names."""
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname().split(".", 1)[0])[:60] or "host"
    return f"{host}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


def advertised_address(sock: socket.socket, host: str | None = None) -> str:
    """``http://host:port`` of the listening socket, as other machines reach it."""
    bound_host, port = sock.getsockname()[:2]
    host = host or bound_host
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn()
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class NodeReporter:
    def __init__(self, repo: NodeRepo, manager: EndpointManager, metrics: ServingMetrics, *,
                 node_id: str, address: str, kind: str, interval_s: float, version: str,
                 endpoint: str | None = None) -> None:
        self.repo, self.manager, self.metrics = repo, manager, metrics
        self.node_id, self.address, self.kind, self.endpoint = node_id, address, kind, endpoint
        self.interval_s, self.version = interval_s, version
        self.registered = False
        self.stopping = False
        self.draining = False  # SIGTERM received: still serving, leaving the load balancer
        self._last: tuple[float, dict[str, tuple[int, float]]] = (time.monotonic(), {})
        self._last_warning = -_WARN_EVERY_S
        self._lock = asyncio.Lock()  # a report in flight never lands after ``gone``

    def state(self) -> str:
        if self.stopping or self.draining:
            return "draining"
        return "ready" if self.manager.ready() else "starting"

    def load(self) -> dict[str, Any]:
        """Per endpoint: requests/s and mean latency since the last report, rows queued and in
        flight in its batchers; plus the node's totals. Runs on the event loop."""
        now, totals = time.monotonic(), self.metrics.totals()
        then, before = self._last
        self._last = (now, totals)
        dt = max(now - then, 1e-6)
        endpoints: dict[str, dict[str, float]] = {}
        for name, live in list(self.manager.live.items()):
            n, lat = totals.get(name, (0, 0.0))
            n0, lat0 = before.get(name, (0, 0.0))
            dn = max(n - n0, 0)
            queued = in_flight = 0
            for host in live.hosts():
                stats = host.batcher.stats()
                queued += stats["queue_rows"]
                in_flight += stats["unresolved_rows"]
            endpoints[name] = {"rps": round(dn / dt, 2),
                               "latency_ms": round((lat - lat0) / dn * 1000, 3) if dn else None,
                               "queue_rows": queued, "in_flight_rows": in_flight}
        return {"endpoints": endpoints,
                "rps": round(sum(e["rps"] for e in endpoints.values()), 2),
                "queue_rows": sum(e["queue_rows"] for e in endpoints.values()),
                "in_flight_rows": sum(e["in_flight_rows"] for e in endpoints.values())}

    def _warn(self, what: str, exc: BaseException) -> None:
        now = time.monotonic()
        if now - self._last_warning >= _WARN_EVERY_S:
            self._last_warning = now
            log.warning("node %s: %s failed (the node keeps serving): %s: %s", self.node_id, what,
                        type(exc).__name__, exc)

    async def report_once(self) -> None:
        async with self._lock:
            if not self.stopping:
                await self._report()

    async def _report(self) -> None:
        state, loaded, load = self.state(), sorted(self.manager.live), self.load()
        try:
            if self.registered and await asyncio.to_thread(
                    self.repo.heartbeat, self.node_id, endpoints_loaded=loaded, load=load, state=state):
                return
            await asyncio.to_thread(self.repo.register, self.node_id, self.address, self.kind,
                                    endpoint=self.endpoint, state=state, version=self.version,
                                    endpoints_loaded=loaded, load=load)
            if not self.registered:
                log.info("node %s (%s) registered at %s", self.node_id, self.kind, self.address)
                await asyncio.to_thread(self.repo.gc, GC_AFTER_S)  # no scheduler needed: nodes start often enough
            self.registered = True
        except Exception as exc:  # noqa: BLE001 - the store may be down; serving goes on
            self._warn("reporting to the metadata store", exc)

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.report_once()
            try:
                await asyncio.wait_for(stop.wait(), self.interval_s)
            except TimeoutError:
                pass

    async def gone(self) -> None:
        """A clean stop: the row says ``gone`` (not lost)."""
        self.stopping = True
        try:
            async with self._lock:
                await asyncio.wait_for(asyncio.to_thread(self.repo.set_state, self.node_id, "gone"),
                                       _GONE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - readers will call it lost instead
            self._warn("marking the node gone", exc)
