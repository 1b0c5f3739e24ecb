"""``loopml jobs``: list, show, metrics, logs, cancel, register."""

from __future__ import annotations

from enum import Enum
from typing import Annotated, Any, Optional

import typer

from loopml.cli.output import (client, console, emit, err_console, fields_table, num, print_evaluation, print_json,
                               table, when)
from loopml.core.jobkinds import JOB_KINDS
from loopml.core.jobstatus import JOB_STATUSES

app = typer.Typer(help="Follow and manage jobs (training, prediction, evaluation, monitor runs, baselines, labelled data).",
                  no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
STATUS_STYLE = {"queued": "yellow", "running": "cyan", "succeeded": "green", "failed": "red", "cancelled": "magenta"}
EPOCH_COLUMNS = ("loss", "accuracy", "val_loss", "val_accuracy", "epoch_seconds")


# the choices come from core: a new status or kind needs no edit here
Status = Enum("Status", {s: s for s in JOB_STATUSES}, type=str)  # type: ignore[misc]
Kind = Enum("Kind", {k: k for k in JOB_KINDS}, type=str)  # type: ignore[misc]


def styled(status: str) -> str:
    return f"[{STATUS_STYLE.get(status, 'white')}]{status}[/]"


def describe(job: dict[str, Any]) -> str:
    """What a job works on, in a few words."""
    spec = job.get("spec") or {}
    if job["kind"] == "train":
        target = spec.get("register_as", "?") if spec.get("register", True) else f"{spec.get('register_as', '?')} (unregistered)"
        return f"{spec.get('model', '?')} on {spec.get('dataset', '?')} -> {target}"
    if job["kind"] == "evaluate":
        models = ", ".join(f"{k}={v.get('ref', '?')}" for k, v in (spec.get("models") or {}).items())
        return f"{models} on {spec.get('dataset', '?')}:{spec.get('split', '?')}"
    if job["kind"] == "monitor":
        return f"monitor {spec.get('monitor', '?')} run {spec.get('run_id', '?')}"
    if job["kind"] == "baseline":
        return f"baseline of {spec.get('model', '?')}:{spec.get('version', '?')}"
    if job["kind"] == "labelled-data":
        return f"monitor {spec.get('monitor', '?')} labels -> {spec.get('dataset', '?')}"
    source = spec.get("input") or {}
    what = (f"{source.get('dataset')}:{source.get('split')}" if source.get("type") == "dataset"
            else source.get("key", "?") if isinstance(source, dict) else str(source))
    return f"{spec.get('model', '?')} on {what}"


@app.command("list")
def list_(
    status: Annotated[Optional[Status], typer.Option("--status", help="Only jobs in this status.")] = None,
    kind: Annotated[Optional[Kind], typer.Option("--kind",
                                                 help=f"Only jobs of this kind: {', '.join(JOB_KINDS)}.")] = None,
    limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 50,
    as_json: JsonOpt = False,
) -> None:
    """List jobs, newest first."""
    rows = client().jobs(status=status.value if status else None, kind=kind.value if kind else None, limit=limit)
    emit(rows, as_json, print_jobs)


def print_jobs(rows: list[dict[str, Any]]) -> None:
    if not rows:
        console().print("no jobs")
        return
    console().print(table("id", "kind", "status", "what", "created", "reason", rows=[
        (j["id"], j["kind"], styled(j["status"]), describe(j), when(j.get("created_at")), j.get("reason") or "")
        for j in rows]))


@app.command("show")
def show(job_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonOpt = False) -> None:
    """Status, reason, transitions, hyperparameters, per-epoch metrics (and which epoch the model holds) and
    test metrics of a job."""
    job = client().job(job_id)
    emit(job, as_json, print_job)


def print_job(job: dict[str, Any]) -> None:
    out = console()
    result = job.get("result") or {}
    model = result.get("model") or {}
    pairs = [("job", job["id"]), ("kind", job["kind"]), ("status", styled(job["status"])), ("what", describe(job))]
    if job.get("reason"):
        pairs.append(("reason", job["reason"]))
    which = model_epoch(result.get("metrics") or {})
    if model:
        pairs.append(("model", f"{model.get('name')}:{model.get('version')}" + (f" ({which})" if which else "")))
    elif result.get("model_ref"):
        pairs.append(("model", f"{result['model_ref']} (not registered" + (f"; {which})" if which else ")")))
    if job["kind"] == "evaluate" and result.get("reason"):
        pairs.append(("decision", result["reason"]))
    worker = job.get("worker") or {}
    if worker.get("host"):
        pairs.append(("node", worker["host"]))
    asked = (job.get("spec") or {}).get("resources")
    if asked:
        pairs.append(("resources", f"{num_text(asked.get('cpus'))} CPU, {num_text(asked.get('memory_gb'))} GB"
                      + (f", {num_text(asked['gpus'])} GPU" if asked.get("gpus") else "")))
    if job.get("cancel_requested") and job["status"] == "running":
        pairs.append(("cancel", "requested"))
    out.print(fields_table(pairs))
    events = job.get("events") or []
    if events:
        out.print(table("status", "at", "message", title="Transitions",
                        rows=[(styled(e["status"]), when(e.get("at")), e.get("message") or "") for e in events]))
    hparams = (job.get("spec") or {}).get("hparams") if job["kind"] == "train" else None
    if hparams:
        out.print(fields_table(sorted(hparams.items()), title="Hyperparameters"))
    print_epochs(job.get("metrics") or [], (result.get("metrics") or {}).get("best_epoch"))
    print_evaluation(result.get("evaluation"), result.get("metrics"))
    if job["kind"] == "evaluate" and result.get("results"):
        out.print(table("label", "model", "accuracy", "macro_f1", "loss", "rows",
                        title=f"Evaluation on {result.get('dataset')}:{result.get('split')}", rows=[
                            (label, r.get("resolved") or r.get("ref"), r.get("accuracy", r.get("missing", "")),
                             r.get("macro_f1"), r.get("loss"), r.get("rows"))
                            for label, r in result["results"].items()]))


def num_text(value: Any) -> str:
    return f"{value:g}" if isinstance(value, (int, float)) else str(value)


def model_epoch(metrics: dict[str, Any]) -> str | None:
    """Which epoch's weights the trained model holds: the restored best, else the last one."""
    epochs = metrics.get("epochs")
    if not epochs:
        return None
    best = metrics.get("best_epoch")
    if best:
        return f"epoch {best} of {epochs}, best val_loss"
    return f"epoch {epochs} of {epochs}, the last"


def print_epochs(metrics: list[dict[str, Any]], model_epoch: int | None = None) -> None:
    if not metrics:
        return
    cols = [c for c in EPOCH_COLUMNS if any(c in m for m in metrics)]
    mark = ["model"] if model_epoch else []
    console().print(table("epoch", *cols, *mark, title="Epochs", rows=[
        (m.get("epoch"), *(m.get(c) for c in cols), *(["<- best" if m.get("epoch") == model_epoch else ""]
                                                       if model_epoch else []))
        for m in metrics]))


def metric_columns(rows: list[dict[str, Any]]) -> list[str]:
    """epoch, the usual metrics (loss, accuracy, val_…), then any others by name."""
    names = {k for r in rows for k in r} - {"epoch"}
    return ["epoch", *(c for c in EPOCH_COLUMNS if c in names), *sorted(names - set(EPOCH_COLUMNS))]


@app.command("metrics")
def metrics(
    job_id: Annotated[str, typer.Argument(metavar="ID")],
    as_csv: Annotated[bool, typer.Option("--csv", help="Print CSV (epoch, loss, accuracy, val_…) to stdout.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Per-epoch metrics of a training job, as a table, CSV or JSON.

    Example: loopml jobs metrics JOB --csv > epochs.csv
    """
    rows = client().job_metrics(job_id)
    if as_json:
        print_json(rows)
    elif as_csv:
        import csv
        import sys

        writer = csv.DictWriter(sys.stdout, fieldnames=metric_columns(rows), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    elif not rows:
        console().print(f"job {job_id} has no epoch metrics")
    else:
        cols = metric_columns(rows)
        console().print(table(*cols, rows=[[r.get(c) for c in cols] for r in rows]))


def epoch_line(m: dict[str, Any], epochs: int | None) -> str:
    parts = [f"epoch {m.get('epoch')}/{epochs or '?'}"]
    parts += [f"{c} {num(m[c])}" for c in ("loss", "accuracy", "val_loss", "val_accuracy") if c in m]
    if "epoch_seconds" in m:
        parts.append(f"{num(m['epoch_seconds'], 1)}s")
    return "  ".join(parts)


@app.command("logs")
def logs(
    job_id: Annotated[str, typer.Argument(metavar="ID")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing until the job ends; exit 1 "
                                         "unless it succeeded.")] = False,
) -> None:
    """Print a job's log.

    With -f: follow it until the job ends, then exit 0 if it succeeded and 1 if it failed or was
    cancelled (as `loopml train` does); Ctrl-C stops following (exit 0), the job keeps running.
    """
    c = client()
    if not follow:
        page = c.logs(job_id)
        while page["lines"]:
            for line in page["lines"]:
                typer.echo(line["text"])
            page = c.logs(job_id, after=page["next_after"])
        return
    try:
        for text in c.follow_logs(job_id):
            typer.echo(text)
    except KeyboardInterrupt:
        err_console().print(f"stopped following; job {job_id} keeps running. Reattach: loopml jobs logs -f {job_id}")
        return
    final = c.job(job_id)
    console().print(f"job {job_id} {styled(final['status'])}" + (f": {final['reason']}" if final.get("reason") else ""))
    if final["status"] != "succeeded":  # followed to its end, like `loopml train`: a failure is non-zero
        raise typer.Exit(1)


@app.command("delete")
def delete(job_id: Annotated[str, typer.Argument(metavar="ID")], as_json: JsonOpt = False) -> None:
    """Delete an ended job with its logs, metrics and files (a model it registered stays)."""
    result = client().delete_job(job_id)
    emit(result, as_json, lambda r: console().print(f"deleted job {job_id}"))


@app.command("cancel")
def cancel(job_id: Annotated[str, typer.Argument(metavar="ID")]) -> None:
    """Cancel a queued job, or ask a running one to stop."""
    job = client().cancel(job_id)
    if job["status"] == "cancelled":
        console().print(f"job {job_id} cancelled")
    else:
        console().print(f"cancellation of job {job_id} requested (it is {job['status']}); "
                        f"follow it with: loopml jobs logs -f {job_id}")


@app.command("register")
def register(
    job_id: Annotated[str, typer.Argument(metavar="ID")],
    name: Annotated[Optional[str], typer.Option("--name",
                                                help="Model name (default: the job's --register-as).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Register the model of a training job run with --no-register (again: the same version).

    Example: loopml jobs register JOB --name mnist-cnn
    """
    record = client().register_trained(job_id, name=name)
    emit(record, as_json, lambda r: console().print(f"registered model [bold]{r['ref']}[/] from job {job_id}"))
