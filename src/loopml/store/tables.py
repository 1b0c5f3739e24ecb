"""SQLAlchemy tables of the metadata store. Schema changes go through Alembic (migrations/)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from loopml.core.timeutil import utcnow


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON, datetime: DateTime(timezone=True)}


class Dataset(Base):
    __tablename__ = "datasets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    # highest version number ever deleted: numbers are never handed out twice
    retired_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class DatasetVersion(Base):
    __tablename__ = "dataset_versions"
    __table_args__ = (
        UniqueConstraint("dataset_id", "version", name="uq_dataset_version"),
        UniqueConstraint("dataset_id", "content_hash", name="uq_dataset_hash"),
    )
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    dataset_id: Mapped[int] = mapped_column(ForeignKey("datasets.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    content_hash: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(16))
    source: Mapped[str] = mapped_column(Text)
    format: Mapped[str] = mapped_column(String(16))
    rows: Mapped[int] = mapped_column(Integer)
    schema_: Mapped[dict[str, Any]] = mapped_column("schema", JSON)
    splits: Mapped[dict[str, Any]] = mapped_column(JSON)  # {"seed", "fractions", "counts"}
    artifact_prefix: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Job(Base):
    __tablename__ = "jobs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # one of core.jobkinds.JOB_KINDS
    status: Mapped[str] = mapped_column(String(16), index=True)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    progress: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    worker_host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    worker_pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    heartbeat_at: Mapped[datetime | None] = mapped_column(nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(nullable=True)


class JobEvent(Base):
    """Every status transition, with its time: the job's audit trail."""

    __tablename__ = "job_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    status: Mapped[str] = mapped_column(String(16))
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class JobMetric(Base):
    __tablename__ = "job_metrics"
    __table_args__ = (UniqueConstraint("job_id", "epoch", name="uq_job_epoch"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    epoch: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class JobLog(Base):
    """Log lines in the metadata store, so `jobs logs -f` works wherever the worker ran."""

    __tablename__ = "job_logs"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job_id: Mapped[str] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)
    text: Mapped[str] = mapped_column(Text)


class Model(Base):
    __tablename__ = "models"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    # highest version number ever deleted: a serving cache keyed by name:version never sees a
    # new bundle under an old number
    retired_version: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelVersion(Base):
    __tablename__ = "model_versions"
    __table_args__ = (UniqueConstraint("model_id", "version", name="uq_model_version"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    version: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    dataset: Mapped[str | None] = mapped_column(String(160), nullable=True)  # "name:version"
    kind: Mapped[str] = mapped_column(String(16))
    template: Mapped[str] = mapped_column(String(255))
    hparams: Mapped[dict[str, Any]] = mapped_column(JSON)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON)
    lineage: Mapped[dict[str, Any]] = mapped_column(JSON)
    runtimes: Mapped[list[Any]] = mapped_column(JSON)
    trusted: Mapped[bool] = mapped_column(Boolean, default=False)
    artifact_prefix: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ModelAlias(Base):
    __tablename__ = "model_aliases"
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), primary_key=True)
    alias: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[int] = mapped_column(Integer)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class AliasEvent(Base):
    """Audit history of every alias move."""

    __tablename__ = "alias_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"), index=True)
    alias: Mapped[str] = mapped_column(String(64))
    from_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    to_version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    actor: Mapped[str | None] = mapped_column(String(128), nullable=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class Endpoint(Base):
    """A real-time endpoint: the desired spec (as written), its resolved model versions, and
    what the serving process last reported. ``generation`` bumps on every change of the
    resolved spec; the endpoint is ready when ``served_generation`` caught up with it."""

    __tablename__ = "endpoints"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    uid: Mapped[str] = mapped_column(String(32))  # this incarnation: a re-created name differs
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    resolved: Mapped[dict[str, Any]] = mapped_column(JSON)
    generation: Mapped[int] = mapped_column(Integer, default=1)
    status: Mapped[str] = mapped_column(String(16))
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    served_generation: Mapped[int] = mapped_column(Integer, default=0)
    served: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class RetiredName(Base):
    """The highest version number of a model or dataset name deleted whole: re-creating the
    name continues from there (see store/retired.py)."""

    __tablename__ = "retired_names"
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)  # "model" | "dataset"
    name: Mapped[str] = mapped_column(String(128), primary_key=True)
    last_version: Mapped[int] = mapped_column(Integer)


