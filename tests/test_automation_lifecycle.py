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
from tests.process_support import wait_for
from tests.surface_support import assert_error, cli_runner
from tests.test_cli import ok_json, one_line_error

pytest_plugins = ("tests.backends",)
DEADLINE_S = 120  # a noisy 2-core machine: generous, and no assertion is about time

ENV_HANDLER = '''import os


def handler(event, context):
    return {k: os.environ.get(k) for k in ("A", "B", "C")}
'''


def poll(fn: Callable[[], Any], what: str) -> Any:
    return wait_for(fn, timeout=DEADLINE_S, what=what)


@pytest.fixture
def server(live_server: str, settings) -> str:
    return live_server  # its settings name its real URL: functions call it back


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
    drop.mkdir()
    sdk.create_function("seen", code)
    sdk.create_trigger("files", objects=str(drop), function="seen")
    flow = {"StartAt": "Call", "States": {"Call": {"Type": "Task", "Resource": "loopml:function:seen", "End": True}}}
    sdk.create_workflow("calls", flow)

    def fired(n: int) -> list[dict]:
        return poll(lambda: (lambda h: h if len(h) >= n else None)(sdk.trigger_history("files")), f"{n} firings")

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
    one_line_error(run("triggers", "redrive", "files", "--firing", "99999"), 2, "has no firing 99999")
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
            # what it broke says so when next touched, with the way out
            one_line_error(run("endpoints", "update", "web", "--max-batch-size", "16"), 2,
                           "endpoint web follows digits@prod: model 'digits' has no alias 'prod'",
                           "--model NAME:VERSION")
            assert_error(http.patch("/endpoints/web", json={"max_batch_size": 16}), 400, "invalid_input",
                         "model=NAME:VERSION")
            assert http.patch("/endpoints/web", json={"model": "digits:1", "max_batch_size": 16}).status_code == 200
            assert c.delete_endpoint("web", force=True)["broken"] == [
                {"kind": "monitor", "name": "watch"}, {"kind": "workflow", "name": "flow", "state": "Deploy"}]
            assert ok_json(run("workflows", "delete", "flow", "--force", "--json"))["broken"] == \
                [{"kind": "trigger", "name": "alarm"}]
            assert_error(http.delete("/workflows/flow"), 404, "not_found")
    finally:
        plat.close()


# -- item 16: triggers update, GitHub-style signatures, alerts ack/resolve, object locations ----------

@pytest.fixture
def quiet(settings):
    """A real API server without the control loop (nothing polls or runs): (platform, url)."""
    from loopml.api.app import create_app
    from loopml.platform import Platform
    from tests.asgi_server import serve_asgi

    plat = Platform(settings)
    try:
        with serve_asgi(create_app(settings, platform=plat, start_loop=False)) as url:
            yield plat, url
    finally:
        plat.close()


