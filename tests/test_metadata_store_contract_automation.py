"""Functions, workflows and triggers repositories' contract, run unchanged on SQLite and PostgreSQL.

Triggers fire exactly once: the firing, what it starts (a queued invocation or a pending
execution) and the seen object are one transaction, and a dedupe key is used at most once,
also when two writers race for it.
"""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from loopml.core.errors import Conflict, InvalidInput, NotFound
from loopml.store import tables as t
from loopml.store.functions_repo import FAILED, QUEUED, RUNNING, SUCCEEDED, FunctionRepo
from loopml.store.triggers_repo import ACTIVE, PAUSED, SKIPPED, STARTED, Firing, TriggerRepo
from loopml.store.triggers_repo import FAILED as FIRING_FAILED
from loopml.store.workflows_repo import PENDING, WorkflowRepo
from loopml.store.workflows_repo import FAILED as EX_FAILED
from loopml.store.workflows_repo import RUNNING as EX_RUNNING
from loopml.store.workflows_repo import SUCCEEDED as EX_SUCCEEDED
from tests.store_support import ODD_JSON, assert_utc_iso, count

pytest_plugins = ("tests.backends",)


# -- functions -------------------------------------------------------------------------------

def _function(repo: FunctionRepo, name: str = "resize", **over) -> dict:
    fields = dict(handler="handler.main", code_key=f"functions/{name}/a.zip", code_sha256="a" * 64,
                  timeout_s=30, memory_mb=256, environment={"STAGE": "test", "ÜNÏ": "✓"}, description="d")
    fields.update(over)
    return repo.create(name, **fields)


def test_function_create_replace_and_conflict(metadata_store) -> None:
    repo = FunctionRepo(metadata_store)
    rec = _function(repo, "b-fn")
    assert (rec["timeout_s"], rec["memory_mb"], rec["environment"]) == (30.0, 256, {"STAGE": "test", "ÜNÏ": "✓"})
    assert assert_utc_iso(rec["created_at"]) == assert_utc_iso(rec["updated_at"])
    assert repo.get("b-fn") == rec
    _function(repo, "a-fn", environment=None)
    assert [f["name"] for f in repo.list()] == ["a-fn", "b-fn"] and repo.get("a-fn")["environment"] == {}
    with pytest.raises(Conflict, match="function 'b-fn' already exists"):
        _function(repo, "b-fn", handler="other.main")
    assert repo.get("b-fn")["handler"] == "handler.main"
    replaced = _function(repo, "b-fn", handler="other.main", code_sha256="b" * 64, replace=True)
    assert (replaced["handler"], replaced["code_sha256"], replaced["created_at"]) == (
        "other.main", "b" * 64, rec["created_at"])
    assert count(metadata_store, t.Function) == 2
    with pytest.raises(NotFound, match="function 'b-f' not found; did you mean 'b-fn'"):
        repo.get("b-f")


def test_function_update_patches_the_environment_all_or_nothing(metadata_store) -> None:
    repo = FunctionRepo(metadata_store)
    _function(repo)
    out = repo.update("resize", {"timeout_s": 5.0}, {"STAGE": None, "NEW": "1"})
    assert out["timeout_s"] == 5.0 and out["environment"] == {"ÜNÏ": "✓", "NEW": "1"}
    with pytest.raises(InvalidInput, match="environment variable MISSING is not set on function 'resize'"):
        repo.update("resize", {"memory_mb": 1024}, {"NEW": None, "MISSING": None})
    kept = repo.get("resize")  # the refused update changed nothing
    assert kept["memory_mb"] == 256 and kept["environment"] == {"ÜNÏ": "✓", "NEW": "1"}
    with pytest.raises(NotFound, match="function 'nope' not found"):
        repo.update("nope", {}, {})


