"""Issue 10, automation: functions update keeps what is not given; deleting what is in use is
refused (or forced, saying what breaks); failed firings are re-driven exactly once; triggers
update; GitHub-style webhook signatures; alerts ack/resolve; object-trigger locations; failed
executions name their state. Real control plane (``live_server``), real function processes."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path
from typing import Any, Callable

import httpx
import pytest

from loopml.core.errors import Conflict, InvalidInput
from loopml.sdk.client import Client
from tests.surface_support import assert_error, cli_runner
from tests.test_cli import ok_json, one_line_error

DEADLINE_S = 120  # a noisy 2-core machine: generous, and no assertion is about time

ENV_HANDLER = '''import os


def handler(event, context):
    return {k: os.environ.get(k) for k in ("A", "B", "C")}
'''


def poll(fn: Callable[[], Any], what: str) -> Any:
    deadline = time.monotonic() + DEADLINE_S
    while True:
        value = fn()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.fixture
def server(live_server: str, settings) -> str:
    settings.api_url = live_server  # port 0: the functions' LOOPML_API_URL must name the real port
    return live_server


@pytest.fixture
def sdk(server: str):
    with Client(server, token="") as c:
        yield c


@pytest.fixture
def run(server: str, monkeypatch: pytest.MonkeyPatch):
    return cli_runner(server, monkeypatch)


# -- item 3: functions update keeps what is not given ----------------------------------------------

def test_functions_update_keeps_what_is_not_given(sdk: Client, run, server: str, tmp_path: Path):
    code = tmp_path / "envy.py"
    code.write_text(ENV_HANDLER)
    ok_json(run("functions", "create", "envy", "--file", str(code), "--timeout", "30", "--memory-mb", "256",
                "--env", "A=1", "--env", "B=2", "--json"))

    # new code only: timeout, memory, environment and handler are kept (they used to be reset)
    code.write_text(ENV_HANDLER.replace("return {k:", 'return {"v": 2} | {k:'))
    updated = ok_json(run("functions", "update", "envy", "--file", str(code), "--json"))
    assert (updated["timeout_s"], updated["memory_mb"], updated["environment"], updated["handler"]) == \
        (30, 256, {"A": "1", "B": "2"}, "envy.handler")
    assert sdk.invoke_function("envy")["result"] == {"A": "1", "B": "2", "C": None, "v": 2}

    # configuration without new code; --env merges, --unset-env removes
    updated = ok_json(run("functions", "update", "envy", "--timeout", "90", "--env", "A=9", "--env", "C=3",
                          "--unset-env", "B", "--json"))
    assert (updated["timeout_s"], updated["memory_mb"], updated["environment"]) == (90, 256, {"A": "9", "C": "3"})
    assert updated["code_sha256"] == sdk.function("envy")["code_sha256"]
    assert sdk.invoke_function("envy")["result"] == {"A": "9", "B": None, "C": "3", "v": 2}

    # the SDK and REST PATCH behave alike
    assert sdk.update_function("envy", memory_mb=128, environment={"C": None})["environment"] == {"A": "9"}
    with httpx.Client(base_url=server) as http:
        patched = http.patch("/functions/envy", data={"environment": json.dumps({"B": "b"})})
        assert patched.status_code == 200 and patched.json()["environment"] == {"A": "9", "B": "b"}
        assert patched.json()["memory_mb"] == 128 and patched.json()["timeout_s"] == 90
        assert_error(http.patch("/functions/envy", data={"timeout_s": "-1"}), 400, "invalid_input", "timeout")
        assert_error(http.patch("/functions/ghost", data={"timeout_s": "5"}), 404, "not_found", "ghost")

    # mistakes: one line, exit 2, nothing changed
    one_line_error(run("functions", "update", "envy"), 2, "nothing to change")
    one_line_error(run("functions", "update", "envy", "--unset-env", "NOPE"), 2, "NOPE is not set")
    one_line_error(run("functions", "update", "envy", "--handler", "envy.nope"), 2, "nope")
    other = tmp_path / "other.py"
    other.write_text(ENV_HANDLER)
    one_line_error(run("functions", "update", "envy", "--file", str(other)), 2, "--handler")
    assert sdk.function("envy")["handler"] == "envy.handler"
    moved = ok_json(run("functions", "update", "envy", "--file", str(other), "--handler", "other.handler", "--json"))
    assert moved["handler"] == "other.handler" and moved["environment"] == {"A": "9", "B": "b"}


# -- item 4: what is in use is not deleted silently; failed firings are re-driven ------------------

OBJECT_HANDLER = '''def handler(event, context):
    return {"key": event["Records"][0]["s3"]["object"]["key"], "redrive_of": event.get("redrive_of")}
'''


def test_deleting_a_used_function_then_redriving_its_failed_firing(sdk: Client, run, server: str, tmp_path: Path):
    """The issue's scenario: a function used by an object trigger is deleted; the next object's
    firing fails; once the function exists again, `triggers redrive` runs it for that object."""
    code, drop = tmp_path / "seen.py", tmp_path / "drop"
    code.write_text(OBJECT_HANDLER)
    sdk.create_function("seen", code)
    sdk.create_trigger("files", objects=str(drop), function="seen")
    flow = {"StartAt": "Call", "States": {"Call": {"Type": "Task", "Resource": "loopml:function:seen", "End": True}}}
    sdk.create_workflow("calls", flow)

    def fired(n: int) -> list[dict]:
        return poll(lambda: (lambda h: h if len(h) >= n else None)(sdk.trigger_history("files")), f"{n} firings")

    (drop / "a.txt").parent.mkdir(parents=True)
    (drop / "a.txt").write_text("a")
    [first] = fired(1)
    assert first["status"] == "started"

    # in use: refused with the list of dependents (REST 409 + JSON, CLI one line exit 2)
    with httpx.Client(base_url=server) as http:
        body = assert_error(http.delete("/functions/seen"), 409, "conflict", "trigger files", "workflow calls",
                            "--force")
        assert body["details"]["dependents"] == [{"kind": "trigger", "name": "files"},
                                                 {"kind": "workflow", "name": "calls", "state": "Call"}]
    one_line_error(run("functions", "delete", "seen"), 2, "trigger files", "workflow calls (state Call)", "--force")
    assert sdk.function("seen")["name"] == "seen"

    # --force deletes and says what it breaks
    forced = run("functions", "delete", "seen", "--force")
    assert forced.exit_code == 0, forced.output
    assert "this breaks trigger files, workflow calls (state Call)" in forced.stderr

    (drop / "b.txt").write_text("b")
    failed = fired(2)[0]
    assert failed["status"] == "failed" and failed["error"] == "function 'seen' not found"
    # nothing to start yet: refused, nothing recorded
    one_line_error(run("triggers", "redrive", "files"), 2, "function 'seen' not found")
    assert len(sdk.trigger_history("files")) == 2

    sdk.create_function("seen", code)
    redriven = ok_json(run("triggers", "redrive", "files", "--json"))
    assert [(r["redrive_of"], r["status"]) for r in redriven] == [(failed["id"], "started")]
    invocation = poll(lambda: (lambda r: r if r["status"] in ("succeeded", "failed") else None)(
        sdk.function_invocation("seen", redriven[0]["started"]["id"])), "the redriven invocation")
    assert invocation["status"] == "succeeded", invocation
    assert invocation["result"] == {"key": "b.txt", "redrive_of": failed["id"]}

    # exactly once: a second redrive starts nothing
    assert "no failed firings left" in run("triggers", "redrive", "files").stdout
    one_line_error(run("triggers", "redrive", "files", "--firing", str(failed["id"])), 2, "already redriven")
    one_line_error(run("triggers", "redrive", "files", "--firing", str(first["id"])), 2, "did not fail")
    with pytest.raises(Conflict, match="already redriven"):
        sdk.redrive_trigger("files", failed["id"])
    history = run("triggers", "history", "files")
    assert history.exit_code == 0 and "redrive" in history.stdout and "redriven" in history.stdout
    assert [f["redrive_of"] for f in sdk.trigger_history("files")] == [failed["id"], None, None]


def test_in_use_workflows_endpoints_aliases_and_alert_monitors(settings, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch):
    """No control loop here (nothing is served): the records and their dependents only."""
    from loopml.api.app import create_app
    from loopml.platform import Platform
    from tests.asgi_server import serve_asgi

    plat = Platform(settings)
    try:
        plat.models.add_version("digits", 1, dataset="digits:1", kind="image", template="cnn", hparams={},
                                metrics={}, lineage={}, runtimes=["keras"], trusted=False,
                                artifact_prefix="models/digits/v1")
        plat.models.set_alias("digits", "prod", 1)
        with serve_asgi(create_app(settings, platform=plat, start_loop=False)) as url, \
                httpx.Client(base_url=url) as http, Client(url, token="") as c:
            run = cli_runner(url, monkeypatch)
            c.create_workflow("flow", {"StartAt": "Deploy", "States": {"Deploy": {
                "Type": "Task", "Resource": "loopml:deploy", "Parameters": {"endpoint": "web"}, "End": True}}})
            assert http.post("/endpoints", json={"name": "web", "model": "digits@prod"}).status_code == 201
            plat.monitors.create("watch", endpoint="web", variant=None, schedule=None, tz="UTC", window_s=3600,
                                 min_samples=10, thresholds={}, webhooks=[], next_run_at=None)

            # triggers create --alert NOSUCH is refused like --function NOSUCH
            one_line_error(run("triggers", "create", "alarm", "--alert", "nosuch", "--workflow", "flow"), 2,
                           "monitor 'nosuch' not found")
            assert_error(http.post("/triggers", json={"name": "alarm", "kind": "alert", "monitor": "nosuch",
                                                      "workflow": "flow"}), 400, "invalid_input", "nosuch")
            c.create_trigger("alarm", alert="watch", workflow="flow")

            # a workflow started by a trigger
            body = assert_error(http.delete("/workflows/flow"), 409, "conflict", "trigger alarm")
            assert body["details"]["dependents"] == [{"kind": "trigger", "name": "alarm"}]
            one_line_error(run("workflows", "delete", "flow"), 2, "trigger alarm", "--force")
            # an endpoint watched by a monitor and deployed to by a workflow
            body = assert_error(http.delete("/endpoints/web"), 409, "conflict", "monitor watch", "workflow flow")
            assert body["details"]["dependents"] == [{"kind": "monitor", "name": "watch"},
                                                     {"kind": "workflow", "name": "flow", "state": "Deploy"}]
            one_line_error(run("endpoints", "delete", "web"), 2, "monitor watch", "--force")
            # an alias followed by an endpoint
            body = assert_error(http.delete("/models/digits/aliases/prod"), 409, "conflict", "endpoint web")
            assert body["details"]["dependents"] == [{"kind": "endpoint", "name": "web"}]
            one_line_error(run("models", "alias", "delete", "digits", "prod"), 2, "endpoint web", "--force")
            assert plat.models.get("digits", alias="prod")["version"] == 1

            # --force: done, and the answer names what broke
            gone = run("models", "alias", "delete", "digits", "prod", "--force")
            assert gone.exit_code == 0 and "this breaks endpoint web" in gone.stderr
            assert c.delete_endpoint("web", force=True)["broken"] == [
                {"kind": "monitor", "name": "watch"}, {"kind": "workflow", "name": "flow", "state": "Deploy"}]
            assert ok_json(run("workflows", "delete", "flow", "--force", "--json"))["broken"] == \
                [{"kind": "trigger", "name": "alarm"}]
            assert_error(http.delete("/workflows/flow"), 404, "not_found")
    finally:
        plat.close()
