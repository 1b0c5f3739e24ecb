"""Endpoint autoscaling (issue 14, point 3).

The pure policy with a fake clock (serving/autoscaling.py: target tracking, clamps, cooldowns,
one-step scale-in, no scale-in while draining); the leader's part (controlplane/autoscaler.py)
over a real SQLite store with a fake clock and a recording actuator, ticked by the real
ControlLoop; validation and the REST/CLI surface on a real control plane.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import httpx
import pytest

from loopml.controlplane.autoscaler import Autoscaler
from loopml.core.errors import InvalidInput
from loopml.core.settings import Settings
from loopml.platform import Platform
from loopml.serving.autoscaling import Load, Policy, State, decide, parse_policy

pytest_plugins = ("tests.backends",)  # postgres_url

POLICY = Policy(min_replicas=1, max_replicas=4, metric="queue", target=8.0,
                scale_out_cooldown_s=60.0, scale_in_cooldown_s=300.0)


# ----------------------------------------------------------------------------- the pure policy


def test_scale_out_jumps_to_what_the_load_needs_clamped_to_max() -> None:
    d = decide(POLICY, State(1), Load(replicas=1, queue=20), now=1000.0)
    assert d.changed and (d.from_replicas, d.to_replicas) == (1, 3)  # ceil(20 / 8)
    assert d.value == 20 and "scale out" in d.reason and d.state.last_scale_out_at == 1000.0
    d = decide(POLICY, State(1), Load(replicas=1, queue=100), now=1000.0)
    assert d.to_replicas == 4 and "clamped to 4" in d.reason


def test_scale_out_cooldown_blocks_then_allows() -> None:
    st = decide(POLICY, State(1), Load(1, queue=20), now=0.0).state  # → 3 at t=0
    held = decide(POLICY, st, Load(3, queue=40), now=30.0)
    assert not held.changed and held.state.desired == 3 and "scale-out cooldown" in held.reason
    d = decide(POLICY, st, Load(3, queue=40), now=60.0)
    assert d.changed and d.to_replicas == 4


def test_scale_in_waits_for_the_window_then_one_step_at_a_time() -> None:
    st = State(4, last_scale_out_at=0.0)
    t, seen = 0.0, []
    for _ in range(200):  # the load is gone: one replica every 300 s, never below min
        t += 10.0
        d = decide(POLICY, st, Load(st.desired, queue=0), now=t)
        st = d.state
        if d.changed:
            assert d.to_replicas == d.from_replicas - 1 and "scale in" in d.reason
            seen.append((t, d.to_replicas))
    assert [n for _, n in seen] == [3, 2, 1]
    gaps = [b[0] - a[0] for a, b in zip(seen, seen[1:])]
    assert seen[0][0] >= 300 and all(g >= 300 for g in gaps)
    assert st.desired == 1


def test_a_dip_shorter_than_the_window_does_not_scale_in() -> None:
    st = State(3, last_scale_out_at=0.0)
    st = decide(POLICY, st, Load(3, queue=2), now=400.0).state  # low since 400
    assert st.below_since == 400.0
    st = decide(POLICY, st, Load(3, queue=24), now=500.0).state  # back up: the window restarts
    assert st.below_since is None and st.desired == 3
    d = decide(POLICY, st, Load(3, queue=2), now=650.0)
    assert not d.changed and "stayed below" in d.reason


def test_no_scale_in_while_a_replica_drains() -> None:
    st = State(3, last_scale_out_at=0.0, below_since=0.0)
    d = decide(POLICY, st, Load(2, draining=1, queue=0), now=10_000.0)
    assert not d.changed and "draining" in d.reason
    assert decide(POLICY, d.state, Load(2, queue=0), now=10_010.0).to_replicas == 2


def test_scale_out_is_not_blocked_by_draining_or_the_scale_in_cooldown() -> None:
    st = State(2, last_scale_in_at=100.0)
    d = decide(POLICY, st, Load(1, draining=1, queue=30), now=110.0)
    assert d.changed and d.to_replicas == 4


def test_bounds_apply_at_once_and_no_load_holds() -> None:
    d = decide(Policy(2, 3, "queue", 8.0), State(1), None, now=5.0)
    assert d.changed and d.to_replicas == 2 and d.value is None and "min_replicas" in d.reason
    d = decide(Policy(1, 2, "queue", 8.0), State(4), None, now=5.0)
    assert d.changed and d.to_replicas == 2 and "max_replicas" in d.reason
    d = decide(POLICY, State(2), None, now=5.0)
    assert not d.changed and "no replica reports load" in d.reason


def test_rps_target() -> None:
    policy = Policy(1, 10, "rps", 50.0, 0.0, 0.0)
    d = decide(policy, State(1), Load(2, queue=0, rps=260.0), now=1.0)
    assert d.to_replicas == 6 and d.metric == "rps" and d.value == 260.0 and "req/s" in d.reason


@pytest.mark.parametrize("raw, words", [
    ({"min_replicas": 3, "max_replicas": 2, "target_queue": 8}, "min_replicas (3) must not exceed max_replicas (2)"),
    ({"min_replicas": 0, "max_replicas": 2, "target_queue": 8}, "min_replicas must be at least 1"),
    ({"min_replicas": 1, "max_replicas": 2, "target_queue": 0}, "target_queue must be above 0"),
    ({"min_replicas": 1, "max_replicas": 2, "target_rps": -1}, "target_rps must be above 0"),
    ({"min_replicas": 1, "max_replicas": 2}, "needs a target"),
    ({"min_replicas": 1, "max_replicas": 2, "target_queue": 8, "target_rps": 3}, "give one target"),
    ({"min_replicas": 1.5, "max_replicas": 2, "target_queue": 8}, "whole number"),
    ({"max_replicas": 2, "target_queue": 8}, "needs both min_replicas and max_replicas"),
    ({"min_replicas": 1, "max_replicas": 2, "target_queue": 8, "scale_in_cooldown_s": -5}, "scale_in_cooldown_s"),
    ({"min_replicas": 1, "max_replicas": 2, "target_queue": 8, "replicas": 3}, "unknown autoscaling field"),
])
def test_policy_validation(raw: dict, words: str) -> None:
    with pytest.raises(InvalidInput) as info:
        parse_policy(raw)
    assert words in info.value.message


def test_policy_change_keeps_absent_fields_and_a_new_target_replaces_the_other() -> None:
    base = parse_policy({"min_replicas": 1, "max_replicas": 4, "target_queue": 8})
    assert (base.scale_out_cooldown_s, base.scale_in_cooldown_s) == (60.0, 300.0)  # out fast, in slowly
    changed = parse_policy({"max_replicas": 6, "target_rps": 100}, base=base)
    assert (changed.min_replicas, changed.max_replicas, changed.metric, changed.target) == (1, 6, "rps", 100.0)


# ----------------------------------------------------------------------------- the leader's part


class FakeWall:
    def __init__(self) -> None:
        self.t = datetime(2026, 12, 4, 12, 0, tzinfo=timezone.utc)

    def __call__(self) -> datetime:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += timedelta(seconds=seconds)


class Recording:
    """A Scaler that records what it was asked (the Ray controller reads the store instead)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def scale_to(self, endpoint: str, replicas: int) -> None:
        self.calls.append((endpoint, replicas))


