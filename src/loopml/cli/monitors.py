"""``loopml monitors`` (create, list, show, run, runs, report, pause, resume, delete, baseline,
labels, dataset) and ``loopml alerts`` (list, show)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from loopml.cli.output import actor, client, console, emit, fields_table, num, print_json, table, when
from loopml.core.errors import InvalidInput

app = typer.Typer(help="Model monitors: drift of an endpoint's captured traffic against the served model's "
                       "baseline, quality against uploaded labels, alerts that can start retraining.",
                  no_args_is_help=True)
alerts_app = typer.Typer(help="Alerts raised by model monitors (deduplicated while open, resolved on recovery "
                              "or by hand; ack marks one as seen).",
                         no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
NameArg = Annotated[str, typer.Argument(metavar="NAME", help="Monitor name.")]
STATUS_STYLE = {"active": "green", "paused": "yellow", "succeeded": "green", "failed": "red", "queued": "cyan",
                "running": "cyan", "insufficient": "magenta", "open": "red", "resolved": "green"}
EXIT_VIOLATIONS = 3


def styled(status: str | None) -> str:
    return f"[{STATUS_STYLE.get(status or '', 'white')}]{status or '-'}[/]"


def _window(record: dict[str, Any]) -> str:
    return record.get("window") or f"{record.get('window_s')}s"


@app.command("create")
def create(
    name: NameArg,
    endpoint: Annotated[str, typer.Option("--endpoint", metavar="ENDPOINT", help="The endpoint to watch.")],
    variant: Annotated[Optional[str], typer.Option("--variant", metavar="V", help=(
        "One of its variants (default: the first).")) ] = None,
    schedule: Annotated[Optional[str], typer.Option("--schedule", metavar="CRON", help=(
        "Run on a cron schedule, e.g. '*/5 * * * *' (default: only on `monitors run`).")) ] = None,
    tz: Annotated[Optional[str], typer.Option("--tz", metavar="ZONE", help="Schedule time zone (default UTC).")] = None,
    window: Annotated[str, typer.Option("--window", help="How far back the first run looks: 30m, 1h, 2d.")] = "1h",
    min_samples: Annotated[int, typer.Option("--min-samples", help=(
        "Rows for the full tests; fewer: only already-decisive shifts are judged (early).")) ] = 200,
    threshold: Annotated[Optional[list[str]], typer.Option("--threshold", metavar="KEY=VALUE", help=(
        "shift (numeric floor, in std; 0.1), js_distance (categorical; 0.1), mmd, psi, ks_pvalue, "
        "chi2_pvalue, mmd_pvalue (family-wise; 0.05), early_level (0.01), accuracy, min_samples "
        "(repeatable).")) ] = None,
    webhook: Annotated[Optional[list[str]], typer.Option("--webhook", metavar="URL", help=(
        "POST every new alert here as JSON (repeatable).")) ] = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a monitor on an endpoint that captures traffic."""
    for item in threshold or []:
        if "=" not in item:
            raise InvalidInput(f"--threshold {item!r}: use KEY=VALUE, e.g. shift=0.2")
    record = client().create_monitor(name, endpoint, variant=variant, schedule=schedule, tz=tz, window=window,
                                     min_samples=min_samples, thresholds=list(threshold or []) or None,
                                     webhooks=list(webhook or []) or None)
    if as_json:
        print_json(record)
        return
    when_text = f"on schedule '{record['schedule']}' {record['tz']}" if record.get("schedule") else \
        f"on demand (`loopml monitors run {name}`)"
    console().print(f"created monitor [bold]{record['name']}[/] on endpoint {record['endpoint']}"
                    + (f" variant {record['variant']}" if record.get("variant") else "")
                    + f", window {_window(record)}, {when_text}")


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """Monitors with their endpoint, schedule, status, last run and open alerts."""
    emit(client().monitors(), as_json, print_monitors)


