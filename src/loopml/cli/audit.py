"""``loopml audit``: who changed what, when (admin)."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from loopml.cli.output import client, console, emit, table, when

app = typer.Typer(help="The audit log: every mutating call (who, token, action, object, status, request "
                       "id, time). Never a secret.", no_args_is_help=True)


@app.command("list")
def list_(
    user: Annotated[Optional[str], typer.Option("--user", "-u", help="Only this actor (a user, bootstrap, "
                                                "workflow:EXECUTION, function:NAME).")] = None,
    since: Annotated[Optional[str], typer.Option("--since", help="An ISO time or a duration back: 1h, 7d.")] = None,
    action: Annotated[Optional[str], typer.Option("--action", help='e.g. "POST /datasets".')] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many (newest first).")] = 100,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
) -> None:
    """List audit events, newest first.

    Example: loopml audit list --user alice --since 1d
    """
    def render(events: list[dict[str, Any]]) -> None:
        if not events:
            console().print("no audit events match")
            return
        console().print(table("at", "actor", "token", "action", "object", "status", "request id", rows=[
            (when(e["at"]), e["actor"], e.get("token_id") or "-", e["action"], e.get("object") or "-",
             f"{e.get('status') or '-'} {e['outcome']}", e.get("request_id") or "-") for e in events]))
    emit(client().audit(user=user, since=since, action=action, limit=limit), as_json, render)
