"""``loopml nodes list``: the data-plane nodes — where endpoints are served, state and load."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from loopml.cli.output import client, console, emit, num, table

app = typer.Typer(help="Data-plane nodes: `loopml serve` processes and the control plane's own data plane.",
                  no_args_is_help=True)


def node_state(node: dict[str, Any]) -> str:
    """``lost`` wins: a node silent past the TTL keeps its last reported state in the row."""
    return "[red]lost[/]" if node.get("lost") else {
        "ready": "[green]ready[/]", "starting": "[yellow]starting[/]", "draining": "[cyan]draining[/]",
    }.get(node["state"], node["state"])


def _load(node: dict[str, Any], endpoint: str | None) -> tuple[str, str, str]:
    load = node.get("load") or {}
    if endpoint is not None:
        load = (load.get("endpoints") or {}).get(endpoint) or {}
    return (num(load.get("rps"), 3), num(load.get("latency_ms"), 3),
            f"{load.get('queue_rows', '-')}/{load.get('in_flight_rows', '-')}")


def nodes_table(nodes: list[dict[str, Any]], endpoint: str | None = None):
    """One row per node; the load columns are ``endpoint``'s when given, else the node's totals."""
    return table("node", "address", "kind", "state", "heartbeat", "req/s", "latency ms", "queued/in flight",
                 *(() if endpoint else ("endpoints",)), rows=[
                     (n["id"], n["address"], n["kind"], node_state(n), f"{n['heartbeat_age_s']:.1f} s ago",
                      *_load(n, endpoint), *(() if endpoint else (", ".join(n["endpoints_loaded"]) or "-",)))
                     for n in nodes])


def print_nodes(nodes: list[dict[str, Any]]) -> None:
    if not nodes:
        console().print("no data-plane node reports itself: start `loopml server` or `loopml serve`")
        return
    console().print(nodes_table(nodes))


@app.command("list")
def list_nodes(
    endpoint: Annotated[Optional[str], typer.Option("--endpoint", "-e", help="Only nodes serving this endpoint.")] = None,
    include_gone: Annotated[bool, typer.Option("--all", help="Also nodes stopped cleanly (gone).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """Data-plane nodes: address, state (lost: no heartbeat lately), endpoints loaded, load.

    Example: loopml nodes list --endpoint digits
    """
    emit(client().serving_nodes(endpoint, include_gone=include_gone), as_json, print_nodes)


@app.command("haproxy")
def haproxy_config(
    endpoint: Annotated[Optional[str], typer.Option("--endpoint", "-e", help="Only nodes serving this endpoint.")] = None,
    bind: Annotated[str, typer.Option("--bind", help="HAProxy's listening address.")] = ":8081",
) -> None:
    """Print an HAProxy configuration (deploy/haproxy.cfg's) whose servers are the live nodes.

    Regenerate it when nodes come and go (a Ray replica restarted on another port), e.g.
    loopml nodes haproxy > /etc/haproxy/haproxy.cfg && systemctl reload haproxy
    """
    from loopml.cli.haproxy import live_servers, render
    from loopml.core.errors import InvalidInput

    servers = live_servers(client().serving_nodes(endpoint))
    if not servers:  # an empty backend would answer 503 to everything: refuse instead
        raise InvalidInput("no live data-plane node" + (f" serves endpoint {endpoint!r}" if endpoint else "") +
                           ": start `loopml serve` (or check `loopml nodes list`)")
    typer.echo(render(servers, bind), nl=False)
