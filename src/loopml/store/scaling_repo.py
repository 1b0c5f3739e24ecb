"""Endpoint autoscaling: the policy (API), the leader's state and its decisions (controlplane/autoscaler.py).

``desired(endpoint)`` is what a replica controller reads: the autoscaler's count, or None when the
endpoint has no autoscaling policy (then the endpoint's own spec decides).
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from sqlalchemy import delete, select

from loopml.core.timeutil import iso, utcnow
from loopml.store import tables as t
from loopml.store.db import MetadataStore

KEEP = 100  # decisions kept per endpoint (newest)


def iso_seconds(at: float | None) -> str | None:
    return None if at is None else iso(datetime.fromtimestamp(at, timezone.utc))


def decision_record(d: t.ScalingDecision) -> dict[str, Any]:
    return {"at": iso_seconds(d.at), "from_replicas": d.from_replicas, "to_replicas": d.to_replicas,
            "metric": d.metric, "value": d.value, "target": d.target, "reason": d.reason}


def scaling_row(r: t.EndpointScaling) -> dict[str, Any]:
    """The stored row as plain values (times as seconds: the policy's inputs)."""
    return {c: getattr(r, c) for c in (
        "endpoint", "min_replicas", "max_replicas", "metric", "target", "scale_out_cooldown_s",
        "scale_in_cooldown_s", "desired", "last_scale_out_at", "last_scale_in_at", "below_since",
        "last_evaluated_at", "last_reason", "last_value")}


class ScalingRepo:
    def __init__(self, store: MetadataStore) -> None:
        self.store = store

    def put(self, endpoint: str, policy: dict[str, Any], desired: int) -> None:
        """Set (or replace) the policy; ``desired`` only for a new row (an existing one keeps its
        count and history: the leader clamps it to new bounds at its next evaluation)."""
        with self.store.session() as s:
            row = s.get(t.EndpointScaling, endpoint, with_for_update=True)
            if row is None:
                row = t.EndpointScaling(endpoint=endpoint, desired=desired)
                s.add(row)
            for key, value in policy.items():
                setattr(row, key, value)
            row.updated_at = utcnow()

    def remove(self, endpoint: str) -> bool:
        with self.store.session() as s:
            # the decisions stay: the history of an endpoint outlives turning autoscaling off
            return bool(s.execute(delete(t.EndpointScaling).where(t.EndpointScaling.endpoint == endpoint)).rowcount)

    def get(self, endpoint: str) -> dict[str, Any] | None:
        with self.store.session() as s:
            row = s.get(t.EndpointScaling, endpoint)
            return None if row is None else scaling_row(row)

    def all(self) -> list[dict[str, Any]]:
        with self.store.session() as s:
            return [scaling_row(r) for r in s.execute(
                select(t.EndpointScaling).order_by(t.EndpointScaling.endpoint)).scalars()]

    def desired(self, endpoint: str) -> int | None:
        """The replica count the autoscaler wants for ``endpoint``; None: not autoscaled."""
        with self.store.session() as s:
            return s.execute(select(t.EndpointScaling.desired)
                             .where(t.EndpointScaling.endpoint == endpoint)).scalar_one_or_none()

    def evaluated(self, endpoint: str, state: dict[str, Any], *, at: float, reason: str,
                  value: float | None, decision: dict[str, Any] | None = None) -> bool:
        """The leader's evaluation: the new state, and a decision row when the count changed — one
        transaction (fenced by the leader's tick). False when the policy was removed meanwhile."""
        with self.store.session() as s:
            row = s.get(t.EndpointScaling, endpoint, with_for_update=True)
            if row is None:
                return False
            for key in ("desired", "last_scale_out_at", "last_scale_in_at", "below_since"):
                setattr(row, key, state[key])
            row.last_evaluated_at, row.last_reason, row.last_value = at, reason, value
            if decision is not None:
                s.add(t.ScalingDecision(endpoint=endpoint, **decision))
                s.flush()
                old = s.execute(select(t.ScalingDecision.id).where(t.ScalingDecision.endpoint == endpoint)
                                .order_by(t.ScalingDecision.id.desc()).offset(KEEP)).scalars().all()
                if old:
                    s.execute(delete(t.ScalingDecision).where(t.ScalingDecision.id.in_(old)))
            return True

    def decisions(self, endpoint: str, limit: int = 20) -> list[dict[str, Any]]:
        """Newest first."""
        with self.store.session() as s:
            rows = s.execute(select(t.ScalingDecision).where(t.ScalingDecision.endpoint == endpoint)
                             .order_by(t.ScalingDecision.id.desc()).limit(limit)).scalars()
            return [decision_record(d) for d in rows]
