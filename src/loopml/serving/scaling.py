"""Endpoint autoscaling as the API offers it: set, show and remove an endpoint's policy.

Only the desired state is written here; the leader's autoscaler (controlplane/autoscaler.py)
evaluates it and records every decision.
"""

from __future__ import annotations

from typing import Any

from loopml.platform import Platform
from loopml.serving.autoscaling import Policy, parse_policy
from loopml.store.scaling_repo import iso_seconds

__all__ = ["set_autoscaling", "get_autoscaling", "remove_autoscaling", "autoscaling_summary", "desired_replicas"]


def _stored_policy(row: dict[str, Any] | None) -> Policy | None:
    if row is None:
        return None
    return Policy(row["min_replicas"], row["max_replicas"], row["metric"], row["target"],
                  row["scale_out_cooldown_s"], row["scale_in_cooldown_s"])


def set_autoscaling(platform: Platform, name: str, raw: dict[str, Any]) -> dict[str, Any]:
    """Set or change the policy (absent fields keep their value when one exists). A new policy
    starts at the endpoint's own replica count clamped to [min, max]."""
    endpoint = platform.endpoints.get(name)  # 404 names the endpoint
    policy = parse_policy(raw, base=_stored_policy(platform.scaling.get(name)))
    start = policy.clamp(int(endpoint["spec"].get("replicas") or 1))
    platform.scaling.put(name, {"min_replicas": policy.min_replicas, "max_replicas": policy.max_replicas,
                                "metric": policy.metric, "target": policy.target,
                                "scale_out_cooldown_s": policy.scale_out_cooldown_s,
                                "scale_in_cooldown_s": policy.scale_in_cooldown_s}, desired=start)
    return get_autoscaling(platform, name)


def remove_autoscaling(platform: Platform, name: str) -> dict[str, Any]:
    platform.endpoints.get(name)
    return {"endpoint": name, "removed": platform.scaling.remove(name)}


def autoscaling_summary(platform: Platform, name: str, *, decisions: int = 10) -> dict[str, Any] | None:
    """The policy, the desired count, the last evaluation and the newest decisions; None when the
    endpoint is not autoscaled."""
    row = platform.scaling.get(name)
    if row is None:
        return None
    return {**_stored_policy(row).as_dict(), "desired_replicas": row["desired"],
            "last_scale_out_at": iso_seconds(row["last_scale_out_at"]),
            "last_scale_in_at": iso_seconds(row["last_scale_in_at"]),
            "last_evaluation": None if row["last_evaluated_at"] is None else {
                "at": iso_seconds(row["last_evaluated_at"]), "metric": row["metric"],
                "value": row["last_value"], "reason": row["last_reason"]},
            "decisions": platform.scaling.decisions(name, limit=decisions)}


def get_autoscaling(platform: Platform, name: str, *, decisions: int = 20) -> dict[str, Any]:
    platform.endpoints.get(name)
    summary = autoscaling_summary(platform, name, decisions=decisions)
    return {"endpoint": name, "enabled": summary is not None, **(summary or {
        "decisions": platform.scaling.decisions(name, limit=decisions)})}


def desired_replicas(platform: Platform, record: dict[str, Any]) -> int:
    """How many replicas an endpoint (its record) should have now: the autoscaler's count when it
    is autoscaled, else its spec's ``replicas`` (default 1). What a replica controller calls."""
    desired = platform.scaling.desired(record["name"])
    return desired if desired is not None else int((record.get("spec") or {}).get("replicas") or 1)