def test_invocations_queue_order_and_compare_and_set(metadata_store) -> None:
    repo = FunctionRepo(metadata_store)
    _function(repo)
    _function(repo, "other")
    first = repo.enqueue("resize", {"key": "a.png", "odd": ODD_JSON}, source="api")
    assert (first["status"], first["source"], first["event"]) == (QUEUED, "api", {"key": "a.png", "odd": ODD_JSON})
    assert first["id"].startswith("inv-") and first["started_at"] is None and assert_utc_iso(first["created_at"])
    second = repo.enqueue("resize", [1, 2], source="trigger:t", invocation_id="inv-chosen")
    third = repo.enqueue("other", None, source=None)
    assert repo.ids_with_status(QUEUED) == [first["id"], "inv-chosen", third["id"]]  # oldest first
    assert [i["id"] for i in repo.invocations()] == [third["id"], "inv-chosen", first["id"]]  # newest first
    assert [i["id"] for i in repo.invocations("resize", limit=1)] == ["inv-chosen"]
    assert [i["id"] for i in repo.invocations("resize", limit=1, offset=1)] == [first["id"]]  # the next page
    assert [i["id"] for i in repo.invocations(limit=5, offset=2)] == [first["id"]]

    with pytest.raises(Conflict, match="invocation 'inv-chosen' already exists"):
        repo.enqueue("other", {}, source="api", invocation_id="inv-chosen")
    with pytest.raises(NotFound, match="function 'nope' not found"):
        repo.enqueue("nope", {}, source="api")
    assert count(metadata_store, t.FunctionInvocation) == 3
    assert repo.invocation("inv-chosen") == second

    # every status change is a compare-and-set: an invocation runs once and ends once
    assert repo.transition(first["id"], RUNNING, expect=[QUEUED], worker_host="h1") is True
    assert repo.transition(first["id"], RUNNING, expect=[QUEUED]) is False
    running = repo.invocation(first["id"])
    assert running["status"] == RUNNING and running["worker_host"] == "h1" and assert_utc_iso(running["started_at"])
    repo.set_fields(first["id"], worker_pid=4242)
    assert repo.invocation(first["id"])["status"] == RUNNING
    assert repo.transition(first["id"], SUCCEEDED, expect=[RUNNING], result={"out": ODD_JSON},
                           logs="line 1\n", duration_ms=12.5) is True
    assert repo.transition(first["id"], FAILED, expect=[RUNNING], error_type="X") is False
    done = repo.invocation(first["id"])
    assert (done["status"], done["result"], done["worker_pid"], done["error_type"]) == (
        SUCCEEDED, {"out": ODD_JSON}, 4242, None)
    assert assert_utc_iso(done["ended_at"]) >= assert_utc_iso(done["started_at"])
    assert [i["id"] for i in repo.invocations(status=SUCCEEDED)] == [first["id"]]
    with pytest.raises(NotFound, match="invocation 'inv-nope' not found"):
        repo.invocation("inv-nope")


def test_orphaned_running_invocations_are_failed_once(metadata_store) -> None:
    """What the dispatcher does after a restart: every invocation still 'running' is failed,
    and one that finished meanwhile keeps its outcome."""
    repo = FunctionRepo(metadata_store)
    _function(repo)
    orphan, finished = repo.enqueue("resize", {}, source="api"), repo.enqueue("resize", {}, source="api")
    queued = repo.enqueue("resize", {}, source="api")
    for inv in (orphan, finished):
        repo.transition(inv["id"], RUNNING, expect=[QUEUED], worker_host="h1", worker_pid=1)
    assert repo.ids_with_status(RUNNING) == [orphan["id"], finished["id"]]
    repo.transition(finished["id"], SUCCEEDED, expect=[RUNNING])  # finished just before the sweep
    for inv_id in [orphan["id"], finished["id"]]:
        repo.transition(inv_id, FAILED, expect=[RUNNING], error_type="Interrupted",
                        error_message="control plane restarted during the invocation")
    assert repo.invocation(orphan["id"])["status"] == FAILED
    assert repo.invocation(orphan["id"])["error_message"] == "control plane restarted during the invocation"
    assert repo.invocation(finished["id"])["status"] == SUCCEEDED
    assert repo.invocation(queued["id"])["status"] == QUEUED and repo.ids_with_status(RUNNING) == []


