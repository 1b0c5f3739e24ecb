"""Functions (Lambda-like): repository contract on SQLite and PostgreSQL, and real invocations —
one subprocess each — through a real control plane (``live_server``), via the SDK, REST and CLI."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest
from typer.testing import CliRunner

from loopml.cli.main import app as cli_app
from loopml.core.errors import Conflict, InvalidInput, NotFound
from loopml.sdk.client import Client
from tests.process_support import wait_for

pytest_plugins = ("tests.backends",)

FIXTURES = Path(__file__).parent / "fixtures" / "functions"
DEADLINE_S = 120  # generous: a noisy 2-core machine; no test asserts on time


def wait_ended(sdk: Client, name: str, inv_id: str) -> dict:
    return wait_for(lambda: (lambda r: r if r["status"] in ("succeeded", "failed") else None)(
        sdk.function_invocation(name, inv_id)), DEADLINE_S, what=f"invocation {inv_id}")


# -- repository contract (SQLite + PostgreSQL) ----------------------------------------------------

def test_repo_contract(metadata_store):
    from loopml.store.functions_repo import FAILED, QUEUED, RUNNING, SUCCEEDED, FunctionRepo

    repo = FunctionRepo(metadata_store)
    with pytest.raises(NotFound):
        repo.enqueue("nope", {}, source="cli")
    rec = repo.create("f1", handler="h.handler", code_key="functions/f1/abc/h.py", code_sha256="a" * 64,
                      timeout_s=3, memory_mb=128, environment={"A": "1"})
    assert rec["timeout_s"] == 3.0 and rec["environment"] == {"A": "1"} and rec["handler"] == "h.handler"
    with pytest.raises(Conflict):
        repo.create("f1", handler="h.handler", code_key="k", code_sha256="b" * 64, timeout_s=3, memory_mb=128)
    replaced = repo.create("f1", handler="h.other", code_key="k2", code_sha256="b" * 64, timeout_s=5,
                           memory_mb=256, replace=True)
    assert replaced["handler"] == "h.other" and replaced["memory_mb"] == 256
    assert replaced["created_at"] == rec["created_at"]
    assert [f["name"] for f in repo.list()] == ["f1"]
    with pytest.raises(NotFound, match="function 'f1x' not found; did you mean 'f1'"):
        repo.update("f1x", {"timeout_s": 4.0}, {})

    first = repo.enqueue("f1", {"n": 1}, source="cli")
    second = repo.enqueue("f1", [1, 2], source="trigger:t", invocation_id="inv-fixed")
    assert first["status"] == QUEUED and first["event"] == {"n": 1} and second["id"] == "inv-fixed"
    with pytest.raises(Conflict):
        repo.enqueue("f1", None, source="cli", invocation_id="inv-fixed")
    assert repo.ids_with_status(QUEUED) == [first["id"], "inv-fixed"]

    assert repo.transition(first["id"], RUNNING, expect=[QUEUED], worker_pid=123)
    assert not repo.transition(first["id"], RUNNING, expect=[QUEUED])  # nobody runs it twice
    assert repo.transition(first["id"], SUCCEEDED, expect=[RUNNING], result={"ok": True}, logs="x\n",
                           duration_ms=1.5, max_memory_mb=20.0)
    done = repo.invocation(first["id"])
    assert done["status"] == SUCCEEDED and done["result"] == {"ok": True} and done["worker_pid"] == 123
    assert done["started_at"] and done["ended_at"] and done["duration_ms"] == 1.5
    assert not repo.transition(first["id"], FAILED, expect=[RUNNING])

    # a retry: running -> queued again, attempt + 1, not before its backoff
    from datetime import timedelta

    from loopml.core.timeutil import utcnow

    assert second["attempt"] == 1 and second["not_before"] is None
    assert repo.runnable_ids() == ["inv-fixed"]
    assert repo.transition("inv-fixed", RUNNING, expect=[QUEUED], worker_pid=7, worker_host="h")
    later = utcnow() + timedelta(seconds=60)
    assert repo.retry("inv-fixed", not_before=later, error_type="Function.Interrupted", error_message="cut off")
    assert not repo.retry("inv-fixed", not_before=later, error_type="x", error_message="x")  # not running
    again = repo.invocation("inv-fixed")
    assert (again["status"], again["attempt"], again["worker_pid"], again["started_at"]) == (QUEUED, 2, None, None)
    assert again["not_before"] and again["error_type"] == "Function.Interrupted"
    assert repo.runnable_ids() == [] and repo.runnable_ids(later + timedelta(seconds=1)) == ["inv-fixed"]

    assert {r["id"] for r in repo.invocations("f1")} == {first["id"], "inv-fixed"}
    assert [r["id"] for r in repo.invocations("f1", status=QUEUED)] == ["inv-fixed"]
    assert repo.invocations("other") == []
    with pytest.raises(NotFound):
        repo.invocation("inv-missing")

    repo.delete("f1")
    with pytest.raises(NotFound):
        repo.get("f1")
    with pytest.raises(NotFound):
        repo.delete("f1")
    assert len(repo.invocations("f1")) == 2  # history outlives the function


def test_automation_rows_are_run_by_the_repo_contract(metadata_store):
    """Triggers/workflows insert rows with automation_rows.queued_invocation: the same queue."""
    from loopml.store import tables as t
    from loopml.store.automation_rows import queued_invocation
    from loopml.store.functions_repo import QUEUED, FunctionRepo

    repo = FunctionRepo(metadata_store)
    repo.create("f2", handler="h.handler", code_key="k", code_sha256="c" * 64, timeout_s=1, memory_mb=64)
    with metadata_store.session() as s:
        s.add(queued_invocation("f2", {"k": 1}, source="trigger:x", invocation_id="inv-from-trigger"))
    assert repo.ids_with_status(QUEUED) == ["inv-from-trigger"]
    assert repo.invocation("inv-from-trigger")["source"] == "trigger:x"
    assert t.FunctionInvocation.__tablename__ == "function_invocations"


# -- code checks (no server) --------------------------------------------------------------------

def test_code_checks():
    from loopml.functions.code import prepare_code

    hello = (FIXTURES / "hello.py").read_bytes()
    assert prepare_code("hello.py", hello, None).handler == "hello.handler"
    assert prepare_code("hello.py", hello, "hello.other").handler == "hello.other"
    for handler, fragment in (("hello.nope", "defines no top-level 'nope'"), ("other.handler", "module"),
                              ("nodots", "MODULE.FUNCTION")):
        with pytest.raises(InvalidInput, match=fragment):
            prepare_code("hello.py", hello, handler)
    with pytest.raises(InvalidInput, match="syntax error at line 1"):
        prepare_code("bad.py", b"def handler(event, context)\n    return 1\n", None)
    with pytest.raises(InvalidInput, match="not an importable module"):
        prepare_code("my-handler.py", hello, None)


# -- through a real control plane -------------------------------------------------------------

@pytest.fixture
def server(live_server, settings):
    return live_server  # its settings name its real URL: functions call it back


@pytest.fixture
def sdk(server):
    with Client(server, token="") as c:
        yield c


@pytest.fixture
def cli(server, monkeypatch):
    monkeypatch.setenv("LOOPML_API_URL", server)
    runner = CliRunner()

    def run(*args: str):
        return runner.invoke(cli_app, list(args), catch_exceptions=False)
    return run


def test_sync_invoke_with_context(sdk):
    created = sdk.create_function("hello", FIXTURES / "hello.py", timeout_s=60, memory_mb=256)
    assert created["handler"] == "hello.handler" and created["memory_mb"] == 256
    record = sdk.invoke_function("hello", {"x": 1})
    assert record["status"] == "succeeded", record
    result = record["result"]
    assert result["echo"] == {"x": 1}
    assert result["request_id"] == record["id"] == result["aws_request_id"]
    assert result["function_name"] == "hello" and result["memory"] == 256
    assert result["function_ref"] == "loopml:function:hello"
    assert 0 < result["remaining_ms"] <= 60_000
    assert result["health"] == "ok"  # context.client reached the control plane
    assert "hello from the logger" in record["logs"] and record["id"] in record["logs"]
    assert "printed line" in record["logs"]
    assert record["duration_ms"] > 0 and record["max_memory_mb"] > 0
    assert record["source"] == "api" and record["started_at"] and record["ended_at"]

    other = sdk.create_function("hello", FIXTURES / "hello.py", handler="hello.other", replace=True)
    assert other["handler"] == "hello.other"
    assert sdk.invoke_function("hello")["result"] == "other"
    assert [f["name"] for f in sdk.functions()] == ["hello"]
    logs = sdk.function_logs("hello", limit=5)
    assert len(logs) == 2 and "hello from the logger" in logs[1]["logs"]
    assert sdk.delete_function("hello") == {"deleted": "hello"}
    with pytest.raises(NotFound):
        sdk.function("hello")


def test_faults_are_recorded_and_the_control_plane_keeps_running(sdk):
    sdk.create_function("boom", FIXTURES / "boom.py")
    sdk.create_function("sleepy", FIXTURES / "sleepy.py", timeout_s=1)
    sdk.create_function("hog", FIXTURES / "hog.py", memory_mb=128)
    sdk.create_function("numpy-small", FIXTURES / "small_numpy.py")  # default 512 MB
    sdk.create_function("not-json", FIXTURES / "not_json.py")
    ids = {name: sdk.invoke_function(name, {"n": 42}, mode="async")["id"]
           for name in ("boom", "sleepy", "hog", "numpy-small", "not-json")}
    done = {name: wait_ended(sdk, name, inv) for name, inv in ids.items()}

    boom = done["boom"]
    assert (boom["status"], boom["error_type"], boom["error_message"]) == ("failed", "ValueError", "bad input 42")
    assert "Traceback" in boom["logs"] and "about to fail" in boom["logs"]

    sleepy = done["sleepy"]
    assert (sleepy["status"], sleepy["error_type"]) == ("failed", "Function.Timeout"), sleepy
    assert sleepy["error_message"] == "timed out after 1 s"
    assert "sleeping" in sleepy["logs"]
    pid = sleepy["worker_pid"]
    assert pid and not (psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)

    hog = done["hog"]
    assert (hog["status"], hog["error_type"]) == ("failed", "Function.MemoryExceeded"), hog
    assert "128 MB" in hog["error_message"]

    small = done["numpy-small"]
    assert small["status"] == "succeeded", small
    assert small["result"]["sum"] > 0

    not_json = done["not-json"]
    assert (not_json["status"], not_json["error_type"]) == ("failed", "Function.ResultNotJSON")

    assert sdk.health()["status"] == "ok"
    assert sdk.invoke_function("boom", {"n": 7})["error_message"] == "bad input 7"  # sync: 200 + failed record
    failed = sdk.function_invocations("boom", status="failed")
    assert len(failed) == 2


def test_api_errors(server):
    with httpx.Client(base_url=server, timeout=60) as http:
        def create(files, **fields):
            return http.post("/functions", data={"name": "f", **fields}, files=files)

        hello = {"code": ("hello.py", (FIXTURES / "hello.py").read_bytes())}
        cases = [
            (create({"code": ("bad.py", b"def handler(e, c)\n  return 1\n")}), "syntax error at line 1"),
            (create(hello, handler="hello.nope"), "defines no top-level 'nope'"),
            (create(hello, timeout_s="0"), "timeout"),
            (create(hello, memory_mb="32"), "memory 32 MB"),
            (create(hello, environment="{not json"), "environment"),
            (http.post("/functions", data={"name": "Bad_Name"}, files=hello), "function name"),
        ]
        for resp, fragment in cases:
            assert resp.status_code == 400, resp.text
            assert resp.json()["code"] == "invalid_input" and fragment in resp.json()["message"], resp.text
        assert create(hello).status_code == 201
        assert create(hello).status_code == 409
        assert http.post("/functions/nope/invocations", json={"event": 1}).status_code == 404
        resp = http.post("/functions/f/invocations", content=b"{oops", headers={"content-type": "application/json"})
        assert resp.status_code == 400 and resp.json()["code"] == "invalid_input"
        resp = http.post("/functions/f/invocations", json={"event": {"a": 1}, "mode": "async"})
        assert resp.status_code == 202 and resp.json()["status"] == "queued"
        assert http.get("/functions/nope/invocations").status_code == 404
        assert http.get(f"/functions/f/invocations/{resp.json()['id']}").status_code == 200
        assert http.get("/functions/f/invocations/inv-nope").status_code == 404


def test_cli(cli, tmp_path):
    result = cli("functions", "create", "hello", "--file", str(FIXTURES / "hello.py"), "--memory-mb", "256")
    assert result.exit_code == 0, result.output
    result = cli("functions", "invoke", "hello", "--event", '{"a": [1, 2]}')
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["echo"] == {"a": [1, 2]}
    assert "hello from the logger" in result.stderr

    event_file = tmp_path / "event.json"
    event_file.write_text('{"from": "file"}')
    result = cli("functions", "invoke", "hello", "--event", f"@{event_file}", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)["result"]["echo"] == {"from": "file"}

    result = cli("functions", "invoke", "hello", "--event", "{not json")
    assert result.exit_code == 2 and result.stderr.strip().startswith("error: --event is not valid JSON")
    assert len(result.stderr.strip().splitlines()) == 1
    binary = tmp_path / "binary.dat"
    binary.write_bytes(b"\x7fELF\x02\x01\xd0\xff")  # used to end in a UnicodeDecodeError traceback
    result = cli("functions", "invoke", "hello", "--event", f"@{binary}")
    assert result.exit_code == 2 and "is not UTF-8 text" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

    result = cli("functions", "create", "boom", "--file", str(FIXTURES / "boom.py"))
    assert result.exit_code == 0, result.output
    result = cli("functions", "invoke", "boom", "--event", '{"n": 5}')
    assert result.exit_code == 1
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: invocation inv-") and "ValueError: bad input 5" in last

    broken = tmp_path / "broken.py"
    broken.write_text("def handler(event, context)\n    return 1\n")
    result = cli("functions", "create", "broken", "--file", str(broken))
    assert result.exit_code == 2 and "syntax error at line 1" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.output
    result = cli("functions", "create", "h2", "--file", str(FIXTURES / "hello.py"), "--handler", "hello.nope")
    assert result.exit_code == 2 and "nope" in result.stderr

    result = cli("functions", "invoke", "hello", "--async")
    assert result.exit_code == 0 and result.stdout.strip().startswith("inv-")
    for args in (("list",), ("show", "hello"), ("invocations", "hello"), ("logs", "hello")):
        result = cli("functions", *args)
        assert result.exit_code == 0, (args, result.output)
    assert "hello from the logger" in cli("functions", "logs", "hello").stdout
    listed = json.loads(cli("functions", "list", "--json").stdout)
    assert {f["name"] for f in listed} == {"hello", "boom"}
    assert cli("functions", "delete", "boom").exit_code == 0
    result = cli("functions", "show", "boom")
    assert result.exit_code == 2 and "not found" in result.stderr


def test_folder_code(sdk, tmp_path):
    folder = tmp_path / "app"
    (folder / "pkg").mkdir(parents=True)
    (folder / "pkg" / "__init__.py").write_text("")
    (folder / "pkg" / "helpers.py").write_text("def double(x):\n    return 2 * x\n")
    (folder / "main.py").write_text("from pkg.helpers import double\n\n\ndef run(event, context):\n"
                                    "    return double(event)\n")
    sdk.create_function("folder", folder, handler="main.run")
    assert sdk.invoke_function("folder", 21)["result"] == 42
    with pytest.raises(InvalidInput, match="module 'missing' not found"):
        sdk.create_function("folder2", folder, handler="missing.run")


def test_enqueued_from_the_store_runs(sdk, settings):
    """What triggers and workflows do: insert a queued row; the dispatcher's tick runs it."""
    from loopml.platform import Platform

    sdk.create_function("hello", FIXTURES / "hello.py")
    plat = Platform(settings)
    try:
        queued = plat.functions.enqueue("hello", {"via": "store"}, source="trigger:test")
    finally:
        plat.close()
    record = wait_ended(sdk, "hello", queued["id"])
    assert record["status"] == "succeeded", record
    assert record["result"]["echo"] == {"via": "store"} and record["source"] == "trigger:test"


