"""``loopml tune`` (start a hyperparameter search) and ``loopml tuning`` (list, show, trials, stop, delete)."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from loopml.cli.output import client, console, emit, err_console, fields_table, num, print_json, table, when
from loopml.cli.train import CpusOpt, GpusOpt, MemoryOpt, parse_params

app = typer.Typer(help="Hyperparameter tuning jobs: each trial is an ordinary training job (loopml jobs logs "
                       "NAME-001); unpromising trials are stopped early; the best can be registered.",
                  no_args_is_help=True)

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
NameArg = Annotated[str, typer.Argument(metavar="NAME", help="Tuning job name.")]
STYLE = {"running": "cyan", "stopping": "yellow", "succeeded": "green", "stopped": "yellow", "failed": "red",
         "complete": "green", "pruned": "magenta", "cancelled": "yellow", "queued": "cyan"}


def styled(status: str | None) -> str:
    return f"[{STYLE.get(status or '', 'white')}]{status or '-'}[/]"


def tune(
    dataset: Annotated[str, typer.Option("--dataset", "-d", help="NAME or NAME:VERSION of a registered dataset.")],
    space: Annotated[list[str], typer.Option("--space", "-s", metavar="NAME=FUNC(ARGS)", help=(
        "A searched hyperparameter: uniform(LOW,HIGH), loguniform(LOW,HIGH), int(LOW,HIGH) or choice(A,B,...); "
        "repeatable, e.g. --space 'learning_rate=loguniform(1e-4,1e-2)'."))],
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="cnn, rnn or mlp (default: the template for "
                                                 "the dataset's kind).")] = None,
    objective: Annotated[str, typer.Option("--objective", help=(
        "val_accuracy, val_loss, accuracy, loss, test_accuracy, test_loss or test_macro_f1 (losses are "
        "minimised).")) ] = "val_accuracy",
    strategy: Annotated[str, typer.Option("--strategy", help="bayesian (TPE), random, grid (choice only) or "
                                          "hyperband.")] = "bayesian",
    max_trials: Annotated[int, typer.Option("--max-trials", help="Trials in all.")] = 10,
    parallel: Annotated[int, typer.Option("--parallel", help="Trials running at once.")] = 2,
    early_stopping: Annotated[str, typer.Option("--early-stopping", help=(
        "off or auto: stop a trial worse than the median at the same epoch (hyperband always stops "
        "unpromising trials).")) ] = "off",
    warm_start: Annotated[Optional[list[str]], typer.Option("--warm-start", metavar="TUNING_JOB", help=(
        "Seed the search with an earlier tuning job's completed trials (repeatable).")) ] = None,
    target: Annotated[Optional[float], typer.Option("--target", help="End the search once a trial reaches this "
                                                    "objective value.")] = None,
    register_as: Annotated[Optional[str], typer.Option("--register-as", help="Register the best trial's model under "
                                                       "this name when the search ends.")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", "-e", min=1, help="Shortcut for --param epochs=N.")] = None,
    param: Annotated[Optional[list[str]], typer.Option("--param", "-p", metavar="KEY=VALUE", help=(
        "A fixed hyperparameter of every trial; repeatable.")) ] = None,
    name: Annotated[Optional[str], typer.Option("--name", help="The tuning job's name (default tune-<random>); "
                                                "trials are the jobs NAME-001, NAME-002, ...")] = None,
    seed: Annotated[int, typer.Option("--seed", help="The sampler's seed.")] = 0,
    wait: Annotated[bool, typer.Option("--wait", help="Follow the search until it ends (exit 1 unless it "
                                       "succeeded); Ctrl-C detaches, exit 130.")] = False,
    cpus: CpusOpt = None,
    memory_gb: MemoryOpt = None,
    gpus: GpusOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Tune hyperparameters: train many trials, stop unpromising ones early, keep the best.

    Example: loopml tune --dataset mnist --model cnn --space 'learning_rate=loguniform(1e-4,1e-2)'
    --space 'filters=choice(16,32,64)' --space 'dropout=uniform(0,0.5)' --objective val_accuracy
    --max-trials 20 --parallel 4 --strategy hyperband --epochs 5 --register-as mnist-tuned --wait

    --cpus / --memory-gb / --gpus apply to every trial's job (on a Ray cluster: where it can run).
    """
    params = parse_params(param or [])
    if epochs is not None:
        params["epochs"] = epochs
    c = client()
    record = c.tune(dataset, list(space), model=model, objective=objective, strategy=strategy, max_trials=max_trials,
                    parallel=parallel, early_stopping=early_stopping, warm_start=list(warm_start or []) or None,
                    target=target, register_as=register_as, params=params, seed=seed, name=name, cpus=cpus,
                    memory_gb=memory_gb, gpus=gpus)
    if not wait:
        if as_json:
            print_json(record)
        else:
            console().print(f"started tuning job [bold]{record['name']}[/] ({record['spec']['strategy']}, "
                            f"{record['spec']['max_trials']} trials, {record['spec']['parallel']} at once); "
                            f"follow it with: loopml tuning show {record['name']}")
        return
    from loopml.cli.progress import track

    try:
        with track(f"tuning {record['name']}", quiet=as_json) as bar:
            final = c.wait_tuning(record["name"], on_poll=lambda r: bar.update(_line(r)))
    except KeyboardInterrupt:
        err_console().print(f"detached; tuning job {record['name']} keeps running "
                            f"(loopml tuning show {record['name']})")
        raise typer.Exit(130) from None
    if as_json:
        print_json(final)
    else:
        print_tuning(final)
    if final["status"] != "succeeded":
        raise typer.Exit(1)