def test_function_delete_keeps_history_until_forgotten(metadata_store) -> None:
    repo = FunctionRepo(metadata_store)
    _function(repo)
    done, waiting = repo.enqueue("resize", {}, source="api"), repo.enqueue("resize", {}, source="api")
    repo.transition(done["id"], FAILED, expect=[QUEUED], error_type="E")
    removed = repo.delete("resize")
    assert removed["name"] == "resize"
    with pytest.raises(NotFound):
        repo.get("resize")
    with pytest.raises(NotFound):
        repo.delete("resize")
    assert {i["id"] for i in repo.invocations("resize")} == {done["id"], waiting["id"]}
    assert repo.delete_invocations("resize") == 1  # only finished ones
    assert [i["id"] for i in repo.invocations("resize")] == [waiting["id"]]


# -- workflows -------------------------------------------------------------------------------

FLOW = {"StartAt": "Hello", "States": {"Hello": {"Type": "Pass", "Result": ODD_JSON, "End": True}}}
FLOW_2 = {"StartAt": "Bye", "States": {"Bye": {"Type": "Succeed"}}}


def test_workflow_create_replace_and_snapshots(metadata_store) -> None:
    repo = WorkflowRepo(metadata_store)
    rec = repo.create("b-flow", FLOW, source="StartAt: Hello\n", description="says hello")
    assert rec["definition"] == FLOW and rec["source"] == "StartAt: Hello\n" and assert_utc_iso(rec["created_at"])
    assert repo.get("b-flow") == rec
    repo.create("a-flow", FLOW_2)
    assert [w["name"] for w in repo.list()] == ["a-flow", "b-flow"]
    with pytest.raises(Conflict, match="workflow 'b-flow' already exists"):
        repo.create("b-flow", FLOW_2)
    assert repo.get("b-flow")["definition"] == FLOW

    ex = repo.start("b-flow", {"in": 1})
    replaced = repo.create("b-flow", FLOW_2, replace=True)
    assert replaced["definition"] == FLOW_2 and replaced["created_at"] == rec["created_at"]
    assert replaced["description"] is None
    assert repo.load(ex["id"])["definition"] == FLOW  # a started execution keeps its snapshot
    assert repo.load(repo.start("b-flow", None)["id"])["definition"] == FLOW_2
    with pytest.raises(NotFound, match="workflow 'b-flo' not found; did you mean 'b-flow'"):
        repo.get("b-flo")


def test_execution_start_names_and_listing(metadata_store) -> None:
    repo = WorkflowRepo(metadata_store)
    repo.create("flow", FLOW)
    repo.create("other", FLOW_2)
    ex = repo.start("flow", {"odd": ODD_JSON}, source="api")
    assert (ex["status"], ex["workflow"], ex["input"], ex["revision"], ex["source"]) == (
        PENDING, "flow", {"odd": ODD_JSON}, 0, "api")
    assert ex["id"].startswith("flow-") and ex["stop_requested"] is False and assert_utc_iso(ex["created_at"])
    named = repo.start("flow", None, name="nightly-1")
    with pytest.raises(Conflict, match="execution 'nightly-1' already exists"):
        repo.start("other", None, name="nightly-1")
    with pytest.raises(NotFound, match="workflow 'nope' not found"):
        repo.start("nope", None)
    assert count(metadata_store, t.WorkflowExecution) == 2
    third = repo.start("other", [1])
    assert [e["id"] for e in repo.executions()] == [third["id"], "nightly-1", ex["id"]]  # newest first
    assert [e["id"] for e in repo.executions("flow", limit=1)] == ["nightly-1"]
    # pages (the dashboard's): one after the other, no repeat, no gap
    assert [e["id"] for e in repo.executions(limit=2, offset=1)] == ["nightly-1", ex["id"]]
    assert [e["id"] for e in repo.executions("flow", limit=1, offset=1)] == [ex["id"]]
    assert repo.executions(offset=3) == []
    assert [e["id"] for e in repo.executions(status="pending")] == [third["id"], "nightly-1", ex["id"]]
    assert [a["id"] for a in repo.active()] == [ex["id"], "nightly-1", third["id"]]  # oldest first
    assert repo.execution("nightly-1") == named
    for call in (lambda: repo.execution("nope"), lambda: repo.history("nope"), lambda: repo.request_stop("nope")):
        with pytest.raises(NotFound, match="execution 'nope' not found"):
            call()


