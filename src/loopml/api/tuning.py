"""/tuning: hyperparameter tuning jobs (each trial an ordinary training job) and their trials."""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, ConfigDict, Field

from loopml.api.control import wake_control
from loopml.api.jobs import ResourcesIn
from loopml.core.jobstatus import TUNING_STATUSES
from loopml.platform import Platform
from loopml.tuning import service

router = APIRouter(prefix="/tuning", tags=["tuning"])
Status = Literal[TUNING_STATUSES]  # type: ignore[valid-type]
ParamValue = bool | int | float | str  # bool first: JSON true must not become 1


class TuningIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, description="1-27 letters, digits, '-' or '_' (default tune-<random>); "
                             "trials are the jobs NAME-001, NAME-002, …")
    dataset: str = Field(description="NAME or NAME:VERSION (pinned: every trial trains on the same version)",
                         examples=["mnist"])
    model: str | None = Field(None, description="cnn | rnn | mlp or file:<key>; default: the dataset kind's template")
    space: list[str] | dict[str, str] = Field(
        description="NAME=FUNCTION(ARGS) per hyperparameter: uniform(LOW,HIGH), loguniform(LOW,HIGH), int(LOW,HIGH), "
                    "choice(A,B,…)", examples=[["learning_rate=loguniform(1e-4,1e-2)", "filters=choice(16,32,64)"]])
    objective: str = Field("val_accuracy", description="val_accuracy | val_loss | accuracy | loss | test_accuracy | "
                           "test_loss | test_macro_f1 (losses are minimised)")
    strategy: str = Field("bayesian", description="bayesian (TPE) | random | grid | hyperband")
    max_trials: int = Field(service.DEFAULT_MAX_TRIALS, description="trials in all (grid: at most the grid's cells)")
    parallel: int = Field(service.DEFAULT_PARALLEL, description="trials running at once")
    early_stopping: str = Field("off", description="off | auto (a trial below the median at the same epoch stops; "
                                "hyperband always stops trials early)")
    warm_start: list[str] | None = Field(None, description="earlier tuning jobs whose completed trials seed the search")
    target: float | None = Field(None, description="stop the search once a trial reaches this objective value")
    register_as: str | None = Field(None, description="register the best trial's model under this name at the end")
    params: dict[str, ParamValue] = Field(default_factory=dict, description="fixed hyperparameters of every trial",
                                          examples=[{"epochs": 3}])
    seed: int = Field(service.DEFAULT_SEED, description="the sampler's seed (a search that never restarts is "
                      "reproducible)")
    resources: ResourcesIn | None = Field(
        None, description="what every trial's job asks of its node (default: a training job's 1 CPU, 2 GB, "
        "0 GPUs; on a Ray cluster a trial runs only where that much is free)", examples=[{"cpus": 2, "memory_gb": 4}])


class TuningJob(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    status: str = Field(description="running | stopping | succeeded | stopped | failed")
    spec: dict[str, Any]
    reason: str | None = None
    result: dict[str, Any] | None = Field(None, description="objective, trials (count by state), best "
                                          "{trial, job_id, value, params}, model (when registered)")
    counts: dict[str, int] = Field(default_factory=dict, description="trials by state")
    created_at: str | None = None
    ended_at: str | None = None


class Trial(BaseModel):
    model_config = ConfigDict(extra="allow")
    number: int
    job_id: str
    params: dict[str, Any]
    state: str = Field(description="running | complete | pruned | failed | stopped")
    value: float | None = None
    intermediate: dict[str, Any] = Field(description="the objective per epoch, as the pruner saw it")
    job_status: str | None = None


class TuningDetail(TuningJob):
    trials: list[Trial]


def _platform(request: Request) -> Platform:
    return request.app.state.platform



@router.post("", response_model=TuningDetail, status_code=201, summary="Start a hyperparameter tuning job")
def create_tuning(body: TuningIn, request: Request) -> dict[str, Any]:
    record = service.create_tuning(_platform(request), **body.model_dump())
    wake_control(request)
    return service.get_tuning(_platform(request), record["name"])


@router.get("", response_model=list[TuningJob], summary="Tuning jobs, newest first")
def list_tuning(request: Request, status: Status | None = Query(None)) -> list[dict[str, Any]]:
    return service.list_tunings(_platform(request), status=status)


@router.get("/{name}", response_model=TuningDetail, summary="One tuning job with its trials")
def get_tuning(name: str, request: Request) -> dict[str, Any]:
    return service.get_tuning(_platform(request), name)


@router.get("/{name}/trials", response_model=list[Trial], summary="The trials of a tuning job, in order")
def list_trials(name: str, request: Request) -> list[dict[str, Any]]:
    _platform(request).tuning.get(name)  # 404 for an unknown tuning job, not an empty list
    return service.trials(_platform(request), name)


class TuningDeleted(BaseModel):
    name: str
    deleted: bool
    trials: int = Field(description="trial records deleted with the tuning job")
    kept_jobs: list[str] = Field(description="the trials' jobs, kept (ordinary jobs: delete them with DELETE /jobs/{id})")


@router.delete("/{name}", response_model=TuningDeleted, summary="Delete an ended tuning job (its trial jobs are kept)",
               responses={409: {"description": "the tuning job is still running or stopping"}})
def delete_tuning(name: str, request: Request) -> dict[str, Any]:
    return service.delete_tuning(_platform(request), name)


@router.post("/{name}/stop", response_model=TuningDetail, summary="Stop: no new trials, running ones cancelled")
def stop_tuning(name: str, request: Request) -> dict[str, Any]:
    record = service.stop_tuning(_platform(request), name)
    wake_control(request)
    return record
