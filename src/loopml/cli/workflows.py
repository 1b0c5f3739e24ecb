"""``loopml workflows`` and ``loopml executions``: Step Functions-style state machines and their runs."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from loopml.cli.output import client, console, emit, err_console, fields_table, print_json, table, when
from loopml.core.errors import InvalidInput
from loopml.core.jobstatus import EXECUTION_TERMINAL

if TYPE_CHECKING:
    from loopml.sdk.client import Client

app = typer.Typer(help="Workflows: state machines in Amazon States Language whose tasks are LoopML "
                       "actions (train, evaluate, register, set-alias, deploy, predict, functions).",
                  no_args_is_help=True)

executions_app = typer.Typer(help="Workflow executions: status, history, stop.", no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
STATUS_STYLE = {"SUCCEEDED": "green", "RUNNING": "cyan", "PENDING": "yellow", "FAILED": "red",
                "TIMED_OUT": "red", "ABORTED": "magenta"}


def styled(status: str | None) -> str:
    status = status or "-"
    return f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]"


def _short(value: Any, width: int = 80) -> str:
    from loopml.cli.output import json_text

    text = value if isinstance(value, str) else json_text(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def _read_text(path: Path, what: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{what} {str(path)!r} is not UTF-8 text") from None
    except OSError as exc:
        raise InvalidInput(f"{what} {str(path)!r} cannot be read: {exc.strerror or exc}") from None


def _input(text: str | None) -> Any:
    """--input JSON, or @FILE holding JSON."""
    if text is None:
        return None
    if text.startswith("@"):
        path = Path(text[1:]).expanduser()
        if not path.is_file():
            raise InvalidInput(f"input file {text[1:]!r} does not exist")
        text = _read_text(path, "input file")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInput(f"--input is not valid JSON: {exc}") from None


# -- workflows -----------------------------------------------------------------------------------


@app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Workflow name (letters, digits, '-', '_').")],
    definition: Annotated[Optional[Path], typer.Option(
        "--definition", "-d", metavar="FILE.json|yaml", help="The state machine in Amazon States Language.")] = None,
    template: Annotated[Optional[str], typer.Option(
        "--template", help="A built-in workflow instead of a file (e.g. retrain).")] = None,
    dataset: Annotated[Optional[str], typer.Option("--dataset", help="Template parameter: dataset.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", help="Template parameter: model template.")] = None,
    endpoint: Annotated[Optional[str], typer.Option("--endpoint", help="Template parameter: endpoint.")] = None,
    min_improvement: Annotated[Optional[float], typer.Option(
        "--min-improvement", help="Template parameter: promote only if better by this much.")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", help="Template parameter: epochs.")] = None,
    metric: Annotated[Optional[str], typer.Option("--metric", help="Template parameter: metric.")] = None,
    monitor: Annotated[Optional[str], typer.Option(
        "--monitor", help="Template parameter: train on this monitor's labelled traffic (waits for labels).")] = None,
    min_labels: Annotated[Optional[int], typer.Option(
        "--min-labels", min=1, help="Template parameter: labelled requests needed before training.")] = None,
    description: Annotated[Optional[str], typer.Option("--description", help="What it is for.")] = None,
    replace: Annotated[bool, typer.Option("--replace", help="Replace the definition of an existing workflow.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create a workflow from an ASL file (JSON or YAML) or a template.

    Example: loopml workflows create flow --definition flow.yaml
    """
    if (definition is None) == (template is None):
        raise InvalidInput("give --definition FILE or --template NAME (one of them)")
    c = client()
    if template is not None:
        params = {k: v for k, v in {"dataset": dataset, "model": model, "endpoint": endpoint,
                                    "min_improvement": min_improvement, "epochs": epochs,
                                    "metric": metric, "monitor": monitor,
                                    "min_labels": min_labels}.items() if v is not None}
        record = c.create_workflow(name, template=template, template_params=params,
                                   description=description, replace=replace)
    else:
        assert definition is not None
        if not definition.is_file():
            raise InvalidInput(f"definition file {str(definition)!r} does not exist")
        record = c.create_workflow(name, _read_text(definition, "definition file"), description=description,
                                   replace=replace)
    if as_json:
        print_json(record)
    else:
        states = len(record["definition"].get("States", {}))
        console().print(f"workflow [bold]{record['name']}[/] {'saved' if replace else 'created'} "
                        f"({states} states); start it with `loopml workflows start {record['name']}`")


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """Workflows, by name."""
    def render(rows: list[dict[str, Any]]) -> None:
        console().print(table("name", "states", "start at", "description", "updated", rows=[
            (r["name"], len(r["definition"].get("States", {})), r["definition"].get("StartAt", "-"),
             r.get("description") or "", when(r.get("updated_at"))) for r in rows]))
    emit(client().workflows(), as_json, render)