def test_save_is_optimistic_and_history_continues(metadata_store) -> None:
    repo = WorkflowRepo(metadata_store)
    repo.create("flow", FLOW)
    ex = repo.start("flow", {})
    t0 = datetime(2026, 11, 27, 10, 0, tzinfo=timezone.utc)
    due = t0 + timedelta(seconds=4)
    assert repo.save(ex["id"], revision=0, state={"current": "Hello", "data": ODD_JSON},
                     pending={"wait_until": "x"}, status=EX_RUNNING, next_due=due, started_at=t0,
                     events=[{"type": "ExecutionStarted", "at": t0},
                             {"type": "StateEntered", "state": "Hello", "details": {"input": ODD_JSON},
                              "at": "2026-11-27T10:00:01Z"}]) is True
    loaded = repo.load(ex["id"])
    assert (loaded["status"], loaded["revision"], loaded["current_state"]) == (EX_RUNNING, 1, "Hello")
    assert loaded["state"] == {"current": "Hello", "data": ODD_JSON} and loaded["pending"] == {"wait_until": "x"}
    assert (loaded["started_at"], loaded["next_due"]) == ("2026-11-27T10:00:00Z", "2026-11-27T10:00:04Z")
    active = repo.active()
    assert active[0]["next_due"].tzinfo is not None  # tz-aware on every backend
    assert active[0]["next_due"] == due and active[0]["pending"] == {"wait_until": "x"}

    # a writer still at revision 0 lost the race: nothing of it is written
    assert repo.save(ex["id"], revision=0, state=None, pending=None, status=EX_SUCCEEDED,
                     events=[{"type": "ExecutionSucceeded"}]) is False
    assert repo.load(ex["id"])["revision"] == 1 and len(repo.history(ex["id"])) == 2

    assert repo.save(ex["id"], revision=1, state={"current": "Hello"}, pending=None, status=EX_FAILED,
                     error="States.TaskFailed", cause="boom", ended_at=t0 + timedelta(seconds=5),
                     events=[{"type": "ExecutionFailed", "state": "Hello", "details": {"error": "x"}}]) is True
    history = repo.history(ex["id"])
    assert [(e["seq"], e["type"], e["state"]) for e in history] == [
        (1, "ExecutionStarted", None), (2, "StateEntered", "Hello"), (3, "ExecutionFailed", "Hello")]
    assert history[1]["details"] == {"input": ODD_JSON}
    assert (history[0]["at"], history[1]["at"]) == ("2026-11-27T10:00:00Z", "2026-11-27T10:00:01Z")
    assert_utc_iso(history[2]["at"])  # no time given: now
    failed = repo.execution(ex["id"])
    assert (failed["failed_state"], failed["current_state"], failed["error"], failed["cause"]) == (
        "Hello", None, "States.TaskFailed", "boom")
    assert failed["ended_at"] == "2026-11-27T10:00:05Z" and repo.active() == []
    with pytest.raises(Conflict, match="has already ended"):
        repo.request_stop(ex["id"])


def test_stop_request_and_deletes(metadata_store) -> None:
    repo = WorkflowRepo(metadata_store)
    repo.create("flow", FLOW)
    ex = repo.start("flow", {})
    stopped = repo.request_stop(ex["id"])
    assert stopped["stop_requested"] is True and stopped["status"] == PENDING
    assert repo.active()[0]["stop_requested"] is True
    repo.save(ex["id"], revision=0, state=None, pending=None, status=EX_RUNNING,
              events=[{"type": "ExecutionStarted"}])
    assert repo.delete_executions("flow") == 1
    assert count(metadata_store, t.ExecutionEvent) == 0  # the history goes with its execution
    repo.delete("flow")
    with pytest.raises(NotFound):
        repo.get("flow")
    with pytest.raises(NotFound):
        repo.delete("flow")


