"""The workflow runtime: repository (SQLite and PostgreSQL), the control plane's WorkflowRunner
driven by a fake clock (no test sleeps), and the LoopML actions against real stores.

Every tick a runner reloads the execution from the database, so each test's run goes through
save → reload → continue after every event; many tests also use a *new* runner per tick (a
control plane restart between any two ticks).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import pytest
from sqlalchemy import select, update

from loopml.controlplane.workflows import WorkflowRunner
from loopml.core.errors import Conflict, InvalidInput, NotFound
from loopml.store import tables as t
from loopml.store.workflows_repo import WorkflowRepo
from loopml.workflows import service

pytest_plugins = ("tests.backends",)

T0 = datetime(2026, 3, 1, 12, 0, 0, tzinfo=timezone.utc)


class FakeClock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def tick(platform, clock) -> Callable[[], None]:
    """One control-loop tick by a fresh runner (as after a restart)."""
    def run() -> None:
        WorkflowRunner(platform, clock=clock).tick()
    return run


def add_function(platform, name: str) -> None:
    with platform.meta.session() as s:
        s.add(t.Function(name=name, handler="main.handler", code_key=f"functions/{name}/code.zip",
                         code_sha256="0" * 64, timeout_s=30.0, memory_mb=256, environment={}))


def invocations(platform, function: str | None = None) -> list[t.FunctionInvocation]:
    with platform.meta.session() as s:
        q = select(t.FunctionInvocation).order_by(t.FunctionInvocation.created_at)
        if function:
            q = q.where(t.FunctionInvocation.function == function)
        return list(s.execute(q).scalars())


def finish_invocations(platform, handler: Callable[[Any], Any]) -> int:
    """Play the function dispatcher: run every queued invocation through ``handler`` (an exception
    → failed with its class name; a (type, message) tuple result → that failure)."""
    done = 0
    for inv in invocations(platform):
        if inv.status != "queued":
            continue
        try:
            result = handler(inv.event)
        except Exception as exc:  # noqa: BLE001
            values = {"status": "failed", "error_type": type(exc).__name__, "error_message": str(exc)}
        else:
            if isinstance(result, tuple):
                values = {"status": "failed", "error_type": result[0], "error_message": result[1]}
            else:
                values = {"status": "succeeded", "result": result}
        with platform.meta.session() as s:
            s.execute(update(t.FunctionInvocation).where(t.FunctionInvocation.id == inv.id).values(**values))
        done += 1
    return done


def run_workflow(platform, name: str, definition: dict, input: Any = None) -> str:
    service.create_workflow(platform, name, definition=definition)
    return service.start_execution(platform, name, input)["id"]


def status(platform, execution_id: str) -> dict[str, Any]:
    return platform.workflows.execution(execution_id)


def events(platform, execution_id: str, kind: str | None = None) -> list[dict[str, Any]]:
    history = platform.workflows.history(execution_id)
    seqs = [e["seq"] for e in history]
    assert seqs == list(range(1, len(seqs) + 1)), "history seq must increase by one, without gaps"
    return [e for e in history if kind is None or e["type"] == kind]


def fn_task(name: str, **extra: Any) -> dict[str, Any]:
    return {"Type": "Task", "Resource": f"loopml:function:{name}", **extra}


# -- repository contract (SQLite and PostgreSQL) ----------------------------------------------------


DEF = {"StartAt": "A", "States": {"A": {"Type": "Pass", "End": True}}}


def test_repo_contract(metadata_store) -> None:
    repo = WorkflowRepo(metadata_store)
    repo.create("wf", DEF, source="x", description="d")
    with pytest.raises(Conflict):
        repo.create("wf", DEF)
    replaced = repo.create("wf", {**DEF, "Comment": "v2"}, replace=True)
    assert replaced["definition"]["Comment"] == "v2" and replaced["description"] is None
    assert [w["name"] for w in repo.list()] == ["wf"]
    with pytest.raises(NotFound):
        repo.get("nope")
    with pytest.raises(NotFound):
        repo.start("nope", {})

    ex = repo.start("wf", {"a": 1}, name="run-1", source="test")
    assert ex["status"] == "PENDING" and ex["input"] == {"a": 1} and ex["revision"] == 0
    with pytest.raises(Conflict):
        repo.start("wf", {}, name="run-1")
    other = repo.start("wf", {})
    assert {e["id"] for e in repo.executions(workflow="wf")} == {"run-1", other["id"]}
    assert repo.executions(status="running") == []

    ev = [{"type": "ExecutionStarted", "state": None, "details": {"input": {"a": 1}}, "at": "2026-03-01T12:00:00Z"},
          {"type": "StateEntered", "state": "A", "details": None, "at": T0}]
    assert repo.save("run-1", revision=0, state={"s": 1}, pending={"tasks": {}, "timers": {}}, status="RUNNING",
                     next_due=T0, started_at=T0, events=ev)
    # a writer still at revision 0 lost the race: nothing of it is written
    assert not repo.save("run-1", revision=0, state={"s": 2}, pending=None, status="FAILED",
                         events=[{"type": "Lost", "at": T0}])
    assert repo.save("run-1", revision=1, state={"s": 3}, pending=None, status="SUCCEEDED", output={"ok": True},
                     ended_at=T0, events=[{"type": "ExecutionSucceeded", "at": T0}])
    loaded = repo.load("run-1")
    assert loaded["state"] == {"s": 3} and loaded["status"] == "SUCCEEDED" and loaded["revision"] == 2
    assert [(e["seq"], e["type"]) for e in repo.history("run-1")] == [
        (1, "ExecutionStarted"), (2, "StateEntered"), (3, "ExecutionSucceeded")]
    assert repo.history("run-1")[0]["details"] == {"input": {"a": 1}}

    with pytest.raises(Conflict):
        repo.request_stop("run-1")  # already ended
    assert repo.request_stop(other["id"])["stop_requested"] is True
    assert {a["id"] for a in repo.active()} == {other["id"]}

    repo.delete("wf")  # executions keep their snapshot
    assert repo.execution("run-1")["workflow"] == "wf"
    with pytest.raises(NotFound):
        repo.delete("wf")


# -- definitions ------------------------------------------------------------------------------------


def test_unknown_resource_is_refused_naming_state_and_field(platform) -> None:
    bad = {"StartAt": "Train", "States": {"Train": {"Type": "Task", "Resource": "loopml:trian", "End": True}}}
    with pytest.raises(InvalidInput) as err:
        service.create_workflow(platform, "bad", definition=bad)
    assert "state Train: Resource 'loopml:trian' is not a LoopML action (loopml:train" in err.value.message
    nested = {"StartAt": "P", "States": {"P": {"Type": "Parallel", "End": True, "Branches": [
        {"StartAt": "X", "States": {"X": {"Type": "Task", "Resource": "arn:aws:lambda:x", "End": True}}}]}}}
    with pytest.raises(InvalidInput, match="state X: Resource"):
        service.create_workflow(platform, "bad", definition=nested)
    with pytest.raises(InvalidInput, match='state "A"'):
        service.create_workflow(platform, "bad", source="StartAt: A\nStates:\n  A: {Type: Pass}\n")
    # a function that does not exist yet is fine at create
    service.create_workflow(platform, "later", source='{"StartAt": "F", "States": {"F": '
                            '{"Type": "Task", "Resource": "loopml:function:not-yet", "End": true}}}')
    assert platform.workflows.get("later")["definition"]["StartAt"] == "F"


# -- every state type, end to end through persistence ----------------------------------------------


def test_all_state_types_end_to_end(platform, clock, tick) -> None:
    add_function(platform, "double")
    definition = {
        "StartAt": "Init",
        "States": {
            "Init": {"Type": "Pass", "Parameters": {"n.$": "$.n", "items": [1, 2, 3]}, "Next": "Double"},
            "Double": {**fn_task("double"), "Parameters": {"x.$": "$.n"}, "ResultSelector": {"v.$": "$.y"},
                       "ResultPath": "$.doubled", "Next": "Pause"},
            "Pause": {"Type": "Wait", "Seconds": 30, "Next": "Branch"},
            "Branch": {"Type": "Choice", "Choices": [
                {"Variable": "$.doubled.v", "NumericGreaterThan": 5, "Next": "Fan"}], "Default": "Nope"},
            "Nope": {"Type": "Fail", "Error": "Small", "Cause": "too small"},
            "Fan": {"Type": "Parallel", "ResultPath": "$.parallel", "Next": "Each", "Branches": [
                {"StartAt": "B1", "States": {"B1": {"Type": "Pass", "Result": "one", "End": True}}},
                {"StartAt": "B2", "States": {"B2": {**fn_task("double"), "Parameters": {"x": 10}, "End": True}}}]},
            "Each": {"Type": "Map", "ItemsPath": "$.items", "MaxConcurrency": 2, "ResultPath": "$.mapped",
                     "ItemProcessor": {"StartAt": "M", "States": {
                         "M": {**fn_task("double"), "Parameters": {"x.$": "$"}, "End": True}}},
                     "Next": "Done"},
            "Done": {"Type": "Succeed", "OutputPath": "$"},
        },
    }
    ex_id = run_workflow(platform, "all", definition, {"n": 4})
    double = lambda event: {"y": event["x"] * 2}  # noqa: E731
    tick()
    assert status(platform, ex_id)["status"] == "RUNNING"
    assert status(platform, ex_id)["current_state"] == "Double"
    assert finish_invocations(platform, double) == 1
    tick()
    assert status(platform, ex_id)["current_state"] == "Pause"
    tick()
    assert status(platform, ex_id)["current_state"] == "Pause"  # the Wait holds, whatever the number of ticks
    clock.advance(30)
    for _ in range(10):
        tick()
        finish_invocations(platform, double)
        if status(platform, ex_id)["status"] != "RUNNING":
            break
    record = status(platform, ex_id)
    assert record["status"] == "SUCCEEDED", record
    out = record["output"]
    assert out["doubled"] == {"v": 8}
    assert out["parallel"] == ["one", {"y": 20}]
    assert out["mapped"] == [{"y": 2}, {"y": 4}, {"y": 6}]
    assert len(invocations(platform, "double")) == 5  # each task ran exactly once
    assert all(inv.source == f"execution:{ex_id}" for inv in invocations(platform))
    history = events(platform, ex_id)
    assert history[0]["type"] == "ExecutionStarted" and history[-1]["type"] == "ExecutionSucceeded"
    entered = [e["state"] for e in history if e["type"] == "StateEntered"]
    assert entered[:6] == ["Init", "Double", "Pause", "Branch", "Fan", "B1"]
    assert "WaitStarted" in {e["type"] for e in history}
    assert [e["type"] for e in history].count("ExecutionStarted") == 1
    assert [e["type"] for e in history].count("BranchSucceeded") == 5  # 2 branches + 3 iterations
    assert len([e for e in history if e["type"] == "TaskStarted"]) == 5
    wait_exit = next(e for e in history if e["type"] == "StateExited" and e["state"] == "Pause")
    assert wait_exit["at"].startswith("2026-03-01T12:00:30")


def test_fail_state_and_no_choice_matched(platform, tick) -> None:
    choice = {"StartAt": "C", "States": {"C": {"Type": "Choice", "Choices": [
        {"Variable": "$.x", "StringEquals": "yes", "Next": "Y"}]}, "Y": {"Type": "Succeed"}}}
    ex_id = run_workflow(platform, "choice", choice, {"x": "no"})
    tick()
    record = status(platform, ex_id)
    assert (record["status"], record["error"]) == ("FAILED", "States.NoChoiceMatched")
    assert '"C"' in record["cause"]
    assert events(platform, ex_id)[-1]["type"] == "ExecutionFailed"

    fail = {"StartAt": "F", "States": {"F": {"Type": "Fail", "Error": "Custom.Error", "Cause": "because"}}}
    ex_id = run_workflow(platform, "fail", fail)
    tick()
    assert (status(platform, ex_id)["error"], status(platform, ex_id)["cause"]) == ("Custom.Error", "because")


def test_input_the_engine_cannot_handle_fails_the_execution_instead_of_every_tick(platform, tick) -> None:
    # a Wait past year 9999 (OverflowError in the engine) and a task timeout past it (in the runner)
    # used to raise at every tick, leaving the execution PENDING / RUNNING forever
    wait = {"StartAt": "W", "States": {"W": {"Type": "Wait", "SecondsPath": "$.s", "End": True}}}
    ex_id = run_workflow(platform, "huge-wait", wait, {"s": 10**30})
    add_function(platform, "f")
    task = {"StartAt": "T", "States": {"T": fn_task("f", TimeoutSecondsPath="$.s", End=True)}}
    ex_task = run_workflow(platform, "huge-timeout", task, {"s": 10**15})
    tick()
    for execution_id in (ex_id, ex_task):
        record = status(platform, execution_id)
        assert (record["status"], record["error"]) == ("FAILED", "States.Runtime")
        assert "could not advance" in record["cause"]
        assert events(platform, execution_id)[-1]["type"] == "ExecutionFailed"
    assert invocations(platform, "f") == []  # nothing started for the failed task


# -- Retry, Catch and timeouts with the fake clock -------------------------------------------------


def test_retry_backoff_follows_the_clock(platform, clock, tick) -> None:
    add_function(platform, "flaky")
    definition = {"StartAt": "T", "States": {"T": {**fn_task("flaky"), "End": True, "Retry": [
        {"ErrorEquals": ["ValueError"], "IntervalSeconds": 2, "BackoffRate": 3, "MaxAttempts": 3}]}}}
    ex_id = run_workflow(platform, "retry", definition)
    calls = []

    def flaky(event: Any) -> Any:
        calls.append(clock.now)
        if len(calls) < 3:
            raise ValueError(f"attempt {len(calls)}")
        return {"ok": len(calls)}

    tick()
    finish_invocations(platform, flaky)
    tick()  # sees the failure: backoff 2 s
    assert status(platform, ex_id)["next_due"].startswith("2026-03-01T12:00:02")
    clock.advance(1.9)
    tick()
    assert len(invocations(platform)) == 1  # still backing off
    clock.advance(0.1)
    tick()
    assert len(invocations(platform)) == 2
    finish_invocations(platform, flaky)
    tick()  # second failure: backoff 2 * 3 = 6 s
    clock.advance(5.9)
    tick()
    assert len(invocations(platform)) == 2
    clock.advance(0.1)
    tick()
    finish_invocations(platform, flaky)
    tick()
    record = status(platform, ex_id)
    assert record["status"] == "SUCCEEDED" and record["output"] == {"ok": 3}
    assert [c - T0 for c in calls] == [timedelta(0), timedelta(seconds=2), timedelta(seconds=8)]
    retries = events(platform, ex_id, "RetryScheduled")
    assert [e["details"]["seconds"] for e in retries] == [2.0, 6.0]
    assert [e["details"]["error"] for e in retries] == ["ValueError", "ValueError"]


def test_catch_and_function_error_mapping(platform, tick) -> None:
    add_function(platform, "boom")
    definition = {"StartAt": "T", "States": {
        "T": {**fn_task("boom"), "Next": "Ok", "Catch": [
            {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Handled"}]},
        "Ok": {"Type": "Succeed"},
        "Handled": {"Type": "Pass", "End": True}}}
    ex_id = run_workflow(platform, "catch", definition, {"keep": 1})
    tick()
    finish_invocations(platform, lambda e: ("Function.MemoryExceeded", "used 300 MB of 256 MB"))
    tick()
    record = status(platform, ex_id)
    assert record["status"] == "SUCCEEDED"
    assert record["output"] == {"keep": 1, "error": {"Error": "Function.MemoryExceeded",
                                                     "Cause": "used 300 MB of 256 MB"}}
    assert events(platform, ex_id, "ErrorCaught")[0]["details"]["next"] == "Handled"

    # Function.Timeout is States.Timeout; an unknown function fails with States.TaskFailed
    timeout_def = {"StartAt": "T", "States": {"T": {**fn_task("boom"), "End": True}}}
    ex_id = run_workflow(platform, "fn-timeout", timeout_def)
    tick()
    finish_invocations(platform, lambda e: ("Function.Timeout", "ran 30 s"))
    tick()
    assert (status(platform, ex_id)["status"], status(platform, ex_id)["error"]) == ("FAILED", "States.Timeout")

    missing = {"StartAt": "T", "States": {"T": {**fn_task("ghost"), "End": True}}}
    ex_id = run_workflow(platform, "ghost", missing)
    tick()
    record = status(platform, ex_id)
    assert (record["status"], record["error"]) == ("FAILED", "States.TaskFailed")
    assert record["cause"] == "function 'ghost' not found"


def test_task_timeout_is_states_timeout(platform, clock, tick) -> None:
    add_function(platform, "slow")
    definition = {"StartAt": "T", "States": {"T": {**fn_task("slow"), "TimeoutSeconds": 10, "End": True}}}
    ex_id = run_workflow(platform, "slow", definition)
    tick()
    clock.advance(9)
    tick()
    assert status(platform, ex_id)["status"] == "RUNNING"
    clock.advance(1)
    tick()
    record = status(platform, ex_id)
    assert (record["status"], record["error"]) == ("FAILED", "States.Timeout")
    assert "within 10 seconds" in record["cause"]
    # the late result is ignored
    finish_invocations(platform, lambda e: {"late": True})
    tick()
    assert status(platform, ex_id)["status"] == "FAILED"


def test_execution_timeout_is_timed_out(platform, clock, tick) -> None:
    definition = {"StartAt": "W", "TimeoutSeconds": 60,
                  "States": {"W": {"Type": "Wait", "Seconds": 3600, "End": True}}}
    ex_id = run_workflow(platform, "exec-timeout", definition)
    tick()
    clock.advance(59)
    tick()
    assert status(platform, ex_id)["status"] == "RUNNING"
    clock.advance(1)
    tick()
    record = status(platform, ex_id)
    assert (record["status"], record["error"]) == ("TIMED_OUT", "States.Timeout")
    assert record["next_due"] is None


# -- jobs: restart without duplicating the dispatch, stop --------------------------------------------


@pytest.fixture
def fake_training(platform, monkeypatch):
    """The real submit_training (a real `digits` dataset: validated, then queued; no control loop
    runs the job, the test plays the worker), counting its calls."""
    from loopml.datasets.service import register
    from loopml.training import service as training

    register(platform, "digits", "sample:digits")
    submitted: list[dict[str, Any]] = []
    real = training.submit_training

    def submit_training(plat, **kwargs):
        submitted.append(kwargs)
        return real(plat, **kwargs)

    monkeypatch.setattr(training, "submit_training", submit_training)
    return submitted


TRAIN = {"StartAt": "Train", "States": {
    "Train": {"Type": "Task", "Resource": "loopml:train", "Next": "Cool",
              "Parameters": {"dataset.$": "$.dataset", "model": "cnn", "params": {"epochs": 1}}},
    "Cool": {"Type": "Wait", "Seconds": 10, "Next": "Done"},
    "Done": {"Type": "Pass", "End": True}}}


def test_restart_resumes_running_task_and_wait_without_duplicates(platform, clock, tick, fake_training,
                                                                  monkeypatch) -> None:
    ex_id = run_workflow(platform, "train", TRAIN, {"dataset": "digits"})
    # crash right after the job was started, before its handle was saved
    real_save = WorkflowRepo.save
    calls = {"n": 0}

    def crashing_save(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise RuntimeError("control plane killed")
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(WorkflowRepo, "save", crashing_save)
    tick()
    monkeypatch.setattr(WorkflowRepo, "save", real_save)
    assert len(platform.jobs.list()) == 1
    tick()  # a new runner: finds the same job by its derived id
    tick()
    jobs = platform.jobs.list()
    assert len(jobs) == 1 and len(fake_training) == 1  # re-attached, never submitted twice
    job_id = jobs[0]["id"]
    assert job_id.startswith("job-")
    assert len(events(platform, ex_id, "TaskScheduled")) == 1
    platform.jobs.transition(job_id, "running", expect=["queued"])
    platform.jobs.transition(job_id, "succeeded", expect=["running"],
                             result={"model_ref": "mnist-cnn:1", "dataset": "mnist:1", "metrics": {"acc": 0.9}})
    tick()
    assert status(platform, ex_id)["current_state"] == "Cool"
    clock.advance(10)
    tick()
    record = status(platform, ex_id)
    assert record["status"] == "SUCCEEDED"
    assert record["output"] == {"model_ref": "mnist-cnn:1", "dataset": "mnist:1", "metrics": {"acc": 0.9},
                                "job_id": job_id}
    assert len(platform.jobs.list()) == 1
    assert len(events(platform, ex_id, "ExecutionStarted")) == 1
    assert len(events(platform, ex_id, "WaitStarted")) == 1


def test_failed_job_is_task_failed_and_stop_aborts(platform, clock, tick, fake_training) -> None:
    ex_id = run_workflow(platform, "train", TRAIN, {"dataset": "digits"})
    tick()
    job_id = platform.jobs.list()[0]["id"]
    platform.jobs.transition(job_id, "failed", expect=["queued"], reason="out of memory")
    tick()
    record = status(platform, ex_id)
    assert (record["status"], record["error"]) == ("FAILED", "States.TaskFailed")
    assert "out of memory" in record["cause"]

    ex_id = service.start_execution(platform, "train", {"dataset": "digits"})["id"]
    tick()
    job_id = next(j["id"] for j in platform.jobs.list() if j["status"] == "queued")
    platform.workflows.request_stop(ex_id)
    tick()
    record = status(platform, ex_id)
    assert record["status"] == "ABORTED" and record["ended_at"]
    assert platform.jobs.get(job_id)["status"] == "cancelled"
    assert events(platform, ex_id)[-1]["type"] == "ExecutionAborted"
    with pytest.raises(Conflict):
        platform.workflows.request_stop(ex_id)

    pending = service.start_execution(platform, "train", {"dataset": "digits"})["id"]
    platform.workflows.request_stop(pending)
    tick()
    assert status(platform, pending)["status"] == "ABORTED"


# -- registry actions against the real registry ---------------------------------------------------


def add_model_version(platform, name: str, version: int) -> dict:
    return platform.models.add_version(
        name, version, job_id=None, dataset="tab:1", kind="tabular", template="mlp", hparams={"epochs": 1},
        metrics={"test_accuracy": 0.5}, lineage={}, runtimes=["keras"], artifact_prefix=f"models/{name}/v{version}")


def test_set_alias_action(platform, tick) -> None:
    add_model_version(platform, "tiny", 1)
    add_model_version(platform, "tiny", 2)
    definition = {"StartAt": "Promote", "States": {"Promote": {
        "Type": "Task", "Resource": "loopml:set-alias", "End": True,
        "Parameters": {"model": "tiny", "alias": "production", "version.$": "$.version"}}}}
    ex_id = run_workflow(platform, "promote", definition, {"version": "2"})
    tick()
    assert status(platform, ex_id)["status"] == "SUCCEEDED"
    assert platform.models.get("tiny", alias="production")["version"] == 2
    history = platform.models.alias_history("tiny")
    assert any(h.get("actor") == f"workflow:{ex_id}" for h in history)

    ex_id = service.start_execution(platform, "promote", {"version": 7})["id"]
    tick()
    record = status(platform, ex_id)
    assert (record["status"], record["error"]) == ("FAILED", "States.TaskFailed")
    assert "7" in record["cause"]


def test_register_action(platform, tick) -> None:
    definition = {"StartAt": "R", "States": {"R": {"Type": "Task", "Resource": "loopml:register",
                                                   "Parameters": {"job": "job-missing"}, "End": True}}}
    ex_id = run_workflow(platform, "register", definition)
    tick()
    record = status(platform, ex_id)
    assert (record["status"], record["error"]) == ("FAILED", "States.TaskFailed")
    assert "job-missing" in record["cause"]


@pytest.mark.parametrize("resource, params, error", [
    ("loopml:train", {"dataset": "nope", "model": "cnn", "register_as": "x", "time_limit_s": 5, "register": False},
     NotFound),
    ("loopml:evaluate", {"models": {"challenger": "job:job-x"}, "dataset": "nope", "split": "test",
                         "metric": "accuracy", "min_improvement": 0.01}, InvalidInput),
    ("loopml:predict", {"model": "nope:1", "input": "digits:test", "limit": 5}, NotFound),
])
def test_job_actions_call_the_services_with_their_real_keywords(platform, resource, params, error) -> None:
    """No signature guard between an action and its service: a keyword the service does not take
    is a TypeError here; a real refusal of the input is the service's own typed error."""
    from loopml.workflows.actions import TaskContext, action_for

    ctx = TaskContext(platform=platform, execution_id="ex-1", token="t-1", state="S",
                      now=datetime(2026, 1, 1, tzinfo=timezone.utc))
    with pytest.raises(error):
        action_for(resource).start(ctx, params)


