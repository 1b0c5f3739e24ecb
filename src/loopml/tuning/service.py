"""Creating, listing, showing and stopping tuning jobs (what the API and workflows call).

Everything is validated here, before the tuning job is stored: a bad space, objective or strategy
is one InvalidInput line. The search itself is advanced by the control plane's supervisor
(tuning/supervisor.py); this module imports no Optuna.
"""

from __future__ import annotations

import uuid
from typing import Any

from loopml.core import names
from loopml.core.errors import InvalidInput, NotFound
from loopml.core.jobstatus import TRIAL_COMPLETE, TUNING_TERMINAL
from loopml.core.resources import job_resources
from loopml.datasets.service import parse_ref
from loopml.models.hparams import TEMPLATES, check_template_suits, template_for_kind, validate_hparams
from loopml.platform import Platform
from loopml.registry.registration import validate_model_name
from loopml.tuning import space as sp

DEFAULT_MAX_TRIALS = 10
DEFAULT_PARALLEL = 2
DEFAULT_SEED = 0


def trial_job_id(name: str, number: int) -> str:
    """A trial's training job: NAME-001, NAME-002, … (a crash between recording the trial and
    queueing its job re-submits the same id, so a trial never runs twice)."""
    return f"{name}-{number:03d}"


def _number(value: Any, what: str, *, integer: bool = False, low: float | None = None) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not float(value).is_integer()):
        raise InvalidInput(f"{what} must be {'a whole number' if integer else 'a number'}, got {value!r}")
    value = int(value) if integer else float(value)
    if low is not None and value < low:
        raise InvalidInput(f"{what} must be at least {low:g}, got {value}")
    return value


def create_tuning(platform: Platform, *, dataset: str, space: list[str] | dict[str, str], model: str | None = None,
                  objective: str = "val_accuracy", strategy: str = "bayesian", max_trials: int = DEFAULT_MAX_TRIALS,
                  parallel: int = DEFAULT_PARALLEL, early_stopping: str = "off", warm_start: list[str] | None = None,
                  target: float | None = None, register_as: str | None = None, params: dict[str, Any] | None = None,
                  seed: int = DEFAULT_SEED, name: str | None = None,
                  resources: dict[str, Any] | None = None) -> dict[str, Any]:
    """Validate and store a tuning job; the control plane starts its trials on its next tick.
    ``resources`` (cpus, memory_gb, gpus): what every trial's job asks of its node."""
    name = names.tuning_name(name) if name is not None else "tune-" + uuid.uuid4().hex[:8]
    sp.check_objective(objective)
    sp.check_strategy(strategy)
    sp.check_early_stopping(early_stopping)
    resources = job_resources("train", resources)  # every trial is a training job
    max_trials = _number(max_trials, "max trials", integer=True, low=1)
    if max_trials > sp.MAX_TRIALS:
        raise InvalidInput(f"max trials must be at most {sp.MAX_TRIALS}, got {max_trials}")
    parallel = _number(parallel, "parallel", integer=True, low=1)
    seed = _number(seed, "seed", integer=True, low=0)
    if target is not None:
        target = _number(target, "target")
    if not isinstance(dataset, str) or not dataset:
        raise InvalidInput("a dataset is required (--dataset NAME[:VERSION])")
    ds_name, version = parse_ref(dataset)
    ds = platform.datasets.get(ds_name, version)  # pinned: every trial trains on the same version
    model = (model or template_for_kind(ds["kind"])).strip()
    if model.startswith("file:"):
        if not platform.artifacts.exists(model[5:]):
            raise NotFound(f"user model file {model[5:]!r} not found; upload it first")
        template = "custom"
    elif model.lower() in TEMPLATES:
        model = model.lower()
        check_template_suits(model, ds["kind"])
        template = model
    else:
        raise InvalidInput(f"model {model!r} is not a template ({', '.join(TEMPLATES)}) or an uploaded file:KEY")
    dims = sp.parse_space(model, space)
    fixed = dict(params or {})
    both = sorted(set(fixed) & set(dims))
    if both:
        raise InvalidInput(f"{', '.join(both)} is both searched (--space) and fixed (--param)")
    # the fixed values with the space's lower corner: unknown names and bad values fail now, not in trial 1
    corner = {k: (d["choices"][0] if d["type"] == "categorical" else d["low"]) for k, d in dims.items()}
    hparams = validate_hparams(model, {**fixed, **corner})
    epochs = int(dims["epochs"]["high"]) if "epochs" in dims and dims["epochs"]["type"] != "categorical" \
        else int(max(dims["epochs"]["choices"])) if "epochs" in dims else int(hparams["epochs"])
    if strategy == "grid":
        size = sp.grid_size(dims)
        max_trials = min(max_trials, size)
    if parallel > max_trials:
        parallel = max_trials
    register_as = validate_model_name(register_as) if register_as is not None else None
    direction = sp.OBJECTIVES[objective]
    warm = _warm_trials(platform, warm_start or [], objective, dims)
    spec = {"dataset": ds["ref"], "dataset_name": ds_name, "dataset_version": ds["version"], "kind": ds["kind"],
            "model": model, "template": template, "space": dims, "params": fixed, "objective": objective,
            "direction": direction, "strategy": strategy, "early_stopping": early_stopping,
            "max_trials": max_trials, "parallel": parallel, "target": target, "register_as": register_as,
            # trials' bundles live under models/<name>/<job> until the best one is registered
            "bundle_name": register_as or f"{ds_name}-{template}", "epochs": epochs, "seed": seed,
            "warm_start": list(warm_start or []), "warm_trials": warm, "resources": resources}
    return platform.tuning.create(name, spec)