# -- triggers --------------------------------------------------------------------------------

def _targets(store) -> tuple[FunctionRepo, WorkflowRepo]:
    functions, workflows = FunctionRepo(store), WorkflowRepo(store)
    _function(functions, "fn")
    workflows.create("flow", FLOW)
    return functions, workflows


def test_trigger_create_list_and_target_checks(metadata_store) -> None:
    repo = TriggerRepo(metadata_store)
    _targets(metadata_store)
    objects = repo.create("b-objects", "objects", {"uri": "s3://b/in/", "odd": ODD_JSON}, "function", "fn",
                          cursor={"listed": "2026"}, seen=[("in/a.csv", "e1"), ("in/b.csv", "e2")])
    assert objects["spec"]["odd"] == ODD_JSON and objects["cursor"] == {"listed": "2026"}
    assert (objects["status"], objects["objects_seen"], objects["last_firing"]) == (ACTIVE, 2, None)
    assert objects["target"] == {"kind": "function", "name": "fn"} and assert_utc_iso(objects["created_at"])
    assert repo.seen("b-objects") == {"in/a.csv": "e1", "in/b.csv": "e2"}
    hook = repo.create("a-hook", "webhook", {}, "workflow", "flow", secret_hash="h", hook_secret="s")
    assert hook["url"] == "/hooks/a-hook" and hook["signatures"] is True and "objects_seen" not in hook
    assert repo.secret_hash("a-hook") == ("webhook", ACTIVE, "h", "s")
    assert repo.get("b-objects") == objects

    with pytest.raises(Conflict, match="trigger 'a-hook' already exists"):
        repo.create("a-hook", "webhook", {}, "function", "fn")
    with pytest.raises(InvalidInput, match="function: function 'ghost' not found"):
        repo.create("c", "schedule", {}, "function", "ghost")
    assert count(metadata_store, t.Trigger) == 2
    assert [x["name"] for x in repo.list()] == ["a-hook", "b-objects"]
    assert [x["name"] for x in repo.list(kind="webhook")] == ["a-hook"]
    repo.set_status("a-hook", PAUSED, cursor={"odd": ODD_JSON})
    assert repo.get("a-hook")["cursor"] == {"odd": ODD_JSON}
    assert [x["name"] for x in repo.list(status=ACTIVE)] == ["b-objects"]
    assert [x["name"] for x in repo.active(["objects", "webhook"])] == ["b-objects"]
    with pytest.raises(NotFound, match="trigger 'a-hoo' not found; did you mean 'a-hook'"):
        repo.get("a-hoo")


def test_trigger_update_is_one_transaction(metadata_store) -> None:
    repo = TriggerRepo(metadata_store)
    _targets(metadata_store)
    repo.create("t", "objects", {"uri": "s3://b/in/"}, "function", "fn", seen=[("in/a", "e1")])
    with pytest.raises(InvalidInput, match="workflow: workflow 'ghost' not found"):
        repo.update("t", spec={"uri": "s3://b/other/"}, target=("workflow", "ghost"), seen=[("other/x", "e")])
    kept = repo.get("t")  # the refused update wrote nothing
    assert kept["spec"] == {"uri": "s3://b/in/"} and kept["target"]["name"] == "fn" and kept["objects_seen"] == 1
    out = repo.update("t", spec={"uri": "s3://b/other/"}, target=("workflow", "flow"), cursor={"c": 1},
                      seen=[("in/a", "changed"), ("other/x", "e")])
    assert out["spec"] == {"uri": "s3://b/other/"} and out["target"] == {"kind": "workflow", "name": "flow"}
    assert repo.seen("t") == {"in/a": "e1", "other/x": "e"}  # an object already seen keeps its etag
    with pytest.raises(NotFound):
        repo.update("nope", spec={})


