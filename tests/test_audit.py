"""The audit log: every mutating call (who, token id, action, object, outcome, request id, time),
never a secret; admin-only reading; alias moves by workflows name the execution."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from loopml.api.app import create_app
from loopml.core.timeutil import utcnow
from loopml.identity import tokens
from loopml.workflows.actions import TaskContext, _set_alias
from tests.surface_support import assert_error
from tests.test_endpoints_surface import add_model_version

BOOT = "bootstrap-secret"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def api(settings, platform):
    app = create_app(settings.model_copy(update={"token": BOOT}), platform=platform, start_loop=False)
    with TestClient(app, raise_server_exceptions=False) as c:
        yield c


def test_mutating_calls_are_recorded_with_who_what_and_how_it_ended(api, platform) -> None:
    made = api.post("/users", json={"name": "alice", "role": "editor"}, headers=bearer(BOOT)).json()
    alice, alice_id = made["token"], made["token_record"]["id"]
    ok = api.post("/functions", data={"name": "f", "environment": '{"API_KEY": "hunter2"}'},
                  files={"code": ("h.py", b"def handler(e, c):\n    return 1\n", "text/x-python")},
                  headers={**bearer(alice), "X-Request-Id": "req-42"})
    assert ok.status_code == 201 and ok.headers["x-request-id"] == "req-42"
    assert api.delete("/functions/nope", headers=bearer(alice)).status_code == 404
    assert_error(api.post("/users", json={"name": "x", "role": "admin"}, headers=bearer(alice)), 403, "forbidden")
    assert api.get("/functions", headers=bearer(alice)).status_code == 200  # reads are not audited
    assert api.post("/datasets", json={}).status_code == 401  # nobody: not audited (no identity to name)
    events = api.get("/audit", params={"user": "alice"}, headers=bearer(BOOT)).json()
    got = [(e["action"], e["object"], e["status"], e["outcome"], e["token_id"]) for e in reversed(events)]
    assert got == [("POST /functions", "/functions", 201, "ok", alice_id),
                   ("DELETE /functions/{name}", "/functions/nope", 404, "failed", alice_id),
                   ("POST /users", "/users", 403, "denied", alice_id)]
    assert events[-1]["request_id"] == "req-42" and all(e["request_id"] for e in events)
    boot = api.get("/audit", params={"user": "bootstrap"}, headers=bearer(BOOT)).json()
    assert [e["action"] for e in boot] == ["POST /users"] and boot[0]["token_id"] is None
    # never a secret: no token, no function environment value, anywhere in the log
    everything = json.dumps(api.get("/audit", headers=bearer(BOOT)).json())
    assert alice not in everything and tokens.split(alice)[1] not in everything and "hunter2" not in everything


def test_only_admins_read_the_audit_log_and_filters_work(api) -> None:
    editor = api.post("/users", json={"name": "ed", "role": "editor"}, headers=bearer(BOOT)).json()["token"]
    assert_error(api.get("/audit", headers=bearer(editor)), 403, "forbidden", "audit:read")
    assert len(api.get("/audit", params={"since": "1h"}, headers=bearer(BOOT)).json()) == 1
    assert api.get("/audit", params={"since": "2999-01-01T00:00:00Z"}, headers=bearer(BOOT)).json() == []
    assert_error(api.get("/audit", params={"since": "yesterday"}, headers=bearer(BOOT)), 400, "invalid_input",
                 "since")
    assert [e["action"] for e in api.get("/audit", params={"action": "POST /users"},
                                         headers=bearer(BOOT)).json()] == ["POST /users"]


def test_alias_moves_by_a_workflow_name_the_execution(platform) -> None:
    add_model_version(platform, "tiny", 1)
    add_model_version(platform, "tiny", 2)
    ctx = TaskContext(platform=platform, execution_id="retrain-tiny-0001", token="t1", state="Promote", now=utcnow())
    assert _set_alias(ctx, {"model": "tiny:2", "alias": "production"})["output"]["version"] == 2
    [event] = platform.audit.list(actor="workflow:retrain-tiny-0001")
    assert (event["action"], event["object"], event["outcome"]) == (
        "PUT /models/{name}/aliases/{alias}", "/models/tiny/aliases/production", "ok")
    assert platform.models.alias_history("tiny")[-1]["actor"] == "workflow:retrain-tiny-0001"


def test_once_auth_is_on_the_alias_history_names_the_user_not_what_the_client_claims(api, platform) -> None:
    add_model_version(platform, "tiny", 1)
    ed = api.post("/users", json={"name": "ed", "role": "editor"}, headers=bearer(BOOT)).json()["token"]
    moved = api.put("/models/tiny/aliases/prod", json={"version": 1},
                    headers={**bearer(ed), "X-LoopML-Actor": "cli:someone-else"})
    assert moved.status_code == 200, moved.text
    assert platform.models.alias_history("tiny")[-1]["actor"] == "ed"
