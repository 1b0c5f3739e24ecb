"""LoopML actions: what a Task state's ``Resource`` runs.

Each action starts its work and returns a *handle* (JSON, persisted in the execution's
``pending`` before anything else happens), then is polled every control-loop tick until it
reports an :class:`Outcome`. Nothing here waits: jobs run in worker processes, functions in the
function dispatcher, endpoints in the serving process.

Starting is idempotent: the child's id (job id, invocation id) is derived from the execution and
the task token (``TaskContext.child_id``), so a runner that restarts between starting a child and
recording its handle finds the child again instead of starting it twice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Callable

from loopml.core.errors import Conflict, InvalidInput, LoopMLError, NotFound
from loopml.core.jobstatus import SUCCEEDED, TERMINAL, TUNING_SUCCEEDED, TUNING_TERMINAL
from loopml.core.timeutil import iso, parse_iso
from loopml.platform import Platform
from loopml.registry.aliases import set_alias
from loopml.registry.refs import parse_model_ref
from loopml.registry.registration import register_trained
from loopml.registry.resolve import lookup

FUNCTION_PREFIX = "loopml:function:"
TASK_FAILED = "States.TaskFailed"
TIMEOUT = "States.Timeout"


@dataclass
class TaskContext:
    platform: Platform
    execution_id: str
    token: str
    state: str
    now: datetime
    start_function: Callable[[str], Any] | None = None  # the dispatcher's run_now: no wait for its tick

    def child_id(self, prefix: str = "job-", length: int = 10) -> str:
        digest = hashlib.sha1(f"{self.execution_id}/{self.token}".encode()).hexdigest()
        return prefix + digest[:length]


@dataclass
class Outcome:
    """A finished task: ``output`` when ``error`` is None, else the error and its cause."""

    output: Any = None
    error: str | None = None
    cause: str = ""

    @property
    def ok(self) -> bool:
        return self.error is None


class TaskError(Exception):
    """An action refusing its input or failing: becomes the task's failure (error, cause)."""

    def __init__(self, cause: str, error: str = TASK_FAILED) -> None:
        super().__init__(cause)
        self.error, self.cause = error, cause


@dataclass
class Action:
    """``start(ctx, params) -> handle``; ``poll(ctx, handle) -> Outcome | None``; ``cancel``."""

    start: Callable[[TaskContext, dict[str, Any]], dict[str, Any]]
    poll: Callable[[TaskContext, dict[str, Any]], Outcome | None] = field(
        default=lambda ctx, handle: Outcome(handle.get("output")))
    cancel: Callable[[TaskContext, dict[str, Any]], None] = field(default=lambda ctx, handle: None)
    # what a caller needs to do this directly: a workflow's maker must hold it (its Tasks later run
    # with the control plane's rights, whoever starts them)
    permission: str = field(default="", kw_only=True)


# -- helpers ---------------------------------------------------------------------------------------


def _params(params: Any, resource: str) -> dict[str, Any]:
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise TaskError(f"{resource}: the task input must be an object (use Parameters), got "
                        f"{type(params).__name__}")
    return params


def _required(params: dict[str, Any], key: str, resource: str) -> Any:
    if params.get(key) in (None, ""):
        raise TaskError(f"{resource}: Parameters.{key} is required")
    return params[key]


# -- jobs (train, evaluate, predict, labelled-data) ---------------------------------------------------


def _existing_job(ctx: TaskContext, job_id: str) -> dict[str, Any] | None:
    try:
        return ctx.platform.jobs.get(job_id)
    except NotFound:
        return None


def _job_action(submit: Callable[[TaskContext, dict[str, Any], str], dict[str, Any]], resource: str,
                permission: str) -> Action:
    def start(ctx: TaskContext, params: dict[str, Any]) -> dict[str, Any]:
        job_id = ctx.child_id("job-")
        if _existing_job(ctx, job_id) is None:  # after a restart: the job is already there
            job_id = submit(ctx, _params(params, resource), job_id)["id"]
        return {"job_id": job_id}

    def poll(ctx: TaskContext, handle: dict[str, Any]) -> Outcome | None:
        job = ctx.platform.jobs.get(handle["job_id"])
        if job["status"] == SUCCEEDED:
            result = job["result"] if isinstance(job["result"], dict) else {"result": job["result"]}
            return Outcome({**result, "job_id": job["id"]})
        if job["status"] in TERMINAL:  # failed or cancelled
            typed = job["result"] if isinstance(job["result"], dict) and job["result"].get("error") else None
            if typed:  # the runner named an ASL error (e.g. Monitor.NotEnoughLabels) for a Retry/Catch
                return Outcome(error=str(typed["error"]), cause=str(typed.get("cause") or ""))
            return Outcome(error=TASK_FAILED, cause=f"job {job['id']} {job['status']}: {job['reason'] or 'no reason'}")
        return None

    def cancel(ctx: TaskContext, handle: dict[str, Any]) -> None:
        try:
            ctx.platform.jobs.request_cancel(handle["job_id"])
        except LoopMLError:
            pass  # already ended or gone

    return Action(start, poll, cancel, permission=permission)


