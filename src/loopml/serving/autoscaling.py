"""Endpoint autoscaling: the policy users set and the pure decision the leader applies to it.

Target tracking, as SageMaker's (Application Auto Scaling) and Kubernetes' HPA: a metric summed
over the endpoint's live replicas, divided by a per-replica target, gives the replicas wanted,
clamped to ``[min_replicas, max_replicas]``. Two metrics:

* ``queue``: requests in flight or queued per replica (``--target-queue``), the default;
* ``rps``: requests per second per replica (``--target-rps``).

Scale out fast, scale in slowly: a scale-out jumps straight to the count wanted, at most once per
``scale_out_cooldown_s`` (default 60 s); a scale-in removes ONE replica at a time, only when the
metric has asked for fewer replicas for a whole ``scale_in_cooldown_s`` (default 300 s, a
stabilisation window) and that long after the last change, and never while a replica is still
draining (the actuator drains a removed replica first: ``/readyz`` 503, in-flight to 0, stop).

Pure: no I/O, no clock of its own (times are seconds given by the caller), so the control plane's
autoscaler (controlplane/autoscaler.py) and the tests drive it alike.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from loopml.core.errors import InvalidInput

__all__ = ["Policy", "State", "Load", "Decision", "parse_policy", "decide", "METRICS",
           "DEFAULT_SCALE_OUT_COOLDOWN_S", "DEFAULT_SCALE_IN_COOLDOWN_S", "MAX_REPLICAS_LIMIT"]

METRICS = ("queue", "rps")
DEFAULT_SCALE_OUT_COOLDOWN_S = 60.0
DEFAULT_SCALE_IN_COOLDOWN_S = 300.0
MAX_REPLICAS_LIMIT = 1000
MAX_COOLDOWN_S = 86400.0
_FIELDS = {"min_replicas", "max_replicas", "target_queue", "target_rps", "scale_out_cooldown_s",
           "scale_in_cooldown_s"}


@dataclass(frozen=True)
class Policy:
    min_replicas: int
    max_replicas: int
    metric: str  # "queue" | "rps"
    target: float  # per replica
    scale_out_cooldown_s: float = DEFAULT_SCALE_OUT_COOLDOWN_S
    scale_in_cooldown_s: float = DEFAULT_SCALE_IN_COOLDOWN_S

    def clamp(self, n: int) -> int:
        return max(self.min_replicas, min(self.max_replicas, n))

    def as_dict(self) -> dict[str, Any]:
        return {"min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                "target_queue": self.target if self.metric == "queue" else None,
                "target_rps": self.target if self.metric == "rps" else None,
                "scale_out_cooldown_s": self.scale_out_cooldown_s,
                "scale_in_cooldown_s": self.scale_in_cooldown_s}


@dataclass(frozen=True)
class State:
    """What the leader keeps per endpoint (store: endpoint_scaling)."""

    desired: int
    last_scale_out_at: float | None = None
    last_scale_in_at: float | None = None
    below_since: float | None = None  # the metric has wanted fewer replicas since then


@dataclass(frozen=True)
class Load:
    """The endpoint's measured load, summed over its live replicas (their heartbeats)."""

    replicas: int  # live replicas serving it (draining ones excluded)
    draining: int = 0
    queue: float = 0.0  # requests in flight or queued
    rps: float = 0.0

    def value(self, metric: str) -> float:
        return self.queue if metric == "queue" else self.rps


@dataclass(frozen=True)
class Decision:
    """The outcome of one evaluation: a new state, and when the count changes, what to record."""

    state: State
    changed: bool
    from_replicas: int
    to_replicas: int
    metric: str
    value: float | None
    reason: str

    def record(self, at: float, target: float) -> dict[str, Any]:
        return {"at": at, "from_replicas": self.from_replicas, "to_replicas": self.to_replicas,
                "metric": self.metric, "value": self.value, "target": target, "reason": self.reason}


def _number(raw: dict[str, Any], key: str, lo: float, hi: float, *, integer: bool = False,
            lo_open: bool = False) -> Any:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InvalidInput(f"{key} must be a number, got {value!r}", field=key)
    if integer and int(value) != value:
        raise InvalidInput(f"{key} must be a whole number, got {value!r}", field=key)
    if (value <= lo if lo_open else value < lo) or value > hi:
        bound = f"above {lo:g}" if lo_open else f"at least {lo:g}"
        raise InvalidInput(f"{key} must be {bound} and at most {hi:g}, got {value!r}", field=key)
    return int(value) if integer else float(value)