def test_a_firing_and_what_it_starts_are_written_together(metadata_store) -> None:
    repo = TriggerRepo(metadata_store)
    functions, workflows = _targets(metadata_store)
    repo.create("to-fn", "schedule", {}, "function", "fn")
    repo.create("to-flow", "schedule", {}, "workflow", "flow")
    [fired] = repo.fire("to-fn", [Firing({"at": "10:00", "odd": ODD_JSON}, dedupe_key="cron:10:00")],
                        cursor={"last": "10:00"})
    assert (fired["status"], fired["dedupe_key"], fired["event"]) == (STARTED, "cron:10:00",
                                                                      {"at": "10:00", "odd": ODD_JSON})
    inv = functions.invocation(fired["started_id"])
    assert (inv["status"], inv["source"], inv["event"]) == (QUEUED, "trigger:to-fn", fired["event"])
    assert repo.get("to-fn")["cursor"] == {"last": "10:00"} and repo.get("to-fn")["last_firing"] == fired
    assert_utc_iso(fired["at"])

    [started] = repo.fire("to-flow", [Firing({"n": 1})])
    ex = workflows.load(started["started_id"])
    assert (ex["status"], ex["source"], ex["input"], ex["definition"]) == (PENDING, "trigger:to-flow", {"n": 1}, FLOW)

    # the same dedupe key again: nothing (no firing, no second invocation)
    assert repo.fire("to-fn", [Firing({"at": "10:00"}, dedupe_key="cron:10:00")]) == []
    assert repo.count_firings("to-fn") == 1 and count(metadata_store, t.FunctionInvocation) == 1
    assert repo.firing_by_dedupe("to-fn", "cron:10:00") == fired
    assert repo.firing_by_dedupe("to-flow", "cron:10:00") is None
    # skipped / failed firings are recorded and start nothing
    skipped = repo.fire("to-fn", [Firing({}, dedupe_key="cron:10:05", status=SKIPPED, error="busy")])
    assert skipped[0]["status"] == SKIPPED and skipped[0]["started_id"] is None
    assert count(metadata_store, t.FunctionInvocation) == 1
    assert repo.count_firings("to-fn", STARTED) == 1 and repo.count_firings("to-fn", SKIPPED) == 1
    assert [f["dedupe_key"] for f in repo.firings("to-fn")] == ["cron:10:05", "cron:10:00"]  # newest first
    assert [f["dedupe_key"] for f in repo.firings("to-fn", limit=1, offset=1)] == ["cron:10:00"]  # the next page
    assert repo.firings("to-fn", offset=2) == []
    assert repo.firing("to-fn", fired["id"]) == fired
    with pytest.raises(NotFound, match=f"trigger 'to-flow' has no firing {fired['id']}"):
        repo.firing("to-flow", fired["id"])


def test_objects_fire_once_per_content(metadata_store) -> None:
    repo = TriggerRepo(metadata_store)
    _targets(metadata_store)
    repo.create("obj", "objects", {}, "function", "fn", seen=[("old", "e0")])

    def obj(key: str, etag: str) -> Firing:
        return Firing({"key": key}, dedupe_key=f"{key}#{etag}", seen=(key, etag))

    assert len(repo.fire("obj", [obj("old", "e0"), obj("new", "e1")])) == 1  # already there: not fired
    assert repo.fire("obj", [obj("new", "e1")]) == []
    assert len(repo.fire("obj", [obj("new", "e2")])) == 1  # overwritten: new content fires
    assert repo.seen("obj") == {"old": "e0", "new": "e2"}
    assert repo.fire("obj", [obj("new", "e1")]) == []  # back to content already fired: never again
    assert repo.seen("obj")["new"] == "e1" and repo.count_firings("obj") == 2
    assert repo.get("obj")["objects_seen"] == 2


