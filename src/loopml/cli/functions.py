"""``loopml functions``: Lambda-like functions — create, update, list, show, delete, invoke,
invocations, logs."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from loopml.cli.output import client, console, emit, fields_table, print_json, table, when
from loopml.core.errors import InvalidInput, LoopMLError
from loopml.core.jobstatus import INVOCATION_TERMINAL

app = typer.Typer(help="Functions: `def handler(event, context)` run in their own process per "
                       "invocation, with a timeout and a memory cap (Lambda-like).",
                  no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
FileOpt = Annotated[Path, typer.Option("--file", "-f", help="The handler's .py file, or a folder (zipped).")]
HandlerOpt = Annotated[Optional[str], typer.Option(
    "--handler", metavar="MODULE.FUNCTION", help="Default: <file stem>.handler.")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", metavar="SECONDS", help="Kill the invocation after this.")]
MemoryOpt = Annotated[int, typer.Option("--memory-mb", metavar="MB", help="Memory cap of the invocation's process.")]
EnvOpt = Annotated[Optional[list[str]], typer.Option(
    "--env", "-e", metavar="NAME=VALUE", help="An environment variable of the function; repeatable.")]
DescOpt = Annotated[Optional[str], typer.Option("--description", help="A note shown by `show`.")]
PermOpt = Annotated[Optional[list[str]], typer.Option(
    "--permission", "-p", metavar="PERMISSION", help="What each invocation's own short-lived token may do, "
    "e.g. datasets:write or workflows:retrain-mnist:start (its execution role); repeatable.")]
STATUS_STYLE = {"succeeded": "green", "failed": "red", "running": "cyan", "queued": "yellow"}
LOG_TAIL_LINES = 20


def _env(items: list[str] | None) -> dict[str, str] | None:
    if not items:
        return None
    env: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise InvalidInput(f"--env {item!r}: use NAME=VALUE")
        env[key] = value
    return env


def _styled(status: str | None) -> str:
    status = status or "-"
    return f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]"


def _create(name: str, file: Path, handler: str | None, timeout: float, memory_mb: int,
            env: list[str] | None, description: str | None, replace: bool, as_json: bool,
            permission: list[str] | None = None) -> None:
    record = client().create_function(name, file, handler=handler, timeout_s=timeout, memory_mb=memory_mb,
                                      environment=_env(env), replace=replace, description=description,
                                      permissions=permission)
    if as_json:
        print_json(record)
    else:
        console().print(f"function [bold]{record['name']}[/] {'updated' if replace else 'created'}: "
                        f"handler {record['handler']}, timeout {record['timeout_s']:g} s, "
                        f"memory {record['memory_mb']} MB")


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Function name (lowercase letters, digits, '-').")],
    file: FileOpt,
    handler: HandlerOpt = None,
    timeout: TimeoutOpt = 60.0,
    memory_mb: MemoryOpt = 512,
    env: EnvOpt = None,
    description: DescOpt = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace an existing function's code and config.")] = False,
    permission: PermOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a function from a .py file (or a folder).

    Example: loopml functions create ingest --file handler.py --timeout 600 --memory-mb 512 --env DATASET=mnist
    --permission datasets:write
    """
    _create(name, file, handler, timeout, memory_mb, env, description, replace, as_json, permission)


