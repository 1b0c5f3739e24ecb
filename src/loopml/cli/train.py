"""``loopml train``: submit a training job and follow it live."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from loopml.cli.jobs import epoch_line, model_epoch, styled
from loopml.cli.output import client, console, err_console, num, print_evaluation, print_json
from loopml.core.errors import InvalidInput

if TYPE_CHECKING:
    from loopml.sdk.client import Client

# what a job asks of its node (train and predict); on a Ray cluster only a node with that much free runs it
CpusOpt = Annotated[Optional[float], typer.Option("--cpus", min=0.01, metavar="N", help="CPUs the job's node "
                                                  "reserves for it (default 1).", rich_help_panel="Resources")]
MemoryOpt = Annotated[Optional[float], typer.Option("--memory-gb", min=0.01, metavar="G", help="Memory in GB "
                                                    "(default: train 2, predict 1).", rich_help_panel="Resources")]
GpusOpt = Annotated[Optional[float], typer.Option("--gpus", min=0, metavar="K", help="GPUs (default 0).",
                                                  rich_help_panel="Resources")]


def parse_params(items: list[str]) -> dict[str, str | int | float | bool]:
    """['epochs=3', 'lr=1e-3', 'augment=true', 'optimizer=adam'] -> typed values."""
    params: dict[str, str | int | float | bool] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise InvalidInput(f"--param {item!r} must look like KEY=VALUE (e.g. --param learning_rate=0.001)")
        params[key] = coerce(raw.strip())
    return params


def coerce(raw: str) -> str | int | float | bool:
    if raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def train(
    dataset: Annotated[Optional[str], typer.Option("--dataset", "-d", help="NAME or NAME:VERSION of a registered dataset.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="cnn, rnn, mlp, or path/to/model.py "
                                                 "(default: the template for the dataset's kind).")] = None,
    epochs: Annotated[Optional[int], typer.Option("--epochs", "-e", min=1, help="Shortcut for --param epochs=N.")] = None,
    param: Annotated[Optional[list[str]], typer.Option("--param", "-p", metavar="KEY=VALUE",
                                                       help="A hyperparameter; repeatable.")] = None,
    register_as: Annotated[Optional[str], typer.Option("--register-as", help="Model name to register.")] = None,
    time_limit: Annotated[Optional[float], typer.Option(
        "--time-limit", min=0.001, metavar="SECONDS", help="Stop training after this long (from dispatch). A job that "
        "ran all its epochs succeeds; one stopped earlier fails and can be continued with --resume from its last "
        "finished epoch.")] = None,
    resume: Annotated[Optional[str], typer.Option("--resume", metavar="JOB", help="Resume from a job's checkpoint.")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the outcome: like following, but Ctrl-C "
                                       "exits 130 instead of 0, so a script never reads a detach as success.")] = False,
    detach: Annotated[bool, typer.Option("--detach", help="Submit and return at once.")] = False,
    no_register: Annotated[bool, typer.Option("--no-register", help="Train and keep the model bundle but register no "
                                              "version (register it later: loopml jobs register JOB).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the final job record as JSON (no progress).")] = False,
    cpus: CpusOpt = None,
    memory_gb: MemoryOpt = None,
    gpus: GpusOpt = None,
) -> None:
    """Train a model on a dataset and follow the job until it ends.

    Exit status: 0 when the job succeeds, 1 when it fails or is cancelled, with or without
    --wait. Following (the default) shows live progress; Ctrl-C detaches with exit 0 and the job
    keeps running (reattach: loopml jobs logs -f JOB). --wait differs only there: Ctrl-C exits 130.
    --detach returns as soon as the job is queued.

    Example: loopml train --dataset mnist --model cnn --epochs 3 --register-as mnist-cnn --wait
    """
    params = parse_params(param or [])
    if epochs is not None:
        params["epochs"] = epochs
    c = client()
    job = c.train(dataset, model=model, params=params, register_as=register_as, time_limit_s=time_limit, resume=resume,
                  register=not no_register, cpus=cpus, memory_gb=memory_gb, gpus=gpus)
    if detach:
        if as_json:
            print_json(job)
        else:
            console().print(f"submitted job [bold]{job['id']}[/]; follow it with: loopml jobs logs -f {job['id']}")
        return
    try:  # from here on Ctrl-C detaches: the job is queued and keeps running
        if not as_json:
            target = job['spec'].get('register_as') if not no_register else "unregistered"
            console().print(f"submitted job [bold]{job['id']}[/] ({job['spec'].get('model')} on "
                            f"{job['spec'].get('dataset')} -> {target})")
        final = follow(c, job["id"], live=not as_json)
    except KeyboardInterrupt:
        final = None
    if final is None:
        err_console().print(f"detached; job {job['id']} keeps running. Reattach: loopml jobs logs -f {job['id']}")
        raise typer.Exit(130 if wait else 0)
    if as_json:
        print_json(final)
    else:
        print_outcome(final)
    if final["status"] != "succeeded":
        raise typer.Exit(1)


def follow(c: Client, job_id: str, *, live: bool = True, poll: float = 0.5) -> dict[str, Any] | None:
    """Poll the job until it ends; show progress and per-epoch lines when ``live``. None = detached."""
    from loopml.cli.progress import track

    seen, epochs = 0, None

    def show(job: dict[str, Any]) -> None:
        nonlocal seen, epochs
        p = job.get("progress") or {}
        metrics = job.get("metrics") or []
        # the epoch count: from the running job's progress; a job first seen finished (a busy
        # machine, a short job) has it only in its result
        result = job.get("result") if isinstance(job.get("result"), dict) else {}
        epochs = p.get("epochs") or epochs or result.get("epochs")
        for m in metrics[seen:] if live else []:
            bar.print(epoch_line(m, epochs))
        seen = len(metrics)
        description, total, completed, stats = describe_progress(job["status"], p)
        bar.update(description, total=total, completed=completed, detail=stats)

    try:
        with track("queued", quiet=not live) as bar:
            return c.wait(job_id, poll=poll, on_poll=show)
    except KeyboardInterrupt:
        return None


def describe_progress(status: str, p: dict[str, Any]) -> tuple[str, float | None, float, str]:
    if status == "running" and "rows" in p:  # a prediction job: rows written so far
        total = p.get("total")
        return (f"predicting: {p['rows']}" + (f"/{total}" if total else "") + " rows",
                float(total) if total else None, float(p["rows"]), "")
    if status != "running" or not p.get("epochs"):
        return status, None, 0, ""
    epoch, epochs = int(p.get("epoch") or 1), int(p["epochs"])
    batch, batches = int(p.get("batch") or 0), int(p.get("batches") or 0)
    stats = "  ".join(f"{label} {num(p[key])}" for key, label in
                      (("loss", "loss"), ("accuracy", "acc"), ("val_accuracy", "val_acc")) if key in p)
    if batches:
        return (f"epoch {epoch}/{epochs} batch {batch}/{batches}", float(epochs * batches),
                float((epoch - 1) * batches + batch), stats)
    return f"epoch {epoch}/{epochs}", float(epochs), float(epoch - 1), stats


def print_outcome(job: dict[str, Any]) -> None:
    out = console()
    line = f"job {job['id']} {styled(job['status'])}"
    if job.get("reason"):
        line += f": {job['reason']}"
    out.print(line)
    result = job.get("result") or {}
    model = result.get("model") or {}
    which = model_epoch(result.get("metrics") or {})
    which = f" ({which})" if which else ""
    if model:
        out.print(f"registered model [bold]{model.get('name')}:{model.get('version')}[/]{which}")
    elif result.get("model_ref"):
        out.print(f"model not registered ({result['model_ref']}{which}); register it with: "
                  f"loopml jobs register {job['id']}")
    if job["status"] == "succeeded":
        print_evaluation(result.get("evaluation"), result.get("metrics"))