def _line(r: dict[str, Any]) -> str:
    counts = r.get("counts") or {}
    best = (r.get("result") or {}).get("best")
    text = f"tuning {r['name']} {r['status']}: " + (", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
                                                      or "no trial yet")
    if best:
        text += f"; best {r['spec']['objective']} {num(best['value'])} (trial {best['trial']})"
    return text


@app.command("list")
def list_(as_json: JsonOpt = False) -> None:
    """Tuning jobs, newest first, with their trials and best value so far."""
    emit(client().tuning_jobs(), as_json, print_list)


def print_list(rows: list[dict[str, Any]]) -> None:
    if not rows:
        console().print("no tuning jobs yet: start one with loopml tune --dataset NAME --space 'NAME=FUNC(ARGS)'")
        return
    console().print(table("name", "status", "strategy", "objective", "trials", "best", "created", rows=[
        (r["name"], styled(r["status"]), r["spec"]["strategy"], r["spec"]["objective"],
         f"{sum((r.get('counts') or {}).values())}/{r['spec']['max_trials']}",
         num(((r.get("result") or {}).get("best") or {}).get("value")), when(r.get("created_at"))) for r in rows]))


@app.command("show")
def show(name: NameArg, as_json: JsonOpt = False) -> None:
    """One tuning job: its search, its best trial and every trial."""
    emit(client().tuning_job(name), as_json, print_tuning)


def print_tuning(r: dict[str, Any]) -> None:
    spec, result = r["spec"], r.get("result") or {}
    best = result.get("best") or {}
    pairs: list[tuple[str, Any]] = [
        ("tuning job", r["name"]), ("status", styled(r["status"]) + (f": {r['reason']}" if r.get("reason") else "")),
        ("dataset", spec["dataset"]), ("model", spec["model"]), ("strategy", spec["strategy"]),
        ("objective", f"{spec['objective']} ({spec['direction']})"),
        ("space", "; ".join(f"{k} {_dim(d)}" for k, d in spec["space"].items())),
        ("fixed", ", ".join(f"{k}={v}" for k, v in spec["params"].items()) or "-"),
        ("budget", f"{spec['max_trials']} trials, {spec['parallel']} at once"
                   + (f", target {spec['target']:g}" if spec.get("target") is not None else "")),
        ("early stopping", "hyperband" if spec["strategy"] == "hyperband" else spec["early_stopping"])]
    if spec.get("resources"):
        res = spec["resources"]
        pairs.append(("per trial", f"{res['cpus']:g} CPU, {res['memory_gb']:g} GB memory"
                                   + (f", {res['gpus']:g} GPU" if res["gpus"] else "")))
    if best:
        pairs.append(("best", f"trial {best['trial']} ({best['job_id']}): {num(best['value'])} with "
                              + ", ".join(f"{k}={num(v)}" for k, v in best["params"].items())))
    if result.get("model"):
        pairs.append(("registered", result["model"]["ref"]))
    console().print(fields_table(pairs))
    if r.get("trials"):
        print_trials(r["trials"])


def _dim(d: dict[str, Any]) -> str:
    if d["type"] == "categorical":
        return "choice(" + ", ".join(str(v) for v in d["choices"]) + ")"
    fn = "loguniform" if d.get("log") else "int" if d["type"] == "int" else "uniform"
    return f"{fn}({d['low']:g}, {d['high']:g})"


@app.command("trials")
def trials(name: NameArg, as_json: JsonOpt = False) -> None:
    """The trials of a tuning job: parameters, state, objective per epoch and at the end, job."""
    emit(client().tuning_trials(name), as_json, print_trials)


def print_trials(rows: list[dict[str, Any]]) -> None:
    if not rows:
        console().print("no trials yet")
        return
    names = sorted({k for r in rows for k in r["params"]})
    console().print(table("#", *names, "state", "epochs", "value", "job", "job status", rows=[
        (str(r["number"]), *(num(r["params"].get(k)) for k in names), styled(r["state"]),
         str(len(r.get("intermediate") or {})), num(r.get("value")), r["job_id"], styled(r.get("job_status")))
        for r in rows]))


@app.command("stop")
def stop(name: NameArg, as_json: JsonOpt = False) -> None:
    """Stop a tuning job: no new trials, running trials cancelled; nothing is registered."""
    record = client().stop_tuning(name)
    if as_json:
        print_json(record)
    else:
        console().print(f"tuning job [bold]{name}[/] {styled(record['status'])}")


@app.command("delete")
def delete(name: NameArg, as_json: JsonOpt = False) -> None:
    """Delete an ended tuning job and its trial records; its trial jobs are kept (loopml jobs delete ID).

    A running tuning job is refused: stop it first (loopml tuning stop NAME).
    """
    result = client().delete_tuning(name)
    if as_json:
        print_json(result)
        return
    kept = result["kept_jobs"]
    console().print(f"deleted tuning job [bold]{name}[/] ({result['trials']} trial(s))"
                    + (f"; its trial jobs are kept: {', '.join(kept)}" if kept else ""))