def test_paused_deleted_or_targetless_triggers(metadata_store) -> None:
    repo = TriggerRepo(metadata_store)
    functions, _ = _targets(metadata_store)
    repo.create("t", "schedule", {}, "function", "fn")
    repo.set_status("t", PAUSED)
    assert repo.fire("t", [Firing({})]) == [] and repo.count_firings("t") == 0
    assert len(repo.fire("t", [Firing({})], require_active=False)) == 1  # e.g. a manual firing
    repo.set_status("t", ACTIVE)
    functions.delete("fn")
    assert repo.target_missing("t") == "function 'fn' not found"
    [failed] = repo.fire("t", [Firing({"e": 1})])
    assert (failed["status"], failed["error"], failed["started_id"]) == (FIRING_FAILED, "function 'fn' not found",
                                                                         None)
    assert repo.fire("gone", [Firing({})]) == []


def test_failed_firings_and_their_redrives(metadata_store) -> None:
    repo = TriggerRepo(metadata_store)
    _targets(metadata_store)
    repo.create("t", "webhook", {}, "function", "fn")
    [bad] = repo.fire("t", [Firing({"n": 1}, status=FIRING_FAILED, error="bad signature")])
    [bad2] = repo.fire("t", [Firing({"n": 2}, status=FIRING_FAILED, error="bad body")])
    assert [(f["id"], f["redriven_by"]) for f in repo.failed_firings("t")] == [(bad["id"], None), (bad2["id"], None)]
    [redrive] = repo.fire("t", [Firing({"n": 1}, dedupe_key=f"redrive:{bad['id']}")])
    assert redrive["redrive_of"] == bad["id"] and redrive["status"] == STARTED
    assert repo.fire("t", [Firing({"n": 1}, dedupe_key=f"redrive:{bad['id']}")]) == []  # at most once
    assert [(f["id"], f["redriven_by"]) for f in repo.failed_firings("t")] == [
        (bad["id"], redrive["id"]), (bad2["id"], None)]


def test_racing_writers_fire_each_key_exactly_once(metadata_store) -> None:
    """Two pollers (two control planes) fire overlapping batches at the same time: every key
    fires once and starts one invocation; the rest of a batch still fires."""
    repo = TriggerRepo(metadata_store)
    _targets(metadata_store)
    repo.create("t", "schedule", {}, "function", "fn")
    batches = [[f"k{i}" for i in range(0, 12)], [f"k{i}" for i in range(6, 18)], [f"k{i}" for i in range(9, 20)]]
    start, errors = threading.Barrier(len(batches)), []

    def poller(keys: list[str]) -> None:
        try:
            start.wait(10)
            for _ in range(3):
                repo.fire("t", [Firing({"k": k}, dedupe_key=k) for k in keys])
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=poller, args=(b,)) for b in batches]
    for th in threads:
        th.start()
    for th in threads:
        th.join(60)
    assert not errors, errors
    keys = sorted(f["dedupe_key"] for f in repo.firings("t", limit=1000))
    assert keys == sorted(f"k{i}" for i in range(20))
    assert count(metadata_store, t.FunctionInvocation) == 20
    assert {f["status"] for f in repo.firings("t", limit=1000)} == {STARTED}


def test_deleting_a_trigger_takes_its_objects_and_firings(metadata_store) -> None:
    repo = TriggerRepo(metadata_store)
    functions, _ = _targets(metadata_store)
    repo.create("gone", "objects", {}, "function", "fn", seen=[("a", "1")])
    repo.create("kept", "schedule", {}, "function", "fn")
    [fired] = repo.fire("gone", [Firing({}, dedupe_key="b#2", seen=("b", "2"))])
    repo.fire("kept", [Firing({})])
    repo.delete("gone")
    with pytest.raises(NotFound):
        repo.get("gone")
    with pytest.raises(NotFound):
        repo.firings("gone")
    assert count(metadata_store, t.TriggerObject) == 0 and repo.count_firings("gone") == 0
    assert repo.count_firings("kept") == 1
    assert functions.invocation(fired["started_id"])["source"] == "trigger:gone"  # what it started stays
    # the name is free again, with no memory of the objects it had seen
    repo.create("gone", "objects", {}, "function", "fn")
    assert repo.seen("gone") == {} and len(repo.fire("gone", [Firing({}, dedupe_key="b#2", seen=("b", "2"))])) == 1