class SetLoad:
    def __init__(self) -> None:
        self.value: Load | None = None

    def load(self, endpoint: str) -> Load | None:
        return self.value


@pytest.fixture
def plat(tmp_path: Path):
    p = Platform(Settings(home=tmp_path / "home"))
    p.models.add_version("tiny", 1, job_id=None, dataset="tab:1", kind="tabular", template="mlp", hparams={},
                         metrics={}, lineage={}, runtimes=["keras"], artifact_prefix="models/tiny/v1")
    from loopml.serving import service

    service.create_endpoint(p, "ep", {"model": "tiny:1"})
    yield p
    p.close()


def test_autoscaler_records_decisions_and_tells_the_actuator(plat: Platform) -> None:
    from loopml.controlplane.loop import Clock, ControlLoop
    from loopml.serving import scaling
    from tests.test_control_loop import NoDataPlane

    scaling.set_autoscaling(plat, "ep", {"min_replicas": 1, "max_replicas": 4, "target_queue": 8,
                                         "scale_out_cooldown_s": 30, "scale_in_cooldown_s": 120})
    assert plat.scaling.desired("ep") == 1
    assert scaling.desired_replicas(plat, plat.endpoints.get("ep")) == 1
    wall, load, actuator = FakeWall(), SetLoad(), Recording()
    auto = Autoscaler(plat, now=wall, load=load, scaler=actuator, interval_s=5)

    class Idle:
        def tick(self) -> None: ...

        def stop(self) -> None: ...

    loop = ControlLoop(plat, clock=Clock(now=wall), endpoints=NoDataPlane(), triggers=Idle(), workflows=Idle(),
                       monitors=Idle(), tuning=Idle(), autoscaler=auto)
    loop._executor = type("NoJobs", (), {"poll": lambda self: [], "free_slots": lambda self: 0,
                                         "shutdown": lambda self: None, "host": "h"})()
    loop.tick()  # first tick of the term: the actuator hears the current count
    assert actuator.calls == [("ep", 1)]
    load.value = Load(replicas=1, queue=30)
    wall.advance(5)
    loop.tick()
    assert plat.scaling.desired("ep") == 4 and actuator.calls[-1] == ("ep", 4)
    assert scaling.desired_replicas(plat, plat.endpoints.get("ep")) == 4
    wall.advance(2)
    load.value = Load(replicas=4, queue=0)
    loop.tick()  # within the evaluation interval: nothing evaluated
    assert plat.scaling.get("ep")["below_since"] is None
    for _ in range(90):  # 450 s: one replica less per 120 s window
        wall.advance(5)
        loop.tick()
    assert plat.scaling.desired("ep") == 1
    decisions = scaling.get_autoscaling(plat, "ep")["decisions"]
    assert [(d["from_replicas"], d["to_replicas"]) for d in decisions] == [(2, 1), (3, 2), (4, 3), (1, 4)]
    out = decisions[-1]
    assert out["metric"] == "queue" and out["value"] == 30 and out["target"] == 8 and "scale out" in out["reason"]
    assert out["at"].startswith("2026-12-04T12:00:05")
    assert [c for c in actuator.calls[1:]] == [("ep", 4), ("ep", 3), ("ep", 2), ("ep", 1)]
    record = plat.endpoints.get("ep")
    assert record["spec"] and plat.scaling.desired("nope") is None
    # the endpoint record carries the summary; deleting the endpoint deletes its scaling rows
    from loopml.serving import service

    shown = service.get_endpoint(plat, "ep")["autoscaling"]
    assert shown["desired_replicas"] == 1 and len(shown["decisions"]) == 4
    assert shown["last_evaluation"]["reason"]
    service.delete_endpoint(plat, "ep", check_unused=lambda *_: [])
    assert plat.scaling.all() == [] and plat.scaling.decisions("ep") == []


