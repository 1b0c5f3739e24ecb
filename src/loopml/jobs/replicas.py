"""The ReplicaPlacer protocol: how the control plane's replica controller places data-plane
replicas of an endpoint on a cluster, and sees them live or die.

One implementation today, ``RayReplicas`` (jobs/ray_replicas.py, Ray imported only there): a
replica is a detached Ray actor holding the replica's resources on a node and running LoopML's
serving process (``python -m loopml.serving.server``) as its child, on that node's address.
The controller (controlplane/replicas.py) never asks how, only these questions.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from loopml.platform import Platform

PENDING, RUNNING, DEAD = "pending", "running", "dead"


@dataclass
class Replica:
    endpoint: str
    index: int  # the slot 0..N-1 it fills; a replacement takes the slot of the one that died
    name: str  # unique per incarnation (e.g. the Ray actor's name)
    state: str = PENDING  # pending (waiting for a node) | running (its process serves) | dead
    node: str | None = None  # where it was placed
    address: str | None = None  # http://IP:PORT of its serving process
    pid: int | None = None
    reason: str | None = None  # why it died


@runtime_checkable
class ReplicaPlacer(Protocol):
    def observe(self) -> list[Replica]:
        """Every replica this placer knows (also ones started before a control-plane restart);
        a replica that died is reported once with state ``dead`` and then forgotten."""

    def place(self, endpoint: str, index: int, resources: dict[str, float]) -> Replica:
        """Start a replica for slot ``index`` of ``endpoint`` on a node with ``resources`` free."""

    def remove(self, replica: Replica) -> None:
        """Stop a replica (SIGTERM: it drains in-flight requests and flushes capture first)."""

    def detach(self) -> None:
        """Stop watching; replicas keep serving (the data plane never depends on the control plane)."""


def make_replica_placer(platform: Platform) -> ReplicaPlacer | None:
    """The Ray placer when LOOPML_EXECUTOR=ray; None on one machine (the control plane's own
    serving process serves every endpoint there)."""
    if platform.settings.executor != "ray":
        return None
    from loopml.jobs.ray_replicas import RayReplicas

    return RayReplicas(platform)