def test_deploy_waits_until_the_endpoint_serves(platform, clock, tick) -> None:
    add_model_version(platform, "tiny", 1)
    definition = {"StartAt": "D", "States": {"D": {"Type": "Task", "Resource": "loopml:deploy", "End": True,
                                                   "Parameters": {"endpoint": "tiny-ep", "model": "tiny:1",
                                                                  "timeout_s": 60}}}}
    ex_id = run_workflow(platform, "deploy", definition)
    tick()
    endpoint = platform.endpoints.get("tiny-ep")
    assert status(platform, ex_id)["status"] == "RUNNING"
    platform.endpoints.report("tiny-ep", endpoint["generation"], ok=True, served={"variants": []})
    tick()
    record = status(platform, ex_id)
    assert record["status"] == "SUCCEEDED", record
    assert record["output"]["endpoint"] == "tiny-ep" and record["output"]["versions"] == ["tiny:1"]

    ex_id = service.start_execution(platform, "deploy", {})["id"]
    tick()  # updates the endpoint: a new generation that never loads
    clock.advance(61)
    tick()
    assert (status(platform, ex_id)["status"], status(platform, ex_id)["error"]) == ("FAILED", "States.Timeout")


def test_rollout_after_set_alias_waits_for_the_new_version(platform, tick) -> None:
    """Right after set-alias the endpoint record still shows the old version, ready: the rollout
    must wait until the endpoint serves the version the alias points at now."""
    from loopml.serving import service as endpoints_service

    add_model_version(platform, "tiny", 1)
    add_model_version(platform, "tiny", 2)
    platform.models.set_alias("tiny", "production", 1)
    endpoints_service.create_endpoint(platform, "tiny-ep", {"model": "tiny@production"})
    first = platform.endpoints.get("tiny-ep")
    platform.endpoints.report("tiny-ep", first["generation"], ok=True, served={"variants": []})
    definition = {"StartAt": "Promote", "States": {
        "Promote": {"Type": "Task", "Resource": "loopml:set-alias", "ResultPath": None, "Next": "Rollout",
                    "Parameters": {"model": "tiny", "alias": "production", "version": 2}},
        "Rollout": {"Type": "Task", "Resource": "loopml:deploy", "End": True,
                    "Parameters": {"endpoint": "tiny-ep", "timeout_s": 60}}}}
    ex_id = run_workflow(platform, "rollout", definition)
    tick()
    assert status(platform, ex_id)["status"] == "RUNNING"  # v1 is ready, but v2 is what it must serve
    # the control plane follows the alias (EndpointSupervisor), the serving process reports it
    from loopml.serving.spec import resolve_spec

    fresh = resolve_spec(first["spec"], lambda m, v, a: platform.models.get(m, version=v, alias=a))
    assert platform.endpoints.re_resolve("tiny-ep", first["generation"], fresh, "alias moved")
    tick()
    assert status(platform, ex_id)["status"] == "RUNNING"  # generation 2 not served yet
    platform.endpoints.report("tiny-ep", first["generation"] + 1, ok=True, served={"variants": []})
    tick()
    record = status(platform, ex_id)
    assert record["status"] == "SUCCEEDED", record
    assert record["output"]["versions"] == ["tiny:2"]


# -- scale -------------------------------------------------------------------------------------------


def test_long_pass_chain_keeps_state_small(platform, tick) -> None:
    states = {f"S{i}": {"Type": "Pass", "Next": f"S{i + 1}"} for i in range(1000)}
    states["S1000"] = {"Type": "Succeed"}
    ex_id = run_workflow(platform, "chain", {"StartAt": "S0", "States": states}, {"x": 1})
    tick()
    assert status(platform, ex_id)["status"] == "SUCCEEDED"
    assert len(events(platform, ex_id, "StateEntered")) == 1001
    assert platform.workflows.load(ex_id)["state"]["history"] == []  # the history lives in execution_events
