"""Workflows over the wire: REST (/workflows, /executions), the SDK and `loopml workflows` /
`loopml executions` against a real control plane (``live_server``), and a real `loopml server`
process killed (SIGKILL) in the middle of an execution and started again."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import httpx
import pytest

from loopml.core.errors import Conflict, InvalidInput, NotFound
from loopml.sdk.client import Client
from tests.process_support import free_port, start_server
from tests.test_cli import ok_json, one_line_error
from tests.surface_support import assert_error, cli_runner

HELLO = {"StartAt": "Hello", "States": {
    "Hello": {"Type": "Pass", "Parameters": {"greeting.$": "States.Format('hi {}', $.who)"}, "Next": "Check"},
    "Check": {"Type": "Choice", "Choices": [{"Variable": "$.greeting", "StringEquals": "hi fail", "Next": "Boom"}],
              "Default": "Done"},
    "Boom": {"Type": "Fail", "Error": "Greeting.Failed", "Cause": "asked to fail"},
    "Done": {"Type": "Succeed"}}}

HELLO_YAML = """\
StartAt: Hello
States:
  Hello:
    Type: Pass
    Result: {greeting: hi}
    End: true
"""


@pytest.fixture
def api(live_server):
    with httpx.Client(base_url=live_server, timeout=30) as http:
        yield http


@pytest.fixture
def sdk(live_server):
    with Client(live_server, token="") as c:
        yield c


@pytest.fixture
def cli(live_server, monkeypatch):
    return cli_runner(live_server, monkeypatch)


def test_rest_workflows_and_executions(api) -> None:
    resp = api.post("/workflows", json={"name": "hello", "definition": HELLO, "description": "greets"})
    assert resp.status_code == 201, resp.text
    assert resp.json()["source"].startswith("StartAt: Hello")  # shown as YAML
    assert_error(api.post("/workflows", json={"name": "hello", "definition": HELLO}), 409, "conflict")
    assert api.post("/workflows", json={"name": "hello", "source": json.dumps(HELLO), "replace": True}).status_code == 201
    assert [w["name"] for w in api.get("/workflows").json()] == ["hello"]
    assert api.get("/workflows/hello").json()["definition"] == HELLO

    # faults are 400s that name the state and the field
    bad = {"StartAt": "Train", "States": {"Train": {"Type": "Task", "Resource": "loopml:trian", "End": True}}}
    assert_error(api.post("/workflows", json={"name": "bad", "definition": bad}), 400, "invalid_input",
                 "state Train: Resource 'loopml:trian' is not a LoopML action")
    assert_error(api.post("/workflows", json={"name": "bad", "source": "StartAt: A\nStates: {A: {Type: Pass}}"}),
                 400, "invalid_input", 'state "A"')
    assert_error(api.post("/workflows", json={"name": "bad", "source": "{not json"}), 400, "invalid_input", "JSON")
    assert_error(api.post("/workflows", json={"name": "bad"}), 400, "invalid_input", "exactly one")
    # templates are rendered by loopml.workflows.templates; their refusals are 400s too
    assert_error(api.post("/workflows", json={"name": "t", "template": "nope"}), 400, "invalid_input", "nope")
    assert_error(api.post("/workflows", json={"name": "t", "template": "retrain", "template_params": {
        "dataset": "mnist", "model": "cnn", "endpoint": "ghost"}}), 400, "invalid_input", "ghost")
    assert_error(api.post("/workflows/hello/executions", content=b"{oops",
                          headers={"content-type": "application/json"}), 400, "invalid_input")
    assert_error(api.post("/workflows/nope/executions", json={}), 404, "not_found")
    assert_error(api.get("/executions/nope"), 404, "not_found")

    started = api.post("/workflows/hello/executions", json={"input": {"who": "ann"}, "name": "greet-1"})
    assert started.status_code == 201, started.text
    assert started.json()["id"] == "greet-1" and started.json()["status"] in ("PENDING", "RUNNING", "SUCCEEDED")
    deadline = time.monotonic() + 30
    while (record := api.get("/executions/greet-1").json())["status"] != "SUCCEEDED":
        assert time.monotonic() < deadline, record
        time.sleep(0.1)
    assert record["output"] == {"greeting": "hi ann"}
    history = api.get("/executions/greet-1/history").json()
    assert [e["seq"] for e in history] == list(range(1, len(history) + 1))
    assert history[0]["type"] == "ExecutionStarted" and history[-1]["type"] == "ExecutionSucceeded"
    assert [e["id"] for e in api.get("/executions", params={"workflow": "hello", "status": "SUCCEEDED"}).json()] \
        == ["greet-1"]
    assert_error(api.post("/executions/greet-1/stop"), 409, "conflict", "already ended")
    assert api.delete("/workflows/hello").json() == {"deleted": "hello"}
    assert api.get("/executions/greet-1").json()["status"] == "SUCCEEDED"  # history outlives the workflow


def test_sdk(sdk, tmp_path) -> None:
    path = tmp_path / "hello.yaml"
    path.write_text(HELLO_YAML)
    assert sdk.create_workflow("from-file", path)["definition"]["States"]["Hello"]["Result"] == {"greeting": "hi"}
    assert sdk.create_workflow("from-text", HELLO_YAML)["name"] == "from-text"
    sdk.create_workflow("hello", HELLO)
    with pytest.raises(Conflict):
        sdk.create_workflow("hello", HELLO)
    with pytest.raises(InvalidInput, match="does not exist"):
        sdk.create_workflow("x", str(tmp_path / "missing.json"))
    assert {w["name"] for w in sdk.workflows()} == {"from-file", "from-text", "hello"}

    ok = sdk.wait_execution(sdk.start_execution("hello", {"who": "bo"})["id"], timeout=30, poll=0.1)
    assert ok["status"] == "SUCCEEDED" and ok["output"] == {"greeting": "hi bo"}
    failed = sdk.wait_execution(sdk.start_execution("hello", {"who": "fail"})["id"], timeout=30, poll=0.1)
    assert (failed["status"], failed["error"], failed["cause"]) == ("FAILED", "Greeting.Failed", "asked to fail")
    assert sdk.execution_history(failed["id"])[-1]["type"] == "ExecutionFailed"
    assert {e["id"] for e in sdk.executions(workflow="hello")} == {ok["id"], failed["id"]}
    assert [e["id"] for e in sdk.executions(status="FAILED")] == [failed["id"]]

    sdk.create_workflow("sleepy", {"StartAt": "W", "States": {"W": {"Type": "Wait", "Seconds": 600, "End": True}}})
    ex = sdk.start_execution("sleepy")
    sdk.stop_execution(ex["id"])
    stopped = sdk.wait_execution(ex["id"], timeout=30, poll=0.1)
    assert stopped["status"] == "ABORTED"
    sdk.delete_workflow("sleepy")
    with pytest.raises(NotFound):
        sdk.workflow("sleepy")


def test_cli(cli, tmp_path) -> None:
    path = tmp_path / "hello.json"
    path.write_text(json.dumps(HELLO))
    result = cli("workflows", "create", "hello", "--definition", str(path))
    assert result.exit_code == 0, result.output
    one_line_error(cli("workflows", "create", "hello", "--definition", str(path)), 2, "already exists")
    assert cli("workflows", "create", "hello", "--definition", str(path), "--replace").exit_code == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("StartAt: T\nStates:\n  T: {Type: Task, Resource: 'loopml:trian', End: true}\n")
    one_line_error(cli("workflows", "create", "bad", "--definition", str(bad)), 2, "state T: Resource")
    assert [w["name"] for w in ok_json(cli("workflows", "list", "--json"))] == ["hello"]
    shown = cli("workflows", "show", "hello")
    assert shown.exit_code == 0 and "StartAt: Hello" in shown.stdout

    result = cli("workflows", "start", "hello", "--input", '{"who": "cy"}', "--wait")
    assert result.exit_code == 0, result.output
    assert "→ Hello" in result.stdout and "SUCCEEDED" in result.stdout and '"hi cy"' in result.stdout
    input_file = tmp_path / "in.json"
    input_file.write_text('{"who": "fail"}')
    result = cli("workflows", "start", "hello", "--input", f"@{input_file}", "--wait")
    assert result.exit_code == 1
    assert "Greeting.Failed" in result.stderr and "asked to fail" in result.stderr
    result = cli("workflows", "start", "hello", "--input", '{"who": "dee"}', "--wait", "--json")
    record = ok_json(result)
    assert record["status"] == "SUCCEEDED" and record["output"] == {"greeting": "hi dee"}
    one_line_error(cli("workflows", "start", "hello", "--input", "{nope"), 2, "--input is not valid JSON")
    binary = tmp_path / "binary.dat"
    binary.write_bytes(b"\x7fELF\x02\x01\xd0\xff")  # used to end in a UnicodeDecodeError traceback
    one_line_error(cli("workflows", "start", "hello", "--input", f"@{binary}"), 2, "is not UTF-8 text")
    one_line_error(cli("workflows", "create", "bin", "--definition", str(binary)), 2, "is not UTF-8 text")

    rows = ok_json(cli("executions", "list", "--workflow", "hello", "--json"))
    assert len(rows) == 3
    shown = cli("executions", "show", record["id"])
    assert shown.exit_code == 0 and "SUCCEEDED" in shown.stdout
    history = cli("executions", "history", record["id"])
    assert history.exit_code == 0 and "ExecutionStarted" in history.stdout and "StateEntered" in history.stdout
    one_line_error(cli("executions", "stop", record["id"]), 2, "already ended")
    one_line_error(cli("executions", "show", "nope"), 2, "not found")
    assert ok_json(cli("workflows", "delete", "hello", "--json")) == {"deleted": "hello"}


# -- crash and resume: a real server process killed in the middle of a Wait ------------------------


def test_killed_server_resumes_the_execution(tmp_path) -> None:
    home, log, port = tmp_path / "home", tmp_path / "server.log", free_port()
    client = Client(f"http://127.0.0.1:{port}", token="")
    server = start_server(home, port, log)
    try:
        client.create_workflow("pause", {"StartAt": "Before", "States": {
            "Before": {"Type": "Pass", "Result": {"step": 1}, "Next": "Sleep"},
            "Sleep": {"Type": "Wait", "Seconds": 4, "Next": "After"},
            "After": {"Type": "Pass", "Parameters": {"step": 2}, "Next": "Done"},
            "Done": {"Type": "Succeed"}}})
        ex = client.start_execution("pause", {"go": True})
        deadline = time.monotonic() + 30
        while client.execution(ex["id"]).get("current_state") != "Sleep":
            assert time.monotonic() < deadline, client.execution(ex["id"])
            time.sleep(0.05)
        server.send_signal(signal.SIGKILL)  # no shutdown hooks run
        server.wait(10)

        server = start_server(home, port, log)
        final = client.wait_execution(ex["id"], timeout=60, poll=0.2)
        assert final["status"] == "SUCCEEDED", final
        assert final["output"] == {"step": 2}
        history = client.execution_history(ex["id"])
        seqs = [e["seq"] for e in history]
        assert seqs == list(range(1, len(seqs) + 1))  # strictly increasing, no gaps
        types = [e["type"] for e in history]
        assert types.count("ExecutionStarted") == 1 and types.count("ExecutionSucceeded") == 1
        assert types.count("WaitStarted") == 1
        entered = [e["state"] for e in history if e["type"] == "StateEntered"]
        assert entered == ["Before", "Sleep", "After", "Done"]  # no state entered twice
        wait_started = next(e for e in history if e["type"] == "WaitStarted")
        wait_ended = next(e for e in history if e["type"] == "StateExited" and e["state"] == "Sleep")
        from loopml.core.timeutil import parse_iso

        assert (parse_iso(wait_ended["at"]) - parse_iso(wait_started["at"])).total_seconds() >= 4
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