def print_monitors(rows: list[dict[str, Any]]) -> None:
    if not rows:
        console().print("no monitors yet: create one with loopml monitors create NAME --endpoint E")
        return
    console().print(table("name", "endpoint", "schedule", "status", "last run", "open alerts", rows=[
        (r["name"], r["endpoint"] + (f"/{r['variant']}" if r.get("variant") else ""), r.get("schedule") or "-",
         styled(r.get("status")),
         f"{when((r.get('last_run') or {}).get('created_at'))} {(r.get('last_run') or {}).get('status') or ''}".strip(),
         str(r.get("open_alerts", 0))) for r in rows]))


@app.command("show")
def show(name: NameArg, as_json: JsonOpt = False) -> None:
    """One monitor: settings, last runs, open alerts."""
    emit(client().monitor(name), as_json, print_monitor)


def print_monitor(r: dict[str, Any]) -> None:
    out = console()
    pairs: list[tuple[str, Any]] = [
        ("monitor", r["name"]), ("endpoint", r["endpoint"]), ("variant", r.get("variant") or "(first)"),
        ("status", styled(r.get("status"))), ("schedule", f"{r['schedule']} {r['tz']}" if r.get("schedule") else "-"),
        ("next run", when(r.get("next_run_at"))), ("window", _window(r)), ("min samples", str(r["min_samples"])),
        ("thresholds", ", ".join(f"{k}={v}" for k, v in (r.get("thresholds") or {}).items()) or "(defaults)"),
        ("webhooks", ", ".join(r.get("webhooks") or []) or "-"), ("cursor", when(r.get("cursor"))),
        ("labels", str(r.get("labels", 0)))]
    out.print(fields_table(pairs))
    if r.get("runs"):
        print_runs(r["runs"])
    if r.get("alerts"):
        print_alerts(r["alerts"])


@app.command("run")
def run(
    name: NameArg,
    fail_on_violation: Annotated[bool, typer.Option("--fail-on-violation", help=(
        f"Exit {EXIT_VIOLATIONS} when the run found violations.")) ] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait for the run.")] = 900,
    as_json: JsonOpt = False,
) -> None:
    """Run the monitor now and wait: rows, per-feature statistics, quality, alerts, the report.
    Violations are findings, not errors: exit 0 (unless --fail-on-violation)."""
    from loopml.cli.progress import track

    with track(f"monitor {name}: starting the run", quiet=as_json) as bar:
        record = client().run_monitor(name, wait=True, timeout=timeout, on_poll=lambda job: bar.update(
            f"monitor {name}: job {job['id']} {styled(job['status'])}"))
    if as_json:
        print_json(record)
    else:
        print_run(record)
    if record["status"] == "failed":
        raise typer.Exit(1)
    if fail_on_violation and record.get("violations"):
        raise typer.Exit(EXIT_VIOLATIONS)


def _stat_text(values: dict[str, Any] | None) -> str:
    return ", ".join(f"{k} {num(v, 3)}" for k, v in (values or {}).items()) or "-"


def _interval(estimate: dict[str, Any]) -> str:
    return f"{num(estimate.get('accuracy'), 3)} [{num(estimate.get('low'), 3)}, {num(estimate.get('high'), 3)}]"