def _submit_train(ctx: TaskContext, p: dict[str, Any], job_id: str) -> dict[str, Any]:
    from loopml.training.service import submit_training

    return submit_training(ctx.platform, dataset=_required(p, "dataset", "loopml:train"), model=p.get("model"),
                           params=p.get("params"), register_as=p.get("register_as"),
                           time_limit_s=p.get("time_limit_s"), register=p.get("register", True), job_id=job_id,
                           resources=p.get("resources"))


def _submit_evaluate(ctx: TaskContext, p: dict[str, Any], job_id: str) -> dict[str, Any]:
    from loopml.training.service import submit_evaluation

    models = _required(p, "models", "loopml:evaluate")
    if not isinstance(models, dict):
        raise TaskError("loopml:evaluate: Parameters.models must be an object {label: model ref}")
    return submit_evaluation(ctx.platform, models=models, dataset=_required(p, "dataset", "loopml:evaluate"),
                             split=p.get("split", "test"), metric=p.get("metric", "accuracy"),
                             min_improvement=p.get("min_improvement"), job_id=job_id,
                             resources=p.get("resources"))


def _submit_predict(ctx: TaskContext, p: dict[str, Any], job_id: str) -> dict[str, Any]:
    from loopml.training.service import submit_prediction

    return submit_prediction(ctx.platform, model=_required(p, "model", "loopml:predict"),
                             input=_required(p, "input", "loopml:predict"), limit=p.get("limit"), job_id=job_id,
                             resources=p.get("resources"))


# -- registry (in-process, quick, idempotent) --------------------------------------------------------


def _register(ctx: TaskContext, params: dict[str, Any]) -> dict[str, Any]:
    p = _params(params, "loopml:register")
    return {"output": register_trained(ctx.platform, str(_required(p, "job", "loopml:register")), name=p.get("name"))}


def _set_alias(ctx: TaskContext, params: dict[str, Any]) -> dict[str, Any]:
    """``model`` is NAME (with ``version``) or NAME:VERSION; the registry's alias rules apply."""
    p = _params(params, "loopml:set-alias")
    model, alias = str(_required(p, "model", "loopml:set-alias")), _required(p, "alias", "loopml:set-alias")
    try:
        ref = parse_model_ref(model)
    except InvalidInput as exc:
        raise TaskError(f"loopml:set-alias: {exc.message}") from None
    if ref.name is None or ref.alias is not None or (ref.version is not None and p.get("version") is not None):
        raise TaskError(f"loopml:set-alias: model {model!r}: give NAME with Parameters.version, or NAME:VERSION")
    version = ref.version if p.get("version") is None else p["version"]
    if version is None:
        raise TaskError("loopml:set-alias: Parameters.version is required")
    try:
        number = int(version)
    except (TypeError, ValueError):
        raise TaskError(f"loopml:set-alias: version {version!r} is not a number") from None
    actor = f"workflow:{ctx.execution_id}"
    record = set_alias(ctx.platform, ref.name, str(alias), number, actor=actor)
    # the audit log names the execution, as if it had called PUT /models/{name}/aliases/{alias}
    ctx.platform.audit.record(actor=actor, action="PUT /models/{name}/aliases/{alias}",
                              object=f"/models/{ref.name}/aliases/{alias}", status=200)
    return {"output": record}


def _submit_labelled_data(ctx: TaskContext, p: dict[str, Any], job_id: str) -> dict[str, Any]:
    """A model monitor's labelled captured requests as a new version of a dataset, in a job (it
    reads the capture window); too few labels fail the task with ``Monitor.NotEnoughLabels``
    (a Retry on it waits for labels to arrive). Idempotent: same rows → same version."""
    from loopml.monitoring.labelled_data_job import submit

    extend = p.get("extend", True)
    if not isinstance(extend, bool):
        raise TaskError(f"loopml:labelled-data: extend must be true or false, got {extend!r}")
    return submit(ctx.platform, monitor=str(_required(p, "monitor", "loopml:labelled-data")),
                  dataset=str(_required(p, "dataset", "loopml:labelled-data")), extend=extend,
                  min_labels=p.get("min_labels", 100), job_id=job_id)


