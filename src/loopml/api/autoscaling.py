"""/endpoints/{name}/autoscaling: an endpoint's autoscaling policy, desired replicas and decisions.

Only the policy is written here; the leading control plane's autoscaler evaluates it
(controlplane/autoscaler.py) and records each decision (time, from → to, metric value, reason).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from loopml.serving import scaling

router = APIRouter(prefix="/endpoints", tags=["endpoints"])


class AutoscalingIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    min_replicas: int | None = Field(None, description="at least this many replicas (>= 1)")
    max_replicas: int | None = Field(None, description="at most this many replicas (>= min_replicas)")
    target_queue: float | None = Field(None, description="target requests in flight or queued per replica (> 0)")
    target_rps: float | None = Field(None, description="target requests per second per replica (> 0), "
                                     "instead of target_queue")
    scale_out_cooldown_s: float | None = Field(None, description="seconds between two scale-outs (default 60)")
    scale_in_cooldown_s: float | None = Field(None, description="the load must want fewer replicas this long, "
                                              "and this long after the last change, before one is removed "
                                              "(default 300)")


@router.put("/{name}/autoscaling", summary="Set or change an endpoint's autoscaling policy (absent fields "
            "keep their value)")
def put_autoscaling(name: str, body: AutoscalingIn, request: Request) -> dict[str, Any]:
    return scaling.set_autoscaling(request.app.state.platform, name, body.model_dump(exclude_unset=True))


@router.get("/{name}/autoscaling", summary="An endpoint's autoscaling policy, desired replicas, last "
            "evaluation and decisions (newest first)")
def get_autoscaling(name: str, request: Request, limit: int = Query(20, ge=1, le=100)) -> dict[str, Any]:
    return scaling.get_autoscaling(request.app.state.platform, name, decisions=limit)


@router.delete("/{name}/autoscaling", summary="Turn autoscaling off (the decisions stay)")
def delete_autoscaling(name: str, request: Request) -> dict[str, Any]:
    return scaling.remove_autoscaling(request.app.state.platform, name)
