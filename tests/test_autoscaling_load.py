"""Autoscaling under real load (issue 14, point 3): the leader's loop, real serving replicas behind
HAProxy, a load generator on loopback.

The ControlLoop (its other parts idle) ticks by hand with a fake wall clock for the cooldowns
(each tick = 10 s of policy time); the real Autoscaler reads the load the replicas heartbeat
into ``serving_nodes`` (NodesLoad, the product's load source) and drives ``LocalReplicas``
(tests/autoscale_support.py: data-plane nodes admitted by HAProxy's /readyz check; a scale-in
sends the replica SIGTERM as the Ray placer does — /readyz 503 "draining", HAProxy takes it out,
it stops accepting, answers what it holds, exits).
Asserted: scale-out under heavy load (traffic really reaches the new replicas), scale-in one
replica at a time once the load falls, every decision recorded with its metric, and not one
request failed — light traffic keeps flowing through each drain, and on each replica removed
requests were held in flight (through HAProxy, pinned to it) across its drain: half answered
while it drained out of the load balancer, half by its graceful shutdown, every one 200. Run alone with
``pytest -m autoscale tests/test_autoscaling_load.py``.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from loopml.controlplane.autoscaler import Autoscaler, NodesLoad
from loopml.controlplane.loop import Clock, ControlLoop
from loopml.core.settings import Settings
from loopml.platform import Platform
from loopml.serving import autoscaling, scaling, service
from tests.autoscale_support import LocalReplicas
from tests.process_support import wait_for
from tests.serving_support import _train, register
from tests.test_control_loop import NoDataPlane

pytestmark = pytest.mark.autoscale
pytest_plugins = ("tests.serving_support",)  # digits_data


class Idle:
    def tick(self) -> None: ...

    def stop(self) -> None: ...


class NoJobs:
    host = "test"

    def poll(self) -> list:
        return []

    def free_slots(self) -> int:
        return 0

    def shutdown(self) -> None: ...


class HeartbeatLoad:
    """The product's load source (the nodes' heartbeats); replicas the actuator drains at the LB
    count as draining (their nodes say ready until they stop)."""

    def __init__(self, plat: Platform, replicas: LocalReplicas) -> None:
        self.nodes, self.replicas = NodesLoad(plat), replicas

    def load(self, endpoint: str) -> autoscaling.Load | None:
        got = self.nodes.load(endpoint)
        draining = self.replicas.draining_count()
        if got is None:
            return None
        return autoscaling.Load(replicas=max(0, got.replicas - draining), draining=max(got.draining, draining),
                                queue=got.queue, rps=got.rps)


class Load:
    """Client threads posting through the LB; ``pause`` s between requests (0: as fast as they can)."""

    def __init__(self, url: str, body: bytes, threads: int, pause: float) -> None:
        self.url, self.body, self.pause = url, body, pause
        self.codes: dict[int, int] = {}
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for t in self._threads:
            t.start()

    def _run(self) -> None:
        with httpx.Client(timeout=30) as client:
            while not self._stop.is_set():
                try:
                    code = client.post(self.url, content=self.body,
                                       headers={"content-type": "application/json"}).status_code
                    with self._lock:
                        self.codes[code] = self.codes.get(code, 0) + 1
                except httpx.HTTPError as exc:
                    with self._lock:
                        self.errors.append(f"{type(exc).__name__}: {exc}")
                if self.pause:
                    self._stop.wait(self.pause)

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(30)

    def total(self) -> int:
        return sum(self.codes.values())


def test_replicas_follow_the_load_and_scale_in_drains(tmp_path: Path, digits_data, clean_env) -> None:
    images, target = digits_data
    bundle = _train(tmp_path / "bundle", images, target, seed=1, epochs=1)
    # the replicas' drain wait (a second SIGTERM ends it, on a condition) and their body deadline
    # outlast any stall of this machine: the held requests' bodies arrive when the test says so
    settings = Settings(home=tmp_path / "home", port=0, serving_port=0, token=None, node_heartbeat_s=0.5,
                        serving_drain_s=60, http_read_timeout_s=120)
    plat = Platform(settings)
    register(plat, "digits", bundle)
    service.create_endpoint(plat, "digits", {"model": "digits:1"})
    scaling.set_autoscaling(plat, "digits", {"min_replicas": 1, "max_replicas": 3, "target_rps": 25,
                                             "scale_out_cooldown_s": 20, "scale_in_cooldown_s": 60})
    wall = [datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)]
    body = json.dumps({"instances": images[:1].tolist()}).encode()
    with LocalReplicas(settings, "digits", tmp_path, body=body, hold=4) as replicas:
        auto = Autoscaler(plat, now=lambda: wall[0], load=HeartbeatLoad(plat, replicas), scaler=replicas,
                          interval_s=5)
        loop = ControlLoop(plat, clock=Clock(now=lambda: wall[0]), endpoints=NoDataPlane(), triggers=Idle(),
                           workflows=Idle(), monitors=Idle(), tuning=Idle(), autoscaler=auto)
        loop._executor = NoJobs()

        def tick() -> None:
            wall[0] += timedelta(seconds=10)
            loop.tick()
            time.sleep(0.5)  # real time: the nodes heartbeat their load every 0.5 s

        def until(predicate, what: str, timeout: float = 180) -> None:
            deadline = time.monotonic() + timeout
            while not predicate():
                assert not replicas.errors, replicas.errors
                assert time.monotonic() < deadline, f"{what}: desired {plat.scaling.desired('digits')}, " \
                    f"live {replicas.live()}, last {plat.scaling.get('digits')['last_reason']}"
                tick()

        loop.tick()  # the first tick of a term tells the actuator the current count: 1 replica
        until(lambda: replicas.live() == [0] and replicas._admitted(0), "the first replica")

        invoke = f"{replicas.url}/endpoints/digits/invocations"
        heavy = Load(invoke, body, threads=8, pause=0)
        try:
            until(lambda: plat.scaling.desired("digits") == 3, "scale-out under load")
            # no tick while the actuator (its own thread) starts the two replicas: on a busy machine
            # the load one replica serves meanwhile may fall below what 3 need, and ticks would
            # then scale in before the new replicas are up
            def three_admitted() -> bool:
                assert not replicas.errors, replicas.errors
                return replicas.live() == [0, 1, 2] and all(replicas._admitted(s) for s in (0, 1, 2))

            wait_for(three_admitted, timeout=360, poll=0.2, what="three replicas admitted by the LB")
            sent = replicas.served()
            wait_for(lambda: all(replicas.served()[s] > sent.get(s, 0) for s in (1, 2)), timeout=60, poll=0.2,
                     what=f"traffic on the new replicas (served before: {sent})")
        finally:
            heavy.stop()
        light = Load(invoke, body, threads=1, pause=0.05)  # < 20 req/s: one replica is enough
        try:
            until(lambda: plat.scaling.desired("digits") == 1 and replicas.live() == [0] and not replicas.draining,
                  "scale-in to one replica")
            time.sleep(1)
        finally:
            light.stop()

    decisions = scaling.get_autoscaling(plat, "digits")["decisions"][::-1]  # oldest first
    moves = [(d["from_replicas"], d["to_replicas"]) for d in decisions]
    print(f"\ndecisions: {[(d['at'][11:19], d['from_replicas'], d['to_replicas'], d['value']) for d in decisions]}"
          f"\nheavy: {heavy.codes} errors {len(heavy.errors)}; light: {light.codes} errors {len(light.errors)}; "
          f"in flight on a replica when its drain began: {replicas.drain_seen_busy}; held through it: {replicas.held}")
    assert moves[-2:] == [(3, 2), (2, 1)] and moves[0][0] == 1 and moves[0][1] >= 2
    assert all(d["metric"] == "rps" and d["value"] is not None and d["target"] == 25 for d in decisions)
    assert "scale out" in decisions[0]["reason"] and "scale in" in decisions[-1]["reason"]
    ins = [datetime.fromisoformat(d["at"].replace("Z", "+00:00")) for d in decisions[-2:]]
    assert (ins[1] - ins[0]).total_seconds() >= 60  # one step per scale-in window
    assert replicas.stopped[-2:] == [2, 1]  # the newest replica goes first
    # not one request failed: through the scale-out, and through both drains under live traffic
    assert heavy.errors == [] and set(heavy.codes) == {200}, (heavy.codes, heavy.errors[:3])
    assert light.errors == [] and set(light.codes) == {200} and light.total() > 10, (light.codes, light.errors[:3])
    # requests in flight on each removed replica during its drain (HAProxy counted them on it when
    # the drain began), every one answered 200: 2 while it drained, 2 by its graceful shutdown
    assert all(busy >= 4 for busy in replicas.drain_seen_busy), replicas.drain_seen_busy
    assert replicas.held == {2: [200] * 4, 1: [200] * 4}, replicas.held
    plat.close()