def print_run(run: dict[str, Any]) -> None:
    out = console()
    summary = run.get("summary") or {}
    pairs: list[tuple[str, Any]] = [
        ("run", run["id"]), ("status", styled(run["status"])), ("window", f"{when(run.get('since'))} .. {when(run.get('until'))}"),
        ("rows", str(run.get("rows") if run.get("rows") is not None else "-")),
        ("malformed lines", str(run.get("malformed") or 0))]
    if summary.get("model"):
        pairs.append(("model", f"{summary['model'].get('name')}:{summary['model'].get('version')}"))
    if summary.get("undecodable"):
        pairs.append(("undecodable", str(summary["undecodable"])))
    if run.get("error"):
        pairs.append(("error", run["error"]))
    if run["status"] == "insufficient":
        pairs.append(("note", f"fewer rows than min samples {summary.get('min_samples')} and no shift decisive yet: "
                              "the window keeps accumulating"))
    out.print(fields_table(pairs))
    features = summary.get("features") or []
    if features:
        out.print(table("feature", "type", "statistics", "thresholds", "n baseline", "n current", "violated",
                        title="Drift", rows=[
                            (str(f.get("name")), str(f.get("type") or "-"), _stat_text(f.get("statistics")),
                             _stat_text(f.get("thresholds")), str(f.get("n_baseline") or "-"),
                             str(f.get("n_current") or "-"),
                             ("[red]yes, early[/]" if f.get("early") else "[red]yes[/]") if f.get("violated")
                             else "no") for f in features]))
    estimate = summary.get("estimate") or {}
    if estimate.get("accuracy") is not None:
        verdict, floor = "", estimate.get("floor")
        if estimate.get("violated"):
            verdict = f"; the interval is wholly below the accuracy floor {floor:g}"
        elif estimate.get("overruled"):
            verdict = f"; below the accuracy floor {floor:g}, but the labelled rows passed it"
        elif floor is not None:
            verdict = f"; not shown below the accuracy floor {floor:g}"
        out.print(f"accuracy estimate: {_interval(estimate)} on {estimate.get('n')} rows (from the confidences, "
                  f"no labels){verdict}", markup=False)
    elif estimate.get("reason"):
        out.print(f"accuracy estimate: none ({estimate['reason']})", markup=False)
    quality = summary.get("quality")
    if quality:
        beside = quality.get("estimate")
        out.print(f"quality: accuracy {num(quality.get('accuracy'), 3)} on {quality.get('n')} labelled rows"
                  + (f" (estimated on the same rows: {_interval(beside)})" if beside else ""), markup=False)
    shadow = summary.get("shadow")
    if shadow:
        accuracy = shadow.get("accuracy") or {}
        out.print(f"shadow {shadow.get('shadow_variant')}: agreement {num(shadow.get('agreement'), 3)} on "
                  f"{shadow.get('n', 0)} requests"
                  + (f", accuracy production {num(accuracy.get('production'), 3)} vs shadow "
                     f"{num(accuracy.get('shadow'), 3)}" if accuracy else "")
                  + (f" ({shadow['error']})" if shadow.get("error") else ""))
    for v in run.get("violations") or []:
        out.print(f"[red]violation[/] {v.get('key')}: {v.get('message')}", markup=True)
    alerts = summary.get("alerts") or {}
    for kind in ("opened", "updated", "resolved"):
        for item in alerts.get(kind) or []:
            out.print(f"alert {kind}: {item}")
    if run.get("report_key"):
        out.print(f"report: {run['report_key']} (html: `loopml monitors report {run['monitor']} {run['id']} "
                  "--html FILE`)", markup=False)


@app.command("runs")
def runs(name: NameArg, limit: Annotated[int, typer.Option("--limit", min=1, max=1000)] = 50,
         as_json: JsonOpt = False) -> None:
    """The monitor's runs, newest first."""
    emit(client().monitor_runs(name, limit=limit), as_json, print_runs)


def _run_row(r: dict[str, Any]) -> tuple[str, ...]:
    estimate = (r.get("summary") or {}).get("estimate") or {}
    return (r["id"], when(r.get("created_at")), styled(r.get("status")),
            str(r.get("rows") if r.get("rows") is not None else "-"), str(r.get("malformed") or 0),
            str(len(r.get("violations") or [])), num(estimate.get("accuracy"), 3), r.get("job_id") or "-")


def print_runs(rows: list[dict[str, Any]]) -> None:
    if not rows:
        console().print("no runs yet")
        return
    console().print(table("run", "created", "status", "rows", "malformed", "violations", "est. accuracy", "job",
                          title="Runs", rows=[_run_row(r) for r in rows]))


