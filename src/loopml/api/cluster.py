"""/cluster: where jobs run — the executor's nodes, their resources and the jobs on each."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

router = APIRouter(tags=["jobs"])


class NodeResources(BaseModel):
    cpus: float
    memory_gb: float
    gpus: float


class NodeJob(BaseModel):
    id: str
    kind: str
    resources: NodeResources = Field(description="what the job asked for")


class NodeSpare(BaseModel):
    name: str = Field(description="the spare's name (Ray: its actor's name)")
    ready: bool = Field(description="its imports are done: a job handed to it skips them")


class Node(BaseModel):
    model_config = ConfigDict(extra="allow")
    node: str = Field(description="node id (Ray: the first 12 hex digits) or this host's name")
    address: str | None = None
    alive: bool
    head: bool
    total: NodeResources
    free: NodeResources | None = Field(None, description="unreserved now (Ray); None when not known")
    jobs: list[NodeJob] = Field(description="jobs running on this node")
    spares: list[NodeSpare] = Field(default_factory=list, description="warm workers waiting on this node for a job "
                                    "(TensorFlow imported; LOOPML_WARM_WORKERS)")


class ClusterStatus(BaseModel):
    executor: str = Field(description="local | ray")
    address: str | None = Field(None, description="the Ray cluster's address (LOOPML_RAY_ADDRESS)")
    nodes: list[Node]
    unplaced: list[NodeJob] = Field(description="running jobs waiting for a node with room (Ray)")


@router.get("/cluster", response_model=ClusterStatus, summary="Nodes, their resources and the jobs on each")
async def cluster(request: Request) -> dict[str, Any]:
    from loopml.jobs.executors import cluster_status

    control = getattr(request.app.state, "control", None)
    return await run_in_threadpool(cluster_status, request.app.state.platform,
                                   control.executor if control is not None else None)