# -- deploy (an endpoint; waits until it serves) ------------------------------------------------------


def _deploy_start(ctx: TaskContext, params: dict[str, Any]) -> dict[str, Any]:
    from loopml.serving import service as endpoints_service

    p = _params(params, "loopml:deploy")
    name = str(_required(p, "endpoint", "loopml:deploy"))
    model = p.get("model")
    if model:
        try:
            ctx.platform.endpoints.get(name)
            record = endpoints_service.update_endpoint(ctx.platform, name, {"model": model})
        except NotFound:
            record = endpoints_service.create_endpoint(ctx.platform, name, {"model": model})
    else:
        record = ctx.platform.endpoints.get(name)
    deadline = ctx.now + timedelta(seconds=float(p.get("timeout_s", 600)))
    return {"endpoint": name, "generation": record["generation"], "wait": bool(p.get("wait", True)),
            "deadline": iso(deadline), "expect": _expected_versions(ctx, record)}


def _versions(resolved: dict[str, Any] | None) -> dict[str, int]:
    return {v["name"]: v["version"] for v in (resolved or {}).get("variants") or []}


def _expected_versions(ctx: TaskContext, record: dict[str, Any]) -> dict[str, int]:
    """What the endpoint must serve before the task is done: its spec resolved NOW. Right after a
    set-alias the record still shows the old versions (the control plane re-resolves aliases at
    its next tick), so "ready" alone would end the rollout before it started."""
    from loopml.serving.spec import resolve_spec

    try:
        return _versions(resolve_spec(record["spec"], partial(lookup, ctx.platform)))
    except LoopMLError:
        return _versions(record.get("resolved"))


def _deploy_output(record: dict[str, Any]) -> dict[str, Any]:
    variants = (record.get("resolved") or {}).get("variants") or []
    return {"endpoint": record["name"], "generation": record["generation"], "served": record.get("served"),
            "versions": [f"{v.get('model')}:{v.get('version')}" for v in variants]}


def _deploy_poll(ctx: TaskContext, handle: dict[str, Any]) -> Outcome | None:
    record = ctx.platform.endpoints.get(handle["endpoint"])
    if not handle.get("wait", True):
        return Outcome(_deploy_output(record))
    if record["generation"] >= handle["generation"]:
        if record["ready"] and _versions(record.get("resolved")) == handle.get("expect", _versions(record.get("resolved"))):
            return Outcome(_deploy_output(record))
        if record["status"] == "Failed":
            return Outcome(error=TASK_FAILED, cause=f"endpoint {record['name']} failed: {record['message'] or ''}")
    if ctx.now >= parse_iso(handle["deadline"]):
        return Outcome(error=TIMEOUT, cause=f"endpoint {record['name']} did not serve its generation "
                                             f"{record['generation']} in time (status {record['status']})")
    return None


# -- functions ------------------------------------------------------------------------------------------


def _function_start(ctx: TaskContext, params: Any, name: str) -> dict[str, Any]:
    repo = ctx.platform.functions
    invocation_id = ctx.child_id("inv-", 16)  # deterministic: a restart finds it instead of queueing another
    try:
        repo.invocation(invocation_id)
    except NotFound:
        try:
            repo.enqueue(name, params, source=f"execution:{ctx.execution_id}", invocation_id=invocation_id)
        except NotFound:
            raise TaskError(f"function {name!r} not found") from None
        except Conflict:
            pass  # queued by an earlier attempt that crashed before saving its handle
        if ctx.start_function is not None:
            ctx.start_function(invocation_id)
    return {"invocation_id": invocation_id, "function": name}


def _function_poll(ctx: TaskContext, handle: dict[str, Any]) -> Outcome | None:
    inv = ctx.platform.functions.invocation(handle["invocation_id"])
    if inv["status"] == "succeeded":
        return Outcome(inv["result"])
    if inv["status"] == "failed":
        error = inv["error_type"] or "Function.Failed"
        return Outcome(error=TIMEOUT if error == "Function.Timeout" else error, cause=inv["error_message"] or "")
    return None


# -- tuning ------------------------------------------------------------------------------------------------

TUNE_KEYS = ("dataset", "space", "model", "objective", "strategy", "max_trials", "parallel", "early_stopping",
             "warm_start", "target", "register_as", "params", "seed", "resources")


