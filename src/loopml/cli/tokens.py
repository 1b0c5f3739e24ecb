"""``loopml tokens``: API tokens — create (shown once), list, revoke."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from loopml.cli.output import client, console, emit, print_json, table, when
from loopml.cli.users import check_role

app = typer.Typer(help="API tokens (lml_<id>_<secret>): hashed at rest, shown once, revocable, expiring. "
                       "A token never does more than its user's role.", no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def _state(t: dict[str, Any]) -> str:
    from loopml.core.timeutil import parse_iso, utcnow

    if t.get("revoked_at"):
        return "revoked"
    if t.get("expires_at") and parse_iso(t["expires_at"]) <= utcnow():
        return "expired"
    return "active"


@app.command("create")
def create(
    name: Annotated[Optional[str], typer.Option("--name", help="A label, e.g. ci.")] = None,
    expires: Annotated[Optional[str], typer.Option(
        "--expires", metavar="DURATION", help="Lifetime, e.g. 30d, 12h, 2w (default: never).")] = None,
    role: Annotated[Optional[str], typer.Option(
        "--role", "-r", help="A narrower role than the user's: editor | viewer | invoker.")] = None,
    scope: Annotated[Optional[list[str]], typer.Option(
        "--scope", "-s", metavar="PERMISSION", help="A grant, e.g. endpoints:mnist:invoke or "
        "workflows:retrain-mnist:start; repeatable (with --role: added to it).")] = None,
    user: Annotated[Optional[str], typer.Option("--user", "-u", help="Whose token (default: yours; others: admin).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a token and print it (shown only now).

    Examples: loopml tokens create --name ci --expires 30d --role viewer;
    loopml tokens create --name mnist-app --scope endpoints:mnist:invoke
    """
    answer = client().create_token(user=user, name=name, role=check_role(role), scopes=scope or [], expires=expires)
    if as_json:
        print_json(answer)
        return
    record = answer["record"]
    grants = record.get("role") or ", ".join(record.get("scopes") or []) or "the user's role"
    console().print(f"token [bold]{record['id']}[/] for {record['user']} ({grants}), expires "
                    f"{when(record['expires_at']) if record.get('expires_at') else 'never'}; shown only now:")
    typer.echo(answer["token"])


@app.command("list")
def list_(user: Annotated[Optional[str], typer.Option("--user", "-u", help="Only this user's (admin).")] = None,
          as_json: JsonOpt = False) -> None:
    """List tokens (an admin sees everyone's; others their own). Never the secrets."""
    def render(tokens: list[dict[str, Any]]) -> None:
        if not tokens:
            console().print("no tokens: create one with `loopml tokens create`")
            return
        console().print(table("id", "user", "name", "grants", "state", "expires", "created", rows=[
            (t["id"], t.get("user") or t.get("subject") or "-", t.get("name") or "-",
             " ".join(filter(None, [t.get("role"), *(t.get("scopes") or [])])) or "(user's role)", _state(t),
             when(t["expires_at"]) if t.get("expires_at") else "never", when(t.get("created_at")))
            for t in tokens]))
    emit(client().list_tokens(user), as_json, render)


@app.command("revoke")
def revoke(token_id: Annotated[str, typer.Argument(metavar="ID", help="The token's id (lml_<id>_…).")],
           as_json: JsonOpt = False) -> None:
    """Revoke a token: refused from its next request on."""
    if token_id.startswith("lml_"):
        token_id = token_id.split("_")[1]  # the whole token pasted: its id is the public part
    emit(client().revoke_token(token_id), as_json,
         lambda r: console().print(f"token [bold]{r['id']}[/] revoked"))