class ArtifactDeletion(Base):
    """An artifact prefix whose record is already deleted (written in the record's delete
    transaction): removed right after the commit, or by the sweep at the next control-plane start."""

    __tablename__ = "artifact_deletions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    prefix: Mapped[str] = mapped_column(Text)
    what: Mapped[str] = mapped_column(String(255))  # e.g. "model mnist-cnn:3"
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# -- automation (issue 4): functions, workflows and their executions, triggers ------------------


class Function(Base):
    """A Lambda-like function: code in the artifact store, run in its own process per invocation."""

    __tablename__ = "functions"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    handler: Mapped[str] = mapped_column(String(255))  # "module.function" inside the code
    code_key: Mapped[str] = mapped_column(Text)  # artifact key of the uploaded file or zip
    code_sha256: Mapped[str] = mapped_column(String(64))
    timeout_s: Mapped[float] = mapped_column(Float)
    memory_mb: Mapped[int] = mapped_column(Integer)
    environment: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    # the execution role (migration 0009): what each invocation's short-lived token may do
    permissions: Mapped[list[Any]] = mapped_column(JSON, default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class FunctionInvocation(Base):
    """One run of a function: queued → running → succeeded | failed, with its result, error and logs."""

    __tablename__ = "function_invocations"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    function: Mapped[str] = mapped_column(String(63), index=True)  # no FK: history outlives the function
    status: Mapped[str] = mapped_column(String(16), index=True)
    source: Mapped[str | None] = mapped_column(String(160), nullable=True)  # cli | trigger:NAME | execution:ID
    event: Mapped[Any] = mapped_column(JSON, nullable=True)
    result: Mapped[Any] = mapped_column(JSON, nullable=True)
    error_type: Mapped[str | None] = mapped_column(String(160), nullable=True)
    error_message: Mapped[str | None] = mapped_column(Text, nullable=True)
    logs: Mapped[str | None] = mapped_column(Text, nullable=True)
    duration_ms: Mapped[float | None] = mapped_column(Float, nullable=True)
    max_memory_mb: Mapped[float | None] = mapped_column(Float, nullable=True)
    worker_host: Mapped[str | None] = mapped_column(String(255), nullable=True)
    worker_pid: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(nullable=True)
    # retries of async invocations cut off by a control-plane crash: the attempt (1, 2, 3) and,
    # while queued for a retry, the time before which it does not start (the backoff)
    attempt: Mapped[int] = mapped_column(Integer, default=1, server_default="1")
    not_before: Mapped[datetime | None] = mapped_column(nullable=True)


class Workflow(Base):
    """A state machine in Amazon States Language (validated when written)."""

    __tablename__ = "workflows"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)
    source: Mapped[str | None] = mapped_column(Text, nullable=True)  # the text as written (JSON or YAML)
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class WorkflowExecution(Base):
    """One execution: the engine's whole state (``state``) and the work it is waiting on
    (``pending``: tasks started and timers due), written in one transaction after every event."""

    __tablename__ = "executions"
    id: Mapped[str] = mapped_column(String(96), primary_key=True)
    workflow: Mapped[str] = mapped_column(String(63), index=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # PENDING | RUNNING | SUCCEEDED | FAILED | TIMED_OUT | ABORTED
    definition: Mapped[dict[str, Any]] = mapped_column(JSON)  # snapshot: editing the workflow never changes a run
    input: Mapped[Any] = mapped_column(JSON, nullable=True)
    output: Mapped[Any] = mapped_column(JSON, nullable=True)
    error: Mapped[str | None] = mapped_column(String(160), nullable=True)
    cause: Mapped[str | None] = mapped_column(Text, nullable=True)
    state: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    pending: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    next_due: Mapped[datetime | None] = mapped_column(nullable=True, index=True)
    revision: Mapped[int] = mapped_column(Integer, default=0)  # optimistic lock: one writer per event
    stop_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    source: Mapped[str | None] = mapped_column(String(160), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(nullable=True)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class ExecutionEvent(Base):
    """The execution history, event by event (like Step Functions' GetExecutionHistory)."""

    __tablename__ = "execution_events"
    __table_args__ = (UniqueConstraint("execution_id", "seq", name="uq_execution_event_seq"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    execution_id: Mapped[str] = mapped_column(ForeignKey("executions.id", ondelete="CASCADE"), index=True)
    seq: Mapped[int] = mapped_column(Integer)
    type: Mapped[str] = mapped_column(String(64))
    state: Mapped[str | None] = mapped_column(String(128), nullable=True)
    details: Mapped[Any] = mapped_column(JSON, nullable=True)
    at: Mapped[datetime] = mapped_column(default=utcnow)


class Trigger(Base):
    """What starts a function or a workflow: new objects, a cron schedule, a webhook, an alert."""

    __tablename__ = "triggers"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # objects | cron | webhook | alert
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    target_kind: Mapped[str] = mapped_column(String(16))  # function | workflow
    target: Mapped[str] = mapped_column(String(63))
    status: Mapped[str] = mapped_column(String(16))  # active | paused
    secret_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    # webhooks created since 0005: the secret itself, for X-Hub-Signature-256 (an HMAC needs it,
    # as GitHub keeps it); older hooks have only the hash and accept the Bearer secret alone
    hook_secret: Mapped[str | None] = mapped_column(Text, nullable=True)
    cursor: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class TriggerObject(Base):
    """Objects an object trigger has seen (its persisted cursor): a key fires again only when
    its etag changes (an overwrite), never twice for the same content."""

    __tablename__ = "trigger_objects"
    trigger: Mapped[str] = mapped_column(ForeignKey("triggers.name", ondelete="CASCADE"), primary_key=True)
    key: Mapped[str] = mapped_column(String(1024), primary_key=True)
    etag: Mapped[str] = mapped_column(String(160))
    seen_at: Mapped[datetime] = mapped_column(default=utcnow)


class TriggerFiring(Base):
    """Every firing and what it started; ``dedupe_key`` makes a firing happen at most once."""

    __tablename__ = "trigger_firings"
    __table_args__ = (UniqueConstraint("trigger", "dedupe_key", name="uq_trigger_firing_dedupe"),)
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    trigger: Mapped[str] = mapped_column(ForeignKey("triggers.name", ondelete="CASCADE"), index=True)
    dedupe_key: Mapped[str | None] = mapped_column(String(1200), nullable=True)
    event: Mapped[Any] = mapped_column(JSON, nullable=True)
    target_kind: Mapped[str] = mapped_column(String(16))
    target: Mapped[str] = mapped_column(String(63))
    started_id: Mapped[str | None] = mapped_column(String(96), nullable=True)  # invocation or execution id
    status: Mapped[str] = mapped_column(String(16))  # started | failed | skipped
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)



# -- monitoring (issue 5): model monitors, their runs, ground-truth labels, alerts ------------------


class Monitor(Base):
    """A model monitor on an endpoint (variant): drift against the baseline, quality against labels."""

    __tablename__ = "monitors"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(63), index=True)
    variant: Mapped[str | None] = mapped_column(String(63), nullable=True)  # None: the first variant
    schedule: Mapped[str | None] = mapped_column(String(120), nullable=True)  # cron expression
    tz: Mapped[str] = mapped_column(String(64), default="UTC")
    window_s: Mapped[int] = mapped_column(Integer)
    min_samples: Mapped[int] = mapped_column(Integer)
    thresholds: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    webhooks: Mapped[list[Any]] = mapped_column(JSON, default=list)
    status: Mapped[str] = mapped_column(String(16))  # active | paused
    cursor: Mapped[datetime | None] = mapped_column(nullable=True)  # newest inference time read
    next_run_at: Mapped[datetime | None] = mapped_column(nullable=True, index=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)


class MonitorRun(Base):
    """One run of a monitor (a job of kind "monitor"): the window read, what it found, its report."""

    __tablename__ = "monitor_runs"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    monitor: Mapped[str] = mapped_column(String(63), index=True)
    job_id: Mapped[str | None] = mapped_column(String(32), nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # queued | running | succeeded | failed | insufficient
    source: Mapped[str | None] = mapped_column(String(64), nullable=True)  # manual | schedule
    since: Mapped[datetime | None] = mapped_column(nullable=True)
    until: Mapped[datetime | None] = mapped_column(nullable=True)
    rows: Mapped[int | None] = mapped_column(Integer, nullable=True)
    malformed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    violations: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    summary: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    report_key: Mapped[str | None] = mapped_column(Text, nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    started_at: Mapped[datetime | None] = mapped_column(nullable=True)
    ended_at: Mapped[datetime | None] = mapped_column(nullable=True)


class MonitorLabel(Base):
    """Ground truth for one captured inference (a re-upload replaces the label)."""

    __tablename__ = "monitor_labels"
    monitor: Mapped[str] = mapped_column(String(63), primary_key=True)
    inference_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    label: Mapped[str] = mapped_column(String(255))
    uploaded_at: Mapped[datetime] = mapped_column(default=utcnow)


class Alert(Base):
    """A violation seen by a monitor: open while it lasts (one open alert per monitor and key, held
    by the unique ``open_key``: the key while open, NULL once resolved), resolved when it recovers."""

    __tablename__ = "alerts"
    __table_args__ = (UniqueConstraint("monitor", "open_key", name="uq_alert_open_key"),)
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    monitor: Mapped[str] = mapped_column(String(63), index=True)
    key: Mapped[str] = mapped_column(String(255))  # feature or metric name
    open_key: Mapped[str | None] = mapped_column(String(255), nullable=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # open | resolved
    severity: Mapped[str] = mapped_column(String(16))
    statistic: Mapped[dict[str, Any]] = mapped_column(JSON)
    message: Mapped[str] = mapped_column(Text)
    count: Mapped[int] = mapped_column(Integer, default=1)
    run_id: Mapped[str | None] = mapped_column(String(32), nullable=True)  # the last run that saw it
    notifications: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    first_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_at: Mapped[datetime] = mapped_column(default=utcnow)
    resolved_at: Mapped[datetime | None] = mapped_column(nullable=True)
    acked_at: Mapped[datetime | None] = mapped_column(nullable=True)  # acknowledged: still open, shown as acked
    acked_by: Mapped[str | None] = mapped_column(String(128), nullable=True)
    resolved_by: Mapped[str | None] = mapped_column(String(128), nullable=True)  # None: recovered on its own



class TuningJob(Base):
    """A hyperparameter search: its spec (space, objective, strategy, budget) and outcome. The search
    state is this row and its trials: the Optuna study is rebuilt from them in memory (tuning/study.py)."""

    __tablename__ = "tuning_jobs"
    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    status: Mapped[str] = mapped_column(String(16), index=True)  # core.jobstatus.TUNING_STATUSES
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    reason: Mapped[str | None] = mapped_column(Text, nullable=True)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    stop_requested: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    ended_at: Mapped[datetime | None] = mapped_column(nullable=True)


class TuningTrial(Base):
    """One trial = one training job (``job_id``) with its sampled ``params``; ``intermediate``
    holds the objective per epoch as told to the pruner, ``system_attrs`` the sampler's and pruner's
    bookkeeping (grid cell, completed rungs), so a rebuilt study decides as the lost one would."""

    __tablename__ = "tuning_trials"
    __table_args__ = (UniqueConstraint("tuning_name", "number", name="uq_tuning_trial_number"),)
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    tuning_name: Mapped[str] = mapped_column(ForeignKey("tuning_jobs.name", ondelete="CASCADE"), index=True)
    number: Mapped[int] = mapped_column(Integer)  # 1, 2, ... in the order they were asked
    job_id: Mapped[str] = mapped_column(String(32))
    params: Mapped[dict[str, Any]] = mapped_column(JSON)
    state: Mapped[str] = mapped_column(String(16))  # core.jobstatus.TRIAL_STATES
    value: Mapped[float | None] = mapped_column(Float, nullable=True)
    intermediate: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # {"epoch": value}
    system_attrs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    ended_at: Mapped[datetime | None] = mapped_column(nullable=True)

class User(Base):
    """A person (or a service) that holds tokens; ``role`` is one of identity.permissions.ROLES."""

    __tablename__ = "users"
    name: Mapped[str] = mapped_column(String(63), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    created_by: Mapped[str | None] = mapped_column(String(160), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiToken(Base):
    """An API token: ``lml_<id>_<secret>``, only sha256(secret) kept. A user's token (``user``
    set) or a function invocation's (``user`` None, ``subject`` = function:NAME/ID). ``role`` and
    ``scopes`` narrow what it may do; neither: its user's role."""

    __tablename__ = "api_tokens"
    id: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str | None] = mapped_column(String(128), nullable=True)
    user: Mapped[str | None] = mapped_column(ForeignKey("users.name", ondelete="CASCADE"), nullable=True, index=True)
    subject: Mapped[str | None] = mapped_column(String(160), nullable=True)
    role: Mapped[str | None] = mapped_column(String(16), nullable=True)
    scopes: Mapped[list[Any]] = mapped_column(JSON, default=list)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str | None] = mapped_column(String(160), nullable=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(nullable=True, index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(nullable=True)


class AuditEvent(Base):
    """One mutating call: who (and with which token), what, on what, how it ended. Never a secret."""

    __tablename__ = "audit_events"
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    at: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    actor: Mapped[str] = mapped_column(String(160), index=True)
    token_id: Mapped[str | None] = mapped_column(String(16), nullable=True)
    action: Mapped[str] = mapped_column(String(160))
    object: Mapped[str | None] = mapped_column(Text, nullable=True)
    status: Mapped[int | None] = mapped_column(Integer, nullable=True)
    outcome: Mapped[str] = mapped_column(String(16))  # ok | denied | failed
    request_id: Mapped[str | None] = mapped_column(String(64), nullable=True)


class Lease(Base):
    """A named lease (``control``: which control plane leads). ``epoch`` only grows: every new
    holder gets the next one, and a write fenced on an older epoch is refused (store/leases_repo.py).
    ``expires_at`` is seconds since 1970 by the DATABASE's clock, so servers' clocks never compare."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(200))
    epoch: Mapped[int] = mapped_column(BigInteger)
    expires_at: Mapped[float] = mapped_column(Float)
    acquired_at: Mapped[float] = mapped_column(Float)


class ServingNode(Base):
    """A data-plane process that serves endpoints: the control plane's embedded one, a standalone
    ``loopml serve`` node, or a placed replica (``endpoint`` names its replica set). It reports
    itself (store/nodes_repo.py); ``started_at``/``heartbeat_at`` are seconds since 1970 by the
    DATABASE's clock (as leases), so a node's age never depends on the reader's clock."""

    __tablename__ = "serving_nodes"
    id: Mapped[str] = mapped_column(String(200), primary_key=True)  # host-pid-shortuuid
    address: Mapped[str] = mapped_column(String(500))  # http://host:port
    kind: Mapped[str] = mapped_column(String(16))  # embedded | node | replica
    endpoint: Mapped[str | None] = mapped_column(String(128), nullable=True)
    state: Mapped[str] = mapped_column(String(16))  # starting | ready | draining | gone
    started_at: Mapped[float] = mapped_column(Float)
    heartbeat_at: Mapped[float] = mapped_column(Float, index=True)
    endpoints_loaded: Mapped[list[Any]] = mapped_column(JSON)
    load: Mapped[dict[str, Any]] = mapped_column(JSON)
    version: Mapped[str] = mapped_column(String(64))


__all__ = ["Base", "Dataset", "DatasetVersion", "Job", "JobEvent", "JobMetric", "JobLog",
           "Model", "ModelVersion", "ModelAlias", "AliasEvent", "ArtifactDeletion", "Endpoint", "Function", "FunctionInvocation",
           "Workflow", "WorkflowExecution", "ExecutionEvent", "Trigger", "TriggerObject", "TriggerFiring",
           "Monitor", "MonitorRun", "MonitorLabel", "Alert", "TuningJob", "TuningTrial", "User", "ApiToken", "AuditEvent", "Lease", "ServingNode", "Float"]
