"""``loopml users``: people and their roles (admin only). Creating one prints their first token once."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from loopml.cli.output import client, console, emit, fields_table, print_json, table, when
from loopml.core.errors import InvalidInput
from loopml.identity.permissions import ROLE_NAMES

app = typer.Typer(help="Users and their roles: admin (everything, users and tokens), editor (creates and "
                       "changes datasets, jobs, models, endpoints, workflows, functions, triggers, monitors), "
                       "viewer (reads everything but secrets), invoker (calls endpoints, starts workflows).",
                  no_args_is_help=True)
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]


def check_role(role: str | None) -> str | None:
    if role is not None and role not in ROLE_NAMES:
        raise InvalidInput(f"--role {role!r} is not valid: use {', '.join(ROLE_NAMES)}")
    return role


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="User name (lowercase letters, digits, '.', '_', '-').")],
    role: Annotated[str, typer.Option("--role", "-r", help="admin | editor | viewer | invoker.")],
    expires: Annotated[Optional[str], typer.Option(
        "--expires", metavar="DURATION", help="Lifetime of the first token, e.g. 30d (default: never).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a user and print their first token (shown only now: hand it over, then `loopml login`).

    Example: loopml users create alice --role editor
    """
    answer = client().create_user(name, check_role(role), expires=expires)
    if as_json:
        print_json(answer)
        return
    console().print(f"user [bold]{answer['user']['name']}[/] created with role {answer['user']['role']}; "
                    f"their token (shown only now, id {answer['token_record']['id']}):")
    typer.echo(answer["token"])
    console().print("they run `loopml login` with it; auth is on from now on (every call needs a token)")


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """List users."""
    def render(users: list[dict[str, Any]]) -> None:
        if not users:
            console().print("no users yet: create one with `loopml users create NAME --role admin`")
            return
        console().print(table("name", "role", "created by", "created", rows=[
            (u["name"], u["role"], u.get("created_by") or "-", when(u.get("created_at"))) for u in users]))
    emit(client().list_users(), as_json, render)


@app.command("show")
def show(name: Annotated[str, typer.Argument(help="The user.")], as_json: JsonOpt = False) -> None:
    """A user and their role."""
    emit(client().get_user(name), as_json, lambda u: console().print(fields_table([
        ("name", u["name"]), ("role", u["role"]), ("created by", u.get("created_by") or "-"),
        ("created", when(u.get("created_at")))])))


@app.command("update")
def update(
    name: Annotated[str, typer.Argument(help="The user.")],
    role: Annotated[str, typer.Option("--role", "-r", help="The new role: admin | editor | viewer | invoker.")],
    as_json: JsonOpt = False,
) -> None:
    """Change a user's role; their tokens follow at once.

    Example: loopml users update alice --role viewer
    """
    emit(client().update_user(name, check_role(role)), as_json,
         lambda u: console().print(f"user [bold]{u['name']}[/] now has role {u['role']}"))


@app.command("delete")
def delete(name: Annotated[str, typer.Argument(help="The user.")], as_json: JsonOpt = False) -> None:
    """Delete a user and every token of theirs (at once)."""
    emit(client().delete_user(name), as_json,
         lambda r: console().print(f"user [bold]{r['deleted']}[/] deleted with their tokens"))
