"""``loopml cluster status``: where jobs run — nodes, their resources, the jobs on each."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from loopml.cli.output import client, console, emit, table

app = typer.Typer(help="Where jobs run: the executor's nodes (LOOPML_EXECUTOR=local: this host; ray: the "
                       "Ray cluster).", no_args_is_help=True)


def _amount(res: dict[str, Any] | None, key: str) -> str:
    return f"{res[key]:g}" if res and res.get(key) is not None else "?"


def _column(node: dict[str, Any], key: str) -> str:
    total, free = node.get("total"), node.get("free")
    return f"{_amount(free, key)}/{_amount(total, key)}" if free else _amount(total, key)


def _warm(spares: list[dict[str, Any]]) -> str:
    """Spare workers on the node: ready ones (imports done) of all."""
    return f"{sum(s['ready'] for s in spares)}/{len(spares)} ready" if spares else "-"


def print_status(status: dict[str, Any]) -> None:
    out = console()
    where = f" at {status['address']}" if status.get("address") else ""
    out.print(f"executor {status['executor']}{where}: {sum(n['alive'] for n in status['nodes'])} node(s) alive")
    free = any(n.get("free") for n in status["nodes"])
    head = "free/total " if free else ""
    out.print(table("node", "address", "state", f"{head}CPUs", f"{head}memory GB", f"{head}GPUs", "warm", "jobs", rows=[
        (n["node"] + (" (head)" if n.get("head") else ""), n.get("address") or "",
         "alive" if n["alive"] else "dead", _column(n, "cpus"), _column(n, "memory_gb"), _column(n, "gpus"),
         _warm(n.get("spares") or []), ", ".join(f"{j['id']} ({j['kind']})" for j in n["jobs"]) or "-")
        for n in status["nodes"]]))
    if status.get("unplaced"):
        out.print("waiting for a node with room: " + ", ".join(f"{j['id']} ({j['kind']})" for j in status["unplaced"]))


@app.command("status")
def status(as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False) -> None:
    """Nodes, their resources (free/total on Ray), their warm workers and the jobs running on each.

    Example: loopml cluster status
    """
    emit(client().cluster_status(), as_json, print_status)