def parse_policy(raw: dict[str, Any], *, base: Policy | None = None) -> Policy:
    """Validate a policy (API body / CLI flags); with ``base`` (a change) absent keys keep their
    value. Exactly one of target_queue / target_rps (a new one replaces the other)."""
    if not isinstance(raw, dict):
        raise InvalidInput("an autoscaling policy must be a JSON object")
    unknown = set(raw) - _FIELDS
    if unknown:
        raise InvalidInput(f"unknown autoscaling field(s) {sorted(unknown)}; valid: {sorted(_FIELDS)}")
    raw = {k: v for k, v in raw.items() if v is not None}
    if "target_queue" in raw and "target_rps" in raw:
        raise InvalidInput("give one target: target_queue (per replica) or target_rps (per replica)",
                           field="target_queue")
    merged: dict[str, Any] = base.as_dict() if base else {}
    if "target_queue" in raw or "target_rps" in raw:
        merged.pop("target_queue", None)
        merged.pop("target_rps", None)
    merged = {k: v for k, v in merged.items() if v is not None}
    merged.update(raw)
    if "min_replicas" not in merged or "max_replicas" not in merged:
        raise InvalidInput("autoscaling needs both min_replicas and max_replicas",
                           field="min_replicas" if "min_replicas" not in merged else "max_replicas")
    lo = _number(merged, "min_replicas", 1, MAX_REPLICAS_LIMIT, integer=True)
    hi = _number(merged, "max_replicas", 1, MAX_REPLICAS_LIMIT, integer=True)
    if lo > hi:
        raise InvalidInput(f"min_replicas ({lo}) must not exceed max_replicas ({hi})", field="min_replicas")
    if "target_rps" in merged:
        metric, target = "rps", _number(merged, "target_rps", 0, 1e9, lo_open=True)
    elif "target_queue" in merged:
        metric, target = "queue", _number(merged, "target_queue", 0, 1e9, lo_open=True)
    else:
        raise InvalidInput("autoscaling needs a target per replica: target_queue or target_rps",
                           field="target_queue")
    out_s = _number({**merged, "scale_out_cooldown_s": merged.get("scale_out_cooldown_s",
                                                                  DEFAULT_SCALE_OUT_COOLDOWN_S)},
                    "scale_out_cooldown_s", 0, MAX_COOLDOWN_S)
    in_s = _number({**merged, "scale_in_cooldown_s": merged.get("scale_in_cooldown_s",
                                                                DEFAULT_SCALE_IN_COOLDOWN_S)},
                   "scale_in_cooldown_s", 0, MAX_COOLDOWN_S)
    return Policy(lo, hi, metric, target, out_s, in_s)


def _fmt(x: float) -> str:
    return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"


def decide(policy: Policy, state: State, load: Load | None, now: float) -> Decision:
    """One evaluation at ``now`` (seconds). Returns the next state; ``changed`` when the desired
    count moves (the caller records the decision and tells the actuator)."""
    current = state.desired
    metric = policy.metric

    def hold(reason: str, value: float | None, st: State = state) -> Decision:
        return Decision(st, False, current, current, metric, value, reason)

    def move(to: int, reason: str, value: float | None, **times: float | None) -> Decision:
        st = State(to, times.get("out", state.last_scale_out_at), times.get("in", state.last_scale_in_at),
                   None)
        return Decision(st, True, current, to, metric, value, reason)

    clamped = policy.clamp(current)
    if clamped != current:  # the policy changed: its bounds apply at once, no cooldown
        side = "min_replicas" if clamped > current else "max_replicas"
        return move(clamped, f"{side} is {clamped}", None,
                    **({"out": now} if clamped > current else {"in": now}))
    if load is None or (load.replicas == 0 and load.draining == 0):
        return hold("no replica reports load", None)
    value = load.value(metric)
    wanted_raw = math.ceil(value / policy.target - 1e-9) if value > 0 else 0
    wanted = policy.clamp(wanted_raw)
    unit = "requests in flight" if metric == "queue" else "req/s"
    why = f"{unit} {_fmt(value)} / target {_fmt(policy.target)} per replica = {wanted_raw}"
    if wanted_raw != wanted:
        why += f", clamped to {wanted}"
    if wanted > current:
        since = None if state.last_scale_out_at is None else now - state.last_scale_out_at
        if since is not None and since < policy.scale_out_cooldown_s:
            return hold(f"{why}; scale-out cooldown ({policy.scale_out_cooldown_s:g} s) for another "
                        f"{policy.scale_out_cooldown_s - since:.0f} s", value, State(
                            current, state.last_scale_out_at, state.last_scale_in_at, None))
        return move(wanted, f"scale out: {why}", value, out=now)
    if wanted == current:
        return hold(why, value, State(current, state.last_scale_out_at, state.last_scale_in_at, None))
    # fewer wanted: scale in one replica, slowly
    below = state.below_since if state.below_since is not None else now
    waiting = State(current, state.last_scale_out_at, state.last_scale_in_at, below)
    if load.draining:
        return hold(f"{why}; {load.draining} replica(s) still draining", value, waiting)
    last = max((t for t in (state.last_scale_out_at, state.last_scale_in_at) if t is not None), default=None)
    window = policy.scale_in_cooldown_s
    if now - below < window:
        return hold(f"{why}; scale in once it has stayed below for {window:g} s "
                    f"({now - below:.0f} s so far)", value, waiting)
    if last is not None and now - last < window:
        return hold(f"{why}; scale-in cooldown ({window:g} s) for another {window - (now - last):.0f} s",
                    value, waiting)
    return move(current - 1, f"scale in (one replica at a time): {why}", value, **{"in": now})