@app.command("update")
def update(
    name: Annotated[str, typer.Argument(help="The function to change.")],
    file: Annotated[Optional[Path], typer.Option(
        "--file", "-f", help="New code: a .py file or a folder (keeps the handler unless --handler).")] = None,
    handler: Annotated[Optional[str], typer.Option(
        "--handler", metavar="MODULE.FUNCTION", help="A new handler (default: keep the current one).")] = None,
    timeout: Annotated[Optional[float], typer.Option(
        "--timeout", metavar="SECONDS", help="Kill the invocation after this.")] = None,
    memory_mb: Annotated[Optional[int], typer.Option(
        "--memory-mb", metavar="MB", help="Memory cap of the invocation's process.")] = None,
    env: Annotated[Optional[list[str]], typer.Option(
        "--env", "-e", metavar="NAME=VALUE", help="Set an environment variable (others are kept); repeatable.")] = None,
    unset_env: Annotated[Optional[list[str]], typer.Option(
        "--unset-env", metavar="NAME", help="Remove an environment variable; repeatable.")] = None,
    description: DescOpt = None,
    permission: Annotated[Optional[list[str]], typer.Option(
        "--permission", "-p", metavar="PERMISSION", help="Replace the execution role with these; repeatable.")] = None,
    no_permissions: Annotated[bool, typer.Option(
        "--no-permissions", help="Clear the execution role (its invocations' tokens may do nothing).")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Change a function: only what you give changes, the rest is kept.

    Examples: loopml functions update resize --timeout 120 --env SIZE=256;
    loopml functions update resize --file resize.py; loopml functions update resize --unset-env SIZE
    """
    if permission and no_permissions:
        raise InvalidInput("give --permission or --no-permissions, not both")
    permissions = [] if no_permissions else permission
    if not any(v is not None for v in (file, handler, timeout, memory_mb, env, unset_env, description, permissions)):
        raise InvalidInput("nothing to change: give --file, --handler, --timeout, --memory-mb, --env, "
                           "--unset-env, --permission, --no-permissions or --description")
    record = client().update_function(name, file, handler=handler, timeout_s=timeout, memory_mb=memory_mb,
                                      environment=_env(env), unset_environment=unset_env,
                                      description=description, permissions=permissions)
    if as_json:
        print_json(record)
    else:
        console().print(f"function [bold]{record['name']}[/] updated: handler {record['handler']}, "
                        f"timeout {record['timeout_s']:g} s, memory {record['memory_mb']} MB, environment "
                        f"{', '.join(sorted(record['environment'])) or '-'}")


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """List functions."""
    def render(records: list[dict[str, Any]]) -> None:
        if not records:
            console().print("no functions yet: create one with `loopml functions create NAME --file handler.py`")
            return
        console().print(table("name", "handler", "timeout s", "memory MB", "updated", rows=[
            (r["name"], r["handler"], f"{r['timeout_s']:g}", str(r["memory_mb"]), when(r["updated_at"]))
            for r in records]))
    emit(client().functions(), as_json, render)


@app.command("show")
def show(name: Annotated[str, typer.Argument(help="The function.")], as_json: JsonOpt = False) -> None:
    """A function's configuration and its latest invocations."""
    c = client()
    record = c.function(name)
    if as_json:
        print_json(record)
        return
    console().print(fields_table([
        ("name", record["name"]), ("handler", record["handler"]), ("timeout", f"{record['timeout_s']:g} s"),
        ("memory", f"{record['memory_mb']} MB"), ("code", f"{record['code_key']} (sha256 {record['code_sha256'][:16]})"),
        ("environment", ", ".join(sorted(record["environment"])) or "-"),
        ("permissions", ", ".join(record.get("permissions") or []) or "-"),
        ("description", record.get("description") or "-"), ("created", when(record["created_at"])),
        ("updated", when(record["updated_at"]))]))
    _print_invocations(c.function_invocations(name, limit=5), title="Latest invocations")


def _print_invocations(records: list[dict[str, Any]], title: str | None = None) -> None:
    if not records:
        console().print("no invocations yet")
        return
    console().print(table("id", "status", "source", "started", "duration ms", "max MB", "error", title=title, rows=[
        (r["id"], _styled(r["status"]), r.get("source") or "-", when(r.get("started_at")),
         "-" if r.get("duration_ms") is None else f"{r['duration_ms']:.0f}",
         "-" if r.get("max_memory_mb") is None else f"{r['max_memory_mb']:.0f}",
         f"{r['error_type']}: {r.get('error_message') or ''}" if r.get("error_type") else "")
        for r in records]))


ForceOpt = Annotated[bool, typer.Option("--force", help="Delete even if triggers or workflows use it (they fail).")]


@app.command("delete")
def delete(name: Annotated[str, typer.Argument(help="The function.")], force: ForceOpt = False) -> None:
    """Delete a function (its invocation history stays). Refused while triggers or workflows use it."""
    from loopml.cli.output import print_broken

    answer = client().delete_function(name, force=force)
    console().print(f"function {name} deleted")
    print_broken(answer)


def _event(text: str | None) -> Any:
    if text is None:
        return {}
    what = "--event"
    if text.startswith("@"):
        path = Path(text[1:]).expanduser()
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidInput(f"--event {text}: cannot read {path}: {exc.strerror or exc}") from None
        except UnicodeDecodeError:
            raise InvalidInput(f"--event {text}: {path} is not UTF-8 text (give a JSON file)") from None
        what = f"--event file {path}"
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidInput(f"{what} is not valid JSON: {exc}") from None


def _tail(logs: str | None, lines: int = LOG_TAIL_LINES) -> str:
    rows = (logs or "").rstrip("\n").splitlines()
    return "\n".join(rows[-lines:])


@app.command("invoke")
def invoke(
    name: Annotated[str, typer.Argument(help="The function.")],
    event: Annotated[Optional[str], typer.Option(
        "--event", metavar="JSON|@FILE", help="The event (JSON, or @file.json); default {}.")] = None,
    run_async: Annotated[bool, typer.Option("--async", help="Queue it and print the invocation id.")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Do not print the log tail.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Invoke a function: prints its result (JSON) and the tail of its logs (on stderr).

    Exits 1 when the function failed (error type and message on the last line).

    Example: loopml functions invoke ingest --event '{"x": 1}'
    """
    payload = _event(event)
    c = client()
    record = c.invoke_function(name, payload, mode="async" if run_async else "sync")
    if as_json:
        print_json(record)
    elif run_async or record["status"] not in INVOCATION_TERMINAL:
        typer.echo(record["id"])
    if record["status"] == "failed":
        if not quiet and not as_json and record.get("logs"):
            sys.stderr.write(_tail(record["logs"]) + "\n")
        raise LoopMLError(f"invocation {record['id']} failed: {record.get('error_type')}: "
                          f"{record.get('error_message') or ''}".rstrip())
    if record["status"] == "succeeded" and not as_json:
        print_json(record["result"])
        if not quiet and record.get("logs"):
            sys.stderr.write(_tail(record["logs"]) + "\n")


@app.command("invocations")
def invocations(
    name: Annotated[str, typer.Argument(help="The function.")],
    status: Annotated[Optional[str], typer.Option("--status", help="queued | running | succeeded | failed")] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many, newest first.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """A function's invocations, newest first."""
    emit(client().function_invocations(name, status=status, limit=limit), as_json, _print_invocations)


@app.command("logs")
def logs(
    name: Annotated[str, typer.Argument(help="The function.")],
    limit: Annotated[int, typer.Option("--limit", "-n", help="The latest this many invocations.")] = 5,
    as_json: JsonOpt = False,
) -> None:
    """The logs of a function's latest invocations (oldest of them first)."""
    records = client().function_logs(name, limit=limit)
    if as_json:
        print_json(records)
        return
    if not records:
        console().print(f"function {name} has no invocations yet")
        return
    out = sys.stdout
    for r in reversed(records):
        out.write(f"=== {r['id']} {r['status']} {when(r.get('started_at'))}"
                  f"{' ' + r['error_type'] if r.get('error_type') else ''}\n")
        out.write((r.get("logs") or "(no output)").rstrip("\n") + "\n")
    out.flush()