def test_orphaned_running_invocation_is_interrupted(platform):
    """A control plane restarted while an invocation ran: the new dispatcher fails it and kills
    a runner process that survived in its own session."""
    from loopml.controlplane.functions import FunctionDispatcher
    from loopml.store.functions_repo import QUEUED, RUNNING

    repo = platform.functions
    repo.create("f", handler="hello.handler", code_key="functions/f/x/hello.py", code_sha256="d" * 64,
                timeout_s=60, memory_mb=128)
    gone = repo.enqueue("f", None, source="cli")
    alive = repo.enqueue("f", None, source="cli")
    # a leftover runner process: same command line as a real one, blocked reading its stdin
    proc = subprocess.Popen([sys.executable, "-m", "loopml.functions.runner"], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                              text=True, check=True).stdout.strip()
        assert repo.transition(gone["id"], RUNNING, expect=[QUEUED], worker_pid=int(dead))
        assert repo.transition(alive["id"], RUNNING, expect=[QUEUED], worker_pid=proc.pid)
        dispatcher = FunctionDispatcher(platform)
        try:
            dispatcher.tick()
        finally:
            dispatcher.stop()
        for inv in (gone, alive):
            record = repo.invocation(inv["id"])
            assert (record["status"], record["error_type"]) == ("failed", "Function.Interrupted"), record
            assert "restarted" in record["error_message"]
        assert proc.wait(timeout=30) != 0  # killed
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _stored(platform, name: str, fixture: str, **config) -> dict:
    from loopml.functions import service

    return service.create_function(platform, name, filename=fixture, data=(FIXTURES / fixture).read_bytes(),
                                   **config)