def test_rest_and_cli(live_server: str, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.surface_support import cli_runner
    from tests.test_cli import one_line_error

    plat = Platform(settings)
    try:
        plat.models.add_version("tiny", 1, job_id=None, dataset="tab:1", kind="tabular", template="mlp",
                                hparams={}, metrics={}, lineage={}, runtimes=["keras"],
                                artifact_prefix="models/tiny/v1")
    finally:
        plat.close()
    with httpx.Client(base_url=live_server, timeout=30) as api:
        assert api.post("/endpoints", json={"name": "ep", "model": "tiny:1"}).status_code == 201
        bad = api.put("/endpoints/ep/autoscaling", json={"min_replicas": 3, "max_replicas": 2, "target_queue": 8})
        assert bad.status_code == 400 and "must not exceed" in bad.text
        assert api.put("/endpoints/nope/autoscaling", json={"min_replicas": 1, "max_replicas": 2,
                                                            "target_queue": 8}).status_code == 404
        ok = api.put("/endpoints/ep/autoscaling", json={"min_replicas": 1, "max_replicas": 4, "target_queue": 8})
        assert ok.status_code == 200, ok.text
        body = ok.json()
        assert body["enabled"] and body["desired_replicas"] == 1 and body["scale_in_cooldown_s"] == 300
        assert api.get("/endpoints/ep").json()["autoscaling"]["max_replicas"] == 4
    run = cli_runner(live_server, monkeypatch)
    res = run("endpoints", "update", "ep", "--min-replicas", "5", "--max-replicas", "2")
    one_line_error(res, 2, "--min-replicas (5) must not exceed --max-replicas (2)")
    res = run("endpoints", "update", "ep", "--target-queue", "0")
    one_line_error(res, 2, "--target-queue must be above 0")
    res = run("endpoints", "update", "ep", "--max-replicas", "6", "--target-rps", "50", "--scale-in-cooldown", "120")
    assert res.exit_code == 0, res.output
    assert "autoscaling" in res.output and "1-6" in res.output and "req/s per replica" in res.output
    res = run("endpoints", "show", "ep", "--json")
    import json

    shown = json.loads(res.output)["autoscaling"]
    assert (shown["target_rps"], shown["target_queue"], shown["scale_in_cooldown_s"]) == (50, None, 120)
    res = run("endpoints", "update", "ep", "--no-autoscaling")
    assert res.exit_code == 0 and "autoscaling:" not in res.output
    res = run("endpoints", "update", "ep", "--max-replicas", "3")  # no policy to complete
    one_line_error(res, 2, "autoscaling needs both --min-replicas and --max-replicas")


def test_load_from_the_data_plane_heartbeats(plat: Platform) -> None:
    """NodesLoad reads serving_nodes: live nodes with the endpoint loaded (or in its replica set)."""
    from loopml.controlplane.autoscaler import NodesLoad
    from loopml.store.nodes_repo import NodeRepo

    nodes = NodeRepo(plat.meta)
    source = NodesLoad(plat)
    assert source.load("ep") is None
    nodes.register("a", "http://127.0.0.1:1", "node", state="ready", endpoints_loaded=["ep", "other"],
                   load={"endpoints": {"ep": {"in_flight_rows": 5, "queue_rows": 3, "rps": 40.0},
                                        "other": {"in_flight_rows": 9}}})
    nodes.register("b", "http://127.0.0.1:2", "replica", endpoint="ep", state="draining",
                   load={"endpoints": {"ep": {"in_flight_rows": 1, "queue_rows": 0, "rps": 2.5}}})
    nodes.register("c", "http://127.0.0.1:3", "node", state="ready", endpoints_loaded=["other"])
    nodes.register("d", "http://127.0.0.1:4", "node", state="gone", endpoints_loaded=["ep"],
                   load={"endpoints": {"ep": {"in_flight": 100}}})
    assert source.load("ep") == Load(replicas=1, draining=1, queue=6.0, rps=42.5)


def test_a_fenced_ex_leader_records_no_decision(tmp_path: Path, postgres_url: str) -> None:
    """Two control planes on PostgreSQL: the paused ex-leader's autoscaler commits nothing (its
    tick's transactions are fenced), the new leader's decides once."""
    from loopml.controlplane.leadership import LEASE, LeaseLeadership
    from loopml.core.errors import Fenced
    from loopml.serving import scaling, service
    from tests.process_support import wait_for
    from tests.test_failover import FrozenClock

    plat = Platform(Settings(home=tmp_path / "home", database_url=postgres_url,
                             artifact_uri=str(tmp_path / "artifacts")))
    try:
        plat.models.add_version("tiny", 1, job_id=None, dataset="tab:1", kind="tabular", template="mlp",
                                hparams={}, metrics={}, lineage={}, runtimes=["keras"],
                                artifact_prefix="models/tiny/v1")
        service.create_endpoint(plat, "ep", {"model": "tiny:1"})
        scaling.set_autoscaling(plat, "ep", {"min_replicas": 1, "max_replicas": 4, "target_queue": 8})
        a = LeaseLeadership(plat, ttl_s=3, renew_s=0.1, holder="a", monotonic=FrozenClock())
        b = LeaseLeadership(plat, ttl_s=3, renew_s=0.1, holder="b")
        assert a.try_lead()
        wall, load = FakeWall(), SetLoad()
        load.value = Load(replicas=1, queue=30)
        old = Autoscaler(plat, now=wall, load=load, scaler=Recording(), interval_s=5)
        wait_for(lambda: not plat.leases.get(LEASE)["held"], timeout=60, poll=0.1, what="the lease to expire")
        assert b.try_lead() and a.leading()  # a's frozen clock says it still leads
        with a.fenced(), pytest.raises(Fenced):
            old._evaluate(plat.scaling.get("ep"), wall().timestamp())
        assert plat.scaling.desired("ep") == 1 and plat.scaling.decisions("ep") == []
        new = Autoscaler(plat, now=wall, load=load, scaler=Recording(), interval_s=5)
        with b.fenced():
            new.tick()
        assert plat.scaling.desired("ep") == 4 and len(plat.scaling.decisions("ep")) == 1
        b.stop()
    finally:
        plat.close()
