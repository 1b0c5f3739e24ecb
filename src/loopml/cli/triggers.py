"""``loopml triggers``: create, update, list, show, pause, resume, delete, history, fire, redrive."""

from __future__ import annotations

import json
from typing import Annotated, Any, Optional

import typer

from loopml.cli.output import client, console, emit, err_console, fields_table, print_json, table, when
from loopml.core.errors import InvalidInput

app = typer.Typer(help="Triggers: new objects, cron schedules, webhooks and monitor alerts start a "
                       "function or a workflow, each firing exactly once.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
NameArg = Annotated[str, typer.Argument(metavar="NAME", help="Trigger name.")]
STATUS_STYLE = {"active": "green", "paused": "yellow", "started": "green", "failed": "red", "skipped": "magenta"}


def styled(status: str | None) -> str:
    return f"[{STATUS_STYLE.get(status or '', 'white')}]{status or '-'}[/]"


def source_text(record: dict[str, Any]) -> str:
    spec, kind = record.get("spec") or {}, record.get("kind")
    if kind == "objects":
        return f"objects {spec.get('uri')}" + (f" *{spec['suffix']}" if spec.get("suffix") else "")
    if kind == "cron":
        return f"cron '{spec.get('cron')}' {spec.get('tz')} (missed: {spec.get('missed')})"
    if kind == "webhook":
        return f"webhook POST {record.get('url') or '/hooks/' + record['name']}"
    return f"alert from monitor {spec.get('monitor')}"


def target_text(record: dict[str, Any]) -> str:
    target = record.get("target") or {}
    return f"{target.get('kind')} {target.get('name')}"


@app.command("create")
def create(
    name: NameArg,
    objects: Annotated[Optional[str], typer.Option("--objects", metavar="URI_PREFIX", help=(
        "Fire once per new object under s3://bucket/prefix/, file:///abs/dir/ or /abs/dir (an existing "
        "folder on the server's machine). A relative path such as incoming/ is a key prefix inside "
        "LoopML's artifact store (LOOPML_ARTIFACT_URI, by default ~/.loopml/artifacts): the output "
        "says where that is."))] = None,
    cron: Annotated[Optional[str], typer.Option("--cron", metavar="EXPR", help=(
        "Fire on a cron schedule, e.g. '*/5 * * * *'."))] = None,
    webhook: Annotated[bool, typer.Option("--webhook", help=(
        "Fire on POST /hooks/NAME with the secret (printed once) as 'Authorization: Bearer SECRET', or "
        "GitHub-style: 'X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body>' (GitHub's webhook "
        "secret field). Webhooks created by older LoopML versions accept Bearer only."))] = False,
    alert: Annotated[Optional[str], typer.Option("--alert", metavar="MONITOR", help=(
        "Fire on every alert of this model monitor."))] = None,
    function: Annotated[Optional[str], typer.Option("--function", metavar="F", help="Invoke this function.")] = None,
    workflow: Annotated[Optional[str], typer.Option("--workflow", metavar="W", help="Start this workflow.")] = None,
    tz: Annotated[Optional[str], typer.Option("--tz", metavar="ZONE", help="Cron time zone (default UTC).")] = None,
    missed: Annotated[Optional[str], typer.Option("--missed", metavar="POLICY", help=(
        "Cron runs missed while the server was down: skip (default) or catch-up (one run)."))] = None,
    suffix: Annotated[Optional[str], typer.Option("--suffix", help="Objects: only keys ending with this.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a trigger: exactly one of --objects/--cron/--webhook/--alert and one of --function/--workflow."""
    sources = [flag for flag, on in (("--objects", objects is not None), ("--cron", cron is not None),
                                     ("--webhook", webhook), ("--alert", alert is not None)) if on]
    if len(sources) != 1:
        raise InvalidInput("give exactly one of --objects, --cron, --webhook or --alert"
                           + (f" (got {', '.join(sources)})" if sources else ""))
    if (function is None) == (workflow is None):
        raise InvalidInput("give exactly one of --function or --workflow")
    if cron is None and (tz is not None or missed is not None):
        raise InvalidInput("--tz and --missed are for --cron triggers")
    if objects is None and suffix is not None:
        raise InvalidInput("--suffix is for --objects triggers")
    c = client()
    record = c.create_trigger(name, objects=objects, cron=cron, tz=tz, missed=missed or "skip",
                                     webhook=webhook, alert=alert, suffix=suffix, function=function,
                                     workflow=workflow)
    if as_json:
        print_json(record)
        return
    out = console()
    out.print(f"created trigger [bold]{record['name']}[/]: {source_text(record)} -> {target_text(record)}",
              markup=True)
    if record.get("secret"):
        out.print(f"webhook secret (shown once; send it as 'Authorization: Bearer <secret>'): "
                  f"[bold]{record['secret']}[/]")
        out.print(f"  curl -X POST {c.url}{record.get('url')} -H 'Authorization: Bearer <secret>' "
                  "-H 'Content-Type: application/json' -d '{}'", markup=False)
        out.print("GitHub: payload URL as above, content type application/json, this secret as the webhook "
                  "secret (X-Hub-Signature-256 is checked)", markup=False)
    if record.get("kind") == "objects":
        if objects is not None and not objects.startswith(("/", "~")) and "://" not in objects:
            out.print(f"'{objects}' is a key prefix inside LoopML's artifact store: put objects under "
                      f"{record['spec'].get('uri')}", markup=False)
        out.print(f"{record.get('objects_seen', 0)} existing object(s) recorded as seen (they do not fire)")


@app.command("update")
def update(
    name: NameArg,
    function: Annotated[Optional[str], typer.Option("--function", metavar="F", help="Invoke this function instead.")] = None,
    workflow: Annotated[Optional[str], typer.Option("--workflow", metavar="W", help="Start this workflow instead.")] = None,
    suffix: Annotated[Optional[str], typer.Option("--suffix", help=(
        "Objects: only keys ending with this ('' removes the filter; objects already there that it "
        "brings in do not fire)."))] = None,
    cron: Annotated[Optional[str], typer.Option("--cron", metavar="EXPR", help="Cron: a new schedule (from now on).")] = None,
    tz: Annotated[Optional[str], typer.Option("--tz", metavar="ZONE", help="Cron: a new time zone.")] = None,
    missed: Annotated[Optional[str], typer.Option("--missed", metavar="POLICY", help="Cron: skip or catch-up.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a trigger's target, suffix or schedule; what is not given is kept.

    Its history and the objects it has seen are kept too.

    Example: loopml triggers update nightly --cron '0 4 * * *' --workflow retrain-mnist
    """
    record = client().update_trigger(name, function=function, workflow=workflow, suffix=suffix, cron=cron,
                                     tz=tz, missed=missed)
    emit(record, as_json, lambda r: console().print(
        f"updated trigger [bold]{r['name']}[/]: {source_text(r)} -> {target_text(r)}"))


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """Triggers with their source, target, status and last firing."""
    emit(client().triggers(), as_json, print_triggers)


def print_triggers(rows: list[dict[str, Any]]) -> None:
    if not rows:
        console().print("no triggers yet: create one with loopml triggers create NAME --objects URI --function F")
        return
    console().print(table("name", "source", "target", "status", "last firing", rows=[
        (r["name"], source_text(r), target_text(r), styled(r.get("status")),
         f"{when((r.get('last_firing') or {}).get('at'))} {(r.get('last_firing') or {}).get('status') or ''}".strip())
        for r in rows]))


@app.command("show")
def show(name: NameArg, as_json: JsonOpt = False) -> None:
    """One trigger: source, target, status, cursor and last firing."""
    emit(client().trigger(name), as_json, print_trigger)


def print_trigger(record: dict[str, Any]) -> None:
    last = record.get("last_firing") or {}
    pairs: list[tuple[str, Any]] = [
        ("trigger", record["name"]), ("source", source_text(record)), ("target", target_text(record)),
        ("status", styled(record.get("status"))), ("created", when(record.get("created_at")))]
    if record.get("next_run"):
        pairs.append(("next run", when(record["next_run"]) + " UTC"))
    if "objects_seen" in record:
        pairs.append(("objects seen", str(record["objects_seen"])))
    if last:
        pairs.append(("last firing", f"{when(last.get('at'))} {last.get('status')} "
                                     f"{last.get('started_id') or last.get('error') or ''}".strip()))
    console().print(fields_table(pairs))


@app.command("pause")
def pause(name: NameArg, as_json: JsonOpt = False) -> None:
    """Stop firing (objects that arrive meanwhile fire after resume)."""
    emit(client().pause_trigger(name), as_json, lambda r: console().print(f"paused trigger {r['name']}"))


@app.command("resume")
def resume(name: NameArg, as_json: JsonOpt = False) -> None:
    """Fire again."""
    emit(client().resume_trigger(name), as_json, lambda r: console().print(f"resumed trigger {r['name']}"))


@app.command("delete")
def delete(name: NameArg, as_json: JsonOpt = False) -> None:
    """Delete a trigger and its history (what it started is kept)."""
    emit(client().delete_trigger(name), as_json, lambda r: console().print(f"deleted trigger {r['deleted']}"))


def _firing_what(f: dict[str, Any]) -> str:
    event = f.get("event") or {}
    records = event.get("Records") if isinstance(event, dict) else None
    if records:
        return str(records[0].get("s3", {}).get("object", {}).get("key"))
    return f.get("dedupe_key") or "-"


@app.command("history")
def history(
    name: NameArg,
    limit: Annotated[int, typer.Option("--limit", min=1, max=10_000)] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Every firing (newest first) and what it started."""
    emit(client().trigger_history(name, limit=limit), as_json, print_history)


def _firing_note(f: dict[str, Any], redriven_by: dict[int, int]) -> str:
    notes = [f.get("error") or ""]
    if f.get("redrive_of"):
        notes.append(f"redrive of firing {f['redrive_of']}")
    if f["id"] in redriven_by:
        notes.append(f"redriven by firing {redriven_by[f['id']]}")
    return "; ".join(n for n in notes if n)


def print_history(rows: list[dict[str, Any]]) -> None:
    if not rows:
        console().print("no firings yet")
        return
    redriven_by = {f["redrive_of"]: f["id"] for f in rows if f.get("redrive_of")}
    t = table("firing", "time", "status", "key / object", "started", "error / note", rows=[
        (str(f["id"]), when(f.get("at")), styled(f.get("status")), _firing_what(f), f.get("started_id") or "-",
         _firing_note(f, redriven_by)) for f in rows])
    t.columns[4].no_wrap = True  # ids are copied whole
    t.columns[3].overflow = t.columns[5].overflow = "fold"
    console().print(t)


@app.command("redrive")
def redrive(
    name: NameArg,
    firing: Annotated[Optional[int], typer.Option("--firing", metavar="ID", help=(
        "Only this failed firing (ids: `loopml triggers history NAME`). Default: every failed firing "
        "not redriven yet."))] = None,
    as_json: JsonOpt = False,
) -> None:
    """Start the target again for failed firings (e.g. after re-creating a deleted function).

    Each failed firing is redriven at most once, with its original event; the history records the
    redrive as a new firing "redrive of firing X".
    """
    answers = client().redrive_trigger(name, firing)
    if as_json:
        print_json(answers)
        return
    if not answers:
        console().print(f"trigger {name} has no failed firings left to redrive")
        return
    for a in answers:
        started = a.get("started")
        what = f"started {started['kind']} {started['id']}" if started else f"{a.get('status')}: {a.get('error')}"
        console().print(f"redrove firing {a['redrive_of']} as firing {a['firing']}: {what}", markup=False)


@app.command("fire")
def fire(
    name: NameArg,
    event: Annotated[Optional[str], typer.Option("--event", metavar="JSON", help=(
        "The event to send (default: a sample of the trigger's shape)."))] = None,
    as_json: JsonOpt = False,
) -> None:
    """Test fire: start the target now (recorded in the history like any firing)."""
    payload = None
    if event is not None:
        try:
            payload = json.loads(event)
        except json.JSONDecodeError as exc:
            raise InvalidInput(f"--event: not valid JSON ({exc.msg} at column {exc.colno})") from None
    answer = client().fire_trigger(name, payload)
    if as_json:
        print_json(answer)
        return
    started = answer.get("started")
    if started:
        console().print(f"fired {name}: started {started['kind']} {started['id']} (firing {answer['firing']})")
    else:
        err_console().print(f"fired {name}: {answer.get('status')} - {answer.get('error')}", markup=False)
        raise typer.Exit(1)
