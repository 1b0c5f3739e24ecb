"""/jobs and /files: submit training and prediction jobs, follow them, fetch their output."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Query, Request, UploadFile
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from loopml.api.control import wake_control
from loopml.api.datasets import safe_filename
from loopml.core.errors import Conflict, CorruptArtifact, InvalidInput, LoopMLError, NotFound
from loopml.core.jobkinds import JOB_KINDS
from loopml.core.jobstatus import CANCELLED, JOB_STATUSES, TERMINAL
from loopml.platform import Platform

router = APIRouter(tags=["jobs"])

Status = Literal[JOB_STATUSES]  # type: ignore[valid-type]
Kind = Literal[JOB_KINDS]  # type: ignore[valid-type]
ParamValue = bool | int | float | str  # bool first: JSON true must not become 1
CHUNK = 1024 * 1024


class ResourcesIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    cpus: float | None = Field(None, gt=0, description="CPUs the job's node reserves for it (default per kind: 1)")
    memory_gb: float | None = Field(None, gt=0, description="memory in GB (default: train 2, others 1)")
    gpus: float | None = Field(None, ge=0, description="GPUs (default 0)")


RESOURCES = Field(None, description="what the job asks of the node it runs on; on a Ray cluster only a node "
                  "with that much free runs it; missing fields: the kind's defaults")


class TrainIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: str | None = Field(None, description="NAME or NAME:VERSION of a registered dataset "
                                "(required unless resuming)", examples=["mnist"])
    model: str | None = Field(None, description="cnn | rnn | mlp, or file:<key> of an uploaded model .py; "
                              "default: the template for the dataset's kind")
    params: dict[str, ParamValue] = Field(default_factory=dict, description="hyperparameters, e.g. epochs",
                                          examples=[{"epochs": 3, "learning_rate": 0.001}])
    register_as: str | None = Field(None, description="register the trained model under this name")
    time_limit_s: float | None = Field(None, gt=0, description="stop training after this many seconds")
    resume: str | None = Field(None, description="id of a job whose checkpoint to resume from")
    register_model: bool = Field(True, alias="register", description="false: upload the model bundle but register no version "
                           "(result model_ref job:<id>; register it later with POST /jobs/{id}/register)")
    resources: ResourcesIn | None = RESOURCES


class PredictIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    model: str = Field(description="NAME, NAME:VERSION or NAME@ALIAS", examples=["digits@prod"])
    input: str = Field(description="dataset:NAME[:VERSION]:SPLIT or upload:<key>; checked against the model's "
                       "input signature before the job is queued (400 naming what the model takes)",
                       examples=["dataset:mnist:test"])
    limit: int | None = Field(None, ge=1, description="predict at most this many rows")
    resources: ResourcesIn | None = RESOURCES


class EvaluateIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    models: dict[str, str] = Field(description="label -> NAME, NAME:VERSION, NAME@ALIAS or job:ID",
                                   examples=[{"challenger": "job:job-0123456789", "champion": "mnist-cnn@production"}])
    dataset: str = Field(description="NAME or NAME:VERSION", examples=["mnist"])
    split: Literal["train", "validation", "test"] = "test"
    metric: Literal["accuracy", "macro_f1", "loss"] = "accuracy"
    min_improvement: float | None = Field(None, description="challenger must beat champion by this much (default 0)")
    resources: ResourcesIn | None = RESOURCES


class RegisterIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(None, description="model name (default: the job's register_as)")


class Job(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    kind: str
    status: str
    spec: dict[str, Any]
    reason: str | None = None
    progress: dict[str, Any] | None = Field(None, description="epoch, epochs, batch, batches, loss, accuracy…")
    result: dict[str, Any] | None = Field(None, description="metrics, evaluation, model, output_key")
    cancel_requested: bool = False
    created_at: str | None = None
    started_at: str | None = None
    ended_at: str | None = None


class JobEvent(BaseModel):
    status: str
    at: str | None
    message: str | None = None


class JobDetail(Job):
    events: list[JobEvent] = Field(description="status transitions, oldest first")
    metrics: list[dict[str, Any]] = Field(description="one entry per finished epoch")


class LogLine(BaseModel):
    id: int
    at: str | None
    text: str


class JobLogs(BaseModel):
    job_id: str
    status: str = Field(description="the job's status before these lines were read")
    lines: list[LogLine]
    next_after: int = Field(description="pass as ?after= to get only newer lines")


class FileKey(BaseModel):
    key: str = Field(description="artifact key: use as file:<key> (model) or upload:<key> (input)")


def _platform(request: Request) -> Platform:
    return request.app.state.platform


def _resources(given: ResourcesIn | None) -> dict[str, Any] | None:
    return given.model_dump(exclude_none=True) if given is not None else None


def _queued(request: Request, job: dict[str, Any]) -> dict[str, Any]:
    """The new job is dispatched now, not at the next reconcile tick."""
    wake_control(request)
    return job


def _training():
    # Keras stays out of the API process until a job is submitted
    try:
        from loopml.training import service
    except ImportError as exc:  # an installation problem, not the user's: say what is missing
        raise LoopMLError(f"training is not available on this server: {exc}") from None
    return service


@router.post("/jobs/train", response_model=Job, status_code=201, summary="Submit a training job")
def submit_train(body: TrainIn, request: Request) -> dict[str, Any]:
    return _queued(request, _training().submit_training(
        _platform(request), dataset=body.dataset, model=body.model, params=body.params,
        register_as=body.register_as, time_limit_s=body.time_limit_s, resume=body.resume,
        register=body.register_model, resources=_resources(body.resources)))


@router.post("/jobs/evaluate", response_model=Job, status_code=201,
             summary="Evaluate models on the same rows of a dataset split (challenger vs champion)")
def submit_evaluate(body: EvaluateIn, request: Request) -> dict[str, Any]:
    return _queued(request, _training().submit_evaluation(
        _platform(request), models=body.models, dataset=body.dataset, split=body.split, metric=body.metric,
        min_improvement=body.min_improvement, resources=_resources(body.resources)))


@router.post("/jobs/{job_id}/register", summary="Register the model of a training job run with register=false")
def register_job_model(job_id: str, request: Request, body: RegisterIn | None = None) -> dict[str, Any]:
    from loopml.registry.registration import register_trained

    return register_trained(_platform(request), job_id, name=body.name if body else None)


@router.post("/jobs/predict", response_model=Job, status_code=201, summary="Submit a batch prediction job")
def submit_predict(body: PredictIn, request: Request) -> dict[str, Any]:
    return _queued(request, _training().submit_prediction(_platform(request), model=body.model, input=body.input,
                                                          limit=body.limit, resources=_resources(body.resources)))


@router.post("/files", response_model=FileKey, status_code=201, tags=["files"],
             summary="Upload a user model .py or a prediction input file")
def upload_file(
    request: Request,
    file: Annotated[UploadFile, File()],
    kind: Annotated[Literal["model", "input"], Form(
        description="model: a .py; input: npz/npy/csv/parquet/zip, or png/jpg for image models")] = "input",
) -> FileKey:
    # streamed (hashed through a temporary file), never read whole into memory
    key = _training().upload_user_file(_platform(request), safe_filename(file.filename or "upload"), file.file, kind)
    return FileKey(key=key)


@router.get("/jobs", response_model=list[Job], summary="Jobs, newest first")
def list_jobs(request: Request, status: Status | None = None, kind: Kind | None = None,
              limit: Annotated[int, Query(ge=1, le=1000)] = 100,
              offset: Annotated[int, Query(ge=0, description="skip this many (paging)")] = 0) -> list[dict[str, Any]]:
    return _platform(request).jobs.list(status=status, kind=kind, limit=limit, offset=offset)


@router.get("/jobs/{job_id}", response_model=JobDetail, summary="A job with its transitions and epoch metrics")
def get_job(job_id: str, request: Request) -> dict[str, Any]:
    jobs = _platform(request).jobs
    record = jobs.get(job_id)
    return {**record, "events": jobs.events(job_id), "metrics": jobs.metrics(job_id)}


@router.get("/jobs/{job_id}/metrics", response_model=list[dict[str, Any]],
            summary="Per-epoch metrics of a training job, oldest epoch first")
def job_metrics(job_id: str, request: Request) -> list[dict[str, Any]]:
    jobs = _platform(request).jobs
    jobs.get(job_id)  # 404 for an unknown job, not an empty list
    return jobs.metrics(job_id)


@router.get("/jobs/{job_id}/logs", response_model=JobLogs, summary="Log lines after a given line id")
def job_logs(job_id: str, request: Request, after: Annotated[int, Query(ge=0)] = 0,
             limit: Annotated[int, Query(ge=1, le=10_000)] = 10_000) -> dict[str, Any]:
    jobs = _platform(request).jobs
    status = jobs.get(job_id)["status"]  # read first: a finished job has written all its lines
    lines = jobs.logs(job_id, after=after, limit=limit)
    return {"job_id": job_id, "status": status, "lines": lines,
            "next_after": lines[-1]["id"] if lines else after}


@router.post("/jobs/{job_id}/cancel", response_model=Job, summary="Cancel a queued or running job")
def cancel_job(job_id: str, request: Request) -> dict[str, Any]:
    jobs = _platform(request).jobs
    record = jobs.get(job_id)
    if record["status"] == CANCELLED:
        return record
    if record["status"] in TERMINAL:
        raise Conflict(f"job {job_id} has already {record['status']}; there is nothing to cancel")
    return jobs.request_cancel(job_id)


@router.delete("/jobs/{job_id}", summary="Delete an ended job with its logs, metrics and files",
               responses={409: {"description": "queued or running: cancel it first"}})
def delete_job(job_id: str, request: Request) -> dict[str, Any]:
    from loopml.registry.deletion import delete_job as delete

    return delete(_platform(request), job_id)


@router.get("/jobs/{job_id}/output", response_class=StreamingResponse, summary="The prediction CSV",
            responses={200: {"content": {"text/csv": {}}, "description": "row, label, confidence, …"},
                       409: {"description": "the job has not succeeded (yet)"}})
def job_output(job_id: str, request: Request) -> StreamingResponse:
    platform = _platform(request)
    record = platform.jobs.get(job_id)
    if record["kind"] != "predict":
        raise InvalidInput(f"job {job_id} is a {record['kind']} job; only predict jobs have an output")
    if record["status"] != "succeeded":
        raise Conflict(f"job {job_id} is {record['status']}; its output exists once it has succeeded")
    key = (record.get("result") or {}).get("output_key")
    if not key:
        raise CorruptArtifact(f"job {job_id} succeeded but recorded no output")
    try:
        size = platform.artifacts.size(key)  # fail before the 200 goes out
    except NotFound:
        raise CorruptArtifact(f"job {job_id}: its output {key!r} is missing from the artifact store") from None

    def chunks():
        with platform.artifacts.open_read(key) as f:
            while chunk := f.read(CHUNK):
                yield chunk

    return StreamingResponse(chunks(), media_type="text/csv", headers={
        "Content-Length": str(size), "Content-Disposition": f'attachment; filename="{job_id}.csv"'})
