"""/nodes: the data-plane nodes — where endpoints are served, each node's state and load.

Every serving process reports itself (serving/node.py → ``serving_nodes``): the control plane's
embedded data plane and each ``loopml serve`` node. One silent for LOOPML_NODE_LOST_AFTER_S is
``lost`` (killed, or its machine gone); a clean stop says ``gone``.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from loopml.platform import Platform

router = APIRouter(tags=["endpoints"])


class ServingNode(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str = Field(description="hostname-pid-random: one serving process")
    address: str = Field(description="where it listens, e.g. http://10.0.0.7:8081")
    kind: str = Field(description="embedded (the control plane's data plane) | node (loopml serve) | replica")
    endpoint: str | None = Field(None, description="a replica's endpoint (replica set)")
    state: str = Field(description="starting | ready (every endpoint loaded: /readyz is 200) | draining | gone")
    lost: bool = Field(description="no heartbeat for LOOPML_NODE_LOST_AFTER_S (killed, or its machine gone)")
    started_at: str
    heartbeat_age_s: float = Field(description="seconds since its last report (the database's clock)")
    endpoints_loaded: list[str]
    load: dict[str, Any] = Field(description="since its previous report: rps, latency_ms, queue_rows, "
                                 "in_flight_rows per endpoint, and the node's totals")
    version: str


def serving_nodes(platform: Platform, endpoint: str | None = None,
                  include_gone: bool = False) -> list[dict[str, Any]]:
    """The nodes (serving ``endpoint`` when given: it is among their endpoints loaded)."""
    rows = platform.nodes.list(serving=endpoint, lost_after_s=platform.settings.node_lost_after_s)
    return [r for r in rows if include_gone or r["state"] != "gone"]


@router.get("/nodes", response_model=list[ServingNode],
            summary="Data-plane nodes: address, state (lost: silent), endpoints loaded, load")
async def list_nodes(request: Request,
                     endpoint: str | None = Query(None, description="only nodes serving this endpoint"),
                     all: bool = Query(False, description="also nodes stopped cleanly (gone)")) -> list[dict[str, Any]]:
    return await run_in_threadpool(serving_nodes, request.app.state.platform, endpoint, all)