@app.command("report")
def report(
    name: NameArg,
    run_id: Annotated[str, typer.Argument(metavar="RUN", help="Run id.")],
    html: Annotated[Optional[Path], typer.Option("--html", metavar="FILE", help=(
        "Write the self-contained HTML report to FILE.")) ] = None,
) -> None:
    """A run's report: JSON on stdout, or the HTML page into a file."""
    c = client()
    if html is not None:
        data = c.monitor_report(name, run_id, format="html").encode("utf-8")
        try:
            html.write_bytes(data)
        except OSError as exc:  # a path the user got wrong: one line, exit 2 (not a traceback)
            raise InvalidInput(f"--html {html}: cannot write it ({exc.strerror or exc})") from None
        console().print(f"wrote {html} ({len(data)} bytes)", markup=False)
        return
    print_json(c.monitor_report(name, run_id, format="json"))


@app.command("pause")
def pause(name: NameArg, as_json: JsonOpt = False) -> None:
    """Stop scheduled runs."""
    emit(client().pause_monitor(name), as_json, lambda r: console().print(f"paused monitor {r['name']}"))


@app.command("resume")
def resume(name: NameArg, as_json: JsonOpt = False) -> None:
    """Schedule runs again (from now)."""
    emit(client().resume_monitor(name), as_json, lambda r: console().print(f"resumed monitor {r['name']}"))


@app.command("delete")
def delete(name: NameArg, as_json: JsonOpt = False) -> None:
    """Delete a monitor with its runs, labels and alerts (reports stay in the artifact store)."""
    emit(client().delete_monitor(name), as_json, lambda r: console().print(f"deleted monitor {r['deleted']}"))