def _warm_trials(platform: Platform, parents: list[str], objective: str,
                 dims: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    """Completed trials of earlier tuning jobs whose parameters lie in this space: the sampler starts
    from what they learnt. Copied into the spec, so a rebuilt study sees the same history."""
    if not isinstance(parents, list) or not all(isinstance(p, str) for p in parents):
        raise InvalidInput("warm start must be a list of tuning job names")
    warm: list[dict[str, Any]] = []
    for parent in parents:
        record = platform.tuning.get(parent)
        if record["spec"]["objective"] != objective:
            raise InvalidInput(f"warm start: tuning job {parent!r} optimised {record['spec']['objective']}, "
                               f"not {objective}")
        for trial in platform.tuning.trials(parent):
            params = trial["params"]
            if (trial["state"] == TRIAL_COMPLETE and trial["value"] is not None and set(params) == set(dims)
                    and all(sp.contains(dims[k], v) for k, v in params.items())):
                warm.append({"params": params, "value": trial["value"], "from": f"{parent}#{trial['number']}"})
    if parents and not warm:
        raise InvalidInput(f"warm start: no completed trial of {', '.join(parents)} lies in this search space")
    return warm


def get_tuning(platform: Platform, name: str) -> dict[str, Any]:
    """The tuning job with its trials (each with its training job's status)."""
    record = platform.tuning.get(name)
    record["trials"] = trials(platform, name)
    record["counts"] = _counts(record["trials"])
    return record


def list_tunings(platform: Platform, status: str | None = None) -> list[dict[str, Any]]:
    out = []
    for record in platform.tuning.list(status=status):
        record["counts"] = _counts(platform.tuning.trials(record["name"]))
        out.append(record)
    return out


def trials(platform: Platform, name: str) -> list[dict[str, Any]]:
    out = []
    for trial in platform.tuning.trials(name):
        trial.pop("system_attrs", None)
        try:
            job = platform.jobs.get(trial["job_id"])
            trial["job_status"] = job["status"]
            trial["epochs_run"] = len(trial["intermediate"])
        except NotFound:
            trial["job_status"] = None
        out.append(trial)
    return out


def stop_tuning(platform: Platform, name: str) -> dict[str, Any]:
    """Stop the search: no new trials, running ones cancelled; the best so far is kept (not registered)."""
    record = platform.tuning.get(name)
    if record["status"] in TUNING_TERMINAL:
        return get_tuning(platform, name)
    platform.tuning.request_stop(name)
    return get_tuning(platform, name)


def delete_tuning(platform: Platform, name: str) -> dict[str, Any]:
    """Delete an ended tuning job (its search: spec, trials, sampler state). Its trial jobs are kept:
    each is an ordinary job (logs, curves, its bundle; the registered best model's lineage points at
    one), deleted on its own with ``loopml jobs delete``. Conflict while the search runs."""
    platform.tuning.get(name)  # NotFound names it
    rows = platform.tuning.trials(name)
    platform.tuning.delete(name)
    kept = [row["job_id"] for row in rows if _job_status(platform, row["job_id"]) is not None]
    return {"name": name, "deleted": True, "trials": len(rows), "kept_jobs": kept}


def _job_status(platform: Platform, job_id: str) -> str | None:
    try:
        return platform.jobs.get(job_id)["status"]
    except NotFound:
        return None


def _counts(rows: list[dict[str, Any]]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    return counts