@app.command("show")
def show(name: Annotated[str, typer.Argument(help="The workflow.")], as_json: JsonOpt = False) -> None:
    """The workflow's definition as YAML (as written when it was written in YAML)."""
    def render(record: dict[str, Any]) -> None:
        if record.get("description"):
            console().print(f"# {record['description']}")
        source = record.get("source") or ""
        if not source.strip() or source.lstrip().startswith("{"):  # written as JSON: show it as YAML
            import yaml

            source = yaml.safe_dump(record["definition"], sort_keys=False, allow_unicode=True)
        typer.echo(source.rstrip("\n"))
    emit(client().workflow(name), as_json, render)


@app.command("delete")
def delete(name: Annotated[str, typer.Argument(help="The workflow.")],
           force: Annotated[bool, typer.Option("--force", help="Delete even if triggers start it (they fail).")] = False,
           as_json: JsonOpt = False) -> None:
    """Delete a workflow (running executions finish on their own copy of the definition).
    Refused while triggers start it."""
    from loopml.cli.output import print_broken

    gone = client().delete_workflow(name, force=force)
    if as_json:
        print_json(gone)
    else:
        console().print(f"workflow [bold]{name}[/] deleted")
        print_broken(gone)


@app.command("start")
def start(
    name: Annotated[str, typer.Argument(help="The workflow.")],
    input: Annotated[Optional[str], typer.Option(
        "--input", "-i", metavar="JSON|@FILE", help="The execution's input (default {}).")] = None,
    execution_name: Annotated[Optional[str], typer.Option("--name", help="The execution id (unique).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the execution until it ends; exit 1 unless "
                                                      "it succeeded.")] = False,
    timeout: Annotated[Optional[float], typer.Option("--timeout", metavar="SECONDS",
                                                     help="How long --wait waits.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Start an execution.

    Example: loopml workflows start retrain-mnist --input '{"dataset": "mnist:2"}' --wait
    """
    c = client()
    record = c.start_execution(name, _input(input), name=execution_name)
    if not wait:
        if as_json:
            print_json(record)
        else:
            console().print(f"execution [bold]{record['id']}[/] started; follow it with "
                            f"`loopml executions show {record['id']}`")
        return
    if not as_json:
        console().print(f"execution [bold]{record['id']}[/] started")
    final = _follow(c, record["id"], timeout=timeout, live=not as_json)
    if as_json:
        print_json(final)
    else:
        _print_outcome(final)
    if final["status"] != "SUCCEEDED":
        raise typer.Exit(1)


def _follow(c: Client, execution_id: str, *, timeout: float | None, live: bool, poll: float = 0.5) -> dict[str, Any]:
    """Poll the execution, printing each state as it is entered and exited, until it ends."""
    from rich.markup import escape

    from loopml.cli.progress import track

    deadline = None if timeout is None else time.monotonic() + timeout
    seen = 0
    with track(f"execution {execution_id}", quiet=not live) as bar:
        while True:
            record = c.execution(execution_id)
            if live:
                for ev in c.execution_history(execution_id)[seen:]:
                    seen += 1
                    line = _event_line(ev)
                    if line:
                        bar.print(line)
            if record["status"] in EXECUTION_TERMINAL:
                return record
            bar.update(f"execution {execution_id}: {styled(record['status'])} in "
                       f"{escape(record.get('current_state') or '-')}")  # a state name is not markup
            if deadline is not None and time.monotonic() > deadline:
                err_console().print(f"execution {execution_id} is still {record['status']} after {timeout:g} s "
                                    "(it keeps running)")
                raise typer.Exit(1)
            time.sleep(poll)


def _event_line(ev: dict[str, Any]) -> str | None:
    details = ev.get("details") or {}
    kind, state = ev["type"], ev.get("state")
    if kind == "StateEntered":
        return f"{when(ev['at'])}  → {state}"
    if kind == "StateExited":
        return f"{when(ev['at'])}  ← {state}"
    if kind in ("TaskFailed", "RetryScheduled", "ErrorCaught"):
        return f"{when(ev['at'])}    {kind} {state}: {details.get('error')} {details.get('cause') or ''}".rstrip()
    if kind == "WaitStarted":
        return f"{when(ev['at'])}    waiting {details.get('seconds', 0):g} s"
    return None


def _print_outcome(record: dict[str, Any]) -> None:
    out = console()
    out.print(f"status: {styled(record['status'])}")
    if record["status"] == "SUCCEEDED":
        from loopml.cli.output import json_text

        out.print("output: " + json_text(record.get("output")), markup=False)
    else:
        where = f" in state {record['failed_state']}" if record.get("failed_state") else ""
        err_console().print(f"error{where}: {record.get('error') or '-'}", markup=False)
        if record.get("cause"):
            err_console().print(f"cause: {record['cause']}", markup=False)


# -- executions ---------------------------------------------------------------------------------


@executions_app.command("list")
def executions_list(
    workflow: Annotated[Optional[str], typer.Option("--workflow", "-w", help="Only this workflow's.")] = None,
    status: Annotated[Optional[str], typer.Option("--status", help="Only this status (RUNNING, FAILED, …).")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many.")] = 50,
    as_json: JsonOpt = False,
) -> None:
    """Executions, newest first."""
    def render(rows: list[dict[str, Any]]) -> None:
        console().print(table("id", "workflow", "status", "state / error", "started", "ended", rows=[
            (r["id"], r["workflow"], styled(r["status"]), r.get("current_state") or (
                f"{r['failed_state']}: {r.get('error') or '-'}" if r.get("failed_state") else r.get("error") or ""),
             when(r.get("started_at")), when(r.get("ended_at"))) for r in rows]))
    emit(client().executions(workflow=workflow, status=status, limit=limit), as_json, render)


@executions_app.command("show")
def executions_show(execution_id: Annotated[str, typer.Argument(help="The execution.")],
                    as_json: JsonOpt = False) -> None:
    """One execution: status, current state, input, output, error and cause."""
    def render(r: dict[str, Any]) -> None:
        pairs = [("id", r["id"]), ("workflow", r["workflow"]), ("status", styled(r["status"])),
                 ("current state", r.get("current_state") or "-"), ("started", when(r.get("started_at"))),
                 ("ended", when(r.get("ended_at"))), ("input", _short(r.get("input"), 200))]
        if r["status"] == "SUCCEEDED":
            pairs.append(("output", _short(r.get("output"), 400)))
        if r.get("failed_state"):
            pairs.append(("failed in state", r["failed_state"]))
        if r.get("error"):
            pairs += [("error", r["error"]), ("cause", r.get("cause") or "-")]
        console().print(fields_table(pairs))
    emit(client().execution(execution_id), as_json, render)


@executions_app.command("history")
def executions_history(execution_id: Annotated[str, typer.Argument(help="The execution.")],
                       as_json: JsonOpt = False) -> None:
    """The execution's events, in order."""
    def render(rows: list[dict[str, Any]]) -> None:
        console().print(table("seq", "time", "type", "state", "details", rows=[
            (str(r["seq"]), when(r["at"]), r["type"], r.get("state") or "",
             _short(r.get("details") or "", 100)) for r in rows]))
    emit(client().execution_history(execution_id), as_json, render)


@executions_app.command("stop")
def executions_stop(execution_id: Annotated[str, typer.Argument(help="The execution.")],
                    as_json: JsonOpt = False) -> None:
    """Stop an execution (ABORTED at the control plane's next tick; its running jobs are cancelled)."""
    record = client().stop_execution(execution_id)
    if as_json:
        print_json(record)
    else:
        console().print(f"execution [bold]{execution_id}[/] is stopping")