def _tune_start(ctx: TaskContext, params: Any) -> dict[str, Any]:
    """A tuning job named after the execution and token (exactly once across restarts)."""
    from loopml.tuning.service import create_tuning

    p = _params(params, "loopml:tune")
    unknown = sorted(set(p) - set(TUNE_KEYS))
    if unknown:
        raise TaskError(f"loopml:tune: unknown Parameters {', '.join(unknown)} (known: {', '.join(TUNE_KEYS)})")
    _required(p, "dataset", "loopml:tune")
    _required(p, "space", "loopml:tune")
    name = ctx.child_id("tune-")
    try:
        ctx.platform.tuning.get(name)
    except NotFound:
        create_tuning(ctx.platform, name=name, **p)
    return {"tuning": name}


def _tune_poll(ctx: TaskContext, handle: dict[str, Any]) -> Outcome | None:
    record = ctx.platform.tuning.get(handle["tuning"])
    if record["status"] == TUNING_SUCCEEDED:
        return Outcome({**(record["result"] or {}), "tuning": record["name"]})
    if record["status"] in TUNING_TERMINAL:  # failed or stopped
        return Outcome(error=TASK_FAILED, cause=f"tuning job {record['name']} {record['status']}: "
                                                f"{record['reason'] or 'no reason'}")
    return None


def _tune_cancel(ctx: TaskContext, handle: dict[str, Any]) -> None:
    try:
        ctx.platform.tuning.request_stop(handle["tuning"])
    except LoopMLError:
        pass


# -- the table -------------------------------------------------------------------------------------------

ACTIONS: dict[str, Action] = {
    "loopml:train": _job_action(_submit_train, "loopml:train", "jobs:write"),
    "loopml:evaluate": _job_action(_submit_evaluate, "loopml:evaluate", "jobs:write"),
    "loopml:predict": _job_action(_submit_predict, "loopml:predict", "jobs:write"),
    "loopml:register": Action(_register, permission="models:write"),
    "loopml:set-alias": Action(_set_alias, permission="models:write"),
    "loopml:labelled-data": _job_action(_submit_labelled_data, "loopml:labelled-data", "datasets:write"),
    "loopml:deploy": Action(_deploy_start, _deploy_poll, permission="endpoints:write"),
    "loopml:tune": Action(_tune_start, _tune_poll, _tune_cancel, permission="tuning:write"),
}
RESOURCES = (*ACTIONS, FUNCTION_PREFIX + "NAME")


def action_for(resource: str) -> Action:
    """The action behind a Task's Resource (TaskError for one that is not a LoopML action)."""
    if resource in ACTIONS:
        return ACTIONS[resource]
    if resource.startswith(FUNCTION_PREFIX) and len(resource) > len(FUNCTION_PREFIX):
        name = resource[len(FUNCTION_PREFIX):]
        return Action(lambda ctx, params: _function_start(ctx, params, name), _function_poll,
                      permission=f"functions:{name}:invoke")
    raise TaskError(f"Resource {resource!r} is not a LoopML action")


def is_action(resource: Any) -> bool:
    return isinstance(resource, str) and (resource in ACTIONS or (
        resource.startswith(FUNCTION_PREFIX) and len(resource) > len(FUNCTION_PREFIX)))


def task_states(machine: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for name, body in (machine.get("States") or {}).items():
        if not isinstance(body, dict):
            continue
        if body.get("Type") == "Task":
            out.append((name, body))
        for branch in body.get("Branches") or []:
            out += task_states(branch)
        for key in ("ItemProcessor", "Iterator"):
            if isinstance(body.get(key), dict):
                out += task_states(body[key])
    return out


def task_permissions(definition: dict[str, Any]) -> list[tuple[str, str]]:
    """``(state, permission)`` for every Task: what its maker must hold (``Action.permission``;
    ``loopml:function:F`` needs functions:F:invoke)."""
    return [(name, action_for(body["Resource"]).permission) for name, body in task_states(definition)
            if is_action(body.get("Resource"))]


def check_resources(definition: dict[str, Any]) -> None:
    """Refuse a Task whose Resource is not a LoopML action, naming the state (InvalidInput)."""
    for name, body in task_states(definition):
        if not is_action(body.get("Resource")):
            raise InvalidInput(f"state {name}: Resource {body.get('Resource')!r} is not a LoopML action "
                               f"({', '.join(RESOURCES)})", state=name, field="Resource")
