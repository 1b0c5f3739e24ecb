"""The autoscaling part of ``loopml endpoints update`` / ``show``: the flags, and the policy and
decisions as ``show`` prints them (the options are declared here, used by cli/endpoints.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from loopml.cli.output import console, num, table, when
from loopml.core.errors import InvalidInput

if TYPE_CHECKING:
    from loopml.sdk.client import Client

MinReplicasOpt = Annotated[Optional[int], typer.Option(
    "--min-replicas", metavar="N", help="Autoscaling: at least N replicas (>= 1).", rich_help_panel="Autoscaling")]
MaxReplicasOpt = Annotated[Optional[int], typer.Option(
    "--max-replicas", metavar="N", help="Autoscaling: at most N replicas.", rich_help_panel="Autoscaling")]
TargetQueueOpt = Annotated[Optional[float], typer.Option(
    "--target-queue", metavar="REQUESTS", help="Autoscaling target: requests in flight or queued per replica.",
    rich_help_panel="Autoscaling")]
TargetRpsOpt = Annotated[Optional[float], typer.Option(
    "--target-rps", metavar="R", help="Autoscaling target: requests per second per replica (instead of "
    "--target-queue).", rich_help_panel="Autoscaling")]
OutCooldownOpt = Annotated[Optional[float], typer.Option(
    "--scale-out-cooldown", metavar="SECONDS", help="At most one scale-out per SECONDS (default 60).",
    rich_help_panel="Autoscaling")]
InCooldownOpt = Annotated[Optional[float], typer.Option(
    "--scale-in-cooldown", metavar="SECONDS", help="Remove one replica only after the load has wanted fewer for "
    "SECONDS, and SECONDS after the last change (default 300).", rich_help_panel="Autoscaling")]
NoAutoscalingOpt = Annotated[bool, typer.Option(
    "--no-autoscaling", help="Turn autoscaling off.", rich_help_panel="Autoscaling")]

FLAGS = {"min_replicas": "--min-replicas", "max_replicas": "--max-replicas", "target_queue": "--target-queue",
         "target_rps": "--target-rps", "scale_out_cooldown_s": "--scale-out-cooldown",
         "scale_in_cooldown_s": "--scale-in-cooldown"}


def policy_args(min_replicas: int | None, max_replicas: int | None, target_queue: float | None,
                target_rps: float | None, scale_out_cooldown: float | None,
                scale_in_cooldown: float | None) -> dict[str, Any]:
    """The flags given, as the API's fields (empty: no autoscaling flag)."""
    raw = {"min_replicas": min_replicas, "max_replicas": max_replicas, "target_queue": target_queue,
           "target_rps": target_rps, "scale_out_cooldown_s": scale_out_cooldown,
           "scale_in_cooldown_s": scale_in_cooldown}
    return {k: v for k, v in raw.items() if v is not None}


def apply(c: Client, name: str, policy: dict[str, Any], off: bool) -> dict[str, Any] | None:
    """Set the policy (checked here first, so a bad flag fails before anything changes)."""
    if off and policy:
        raise InvalidInput("give either autoscaling flags or --no-autoscaling, not both")
    if off:
        return c.remove_autoscaling(name)
    if not policy:
        return None
    from loopml.serving.autoscaling import parse_policy  # pure: core only

    current = c.autoscaling(name, limit=1)
    base = None
    if current.get("enabled"):
        base = parse_policy({k: current.get(k) for k in FLAGS})
    try:
        parse_policy(policy, base=base)
    except InvalidInput as exc:
        message = exc.message
        for field, flag in FLAGS.items():
            message = message.replace(field, flag)
        raise InvalidInput(message) from None
    return c.set_autoscaling(name, **policy)


def print_autoscaling(summary: dict[str, Any] | None) -> None:
    out = console()
    if not summary:
        return
    target = (f"{num(summary['target_queue'], 2)} requests in flight per replica" if summary.get("target_queue")
              is not None else f"{num(summary.get('target_rps'), 2)} req/s per replica")
    out.print(f"autoscaling: [bold]{summary['desired_replicas']}[/] replica(s) wanted, "
              f"{summary['min_replicas']}-{summary['max_replicas']}, target {target}; cooldowns "
              f"out {num(summary['scale_out_cooldown_s'], 1)} s, in {num(summary['scale_in_cooldown_s'], 1)} s")
    last = summary.get("last_evaluation")
    if last:
        from rich.markup import escape

        out.print(f"  last evaluation {when(last['at'])}: {escape(str(last.get('reason') or '-'))}")
    decisions = summary.get("decisions") or []
    if decisions:
        out.print(table("time", "from", "to", "metric", "value", "reason", title="scaling decisions (newest first)",
                        rows=[(when(d["at"]), str(d["from_replicas"]), str(d["to_replicas"]), d["metric"],
                               "-" if d.get("value") is None else num(d["value"], 2), d["reason"])
                              for d in decisions]))