def test_handler_missing_at_run_time_and_logs_cap(platform, tmp_path):
    from loopml.functions.runtime import LOG_CAP_BYTES, read_logs, run_invocation

    function = _stored(platform, "hello", "hello.py")
    # the code changed under the record (e.g. replaced by hand): found missing only when it runs
    function = platform.functions.create("hello", **{**{k: function[k] for k in (
        "code_key", "code_sha256", "timeout_s", "memory_mb")}, "handler": "hello.gone"}, replace=True)
    invocation = platform.functions.enqueue("hello", {}, source="test")
    outcome = run_invocation(platform.settings, platform.artifacts, function, invocation)
    assert (outcome.succeeded, outcome.error_type) == (False, "Function.HandlerNotFound")
    assert "'gone'" in outcome.error_message

    log = tmp_path / "big.log"
    log.write_bytes(b"".join(b"line %06d\n" % i for i in range(40_000)))  # ~440 KB
    text = read_logs(log)
    assert text.startswith("[loopml] ") and "truncated" in text.splitlines()[0]
    assert len(text.encode()) <= LOG_CAP_BYTES + 100 and text.rstrip().endswith("line 039999")


def test_dispatcher_stop_interrupts_running_invocations(platform):
    from loopml.controlplane.functions import FunctionDispatcher

    _stored(platform, "sleepy", "sleepy.py", timeout_s=120)
    queued = platform.functions.enqueue("sleepy", None, source="test")
    dispatcher = FunctionDispatcher(platform)
    try:
        assert dispatcher.run_now(queued["id"])
        assert not dispatcher.run_now(queued["id"])  # already handled here
        running = wait_for(lambda: (lambda r: r if r["status"] == "running" and r["worker_pid"] else None)(
            platform.functions.invocation(queued["id"])), DEADLINE_S, what="the invocation to start")
    finally:
        dispatcher.stop()
    record = platform.functions.invocation(queued["id"])
    assert (record["status"], record["error_type"]) == ("failed", "Function.Interrupted"), record
    pid = running["worker_pid"]
    assert not (psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE)
