"""The Optuna side of a tuning job: samplers, pruners and the in-memory study rebuilt from the store.

Optuna's own storage is never used: LoopML's tables (tuning_jobs, tuning_trials, job_metrics) are
the source of truth, and the study is rebuilt from them whenever the control plane (re)starts —
finished trials with ``add_trial`` (their intermediate values and the sampler's/pruner's system
attributes included), running ones re-asked with their recorded parameters. Only the supervisor
imports this module (Optuna stays out of the CLI and the API).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from loopml.core.jobstatus import TRIAL_COMPLETE, TRIAL_PRUNED, TRIAL_RUNNING

optuna.logging.set_verbosity(optuna.logging.WARNING)

_STATES = {TRIAL_COMPLETE: TrialState.COMPLETE, TRIAL_PRUNED: TrialState.PRUNED}  # others: FAIL


def distributions(space: dict[str, dict[str, Any]]) -> dict[str, BaseDistribution]:
    out: dict[str, BaseDistribution] = {}
    for name, dim in space.items():
        if dim["type"] == "categorical":
            out[name] = CategoricalDistribution(dim["choices"])
        elif dim["type"] == "int":
            out[name] = IntDistribution(int(dim["low"]), int(dim["high"]), log=dim["log"])
        else:
            out[name] = FloatDistribution(float(dim["low"]), float(dim["high"]), log=dim["log"])
    return out


def make_sampler(spec: dict[str, Any], offset: int) -> optuna.samplers.BaseSampler:
    """``offset`` (trials already recorded) shifts the seed, so a search rebuilt after a restart
    does not draw its first trials' parameters again; a run that never restarts is reproducible."""
    seed = int(spec["seed"]) + offset
    strategy = spec["strategy"]
    if strategy == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    if strategy == "grid":
        return optuna.samplers.GridSampler({k: d["choices"] for k, d in spec["space"].items()}, seed=seed)
    # bayesian and hyperband: TPE; constant_liar keeps parallel trials from all asking for the same point
    startup = max(2, min(10, int(spec["max_trials"]) // 3))
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup, constant_liar=True)


def make_pruner(spec: dict[str, Any]) -> optuna.pruners.BasePruner:
    if spec["strategy"] == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, int(spec["epochs"])),
                                              reduction_factor=3)
    if spec["early_stopping"] == "auto":  # SageMaker's "Auto": a trial worse than the median at the same epoch stops
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)  # epochs are steps 1, 2, …: judged from epoch 2
    return optuna.pruners.NopPruner()


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


@dataclass
class Search:
    """A tuning job's live study and its running trials (trial number → Optuna trial)."""

    name: str
    spec: dict[str, Any]
    study: optuna.Study
    storage: optuna.storages.InMemoryStorage
    dists: dict[str, BaseDistribution]
    running: dict[int, optuna.Trial] = field(default_factory=dict)

    def ask(self) -> tuple[optuna.Trial, dict[str, Any]]:
        trial = self.study.ask(self.dists)
        return trial, dict(trial.params)

    def report(self, trial: optuna.Trial, values: dict[int, float]) -> None:
        for step, value in sorted(values.items()):
            if value is not None and math.isfinite(value):
                trial.report(float(value), step)

    def system_attrs(self, trial: optuna.Trial) -> dict[str, Any]:
        study_id = self.storage.get_study_id_from_name(self.name)
        trial_id = self.storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
        return _jsonable(self.storage.get_trial(trial_id).system_attrs)

    def tell(self, number: int, state: str, value: float | None = None) -> None:
        trial = self.running.pop(number)
        if state == TRIAL_COMPLETE and value is not None and math.isfinite(value):
            self.study.tell(trial, float(value))
        elif state == TRIAL_PRUNED:
            self.study.tell(trial, state=TrialState.PRUNED)
        else:
            self.study.tell(trial, state=TrialState.FAIL)


def rebuild(name: str, spec: dict[str, Any], rows: list[dict[str, Any]]) -> Search:
    """The study as it was: warm-start trials, then this job's trials in the order they were asked."""
    storage = optuna.storages.InMemoryStorage()
    study = optuna.create_study(study_name=name, storage=storage, direction=spec["direction"],
                                sampler=make_sampler(spec, len(rows)), pruner=make_pruner(spec))
    dists = distributions(spec["space"])
    search = Search(name, spec, study, storage, dists)
    for warm in spec.get("warm_trials") or []:
        study.add_trial(create_trial(params=warm["params"], distributions=dists, value=warm["value"],
                                     user_attrs={"warm_start": warm["from"]}))
    study_id = storage.get_study_id_from_name(name)
    for row in rows:
        steps = {int(k): v for k, v in (row["intermediate"] or {}).items() if v is not None}
        if row["state"] == TRIAL_RUNNING:
            study.enqueue_trial(row["params"])
            trial = study.ask(dists)
            search.report(trial, steps)
            trial_id = storage.get_trial_id_from_study_id_trial_number(study_id, trial.number)
            for key, value in (row["system_attrs"] or {}).items():
                storage.set_trial_system_attr(trial_id, key, value)
            search.running[row["number"]] = trial
            continue
        state = _STATES.get(row["state"], TrialState.FAIL)
        complete = state == TrialState.COMPLETE and row["value"] is not None
        study.add_trial(create_trial(state=state if complete or state != TrialState.COMPLETE else TrialState.FAIL,
                                     params=row["params"], distributions=dists,
                                     value=row["value"] if complete else None, intermediate_values=steps,
                                     system_attrs=row["system_attrs"] or {}))
    return search
