"""The one table of job kinds: kind → submit function → runner → the parameters (spec) it takes.

Pure data (no import of the modules it names), so the store, the API enum and the CLI's
``jobs list --kind`` choices read it without loading Keras or SQLAlchemy. References are
``"module:function"`` strings: the worker (``loopml.jobs.worker``) imports the runner only when
a job of that kind runs, so no domain package imports another through the worker.

A runner is ``run(platform, job, sync_logs)``: it does the work and records the job's outcome
(``platform.jobs.transition(..., SUCCEEDED, result=...)``); an exception fails the job.
A new kind: add its params class and a row below (tests/test_job_kinds.py checks every reference resolves).
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any


@dataclass(frozen=True)
class TrainParams:
    dataset: str                 # dataset version ref NAME:V
    dataset_name: str
    dataset_version: int
    kind: str                    # the dataset's kind (image, tabular, text)
    model: str                   # template name or uploaded file
    template: str
    hparams: dict[str, Any]
    register_as: str
    user_model_key: str | None = None
    time_limit_s: float | None = None
    resume_from: str | None = None
    register: bool = True


@dataclass(frozen=True)
class PredictParams:
    model: str                   # model version ref NAME:V
    model_name: str
    model_version: int
    input: dict[str, Any]        # a parsed input source (training.service.parse_input)
    limit: int | None = None


@dataclass(frozen=True)
class EvaluateParams:
    dataset: str
    dataset_name: str
    dataset_version: int
    models: dict[str, Any]       # label → resolved model entry
    split: str = "test"
    metric: str | None = None
    min_improvement: float = 0.0


@dataclass(frozen=True)
class MonitorParams:
    monitor: str
    run_id: int


@dataclass(frozen=True)
class BaselineParams:
    model: str                   # model name
    version: int
    dataset: str | None = None   # default: the version's training dataset


@dataclass(frozen=True)
class LabelledDataParams:
    monitor: str
    dataset: str                 # the dataset the labelled requests go to
    extend: bool = True
    min_labels: int = 100


@dataclass(frozen=True)
class JobKind:
    name: str
    summary: str
    submit: str                  # "module:function" that validates and queues a job of this kind
    runner: str                  # "module:function" the worker calls
    params: type = field(repr=False)
    # keyword → "module:function" the worker passes to the runner: how a step of another context
    # joins a job without the runner importing that context (train's monitoring baseline)
    hooks: dict[str, str] = field(default_factory=dict)
    # "module:function" a spare worker (jobs/warm.py) calls once, before it has a job: the
    # first-use work every job of this kind would otherwise pay before its first step
    warmup: str | None = None

    def required(self) -> tuple[str, ...]:
        """The spec keys a job of this kind cannot run without."""
        return tuple(f.name for f in fields(self.params)
                     if f.default is MISSING and f.default_factory is MISSING)


KINDS: dict[str, JobKind] = {k.name: k for k in (
    JobKind("train", "train a model on a dataset version",
            "loopml.training.service:submit_training", "loopml.training.train_runner:run", TrainParams,
            hooks={"baseline": "loopml.monitoring.baseline_job:write_training_baseline"},
            warmup="loopml.training.warmup:warm_up"),
    JobKind("predict", "batch prediction with a model version",
            "loopml.training.service:submit_prediction", "loopml.training.predict_runner:run", PredictParams),
    JobKind("evaluate", "compare model versions on one dataset split",
            "loopml.training.service:submit_evaluation", "loopml.training.evaluate_runner:run", EvaluateParams),
    JobKind("monitor", "one monitor run over an endpoint's captured traffic",
            "loopml.monitoring.monitors:submit_run", "loopml.monitoring.run:run", MonitorParams),
    JobKind("baseline", "a model version's monitoring baseline",
            "loopml.monitoring.baseline_job:submit_baseline", "loopml.monitoring.baseline_job:run", BaselineParams),
    JobKind("labelled-data", "a monitor's labelled captured requests as a dataset version",
            "loopml.monitoring.labelled_data_job:submit", "loopml.monitoring.labelled_data_job:run",
            LabelledDataParams),
)}

JOB_KINDS = tuple(KINDS)  # the API enum, the CLI's --kind choices, the store's check
