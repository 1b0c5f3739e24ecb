"""The replica controller's reconcile rules with a fake placer (no Ray; the real cluster is in
tests/test_ray_replicas.py): missing slots placed, extra slots and deleted endpoints' replicas
removed, a replica gone for good placed again, the desired count read in one pluggable place."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from loopml.controlplane.replicas import ReplicaController
from loopml.jobs.replicas import DEAD, RUNNING, Replica


class FakePlacer:
    def __init__(self) -> None:
        self.live: dict[str, Replica] = {}
        self.placed: list[tuple[str, int]] = []
        self.removed: list[str] = []
        self.detached = False

    def observe(self) -> list[Replica]:
        out = list(self.live.values())
        for r in out:
            if r.state == DEAD:
                del self.live[r.name]
        return out

    def place(self, endpoint: str, index: int, resources: dict[str, float]) -> Replica:
        self.resources = resources
        r = Replica(endpoint, index, f"replica:{endpoint}:{index}", state=RUNNING)
        self.live[r.name] = r
        self.placed.append((endpoint, index))
        return r

    def remove(self, replica: Replica) -> None:
        self.removed.append(replica.name)
        self.live.pop(replica.name, None)

    def detach(self) -> None:
        self.detached = True


def _platform(records: list[dict[str, Any]], autoscaled: dict[str, int] | None = None) -> Any:
    return SimpleNamespace(endpoints=SimpleNamespace(list=lambda: records),
                           scaling=SimpleNamespace(desired=lambda name: (autoscaled or {}).get(name)))


def test_reconciles_count_deletions_and_losses() -> None:
    records = [{"name": "a", "spec": {"replicas": 2}}, {"name": "b", "spec": {}}]
    placer = FakePlacer()
    ctl = ReplicaController(_platform(records), placer)
    ctl.tick()
    assert sorted(placer.placed) == [("a", 0), ("a", 1), ("b", 0)]
    assert [r["index"] for r in ctl.replicas("a")] == [0, 1]

    placer.live["replica:a:1"].state, placer.live["replica:a:1"].reason = DEAD, "node x died"
    ctl.tick()  # gone for good: placed again in the same slot
    assert placer.placed[-1] == ("a", 1)

    records[0]["spec"]["replicas"] = 1
    del records[1]  # b deleted
    ctl.tick()
    assert sorted(placer.removed) == ["replica:a:1", "replica:b:0"]
    assert [r["index"] for r in ctl.replicas("a")] == [0] and ctl.replicas("b") == []
    ctl.stop()
    assert placer.detached


def test_desired_count_is_pluggable_and_defaults_to_one() -> None:
    placer = FakePlacer()  # the autoscaler's count wins over the spec's
    ctl = ReplicaController(_platform([{"name": "a", "spec": {"replicas": 1}}, {"name": "b", "spec": {}}],
                                      autoscaled={"a": 2}), placer)
    ctl.tick()
    assert sorted(placer.placed) == [("a", 0), ("a", 1), ("b", 0)]
    placer = FakePlacer()
    ctl = ReplicaController(_platform([{"name": "a", "spec": {"replicas": 1}}]), placer, desired=lambda rec: 3)
    ctl.tick()
    assert sorted(placer.placed) == [("a", 0), ("a", 1), ("a", 2)]
    assert placer.resources == {"cpus": 1, "memory_gb": 1, "gpus": 0}


def test_replica_resources_come_from_the_spec() -> None:
    from loopml.serving.spec import normalise_spec

    spec = normalise_spec({"model": "m:1", "replicas": 2, "replica_resources": {"cpus": 2, "memory_gb": 3}})
    assert spec["replica_resources"] == {"cpus": 2, "memory_gb": 3, "gpus": 0}
    assert normalise_spec({"replica_resources": {"cpus": 0.5}}, base=spec)["replica_resources"] == \
        {"cpus": 0.5, "memory_gb": 3, "gpus": 0}  # an update changes only what it names
    placer = FakePlacer()
    ReplicaController(_platform([{"name": "a", "spec": spec}]), placer).tick()
    assert placer.resources == {"cpus": 2, "memory_gb": 3, "gpus": 0}


def test_nothing_on_one_machine() -> None:
    platform = SimpleNamespace(settings=SimpleNamespace(executor="local"),
                               endpoints=SimpleNamespace(list=lambda: [{"name": "a", "spec": {"replicas": 1}}]))
    ctl = ReplicaController(platform)
    ctl.tick()
    assert ctl.placer is None and ctl.replicas("a") == []