@app.command("baseline")
def baseline(
    model: Annotated[str, typer.Argument(metavar="MODEL:VERSION", help="The model version to baseline.")],
    dataset: Annotated[Optional[str], typer.Option(
        "--dataset", metavar="NAME[:VERSION]", help="Profile this dataset's held-out rows (default: the "
        "version's training data; an imported version needs it).")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the job to end.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Compute (backfill) a model version's baseline from its dataset's held-out rows."""
    job = client().baseline(model, wait=wait, dataset=dataset)
    if as_json:
        print_json(job)
        return
    console().print(f"baseline job {job['id']} for {model}: {job['status']}"
                    + (f" ({job['reason']})" if job.get("reason") else ""))
    if wait and job["status"] != "succeeded":
        raise typer.Exit(1)


@app.command("labels")
def labels(
    name: NameArg,
    file: Annotated[Path, typer.Argument(metavar="FILE", help="csv (inference_id,label) or jsonl.")],
    fmt: Annotated[Optional[str], typer.Option("--format", help="csv or jsonl (default: by the file name).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Upload true labels keyed by inference id (a re-upload replaces a label)."""
    answer = client().upload_labels(name, file, format=fmt)
    if as_json:
        print_json(answer)
        return
    unknown = answer.get("unknown_ids") or {}
    out = console()
    out.print(f"{answer['stored']} labels stored for monitor {name} ({answer['received']} lines, "
              f"{answer['invalid']} invalid); {answer.get('labels')} labels in all")
    if unknown.get("count"):
        out.print(f"{unknown['count']} inference ids were not seen in the endpoint's capture of the last 30 days: "
                  + ", ".join(unknown.get("first") or []) + (" ..." if unknown["count"] > len(unknown.get("first") or []) else ""),
                  markup=False)


@app.command("dataset")
def dataset(
    name: NameArg,
    dataset_name: Annotated[str, typer.Option("--dataset", metavar="D", help=(
        "The dataset the labelled requests become a version of.")) ],
    extend: Annotated[bool, typer.Option("--extend/--no-extend", help=(
        "Append to the dataset's newest version (default) or register the rows on their own.")) ] = True,
    min_labels: Annotated[int, typer.Option("--min-labels", help="Fewer labelled requests: refused.")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Register the monitor's labelled captured requests (inputs + true labels) as a dataset version."""
    record = client().labelled_dataset(name, dataset_name, extend=extend, min_labels=min_labels)
    if as_json:
        print_json(record)
        return
    skipped = ", ".join(f"{n} {k.replace('_', ' ')}" for k, n in (record.get("skipped") or {}).items() if n)
    state = "registered" if record.get("created") else "already registered (same rows)"
    console().print(f"dataset {record['ref']} {state}: {record['labelled']} labelled requests, "
                    f"{record['rows']} rows in all" + (f"; left out: {skipped}" if skipped else ""), markup=False)


# -- alerts -----------------------------------------------------------------------------------

@alerts_app.command("list")
def alerts_list(
    open_only: Annotated[bool, typer.Option("--open", help="Only open alerts.")] = False,
    monitor: Annotated[Optional[str], typer.Option("--monitor", metavar="M", help="Only this monitor's.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Alerts, newest first."""
    emit(client().alerts(open=True if open_only else None, monitor=monitor), as_json, print_alerts)


def print_alerts(rows: list[dict[str, Any]]) -> None:
    if not rows:
        console().print("no alerts")
        return
    t = table("alert", "monitor", "key", "status", "count", "first", "last", "message", title="Alerts", rows=[
        (a["id"], a["monitor"], a["key"], _alert_status(a), str(a["count"]), when(a.get("first_at")),
         when(a.get("last_at")), a.get("message") or "") for a in rows])
    t.columns[7].overflow = "fold"
    console().print(t)


def _alert_status(a: dict[str, Any], detail: bool = False) -> str:
    """open / acked (still open, acknowledged) / resolved; with ``detail`` who did it and when."""
    if a["status"] == "open" and a.get("acked_at"):
        return "[yellow]acked[/]" + (f" by {a.get('acked_by') or '-'} at {when(a['acked_at'])}" if detail else "")
    if a["status"] == "resolved" and a.get("resolved_by") and detail:
        return f"{styled('resolved')} by {a['resolved_by']}"
    return styled(a["status"])


@alerts_app.command("ack")
def alerts_ack(alert_id: Annotated[str, typer.Argument(metavar="ID", help="Alert id.")], as_json: JsonOpt = False) -> None:
    """Acknowledge an open alert: it stays open, shown as acked.

    Alerts notify only when they open, so nothing is sent again; a recovery still resolves it.
    """
    emit(client().ack_alert(alert_id, actor=actor()), as_json,
         lambda a: console().print(f"alert {a['id']} ({a['monitor']}: {a['key']}) acknowledged", markup=False))


@alerts_app.command("resolve")
def alerts_resolve(alert_id: Annotated[str, typer.Argument(metavar="ID", help="Alert id.")],
                   as_json: JsonOpt = False) -> None:
    """Close an open alert by hand: the next violation opens a new alert."""
    emit(client().resolve_alert(alert_id, actor=actor()), as_json,
         lambda a: console().print(f"alert {a['id']} ({a['monitor']}: {a['key']}) resolved", markup=False))


@alerts_app.command("show")
def alerts_show(alert_id: Annotated[str, typer.Argument(metavar="ID", help="Alert id.")], as_json: JsonOpt = False) -> None:
    """One alert: key, statistic, counts, notifications."""
    emit(client().alert(alert_id), as_json, print_alert)


def print_alert(a: dict[str, Any]) -> None:
    out = console()
    pairs: list[tuple[str, Any]] = [
        ("alert", a["id"]), ("monitor", a["monitor"]), ("key", a["key"]), ("status", _alert_status(a, detail=True)),
        ("severity", a.get("severity") or "-"), ("count", str(a["count"])), ("first seen", when(a.get("first_at"))),
        ("last seen", when(a.get("last_at"))), ("resolved", when(a.get("resolved_at"))),
        ("last run", a.get("run_id") or "-"), ("message", a.get("message") or "")]
    out.print(fields_table(pairs))
    stat = a.get("statistic") or {}
    if stat:
        out.print(f"statistics: {_stat_text(stat.get('statistics'))}; thresholds: {_stat_text(stat.get('thresholds'))}",
                  markup=False)
    for n in a.get("notifications") or []:
        target = n.get("url") or f"trigger {n.get('trigger')}"
        state = "ok" if n.get("ok") else f"failed: {n.get('error')}"
        out.print(f"notified {target}: {state}", markup=False)