def add_targets(c: Client, tmp_path: Path) -> None:
    code = tmp_path / "echo.py"
    code.write_text("def handler(event, context):\n    return event\n")
    c.create_function("echo", code)
    c.create_function("other", code, handler="echo.handler")
    c.create_workflow("flow", {"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}})


def test_triggers_update_keeps_what_is_not_given(quiet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    plat, url = quiet
    run = cli_runner(url, monkeypatch)
    with Client(url, token="") as c, httpx.Client(base_url=url) as http:
        add_targets(c, tmp_path)
        c.create_trigger("nightly", cron="0 3 * * *", tz="Europe/Paris", missed="catch-up", function="echo")
        before = c.trigger("nightly")

        moved = ok_json(run("triggers", "update", "nightly", "--workflow", "flow", "--json"))
        assert moved["target"] == {"kind": "workflow", "name": "flow"} and moved["spec"] == before["spec"]
        assert moved["next_run"] == before["next_run"]
        changed = c.update_trigger("nightly", cron="30 4 * * *")
        assert changed["spec"] == {"cron": "30 4 * * *", "tz": "Europe/Paris", "missed": "catch-up"}
        assert changed["target"] == {"kind": "workflow", "name": "flow"} and changed["next_run"] != before["next_run"]
        patched = http.patch("/triggers/nightly", json={"tz": "UTC", "function": "other"})
        assert patched.status_code == 200, patched.text
        assert patched.json()["spec"]["tz"] == "UTC" and patched.json()["spec"]["cron"] == "30 4 * * *"
        assert patched.json()["target"] == {"kind": "function", "name": "other"}

        one_line_error(run("triggers", "update", "nightly"), 2, "nothing to change")
        one_line_error(run("triggers", "update", "nightly", "--suffix", ".csv"), 2, "only for objects triggers")
        one_line_error(run("triggers", "update", "nightly", "--function", "ghost"), 2, "function 'ghost' not found")
        one_line_error(run("triggers", "update", "nightly", "--cron", "nope"), 2, "cron:")
        one_line_error(run("triggers", "update", "ghost", "--function", "echo"), 2, "trigger 'ghost' not found")
        assert_error(http.patch("/triggers/nightly", json={"kind": "webhook"}), 400, "invalid_input", "kind")
        assert c.trigger("nightly")["target"] == {"kind": "function", "name": "other"}  # nothing half-changed

    # an object trigger's suffix: objects already there that a wider suffix brings in do not fire;
    # objects of the old scope that have not fired yet still fire once
    from loopml.controlplane.triggers import TriggerPoller
    from loopml.triggers import service

    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "old.csv").write_text("1")
    (inbox / "notes.txt").write_text("2")
    service.create_trigger(plat, "files", "objects", objects_uri=str(inbox), suffix=".csv", function="echo")
    (inbox / "new.csv").write_text("3")  # arrived, not polled yet
    widened = service.update_trigger(plat, "files", suffix="")
    assert widened["spec"]["suffix"] is None and widened["objects_seen"] == 2
    (inbox / "later.txt").write_text("4")
    poller = TriggerPoller(plat)
    time.sleep(0.3)  # local files fire once settled (0.2 s old)
    fired = sorted(f["event"]["Records"][0]["s3"]["object"]["key"] for f in poller.poll_once())
    assert fired == ["later.txt", "new.csv"] and poller.poll_once() == []


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def test_github_style_webhook_signatures(quiet, tmp_path: Path):
    plat, url = quiet
    with Client(url, token="") as c, httpx.Client(base_url=url) as http:
        add_targets(c, tmp_path)
        created = c.create_trigger("gh", webhook=True, function="echo")
        secret = created["secret"]
        assert created["signatures"] is True and "secret" not in c.trigger("gh")

        body = b'{"ref": "refs/heads/main"}'
        headers = {"Content-Type": "application/json", "X-GitHub-Event": "push", "X-GitHub-Delivery": "d-1"}
        ok = http.post("/hooks/gh", content=body, headers={**headers, "X-Hub-Signature-256": sign(secret, body)})
        assert ok.status_code == 202 and ok.json()["status"] == "started", ok.text
        invocation = c.function_invocation("echo", ok.json()["started"]["id"])
        assert invocation["event"]["body"] == {"ref": "refs/heads/main"}
        assert invocation["event"]["headers"]["x-github-event"] == "push"
        # GitHub's redelivery carries the same delivery id: not started twice
        again = http.post("/hooks/gh", content=body, headers={**headers, "X-Hub-Signature-256": sign(secret, body)})
        assert again.status_code == 202 and again.json()["duplicate"] and again.json()["firing"] == ok.json()["firing"]

        assert_error(http.post("/hooks/gh", content=body, headers={"X-Hub-Signature-256": sign("wrong", body)}),
                     401, "unauthorized", "does not match")
        assert_error(http.post("/hooks/gh", content=b"{}", headers={"X-Hub-Signature-256": sign(secret, body)}),
                     401, "unauthorized", "does not match")
        assert_error(http.post("/hooks/gh", content=body, headers={"X-Hub-Signature-256": "md5=abc"}),
                     401, "unauthorized", "sha256=")
        assert len(c.trigger_history("gh")) == 1  # refused calls are not recorded
        assert_error(http.post("/hooks/gh", json={}, headers={"Authorization": f"Bearer {secret}",
                                                             "Idempotency-Key": "redrive:1"}),
                     400, "invalid_input", "reserved for redrives")
        # Bearer still works beside it
        bearer = http.post("/hooks/gh", json={"x": 1}, headers={"Authorization": f"Bearer {secret}"})
        assert bearer.status_code == 202 and bearer.json()["status"] == "started"

        # a webhook created before signatures were supported keeps Bearer only (no secret was kept)
        from loopml.store import tables as t

        legacy = c.create_trigger("old", webhook=True, function="echo")["secret"]
        with plat.meta.session() as s:
            s.get(t.Trigger, "old").hook_secret = None
        assert c.trigger("old")["signatures"] is False
        assert_error(http.post("/hooks/old", content=body, headers={"X-Hub-Signature-256": sign(legacy, body)}),
                     401, "unauthorized", "Bearer")
        assert http.post("/hooks/old", json={}, headers={"Authorization": f"Bearer {legacy}"}).status_code == 202


def test_alerts_ack_and_resolve(quiet, monkeypatch: pytest.MonkeyPatch):
    plat, url = quiet
    run = cli_runner(url, monkeypatch)
    plat.monitors.create("watch", endpoint="web", variant=None, schedule=None, tz="UTC", window_s=3600,
                         min_samples=10, thresholds={}, webhooks=[], next_run_at=None)
    drift = [{"key": "pixels", "severity": "warning", "statistic": {}, "message": "drift in pixels"}]
    [alert] = plat.monitors.record_alerts("watch", "run-1", drift)["opened"]

    acked = ok_json(run("alerts", "ack", alert["id"], "--json"))
    assert acked["status"] == "open" and acked["acked_at"] and acked["acked_by"].startswith("cli")
    assert "acked" in run("alerts", "list").stdout and "acked" in run("alerts", "show", alert["id"]).stdout
    # still open: the next run bumps it (no new alert, nothing notified) and it stays acked
    changes = plat.monitors.record_alerts("watch", "run-2", drift)
    assert changes["opened"] == [] and changes["updated"][0]["id"] == alert["id"]
    assert changes["updated"][0]["acked_at"] == acked["acked_at"]

    with Client(url, token="") as c:
        resolved = c.resolve_alert(alert["id"], actor="alice")
        assert resolved["status"] == "resolved" and resolved["resolved_by"] == "alice" and resolved["resolved_at"]
        with pytest.raises(Conflict, match="already resolved"):
            c.resolve_alert(alert["id"])
    one_line_error(run("alerts", "ack", alert["id"]), 2, "only an open alert")
    one_line_error(run("alerts", "resolve", "alert-nope"), 2, "alert 'alert-nope' not found")
    with httpx.Client(base_url=url) as http:
        assert_error(http.post(f"/alerts/{alert['id']}/resolve"), 409, "conflict", "already resolved")

    # a later violation opens a new alert
    [again] = plat.monitors.record_alerts("watch", "run-3", drift)["opened"]
    assert again["id"] != alert["id"] and again["acked_at"] is None
    assert "resolved" in run("alerts", "resolve", again["id"]).stdout


def test_object_trigger_locations(quiet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, settings):
    plat, url = quiet
    run = cli_runner(url, monkeypatch)
    with Client(url, token="") as c, httpx.Client(base_url=url) as http:
        add_targets(c, tmp_path)
        missing = tmp_path / "no-such-folder"
        one_line_error(run("triggers", "create", "in", "--objects", str(missing), "--function", "echo"), 2,
                       "does not exist")
        assert_error(http.post("/triggers", json={"name": "in", "kind": "objects", "objects_uri": f"file://{missing}",
                                                  "function": "echo"}), 400, "invalid_input", "does not exist")
        one_line_error(run("triggers", "create", "in", "--objects", "./data", "--function", "echo"), 2,
                       "key prefix inside LoopML's artifact store", "absolute path")
        out = run("triggers", "create", "in", "--objects", "incoming/", "--function", "echo")
        assert out.exit_code == 0, out.output
        where = f"file://{Path(settings.resolved_artifact_uri).resolve()}/incoming/"
        assert "key prefix inside LoopML's artifact store" in out.stdout and where in out.stdout
        assert "artifact store" in run("triggers", "create", "--help").stdout
        assert c.trigger("in")["spec"]["uri"] == where


# -- item 11 (automation parts) -------------------------------------------------------------------

def test_failed_execution_names_its_state_and_text_is_not_escaped(sdk: Client, run):
    sdk.create_workflow("decide", {"StartAt": "Decide", "States": {
        "Decide": {"Type": "Pass", "Result": {"reason": "accuracy 0.93 ≥ 0.90: promote"}, "Next": "Call"},
        "Call": {"Type": "Task", "Resource": "loopml:function:ghost", "End": True}}})
    sdk.create_workflow("fine", {"StartAt": "Decide", "States": {
        "Decide": {"Type": "Pass", "Result": {"reason": "accuracy 0.93 ≥ 0.90: promote"}, "End": True}}})
    failed = run("workflows", "start", "decide", "--wait")
    assert failed.exit_code == 1 and "error in state Call" in failed.stderr
    [execution] = sdk.executions(workflow="decide")
    assert execution["status"] == "FAILED" and execution["failed_state"] == "Call"
    shown = run("executions", "show", execution["id"])
    assert "failed in state" in shown.stdout and "Call" in shown.stdout and "ghost" in shown.stdout
    assert "Call:" in run("executions", "list", "--workflow", "decide").stdout  # state: error (cut to fit)

    ok = run("workflows", "start", "fine", "--wait")
    assert ok.exit_code == 0 and "≥" in ok.stdout and "\\u2265" not in ok.stdout
    [done] = sdk.executions(workflow="fine")
    for args in (("executions", "show", done["id"]), ("executions", "show", done["id"], "--json"),
                 ("executions", "history", done["id"], "--json")):
        out = run(*args)
        assert out.exit_code == 0 and "≥" in out.stdout and "\\u2265" not in out.stdout, args
    assert ok_json(run("executions", "show", done["id"], "--json"))["output"]["reason"].endswith("≥ 0.90: promote")


def test_monitor_html_report_size_is_in_bytes(quiet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    plat, url = quiet
    plat.monitors.create("watch", endpoint="web", variant=None, schedule=None, tz="UTC", window_s=3600,
                         min_samples=10, thresholds={}, webhooks=[], next_run_at=None)
    report, _job = plat.monitors.create_run("watch")
    key = f"monitoring/watch/{report['id']}/report.json"
    plat.artifacts.put_bytes(key, b"{}")
    plat.artifacts.put_bytes(key[:-4] + "html", "<p>PSI ≥ 0.25 — drift in «pixels»</p>".encode())
    plat.monitors.finish_run(report["id"], "succeeded", rows=1, violations=[], summary={"checked": []},
                             report_key=key)
    page = tmp_path / "report.html"
    out = cli_runner(url, monkeypatch)("monitors", "report", "watch", report["id"], "--html", str(page))
    assert out.exit_code == 0, out.output
    assert f"({page.stat().st_size} bytes)" in out.stdout and "≥" in page.read_text(encoding="utf-8")


# -- the store side of the above, on SQLite and PostgreSQL ----------------------------------------

def test_store_contract(metadata_store):
    from loopml.store import tables as t
    from loopml.store.monitors_repo import MonitorRepo
    from loopml.store.triggers_repo import Firing, TriggerRepo

    with metadata_store.session() as s:
        s.add(t.Function(name="echo", handler="h.main", code_key="functions/echo/h.py", code_sha256="0" * 64,
                         timeout_s=30.0, memory_mb=128, environment={"A": "1"}))
    from loopml.store.functions_repo import FunctionRepo

    functions = FunctionRepo(metadata_store)
    assert functions.update("echo", {"timeout_s": 5.0}, {"B": "2", "A": None})["environment"] == {"B": "2"}
    with pytest.raises(InvalidInput, match="A is not set"):
        functions.update("echo", {"memory_mb": 999}, {"A": None})
    assert functions.get("echo")["memory_mb"] == 128  # nothing half-written

    repo = TriggerRepo(metadata_store)
    repo.create("t", "objects", {"suffix": ".csv"}, "function", "echo", hook_secret=None, seen=[("a.csv", "1")])
    [failed] = repo.fire("t", [Firing({"k": 1}, "b.csv#1", status="failed", error="function 'x' not found")])
    assert [f["id"] for f in repo.failed_firings("t")] == [failed["id"]]
    [again] = repo.fire("t", [Firing({"k": 1}, f"redrive:{failed['id']}")], require_active=False)
    assert again["redrive_of"] == failed["id"] and again["status"] == "started"
    assert repo.fire("t", [Firing({"k": 1}, f"redrive:{failed['id']}")], require_active=False) == []  # once
    assert repo.failed_firings("t")[0]["redriven_by"] == again["id"]

    # an object whose key looks like a redrive's is not one
    [odd] = repo.fire("t", [Firing({"k": 2}, "redrive:7#e1", seen=("redrive:7", "e1"))])
    assert odd["redrive_of"] is None
    updated = repo.update("t", spec={"suffix": None}, seen=[("a.csv", "1"), ("c.txt", "2")])
    assert updated["spec"] == {"suffix": None} and repo.seen("t") == {"a.csv": "1", "c.txt": "2", "redrive:7": "e1"}
    with pytest.raises(InvalidInput, match="workflow 'nope' not found"):
        repo.update("t", target=("workflow", "nope"))

    monitors = MonitorRepo(metadata_store)
    monitors.create("m", endpoint="e", variant=None, schedule=None, tz="UTC", window_s=60, min_samples=1,
                    thresholds={}, webhooks=[], next_run_at=None)
    drift = [{"key": "k", "severity": "warning", "statistic": {}, "message": "drift"}]
    [alert] = monitors.record_alerts("m", "run-1", drift)["opened"]
    assert monitors.ack_alert(alert["id"], actor="bob")["acked_by"] == "bob"
    assert monitors.resolve_alert(alert["id"])["resolved_by"] == "hand"
    with pytest.raises(Conflict):
        monitors.ack_alert(alert["id"])
    assert monitors.record_alerts("m", "run-2", drift)["opened"][0]["id"] != alert["id"]
